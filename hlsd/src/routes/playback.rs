//! The device's own recordings (JT/T 1078 section 5.5), forwarded to the ingestd that holds the
//! device's connection, and the MP4 download of a recording:
//! - `GET /api/devices/<sim>/recordings?channel&from&to[&alarm_mask&av_type&stream_type&storage_type&timeout_ms]`:
//!   the device's list (0x9205 answered by 0x1205), as ingestd gives it.
//! - POST `/api/devices/<sim>/channels/<ch>/playback` (JSON `{"start_ms","end_ms",..}`): asks
//!   for an upload (0x9201) and answers once the upload's catalog session has a segment, with
//!   `playlist` = `/vod/session/<id>/index.m3u8` (this upload only: EVENT while it runs, ENDLIST
//!   when it ends), `live_playlist` = the channel's `_pb` stream, and `download` (MP4).
//! - POST `/api/devices/<sim>/channels/<ch>/playback/control` (JSON `{"action",..}`): 0x9202.
//! - `/vod/session/<id>/video.mp4` (and `/vod/session/<id>/t/<token>/video.mp4`): a whole
//!   session (a playback upload, or any recorded session up to the clip limit) as an MP4.
//!
//! ingestd's answers pass through with their status (400, 404 offline, 409 busy, 502 refused by
//! the device, 504 no answer from the device); ingestd unreachable is a 502 and ingestd silent
//! past its own device timeout a 504, all JSON with a reason.

// Handlers return early with a ready response (`Result<_, Response>`), as in the other groups.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use serde_json::{json, Map, Value};
use streamcore::catalog::Catalog;
use streamcore::layout::{self, StreamName};
use warp::http::header::{HeaderMap, CONTENT_LENGTH};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::mp4;
use super::vod::MAX_CLIP_MS;
use super::{blocking, catalog_failed, get_or_head, not_found, parse_time, request, with_state};
use crate::http::{self, Req};
use crate::server::AppState;

/// Largest request body forwarded (ingestd's own bound).
const MAX_BODY: usize = 16 * 1024;
/// How long ingestd waits for a device's answer by default (its `--device-answer-timeout`).
const DEVICE_ANSWER_WAIT: Duration = Duration::from_secs(10);
/// What hlsd allows ingestd beyond its wait for the device: a request that times out here
/// while ingestd still waits would turn the device's own answer (a 404, a 502) into our 504.
const INGESTD_MARGIN: Duration = Duration::from_secs(5);
/// Query parameters of the recordings query forwarded to ingestd, all unsigned integers.
const RECORDING_FILTERS: [&str; 5] = [
    "alarm_mask",
    "av_type",
    "stream_type",
    "storage_type",
    "timeout_ms",
];

pub(super) fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let st = with_state(state);
    let get = get_or_head();

    // GET only: a HEAD would still send the device a query.
    let recordings =
        warp::path!("api" / "devices" / String / "recordings")
            .and(warp::get())
            .and(st.clone())
            .and(request())
            .then(|sim: String, st: Arc<AppState>, req: Req| async move {
                recordings(st, sim, req).await
            });
    let start = warp::path!("api" / "devices" / String / "channels" / String / "playback")
        .and(warp::post())
        .and(st.clone())
        .and(request())
        .and(bounded_body())
        .then(
            |sim: String,
             ch: String,
             st: Arc<AppState>,
             req: Req,
             body: Result<Bytes, Response>| async move {
                match operator(&st, &req, &sim, "playback.request", &ch, body).await {
                    Err(resp) => resp,
                    Ok(body) => start_playback(st, sim, ch, body).await,
                }
            },
        );
    let control =
        warp::path!("api" / "devices" / String / "channels" / String / "playback" / "control")
            .and(warp::post())
            .and(st.clone())
            .and(request())
            .and(bounded_body())
            .then(
                |sim: String,
                 ch: String,
                 st: Arc<AppState>,
                 req: Req,
                 body: Result<Bytes, Response>| async move {
                    match operator(&st, &req, &sim, "playback.control", &ch, body).await {
                        Err(resp) => resp,
                        Ok(body) => control_playback(st, sim, ch, body).await,
                    }
                },
            );
    let mp4 = warp::path!("vod" / "session" / String / "video.mp4")
        .and(get)
        .and(st.clone())
        .and(request())
        .then(|id: String, st: Arc<AppState>, req: Req| async move {
            session_mp4(st, id, None, req).await
        });
    let mp4_t = warp::path!("vod" / "session" / String / "t" / String / "video.mp4")
        .and(get)
        .and(st)
        .and(request())
        .then(
            |id: String, tok: String, st: Arc<AppState>, req: Req| async move {
                session_mp4(st, id, Some(tok), req).await
            },
        );

    recordings
        .or(start)
        .unify()
        .or(control)
        .unify()
        .or(mp4)
        .unify()
        .or(mp4_t)
        .unify()
}

