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
    /// A terminal registered (0x0100): what it said about itself. Stores
    /// the plate on the device and replaces its `terminals` row.
    DeviceRegistered {
        sim: String,
        plate: String,
        plate_color: u8,
        maker_id: String,
        model: String,
        terminal_id: String,
        province: u16,
        city: u16,
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
    /// a playback upload). Its key is (sim, channel, from_ms, kind, source):
    /// reporting it again updates the row, so a lasting alarm is extended
    /// and then closed. The row takes `to_ms`, `open` and `alarm` of the
    /// latest report, except that a closed incident is never reopened (a
    /// report with `open: true` arriving after the closing one, say a
    /// retry, leaves it as it is); `session_id`, `lat`, `lon`,
    /// `video_state` and `video_reason` are only replaced by values, never
    /// by `None` (an alarm extension knows nothing of the video).
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
        /// The alarm is still in progress: `to_ms` will grow, and the
        /// incident's VOD playlist is an EVENT playlist without ENDLIST.
        open: bool,
        /// JT/T 808 alarm flag bits the incident is about (0: not an alarm).
        alarm: u32,
        /// Where it happened, degrees WGS-84 (south and west negative).
        lat: Option<f64>,
        lon: Option<f64>,
        /// Where its video stands, one of [`INCIDENT_VIDEO_STATES`].
        video_state: Option<String>,
        /// Why the video is missing or short, for the operator.
        video_reason: Option<String>,
    },
    /// The video of an existing incident (found by its key, as in
    /// [`Record::Incident`]) changed state: `video_state` and
    /// `video_reason` are set as given (a reason belongs to its state, so
    /// `None` clears an older one); `session_id` is set when given. A no-op
    /// when no such incident exists.
    IncidentVideo {
        sim: String,
        channel: Option<u8>,
        from_ms: i64,
        kind: String,
        source: String,
        /// One of [`INCIDENT_VIDEO_STATES`].
        video_state: String,
        video_reason: Option<String>,
        session_id: Option<String>,
    },
    /// A request to a device to play back a recording (JT/T 1078 0x9201),
    /// written when it is made and again whenever its state changes,
    /// always with the same `id` and parameters. The state never moves
    /// back (see [`PlaybackState::rank`]): a late `Requested` does not undo
    /// `Uploading`, nor either undo an end state; one end state may replace
    /// another. `reason` goes with the state it came with. A known
    /// `session_id` / `incident_id` is never replaced by `None`.
    Playback {
        /// Producer-made, unique across processes (e.g. [`new_session_id`]
        /// of the playback stream and the request time).
        id: String,
        sim: String,
        channel: u8,
        /// The stream the upload feeds (`<SIM>_<ch>_pb`).
        stream: String,
        /// The recorded span asked for.
        from_ms: i64,
        to_ms: i64,
        /// 0x9201 fields as sent: AV type, stream type, storage type,
        /// playback mode, speed code (not the multiplier).
        av_type: u8,
        stream_type: u8,
        storage_type: u8,
        mode: u8,
        speed: u8,
        /// Host time the request was made.
        requested_ms: i64,
        state: PlaybackState,
        /// Why it failed, stopped or came back short.
        reason: Option<String>,
        /// The session of the upload, once the device connected.
        session_id: Option<String>,
        /// The incident the video is fetched for, if any.
        incident_id: Option<i64>,
    },
}

/// The values of `incidents.video_state`: the incident's video is part of a
/// live recording; it was asked of the device; the device is uploading it;
/// it arrived; it could not be had (see `video_reason`); the device must
/// come online first.
pub const INCIDENT_VIDEO_STATES: [&str; 6] = [
    "recorded",
    "requested",
    "uploading",
    "fetched",
    "failed",
    "waiting_online",
];

/// Where a playback request (0x9201) stands; stored as its lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlaybackState {
    /// Sent (or about to be) to the device.
    Requested,
    /// The device connected and its upload feeds the playback stream.
    Uploading,
    /// The device finished the upload.
    Complete,
    /// The operator stopped it.
    Stopped,
    /// The device refused, was offline, never connected, or sent no video.
    Failed,
}

impl PlaybackState {
    pub const ALL: [PlaybackState; 5] = [
        PlaybackState::Requested,
        PlaybackState::Uploading,
        PlaybackState::Complete,
        PlaybackState::Stopped,
        PlaybackState::Failed,
    ];

