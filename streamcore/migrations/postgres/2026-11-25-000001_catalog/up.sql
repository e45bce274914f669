-- streamcore catalog, PostgreSQL flavour (same tables as the SQLite and MySQL migrations).
-- Times are BIGINT milliseconds since the Unix epoch (UTC); 90 kHz values are MPEG-TS clock ticks.
-- Column comments are stored with COMMENT ON so they show in \d+ and information_schema.


CREATE TABLE devices (
    sim                  VARCHAR(20)      NOT NULL PRIMARY KEY, -- device SIM number as sent in the JT/T 808 header (12 BCD digits in 2013, 20 in 2019); the natural key shared by all processes
    plate                VARCHAR(32)      NULL, -- licence plate from the 0x0100 registration, NULL until the device registers
    auth_code            VARCHAR(64)      NULL, -- authentication code the platform issued in 0x8100; the device presents it in 0x0102
    registered_ms        BIGINT           NULL, -- host time of the latest registration (0x0100) that set plate/auth_code
    first_seen_ms        BIGINT           NOT NULL, -- host time the catalog first heard of this device
    last_seen_ms         BIGINT           NOT NULL -- host time of the latest message from the device (never moves backwards)
);
COMMENT ON COLUMN devices.sim IS 'device SIM number as sent in the JT/T 808 header (12 BCD digits in 2013, 20 in 2019); the natural key shared by all processes';
COMMENT ON COLUMN devices.plate IS 'licence plate from the 0x0100 registration, NULL until the device registers';
COMMENT ON COLUMN devices.auth_code IS 'authentication code the platform issued in 0x8100; the device presents it in 0x0102';
COMMENT ON COLUMN devices.registered_ms IS 'host time of the latest registration (0x0100) that set plate/auth_code';
COMMENT ON COLUMN devices.first_seen_ms IS 'host time the catalog first heard of this device';
COMMENT ON COLUMN devices.last_seen_ms IS 'host time of the latest message from the device (never moves backwards)';

CREATE TABLE positions (
    sim                  VARCHAR(20)      NOT NULL REFERENCES devices(sim), -- device that reported the fix
    device_time_ms       BIGINT           NOT NULL, -- fix time from the device clock (808 BCD time, converted to Unix ms); with sim the natural key, so re-sent batches (0x0704) are de-duplicated
    lat                  DOUBLE PRECISION NOT NULL, -- latitude in degrees, WGS-84, south negative
    lon                  DOUBLE PRECISION NOT NULL, -- longitude in degrees, WGS-84, west negative
    speed_kmh            REAL             NOT NULL, -- ground speed in km/h (808 sends 1/10 km/h)
    heading              INTEGER          NOT NULL, -- course over ground in degrees, 0 = north, clockwise, 0..359
    altitude_m           INTEGER          NOT NULL, -- altitude in metres above sea level
    alarm                BIGINT           NOT NULL, -- 808 alarm flag bits (u32) as sent
    status               BIGINT           NOT NULL, -- 808 status bits (u32) as sent
    PRIMARY KEY (sim, device_time_ms)
);
COMMENT ON COLUMN positions.sim IS 'device that reported the fix';
COMMENT ON COLUMN positions.device_time_ms IS 'fix time from the device clock (808 BCD time, converted to Unix ms); with sim the natural key, so re-sent batches (0x0704) are de-duplicated';
COMMENT ON COLUMN positions.lat IS 'latitude in degrees, WGS-84, south negative';
COMMENT ON COLUMN positions.lon IS 'longitude in degrees, WGS-84, west negative';
COMMENT ON COLUMN positions.speed_kmh IS 'ground speed in km/h (808 sends 1/10 km/h)';
COMMENT ON COLUMN positions.heading IS 'course over ground in degrees, 0 = north, clockwise, 0..359';
COMMENT ON COLUMN positions.altitude_m IS 'altitude in metres above sea level';
COMMENT ON COLUMN positions.alarm IS '808 alarm flag bits (u32) as sent';
COMMENT ON COLUMN positions.status IS '808 status bits (u32) as sent';

