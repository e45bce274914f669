//! HTTP side of ingestd (warp): Prometheus metrics and the JSON control API
//! that hlsd and operators use to start/stop device video.
//!
//! - `GET /metrics`: Prometheus text.
//! - `GET /ll/<stream>/<file>`: the stream's Low-Latency HLS rendition
//!   (`ll.m3u8` with blocking reload, init segment, parts, segments), held
//!   in this node's memory: [`crate::low_latency`].
//! - `GET /api/devices`: devices seen, online flag, last seen, media sessions.
//! - `POST /api/devices/<sim>/channels/<ch>/live`: send 0x9101 telling the
//!   device to stream channel `ch` to this server's JT/T 1078 port. Optional
//!   JSON body `{"data_type":0,"stream_type":0}`.
//! - `POST .../stop`: send 0x9102 (default: close audio and video). Optional
//!   body `{"command":0,"close_type":0,"stream_type":0}`.
//! - `POST .../playback`: send 0x9201; body `{"start_ms":..,"end_ms":..}` plus
//!   optional `av_type`, `stream_type`, `storage_type`, `mode` (0 normal,
//!   1 fast forward, 2 keyframe rewind, 3 keyframes only, 4 single frame),
//!   `speed` (multiplier 1, 2, 4, 8 or 16) and `replace` (stop a running
//!   playback of the channel first instead of answering 409). One playback
//!   per channel at a time, on the stream `<SIM>_<ch>_pb`: JT/T 1078 packets
//!   carry only SIM and channel, so two uploads of one channel could not be
//!   told apart. Answers once the device acknowledged (or connected), with
//!   `stream` and `playback_id` besides the fields below.
//! - `POST .../playback/control`: send 0x9202; body `{"action": "pause" |
//!   "resume" | "stop" | "speed" | "seek" | "keyframes" | "rewind"}` with
//!   `speed` (multiplier) for speed/rewind and `seek_ms` for seek.
//! - `GET /api/devices/<sim>/recordings?channel=&from=&to=` (Unix ms; plus
//!   optional `alarm_mask`, `av_type`, `stream_type`, `storage_type`,
//!   `timeout_ms`): send 0x9205 and answer the device's 0x1205 list as a JSON
//!   array of `{channel, start_ms, end_ms, alarm, av_type, stream_type,
//!   storage_type, size}`.
//!
//! With `--control-token` every route but `/metrics` needs `Authorization: Bearer <token>`
//! (401 without it, or with another): hlsd sends it (`--ingestd-token`), so on a network where
//! others reach this port, only hlsd commands devices.
//!
//! Answers: 200 with `{"sim","channel","msg_id","serial","server"}`, 404 when
//! the device is not connected, 400 for a bad request, 413 for a body over
//! 16 KiB, 504 when the device does not answer in time (the answer timeout,
//! `--device-answer-timeout`), 502 when it refuses (its result code in
//! `result`), 409 when a playback of the channel runs. A body is optional
//! where it is: a POST with no body may come without a Content-Length (`curl
//! -X POST`, hyper's empty bodies), and a chunked body must say its length
//! instead.

use std::sync::Arc;

use serde::Deserialize;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use std::time::Duration;

use streamcore::StreamName;

use crate::context::{CommandError, Ctx, PlaybackParams};
use crate::jt808::{msg, playback_control, playback_mode, speed_code, PlatformCommand};
use crate::sessions::Answer;

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
    /// A multiplier (1, 2, 4, 8, 16); 0 or absent: none.
    #[serde(default)]
    speed: u32,
    #[serde(default)]
    replace: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlaybackControlBody {
    action: String,
    /// A multiplier (1, 2, 4, 8, 16).
    #[serde(default)]
    speed: Option<u32>,
    #[serde(default)]
    seek_ms: Option<i64>,
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

#[derive(Debug)]
struct NoControlToken;

impl warp::reject::Reject for NoControlToken {}

/// Passes a request that carries the control token, when one is configured. The hashes are
/// compared rather than the tokens, so the time taken says nothing about the token.
fn control_token(ctx: Arc<Ctx>) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    use sha2::{Digest, Sha256};
    warp::header::optional::<String>("authorization")
        .and_then(move |given: Option<String>| {
            let want = ctx.config.control_token.clone();
            async move {
                let Some(want) = want else { return Ok(()) };
                let given = given.as_deref().and_then(|v| v.strip_prefix("Bearer "));
                match given {
                    Some(g) if Sha256::digest(g) == Sha256::digest(&want) => Ok(()),
                    _ => Err(warp::reject::custom(NoControlToken)),
                }
            }
        })
        .untuple_one()
}

