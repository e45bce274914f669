//! HTTP side of ingestd (warp): Prometheus metrics and the JSON control API
//! that hlsd and operators use to start/stop device video.
//!
//! - `GET /metrics`: Prometheus text.
//! - `GET /api/devices`: devices seen, online flag, last seen, media sessions.
//! - `POST /api/devices/<sim>/channels/<ch>/live`: send 0x9101 telling the
//!   device to stream channel `ch` to this server's JT/T 1078 port. Optional
//!   JSON body `{"data_type":0,"stream_type":0}`.
//! - `POST .../stop`: send 0x9102 (default: close audio and video). Optional
//!   body `{"command":0,"close_type":0,"stream_type":0}`.
//! - `POST .../playback`: send 0x9201; body `{"start_ms":..,"end_ms":..}` plus
//!   optional `av_type`, `stream_type`, `storage_type`, `mode`, `speed`.
//!
//! Answers: 200 with `{"sim","channel","msg_id","serial","server"}`, 404 when
//! the device is not connected, 400 for a bad request, 413 for a body over
//! 16 KiB. A body is optional where it is: a POST with no body may come
//! without a Content-Length (`curl -X POST`, hyper's empty bodies), and a
//! chunked body must say its length instead.

use std::sync::Arc;

use serde::Deserialize;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use crate::context::Ctx;
use crate::jt808::PlatformCommand;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LiveBody {
    #[serde(default)]
    data_type: u8,
    #[serde(default)]
    stream_type: u8,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StopBody {
    #[serde(default)]
    command: u8,
    #[serde(default)]
    close_type: u8,
    #[serde(default)]
    stream_type: u8,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlaybackBody {
    start_ms: i64,
    end_ms: i64,
    #[serde(default)]
    av_type: u8,
    #[serde(default)]
    stream_type: u8,
    #[serde(default)]
    storage_type: u8,
    #[serde(default)]
    mode: u8,
    #[serde(default)]
    speed: u8,
}

/// Largest request body of the control API.
const MAX_BODY: u64 = 16 * 1024;

/// Why a request body was refused before it was read.
#[derive(Debug)]
struct BodyRefused(StatusCode, &'static str);

impl warp::reject::Reject for BodyRefused {}

/// The request body, at most [`MAX_BODY`] bytes: a Content-Length over it
/// is refused (413) before anything is read; no Content-Length means no
/// body, unless the body is chunked, whose length is unbounded (411).
fn bounded_body() -> impl Filter<Extract = (bytes::Bytes,), Error = Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and(warp::header::optional::<String>("transfer-encoding"))
        .and_then(|len: Option<u64>, chunked: Option<String>| async move {
            match (len, chunked) {
                (Some(n), _) if n > MAX_BODY => Err(warp::reject::custom(BodyRefused(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request body over 16 KiB",
                ))),
                (None, Some(_)) => Err(warp::reject::custom(BodyRefused(
                    StatusCode::LENGTH_REQUIRED,
                    "a chunked request body needs a Content-Length instead",
                ))),
                _ => Ok(()),
            }
        })
        .untuple_one()
        .and(warp::body::bytes())
}

/// Turns [`BodyRefused`] into its JSON answer; other rejections pass on.
async fn body_refused(r: Rejection) -> Result<warp::reply::Response, Rejection> {
    match r.find::<BodyRefused>() {
        Some(BodyRefused(code, why)) => Ok(json_status(serde_json::json!({ "error": why }), *code)),
        None => Err(r),
    }
}

fn json_status(v: serde_json::Value, code: StatusCode) -> warp::reply::Response {
    warp::reply::with_status(warp::reply::json(&v), code).into_response()
}

fn bad(msg: impl std::fmt::Display) -> warp::reply::Response {
    json_status(
        serde_json::json!({ "error": msg.to_string() }),
        StatusCode::BAD_REQUEST,
    )
}

fn parse_body<T: for<'de> Deserialize<'de> + Default>(b: &[u8]) -> Result<T, serde_json::Error> {
    if b.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        serde_json::from_slice(b)
    }
}

async fn control(
    sim: String,
    channel: u8,
    action: String,
    body: bytes::Bytes,
    ctx: Arc<Ctx>,
) -> warp::reply::Response {
    if sim.is_empty() || sim.len() > 20 || !sim.bytes().all(|b| b.is_ascii_digit()) {
        return bad("sim must be 1-20 decimal digits");
    }
    let sim = crate::bcd::normalize_sim(&format!("{sim:0>12}"));
    let Some((_, local)) = ctx.registry.device_handle(&sim) else {
        return json_status(
            serde_json::json!({ "error": "device not connected", "sim": sim }),
            StatusCode::NOT_FOUND,
        );
    };
    let ip = ctx.config.advertise_ip.unwrap_or(local.ip()).to_string();
    let port = ctx.jt1078_addr.port();
    let cmd = match action.as_str() {
        "live" => match parse_body::<LiveBody>(&body) {
            Ok(b) => PlatformCommand::Live {
                ip: ip.clone(),
                tcp_port: port,
                udp_port: 0,
                channel,
                data_type: b.data_type,
                stream_type: b.stream_type,
            },
            Err(e) => return bad(e),
        },
        "stop" => match parse_body::<StopBody>(&body) {
            Ok(b) => PlatformCommand::Control {
                channel,
                command: b.command,
                close_type: b.close_type,
                stream_type: b.stream_type,
            },
            Err(e) => return bad(e),
        },
        "playback" => match serde_json::from_slice::<PlaybackBody>(&body) {
            Ok(b)
                if [b.start_ms, b.end_ms]
                    .iter()
                    .any(|&t| crate::jt808::checked_unix_ms_to_bcd_time(t).is_none()) =>
            {
                // The BCD time field holds 2000-2099 only; anything else
                // would be sent as a wrapped, wrong date.
                return bad("start_ms and end_ms must fall in the years 2000-2099 (UTC+8)");
            }
            Ok(b) => PlatformCommand::Playback {
                ip: ip.clone(),
                tcp_port: port,
                udp_port: 0,
                channel,
                av_type: b.av_type,
                stream_type: b.stream_type,
                storage_type: b.storage_type,
                mode: b.mode,
                speed: b.speed,
                start_ms: b.start_ms,
                end_ms: b.end_ms,
            },
            Err(e) => return bad(e),
        },
        other => return bad(format!("unknown action {other:?} (live, stop, playback)")),
    };
    let msg_id = cmd.msg_id();
    match ctx.send_command(&sim, cmd).await {
        Some(serial) => json_status(
            serde_json::json!({
                "sim": sim, "channel": channel, "msg_id": msg_id, "serial": serial,
                "server": format!("{ip}:{port}"),
            }),
            StatusCode::OK,
        ),
        None => json_status(
            serde_json::json!({ "error": "device not connected", "sim": sim }),
            StatusCode::NOT_FOUND,
        ),
    }
}

/// All routes.
pub fn routes(
    ctx: Arc<Ctx>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone + Send + Sync + 'static
{
    let with_ctx = {
        let ctx = ctx.clone();
        warp::any().map(move || ctx.clone())
    };
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_ctx.clone())
        .map(|ctx: Arc<Ctx>| {
            let text = ctx
                .metrics
                .render(ctx.media.queue_depth(), ctx.registry.online_count());
            warp::reply::with_header(text, "content-type", "text/plain; version=0.0.4")
                .into_response()
        });
    let devices = warp::path!("api" / "devices")
        .and(warp::get())
        .and(with_ctx.clone())
        .map(|ctx: Arc<Ctx>| warp::reply::json(&ctx.registry.devices()).into_response());
    let control = warp::path!("api" / "devices" / String / "channels" / u8 / String)
        .and(warp::post())
        .and(bounded_body())
        .and(with_ctx)
        .then(control)
        .recover(body_refused)
        .unify();
    metrics.or(devices).unify().or(control).unify()
}
