//! The read side: the blocking queries hlsd (from `spawn_blocking`) and
//! ingestd need. Each runs on a pooled connection; ranges are half-open and
//! match rows overlapping them (a row ending exactly where a range starts
//! does not).

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Float, Integer, Nullable, Text};

use super::conn::{dispatch, write_tx};
use super::record::{
    now_ms, Device, Incident, Playback, PlaybackRow, Position, Segment, Session, Stream, Terminal,
    ONLINE_WINDOW_MS,
};
use super::schema::{incidents, playbacks, positions, segments, sessions, streams};
use super::{Catalog, Error};

#[derive(QueryableByName)]
struct DeviceWithLast {
    #[diesel(sql_type = Text)]
    sim: String,
    #[diesel(sql_type = Nullable<Text>)]
    plate: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    auth_code: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    registered_ms: Option<i64>,
    #[diesel(sql_type = BigInt)]
    first_seen_ms: i64,
    #[diesel(sql_type = BigInt)]
    last_seen_ms: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    device_time_ms: Option<i64>,
    #[diesel(sql_type = Nullable<Double>)]
    lat: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    lon: Option<f64>,
    #[diesel(sql_type = Nullable<Float>)]
    speed_kmh: Option<f32>,
    #[diesel(sql_type = Nullable<Integer>)]
    heading: Option<i32>,
    #[diesel(sql_type = Nullable<Integer>)]
    altitude_m: Option<i32>,
    #[diesel(sql_type = Nullable<BigInt>)]
    alarm: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    status: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    maker_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    model: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    terminal_id: Option<String>,
    #[diesel(sql_type = Nullable<Integer>)]
    plate_color: Option<i32>,
}

/// One statement for all devices and their latest fix; the correlated MAX
/// is an index lookup on the (sim, device_time_ms) key on every backend.
const DEVICES_SQL: &str = "SELECT d.sim, d.plate, d.auth_code, d.registered_ms, d.first_seen_ms, \
     d.last_seen_ms, p.device_time_ms, p.lat, p.lon, p.speed_kmh, p.heading, p.altitude_m, \
     p.alarm, p.status, t.maker_id, t.model, t.terminal_id, t.plate_color \
     FROM devices d LEFT JOIN positions p ON p.sim = d.sim AND p.device_time_ms = \
     (SELECT MAX(p2.device_time_ms) FROM positions p2 WHERE p2.sim = d.sim) \
     LEFT JOIN terminals t ON t.sim = d.sim \
     ORDER BY d.sim";

impl Catalog {
    /// All devices, by SIM, each with its latest position (by device time),
    /// its channels and whether it is online now.
    pub fn devices(&self) -> Result<Vec<Device>, Error> {
        let rows = self.with_conn(|c| {
            Ok(dispatch!(c, |c| diesel::sql_query(DEVICES_SQL)
                .load::<DeviceWithLast>(c))?)
        })?;
        let streams = self.streams()?;
        let live = self.live_sessions()?;
        let mut groups = self.device_groups()?;
        let now = now_ms();
        Ok(rows
            .into_iter()
            .map(|r| {
                let mut channels: Vec<u8> = streams
                    .iter()
                    .filter(|s| s.sim.as_deref() == Some(r.sim.as_str()))
                    .filter_map(|s| s.channel.and_then(|c| u8::try_from(c).ok()))
                    .collect();
                channels.sort_unstable();
                channels.dedup();
                let streaming = live.iter().any(|s| s.sim.as_deref() == Some(&r.sim));
                let last_position = match (r.device_time_ms, r.lat, r.lon) {
                    (Some(t), Some(lat), Some(lon)) => Some(Position {
                        sim: r.sim.clone(),
                        device_time_ms: t,
                        lat,
                        lon,
                        speed: r.speed_kmh.unwrap_or(0.0),
                        heading: r.heading.unwrap_or(0),
                        altitude: r.altitude_m.unwrap_or(0),
                        alarm: r.alarm.unwrap_or(0),
                        status: r.status.unwrap_or(0),
                    }),
                    _ => None,
                };
                let terminal = match (r.maker_id, r.model, r.terminal_id, r.plate_color) {
                    (Some(maker_id), Some(model), Some(terminal_id), Some(plate_color)) => {
                        Some(Terminal {
                            maker_id,
                            model,
                            terminal_id,
                            plate_color,
                        })
                    }
                    _ => None,
                };
                Device {
                    groups: groups.remove(&r.sim).unwrap_or_default(),
                    terminal,
                    online: streaming || now - r.last_seen_ms <= ONLINE_WINDOW_MS,
                    sim: r.sim,
                    plate: r.plate,
                    auth_code: r.auth_code,
                    registered_ms: r.registered_ms,
                    first_seen_ms: r.first_seen_ms,
                    last_seen_ms: r.last_seen_ms,
                    last_position,
                    channels,
                }
            })
            .collect())
    }

