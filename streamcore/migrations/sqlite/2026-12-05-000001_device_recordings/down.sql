DROP TABLE playbacks;
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
INSERT INTO incidents_step2 (id, sim, channel, from_ms, to_ms, kind, source, created_ms, session_id)
    SELECT id, sim, channel, from_ms, to_ms, kind, source, created_ms, session_id FROM incidents;
DROP TABLE incidents;
ALTER TABLE incidents_step2 RENAME TO incidents;
CREATE INDEX incidents_sim_from ON incidents (sim, from_ms);
