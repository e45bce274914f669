-- Step 3. Recordings fetched from the device (JT/T 1078 0x9201 playback requests) and the video
-- of every alarm. Incidents learn whether the alarm is still in progress (an open incident's
-- playlist is an EVENT playlist without ENDLIST), which alarm bits and where, and the state of
-- their video when it has to be fetched from the device. Playback requests get a table of their
-- own, so a request that never produced an upload is still on record with the reason.
-- playbacks has 16 columns, the most a diesel table! may have without diesel's 32-column-tables
-- feature (when it changed state is not kept; its session tells when the upload ran).
-- SQLite appends an added column after the table constraints, where its comment would be lost:
-- incidents is rebuilt instead (no table refers to it, so foreign keys may stay on).
CREATE TABLE incidents_step3 (
    id             INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, -- database-generated id, unique across processes
    sim            TEXT    NOT NULL REFERENCES devices(sim), -- device the incident concerns
    channel        INTEGER NOT NULL,             -- video channel, 0 when it concerns the whole device
    from_ms        BIGINT  NOT NULL,             -- start of the incident time range (device clock)
    to_ms          BIGINT  NOT NULL,             -- end of the incident time range (device clock); updated while an alarm lasts
    kind           TEXT    NOT NULL,             -- what happened, e.g. an 808 alarm bit name or 'playback'
    source         TEXT    NOT NULL,             -- who reported it, e.g. '808-alarm', 'jt1078', 'operator'
    created_ms     BIGINT  NOT NULL,             -- host time the row was first written
    session_id     TEXT    NULL,                 -- session whose segments are the incident's video (a playback upload), NULL when the video is found by time on the channel's live stream; no foreign key: retention may delete the session first
    open           BOOLEAN NOT NULL DEFAULT false, -- true while the alarm is still in progress (to_ms grows, the VOD playlist has no ENDLIST); a closed incident is never reopened
    alarm          BIGINT  NOT NULL DEFAULT 0,   -- 808 alarm flag bits (u32) the incident is about, 0 when it is not an alarm
    lat            DOUBLE  NULL,                 -- latitude in degrees (WGS-84, south negative) where it happened, NULL when unknown
    lon            DOUBLE  NULL,                 -- longitude in degrees (WGS-84, west negative) where it happened, NULL when unknown
    video_state    TEXT    NULL,                 -- where its video stands: 'recorded' (live recording), 'requested', 'uploading', 'fetched', 'failed', 'waiting_online'; NULL when nobody looked yet
    video_reason   TEXT    NULL,                 -- why the video is missing or short (e.g. the device refused), for the operator; NULL when there is nothing to say
    UNIQUE (sim, channel, from_ms, kind, source)
);
INSERT INTO incidents_step3 (id, sim, channel, from_ms, to_ms, kind, source, created_ms, session_id)
    SELECT id, sim, channel, from_ms, to_ms, kind, source, created_ms, session_id FROM incidents;
DROP TABLE incidents;
ALTER TABLE incidents_step3 RENAME TO incidents;
CREATE INDEX incidents_sim_from ON incidents (sim, from_ms);

CREATE TABLE playbacks (
    id             TEXT    NOT NULL PRIMARY KEY, -- producer-generated id of the request (like a session id), unique across processes; the request is upserted by it as its state changes
    sim            TEXT    NOT NULL REFERENCES devices(sim), -- device asked to play back
    channel        INTEGER NOT NULL,             -- device channel played back
    stream         TEXT    NOT NULL,             -- stream the upload feeds (<SIM>_<channel>_pb); no foreign key: the stream row appears only when the device connects, which it may never do
    from_ms        BIGINT  NOT NULL,             -- start of the recorded span asked for (Unix ms; sent to the device as BCD time in its zone)
    to_ms          BIGINT  NOT NULL,             -- end of the recorded span asked for (Unix ms)
    av_type        INTEGER NOT NULL,             -- 0x9201 AV type: 0 audio and video, 1 audio, 2 video, 3 video or audio and video
    stream_type    INTEGER NOT NULL,             -- 0x9201 stream type: 0 main or sub, 1 main, 2 sub
    storage_type   INTEGER NOT NULL,             -- 0x9201 storage type: 0 any, 1 main storage, 2 disaster-recovery storage
    mode           INTEGER NOT NULL,             -- 0x9201 playback mode: 0 normal, 1 fast forward, 2 keyframe rewind, 3 keyframes only, 4 single frame
    speed          INTEGER NOT NULL,             -- 0x9201 speed code: 0 none, 1..5 = 1x, 2x, 4x, 8x, 16x
    requested_ms   BIGINT  NOT NULL,             -- host time the request was made
    state          TEXT    NOT NULL CHECK (state IN ('requested', 'uploading', 'complete', 'stopped', 'failed')), -- where the request stands; never moves back (a late 'requested' does not undo 'uploading' or an end state)
    reason         TEXT    NULL,                 -- why it failed, stopped or came back short, for the operator; NULL when there is nothing to say
    session_id     TEXT    NULL,                 -- session holding the upload once the device connected; no foreign key: retention may delete the session first
    incident_id    BIGINT  NULL                  -- incident the video was fetched for, NULL when an operator asked; no foreign key, like session_id
);
CREATE INDEX playbacks_sim_from ON playbacks (sim, from_ms);
CREATE INDEX playbacks_session ON playbacks (session_id);