/// Checks that the request may command `sim` (an operator granted the device); once the body
/// was read, writes the audit log entry of `action` on `sim`/`channel` with the body.
async fn operator(
    st: &AppState,
    req: &Req,
    sim: &str,
    action: &str,
    channel: &str,
    body: Result<Bytes, Response>,
) -> Result<Bytes, Response> {
    let p = st
        .auth
        .require_device(req, streamcore::catalog::Role::Operator, sim)
        .await?;
    let body = body?;
    let detail = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
    st.auth
        .audit(
            &p.actor(),
            action,
            &format!("{sim}/{channel}"),
            Some(detail),
        )
        .await;
    Ok(body)
}

/// The request body, at most [`MAX_BODY`] bytes (413 otherwise, before reading when the
/// Content-Length says so), as the handler's input: a refusal is a ready JSON answer, not a
/// rejection (which would end in the catch-all 404).
fn bounded_body() -> impl Filter<Extract = (Result<Bytes, Response>,), Error = Rejection> + Clone {
    warp::header::headers_cloned()
        .and(warp::body::stream())
        .then(read_bounded)
}

async fn read_bounded<S, B>(headers: HeaderMap, body: S) -> Result<Bytes, Response>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let too_large = || {
        http::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over {} KiB", MAX_BODY / 1024),
        )
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    let mut body = std::pin::pin!(body);
    let mut out = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| {
            http::error(
                StatusCode::BAD_REQUEST,
                format!("reading the request body: {e}"),
            )
        })?;
        if out.len() + chunk.remaining() > MAX_BODY {
            return Err(too_large());
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            let n = part.len();
            out.extend_from_slice(part);
            chunk.advance(n);
        }
    }
    Ok(out.freeze())
}

fn bad_request(msg: impl std::fmt::Display) -> Response {
    http::error(StatusCode::BAD_REQUEST, msg)
}

/// A SIM as ingestd accepts it (1-20 digits), or the 400 answer.
fn check_sim(sim: &str) -> Result<(), Response> {
    if sim.is_empty() || sim.len() > 20 || !sim.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_request(format!(
            "sim: expected 1-20 decimal digits, got {sim:?}"
        )));
    }
    Ok(())
}

/// The SIM as ingestd names the device's streams: padded to 12 digits, and a 20-digit (2019
/// header) number whose extra digits are zeros shortened to 12 (ingestd's `normalize_sim`).
fn stream_sim(sim: &str) -> String {
    let padded = format!("{sim:0>12}");
    let extra = padded.len() - 12;
    if extra > 0 && padded[..extra].bytes().all(|b| b == b'0') {
        padded[extra..].to_owned()
    } else {
        padded
    }
}

fn check_channel(ch: &str) -> Result<u8, Response> {
    layout::parse_channel(ch)
        .ok_or_else(|| bad_request(format!("channel: expected 0-255, got {ch:?}")))
}

/// A JSON object body, or the 400 answer saying what is wrong with it.
fn json_object(body: &[u8]) -> Result<Map<String, Value>, Response> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(bad_request("request body: expected a JSON object")),
        Err(e) => Err(bad_request(format!("request body: {e}"))),
    }
}

