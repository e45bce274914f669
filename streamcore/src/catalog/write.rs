//! Applying [`Record`]s to the database: one transaction per batch, every
//! statement idempotent and race-safe across processes (insert-or-ignore on
//! natural keys, upserts on unique keys, conditional updates), so a batch can
//! be retried after an outage and several writers can share one catalog.

use std::collections::HashSet;
use std::path::{Component, Path};

use diesel::mysql::MysqlConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::result::QueryResult;
use diesel::sqlite::SqliteConnection;

use super::conn::{write_tx, AnyConn};
use super::record::{stored_kind, PlaybackState, Record, SessionKind, INCIDENT_VIDEO_STATES};
use super::schema::{
    devices, incidents, playbacks, positions, segments, sessions, streams, terminals,
};

/// Rows per multi-row position INSERT: 9 parameters each keeps us well under
/// every backend's placeholder limit (SQLite 32766, PostgreSQL/MySQL 65535).
const POSITION_CHUNK: usize = 1000;

/// Longest reason text stored (characters): a reason is prose for a person,
/// so a longer one (an error chain, say) is cut rather than refused, which
/// would lose the state it explains.
const REASON_MAX_CHARS: usize = 1000;

/// Host name a placeholder session carries until its `SessionStarted`
/// arrives (a segment whose session start was dropped still gets a row).
const PLACEHOLDER_HOST: &str = "";

#[derive(Insertable)]
#[diesel(table_name = devices)]
struct NewDevice<'a> {
    sim: &'a str,
    plate: Option<&'a str>,
    auth_code: Option<&'a str>,
    registered_ms: Option<i64>,
    first_seen_ms: i64,
    last_seen_ms: i64,
}

#[derive(Insertable, AsChangeset)]
#[diesel(table_name = terminals)]
struct NewTerminal<'a> {
    sim: &'a str,
    maker_id: &'a str,
    model: &'a str,
    terminal_id: &'a str,
    plate_color: i32,
    province: i32,
    city: i32,
    registered_ms: i64,
}

#[derive(AsChangeset)]
#[diesel(table_name = devices)]
struct Registration<'a> {
    plate: Option<&'a str>,
    auth_code: Option<&'a str>,
    registered_ms: Option<i64>,
}

#[derive(Insertable)]
#[diesel(table_name = positions)]
pub(crate) struct NewPosition<'a> {
    sim: &'a str,
    device_time_ms: i64,
    lat: f64,
    lon: f64,
    speed_kmh: f32,
    heading: i32,
    altitude_m: i32,
    alarm: i64,
    status: i64,
}

#[derive(Insertable)]
#[diesel(table_name = streams)]
struct NewStream<'a> {
    name: &'a str,
    sim: Option<&'a str>,
    channel: Option<i32>,
    created_ms: i64,
}

#[derive(Insertable, AsChangeset)]
#[diesel(table_name = sessions)]
struct NewSession<'a> {
    id: &'a str,
    stream: &'a str,
    sim: Option<&'a str>,
    channel: Option<i32>,
    kind: &'a str,
    started_ms: i64,
    ended_ms: Option<i64>,
    host: &'a str,
}

#[derive(Insertable, AsChangeset)]
#[diesel(table_name = segments)]
pub(crate) struct NewSegment<'a> {
    stream: &'a str,
    sequence: i64,
    session_id: &'a str,
    start_pts: i64,
    duration_90k: i64,
    bytes: i64,
    path: &'a str,
    program_date_time_ms: i64,
    end_ms: i64,
    discontinuity: bool,
    created_ms: i64,
}

#[derive(Insertable)]
#[diesel(table_name = incidents)]
struct NewIncident<'a> {
    sim: &'a str,
    channel: i32,
    from_ms: i64,
    to_ms: i64,
    kind: &'a str,
    source: &'a str,
    created_ms: i64,
    session_id: Option<&'a str>,
    open: bool,
    alarm: i64,
    lat: Option<f64>,
    lon: Option<f64>,
    video_state: Option<&'a str>,
    video_reason: Option<&'a str>,
}

