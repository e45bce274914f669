-- Step 2. A device channel has two streams: its live video <SIM>_<ch> and the recordings it
-- plays back to us, <SIM>_<ch>_pb. UNIQUE (sim, channel) made the second one's row vanish (an
-- insert-or-ignore) and its sessions then failed their foreign key; it becomes a plain index.
-- Incidents can name the session that holds their video (a playback upload).
-- SQLite alters neither constraints nor (readably) columns: both tables are rebuilt, with
-- foreign keys off while the old ones are dropped.
PRAGMA foreign_keys = OFF;
BEGIN;
CREATE TABLE streams_step2 (
    name           TEXT    NOT NULL PRIMARY KEY, -- stream name: <SIM>_<channel> (live) or <SIM>_<channel>_pb (playback uploads) for devices, [A-Za-z0-9_-]{1,64} for raw streams; names the directory live/<name>/
    sim            TEXT    NULL REFERENCES devices(sim), -- device of a device stream, NULL for raw streams
    channel        INTEGER NULL,                 -- JT/T 1078 logical channel number, NULL for raw streams; a channel has a live and a playback stream
    created_ms     BIGINT  NOT NULL              -- host time the stream was first catalogued
);
INSERT INTO streams_step2 (name, sim, channel, created_ms)
    SELECT name, sim, channel, created_ms FROM streams;
DROP TABLE streams;
ALTER TABLE streams_step2 RENAME TO streams;
CREATE INDEX streams_sim_channel ON streams (sim, channel);

CREATE TABLE incidents_step2 (
    id             INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, -- database-generated id, unique across processes
    sim            TEXT    NOT NULL REFERENCES devices(sim), -- device the incident concerns
    channel        INTEGER NOT NULL,             -- video channel, 0 when it concerns the whole device
    from_ms        BIGINT  NOT NULL,             -- start of the incident time range (device clock)
    to_ms          BIGINT  NOT NULL,             -- end of the incident time range (device clock); updated while an alarm lasts
    kind           TEXT    NOT NULL,             -- what happened, e.g. an 808 alarm bit name or 'playback'
    source         TEXT    NOT NULL,             -- who reported it, e.g. '808-alarm', 'jt1078', 'operator'
    created_ms     BIGINT  NOT NULL,             -- host time the row was first written
    session_id     TEXT    NULL,                 -- session whose segments are the incident's video (a playback upload), NULL when the video is found by time on the channel's live stream; no foreign key: retention may delete the session first
    UNIQUE (sim, channel, from_ms, kind, source)
);
INSERT INTO incidents_step2 (id, sim, channel, from_ms, to_ms, kind, source, created_ms)
    SELECT id, sim, channel, from_ms, to_ms, kind, source, created_ms FROM incidents;
DROP TABLE incidents;
ALTER TABLE incidents_step2 RENAME TO incidents;
CREATE INDEX incidents_sim_from ON incidents (sim, from_ms);
COMMIT;
PRAGMA foreign_keys = ON;