    /// The stored (and serialised) name.
    pub fn as_str(self) -> &'static str {
        match self {
            PlaybackState::Requested => "requested",
            PlaybackState::Uploading => "uploading",
            PlaybackState::Complete => "complete",
            PlaybackState::Stopped => "stopped",
            PlaybackState::Failed => "failed",
        }
    }

    /// Progress: a stored state is only replaced by one of equal or higher
    /// rank, so records arriving out of order (the request is catalogued by
    /// one task, the upload by another) cannot move a request back.
    pub fn rank(self) -> u8 {
        match self {
            PlaybackState::Requested => 0,
            PlaybackState::Uploading => 1,
            PlaybackState::Complete | PlaybackState::Stopped | PlaybackState::Failed => 2,
        }
    }

    /// True for the states that end a request.
    pub fn is_final(self) -> bool {
        self.rank() == 2
    }
}

impl std::fmt::Display for PlaybackState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for PlaybackState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PlaybackState::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown playback state {s:?}"))
    }
}

impl Record {
    /// Short name of the variant, for logs and per-kind counters.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Record::DeviceSeen { .. } => "device_seen",
            Record::DeviceRegistered { .. } => "device_registered",
            Record::Position { .. } => "position",
            Record::SessionStarted { .. } => "session_started",
            Record::SessionEnded { .. } => "session_ended",
            Record::Segment { .. } => "segment",
            Record::Incident { .. } => "incident",
            Record::IncidentVideo { .. } => "incident_video",
            Record::Playback { .. } => "playback",
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
    /// What the terminal said about itself when it last registered (0x0100).
    pub terminal: Option<Terminal>,
    /// Groups the device belongs to (granted to users as `group:<name>`), ascending.
    pub groups: Vec<String>,
}

/// A terminal's identity from its latest registration (0x0100).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Terminal {
    pub maker_id: String,
    pub model: String,
    pub terminal_id: String,
    /// JT/T 415 colour code: 1 blue, 2 yellow, 3 black, 4 white, 9 other; 0 = no plate (VIN).
    pub plate_color: i32,
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
    /// The alarm is still in progress (its playlist has no ENDLIST yet).
    pub open: bool,
    /// JT/T 808 alarm flag bits (a u32 widened for portability).
    pub alarm: i64,
    /// Where it happened, degrees WGS-84, when known.
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    /// Where its video stands, one of [`INCIDENT_VIDEO_STATES`].
    pub video_state: Option<String>,
    /// Why the video is missing or short.
    pub video_reason: Option<String>,
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

/// One stored playback request (see [`Record::Playback`]); serialised with
/// `state` as its name.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Playback {
    pub id: String,
    pub sim: String,
    pub channel: u8,
    pub stream: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub av_type: u8,
    pub stream_type: u8,
    pub storage_type: u8,
    pub mode: u8,
    /// 0x9201 speed code (see JT/T 1078 table 25), not the multiplier.
    pub speed: u8,
    pub requested_ms: i64,
    pub state: PlaybackState,
    pub reason: Option<String>,
    pub session_id: Option<String>,
    pub incident_id: Option<i64>,
}

/// A `playbacks` row as diesel reads it (small integers widened).
#[derive(Queryable, Selectable)]
#[diesel(table_name = super::schema::playbacks)]
pub(crate) struct PlaybackRow {
    id: String,
    sim: String,
    channel: i32,
    stream: String,
    from_ms: i64,
    to_ms: i64,
    av_type: i32,
    stream_type: i32,
    storage_type: i32,
    mode: i32,
    speed: i32,
    requested_ms: i64,
    state: String,
    reason: Option<String>,
    session_id: Option<String>,
    incident_id: Option<i64>,
}

impl TryFrom<PlaybackRow> for Playback {
    type Error = String;
    fn try_from(r: PlaybackRow) -> Result<Self, String> {
        let byte = |what: &str, v: i32| {
            u8::try_from(v).map_err(|_| format!("playback {}: {what} {v} is not a byte", r.id))
        };
        Ok(Playback {
            channel: byte("channel", r.channel)?,
            av_type: byte("av_type", r.av_type)?,
            stream_type: byte("stream_type", r.stream_type)?,
            storage_type: byte("storage_type", r.storage_type)?,
            mode: byte("mode", r.mode)?,
            speed: byte("speed", r.speed)?,
            state: r
                .state
                .parse()
                .map_err(|e| format!("playback {}: {e}", r.id))?,
            id: r.id,
            sim: r.sim,
            stream: r.stream,
            from_ms: r.from_ms,
            to_ms: r.to_ms,
            requested_ms: r.requested_ms,
            reason: r.reason,
            session_id: r.session_id,
            incident_id: r.incident_id,
        })
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
