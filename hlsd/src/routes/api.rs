//! The JSON API: `/api/streams[?all=1]` (what can be played now), `/api/devices` and
//! `/api/devices/<sim>/{sessions,incidents,playbacks,positions}?from&to[&limit]` (catalog
//! queries), and
//! POST `/api/devices/<sim>/channels/<ch>/{watch,stop}`, forwarded to ingestd's control API;
//! a watch answers once the stream's live playlist is being written. The device's own
//! recordings (`<sim>/recordings`, `channels/<ch>/playback[/control]`) are `playback`'s, whose
//! routes are matched before these.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use streamcore::catalog::Role;
use streamcore::layout::{self, StreamName};
use streamcore::playlist::{format_pdt, MediaPlaylist};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::{blocking, catalog_failed, get_or_head, not_found, parse_range, request, with_state};
use crate::http::{self, Req};
use crate::media::MediaSource;
use crate::server::AppState;

const DEFAULT_POSITION_LIMIT: usize = 10_000;
const MAX_POSITION_LIMIT: usize = 200_000;

pub(super) fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let st = with_state(state);
    let get = get_or_head();

    let streams = warp::path!("api" / "streams")
        .and(get)
        .and(st.clone())
        .and(request())
        .then(|st: Arc<AppState>, req: Req| async move { api_streams(st, req).await });
    let devices = warp::path!("api" / "devices")
        .and(get)
        .and(st.clone())
        .and(request())
        .then(|st: Arc<AppState>, req: Req| async move { api_devices(st, req).await });
    let device_q = warp::path!("api" / "devices" / String / String)
        .and(get)
        .and(st.clone())
        .and(request())
        .then(
            |sim: String, what: String, st: Arc<AppState>, req: Req| async move {
                api_device_query(st, sim, what, req).await
            },
        );
    let control = warp::path!("api" / "devices" / String / "channels" / String / String)
        .and(warp::post())
        .and(st.clone())
        .and(request())
        .then(
            |sim: String, ch: String, action: String, st: Arc<AppState>, req: Req| async move {
                control(st, sim, ch, action, req).await
            },
        );

    streams
        .or(devices)
        .unify()
        .or(device_q)
        .unify()
        .or(control)
        .unify()
}

/// Streams with a playlist on disk (what can be served), marked live from the files, with what
/// the name says (device, channel, live or playback), the open catalog session
/// (`session_id`) and the latest one, open or ended (`recording_session_id`), so a client can
/// also open the recording.
async fn api_streams(st: Arc<AppState>, req: Req) -> Response {
    let principal = match st.auth.principal(&req).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let all = matches!(req.query.get("all").map(String::as_str), Some("1" | "true"));
    let cat = st.catalog.clone();
    let sessions = match blocking(move || cat.latest_sessions()).await {
        Ok(v) => v,
        Err(e) => return catalog_failed(e),
    };
    // What a store-backed hlsd reads (it cannot list the store cheaply): the streams the
    // catalog knows, only the fed ones unless all are asked for.
    let candidates = sessions
        .iter()
        .filter(|s| all || s.ended_ms.is_none())
        .map(|s| s.stream.clone())
        .collect();
    let streams = match st.media.streams(candidates, st.live_timeout).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "listing the live streams");
            return http::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot read the live streams",
            );
        }
    };
    let sims = streams
        .iter()
        .filter_map(|s| s.name.sim().map(str::to_string))
        .collect();
    let visible = match st.auth.visible_sims(&principal, sims).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let now = SystemTime::now();
    let list: Vec<_> = streams
        .into_iter()
        .filter(|s| all || s.live)
        // Raw streams (no SIM) only for those who see everything.
        .filter(|s| match (&visible, s.name.sim()) {
            (None, _) => true,
            (Some(v), Some(sim)) => v.contains(sim),
            (Some(_), None) => false,
        })
        .map(|s| {
            let name = s.name.to_string();
            let updated_ms = s
                .modified
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            // The latest session: the open one while the stream is fed, else the recording
            // it left (a finished playback upload is opened as VOD through it).
            let latest = sessions.iter().find(|o| o.stream == name);
            let open = latest.filter(|o| o.ended_ms.is_none());
            json!({
                "url": format!("/live/{name}/{}", layout::PLAYLIST_FILE),
                "live": s.live,
                "ended": s.playlist.is_ended(),
                "kind": s.name.kind(),
                "updated": format_pdt(updated_ms),
                "updated_ms": updated_ms,
                "age_ms": now.duration_since(s.modified).map(|d| d.as_millis() as u64).unwrap_or(0),
                "target_duration": s.playlist.target_duration(),
                "media_sequence": s.playlist.media_sequence(),
                "segments": s.playlist.segments().len(),
                "window_seconds": s.playlist.duration().as_secs_f64(),
                "sim": s.name.sim(),
                "channel": s.name.channel(),
                "session_id": open.map(|o| o.id.as_str()),
                "session_started_ms": open.map(|o| o.started_ms),
                "recording_session_id": latest.map(|o| o.id.as_str()),
                "recording_ended_ms": latest.and_then(|o| o.ended_ms),
                "name": name,
            })
        })
        .collect();
    http::json(StatusCode::OK, &list)
}

