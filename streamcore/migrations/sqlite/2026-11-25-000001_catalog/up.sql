-- streamcore catalog, SQLite flavour. Times are BIGINT milliseconds since the Unix epoch (UTC)
-- unless a column says otherwise; 90 kHz values are MPEG-TS clock ticks. Every column carries a
-- comment (SQLite keeps this text in sqlite_master, so the comments are readable from the DB).

CREATE TABLE devices (
    sim            TEXT    NOT NULL PRIMARY KEY, -- device SIM number as sent in the JT/T 808 header (12 BCD digits in 2013, 20 in 2019); the natural key shared by all processes
    plate          TEXT    NULL,                 -- licence plate from the 0x0100 registration, NULL until the device registers
    auth_code      TEXT    NULL,                 -- authentication code the platform issued in 0x8100; the device presents it in 0x0102
    registered_ms  BIGINT  NULL,                 -- host time of the latest registration (0x0100) that set plate/auth_code
    first_seen_ms  BIGINT  NOT NULL,             -- host time the catalog first heard of this device
    last_seen_ms   BIGINT  NOT NULL              -- host time of the latest message from the device (never moves backwards)
);

CREATE TABLE positions (
    sim            TEXT    NOT NULL REFERENCES devices(sim), -- device that reported the fix
    device_time_ms BIGINT  NOT NULL,             -- fix time from the device clock (808 BCD time, converted to Unix ms); with sim the natural key, so re-sent batches (0x0704) are de-duplicated
    lat            DOUBLE  NOT NULL,             -- latitude in degrees, WGS-84, south negative
    lon            DOUBLE  NOT NULL,             -- longitude in degrees, WGS-84, west negative
    speed_kmh      REAL    NOT NULL,             -- ground speed in km/h (808 sends 1/10 km/h)
    heading        INTEGER NOT NULL,             -- course over ground in degrees, 0 = north, clockwise, 0..359
    altitude_m     INTEGER NOT NULL,             -- altitude in metres above sea level
    alarm          BIGINT  NOT NULL,             -- 808 alarm flag bits (u32) as sent
    status         BIGINT  NOT NULL,             -- 808 status bits (u32) as sent
    PRIMARY KEY (sim, device_time_ms)
) WITHOUT ROWID;

CREATE TABLE streams (
    name           TEXT    NOT NULL PRIMARY KEY, -- stream name: <SIM>_<channel> for devices, [A-Za-z0-9_-]{1,64} for raw streams; names the directory live/<name>/
    sim            TEXT    NULL REFERENCES devices(sim), -- device of a device stream, NULL for raw streams
    channel        INTEGER NULL,                 -- JT/T 1078 logical channel number, NULL for raw streams
    created_ms     BIGINT  NOT NULL,             -- host time the stream was first catalogued
    UNIQUE (sim, channel)
);

CREATE TABLE sessions (
    id             TEXT    NOT NULL PRIMARY KEY, -- producer-generated id (stream, start ms, random suffix) so it is unique across processes without a round trip
    stream         TEXT    NOT NULL REFERENCES streams(name), -- stream the session fed
    sim            TEXT    NULL,                 -- copy of streams.sim so per-device session queries need no join
    channel        INTEGER NULL,                 -- copy of streams.channel
    kind           TEXT    NOT NULL CHECK (kind IN ('live', 'playback')), -- live video (0x9101) or device playback upload (0x9201)
    started_ms     BIGINT  NOT NULL,             -- host time the connection started feeding the stream
    ended_ms       BIGINT  NULL,                 -- host time the session ended; NULL while it is live
    host           TEXT    NOT NULL              -- host name / instance of the ingest process that owns it, used to close its sessions after a crash
);
CREATE INDEX sessions_stream_started ON sessions (stream, started_ms);
CREATE INDEX sessions_sim_started ON sessions (sim, started_ms);
CREATE INDEX sessions_ended ON sessions (ended_ms);

CREATE TABLE segments (
    stream               TEXT    NOT NULL REFERENCES streams(name), -- stream the segment belongs to
    sequence             BIGINT  NOT NULL,       -- HLS media sequence number within the stream (also the file name <sequence>.ts); with stream the key, matching the file 1:1
    session_id           TEXT    NOT NULL REFERENCES sessions(id), -- session (recording) that produced it
    start_pts            BIGINT  NOT NULL,       -- PTS of the first frame in 90 kHz ticks (64-bit timeline, not wrapped at 33 bits)
    duration_90k         BIGINT  NOT NULL,       -- segment duration in 90 kHz ticks (EXTINF source)
    bytes                BIGINT  NOT NULL,       -- size of the .ts file in bytes
    path                 TEXT    NOT NULL,       -- file path relative to the data dir, e.g. live/<stream>/<sequence>.ts; never absolute, never with ..
    program_date_time_ms BIGINT  NOT NULL,       -- EXT-X-PROGRAM-DATE-TIME of the first frame (device clock when known, else host clock)
    end_ms               BIGINT  NOT NULL,       -- program_date_time_ms + duration, precomputed for time-range queries
    discontinuity        BOOLEAN NOT NULL,       -- true when an EXT-X-DISCONTINUITY precedes this segment
    created_ms           BIGINT  NOT NULL,       -- host time the row was written; retention ages segments by it (device clocks can be wrong)
    PRIMARY KEY (stream, sequence)
);
CREATE INDEX segments_session_sequence ON segments (session_id, sequence);
CREATE INDEX segments_stream_pdt ON segments (stream, program_date_time_ms);
CREATE INDEX segments_created ON segments (created_ms);
CREATE INDEX segments_path ON segments (path);

CREATE TABLE incidents (
    id             INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, -- database-generated id, unique across processes
    sim            TEXT    NOT NULL REFERENCES devices(sim), -- device the incident concerns
    channel        INTEGER NOT NULL,             -- video channel, 0 when it concerns the whole device
    from_ms        BIGINT  NOT NULL,             -- start of the incident time range (device clock)
    to_ms          BIGINT  NOT NULL,             -- end of the incident time range (device clock); updated while an alarm lasts
    kind           TEXT    NOT NULL,             -- what happened, e.g. an 808 alarm bit name or 'playback'
    source         TEXT    NOT NULL,             -- who reported it, e.g. '808-alarm', '1078-playback', 'operator'
    created_ms     BIGINT  NOT NULL,             -- host time the row was first written
    UNIQUE (sim, channel, from_ms, kind, source)
);
CREATE INDEX incidents_sim_from ON incidents (sim, from_ms);

CREATE TABLE pending_deletions (
    path           TEXT    NOT NULL PRIMARY KEY, -- file path relative to the data dir whose row was deleted by retention and whose file is still to be removed
    queued_ms      BIGINT  NOT NULL              -- host time retention queued it
);
