//! The catalog seam: the queries hlsd needs about devices, streams, sessions, segments,
//! positions and incidents, as the [`Catalog`] trait, plus [`DirCatalog`], an implementation
//! that derives what it can from the data directory alone (no database).
//!
//! The SQL catalog (diesel, in `streamcore` behind the `catalog` feature) implements the same
//! trait. The trait is synchronous on purpose: diesel is synchronous, and hlsd calls every
//! method inside `tokio::task::spawn_blocking`, so an implementation may block on I/O.
//!
//! Times are milliseconds since the Unix epoch (UTC) everywhere in this module.
//!
//! [`DirCatalog`] layout (all optional except `live/`):
//! - `DATA/live/<stream>/index.m3u8`: every stream directory with a playlist is one session;
//!   its segments are the playlist's entries (so a live stream's session only covers its window).
//!   Streams named `<SIM>_<channel>` (12-digit SIM) belong to device `<SIM>`.
//! - `DATA/devices/<SIM>/positions.jsonl`: one [`Position`] as JSON per line, in time order.
//! - `DATA/devices/<SIM>/incidents.jsonl`: one [`Incident`] as JSON per line.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::m3u8::{self, MediaPlaylist};
use crate::names;

/// Errors a catalog implementation reports; hlsd maps them to HTTP 500 (or 503 when unavailable).
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog unavailable: {0}")]
    Unavailable(String),
    #[error("catalog I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("catalog data: {0}")]
    Data(String),
}

/// A half-open time range `[from_ms, to_ms)`; `None` means unbounded on that side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeRange {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
}

impl TimeRange {
    /// True when `[start, end)` (end `None` = still open) overlaps this range.
    pub fn overlaps(&self, start_ms: i64, end_ms: Option<i64>) -> bool {
        let starts_before_to = self.to_ms.is_none_or(|to| start_ms < to);
        let ends_after_from = match (self.from_ms, end_ms) {
            (Some(from), Some(end)) => end > from,
            _ => true,
        };
        starts_before_to && ends_after_from
    }

    /// True when the instant `t` lies in the range.
    pub fn contains(&self, t_ms: i64) -> bool {
        self.from_ms.is_none_or(|f| t_ms >= f) && self.to_ms.is_none_or(|to| t_ms < to)
    }
}

/// A device (vehicle terminal) known to the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// SIM number, 12 BCD digits as text.
    pub sim: String,
    /// Plate number when the device registered one.
    pub plate: Option<String>,
    /// Connected to ingestd now (signalling or media).
    pub online: bool,
    pub last_seen_ms: Option<i64>,
    pub last_position: Option<Position>,
    /// Channels that have (or had) a stream, ascending.
    pub channels: Vec<u8>,
}

/// One GPS fix reported by a device (JT/T 808 0x0200).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Position {
    /// Device time of the fix.
    pub time_ms: i64,
    pub lat: f64,
    pub lon: f64,
    /// km/h.
    #[serde(default)]
    pub speed_kmh: f32,
    /// Degrees from north, 0-359.
    #[serde(default)]
    pub heading: u16,
    /// Metres.
    #[serde(default)]
    pub altitude_m: i32,
    #[serde(default)]
    pub alarm: u32,
    #[serde(default)]
    pub status: u32,
}

/// A recording session: one connection's span of one stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub id: i64,
    /// Stream name (`<SIM>_<channel>` for devices).
    pub stream: String,
    pub sim: Option<String>,
    pub channel: Option<u8>,
    /// `"live"` or `"playback"`.
    pub kind: String,
    pub started_ms: i64,
    /// `None` while the session is still open.
    pub ended_ms: Option<i64>,
}

/// A stream being recorded now: it has an open session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveStream {
    pub stream: String,
    pub sim: Option<String>,
    pub channel: Option<u8>,
    /// The open session, playable as `/vod/session/<id>/index.m3u8` (an EVENT playlist).
    pub session_id: i64,
    pub started_ms: i64,
}

