//! The live state of every stream: a stream's playlist
//! (`live/<stream>/index.m3u8`, ingestd's layout, in the data dir or the
//! store) is the truth of what can be played now. The catalog knows sessions
//! and recordings; this module knows which playlists are being written.

use std::path::Path;
use std::time::{Duration, SystemTime};

use streamcore::layout::{self, StreamName};
use streamcore::playlist::MediaPlaylist;

/// What a scan learns about one stream directory.
#[derive(Debug, Clone)]
pub struct StreamDir {
    pub name: StreamName,
    pub playlist: MediaPlaylist,
    pub modified: SystemTime,
    /// No ENDLIST, and written within the live timeout.
    pub live: bool,
}

impl StreamDir {
    /// What a playlist last written at `modified` says, seen at `now`; `None` (logged) if it
    /// does not parse.
    pub fn from_playlist(
        name: StreamName,
        text: &str,
        modified: SystemTime,
        now: SystemTime,
        live_timeout: Duration,
    ) -> Option<StreamDir> {
        let playlist = match MediaPlaylist::parse_any(text) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(stream = %name, error = %e, "skipping unparseable playlist");
                return None;
            }
        };
        let age = now.duration_since(modified).unwrap_or_default();
        Some(StreamDir {
            live: !playlist.is_ended() && age <= live_timeout,
            name,
            playlist,
            modified,
        })
    }
}

/// Scans `DATA/live/*/index.m3u8`, by name. Unreadable or unparseable
/// playlists are skipped (logged): one broken stream must not hide the
/// others.
pub fn scan_streams(data_dir: &Path, live_timeout: Duration) -> std::io::Result<Vec<StreamDir>> {
    let rd = match std::fs::read_dir(data_dir.join(layout::LIVE_DIR)) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let now = SystemTime::now();
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().and_then(StreamName::parse) else {
            continue;
        };
        let path = entry.path().join(layout::PLAYLIST_FILE);
        let Ok((text, modified)) = std::fs::read_to_string(&path)
            .and_then(|t| Ok((t, std::fs::metadata(&path)?.modified()?)))
        else {
            continue;
        };
        out.extend(StreamDir::from_playlist(
            name,
            &text,
            modified,
            now,
            live_timeout,
        ));
    }
    out.sort_by_key(|s| s.name.to_string());
    Ok(out)
}
