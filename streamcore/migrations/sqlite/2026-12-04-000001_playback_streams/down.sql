PRAGMA foreign_keys = OFF;
BEGIN;
CREATE TABLE incidents_step1 (
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
INSERT INTO incidents_step1 (id, sim, channel, from_ms, to_ms, kind, source, created_ms)
    SELECT id, sim, channel, from_ms, to_ms, kind, source, created_ms FROM incidents;
DROP TABLE incidents;
ALTER TABLE incidents_step1 RENAME TO incidents;
CREATE INDEX incidents_sim_from ON incidents (sim, from_ms);

CREATE TABLE streams_step1 (
    name           TEXT    NOT NULL PRIMARY KEY, -- stream name: <SIM>_<channel> for devices, [A-Za-z0-9_-]{1,64} for raw streams; names the directory live/<name>/
    sim            TEXT    NULL REFERENCES devices(sim), -- device of a device stream, NULL for raw streams
    channel        INTEGER NULL,                 -- JT/T 1078 logical channel number, NULL for raw streams
    created_ms     BIGINT  NOT NULL,             -- host time the stream was first catalogued
    UNIQUE (sim, channel)
);
INSERT INTO streams_step1 (name, sim, channel, created_ms)
    SELECT name, sim, channel, created_ms FROM streams;
DROP TABLE streams;
ALTER TABLE streams_step1 RENAME TO streams;
COMMIT;
PRAGMA foreign_keys = ON;