/// What a repeated incident report adds to its row: only the fields it
/// knows (diesel leaves `None` fields out of the SET list), so an alarm
/// extension does not erase the video or the position.
#[derive(AsChangeset)]
#[diesel(table_name = incidents)]
struct IncidentFacts<'a> {
    session_id: Option<&'a str>,
    lat: Option<f64>,
    lon: Option<f64>,
    video_state: Option<&'a str>,
    video_reason: Option<&'a str>,
}

impl IncidentFacts<'_> {
    fn is_empty(&self) -> bool {
        self.session_id.is_none()
            && self.lat.is_none()
            && self.lon.is_none()
            && self.video_state.is_none()
            && self.video_reason.is_none()
    }
}

#[derive(Insertable)]
#[diesel(table_name = playbacks)]
struct NewPlayback<'a> {
    id: &'a str,
    sim: &'a str,
    channel: i32,
    stream: &'a str,
    from_ms: i64,
    to_ms: i64,
    av_type: i32,
    stream_type: i32,
    storage_type: i32,
    mode: i32,
    speed: i32,
    requested_ms: i64,
    state: &'a str,
    reason: Option<&'a str>,
    session_id: Option<&'a str>,
    incident_id: Option<i64>,
}

/// The statements whose SQL differs per backend: upserts (PostgreSQL and
/// SQLite name the conflicting key, MySQL uses ON DUPLICATE KEY) and
/// multi-row inserts. Incidents and playbacks, whose updates are
/// conditional, are an insert-or-ignore followed by conditional updates
/// instead, the same SQL everywhere.
pub(crate) trait BackendWrites {
    fn insert_positions(&mut self, rows: &[NewPosition<'_>]) -> QueryResult<usize>;
    fn upsert_segment(&mut self, row: &NewSegment<'_>) -> QueryResult<usize>;
}

macro_rules! conflict_target_writes {
    ($conn:ty, |$c:ident, $rows:ident| $insert_positions:expr) => {
        impl BackendWrites for $conn {
            fn insert_positions(&mut self, $rows: &[NewPosition<'_>]) -> QueryResult<usize> {
                let $c = self;
                $insert_positions
            }
            fn upsert_segment(&mut self, row: &NewSegment<'_>) -> QueryResult<usize> {
                diesel::insert_into(segments::table)
                    .values(row)
                    .on_conflict((segments::stream, segments::sequence))
                    .do_update()
                    .set(row)
                    .execute(self)
            }
        }
    };
}
// PostgreSQL: one statement with nine array parameters, unnested server
// side, instead of a 9 x N parameter VALUES list whose text (and so whose
// parse and plan) changes with N.
conflict_target_writes!(PgConnection, |c, rows| {
    use diesel::sql_types::{Array, BigInt, Double, Float, Integer, Text};
    diesel::sql_query(
        "INSERT INTO positions (sim, device_time_ms, lat, lon, speed_kmh, heading, altitude_m, \
         alarm, status) SELECT * FROM UNNEST($1::text[], $2::int8[], $3::float8[], \
         $4::float8[], $5::float4[], $6::int4[], $7::int4[], $8::int8[], $9::int8[]) \
         ON CONFLICT DO NOTHING",
    )
    .bind::<Array<Text>, _>(rows.iter().map(|r| r.sim).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(rows.iter().map(|r| r.device_time_ms).collect::<Vec<_>>())
    .bind::<Array<Double>, _>(rows.iter().map(|r| r.lat).collect::<Vec<_>>())
    .bind::<Array<Double>, _>(rows.iter().map(|r| r.lon).collect::<Vec<_>>())
    .bind::<Array<Float>, _>(rows.iter().map(|r| r.speed_kmh).collect::<Vec<_>>())
    .bind::<Array<Integer>, _>(rows.iter().map(|r| r.heading).collect::<Vec<_>>())
    .bind::<Array<Integer>, _>(rows.iter().map(|r| r.altitude_m).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(rows.iter().map(|r| r.alarm).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(rows.iter().map(|r| r.status).collect::<Vec<_>>())
    .execute(c)
});
// SQLite: one cached prepared statement executed per row beats a fresh
// multi-row statement (whose SQL, and so whose prepare, varies with the row
// count) inside one transaction; and diesel renders SQLite multi-row inserts
// only without an ON CONFLICT clause anyway. INSERT OR IGNORE = DO NOTHING.
conflict_target_writes!(SqliteConnection, |c, rows| {
    let mut n = 0;
    for row in rows {
        n += diesel::insert_or_ignore_into(positions::table)
            .values(row)
            .execute(c)?;
    }
    Ok(n)
});

impl BackendWrites for MysqlConnection {
    fn insert_positions(&mut self, rows: &[NewPosition<'_>]) -> QueryResult<usize> {
        diesel::insert_into(positions::table)
            .values(rows)
            .on_conflict_do_nothing()
            .execute(self)
    }
    fn upsert_segment(&mut self, row: &NewSegment<'_>) -> QueryResult<usize> {
        diesel::insert_into(segments::table)
            .values(row)
            .on_conflict(diesel::dsl::DuplicatedKeys)
            .do_update()
            .set(row)
            .execute(self)
    }
}

/// Keys this writer has already made sure exist, so a steady stream of
/// positions or segments does not re-insert its device/stream/session on
/// every batch. Only committed keys are added; the sets are bounded.
#[derive(Default)]
pub(crate) struct Known {
    sims: HashSet<String>,
    streams: HashSet<String>,
    sessions: HashSet<String>,
}

const KNOWN_MAX: usize = 100_000;

impl Known {
    pub(crate) fn merge(&mut self, other: Known) {
        for (mine, theirs) in [
            (&mut self.sims, other.sims),
            (&mut self.streams, other.streams),
            (&mut self.sessions, other.sessions),
        ] {
            if mine.len() + theirs.len() > KNOWN_MAX {
                mine.clear();
            }
            mine.extend(theirs);
        }
    }

    pub(crate) fn clear(&mut self) {
        *self = Known::default();
    }
}

/// Checks what the schema would otherwise reject, so one bad record is
/// refused up front instead of failing a whole batch.
pub(crate) fn validate(r: &Record) -> Result<(), String> {
    fn len(what: &str, s: &str, max: usize) -> Result<(), String> {
        if s.is_empty() || s.chars().count() > max {
            Err(format!("{what} {s:?} must have 1..={max} characters"))
        } else {
            Ok(())
        }
    }
    fn opt_len(what: &str, s: &Option<String>, max: usize) -> Result<(), String> {
        match s {
            Some(s) if s.chars().count() > max => Err(format!("{what} {s:?} is longer than {max}")),
            _ => Ok(()),
        }
    }
    fn video(state: &str) -> Result<(), String> {
        if INCIDENT_VIDEO_STATES.contains(&state) {
            Ok(())
        } else {
            Err(format!(
                "video state {state:?} is none of {INCIDENT_VIDEO_STATES:?}"
            ))
        }
    }
    fn fits(what: &str, v: u64) -> Result<(), String> {
        i64::try_from(v)
            .map(|_| ())
            .map_err(|_| format!("{what} {v} does not fit i64"))
    }
    match r {
        Record::DeviceSeen {
            sim,
            plate,
            auth_code,
            ..
        } => {
            len("sim", sim, 20)?;
            opt_len("plate", plate, 32)?;
            opt_len("auth_code", auth_code, 64)
        }
        Record::DeviceRegistered {
            sim,
            plate,
            maker_id,
            model,
            terminal_id,
            ..
        } => {
            len("sim", sim, 20)?;
            len("plate", plate, 32)?;
            len("maker_id", maker_id, 16)?;
            len("model", model, 40)?;
            len("terminal_id", terminal_id, 40)
        }
        Record::Position { sim, lat, lon, .. } => {
            len("sim", sim, 20)?;
            if !(lat.is_finite() && lon.is_finite()) {
                return Err(format!("position {lat},{lon} is not finite"));
            }
            Ok(())
        }
        Record::SessionStarted {
            session_id,
            stream,
            sim,
            host,
            ..
        } => {
            len("session_id", session_id, 128)?;
            len("stream", stream, 64)?;
            if let Some(sim) = sim {
                len("sim", sim, 20)?;
            }
            if host.chars().count() > 255 {
                return Err(format!("host {host:?} is longer than 255"));
            }
            Ok(())
        }
        Record::SessionEnded { session_id, .. } => len("session_id", session_id, 128),
        Record::Segment {
            session_id,
            stream,
            sequence,
            bytes,
            path,
            duration_90k,
            ..
        } => {
            len("session_id", session_id, 128)?;
            len("stream", stream, 64)?;
            len("path", path, 255)?;
            fits("sequence", *sequence)?;
            fits("bytes", *bytes)?;
            if *duration_90k < 0 {
                return Err(format!("negative duration {duration_90k}"));
            }
            if !is_safe_relative(Path::new(path)) {
                return Err(format!("path {path:?} is not relative to the data dir"));
            }
            Ok(())
        }
        Record::Incident {
            sim,
            kind,
            source,
            session_id,
            lat,
            lon,
            video_state,
            ..
        } => {
            len("sim", sim, 20)?;
            len("kind", kind, 32)?;
            len("source", source, 32)?;
            opt_len("session_id", session_id, 128)?;
            if lat.is_some_and(|v| !v.is_finite()) || lon.is_some_and(|v| !v.is_finite()) {
                return Err(format!("incident position {lat:?},{lon:?} is not finite"));
            }
            match video_state {
                Some(v) => video(v),
                None => Ok(()),
            }
        }
        Record::IncidentVideo {
            sim,
            kind,
            source,
            video_state,
            session_id,
            ..
        } => {
            len("sim", sim, 20)?;
            len("kind", kind, 32)?;
            len("source", source, 32)?;
            opt_len("session_id", session_id, 128)?;
            video(video_state)
        }
        Record::Playback {
            id,
            sim,
            stream,
            session_id,
            ..
        } => {
            len("playback id", id, 128)?;
            len("sim", sim, 20)?;
            len("stream", stream, 64)?;
            opt_len("session_id", session_id, 128)
        }
    }
}

/// `s` cut to [`REASON_MAX_CHARS`] characters.
fn clip_reason(s: &str) -> &str {
    s.char_indices()
        .nth(REASON_MAX_CHARS)
        .map_or(s, |(at, _)| &s[..at])
}

/// A path that stays inside whatever directory it is joined to: relative,
/// made only of normal components (no `..`, no root, no prefix).
pub(crate) fn is_safe_relative(p: &Path) -> bool {
    p.components().next().is_some() && p.components().all(|c| matches!(c, Component::Normal(_)))
}

/// Makes sure a device row exists (positions, streams and incidents refer
/// to it) without touching an existing one.
macro_rules! ensure_device {
    ($c:ident, $sim:expr, $now_ms:expr) => {
        diesel::insert_into(devices::table)
            .values(&NewDevice {
                sim: $sim,
                plate: None,
                auth_code: None,
                registered_ms: None,
                first_seen_ms: $now_ms,
                last_seen_ms: $now_ms,
            })
            .on_conflict_do_nothing()
            .execute($c)
    };
}

/// The incident row with the unique key (sim, channel, from_ms, kind, source).
macro_rules! incident_key {
    ($sim:expr, $channel:expr, $from_ms:expr, $kind:expr, $source:expr) => {
        incidents::table
            .filter(incidents::sim.eq($sim))
            .filter(incidents::channel.eq($channel))
            .filter(incidents::from_ms.eq($from_ms))
            .filter(incidents::kind.eq($kind))
            .filter(incidents::source.eq($source))
    };
}

/// Writes `records` in one transaction. Either all of them are applied or
/// none (the caller retries or splits the batch).
pub(crate) fn apply_batch(
    conn: &mut AnyConn,
    records: &[Record],
    known: &mut Known,
    now_ms: i64,
) -> QueryResult<()> {
    let mut added = Known::default();
    write_tx!(conn, |c| {
        let mut new_positions: Vec<NewPosition<'_>> = Vec::new();
        for r in records {
            match r {
                Record::DeviceSeen {
                    sim,
                    plate,
                    auth_code,
                    at,
                } => {
                    if !known.sims.contains(sim) && !added.sims.contains(sim) {
                        diesel::insert_into(devices::table)
                            .values(&NewDevice {
                                sim,
                                plate: None,
                                auth_code: None,
                                registered_ms: None,
                                first_seen_ms: *at,
                                last_seen_ms: *at,
                            })
                            .on_conflict_do_nothing()
                            .execute(c)?;
                        added.sims.insert(sim.clone());
                    }
                    // Conditional, so concurrent writers and out-of-order
                    // retries can only move last_seen forward.
                    diesel::update(
                        devices::table
                            .filter(devices::sim.eq(sim))
                            .filter(devices::last_seen_ms.lt(*at)),
                    )
                    .set(devices::last_seen_ms.eq(*at))
                    .execute(c)?;
                    if plate.is_some() || auth_code.is_some() {
                        diesel::update(devices::table.filter(devices::sim.eq(sim)))
                            .set(&Registration {
                                plate: plate.as_deref(),
                                auth_code: auth_code.as_deref(),
                                registered_ms: Some(*at),
                            })
                            .execute(c)?;
                    }
                }
                Record::DeviceRegistered {
                    sim,
                    plate,
                    plate_color,
                    maker_id,
                    model,
                    terminal_id,
                    province,
                    city,
                    at,
                } => {
                    if !known.sims.contains(sim) && !added.sims.contains(sim) {
                        ensure_device!(c, sim, now_ms)?;
                        added.sims.insert(sim.clone());
                    }
                    diesel::update(devices::table.filter(devices::sim.eq(sim)))
                        .set((
                            devices::plate.eq(plate.as_str()),
                            devices::registered_ms.eq(*at),
                        ))
                        .execute(c)?;
                    let row = NewTerminal {
                        sim,
                        maker_id,
                        model,
                        terminal_id,
                        plate_color: i32::from(*plate_color),
                        province: i32::from(*province),
                        city: i32::from(*city),
                        registered_ms: *at,
                    };
                    // Insert-or-ignore then update: one statement shape on
                    // every backend, and racing writers cannot fail.
                    diesel::insert_into(terminals::table)
                        .values(&row)
                        .on_conflict_do_nothing()
                        .execute(c)?;
                    diesel::update(
                        terminals::table
                            .filter(terminals::sim.eq(sim))
                            .filter(terminals::registered_ms.le(*at)),
                    )
                    .set(&row)
                    .execute(c)?;
                }
                Record::Position {
                    sim,
                    device_time_ms,
                    lat,
                    lon,
                    speed,
                    heading,
                    altitude,
                    alarm,
                    status,
                } => {
                    if !known.sims.contains(sim) && !added.sims.contains(sim) {
                        ensure_device!(c, sim, now_ms)?;
                        added.sims.insert(sim.clone());
                    }
                    new_positions.push(NewPosition {
                        sim,
                        device_time_ms: *device_time_ms,
                        lat: *lat,
                        lon: *lon,
                        speed_kmh: *speed,
                        heading: i32::from(*heading),
                        altitude_m: *altitude,
                        alarm: i64::from(*alarm),
                        status: i64::from(*status),
                    });
                }
                Record::SessionStarted {
                    session_id,
                    stream,
                    sim,
                    channel,
                    kind,
                    started_ms,
                    host,
                } => {
                    if let Some(sim) = sim {
                        if !known.sims.contains(sim) && !added.sims.contains(sim) {
                            ensure_device!(c, sim, now_ms)?;
                            added.sims.insert(sim.clone());
                        }
                    }
                    let channel = channel.map(i32::from);
                    diesel::insert_into(streams::table)
                        .values(&NewStream {
                            name: stream,
                            sim: sim.as_deref(),
                            channel,
                            created_ms: now_ms,
                        })
                        .on_conflict_do_nothing()
                        .execute(c)?;
                    if sim.is_some() {
                        // A stream first seen through a segment has no device yet.
                        diesel::update(
                            streams::table
                                .filter(streams::name.eq(stream))
                                .filter(streams::sim.is_null()),
                        )
                        .set((
                            streams::sim.eq(sim.as_deref()),
                            streams::channel.eq(channel),
                        ))
                        .execute(c)?;
                    }
                    added.streams.insert(stream.clone());
                    let row = NewSession {
                        id: session_id,
                        stream,
                        sim: sim.as_deref(),
                        channel,
                        kind: stored_kind(*kind),
                        started_ms: *started_ms,
                        ended_ms: None,
                        host,
                    };
                    diesel::insert_into(sessions::table)
                        .values(&row)
                        .on_conflict_do_nothing()
                        .execute(c)?;
                    // Fill in a placeholder made by a segment that overtook us.
                    diesel::update(
                        sessions::table
                            .filter(sessions::id.eq(session_id))
                            .filter(sessions::host.eq(PLACEHOLDER_HOST)),
                    )
                    .set((
                        sessions::sim.eq(sim.as_deref()),
                        sessions::channel.eq(channel),
                        sessions::kind.eq(stored_kind(*kind)),
                        sessions::started_ms.eq(*started_ms),
                        sessions::host.eq(host),
                    ))
                    .execute(c)?;
                    added.sessions.insert(session_id.clone());
                }
                Record::SessionEnded {
                    session_id,
                    ended_ms,
                } => {
                    diesel::update(
                        sessions::table
                            .filter(sessions::id.eq(session_id))
                            .filter(sessions::ended_ms.is_null()),
                    )
                    .set(sessions::ended_ms.eq(*ended_ms))
                    .execute(c)?;
                }
                Record::Segment {
                    session_id,
                    stream,
                    sequence,
                    start_pts,
                    duration_90k,
                    bytes,
                    path,
                    program_date_time_ms,
                    discontinuity,
                } => {
                    if !known.streams.contains(stream) && !added.streams.contains(stream) {
                        diesel::insert_into(streams::table)
                            .values(&NewStream {
                                name: stream,
                                sim: None,
                                channel: None,
                                created_ms: now_ms,
                            })
                            .on_conflict_do_nothing()
                            .execute(c)?;
                        added.streams.insert(stream.clone());
                    }
                    if !known.sessions.contains(session_id) && !added.sessions.contains(session_id)
                    {
                        // The placeholder inherits the stream's device so it
                        // still shows up in per-device session lists.
                        let (st_sim, st_channel): (Option<String>, Option<i32>) = streams::table
                            .find(stream)
                            .select((streams::sim, streams::channel))
                            .first(c)
                            .optional()?
                            .unwrap_or((None, None));
                        diesel::insert_into(sessions::table)
                            .values(&NewSession {
                                id: session_id,
                                stream,
                                sim: st_sim.as_deref(),
                                channel: st_channel,
                                kind: stored_kind(SessionKind::Live),
                                started_ms: *program_date_time_ms,
                                ended_ms: None,
                                host: PLACEHOLDER_HOST,
                            })
                            .on_conflict_do_nothing()
                            .execute(c)?;
                        added.sessions.insert(session_id.clone());
                    }
                    BackendWrites::upsert_segment(
                        c,
                        &NewSegment {
                            stream,
                            sequence: *sequence as i64,
                            session_id,
                            start_pts: *start_pts,
                            duration_90k: *duration_90k,
                            bytes: *bytes as i64,
                            path,
                            program_date_time_ms: *program_date_time_ms,
                            end_ms: program_date_time_ms + duration_90k / 90,
                            discontinuity: *discontinuity,
                            created_ms: now_ms,
                        },
                    )?;
                }
                Record::Incident {
                    sim,
                    channel,
                    from_ms,
                    to_ms,
                    kind,
                    source,
                    session_id,
                    open,
                    alarm,
                    lat,
                    lon,
                    video_state,
                    video_reason,
                } => {
                    if !known.sims.contains(sim) && !added.sims.contains(sim) {
                        ensure_device!(c, sim, now_ms)?;
                        added.sims.insert(sim.clone());
                    }
                    let channel = channel.map(i32::from).unwrap_or(0);
                    let video_reason = video_reason.as_deref().map(clip_reason);
                    // Insert-or-ignore, then the conditional updates, which
                    // leave a row just inserted as it is. (The insert's
                    // count cannot tell a new row: MySQL counts the ignored
                    // one, found but unchanged, as affected.)
                    diesel::insert_into(incidents::table)
                        .values(&NewIncident {
                            sim,
                            channel,
                            from_ms: *from_ms,
                            to_ms: *to_ms,
                            kind,
                            source,
                            created_ms: now_ms,
                            session_id: session_id.as_deref(),
                            open: *open,
                            alarm: i64::from(*alarm),
                            lat: *lat,
                            lon: *lon,
                            video_state: video_state.as_deref(),
                            video_reason,
                        })
                        .on_conflict_do_nothing()
                        .execute(c)?;
                    // The row is open, or it is closed and so is this
                    // report: a closed incident is never reopened.
                    diesel::update(
                        incident_key!(sim, channel, *from_ms, kind, source)
                            .filter(incidents::open.eq(true).or(incidents::open.eq(*open))),
                    )
                    .set((
                        incidents::to_ms.eq(*to_ms),
                        incidents::open.eq(*open),
                        incidents::alarm.eq(i64::from(*alarm)),
                    ))
                    .execute(c)?;
                    let facts = IncidentFacts {
                        session_id: session_id.as_deref(),
                        lat: *lat,
                        lon: *lon,
                        video_state: video_state.as_deref(),
                        video_reason,
                    };
                    if !facts.is_empty() {
                        diesel::update(incident_key!(sim, channel, *from_ms, kind, source))
                            .set(&facts)
                            .execute(c)?;
                    }
                }
                Record::IncidentVideo {
                    sim,
                    channel,
                    from_ms,
                    kind,
                    source,
                    video_state,
                    video_reason,
                    session_id,
                } => {
                    let channel = channel.map(i32::from).unwrap_or(0);
                    diesel::update(incident_key!(sim, channel, *from_ms, kind, source))
                        .set((
                            incidents::video_state.eq(video_state),
                            incidents::video_reason.eq(video_reason.as_deref().map(clip_reason)),
                            session_id.as_deref().map(|s| incidents::session_id.eq(s)),
                        ))
                        .execute(c)?;
                }
                Record::Playback {
                    id,
                    sim,
                    channel,
                    stream,
                    from_ms,
                    to_ms,
                    av_type,
                    stream_type,
                    storage_type,
                    mode,
                    speed,
                    requested_ms,
                    state,
                    reason,
                    session_id,
                    incident_id,
                } => {
                    if !known.sims.contains(sim) && !added.sims.contains(sim) {
                        ensure_device!(c, sim, now_ms)?;
                        added.sims.insert(sim.clone());
                    }
                    let reason = reason.as_deref().map(clip_reason);
                    // As for incidents: insert-or-ignore, then conditional updates.
                    diesel::insert_into(playbacks::table)
                        .values(&NewPlayback {
                            id,
                            sim,
                            channel: i32::from(*channel),
                            stream,
                            from_ms: *from_ms,
                            to_ms: *to_ms,
                            av_type: i32::from(*av_type),
                            stream_type: i32::from(*stream_type),
                            storage_type: i32::from(*storage_type),
                            mode: i32::from(*mode),
                            speed: i32::from(*speed),
                            requested_ms: *requested_ms,
                            state: state.as_str(),
                            reason,
                            session_id: session_id.as_deref(),
                            incident_id: *incident_id,
                        })
                        .on_conflict_do_nothing()
                        .execute(c)?;
                    // Only from a state of lower or equal rank: the
                    // request never moves back.
                    let from_states: Vec<&str> = PlaybackState::ALL
                        .into_iter()
                        .filter(|s| s.rank() <= state.rank())
                        .map(PlaybackState::as_str)
                        .collect();
                    diesel::update(
                        playbacks::table
                            .filter(playbacks::id.eq(id))
                            .filter(playbacks::state.eq_any(from_states)),
                    )
                    .set((
                        playbacks::state.eq(state.as_str()),
                        playbacks::reason.eq(reason),
                    ))
                    .execute(c)?;
                    if session_id.is_some() || incident_id.is_some() {
                        diesel::update(playbacks::table.filter(playbacks::id.eq(id)))
                            .set((
                                session_id.as_deref().map(|s| playbacks::session_id.eq(s)),
                                incident_id.map(|i| playbacks::incident_id.eq(i)),
                            ))
                            .execute(c)?;
                    }
                }
            }
        }
        for chunk in new_positions.chunks(POSITION_CHUNK) {
            BackendWrites::insert_positions(c, chunk)?;
        }
        QueryResult::Ok(())
    })?;
    known.merge(added);
    Ok(())
}
