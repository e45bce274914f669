//! The warp routes of hlsd, one module per group: `live` (HLS straight from the data dir),
//! `vod` (recordings rendered from the catalog: playlists and MP4 clips), `api` (the JSON API
//! and the watch/stop forwarding to ingestd), `playback` (the device's own recordings: list,
//! upload, control, and a session as MP4, with `mp4` doing the remux) and `page` (the web page,
//! CORS preflight and the JSON 404). This module combines them and holds the helpers every group uses: request
//! extraction, blocking calls, token checks and the common error answers.
//!
//! Routes (GET and HEAD unless noted; every answer carries CORS headers; OPTIONS answers preflight):
//! - `/live/<stream>/index.m3u8`, `/live/<stream>/<n>.ts` and the token-in-path forms
//!   `/live/<stream>/t/<token>/index.m3u8`, `/live/<stream>/t/<token>/<n>.ts`
//! - `/live/<stream>/ll.m3u8` and `ll-init-<g>.mp4`, `ll-<msn>.<part>.m4s`, `ll-<msn>.m4s` (+ the
//!   `/t/<token>/` forms): Low-Latency HLS, forwarded to ingestd (`low_latency`)
//! - `/vod/session/<id>/index.m3u8`, `/vod/incident/<id>/index.m3u8[?channel=N]` (+ `/t/<token>/` forms)
//! - `/api/streams/<stream>/clip.mp4?from&to`, `/vod/session/<id>/video.mp4` (+ `/t/<token>/` form)
//! - `/api/streams[?all=1]`, `/api/devices`, `/api/devices/<sim>/{sessions,incidents,playbacks,positions}?from&to[&limit]`
//! - POST `/api/devices/<sim>/channels/<ch>/watch` and `/stop`
//! - `/api/devices/<sim>/recordings?channel&from&to`, POST `/api/devices/<sim>/channels/<ch>/playback`
//!   and `/playback/control` (`playback`: the device's own recordings, forwarded to ingestd)
//! - `/metrics`: the object store's request counters (`metrics`)
//! - `/`, `/static/<asset>`

// Handlers return early with a ready response (`Result<_, Response>`); boxing it would only
// add an allocation to every error path.
#![allow(clippy::result_large_err)]

use std::convert::Infallible;
use std::sync::Arc;

use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use streamcore::catalog::{self, TimeRange};

use crate::http::{self, Req};
use crate::server::AppState;

mod account;
mod api;
mod live;
mod low_latency;
mod metrics;
mod mp4;
mod page;
mod playback;
// Crate-visible for the clip limits: the server sizes the slots and re-exports the maximum.
pub(crate) mod vod;

const MPEGURL: &str = "application/vnd.apple.mpegurl";

/// All routes; never rejects (unknown paths get a JSON 404).
pub(crate) fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    live::routes(state.clone())
        .or(vod::routes(state.clone()))
        .unify()
        // Before `api`: its `channels/<ch>/<action>` and `<sim>/<what>` would take these paths.
        .or(playback::routes(state.clone()))
        .unify()
        .or(account::routes(state.clone()))
        .unify()
        .or(metrics::routes(state.clone()))
        .unify()
        .or(api::routes(state))
        .unify()
        .or(page::routes())
        .unify()
        // Last: it takes every request the routes above left.
        .or(page::fallback())
        .unify()
        .map(http::add_cors)
}

fn with_state(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Arc<AppState>,), Error = Infallible> + Clone {
    warp::any().map(move || state.clone())
}

fn get_or_head() -> impl Filter<Extract = (), Error = Rejection> + Copy {
    warp::get().or(warp::head()).unify()
}

fn request() -> impl Filter<Extract = (Req,), Error = Infallible> + Clone {
    warp::method()
        .and(warp::header::headers_cloned())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .map(|method, headers, raw: String| Req {
            method,
            headers,
            query: http::parse_query(&raw),
        })
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking task panicked")
}

fn not_found(what: impl std::fmt::Display) -> Response {
    http::error(StatusCode::NOT_FOUND, format!("{what} not found"))
}

/// Tells the catalog (at most every [`crate::server::VIEWER_WRITE_EVERY`] per stream) that
/// this instance serves `stream`'s live playlist, so ingestd keeps the device's video running.
/// Off the request path: the answer never waits for the catalog.
fn touch_viewer(st: &Arc<AppState>, stream: &str) {
    let now = std::time::Instant::now();
    {
        let mut seen = st.viewers_written.lock().unwrap_or_else(|e| e.into_inner());
        if seen
            .get(stream)
            .is_some_and(|t| now.duration_since(*t) < crate::server::VIEWER_WRITE_EVERY)
        {
            return;
        }
        if seen.len() > 100_000 {
            seen.clear();
        }
        seen.insert(stream.to_string(), now);
    }
    let (cat, stream, instance) = (st.catalog.clone(), stream.to_string(), st.instance.clone());
    tokio::task::spawn_blocking(move || {
        if let Err(e) = cat.touch_viewer(&stream, &instance, catalog::now_ms()) {
            tracing::debug!(error = %e, %stream, "cannot record the viewer");
        }
    });
}

/// A catalog that is down is a 503 (retry later); anything else is ours, a 500.
fn catalog_failed(e: catalog::Error) -> Response {
    tracing::warn!(error = %e, "catalog query failed");
    let status = if e.is_unavailable() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    http::error(status, e)
}

/// `from`/`to`: milliseconds since the epoch or RFC 3339.
fn parse_time(v: &str) -> Option<i64> {
    if let Ok(ms) = v.parse::<i64>() {
        return Some(ms);
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .ok()
        .map(|t| t.timestamp_millis())
}

fn parse_range(req: &Req) -> Result<TimeRange, Response> {
    let get = |k: &str| -> Result<Option<i64>, Response> {
        match req.query.get(k).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => parse_time(v).map(Some).ok_or_else(|| {
                http::error(
                    StatusCode::BAD_REQUEST,
                    format!("{k}: expected milliseconds since the epoch or RFC 3339, got {v:?}"),
                )
            }),
        }
    };
    Ok(TimeRange::new(get("from")?, get("to")?))
}