/// Turns [`NoControlToken`] into a 401; other rejections pass on.
async fn control_refused(r: Rejection) -> Result<warp::reply::Response, Rejection> {
    if r.find::<NoControlToken>().is_some() {
        let v = serde_json::json!({ "error": "control token missing or wrong (Authorization: Bearer)" });
        let mut resp = json_status(v, StatusCode::UNAUTHORIZED);
        resp.headers_mut().insert(
            warp::http::header::WWW_AUTHENTICATE,
            warp::http::HeaderValue::from_static("Bearer"),
        );
        return Ok(resp);
    }
    Err(r)
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

/// The device's SIM as the registry knows it, or why not (a 400).
fn parse_sim(sim: &str) -> Result<String, &'static str> {
    if sim.is_empty() || sim.len() > 20 || !sim.bytes().all(|b| b.is_ascii_digit()) {
        return Err("sim must be 1-20 decimal digits");
    }
    Ok(crate::bcd::normalize_sim(&format!("{sim:0>12}")))
}

fn offline(sim: &str) -> warp::reply::Response {
    json_status(
        serde_json::json!({ "error": "device not connected", "sim": sim }),
        StatusCode::NOT_FOUND,
    )
}

/// The answer for a command that failed.
fn command_failed(sim: &str, e: &CommandError) -> warp::reply::Response {
    let (code, extra) = match e {
        CommandError::Offline => return offline(sim),
        CommandError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, serde_json::Value::Null),
        CommandError::Refused(r) => (StatusCode::BAD_GATEWAY, serde_json::json!(r)),
        CommandError::Busy(id) => (StatusCode::CONFLICT, serde_json::json!(id)),
        CommandError::Unexpected => (StatusCode::BAD_GATEWAY, serde_json::Value::Null),
    };
    let mut v = serde_json::json!({ "error": e.to_string(), "sim": sim });
    match e {
        CommandError::Refused(_) => v["result"] = extra,
        CommandError::Busy(_) => v["playback_id"] = extra,
        _ => {}
    }
    json_status(v, code)
}

/// A time from the API as the device's BCD can hold it (years 2000-2099 in
/// its zone), or why not (a 400).
fn device_time(ctx: &Ctx, what: &str, t: i64) -> Result<i64, String> {
    match ctx.config.device_clock.checked_to_bcd(t) {
        Some(_) => Ok(t),
        // Anything else would be sent as a wrapped, wrong date.
        None => Err(format!(
            "{what} must fall in the years 2000-2099 (device time, UTC{})",
            ctx.config.device_clock
        )),
    }
}

/// `POST .../playback`: 0x9201.
async fn playback(ctx: &Ctx, sim: &str, channel: u8, body: &[u8]) -> warp::reply::Response {
    let b = match serde_json::from_slice::<PlaybackBody>(body) {
        Ok(b) => b,
        Err(e) => return bad(e),
    };
    for (what, t) in [("start_ms", b.start_ms), ("end_ms", b.end_ms)] {
        if let Err(why) = device_time(ctx, what, t) {
            return bad(why);
        }
    }
    if b.end_ms < b.start_ms {
        return bad("end_ms is before start_ms");
    }
    if b.mode > playback_mode::SINGLE_FRAME {
        return bad(
            "mode: 0 normal, 1 fast forward, 2 keyframe rewind, 3 keyframes only, 4 single frame",
        );
    }
    let Some(speed) = speed_code(b.speed) else {
        return bad("speed: a multiplier of 1, 2, 4, 8 or 16");
    };
    if channel == 0 {
        return bad("channel 0 is not a video channel");
    }
    if b.replace {
        if let Some(old) = ctx.registry.current_playback(sim, channel) {
            old.stopped
                .store(true, std::sync::atomic::Ordering::Relaxed);
            let stop = PlatformCommand::PlaybackControl {
                channel,
                control: playback_control::STOP,
                speed: 0,
                seek_ms: None,
            };
            let _ = ctx.ask(sim, stop, ctx.config.device_answer_timeout).await;
            ctx.registry.cancel_playback(sim, channel, &old.id);
            ctx.registry.playback_ended(sim, channel, &old.id);
        }
    }
    let params = PlaybackParams {
        channel,
        av_type: b.av_type,
        stream_type: b.stream_type,
        storage_type: b.storage_type,
        mode: b.mode,
        speed,
        start_ms: b.start_ms,
        end_ms: b.end_ms,
    };
    match ctx.start_playback(sim, params, None).await {
        Ok(p) => json_status(
            serde_json::json!({
                "sim": sim, "channel": channel, "msg_id": msg::PLAYBACK_REQUEST,
                "serial": p.serial, "server": p.server,
                "stream": StreamName::playback(sim, channel).to_string(),
                "playback_id": p.ticket.id, "acknowledged": p.acknowledged,
            }),
            StatusCode::OK,
        ),
        Err(e) => command_failed(sim, &e),
    }
}