/// Sends `request` to ingestd, allowing it `wait`; a 2xx answer's JSON, or the answer to give:
/// ingestd's own error passed through, or ours when ingestd could not be asked.
async fn ask_ingestd(
    request: reqwest::RequestBuilder,
    wait: Duration,
    what: &str,
) -> Result<Value, Response> {
    let r = match request.timeout(wait).send().await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            return Err(http::error(
                StatusCode::GATEWAY_TIMEOUT,
                format!("ingestd did not answer {what} within {} s", wait.as_secs()),
            ))
        }
        Err(e) => {
            return Err(http::error(
                StatusCode::BAD_GATEWAY,
                format!("ingestd unreachable: {e}"),
            ))
        }
    };
    let status = r.status();
    let text = match r.text().await {
        Ok(t) => t,
        Err(e) if e.is_timeout() => {
            return Err(http::error(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "ingestd did not finish its answer to {what} within {} s",
                    wait.as_secs()
                ),
            ))
        }
        Err(e) => {
            return Err(http::error(
                StatusCode::BAD_GATEWAY,
                format!("reading ingestd's answer to {what}: {e}"),
            ))
        }
    };
    let body = serde_json::from_str::<Value>(&text).ok();
    if status.is_success() {
        return body.ok_or_else(|| {
            http::error(
                StatusCode::BAD_GATEWAY,
                format!("ingestd's answer to {what} is not JSON"),
            )
        });
    }
    // ingestd's statuses mean the same here (400 bad request, 404 device offline, 409 busy,
    // 413, 502 refused by the device, 504 no answer from it); anything else of its own is a
    // bad gateway for our client.
    let ours = if status.is_client_error()
        || status == StatusCode::BAD_GATEWAY
        || status == StatusCode::GATEWAY_TIMEOUT
    {
        status
    } else {
        StatusCode::BAD_GATEWAY
    };
    let mut out = match body {
        Some(Value::Object(m)) if m.get("error").is_some_and(Value::is_string) => m,
        _ => {
            let mut m = Map::new();
            m.insert(
                "error".into(),
                json!(format!("ingestd answered {status} to {what}")),
            );
            m.insert("ingestd_body".into(), json!(text));
            m
        }
    };
    out.insert("status".into(), json!(ours.as_u16()));
    if ours != status {
        out.insert("ingestd_status".into(), json!(status.as_u16()));
    }
    Err(http::json(ours, &Value::Object(out)))
}

/// `GET /api/devices/<sim>/recordings`: validated here (a 400 names the parameter), forwarded
/// with only the parameters ingestd knows, answered with ingestd's list or error.
async fn recordings(st: Arc<AppState>, sim: String, req: Req) -> Response {
    if let Err(resp) = check_sim(&sim) {
        return resp;
    }
    // Listing asks the device itself (0x9205): an operator's action.
    match st
        .auth
        .require_device(&req, streamcore::catalog::Role::Operator, &sim)
        .await
    {
        Ok(p) => {
            st.auth
                .audit(
                    &p.actor(),
                    "recordings.query",
                    &sim,
                    serde_json::to_string(&req.query).ok(),
                )
                .await
        }
        Err(resp) => return resp,
    }
    let mut query = Vec::new();
    let param = |k: &str| req.query.get(k).filter(|v| !v.is_empty());
    if let Some(ch) = param("channel") {
        match check_channel(ch) {
            Ok(c) => query.push(format!("channel={c}")),
            Err(resp) => return resp,
        }
    }
    let mut bounds = [None, None];
    for (i, k) in ["from", "to"].into_iter().enumerate() {
        let Some(v) = param(k) else { continue };
        match parse_time(v) {
            Some(ms) if ms >= 0 => {
                bounds[i] = Some(ms);
                query.push(format!("{k}={ms}"));
            }
            _ => {
                return bad_request(format!(
                    "{k}: expected milliseconds since the epoch or RFC 3339, got {v:?}"
                ))
            }
        }
    }
    if let [Some(from), Some(to)] = bounds {
        if to <= from {
            return bad_request("expected from < to");
        }
    }
    let mut wait = DEVICE_ANSWER_WAIT;
    for k in RECORDING_FILTERS {
        let Some(v) = param(k) else { continue };
        let n = match (k, v.parse::<u64>()) {
            ("alarm_mask" | "timeout_ms", Ok(n)) => n,
            (_, Ok(n)) if n <= 255 => n,
            _ => {
                return bad_request(format!(
                    "{k}: expected an unsigned integer{}, got {v:?}",
                    if matches!(k, "alarm_mask" | "timeout_ms") {
                        ""
                    } else {
                        " up to 255"
                    }
                ))
            }
        };
        if k == "timeout_ms" {
            // ingestd clamps it to a minute.
            wait = Duration::from_millis(n.min(60_000));
        }
        query.push(format!("{k}={n}"));
    }
    let url = format!(
        "{}/api/devices/{sim}/recordings?{}",
        st.ingestd_for(Some(&sim)).await,
        query.join("&")
    );
    match ask_ingestd(
        st.client.get(&url),
        wait + INGESTD_MARGIN,
        "the recordings query",
    )
    .await
    {
        Ok(list) if list.is_array() => http::json(StatusCode::OK, &list),
        Ok(_) => http::error(
            StatusCode::BAD_GATEWAY,
            "ingestd's recordings answer is not a list",
        ),
        Err(resp) => resp,
    }
}