    /// All streams, by name.
    pub fn streams(&self) -> Result<Vec<Stream>, Error> {
        self.with_conn(|c| {
            Ok(dispatch!(c, |c| streams::table
                .select(Stream::as_select())
                .order(streams::name.asc())
                .load(c))?)
        })
    }

    /// Sessions that have not ended (the live streams), by stream then start.
    pub fn live_sessions(&self) -> Result<Vec<Session>, Error> {
        self.with_conn(|c| {
            Ok(dispatch!(c, |c| sessions::table
                .filter(sessions::ended_ms.is_null())
                .select(Session::as_select())
                .order((sessions::stream.asc(), sessions::started_ms.asc()))
                .load(c))?)
        })
    }

    /// The latest session (by start) of every stream that has one, open or
    /// ended, by stream.
    pub fn latest_sessions(&self) -> Result<Vec<Session>, Error> {
        let s2 = diesel::alias!(sessions as s2);
        self.with_conn(|c| {
            Ok(dispatch!(c, |c| sessions::table
                .filter(
                    sessions::started_ms.nullable().eq(s2
                        .filter(s2.field(sessions::stream).eq(sessions::stream))
                        .select(diesel::dsl::max(s2.field(sessions::started_ms)))
                        .single_value())
                )
                .select(Session::as_select())
                .order((sessions::stream.asc(), sessions::id.asc()))
                .load(c))?)
        })
    }

    /// One session by id.
    pub fn session(&self, id: &str) -> Result<Option<Session>, Error> {
        self.with_conn(|c| {
            Ok(dispatch!(c, |c| sessions::table
                .find(id)
                .select(Session::as_select())
                .first(c)
                .optional())?)
        })
    }