async fn api_devices(st: Arc<AppState>, req: Req) -> Response {
    let principal = match st.auth.principal(&req).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let cat = st.catalog.clone();
    let mut devices = match blocking(move || cat.devices()).await {
        Ok(d) => d,
        Err(e) => return catalog_failed(e),
    };
    match st
        .auth
        .visible_sims(&principal, devices.iter().map(|d| d.sim.clone()).collect())
        .await
    {
        Ok(Some(visible)) => devices.retain(|d| visible.contains(&d.sim)),
        Ok(None) => {}
        Err(resp) => return resp,
    }
    http::json(StatusCode::OK, &devices)
}

/// Sessions, incidents and playback requests (the device recordings asked for, with their
/// state and session) newest first; positions oldest first (a track).
async fn api_device_query(st: Arc<AppState>, sim: String, what: String, req: Req) -> Response {
    if !layout::valid_sim(&sim) {
        return http::error(StatusCode::NOT_FOUND, "invalid SIM");
    }
    if let Err(resp) = st.auth.require_device(&req, Role::Viewer, &sim).await {
        return resp;
    }
    let range = match parse_range(&req) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let (from, to) = range.bounds();
    let cat = st.catalog.clone();
    let result = match what.as_str() {
        "sessions" => {
            blocking(move || {
                let mut v = cat.sessions_of_device(&sim, from, to)?;
                v.reverse();
                Ok(serde_json::to_value(v).unwrap_or_default())
            })
            .await
        }
        "incidents" => {
            blocking(move || {
                let mut v = cat.incidents(&sim, from, to)?;
                v.reverse();
                Ok(serde_json::to_value(v).unwrap_or_default())
            })
            .await
        }
        "playbacks" => {
            blocking(move || {
                let mut v = cat.playbacks_of_device(&sim, from, to)?;
                v.reverse();
                Ok(serde_json::to_value(v).unwrap_or_default())
            })
            .await
        }
        "positions" => {
            let limit = match req.query.get("limit").map(|l| l.parse::<usize>()) {
                None => DEFAULT_POSITION_LIMIT,
                Some(Ok(l)) if l > 0 => l.min(MAX_POSITION_LIMIT),
                Some(_) => {
                    return http::error(
                        StatusCode::BAD_REQUEST,
                        "limit: expected a positive integer",
                    )
                }
            };
            blocking(move || {
                cat.positions(&sim, from, to, limit)
                    .map(|v| serde_json::to_value(v).unwrap_or_default())
            })
            .await
        }
        _ => return not_found(format!("device resource {what}")),
    };
    match result {
        Ok(v) => http::json(StatusCode::OK, &v),
        Err(e) => catalog_failed(e),
    }
}

