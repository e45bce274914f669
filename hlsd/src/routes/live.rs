//! Live HLS, served from what ingestd writes (`live/<stream>/...` in the data dir or the store): `/live/<stream>/index.m3u8`
//! and `/live/<stream>/<n>.ts`, and the token-in-path forms `/live/<stream>/t/<token>/index.m3u8`
//! and `/live/<stream>/t/<token>/<n>.ts`. The low-latency rendition beside them
//! (`ll.m3u8`, `ll-*`) is forwarded to ingestd ([`super::low_latency`]). Also owns `open_live_file`, which keeps reads inside
//! the data dir; the API's watch uses it too, to see a playlist come alive.

use std::sync::Arc;

use bytes::Bytes;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::{get_or_head, not_found, request, touch_viewer, with_state, MPEGURL};
use crate::http::{self, Representation, Req, Source};
use crate::media::SegmentBody;
use crate::server::AppState;
use crate::token::add_token_to_uris;
use streamcore::layout;

const MP2T: &str = "video/mp2t";
const LIVE_PLAYLIST_CACHE: &str = "public, max-age=1";
const SEGMENT_CACHE: &str = "public, max-age=31536000, immutable";
/// Segments behind a login must not be kept by shared caches.
const SEGMENT_CACHE_PRIVATE: &str = "private, max-age=31536000, immutable";

pub(super) fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let st = with_state(state);
    let get = get_or_head();

    let live = warp::path!("live" / String / String)
        .and(get)
        .and(st.clone())
        .and(request())
        .then(
            |stream: String, file: String, st: Arc<AppState>, req: Req| async move {
                serve_live(st, stream, None, file, req).await
            },
        );
    let live_t = warp::path!("live" / String / "t" / String / String)
        .and(get)
        .and(st.clone())
        .and(request())
        .then(
            |stream: String, tok: String, file: String, st: Arc<AppState>, req: Req| async move {
                serve_live(st, stream, Some(tok), file, req).await
            },
        );

    live.or(live_t).unify()
}

async fn serve_live(
    st: Arc<AppState>,
    stream: String,
    path_token: Option<String>,
    file: String,
    req: Req,
) -> Response {
    if !layout::valid_stream_name(&stream) {
        return http::error(StatusCode::NOT_FOUND, "invalid stream name");
    }
    let is_playlist = file == layout::PLAYLIST_FILE;
    let low_latency = streamcore::ll::parse_file_name(&file).is_some();
    if !is_playlist && !low_latency && layout::segment_sequence(&file).is_none() {
        return http::error(StatusCode::NOT_FOUND, "invalid segment name");
    }
    // A segment also opens with its own token: VOD playlists opened by a token sign every
    // segment URI for that segment alone.
    let segment_scope = format!("{stream}/{file}");
    let scopes: &[&str] = if is_playlist || low_latency {
        &[&stream]
    } else {
        &[&stream, &segment_scope]
    };
    let sim = crate::auth::sim_of_stream(&stream);
    let token = match st
        .auth
        .media(&req, path_token.as_deref(), scopes, sim.as_deref())
        .await
    {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    if is_playlist || file == streamcore::ll::LL_PLAYLIST {
        touch_viewer(&st, &stream);
    }
    if low_latency {
        let query_token = match (&token, &path_token) {
            (Some((tok, _)), None) => Some(tok.as_str()),
            _ => None,
        };
        return super::low_latency::forward(&st, &stream, &file, query_token, &req).await;
    }
    let missing = || {
        not_found(if is_playlist {
            format!("stream {stream}")
        } else {
            format!("segment {stream}/{file}")
        })
    };
    let read_failed = |e: std::io::Error| {
        tracing::warn!(%stream, %file, error = %e, "reading live media");
        http::error(StatusCode::INTERNAL_SERVER_ERROR, "read error")
    };
    if is_playlist {
        let playlist = match st.media.playlist(&stream).await {
            Ok(Some(p)) => p,
            Ok(None) => return missing(),
            Err(e) => return read_failed(e),
        };
        let text = String::from_utf8_lossy(&playlist.text);
        // A query token is copied into segment URIs; the path form needs nothing (relative URIs
        // resolve under /t/<token>/).
        let body = match (&token, &path_token) {
            (Some((tok, _)), None) => Bytes::from(add_token_to_uris(&text, tok)),
            _ => playlist.text.clone(),
        };
        let rep = Representation::text(
            &req,
            body,
            MPEGURL,
            LIVE_PLAYLIST_CACHE,
            Some(playlist.modified),
            true,
        );
        return http::respond(&req, rep);
    }
    let body = match st.media.segment(&stream, &file).await {
        Ok(Some(b)) => b,
        Ok(None) => return missing(),
        Err(e) => return read_failed(e),
    };
    let (etag, source, modified) = match body {
        SegmentBody::File { file, meta } => (
            http::file_etag(&meta),
            Source::File {
                file: Arc::new(file),
                len: meta.len(),
            },
            meta.modified().ok(),
        ),
        SegmentBody::Cached { bytes, modified } => (
            // A segment key is written once; its size and time tell versions apart should a
            // stream ever start over from sequence 0.
            format!(
                "\"{:x}-{:x}\"",
                bytes.len(),
                modified
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis()
            ),
            Source::Mem(bytes),
            Some(modified),
        ),
    };
    let rep = Representation {
        etag,
        source,
        content_type: MP2T,
        cache_control: if st.auth.allow_anonymous {
            SEGMENT_CACHE
        } else {
            SEGMENT_CACHE_PRIVATE
        },
        last_modified: modified,
        gzip: false,
        vary_encoding: false,
    };
    http::respond(&req, rep)
}
