//! The catalog seam: the queries hlsd needs about devices, streams, sessions, segments,
//! positions and incidents, as the [`Catalog`] trait, implemented for the diesel catalog
//! ([`streamcore::catalog::Catalog`]: SQLite in the data dir by default, PostgreSQL or
//! MySQL/MariaDB with `--database-url`), plus [`scan_streams`], which reads the live state of
//! every stream from its playlist file in the data dir.
//!
//! The trait is synchronous on purpose: diesel is synchronous, and hlsd calls every method
//! inside `tokio::task::spawn_blocking`, so an implementation may block on I/O.
//!
//! Times are milliseconds since the Unix epoch (UTC) everywhere in this module. Session ids are
//! the catalog's producer-made strings (`<stream>-<started_ms>-<16 hex>`); incident ids are
//! database-generated integers.
use std::path::Path;
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
    /// Catalog session id, `[A-Za-z0-9_-]{1,128}`.
    pub id: String,
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
    pub session_id: String,
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
    /// Media sequence number: hlsd serves the file as `/live/<stream>/<sequence>.ts`.
    pub sequence: u64,
    /// The file, relative to the data dir: always `live/<stream>/<sequence>.ts` (the catalog
    /// adapter refuses rows that say otherwise, since hlsd could not serve them).
    pub path: String,
    /// Duration in 90 kHz ticks.
    pub duration_90k: i64,
    pub bytes: u64,
    /// Wall/device time of the segment's first frame.
    pub program_date_time_ms: i64,
    /// A discontinuity precedes this segment.
    pub discontinuity: bool,
}

/// The queries hlsd runs against the catalog. Implemented for the diesel-backed catalog in
/// streamcore. Called from blocking threads; may block.
pub trait Catalog: Send + Sync + 'static {
    /// All devices, ordered by SIM.
    fn devices(&self) -> Result<Vec<Device>, CatalogError>;
    /// Streams with an open session, ordered by name.
    fn live_streams(&self) -> Result<Vec<LiveStream>, CatalogError>;
    /// Sessions of a device's streams overlapping `range`, newest first.
    fn sessions(&self, sim: &str, range: TimeRange) -> Result<Vec<Session>, CatalogError>;
    /// One session by id.
    fn session(&self, id: &str) -> Result<Option<Session>, CatalogError>;
    /// Segments of a session in sequence order.
    fn session_segments(&self, session_id: &str) -> Result<Vec<SegmentRow>, CatalogError>;
    /// Segments of a stream whose time span `[pdt, pdt + duration)` overlaps `range`, in
    /// sequence order: the first one is the segment containing `range.from_ms`.
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

/// What a scan of the data dir learns about one stream directory (the live state of a
/// stream comes from its files: the playlist is the truth of what can be played now).
#[derive(Debug, Clone)]
pub struct StreamDir {
    pub name: String,
    pub playlist: MediaPlaylist,
    pub modified: SystemTime,
    pub live: bool,
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

// ---------------------------------------------------------------- the diesel catalog

use streamcore::catalog as sc;

/// A device counts as online while one of its streams has an open session, or while it was
/// heard from (any JT/T 808 message; terminals send a heartbeat at least every minute by
/// default) within this long.
pub const ONLINE_WINDOW_MS: i64 = 120_000;

impl From<sc::Error> for CatalogError {
    fn from(e: sc::Error) -> Self {
        match e {
            // A server that is down or refuses us: 503, the client may retry.
            sc::Error::Connect { .. } => CatalogError::Unavailable(e.to_string()),
            _ => CatalogError::Data(e.to_string()),
        }
    }
}

fn channel_u8(ch: Option<i32>) -> Option<u8> {
    ch.and_then(|c| u8::try_from(c).ok())
}

fn position(p: sc::Position) -> Position {
    Position {
        time_ms: p.device_time_ms,
        lat: p.lat,
        lon: p.lon,
        speed_kmh: p.speed,
        heading: u16::try_from(p.heading).unwrap_or(0),
        altitude_m: p.altitude,
        // The catalog widens the 808 DWORD bit sets to i64 for portability.
        alarm: p.alarm as u32,
        status: p.status as u32,
    }
}

fn session(s: sc::Session) -> Session {
    Session {
        kind: s.kind().as_str().to_owned(),
        id: s.id,
        stream: s.stream,
        sim: s.sim,
        channel: channel_u8(s.channel),
        started_ms: s.started_ms,
        ended_ms: s.ended_ms,
    }
}

fn incident(i: sc::Incident) -> Incident {
    Incident {
        id: i.id,
        sim: i.sim,
        // Channel 0 is how the catalog stores "the whole device".
        channel: u8::try_from(i.channel).ok().filter(|&c| c > 0),
        kind: i.kind,
        source: i.source,
        started_ms: i.from_ms,
        ended_ms: Some(i.to_ms),
    }
}

/// Checks that the row names the file hlsd serves for it, `live/<stream>/<sequence>.ts`
/// (ingestd's layout): a VOD playlist can only list URLs that resolve to the same file that
/// clip export reads.
fn segment_row(s: sc::Segment) -> Result<SegmentRow, CatalogError> {
    let sequence = u64::try_from(s.sequence).map_err(|_| {
        CatalogError::Data(format!(
            "segment {}/{}: negative sequence",
            s.stream, s.sequence
        ))
    })?;
    let expected = format!("live/{}/{sequence}.ts", s.stream);
    if s.path != expected || !names::valid_stream(&s.stream) {
        return Err(CatalogError::Data(format!(
            "segment {}/{sequence} is stored at {:?}, not at {expected:?} where hlsd serves it from",
            s.stream, s.path
        )));
    }
    Ok(SegmentRow {
        stream: s.stream,
        sequence,
        path: s.path,
        duration_90k: s.duration_90k,
        bytes: u64::try_from(s.bytes).unwrap_or(0),
        program_date_time_ms: s.program_date_time_ms,
        discontinuity: s.discontinuity,
    })
}

fn bounds(range: TimeRange) -> (i64, i64) {
    (
        range.from_ms.unwrap_or(i64::MIN),
        range.to_ms.unwrap_or(i64::MAX),
    )
}

impl Catalog for sc::Catalog {
    fn devices(&self) -> Result<Vec<Device>, CatalogError> {
        let now = sc::now_ms();
        let streams = self.streams()?;
        let live = self.live_sessions()?;
        Ok(sc::Catalog::devices(self)?
            .into_iter()
            .map(|d| {
                let mut channels: Vec<u8> = streams
                    .iter()
                    .filter(|s| s.sim.as_deref() == Some(d.sim.as_str()))
                    .filter_map(|s| channel_u8(s.channel))
                    .collect();
                channels.sort_unstable();
                channels.dedup();
                let streaming = live
                    .iter()
                    .any(|s| s.sim.as_deref() == Some(d.sim.as_str()));
                Device {
                    online: streaming || now - d.last_seen_ms <= ONLINE_WINDOW_MS,
                    last_seen_ms: Some(d.last_seen_ms),
                    last_position: d.last_position.map(position),
                    channels,
                    plate: d.plate,
                    sim: d.sim,
                }
            })
            .collect())
    }

