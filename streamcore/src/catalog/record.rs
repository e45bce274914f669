//! What producers (ingestd) tell the catalog, and what queries hand back.
//!
//! Times are milliseconds since the Unix epoch (UTC) unless a field says
//! otherwise; PTS and durations are 90 kHz ticks on the 64-bit timeline.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use diesel::prelude::*;

use crate::layout::StreamName;

pub use crate::layout::SessionKind;

/// The value stored in `sessions.kind` for a session of `kind`: the schema
/// knows live video and playback uploads; a raw-port stream is live video
/// without a device (its rows have no SIM, which is how [`Session::kind`]
/// tells it apart again).
pub(crate) fn stored_kind(kind: SessionKind) -> &'static str {
    match kind {
        SessionKind::Playback => "playback",
        SessionKind::Live | SessionKind::Raw => "live",
    }
}

/// The `incidents.kind` of a device's playback upload (the span it covers).
pub const INCIDENT_KIND_PLAYBACK: &str = "playback";

/// One fact for the catalog writer. Every variant is idempotent: writing the
/// same record twice (a retry after an outage, two processes reporting the
/// same thing) leaves the catalog as if it were written once.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A device was heard from (any 808 message). `plate` / `auth_code` are
    /// given on registration (0x0100/0x8100) and then stored; `at` is host
    /// time and only ever moves `last_seen_ms` forward.
    DeviceSeen {
        sim: String,
        plate: Option<String>,
        auth_code: Option<String>,
        at: i64,
    },
    /// A location report (808 0x0200, or one item of 0x0704).
    Position {
        sim: String,
        /// Device clock time of the fix.
        device_time_ms: i64,
        /// Degrees, WGS-84, south negative.
        lat: f64,
        /// Degrees, WGS-84, west negative.
        lon: f64,
        /// km/h.
        speed: f32,
        /// Degrees clockwise from north.
        heading: u16,
        /// Metres.
        altitude: i32,
        /// 808 alarm flag bits.
        alarm: u32,
        /// 808 status bits.
        status: u32,
    },
    /// A connection started feeding a stream. `session_id` comes from the
    /// producer (see [`new_session_id`]) so no round trip is needed and ids
    /// never collide between processes sharing a catalog.
    SessionStarted {
        session_id: String,
        stream: String,
        sim: Option<String>,
        channel: Option<u8>,
        kind: SessionKind,
        started_ms: i64,
        /// Name of the ingest instance (e.g. host name) owning the session.
        host: String,
    },
    /// The session's connection ended (or its stream was finished).
    SessionEnded { session_id: String, ended_ms: i64 },
    /// A segment file was published (complete on disk).
    Segment {
        session_id: String,
        stream: String,
        /// HLS media sequence number within the stream.
        sequence: u64,
        /// 90 kHz PTS of the first frame.
        start_pts: i64,
        /// 90 kHz ticks.
        duration_90k: i64,
        bytes: u64,
        /// Relative to the data dir, e.g. `live/<stream>/<sequence>.ts`.
        path: String,
        program_date_time_ms: i64,
        discontinuity: bool,
    },
    /// Something worth finding later happened in a time range (an 808 alarm,
    /// a playback upload). Reporting the same (sim, channel, from, kind,
    /// source) again updates `to_ms`, so a lasting alarm can be extended.
    Incident {
        sim: String,
        /// `None` when the incident concerns the whole device (stored as 0).
        channel: Option<u8>,
        from_ms: i64,
        to_ms: i64,
        kind: String,
        source: String,
        /// The session whose video the incident is, when it is one (a
        /// playback upload): its playlist is that session's segments.
        session_id: Option<String>,
    },
}

impl Record {
    /// Short name of the variant, for logs and per-kind counters.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Record::DeviceSeen { .. } => "device_seen",
            Record::Position { .. } => "position",
            Record::SessionStarted { .. } => "session_started",
            Record::SessionEnded { .. } => "session_ended",
            Record::Segment { .. } => "segment",
            Record::Incident { .. } => "incident",
        }
    }
}