/// `POST .../playback/control`: 0x9202.
async fn playback_control_route(
    sim: String,
    channel: u8,
    body: bytes::Bytes,
    ctx: Arc<Ctx>,
) -> warp::reply::Response {
    let sim = match parse_sim(&sim) {
        Ok(s) => s,
        Err(why) => return bad(why),
    };
    let b = match serde_json::from_slice::<PlaybackControlBody>(&body) {
        Ok(b) => b,
        Err(e) => return bad(e),
    };
    let speed = match b.speed.map(speed_code) {
        None => 0,
        Some(Some(c)) => c,
        Some(None) => return bad("speed: a multiplier of 1, 2, 4, 8 or 16"),
    };
    let mut seek_ms = None;
    let control = match b.action.as_str() {
        "resume" => playback_control::RESUME,
        "pause" => playback_control::PAUSE,
        "stop" => playback_control::STOP,
        "speed" if speed > 0 => playback_control::FAST_FORWARD,
        "rewind" if speed > 0 => playback_control::KEYFRAME_REWIND,
        "speed" | "rewind" => return bad("speed and rewind need \"speed\": 1, 2, 4, 8 or 16"),
        "keyframes" => playback_control::KEYFRAMES_ONLY,
        "seek" => match b.seek_ms.map(|t| device_time(&ctx, "seek_ms", t)) {
            Some(Ok(t)) => {
                seek_ms = Some(t);
                playback_control::SEEK
            }
            Some(Err(why)) => return bad(why),
            None => return bad("seek needs \"seek_ms\" (Unix ms)"),
        },
        other => {
            return bad(format!(
                "unknown action {other:?} (pause, resume, stop, speed, seek, keyframes, rewind)"
            ))
        }
    };
    let playback = ctx.registry.current_playback(&sim, channel);
    if let Some(t) = &playback {
        use std::sync::atomic::Ordering::Relaxed;
        match control {
            playback_control::STOP => t.stopped.store(true, Relaxed),
            playback_control::KEYFRAME_REWIND => t.rewinding.store(true, Relaxed),
            // Pausing keeps the direction; seeking and the others play forward.
            playback_control::PAUSE => {}
            _ => t.rewinding.store(false, Relaxed),
        }
    }
    let cmd = PlatformCommand::PlaybackControl {
        channel,
        control,
        speed,
        seek_ms,
    };
    match ctx.ask(&sim, cmd, ctx.config.device_answer_timeout).await {
        Ok((serial, _)) => json_status(
            serde_json::json!({
                "sim": sim, "channel": channel, "msg_id": msg::PLAYBACK_CONTROL,
                "serial": serial, "action": b.action,
                "playback_id": playback.map(|t| t.id),
            }),
            StatusCode::OK,
        ),
        Err(e) => command_failed(&sim, &e),
    }
}

/// Query parameters of `GET .../recordings`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordingsQuery {
    #[serde(default)]
    channel: u8,
    from: Option<i64>,
    to: Option<i64>,
    #[serde(default)]
    alarm_mask: u64,
    #[serde(default)]
    av_type: u8,
    #[serde(default)]
    stream_type: u8,
    #[serde(default)]
    storage_type: u8,
    timeout_ms: Option<u64>,
}

