-- streamcore catalog, MySQL/MariaDB flavour (same tables as the SQLite and PostgreSQL migrations).
-- Times are BIGINT milliseconds since the Unix epoch (UTC); 90 kHz values are MPEG-TS clock ticks.
-- Keys use a binary collation so stream names and SIMs compare case-sensitively, as on the other backends.


CREATE TABLE devices (
    sim                  VARCHAR(20)  NOT NULL PRIMARY KEY COMMENT 'device SIM number as sent in the JT/T 808 header (12 BCD digits in 2013, 20 in 2019); the natural key shared by all processes',
    plate                VARCHAR(32)  NULL COMMENT 'licence plate from the 0x0100 registration, NULL until the device registers',
    auth_code            VARCHAR(64)  NULL COMMENT 'authentication code the platform issued in 0x8100; the device presents it in 0x0102',
    registered_ms        BIGINT       NULL COMMENT 'host time of the latest registration (0x0100) that set plate/auth_code',
    first_seen_ms        BIGINT       NOT NULL COMMENT 'host time the catalog first heard of this device',
    last_seen_ms         BIGINT       NOT NULL COMMENT 'host time of the latest message from the device (never moves backwards)'
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE positions (
    sim                  VARCHAR(20)  NOT NULL COMMENT 'device that reported the fix',
    device_time_ms       BIGINT       NOT NULL COMMENT 'fix time from the device clock (808 BCD time, converted to Unix ms); with sim the natural key, so re-sent batches (0x0704) are de-duplicated',
    lat                  DOUBLE       NOT NULL COMMENT 'latitude in degrees, WGS-84, south negative',
    lon                  DOUBLE       NOT NULL COMMENT 'longitude in degrees, WGS-84, west negative',
    speed_kmh            FLOAT        NOT NULL COMMENT 'ground speed in km/h (808 sends 1/10 km/h)',
    heading              INTEGER      NOT NULL COMMENT 'course over ground in degrees, 0 = north, clockwise, 0..359',
    altitude_m           INTEGER      NOT NULL COMMENT 'altitude in metres above sea level',
    alarm                BIGINT       NOT NULL COMMENT '808 alarm flag bits (u32) as sent',
    status               BIGINT       NOT NULL COMMENT '808 status bits (u32) as sent',
    PRIMARY KEY (sim, device_time_ms),
    FOREIGN KEY (sim) REFERENCES devices(sim)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE streams (
    name                 VARCHAR(64)  NOT NULL PRIMARY KEY COMMENT 'stream name: <SIM>_<channel> for devices, [A-Za-z0-9_-]{1,64} for raw streams; names the directory live/<name>/',
    sim                  VARCHAR(20)  NULL COMMENT 'device of a device stream, NULL for raw streams',
    channel              INTEGER      NULL COMMENT 'JT/T 1078 logical channel number, NULL for raw streams',
    created_ms           BIGINT       NOT NULL COMMENT 'host time the stream was first catalogued',
    UNIQUE (sim, channel),
    FOREIGN KEY (sim) REFERENCES devices(sim)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE sessions (
    id                   VARCHAR(128) NOT NULL PRIMARY KEY COMMENT 'producer-generated id (stream, start ms, random suffix) so it is unique across processes without a round trip',
    stream               VARCHAR(64)  NOT NULL COMMENT 'stream the session fed',
    sim                  VARCHAR(20)  NULL COMMENT 'copy of streams.sim so per-device session queries need no join',
    channel              INTEGER      NULL COMMENT 'copy of streams.channel',
    kind                 VARCHAR(32)  NOT NULL COMMENT 'live video (0x9101) or device playback upload (0x9201)',
    started_ms           BIGINT       NOT NULL COMMENT 'host time the connection started feeding the stream',
    ended_ms             BIGINT       NULL COMMENT 'host time the session ended; NULL while it is live',
    host                 VARCHAR(255) NOT NULL COMMENT 'host name / instance of the ingest process that owns it, used to close its sessions after a crash',
    CHECK (kind IN ('live', 'playback')),
    FOREIGN KEY (stream) REFERENCES streams(name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX sessions_stream_started ON sessions (stream, started_ms);
CREATE INDEX sessions_sim_started ON sessions (sim, started_ms);
CREATE INDEX sessions_ended ON sessions (ended_ms);

CREATE TABLE segments (
    stream               VARCHAR(64)  NOT NULL COMMENT 'stream the segment belongs to',
    sequence             BIGINT       NOT NULL COMMENT 'HLS media sequence number within the stream (also the file name <sequence>.ts); with stream the key, matching the file 1:1',
    session_id           VARCHAR(128) NOT NULL COMMENT 'session (recording) that produced it',
    start_pts            BIGINT       NOT NULL COMMENT 'PTS of the first frame in 90 kHz ticks (64-bit timeline, not wrapped at 33 bits)',
    duration_90k         BIGINT       NOT NULL COMMENT 'segment duration in 90 kHz ticks (EXTINF source)',
    bytes                BIGINT       NOT NULL COMMENT 'size of the .ts file in bytes',
    path                 VARCHAR(255) NOT NULL COMMENT 'file path relative to the data dir, e.g. live/<stream>/<sequence>.ts; never absolute, never with ..',
    program_date_time_ms BIGINT       NOT NULL COMMENT 'EXT-X-PROGRAM-DATE-TIME of the first frame (device clock when known, else host clock)',
    end_ms               BIGINT       NOT NULL COMMENT 'program_date_time_ms + duration, precomputed for time-range queries',
    discontinuity        BOOLEAN      NOT NULL COMMENT 'true when an EXT-X-DISCONTINUITY precedes this segment',
    created_ms           BIGINT       NOT NULL COMMENT 'host time the row was written; retention ages segments by it (device clocks can be wrong)',
    PRIMARY KEY (stream, sequence),
    FOREIGN KEY (stream) REFERENCES streams(name),
    FOREIGN KEY (session_id) REFERENCES sessions(id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX segments_session_sequence ON segments (session_id, sequence);
CREATE INDEX segments_stream_pdt ON segments (stream, program_date_time_ms);
CREATE INDEX segments_created ON segments (created_ms);
CREATE INDEX segments_path ON segments (path);

CREATE TABLE incidents (
    id                   BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY COMMENT 'database-generated id, unique across processes',
    sim                  VARCHAR(20)  NOT NULL COMMENT 'device the incident concerns',
    channel              INTEGER      NOT NULL COMMENT 'video channel, 0 when it concerns the whole device',
    from_ms              BIGINT       NOT NULL COMMENT 'start of the incident time range (device clock)',
    to_ms                BIGINT       NOT NULL COMMENT 'end of the incident time range (device clock); updated while an alarm lasts',
    kind                 VARCHAR(32)  NOT NULL COMMENT 'what happened, e.g. an 808 alarm bit name or ''playback''',
    source               VARCHAR(32)  NOT NULL COMMENT 'who reported it, e.g. ''808-alarm'', ''1078-playback'', ''operator''',
    created_ms           BIGINT       NOT NULL COMMENT 'host time the row was first written',
    UNIQUE (sim, channel, from_ms, kind, source),
    FOREIGN KEY (sim) REFERENCES devices(sim)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX incidents_sim_from ON incidents (sim, from_ms);

CREATE TABLE pending_deletions (
    path                 VARCHAR(255) NOT NULL PRIMARY KEY COMMENT 'file path relative to the data dir whose row was deleted by retention and whose file is still to be removed',
    queued_ms            BIGINT       NOT NULL COMMENT 'host time retention queued it'
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