/// A time range of interest on a device (808 alarm flag, playback upload, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: i64,
    pub sim: String,
    /// Channel the incident concerns, when it concerns one; `None` = all channels.
    #[serde(default)]
    pub channel: Option<u8>,
    pub kind: String,
    #[serde(default)]
    pub source: String,
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
}

/// One stored segment of a session, as the catalog lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentRow {
    pub stream: String,
    /// Media sequence number: the file is `DATA/live/<stream>/<sequence>.ts`.
    pub sequence: u64,
    /// Duration in 90 kHz ticks.
    pub duration_90k: i64,
    pub bytes: u64,
    /// Wall/device time of the segment's first frame.
    pub program_date_time_ms: i64,
    /// A discontinuity precedes this segment.
    pub discontinuity: bool,
}

/// The queries hlsd runs against the catalog. Implemented by [`DirCatalog`] here and by the
/// diesel-backed catalog in streamcore. Called from blocking threads; may block.
pub trait Catalog: Send + Sync + 'static {
    /// All devices, ordered by SIM.
    fn devices(&self) -> Result<Vec<Device>, CatalogError>;
    /// Streams with an open session, ordered by name.
    fn live_streams(&self) -> Result<Vec<LiveStream>, CatalogError>;
    /// Sessions of a device's streams overlapping `range`, newest first.
    fn sessions(&self, sim: &str, range: TimeRange) -> Result<Vec<Session>, CatalogError>;
    /// One session by id.
    fn session(&self, id: i64) -> Result<Option<Session>, CatalogError>;
    /// Segments of a session in sequence order.
    fn session_segments(&self, session_id: i64) -> Result<Vec<SegmentRow>, CatalogError>;
    /// Segments of a stream whose start lies in `range`, in sequence order.
    fn stream_segments(
        &self,
        stream: &str,
        range: TimeRange,
    ) -> Result<Vec<SegmentRow>, CatalogError>;
    /// Positions of a device in `range`, oldest first, at most `limit`.
    fn positions(
        &self,
        sim: &str,
        range: TimeRange,
        limit: usize,
    ) -> Result<Vec<Position>, CatalogError>;
    /// Incidents of a device overlapping `range`, newest first.
    fn incidents(&self, sim: &str, range: TimeRange) -> Result<Vec<Incident>, CatalogError>;
    /// One incident by id.
    fn incident(&self, id: i64) -> Result<Option<Incident>, CatalogError>;
}

/// A catalog read straight from the data directory; see the module docs for the layout.
#[derive(Debug, Clone)]
pub struct DirCatalog {
    data_dir: PathBuf,
    /// A playlist without ENDLIST modified within this long is live.
    live_timeout: Duration,
}

/// What the scan learns about one stream directory.
#[derive(Debug, Clone)]
pub struct StreamDir {
    pub name: String,
    pub playlist: MediaPlaylist,
    pub modified: SystemTime,
    pub live: bool,
}

impl DirCatalog {
    pub fn new(data_dir: impl Into<PathBuf>, live_timeout: Duration) -> Self {
        Self {
            data_dir: data_dir.into(),
            live_timeout,
        }
    }

    /// Every stream directory under `DATA/live` that holds a parseable playlist, by name.
    pub fn scan_streams(&self) -> Result<Vec<StreamDir>, CatalogError> {
        scan_streams(&self.data_dir, self.live_timeout)
    }

    fn device_sessions(&self, sim: &str) -> Result<Vec<(Session, StreamDir)>, CatalogError> {
        Ok(self
            .scan_streams()?
            .into_iter()
            .filter_map(|s| {
                session_of(&s)
                    .filter(|sess| sess.sim.as_deref() == Some(sim))
                    .map(|sess| (sess, s))
            })
            .collect())
    }

    fn read_jsonl<T: for<'de> Deserialize<'de>>(
        &self,
        sim: &str,
        file: &str,
    ) -> Result<Vec<T>, CatalogError> {
        if !names::valid_sim(sim) {
            return Ok(Vec::new());
        }
        let path = self.data_dir.join("devices").join(sim).join(file);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .map_err(|e| CatalogError::Data(format!("{}:{}: {e}", path.display(), i + 1)))
            })
            .collect()
    }
}

