//! Recordings rendered from the catalog: the VOD playlists `/vod/session/<id>/index.m3u8` and
//! `/vod/incident/<id>/index.m3u8[?channel=N]` (with their `/t/<token>/` forms), whose segment
//! URIs point at `/live/`, and the MP4 export `/api/streams/<stream>/clip.mp4?from&to` with the
//! limits that keep it from tying up the server.

use std::sync::Arc;

use bytes::Bytes;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::{
    blocking, catalog_failed, get_or_head, mp4, not_found, parse_range, request, with_state,
    MPEGURL,
};
use crate::media::MediaSource;
use streamcore::catalog::{self, recording_playlist, Catalog, Segment};
use streamcore::layout::{self, StreamName};
use streamcore::playlist::MediaPlaylist;

use crate::http::{self, Representation, Req};
use crate::server::AppState;

const VOD_FINISHED_CACHE: &str = "public, max-age=86400";
const VOD_OPEN_CACHE: &str = "public, max-age=2";
/// Longest clip export; longer ranges are refused (400) rather than tying up disk and a thread.
pub const MAX_CLIP_MS: i64 = 3_600_000;
/// Clip exports running at once (each one is a blocking thread reading segments and writing a
/// temp file); more get a 503 with Retry-After.
pub(crate) const CLIP_SLOTS: usize = 2;

pub(super) fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let st = with_state(state);
    let get = get_or_head();

    let vod = warp::path!("vod" / String / String / "index.m3u8")
        .and(get)
        .and(st.clone())
        .and(request())
        .then(
            |kind: String, id: String, st: Arc<AppState>, req: Req| async move {
                serve_vod(st, kind, id, None, req).await
            },
        );
    let vod_t = warp::path!("vod" / String / String / "t" / String / "index.m3u8")
        .and(get)
        .and(st.clone())
        .and(request())
        .then(
            |kind: String, id: String, tok: String, st: Arc<AppState>, req: Req| async move {
                serve_vod(st, kind, id, Some(tok), req).await
            },
        );
    let clip = warp::path!("api" / "streams" / String / "clip.mp4")
        .and(get)
        .and(st.clone())
        .and(request())
        .then(|stream: String, st: Arc<AppState>, req: Req| async move {
            export_clip(st, stream, req).await
        });

    vod.or(vod_t).unify().or(clip).unify()
}