/// `GET /api/devices/<sim>/recordings`: 0x9205, answered by 0x1205.
async fn recordings(sim: String, raw_query: String, ctx: Arc<Ctx>) -> warp::reply::Response {
    let sim = match parse_sim(&sim) {
        Ok(s) => s,
        Err(why) => return bad(why),
    };
    let q: RecordingsQuery = match serde_urlencoded::from_str(&raw_query) {
        Ok(q) => q,
        Err(e) => return bad(format!("query: {e}")),
    };
    for (what, t) in [("from", q.from), ("to", q.to)] {
        if let Some(Err(why)) = t.map(|t| device_time(&ctx, what, t)) {
            return bad(why);
        }
    }
    let timeout = q.timeout_ms.map_or(ctx.config.device_answer_timeout, |ms| {
        Duration::from_millis(ms.clamp(100, 60_000))
    });
    let cmd = PlatformCommand::QueryResources {
        channel: q.channel,
        start_ms: q.from,
        end_ms: q.to,
        alarm_mask: q.alarm_mask,
        av_type: q.av_type,
        stream_type: q.stream_type,
        storage_type: q.storage_type,
    };
    match ctx.ask(&sim, cmd, timeout).await {
        Ok((_, Answer::Resources(list))) => {
            json_status(serde_json::json!(list.items), StatusCode::OK)
        }
        Ok((_, Answer::Reply(_))) => command_failed(&sim, &CommandError::Unexpected),
        Err(e) => command_failed(&sim, &e),
    }
}

async fn control(
    sim: String,
    channel: u8,
    action: String,
    body: bytes::Bytes,
    ctx: Arc<Ctx>,
) -> warp::reply::Response {
    let sim = match parse_sim(&sim) {
        Ok(s) => s,
        Err(why) => return bad(why),
    };
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
        "playback" => return playback(&ctx, &sim, channel, &body).await,
        other => return bad(format!("unknown action {other:?} (live, stop, playback)")),
    };
    let msg_id = cmd.msg_id();
    match ctx.send_command(&sim, cmd).await {
        Some(serial) => {
            // Video an operator started is stopped once nobody watches it.
            match action.as_str() {
                "live" => ctx.auto_stop.started(&sim, channel),
                _ => ctx.auto_stop.stopped(&sim, channel),
            }
            json_status(
                serde_json::json!({
                    "sim": sim, "channel": channel, "msg_id": msg_id, "serial": serial,
                    "server": format!("{ip}:{port}"),
                }),
                StatusCode::OK,
            )
        }
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
            let mut text = ctx.metrics.render(
                (ctx.media.queue_depth(), ctx.media.queued_bytes()),
                ctx.registry.online_count(),
            );
            text.push_str(&ctx.ll.render_metrics());
            text.push_str(&crate::metrics::render_worker_loads(
                ctx.media.worker_loads(),
            ));
            warp::reply::with_header(text, "content-type", "text/plain; version=0.0.4")
                .into_response()
        });
    let low_latency = warp::path!("ll" / String / String)
        .and(warp::get())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(with_ctx.clone())
        .then(
            |stream: String, file: String, query: String, ctx: Arc<Ctx>| {
                ctx.ll.clone().serve(stream, file, query)
            },
        );
    let devices = warp::path!("api" / "devices")
        .and(warp::get())
        .and(with_ctx.clone())
        .map(|ctx: Arc<Ctx>| warp::reply::json(&ctx.registry.devices()).into_response());
    let recordings = warp::path!("api" / "devices" / String / "recordings")
        .and(warp::get())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(with_ctx.clone())
        .then(recordings);
    let playback_control =
        warp::path!("api" / "devices" / String / "channels" / u8 / "playback" / "control")
            .and(warp::post())
            .and(bounded_body())
            .and(with_ctx.clone())
            .then(playback_control_route)
            .recover(body_refused)
            .unify();
    let control = warp::path!("api" / "devices" / String / "channels" / u8 / String)
        .and(warp::post())
        .and(bounded_body())
        .and(with_ctx)
        .then(control)
        .recover(body_refused)
        .unify();
    let guarded = control_token(ctx)
        .and(
            low_latency
                .or(devices)
                .unify()
                .or(recordings)
                .unify()
                .or(playback_control)
                .unify()
                .or(control)
                .unify(),
        )
        .recover(control_refused)
        .unify();
    metrics.or(guarded).unify()
}