/// The upload's catalog session once it holds a segment (so a player started on its playlist
/// finds media), and whether it has ended (the device sent the whole span within the wait).
fn upload_session(cat: &Catalog, playback_id: &str) -> Option<(String, bool)> {
    let session = cat.playback(playback_id).ok()??.session_id?;
    if cat.segments_of_session(&session).ok()?.is_empty() {
        return None;
    }
    let ended = cat.session(&session).ok()??.ended_ms.is_some();
    Some((session, ended))
}

/// POST `.../channels/<ch>/playback`: forwards the body to ingestd (0x9201), then waits like a
/// watch until the upload's playlist lists one of its segments.
async fn start_playback(st: Arc<AppState>, sim: String, ch: String, body: Bytes) -> Response {
    if let Err(resp) = check_sim(&sim) {
        return resp;
    }
    let channel = match check_channel(&ch) {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let fields = match json_object(&body) {
        Ok(m) => m,
        Err(resp) => return resp,
    };
    for k in ["start_ms", "end_ms"] {
        if !fields.get(k).is_some_and(|v| v.is_i64()) {
            return bad_request(format!("{k}: expected milliseconds since the epoch"));
        }
    }
    let started = Instant::now();
    let guess = StreamName::playback(&stream_sim(&sim), channel).to_string();
    let url = format!(
        "{}/api/devices/{sim}/channels/{channel}/playback",
        st.ingestd_for(Some(&sim)).await
    );
    let request = st
        .client
        .post(&url)
        .header("content-type", "application/json")
        .body(body);
    let answer = match ask_ingestd(
        request,
        DEVICE_ANSWER_WAIT + INGESTD_MARGIN,
        "the playback request",
    )
    .await
    {
        Ok(Value::Object(m)) => m,
        Ok(_) => {
            return http::error(
                StatusCode::BAD_GATEWAY,
                "ingestd's playback answer is not an object",
            )
        }
        Err(resp) => return resp,
    };
    // ingestd names the stream; our guess of its SIM spelling is only the fallback.
    let stream = answer
        .get("stream")
        .and_then(Value::as_str)
        .filter(|s| layout::valid_stream_name(s))
        .map_or_else(|| guess.clone(), str::to_owned);
    let live_playlist = format!("/live/{stream}/{}", layout::PLAYLIST_FILE);
    let Some(playback_id) = answer
        .get("playback_id")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return http::error(
            StatusCode::BAD_GATEWAY,
            "ingestd's playback answer has no playback_id",
        );
    };
    // The upload's own playlist is its catalog session's: it holds this upload only (the
    // channel's `_pb` stream carries every upload of the channel, one after another), grows
    // while the device sends (EVENT) and ends with ENDLIST when the upload does.
    let deadline = started + st.watch_timeout;
    let (session, ended) = loop {
        let (cat, id) = (st.catalog.clone(), playback_id.clone());
        if let Some(found) = blocking(move || upload_session(&cat, &id)).await {
            break found;
        }
        if Instant::now() >= deadline {
            return http::json(
                StatusCode::GATEWAY_TIMEOUT,
                &json!({
                    "error": format!("no segment of the upload to {stream} within {} s of asking ingestd", st.watch_timeout.as_secs_f64()),
                    "status": 504, "stream": stream, "live_playlist": live_playlist,
                    "playback_id": playback_id,
                }),
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut out = answer;
    out.insert("stream".into(), json!(stream));
    out.insert(
        "playlist".into(),
        json!(format!("/vod/session/{session}/{}", layout::PLAYLIST_FILE)),
    );
    out.insert("live_playlist".into(), json!(live_playlist));
    out.insert("ended".into(), json!(ended));
    out.insert(
        "waited_ms".into(),
        json!(started.elapsed().as_millis() as u64),
    );
    out.insert("session_id".into(), json!(session));
    out.insert(
        "download".into(),
        json!(format!("/vod/session/{session}/video.mp4")),
    );
    http::json(StatusCode::OK, &Value::Object(out))
}

/// POST `.../channels/<ch>/playback/control`: forwards the body to ingestd (0x9202).
async fn control_playback(st: Arc<AppState>, sim: String, ch: String, body: Bytes) -> Response {
    if let Err(resp) = check_sim(&sim) {
        return resp;
    }
    let channel = match check_channel(&ch) {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    match json_object(&body) {
        Ok(m) if m.get("action").is_some_and(Value::is_string) => {}
        Ok(_) => {
            return bad_request(
                "action: expected pause, resume, stop, speed, seek, keyframes or rewind",
            )
        }
        Err(resp) => return resp,
    }
    let url = format!(
        "{}/api/devices/{sim}/channels/{channel}/playback/control",
        st.ingestd_for(Some(&sim)).await
    );
    let request = st
        .client
        .post(&url)
        .header("content-type", "application/json")
        .body(body);
    match ask_ingestd(
        request,
        DEVICE_ANSWER_WAIT + INGESTD_MARGIN,
        "the playback control",
    )
    .await
    {
        Ok(v) => http::json(StatusCode::OK, &v),
        Err(resp) => resp,
    }
}

/// `/vod/session/<id>/video.mp4`: the session's segments remuxed into one MP4 download, under
/// the same token as its playlist (scope `vod/session/<id>`) and the clip export's limits (a
/// clip slot, at most [`MAX_CLIP_MS`] of media). A session still being recorded gives what is
/// catalogued so far (`x-session-ended: false`).
async fn session_mp4(
    st: Arc<AppState>,
    id: String,
    path_token: Option<String>,
    req: Req,
) -> Response {
    if !layout::valid_session_id(&id) {
        return http::error(StatusCode::NOT_FOUND, "invalid id");
    }
    let scope = format!("vod/session/{id}");
    let token_given = path_token.is_some() || req.query.contains_key("token");
    if !token_given {
        if let Err(resp) = st.auth.principal(&req).await {
            return resp;
        }
    }
    let (cat, id2) = (st.catalog.clone(), id.clone());
    let found = blocking(move || {
        let Some(session) = cat.session(&id2)? else {
            return Ok(None);
        };
        Ok(Some((session, cat.segments_of_session(&id2)?)))
    })
    .await;
    let (session, rows) = match found {
        Ok(Some(v)) => v,
        Ok(None) if token_given => return crate::auth::forbidden("token invalid"),
        Ok(None) => return not_found(&scope),
        Err(e) => return catalog_failed(e),
    };
    if let Err(resp) = st
        .auth
        .media(
            &req,
            path_token.as_deref(),
            &[&scope],
            session.sim.as_deref(),
        )
        .await
    {
        return resp;
    }
    let Some((start_ms, end_ms)) = mp4::span_ms(&rows) else {
        return not_found(format!("segments of {scope}"));
    };
    if end_ms - start_ms > MAX_CLIP_MS {
        return bad_request(format!(
            "the session holds {} s of media, over the {} s an MP4 export may take: export parts with /api/streams/{}/clip.mp4?from&to",
            (end_ms - start_ms) / 1000,
            MAX_CLIP_MS / 1000,
            session.stream
        ));
    }
    let _permit = match mp4::clip_slot(&st) {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let media = st.media.clone();
    let made = blocking(move || mp4::remux_segments(&media, &rows)).await;
    let file = match made {
        Ok(f) => f,
        Err(e) => return e.into_response(&scope),
    };
    let mut resp = mp4::attachment(&req, file, &format!("{}_{id}.mp4", session.stream));
    if let Ok(v) = session.ended_ms.is_some().to_string().parse() {
        resp.headers_mut().insert("x-session-ended", v);
    }
    resp
}