async fn serve_vod(
    st: Arc<AppState>,
    kind: String,
    id: String,
    path_token: Option<String>,
    req: Req,
) -> Response {
    // Session ids are the catalog's strings, incident ids its integers; both are checked
    // before they reach a token scope or a query.
    let incident_id = match kind.as_str() {
        "session" if layout::valid_session_id(&id) => None,
        "incident" => match id
            .parse::<i64>()
            .ok()
            .filter(|_| id.len() <= 19 && id.bytes().all(|b| b.is_ascii_digit()))
        {
            Some(n) => Some(n),
            None => return http::error(StatusCode::NOT_FOUND, "invalid id"),
        },
        "session" => return http::error(StatusCode::NOT_FOUND, "invalid id"),
        _ => return not_found(format!("vod kind {kind}")),
    };
    let scope = format!("vod/{kind}/{id}");
    let token_given = path_token.is_some() || req.query.contains_key("token");
    // Without a token the request needs a principal; refuse before the catalog says whether
    // the recording exists.
    if !token_given {
        if let Err(resp) = st.auth.principal(&req).await {
            return resp;
        }
    }
    let channel = req
        .query
        .get("channel")
        .and_then(|c| layout::parse_channel(c));
    let cat = st.catalog.clone();
    let found = blocking(move || match incident_id {
        None => session_segments(&cat, &id),
        Some(incident) => incident_segments(&cat, incident, channel),
    })
    .await;
    let (segments, finished, sim) = match found {
        Ok(Some(v)) => v,
        Ok(None) if token_given => return crate::auth::forbidden("token invalid"),
        Ok(None) => return not_found(&scope),
        Err(e) => return catalog_failed(e),
    };
    let token = match st
        .auth
        .media(&req, path_token.as_deref(), &[&scope], sim.as_deref())
        .await
    {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    if segments.is_empty() {
        return not_found(format!("segments of {scope}"));
    }
    // A token-opened recording signs each segment URI for that segment alone, so its token
    // never opens the live stream or the rest of the recording.
    let signer = &st.auth.signer;
    let seg_uri = |s: &Segment, sequence: u64| {
        let file = layout::segment_file(sequence);
        match &token {
            Some((_, expiry)) => {
                let t = signer.sign(&format!("{}/{file}", s.stream), *expiry);
                format!("/live/{}/{file}?token={t}", s.stream)
            }
            None => format!("/live/{}/{file}", s.stream),
        }
    };
    // One TARGETDURATION for the recording's whole life, open or finished: its stream's.
    let stream_target = stream_target_duration(&st.media, &segments[0].stream).await;
    let text = match recording_playlist(&segments, finished, seg_uri) {
        Ok(p) => p.with_target_at_least(stream_target.unwrap_or(0)).render(),
        Err(e) => return catalog_failed(e),
    };
    let cache = if finished {
        VOD_FINISHED_CACHE
    } else {
        VOD_OPEN_CACHE
    };
    http::respond(
        &req,
        Representation::text(&req, Bytes::from(text), MPEGURL, cache, None, true),
    )
}

/// The token scope of one clip export (the `from`/`to` query values as given).
pub(crate) fn clip_scope(stream: &str, from: &str, to: &str) -> String {
    format!("clip/{stream}/{from}/{to}")
}

/// The TARGETDURATION of a stream's live playlist (the longest a segment of it may be), if the
/// playlist is there.
async fn stream_target_duration(media: &MediaSource, stream: &str) -> Option<u32> {
    let playlist = media.playlist(stream).await.ok()??;
    Some(
        MediaPlaylist::parse_any(&String::from_utf8_lossy(&playlist.text))
            .ok()?
            .target_duration(),
    )
}

/// A recording's segments, whether it is complete, and its device (`None`: a raw stream).
type Recording = (Vec<Segment>, bool, Option<String>);

/// A session's segments, whether it has ended, and its device.
fn session_segments(cat: &Catalog, id: &str) -> Result<Option<Recording>, catalog::Error> {
    let Some(session) = cat.session(id)? else {
        return Ok(None);
    };
    Ok(Some((
        cat.segments_of_session(id)?,
        session.ended_ms.is_some(),
        session.sim.clone(),
    )))
}

/// An incident's video: the session it names (a playback upload), else the segments that
/// overlap it (the first one contains its start) on the live stream of `channel` when asked,
/// else on its own stream, else (a whole-device incident) on the device's first channel; and
/// whether that video is complete. An open incident (the alarm still in progress) never is:
/// its playlist is an EVENT playlist that grows until the alarm ends.
fn incident_segments(
    cat: &Catalog,
    id: i64,
    channel: Option<u8>,
) -> Result<Option<Recording>, catalog::Error> {
    let Some(inc) = cat.incident(id)? else {
        return Ok(None);
    };
    let sim = Some(inc.sim.clone());
    if let Some(session) = &inc.session_id {
        // The upload is complete when its session has ended; a session retention has
        // deleted ended long ago.
        let ended = cat.session(session)?.is_none_or(|s| s.ended_ms.is_some());
        return Ok(Some((
            cat.segments_of_session(session)?,
            ended && !inc.open,
            sim,
        )));
    }
    let stream = match (channel, inc.stream_name()) {
        (Some(c), Some(own)) if Some(c) == inc.channel() => Some(own),
        (Some(c), _) => Some(StreamName::live(&inc.sim, c).to_string()),
        (None, Some(own)) => Some(own),
        (None, None) => cat
            .devices()?
            .into_iter()
            .find(|d| d.sim == inc.sim)
            .and_then(|d| d.channels.first().copied())
            .map(|c| StreamName::live(&inc.sim, c).to_string()),
    };
    let Some(stream) = stream else {
        return Ok(Some((Vec::new(), true, sim)));
    };
    let segments = cat.segments_in_range(&stream, inc.from_ms, inc.to_ms)?;
    // A segment is catalogued when it closes, seconds after the moments it holds: while the
    // stream is live and has not yet reached the incident's end, the playlist stays open
    // (no ENDLIST) so a player polls for the rest instead of stopping short.
    let covered = segments.last().is_some_and(|s| s.end_ms >= inc.to_ms);
    // Only when not covered: is the stream still live (a session open at the end of time)?
    let finished = !inc.open
        && (covered
            || cat
                .sessions_of_stream(&stream, i64::MAX - 1, i64::MAX)?
                .is_empty());
    Ok(Some((segments, finished, sim)))
}

/// `GET /api/streams/<stream>/clip.mp4?from=&to=`: the recording of `[from, to)` as an MP4
/// download, remuxed in-process (streamcore's `mux::clip`). Cuts are at segment boundaries: the clip
/// starts with the segment containing `from` and ends with the one containing `to`
/// (`x-clip-start-ms` / `x-clip-end-ms` say what it covers). Opens for a principal that may
/// see the stream, or with a token minted for exactly this clip (scope
/// `clip/<stream>/<from>/<to>`, the share link) or for the whole stream.
async fn export_clip(st: Arc<AppState>, stream: String, req: Req) -> Response {
    if !layout::valid_stream_name(&stream) {
        return http::error(StatusCode::NOT_FOUND, "invalid stream name");
    }
    let clip_scope = clip_scope(
        &stream,
        req.query.get("from").map_or("", String::as_str),
        req.query.get("to").map_or("", String::as_str),
    );
    let sim = crate::auth::sim_of_stream(&stream);
    if let Err(resp) = st
        .auth
        .media(&req, None, &[&clip_scope, &stream], sim.as_deref())
        .await
    {
        return resp;
    }
    let range = match parse_range(&req) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let (Some(from), Some(to)) = (range.from_ms, range.to_ms) else {
        return http::error(StatusCode::BAD_REQUEST, "from and to are both required");
    };
    if to <= from || to - from > MAX_CLIP_MS {
        return http::error(
            StatusCode::BAD_REQUEST,
            format!(
                "expected from < to and at most {} s between them",
                MAX_CLIP_MS / 1000
            ),
        );
    }
    let _permit = match mp4::clip_slot(&st) {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let (cat, media, s2) = (st.catalog.clone(), st.media.clone(), stream.clone());
    let (from_ms, to_ms) = range.bounds();
    let made = blocking(move || {
        let rows = cat
            .segments_in_range(&s2, from_ms, to_ms)
            .map_err(mp4::RemuxError::Catalog)?;
        if rows.is_empty() {
            return Ok(None);
        }
        mp4::remux_segments(&media, &rows).map(Some)
    })
    .await;
    match made {
        Ok(Some(file)) => mp4::attachment(&req, file, &format!("{stream}_{from}-{to}.mp4")),
        Ok(None) => not_found(format!("recording of {stream} in that range")),
        Err(e) => e.into_response(&stream),
    }
}