    fn live_streams(&self) -> Result<Vec<LiveStream>, CatalogError> {
        // Ordered by stream, then start: a stream with several open sessions (an instance that
        // crashed before closing one) is represented by its newest.
        let mut out: Vec<LiveStream> = Vec::new();
        for s in self.live_sessions()? {
            if out.last().is_some_and(|l| l.stream == s.stream) {
                out.pop();
            }
            out.push(LiveStream {
                channel: channel_u8(s.channel),
                stream: s.stream,
                sim: s.sim,
                session_id: s.id,
                started_ms: s.started_ms,
            });
        }
        Ok(out)
    }

    fn sessions(&self, sim: &str, range: TimeRange) -> Result<Vec<Session>, CatalogError> {
        let (from, to) = bounds(range);
        // The catalog matches sessions ending exactly at `from`; the half-open range doesn't.
        let mut v: Vec<Session> = self
            .sessions_of_device(sim, from, to)?
            .into_iter()
            .map(session)
            .filter(|s| range.overlaps(s.started_ms, s.ended_ms))
            .collect();
        v.reverse();
        Ok(v)
    }

    fn session(&self, id: &str) -> Result<Option<Session>, CatalogError> {
        Ok(sc::Catalog::session(self, id)?.map(session))
    }

    fn session_segments(&self, session_id: &str) -> Result<Vec<SegmentRow>, CatalogError> {
        self.segments_of_session(session_id)?
            .into_iter()
            .map(segment_row)
            .collect()
    }

    fn stream_segments(
        &self,
        stream: &str,
        range: TimeRange,
    ) -> Result<Vec<SegmentRow>, CatalogError> {
        let (from, to) = bounds(range);
        self.segments_in_range(stream, from, to)?
            .into_iter()
            .map(segment_row)
            .collect()
    }

    fn positions(
        &self,
        sim: &str,
        range: TimeRange,
        limit: usize,
    ) -> Result<Vec<Position>, CatalogError> {
        let (from, to) = bounds(range);
        Ok(sc::Catalog::positions(self, sim, from, to, limit)?
            .into_iter()
            .map(position)
            .collect())
    }

    fn incidents(&self, sim: &str, range: TimeRange) -> Result<Vec<Incident>, CatalogError> {
        let (from, to) = bounds(range);
        let mut v: Vec<Incident> = sc::Catalog::incidents(self, sim, from, to)?
            .into_iter()
            .map(incident)
            .filter(|i| range.overlaps(i.started_ms, i.ended_ms))
            .collect();
        v.reverse();
        Ok(v)
    }

    fn incident(&self, id: i64) -> Result<Option<Incident>, CatalogError> {
        Ok(sc::Catalog::incident(self, id)?.map(incident))
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
    fn segment_rows_must_name_the_file_hlsd_serves() {
        let mut seg = sc::Segment {
            stream: "cam-1".into(),
            sequence: 7,
            session_id: "cam-1-1-00".into(),
            start_pts: 0,
            duration_90k: 180_000,
            bytes: 10,
            path: "live/cam-1/7.ts".into(),
            program_date_time_ms: 5,
            end_ms: 2005,
            discontinuity: true,
            created_ms: 0,
        };
        let row = segment_row(seg.clone()).unwrap();
        assert_eq!((row.sequence, row.path.as_str()), (7, "live/cam-1/7.ts"));
        assert!(row.discontinuity);
        for bad in [
            "live/cam-1/8.ts",
            "live/other/7.ts",
            "../live/cam-1/7.ts",
            "7.ts",
        ] {
            seg.path = bad.into();
            assert!(segment_row(seg.clone()).is_err(), "{bad}");
        }
    }
}
