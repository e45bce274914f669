//! What producers (ingestd) tell the catalog, and what queries hand back.
//!
//! Times are milliseconds since the Unix epoch (UTC) unless a field says
//! otherwise; PTS and durations are 90 kHz ticks on the 64-bit timeline.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use diesel::prelude::*;

/// Whether a session is live video or a device's upload of a recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionKind {
    /// Live video (JT/T 1078 after 0x9101, or the raw port).
    Live,
    /// A recording the device plays back to us (after 0x9201).
    Playback,
}

impl SessionKind {
    /// The value stored in `sessions.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionKind::Live => "live",
            SessionKind::Playback => "playback",
        }
    }

    /// Parses a stored `sessions.kind`.
    pub fn parse(s: &str) -> Option<SessionKind> {
        match s {
            "live" => Some(SessionKind::Live),
            "playback" => Some(SessionKind::Playback),
            _ => None,
        }
    }
}

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

/// A device with what the catalog knows about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    pub sim: String,
    pub plate: Option<String>,
    pub auth_code: Option<String>,
    pub registered_ms: Option<i64>,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    /// The fix with the latest device time, if any.
    pub last_position: Option<Position>,
}

/// One stored location fix.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = super::schema::positions)]
pub struct Position {
    pub sim: String,
    pub device_time_ms: i64,
    pub lat: f64,
    pub lon: f64,
    #[diesel(column_name = speed_kmh)]
    pub speed: f32,
    pub heading: i32,
    #[diesel(column_name = altitude_m)]
    pub altitude: i32,
    pub alarm: i64,
    pub status: i64,
}

/// One stored session (a recording when it has segments).
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = super::schema::sessions)]
pub struct Session {
    pub id: String,
    pub stream: String,
    pub sim: Option<String>,
    pub channel: Option<i32>,
    /// `live` or `playback`; see [`Session::kind`].
    #[diesel(column_name = kind)]
    pub kind_str: String,
    pub started_ms: i64,
    /// `None` while live.
    pub ended_ms: Option<i64>,
    pub host: String,
}

impl Session {
    /// The session kind (the schema's CHECK keeps it to the two values).
    pub fn kind(&self) -> SessionKind {
        SessionKind::parse(&self.kind_str).unwrap_or(SessionKind::Live)
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
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = super::schema::incidents)]
pub struct Incident {
    /// Database-generated.
    pub id: i64,
    pub sim: String,
    /// 0 = whole device.
    pub channel: i32,
    pub from_ms: i64,
    pub to_ms: i64,
    pub kind: String,
    pub source: String,
    pub created_ms: i64,
}

impl Incident {
    /// The device stream the incident's video is on (`<SIM>_<channel>`, the
    /// naming contract for device streams), or `None` for a whole-device
    /// incident (channel 0).
    pub fn stream_name(&self) -> Option<String> {
        (self.channel > 0).then(|| format!("{}_{}", self.sim, self.channel))
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