/// True when the stream's playlist is live: has a segment, no ENDLIST, and was written at or
/// after `since` (so a stale playlist from an earlier session doesn't count). A store keeps
/// write times to the second, so a playlist of the second `since` falls in counts too.
async fn playlist_fresh(media: &MediaSource, stream: &str, since: SystemTime) -> bool {
    let Ok(Some(p)) = media.playlist(stream).await else {
        return false;
    };
    let since = since - Duration::from_millis(since_granularity_ms(since));
    match MediaPlaylist::parse_any(&String::from_utf8_lossy(&p.text)) {
        Ok(list) => !list.is_ended() && list.segments().len() > 0 && p.modified >= since,
        Err(_) => false,
    }
}

/// How far `t` is into its second.
fn since_granularity_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_millis()))
        .unwrap_or(0)
}

async fn control(st: Arc<AppState>, sim: String, ch: String, action: String, req: Req) -> Response {
    if !layout::valid_sim(&sim) {
        return http::error(StatusCode::NOT_FOUND, "invalid SIM");
    }
    let principal = match st.auth.require_device(&req, Role::Operator, &sim).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let Some(channel) = layout::parse_channel(&ch) else {
        return http::error(StatusCode::NOT_FOUND, "invalid channel");
    };
    let ingest_action = match action.as_str() {
        "watch" => "live",
        "stop" => "stop",
        _ => return not_found(format!("action {action}")),
    };
    let stream = StreamName::live(&sim, channel).to_string();
    st.auth
        .audit(
            &principal.actor(),
            if action == "watch" {
                "live.start"
            } else {
                "live.stop"
            },
            &stream,
            None,
        )
        .await;
    // A playlist already being updated is as good as a new one: a second viewer needn't wait.
    let started = Instant::now();
    let already_live = action == "watch"
        && playlist_fresh(
            &st.media,
            &stream,
            SystemTime::now() - st.live_timeout.min(Duration::from_secs(10)),
        )
        .await;
    let since = SystemTime::now();
    let url = format!(
        "{}/api/devices/{sim}/channels/{channel}/{ingest_action}",
        st.ingestd_for(Some(&sim)).await
    );
    // An explicit (empty) JSON body: ingestd's control API, like any HTTP server that bounds
    // request bodies, answers a POST without a Content-Length with 411.
    match st.client.post(&url).json(&json!({})).send().await {
        Err(e) if e.is_timeout() => {
            return http::error(
                StatusCode::GATEWAY_TIMEOUT,
                format!("ingestd did not answer {ingest_action} in time: {e}"),
            );
        }
        Err(e) => {
            return http::error(StatusCode::BAD_GATEWAY, format!("ingestd unreachable: {e}"));
        }
        Ok(r) if !r.status().is_success() => {
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            let ours = if status.is_client_error() {
                status
            } else {
                StatusCode::BAD_GATEWAY
            };
            return http::json(
                ours,
                &json!({"error": format!("ingestd answered {status} to {ingest_action}"), "status": ours.as_u16(), "ingestd_status": status.as_u16(), "ingestd_body": body, "stream": stream}),
            );
        }
        Ok(_) => {}
    }
    let playlist = format!("/live/{stream}/{}", layout::PLAYLIST_FILE);
    if action == "stop" {
        return http::json(StatusCode::OK, &json!({"stream": stream, "stopped": true}));
    }
    if !already_live {
        let deadline = started + st.watch_timeout;
        loop {
            if playlist_fresh(&st.media, &stream, since).await {
                break;
            }
            if Instant::now() >= deadline {
                return http::json(
                    StatusCode::GATEWAY_TIMEOUT,
                    &json!({
                        "error": format!("no segment of {stream} within {} s of asking ingestd", st.watch_timeout.as_secs_f64()),
                        "status": 504, "stream": stream, "playlist": playlist,
                    }),
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    http::json(
        StatusCode::OK,
        &json!({"stream": stream, "playlist": playlist, "waited_ms": started.elapsed().as_millis() as u64, "already_live": already_live}),
    )
}