CREATE TABLE streams (
    name                 VARCHAR(64)      NOT NULL PRIMARY KEY, -- stream name: <SIM>_<channel> for devices, [A-Za-z0-9_-]{1,64} for raw streams; names the directory live/<name>/
    sim                  VARCHAR(20)      NULL REFERENCES devices(sim), -- device of a device stream, NULL for raw streams
    channel              INTEGER          NULL, -- JT/T 1078 logical channel number, NULL for raw streams
    created_ms           BIGINT           NOT NULL, -- host time the stream was first catalogued
    UNIQUE (sim, channel)
);
COMMENT ON COLUMN streams.name IS 'stream name: <SIM>_<channel> for devices, [A-Za-z0-9_-]{1,64} for raw streams; names the directory live/<name>/';
COMMENT ON COLUMN streams.sim IS 'device of a device stream, NULL for raw streams';
COMMENT ON COLUMN streams.channel IS 'JT/T 1078 logical channel number, NULL for raw streams';
COMMENT ON COLUMN streams.created_ms IS 'host time the stream was first catalogued';

CREATE TABLE sessions (
    id                   VARCHAR(128)     NOT NULL PRIMARY KEY, -- producer-generated id (stream, start ms, random suffix) so it is unique across processes without a round trip
    stream               VARCHAR(64)      NOT NULL REFERENCES streams(name), -- stream the session fed
    sim                  VARCHAR(20)      NULL, -- copy of streams.sim so per-device session queries need no join
    channel              INTEGER          NULL, -- copy of streams.channel
    kind                 VARCHAR(32)      NOT NULL CHECK (kind IN ('live', 'playback')), -- live video (0x9101) or device playback upload (0x9201)
    started_ms           BIGINT           NOT NULL, -- host time the connection started feeding the stream
    ended_ms             BIGINT           NULL, -- host time the session ended; NULL while it is live
    host                 VARCHAR(255)     NOT NULL -- host name / instance of the ingest process that owns it, used to close its sessions after a crash
);
COMMENT ON COLUMN sessions.id IS 'producer-generated id (stream, start ms, random suffix) so it is unique across processes without a round trip';
COMMENT ON COLUMN sessions.stream IS 'stream the session fed';
COMMENT ON COLUMN sessions.sim IS 'copy of streams.sim so per-device session queries need no join';
COMMENT ON COLUMN sessions.channel IS 'copy of streams.channel';
COMMENT ON COLUMN sessions.kind IS 'live video (0x9101) or device playback upload (0x9201)';
COMMENT ON COLUMN sessions.started_ms IS 'host time the connection started feeding the stream';
COMMENT ON COLUMN sessions.ended_ms IS 'host time the session ended; NULL while it is live';
COMMENT ON COLUMN sessions.host IS 'host name / instance of the ingest process that owns it, used to close its sessions after a crash';
CREATE INDEX sessions_stream_started ON sessions (stream, started_ms);
CREATE INDEX sessions_sim_started ON sessions (sim, started_ms);
CREATE INDEX sessions_ended ON sessions (ended_ms);

