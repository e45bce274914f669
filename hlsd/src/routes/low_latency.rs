//! Low-Latency HLS through hlsd: `/live/<stream>/ll.m3u8` and its files (`ll-init-<g>.mp4`,
//! `ll-<msn>.<part>.m4s`, `ll-<msn>.m4s`) are forwarded to the ingestd that holds the stream's
//! parts in memory (`GET {ingestd_url}/ll/<stream>/<file>`), after the same token check as
//! `index.m3u8`. Parts are too small and too many to go through storage; the node that ingests
//! a stream answers for them. A blocking reload (`_HLS_msn`, `_HLS_part`) is held by ingestd;
//! here it is one pending async request on a pooled connection, not a thread.

use std::time::Duration;

use bytes::Bytes;
use warp::http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use warp::http::StatusCode;
use warp::reply::Response;

use crate::http::{self, Req};
use crate::server::AppState;
use crate::token::add_token_to_uris;

/// ingestd holds a request at most three target durations (TARGETDURATION is at most 30 s).
const HOLD_LIMIT: Duration = Duration::from_secs(95);

/// The blocking-reload directives passed on; anything else (the token) stays here.
const DIRECTIVES: [&str; 3] = ["_HLS_msn", "_HLS_part", "_HLS_skip"];

/// Forwards one low-latency request; `token` is the query-form token to copy into the
/// playlist's URIs (the path form needs nothing: relative URIs resolve under `/t/<token>/`).
pub(super) async fn forward(
    st: &AppState,
    stream: &str,
    file: &str,
    token: Option<&str>,
    req: &Req,
) -> Response {
    // Parts live in the memory of the node ingesting the stream: the one holding its device.
    let sim = crate::auth::sim_of_stream(stream);
    let mut url = format!(
        "{}/ll/{stream}/{file}",
        st.ingestd_for(sim.as_deref()).await
    );
    let mut sep = '?';
    for k in DIRECTIVES {
        if let Some(v) = req.query.get(k) {
            // Valid values are numbers, YES or v2: nothing to escape.
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return http::error(
                    StatusCode::BAD_REQUEST,
                    format!("{k}={v:?}: not a valid value"),
                );
            }
            url.push(sep);
            sep = '&';
            url.push_str(k);
            url.push('=');
            url.push_str(v);
        }
    }
    let answer = match st.client.get(&url).timeout(HOLD_LIMIT).send().await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            return http::error(
                StatusCode::GATEWAY_TIMEOUT,
                "ingestd did not answer in time",
            )
        }
        Err(e) => return http::error(StatusCode::BAD_GATEWAY, format!("ingestd unreachable: {e}")),
    };
    let status = answer.status();
    let content_type = answer.headers().get(CONTENT_TYPE).cloned();
    let cache = answer.headers().get(CACHE_CONTROL).cloned();
    let body = match answer.bytes().await {
        Ok(b) => b,
        Err(e) => {
            return http::error(
                StatusCode::BAD_GATEWAY,
                format!("ingestd's answer broke off: {e}"),
            )
        }
    };
    let is_playlist = file == streamcore::ll::LL_PLAYLIST;
    let body = match (status.is_success() && is_playlist, token) {
        (true, Some(tok)) => Bytes::from(add_token_to_uris(&String::from_utf8_lossy(&body), tok)),
        _ => body,
    };
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    if let Some(v) = content_type {
        h.insert(CONTENT_TYPE, v);
    }
    h.insert(
        CACHE_CONTROL,
        cache.unwrap_or(HeaderValue::from_static("no-cache")),
    );
    resp
}
