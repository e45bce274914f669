//! MP4 downloads made from catalogued segments: the remux of a list of segment rows into an
//! unlinked temp file (streamcore's `mux::clip`), the clip slot that bounds how many run at
//! once, and the attachment answer. `/vod/session/<id>/video.mp4` (in `playback`) uses it for a
//! whole session; `vod`'s clip export does the same for a time range of a stream.

use crate::media::MediaSource;
use std::sync::Arc;

use streamcore::catalog::{self, Segment};
use streamcore::mux::clip;
use tokio::sync::OwnedSemaphorePermit;
use warp::http::StatusCode;
use warp::reply::Response;

use super::catalog_failed;
use crate::http::{self, Representation, Req, Source};
use crate::server::AppState;

const MP4: &str = "video/mp4";
/// Remuxed per request: nothing to cache.
const MP4_CACHE: &str = "private, no-store";

/// A finished remux: the open (already unlinked) file and the time span it covers.
pub(crate) struct Mp4File {
    pub file: std::fs::File,
    pub meta: std::fs::Metadata,
    /// Program date time of the first segment, Unix ms.
    pub start_ms: i64,
    /// End of the last segment, Unix ms.
    pub end_ms: i64,
}

pub(crate) enum RemuxError {
    Catalog(catalog::Error),
    /// A catalogued segment file that is not on disk (or not where the layout puts it).
    Missing(String),
    Failed(String),
}

impl RemuxError {
    /// The JSON answer for a failed remux of `what`.
    pub(crate) fn into_response(self, what: &str) -> Response {
        match self {
            RemuxError::Catalog(e) => catalog_failed(e),
            RemuxError::Missing(file) => {
                tracing::warn!(%what, %file, "MP4 export: a catalogued segment file is missing");
                http::error(
                    StatusCode::NOT_FOUND,
                    format!("segment file {file} is gone"),
                )
            }
            RemuxError::Failed(e) => {
                tracing::warn!(%what, error = %e, "MP4 export failed");
                http::error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("MP4 export: {e}"),
                )
            }
        }
    }
}

/// The time span of `rows` (catalog order): first program date time to the last one's end.
pub(crate) fn span_ms(rows: &[Segment]) -> Option<(i64, i64)> {
    let (first, last) = (rows.first()?, rows.last()?);
    Some((
        first.program_date_time_ms,
        last.program_date_time_ms + (last.duration_90k + 45) / 90,
    ))
}

/// One of the server's clip slots, or the 503 (with Retry-After) that says to come back: each
/// remux is a blocking thread reading segments and writing a temp file.
pub(crate) fn clip_slot(st: &AppState) -> Result<OwnedSemaphorePermit, Response> {
    st.clip_slots.clone().try_acquire_owned().map_err(|_| {
        let mut resp = http::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many MP4 exports running; retry shortly",
        );
        resp.headers_mut().insert(
            warp::http::header::RETRY_AFTER,
            warp::http::HeaderValue::from_static("2"),
        );
        resp
    })
}

/// Remuxes `rows` (non-empty, in playback order) into an unlinked temp file. Blocking.
pub(crate) fn remux_segments(media: &MediaSource, rows: &[Segment]) -> Result<Mp4File, RemuxError> {
    let Some((start_ms, end_ms)) = span_ms(rows) else {
        return Err(RemuxError::Failed("no segments".into()));
    };
    // Only a row that names the file the layout puts at its place is read (the same check as
    // for VOD playlists).
    let mut sequences = Vec::with_capacity(rows.len());
    for row in rows {
        sequences.push(
            row.checked_sequence()
                .map_err(|e| RemuxError::Catalog(catalog::Error::InvalidRecord(e)))?,
        );
    }
    let scratch = tempfile::Builder::new()
        .prefix("hlsd-mp4-")
        .tempdir()
        .map_err(|e| RemuxError::Failed(format!("temp dir: {e}")))?;
    let paths = media
        .segment_files(rows, scratch.path())
        .map_err(RemuxError::Missing)?;
    let mut inputs = Vec::with_capacity(rows.len());
    let mut prev: Option<(&str, u64)> = None;
    for ((row, path), sequence) in rows.iter().zip(paths).zip(sequences) {
        // A gap in sequence numbers (or another stream) is a break in the recording as much
        // as a flagged one.
        let gap = prev.is_some_and(|(s, p)| s != row.stream || p + 1 != sequence);
        inputs.push(clip::ClipSegment {
            path,
            discontinuity: row.discontinuity || gap,
        });
        prev = Some((&row.stream, sequence));
    }
    let tmp = tempfile::Builder::new()
        .prefix("hlsd-mp4-")
        .suffix(".mp4")
        .tempfile()
        .map_err(|e| RemuxError::Failed(format!("temp file: {e}")))?;
    let stats =
        clip::remux_to_mp4(&inputs, tmp.path()).map_err(|e| RemuxError::Failed(e.to_string()))?;
    // Reopen (libavformat wrote through its own handle), then unlink: the open file lives on
    // until the response body has been sent.
    let file = std::fs::File::open(tmp.path())
        .map_err(|e| RemuxError::Failed(format!("reopening the MP4: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| RemuxError::Failed(format!("MP4 metadata: {e}")))?;
    drop(tmp);
    tracing::info!(
        segments = stats.segments,
        frames = stats.frames,
        bytes = stats.bytes,
        "MP4 exported"
    );
    Ok(Mp4File {
        file,
        meta,
        start_ms,
        end_ms,
    })
}

/// The download answer (ranges and HEAD as for any file): `filename` must be a plain name
/// (it goes into Content-Disposition as is).
pub(crate) fn attachment(req: &Req, mp4: Mp4File, filename: &str) -> Response {
    let rep = Representation {
        etag: http::file_etag(&mp4.meta),
        source: Source::File {
            len: mp4.meta.len(),
            file: Arc::new(mp4.file),
        },
        content_type: MP4,
        cache_control: MP4_CACHE,
        last_modified: None,
        gzip: false,
        vary_encoding: false,
    };
    let mut resp = http::respond(req, rep);
    let h = resp.headers_mut();
    for (k, v) in [
        (
            "content-disposition",
            format!("attachment; filename=\"{filename}\""),
        ),
        ("x-clip-start-ms", mp4.start_ms.to_string()),
        ("x-clip-end-ms", mp4.end_ms.to_string()),
    ] {
        if let Ok(v) = v.parse() {
            h.insert(k, v);
        }
    }
    resp
}
