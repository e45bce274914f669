-- Step 3. Recordings fetched from the device (JT/T 1078 0x9201 playback requests) and the video
-- of every alarm. Incidents learn whether the alarm is still in progress (an open incident's
-- playlist is an EVENT playlist without ENDLIST), which alarm bits and where, and the state of
-- their video when it has to be fetched from the device. Playback requests get a table of their
-- own, so a request that never produced an upload is still on record with the reason.
-- playbacks has 16 columns, the most a diesel table! may have without diesel's 32-column-tables
-- feature (when it changed state is not kept; its session tells when the upload ran).
ALTER TABLE incidents
    ADD COLUMN open         BOOLEAN          NOT NULL DEFAULT false,
    ADD COLUMN alarm        BIGINT           NOT NULL DEFAULT 0,
    ADD COLUMN lat          DOUBLE PRECISION NULL,
    ADD COLUMN lon          DOUBLE PRECISION NULL,
    ADD COLUMN video_state  VARCHAR(32)      NULL,
    ADD COLUMN video_reason TEXT             NULL;
COMMENT ON COLUMN incidents.source IS 'who reported it, e.g. ''808-alarm'', ''jt1078'', ''operator''';
COMMENT ON COLUMN incidents.open IS 'true while the alarm is still in progress (to_ms grows, the VOD playlist has no ENDLIST); a closed incident is never reopened';
COMMENT ON COLUMN incidents.alarm IS '808 alarm flag bits (u32) the incident is about, 0 when it is not an alarm';
COMMENT ON COLUMN incidents.lat IS 'latitude in degrees (WGS-84, south negative) where it happened, NULL when unknown';
COMMENT ON COLUMN incidents.lon IS 'longitude in degrees (WGS-84, west negative) where it happened, NULL when unknown';
COMMENT ON COLUMN incidents.video_state IS 'where its video stands: ''recorded'' (live recording), ''requested'', ''uploading'', ''fetched'', ''failed'', ''waiting_online''; NULL when nobody looked yet';
COMMENT ON COLUMN incidents.video_reason IS 'why the video is missing or short (e.g. the device refused), for the operator; NULL when there is nothing to say';

CREATE TABLE playbacks (
    id                   VARCHAR(128)     NOT NULL PRIMARY KEY, -- producer-generated id of the request (like a session id), unique across processes; the request is upserted by it as its state changes
    sim                  VARCHAR(20)      NOT NULL REFERENCES devices(sim), -- device asked to play back
    channel              INTEGER          NOT NULL, -- device channel played back
    stream               VARCHAR(64)      NOT NULL, -- stream the upload feeds (<SIM>_<channel>_pb); no foreign key: the stream row appears only when the device connects, which it may never do
    from_ms              BIGINT           NOT NULL, -- start of the recorded span asked for (Unix ms; sent to the device as BCD time in its zone)
    to_ms                BIGINT           NOT NULL, -- end of the recorded span asked for (Unix ms)
    av_type              INTEGER          NOT NULL, -- 0x9201 AV type: 0 audio and video, 1 audio, 2 video, 3 video or audio and video
    stream_type          INTEGER          NOT NULL, -- 0x9201 stream type: 0 main or sub, 1 main, 2 sub
    storage_type         INTEGER          NOT NULL, -- 0x9201 storage type: 0 any, 1 main storage, 2 disaster-recovery storage
    mode                 INTEGER          NOT NULL, -- 0x9201 playback mode: 0 normal, 1 fast forward, 2 keyframe rewind, 3 keyframes only, 4 single frame
    speed                INTEGER          NOT NULL, -- 0x9201 speed code: 0 none, 1..5 = 1x, 2x, 4x, 8x, 16x
    requested_ms         BIGINT           NOT NULL, -- host time the request was made
    state                VARCHAR(16)      NOT NULL CHECK (state IN ('requested', 'uploading', 'complete', 'stopped', 'failed')), -- where the request stands; never moves back (a late 'requested' does not undo 'uploading' or an end state)
    reason               TEXT             NULL, -- why it failed, stopped or came back short, for the operator; NULL when there is nothing to say
    session_id           VARCHAR(128)     NULL, -- session holding the upload once the device connected; no foreign key: retention may delete the session first
    incident_id          BIGINT           NULL -- incident the video was fetched for, NULL when an operator asked; no foreign key, like session_id
);
COMMENT ON COLUMN playbacks.id IS 'producer-generated id of the request (like a session id), unique across processes; the request is upserted by it as its state changes';
COMMENT ON COLUMN playbacks.sim IS 'device asked to play back';
COMMENT ON COLUMN playbacks.channel IS 'device channel played back';
COMMENT ON COLUMN playbacks.stream IS 'stream the upload feeds (<SIM>_<channel>_pb); no foreign key: the stream row appears only when the device connects, which it may never do';
COMMENT ON COLUMN playbacks.from_ms IS 'start of the recorded span asked for (Unix ms; sent to the device as BCD time in its zone)';
COMMENT ON COLUMN playbacks.to_ms IS 'end of the recorded span asked for (Unix ms)';
COMMENT ON COLUMN playbacks.av_type IS '0x9201 AV type: 0 audio and video, 1 audio, 2 video, 3 video or audio and video';
COMMENT ON COLUMN playbacks.stream_type IS '0x9201 stream type: 0 main or sub, 1 main, 2 sub';
COMMENT ON COLUMN playbacks.storage_type IS '0x9201 storage type: 0 any, 1 main storage, 2 disaster-recovery storage';
COMMENT ON COLUMN playbacks.mode IS '0x9201 playback mode: 0 normal, 1 fast forward, 2 keyframe rewind, 3 keyframes only, 4 single frame';
COMMENT ON COLUMN playbacks.speed IS '0x9201 speed code: 0 none, 1..5 = 1x, 2x, 4x, 8x, 16x';
COMMENT ON COLUMN playbacks.requested_ms IS 'host time the request was made';
COMMENT ON COLUMN playbacks.state IS 'where the request stands; never moves back (a late ''requested'' does not undo ''uploading'' or an end state)';
COMMENT ON COLUMN playbacks.reason IS 'why it failed, stopped or came back short, for the operator; NULL when there is nothing to say';
COMMENT ON COLUMN playbacks.session_id IS 'session holding the upload once the device connected; no foreign key: retention may delete the session first';
COMMENT ON COLUMN playbacks.incident_id IS 'incident the video was fetched for, NULL when an operator asked; no foreign key, like session_id';
CREATE INDEX playbacks_sim_from ON playbacks (sim, from_ms);
CREATE INDEX playbacks_session ON playbacks (session_id);