/// Scans `DATA/live/*/index.m3u8`. Unreadable or unparseable playlists are skipped (logged):
/// one broken stream must not hide the others.
pub fn scan_streams(
    data_dir: &Path,
    live_timeout: Duration,
) -> Result<Vec<StreamDir>, CatalogError> {
    let live = data_dir.join("live");
    let rd = match std::fs::read_dir(&live) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let now = SystemTime::now();
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !names::valid_stream(&name) {
            continue;
        }
        let path = entry.path().join("index.m3u8");
        let (text, modified) = match std::fs::read_to_string(&path)
            .and_then(|t| Ok((t, std::fs::metadata(&path)?.modified()?)))
        {
            Ok(v) => v,
            Err(_) => continue,
        };
        let playlist = match m3u8::parse_media(&text) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(stream = %name, error = %e, "skipping unparseable playlist");
                continue;
            }
        };
        let age = now.duration_since(modified).unwrap_or_default();
        let live = !playlist.end_list && age <= live_timeout;
        out.push(StreamDir {
            name,
            playlist,
            modified,
            live,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Stable id of a directory-derived session: a 48-bit FNV-1a hash of the stream name, so it
/// survives restarts and stays exact in JavaScript numbers.
pub fn dir_session_id(stream: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in stream.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h & 0xffff_ffff_ffff) as i64
}

fn session_of(s: &StreamDir) -> Option<Session> {
    let first = s.playlist.segments.first()?;
    let last = s.playlist.segments.last()?;
    let started_ms = first
        .program_date_time_ms
        .unwrap_or_else(|| system_ms(s.modified));
    let ended_ms = (!s.live).then(|| {
        last.program_date_time_ms
            .map(|p| p + (last.duration * 1000.0).round() as i64)
            .unwrap_or_else(|| system_ms(s.modified))
    });
    let (sim, channel) = match names::split_device_stream(&s.name) {
        Some((sim, ch)) => (Some(sim.to_owned()), Some(ch)),
        None => (None, None),
    };
    Some(Session {
        id: dir_session_id(&s.name),
        stream: s.name.clone(),
        sim,
        channel,
        kind: "live".into(),
        started_ms,
        ended_ms,
    })
}

fn segments_of(s: &StreamDir) -> Vec<SegmentRow> {
    // Segments without their own PROGRAM-DATE-TIME continue from the previous one's.
    let mut clock: Option<i64> = None;
    s.playlist
        .segments
        .iter()
        .filter_map(|seg| {
            let pdt = seg
                .program_date_time_ms
                .or(clock)
                .unwrap_or_else(|| system_ms(s.modified));
            clock = Some(pdt + (seg.duration * 1000.0).round() as i64);
            let sequence = names::segment_sequence(&seg.uri)?;
            Some(SegmentRow {
                stream: s.name.clone(),
                sequence,
                duration_90k: (seg.duration * 90_000.0).round() as i64,
                bytes: 0,
                program_date_time_ms: pdt,
                discontinuity: seg.discontinuity,
            })
        })
        .collect()
}

fn system_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Catalog for DirCatalog {
    fn devices(&self) -> Result<Vec<Device>, CatalogError> {
        let mut devices: Vec<Device> = Vec::new();
        for s in self.scan_streams()? {
            let Some((sim, ch)) = names::split_device_stream(&s.name) else {
                continue;
            };
            let seen = system_ms(s.modified);
            match devices.iter_mut().find(|d| d.sim == sim) {
                Some(d) => {
                    d.online |= s.live;
                    d.last_seen_ms = d.last_seen_ms.max(Some(seen));
                    d.channels.push(ch);
                }
                None => devices.push(Device {
                    sim: sim.to_owned(),
                    plate: None,
                    online: s.live,
                    last_seen_ms: Some(seen),
                    last_position: None,
                    channels: vec![ch],
                }),
            }
        }
        for d in &mut devices {
            d.channels.sort_unstable();
            d.channels.dedup();
            d.last_position = self
                .read_jsonl::<Position>(&d.sim, "positions.jsonl")?
                .pop();
            if let Some(p) = &d.last_position {
                d.last_seen_ms = d.last_seen_ms.max(Some(p.time_ms));
            }
        }
        devices.sort_by(|a, b| a.sim.cmp(&b.sim));
        Ok(devices)
    }

    fn live_streams(&self) -> Result<Vec<LiveStream>, CatalogError> {
        Ok(self
            .scan_streams()?
            .iter()
            .filter(|s| s.live)
            .filter_map(session_of)
            .map(|s| LiveStream {
                stream: s.stream,
                sim: s.sim,
                channel: s.channel,
                session_id: s.id,
                started_ms: s.started_ms,
            })
            .collect())
    }

    fn sessions(&self, sim: &str, range: TimeRange) -> Result<Vec<Session>, CatalogError> {
        let mut v: Vec<Session> = self
            .device_sessions(sim)?
            .into_iter()
            .map(|(s, _)| s)
            .filter(|s| range.overlaps(s.started_ms, s.ended_ms))
            .collect();
        v.sort_by_key(|s| std::cmp::Reverse(s.started_ms));
        Ok(v)
    }

    fn session(&self, id: i64) -> Result<Option<Session>, CatalogError> {
        Ok(self
            .scan_streams()?
            .iter()
            .filter_map(session_of)
            .find(|s| s.id == id))
    }

    fn session_segments(&self, session_id: i64) -> Result<Vec<SegmentRow>, CatalogError> {
        Ok(self
            .scan_streams()?
            .iter()
            .find(|s| dir_session_id(&s.name) == session_id)
            .map(segments_of)
            .unwrap_or_default())
    }

    fn stream_segments(
        &self,
        stream: &str,
        range: TimeRange,
    ) -> Result<Vec<SegmentRow>, CatalogError> {
        Ok(self
            .scan_streams()?
            .iter()
            .filter(|s| s.name == stream)
            .flat_map(segments_of)
            .filter(|seg| range.contains(seg.program_date_time_ms))
            .collect())
    }

    fn positions(
        &self,
        sim: &str,
        range: TimeRange,
        limit: usize,
    ) -> Result<Vec<Position>, CatalogError> {
        let mut v: Vec<Position> = self.read_jsonl(sim, "positions.jsonl")?;
        v.retain(|p| range.contains(p.time_ms));
        v.sort_by_key(|p| p.time_ms);
        v.truncate(limit);
        Ok(v)
    }

    fn incidents(&self, sim: &str, range: TimeRange) -> Result<Vec<Incident>, CatalogError> {
        let mut v: Vec<Incident> = self.read_jsonl(sim, "incidents.jsonl")?;
        v.retain(|i| i.sim == sim && range.overlaps(i.started_ms, i.ended_ms));
        v.sort_by_key(|s| std::cmp::Reverse(s.started_ms));
        Ok(v)
    }

    fn incident(&self, id: i64) -> Result<Option<Incident>, CatalogError> {
        let dir = self.data_dir.join("devices");
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        for entry in rd {
            let entry = entry?;
            let Some(sim) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if let Some(i) = self
                .read_jsonl::<Incident>(&sim, "incidents.jsonl")?
                .into_iter()
                .find(|i| i.id == id)
            {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let r = TimeRange {
            from_ms: Some(10),
            to_ms: Some(20),
        };
        assert!(r.overlaps(5, Some(11)));
        assert!(!r.overlaps(5, Some(10)));
        assert!(!r.overlaps(20, None));
        assert!(r.overlaps(0, None));
        assert!(r.contains(10) && !r.contains(20));
        assert!(TimeRange::default().overlaps(i64::MIN, None));
    }

    #[test]
    fn session_ids_are_stable_and_js_safe() {
        let a = dir_session_id("132570034500_1");
        assert_eq!(a, dir_session_id("132570034500_1"));
        assert_ne!(a, dir_session_id("132570034500_2"));
        assert!((0..(1 << 53)).contains(&a));
    }
}