CREATE TABLE segments (
    stream               VARCHAR(64)      NOT NULL REFERENCES streams(name), -- stream the segment belongs to
    sequence             BIGINT           NOT NULL, -- HLS media sequence number within the stream (also the file name <sequence>.ts); with stream the key, matching the file 1:1
    session_id           VARCHAR(128)     NOT NULL REFERENCES sessions(id), -- session (recording) that produced it
    start_pts            BIGINT           NOT NULL, -- PTS of the first frame in 90 kHz ticks (64-bit timeline, not wrapped at 33 bits)
    duration_90k         BIGINT           NOT NULL, -- segment duration in 90 kHz ticks (EXTINF source)
    bytes                BIGINT           NOT NULL, -- size of the .ts file in bytes
    path                 VARCHAR(255)     NOT NULL, -- file path relative to the data dir, e.g. live/<stream>/<sequence>.ts; never absolute, never with ..
    program_date_time_ms BIGINT           NOT NULL, -- EXT-X-PROGRAM-DATE-TIME of the first frame (device clock when known, else host clock)
    end_ms               BIGINT           NOT NULL, -- program_date_time_ms + duration, precomputed for time-range queries
    discontinuity        BOOLEAN          NOT NULL, -- true when an EXT-X-DISCONTINUITY precedes this segment
    created_ms           BIGINT           NOT NULL, -- host time the row was written; retention ages segments by it (device clocks can be wrong)
    PRIMARY KEY (stream, sequence)
);
COMMENT ON COLUMN segments.stream IS 'stream the segment belongs to';
COMMENT ON COLUMN segments.sequence IS 'HLS media sequence number within the stream (also the file name <sequence>.ts); with stream the key, matching the file 1:1';
COMMENT ON COLUMN segments.session_id IS 'session (recording) that produced it';
COMMENT ON COLUMN segments.start_pts IS 'PTS of the first frame in 90 kHz ticks (64-bit timeline, not wrapped at 33 bits)';
COMMENT ON COLUMN segments.duration_90k IS 'segment duration in 90 kHz ticks (EXTINF source)';
COMMENT ON COLUMN segments.bytes IS 'size of the .ts file in bytes';
COMMENT ON COLUMN segments.path IS 'file path relative to the data dir, e.g. live/<stream>/<sequence>.ts; never absolute, never with ..';
COMMENT ON COLUMN segments.program_date_time_ms IS 'EXT-X-PROGRAM-DATE-TIME of the first frame (device clock when known, else host clock)';
COMMENT ON COLUMN segments.end_ms IS 'program_date_time_ms + duration, precomputed for time-range queries';
COMMENT ON COLUMN segments.discontinuity IS 'true when an EXT-X-DISCONTINUITY precedes this segment';
COMMENT ON COLUMN segments.created_ms IS 'host time the row was written; retention ages segments by it (device clocks can be wrong)';
CREATE INDEX segments_session_sequence ON segments (session_id, sequence);
CREATE INDEX segments_stream_pdt ON segments (stream, program_date_time_ms);
CREATE INDEX segments_created ON segments (created_ms);
CREATE INDEX segments_path ON segments (path);

CREATE TABLE incidents (
    id                   BIGINT           GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, -- database-generated id, unique across processes
    sim                  VARCHAR(20)      NOT NULL REFERENCES devices(sim), -- device the incident concerns
    channel              INTEGER          NOT NULL, -- video channel, 0 when it concerns the whole device
    from_ms              BIGINT           NOT NULL, -- start of the incident time range (device clock)
    to_ms                BIGINT           NOT NULL, -- end of the incident time range (device clock); updated while an alarm lasts
    kind                 VARCHAR(32)      NOT NULL, -- what happened, e.g. an 808 alarm bit name or 'playback'
    source               VARCHAR(32)      NOT NULL, -- who reported it, e.g. '808-alarm', '1078-playback', 'operator'
    created_ms           BIGINT           NOT NULL, -- host time the row was first written
    UNIQUE (sim, channel, from_ms, kind, source)
);
COMMENT ON COLUMN incidents.id IS 'database-generated id, unique across processes';
COMMENT ON COLUMN incidents.sim IS 'device the incident concerns';
COMMENT ON COLUMN incidents.channel IS 'video channel, 0 when it concerns the whole device';
COMMENT ON COLUMN incidents.from_ms IS 'start of the incident time range (device clock)';
COMMENT ON COLUMN incidents.to_ms IS 'end of the incident time range (device clock); updated while an alarm lasts';
COMMENT ON COLUMN incidents.kind IS 'what happened, e.g. an 808 alarm bit name or ''playback''';
COMMENT ON COLUMN incidents.source IS 'who reported it, e.g. ''808-alarm'', ''1078-playback'', ''operator''';
COMMENT ON COLUMN incidents.created_ms IS 'host time the row was first written';
CREATE INDEX incidents_sim_from ON incidents (sim, from_ms);

CREATE TABLE pending_deletions (
    path                 VARCHAR(255)     NOT NULL PRIMARY KEY, -- file path relative to the data dir whose row was deleted by retention and whose file is still to be removed
    queued_ms            BIGINT           NOT NULL -- host time retention queued it
);
COMMENT ON COLUMN pending_deletions.path IS 'file path relative to the data dir whose row was deleted by retention and whose file is still to be removed';
COMMENT ON COLUMN pending_deletions.queued_ms IS 'host time retention queued it';