/// Makes a session id unique across processes and machines without asking
/// the database: `<stream>-<started_ms>-<16 hex digits>`, where the suffix
/// hashes a per-process random key (std's `RandomState`, seeded by the OS),
/// the process id, a process-wide counter and the wall clock in ns. Two
/// producers would have to draw the same 64-bit value for the same stream in
/// the same millisecond to collide. At most 64 + 1 + 20 + 1 + 16 = 102
/// characters, within the 128 the schema allows.
pub fn new_session_id(stream: &str, started_ms: i64) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static KEYS: std::sync::OnceLock<RandomState> = std::sync::OnceLock::new();
    let mut h = KEYS.get_or_init(RandomState::new).build_hasher();
    h.write_u32(std::process::id());
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write(stream.as_bytes());
    format!("{stream}-{started_ms}-{:016x}", h.finish())
}

/// The wall clock in Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A half-open time range `[from_ms, to_ms)` in Unix milliseconds; `None`
/// is unbounded on that side. Queries select the rows that overlap it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
}

impl TimeRange {
    pub fn new(from_ms: Option<i64>, to_ms: Option<i64>) -> Self {
        TimeRange { from_ms, to_ms }
    }

    /// The bounds with the open sides at the ends of time.
    pub fn bounds(&self) -> (i64, i64) {
        (
            self.from_ms.unwrap_or(i64::MIN),
            self.to_ms.unwrap_or(i64::MAX),
        )
    }

    /// True when `[start, end)` (end `None` = still open) overlaps the range.
    pub fn overlaps(&self, start_ms: i64, end_ms: Option<i64>) -> bool {
        let (from, to) = self.bounds();
        start_ms < to && end_ms.is_none_or(|end| end > from)
    }

    /// True when the instant lies in the range.
    pub fn contains(&self, t_ms: i64) -> bool {
        let (from, to) = self.bounds();
        (from..to).contains(&t_ms)
    }
}

/// A device counts as online while one of its streams has an open session,
/// or while it was heard from (any JT/T 808 message; terminals send a
/// heartbeat at least every minute by default) within this long.
pub const ONLINE_WINDOW_MS: i64 = 120_000;

/// A device with what the catalog knows about it (what hlsd's
/// `/api/devices` lists).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Device {
    pub sim: String,
    pub plate: Option<String>,
    /// The secret the device authenticates with: never serialised.
    #[serde(skip)]
    pub auth_code: Option<String>,
    pub registered_ms: Option<i64>,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    /// Streaming now, or heard from within [`ONLINE_WINDOW_MS`].
    pub online: bool,
    /// The fix with the latest device time, if any.
    pub last_position: Option<Position>,
    /// Channels that have (or had) a stream, ascending.
    pub channels: Vec<u8>,
}

/// One stored location fix.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, serde::Serialize)]
#[diesel(table_name = super::schema::positions)]
pub struct Position {
    #[serde(skip)]
    pub sim: String,
    /// Device clock time of the fix.
    #[serde(rename = "time_ms")]
    pub device_time_ms: i64,
    /// Degrees, WGS-84, south negative.
    pub lat: f64,
    /// Degrees, WGS-84, west negative.
    pub lon: f64,
    #[diesel(column_name = speed_kmh)]
    #[serde(rename = "speed_kmh")]
    pub speed: f32,
    /// Degrees clockwise from north.
    pub heading: i32,
    #[diesel(column_name = altitude_m)]
    #[serde(rename = "altitude_m")]
    pub altitude: i32,
    /// JT/T 808 alarm bits (a u32 widened for portability).
    pub alarm: i64,
    /// JT/T 808 status bits (a u32 widened for portability).
    pub status: i64,
}