    /// Sessions of a device (any channel) overlapping `[from_ms, to_ms)`, by start.
    pub fn sessions_of_device(
        &self,
        sim: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Session>, Error> {
        self.with_conn(|c| {
            Ok(dispatch!(c, |c| sessions::table
                .filter(sessions::sim.eq(sim))
                .filter(sessions::started_ms.lt(to_ms))
                .filter(
                    sessions::ended_ms
                        .is_null()
                        .or(sessions::ended_ms.gt(from_ms))
                )
                .select(Session::as_select())
                .order((sessions::started_ms.asc(), sessions::id.asc()))
                .load(c))?)
        })
    }

    /// Sessions of a stream overlapping `[from_ms, to_ms)`, by start.
    pub fn sessions_of_stream(
        &self,
        stream: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Session>, Error> {
        self.with_conn(|c| {
            Ok(dispatch!(c, |c| sessions::table
                .filter(sessions::stream.eq(stream))
                .filter(sessions::started_ms.lt(to_ms))
                .filter(
                    sessions::ended_ms
                        .is_null()
                        .or(sessions::ended_ms.gt(from_ms))
                )
                .select(Session::as_select())
                .order((sessions::started_ms.asc(), sessions::id.asc()))
                .load(c))?)
        })
    }

    /// The segments of a session in media-sequence order (a VOD playlist).
    pub fn segments_of_session(&self, session_id: &str) -> Result<Vec<Segment>, Error> {
        self.with_conn(|c| {
            Ok(dispatch!(c, |c| segments::table
                .filter(segments::session_id.eq(session_id))
                .select(Segment::as_select())
                .order((segments::stream.asc(), segments::sequence.asc()))
                .load(c))?)
        })
    }

    /// The segments of a stream whose program-date-time span overlaps
    /// `[from_ms, to_ms)`, in sequence order (an incident's VOD playlist).
    pub fn segments_in_range(
        &self,
        stream: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Segment>, Error> {
        self.with_conn(|c| {
            Ok(dispatch!(c, |c| segments::table
                .filter(segments::stream.eq(stream))
                .filter(segments::program_date_time_ms.lt(to_ms))
                .filter(segments::end_ms.gt(from_ms))
                .select(Segment::as_select())
                .order(segments::sequence.asc())
                .load(c))?)
        })
    }

    /// Positions of a device with device time in `[from_ms, to_ms)`, oldest
    /// first, at most `limit`.
    pub fn positions(
        &self,
        sim: &str,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> Result<Vec<Position>, Error> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_conn(|c| {
            Ok(dispatch!(c, |c| positions::table
                .filter(positions::sim.eq(sim))
                .filter(positions::device_time_ms.ge(from_ms))
                .filter(positions::device_time_ms.lt(to_ms))
                .select(Position::as_select())
                .order(positions::device_time_ms.asc())
                .limit(limit)
                .load(c))?)
        })
    }

    /// Incidents of a device overlapping `[from_ms, to_ms)`, by start.
    pub fn incidents(&self, sim: &str, from_ms: i64, to_ms: i64) -> Result<Vec<Incident>, Error> {
        self.with_conn(|c| {
            Ok(dispatch!(c, |c| incidents::table
                .filter(incidents::sim.eq(sim))
                .filter(incidents::from_ms.lt(to_ms))
                .filter(incidents::to_ms.gt(from_ms))
                .select(Incident::as_select())
                .order((incidents::from_ms.asc(), incidents::id.asc()))
                .load(c))?)
        })
    }

    /// One incident by id.
    pub fn incident(&self, id: i64) -> Result<Option<Incident>, Error> {
        self.with_conn(|c| {
            Ok(dispatch!(c, |c| incidents::table
                .find(id)
                .select(Incident::as_select())
                .first(c)
                .optional())?)
        })
    }

    /// One playback request by id.
    pub fn playback(&self, id: &str) -> Result<Option<Playback>, Error> {
        let row = self.with_conn(|c| {
            Ok(dispatch!(c, |c| playbacks::table
                .find(id)
                .select(PlaybackRow::as_select())
                .first(c)
                .optional())?)
        })?;
        row.map(playback_of).transpose()
    }

    /// Playback requests of a device (any channel) whose requested span
    /// overlaps `[from_ms, to_ms)`, oldest span first (by `from_ms`, then
    /// by request time), like a timeline.
    pub fn playbacks_of_device(
        &self,
        sim: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Playback>, Error> {
        let rows = self.with_conn(|c| {
            Ok(dispatch!(c, |c| playbacks::table
                .filter(playbacks::sim.eq(sim))
                .filter(playbacks::from_ms.lt(to_ms))
                .filter(playbacks::to_ms.gt(from_ms))
                .select(PlaybackRow::as_select())
                .order((
                    playbacks::from_ms.asc(),
                    playbacks::requested_ms.asc(),
                    playbacks::id.asc(),
                ))
                .load(c))?)
        })?;
        rows.into_iter().map(playback_of).collect()
    }

    /// Ends the sessions a crashed instance left open: call at start-up with
    /// the instance's own `host` (the name it puts in `SessionStarted`).
    /// Returns how many sessions were closed.
    /// Closes the incidents still marked open whose end (`to_ms`, which a
    /// lasting alarm moves forward with every report) is before `before_ms`:
    /// their alarm's reports stopped without a close, as when the ingest
    /// process that tracked them died. Returns how many.
    pub fn close_stale_incidents(&self, before_ms: i64) -> Result<usize, Error> {
        self.with_conn(|c| {
            Ok(write_tx!(c, |c| diesel::update(
                incidents::table
                    .filter(incidents::open.eq(true))
                    .filter(incidents::to_ms.lt(before_ms))
            )
            .set(incidents::open.eq(false))
            .execute(c))?)
        })
    }

    pub fn end_open_sessions(&self, host: &str, ended_ms: i64) -> Result<usize, Error> {
        self.with_conn(|c| {
            Ok(write_tx!(c, |c| diesel::update(
                sessions::table
                    .filter(sessions::host.eq(host))
                    .filter(sessions::ended_ms.is_null())
            )
            .set(sessions::ended_ms.eq(ended_ms))
            .execute(c))?)
        })
    }
}

/// A row the schema's CHECK and types should have kept valid; one that is
/// not (edited by hand) is reported as a failed read, not served.
fn playback_of(row: PlaybackRow) -> Result<Playback, Error> {
    Playback::try_from(row)
        .map_err(|e| Error::Query(diesel::result::Error::DeserializationError(e.into())))
}