/// One stored session (a recording when it has segments).
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, serde::Serialize)]
#[diesel(table_name = super::schema::sessions)]
pub struct Session {
    pub id: String,
    pub stream: String,
    pub sim: Option<String>,
    pub channel: Option<i32>,
    /// As stored; see [`Session::kind`].
    #[diesel(column_name = kind)]
    #[serde(rename = "kind")]
    pub kind_str: String,
    pub started_ms: i64,
    /// `None` while live.
    pub ended_ms: Option<i64>,
    /// Ingest instance that owns it (internal).
    #[serde(skip)]
    pub host: String,
}

impl Session {
    /// The session kind: the stored value, with live sessions without a
    /// device read back as raw-port sessions.
    pub fn kind(&self) -> SessionKind {
        match (self.kind_str.as_str(), &self.sim) {
            ("playback", _) => SessionKind::Playback,
            (_, None) => SessionKind::Raw,
            _ => SessionKind::Live,
        }
    }
}

/// One stored segment.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = super::schema::segments)]
pub struct Segment {
    pub stream: String,
    pub sequence: i64,
    pub session_id: String,
    pub start_pts: i64,
    pub duration_90k: i64,
    pub bytes: i64,
    /// Relative to the data dir.
    pub path: String,
    pub program_date_time_ms: i64,
    /// `program_date_time_ms` + duration.
    pub end_ms: i64,
    pub discontinuity: bool,
    pub created_ms: i64,
}

/// One stored incident.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, serde::Serialize)]
#[diesel(table_name = super::schema::incidents)]
pub struct Incident {
    /// Database-generated.
    pub id: i64,
    pub sim: String,
    /// 0 = whole device (serialised as `null`).
    #[serde(serialize_with = "channel_or_null")]
    pub channel: i32,
    #[serde(rename = "started_ms")]
    pub from_ms: i64,
    #[serde(rename = "ended_ms")]
    pub to_ms: i64,
    pub kind: String,
    pub source: String,
    #[serde(skip)]
    pub created_ms: i64,
    /// The session whose video this is (a playback upload), if any.
    pub session_id: Option<String>,
}

fn channel_or_null<S: serde::Serializer>(channel: &i32, s: S) -> Result<S::Ok, S::Error> {
    match u8::try_from(*channel).ok().filter(|&c| c > 0) {
        Some(c) => s.serialize_some(&c),
        None => s.serialize_none(),
    }
}

impl Incident {
    /// The device channel the incident concerns; `None` for the whole device.
    pub fn channel(&self) -> Option<u8> {
        u8::try_from(self.channel).ok().filter(|&c| c > 0)
    }

    /// The stream the incident's video is on: the channel's playback stream
    /// for a playback upload, its live stream otherwise; `None` for a
    /// whole-device incident (channel 0).
    pub fn stream_name(&self) -> Option<String> {
        let channel = self.channel()?;
        let name = if self.kind == INCIDENT_KIND_PLAYBACK {
            StreamName::playback(&self.sim, channel)
        } else {
            StreamName::live(&self.sim, channel)
        };
        Some(name.to_string())
    }
}

/// One stored stream.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = super::schema::streams)]
pub struct Stream {
    pub name: String,
    pub sim: Option<String>,
    pub channel: Option<i32>,
    pub created_ms: i64,
}

impl Segment {
    /// The media sequence, once the row is known to name the file the
    /// layout puts there (`live/<stream>/<sequence>.ts`): a playlist may
    /// only list URLs that resolve to the file clip export reads.
    pub fn checked_sequence(&self) -> Result<u64, String> {
        let sequence = u64::try_from(self.sequence).map_err(|_| {
            format!(
                "segment {}/{}: negative sequence",
                self.stream, self.sequence
            )
        })?;
        let expected = crate::layout::segment_key(&self.stream, sequence);
        if self.path != expected || !crate::layout::valid_stream_name(&self.stream) {
            return Err(format!(
                "segment {}/{sequence} is stored at {:?}, not at {expected:?} where it is served from",
                self.stream, self.path
            ));
        }
        Ok(sequence)
    }
}
