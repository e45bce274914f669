-- Step 3. Recordings fetched from the device (JT/T 1078 0x9201 playback requests) and the video
-- of every alarm. Incidents learn whether the alarm is still in progress (an open incident's
-- playlist is an EVENT playlist without ENDLIST), which alarm bits and where, and the state of
-- their video when it has to be fetched from the device. Playback requests get a table of their
-- own, so a request that never produced an upload is still on record with the reason.
-- playbacks has 16 columns, the most a diesel table! may have without diesel's 32-column-tables
-- feature (when it changed state is not kept; its session tells when the upload ran).
ALTER TABLE incidents
    MODIFY source VARCHAR(32) NOT NULL COMMENT 'who reported it, e.g. ''808-alarm'', ''jt1078'', ''operator''',
    ADD COLUMN open         BOOLEAN     NOT NULL DEFAULT false COMMENT 'true while the alarm is still in progress (to_ms grows, the VOD playlist has no ENDLIST); a closed incident is never reopened',
    ADD COLUMN alarm        BIGINT      NOT NULL DEFAULT 0 COMMENT '808 alarm flag bits (u32) the incident is about, 0 when it is not an alarm',
    ADD COLUMN lat          DOUBLE      NULL COMMENT 'latitude in degrees (WGS-84, south negative) where it happened, NULL when unknown',
    ADD COLUMN lon          DOUBLE      NULL COMMENT 'longitude in degrees (WGS-84, west negative) where it happened, NULL when unknown',
    ADD COLUMN video_state  VARCHAR(32) NULL COMMENT 'where its video stands: ''recorded'' (live recording), ''requested'', ''uploading'', ''fetched'', ''failed'', ''waiting_online''; NULL when nobody looked yet',
    ADD COLUMN video_reason TEXT        NULL COMMENT 'why the video is missing or short (e.g. the device refused), for the operator; NULL when there is nothing to say';

CREATE TABLE playbacks (
    id                   VARCHAR(128) NOT NULL PRIMARY KEY COMMENT 'producer-generated id of the request (like a session id), unique across processes; the request is upserted by it as its state changes',
    sim                  VARCHAR(20)  NOT NULL COMMENT 'device asked to play back',
    channel              INTEGER      NOT NULL COMMENT 'device channel played back',
    stream               VARCHAR(64)  NOT NULL COMMENT 'stream the upload feeds (<SIM>_<channel>_pb); no foreign key: the stream row appears only when the device connects, which it may never do',
    from_ms              BIGINT       NOT NULL COMMENT 'start of the recorded span asked for (Unix ms; sent to the device as BCD time in its zone)',
    to_ms                BIGINT       NOT NULL COMMENT 'end of the recorded span asked for (Unix ms)',
    av_type              INTEGER      NOT NULL COMMENT '0x9201 AV type: 0 audio and video, 1 audio, 2 video, 3 video or audio and video',
    stream_type          INTEGER      NOT NULL COMMENT '0x9201 stream type: 0 main or sub, 1 main, 2 sub',
    storage_type         INTEGER      NOT NULL COMMENT '0x9201 storage type: 0 any, 1 main storage, 2 disaster-recovery storage',
    mode                 INTEGER      NOT NULL COMMENT '0x9201 playback mode: 0 normal, 1 fast forward, 2 keyframe rewind, 3 keyframes only, 4 single frame',
    speed                INTEGER      NOT NULL COMMENT '0x9201 speed code: 0 none, 1..5 = 1x, 2x, 4x, 8x, 16x',
    requested_ms         BIGINT       NOT NULL COMMENT 'host time the request was made',
    state                VARCHAR(16)  NOT NULL COMMENT 'where the request stands; never moves back (a late ''requested'' does not undo ''uploading'' or an end state)',
    reason               TEXT         NULL COMMENT 'why it failed, stopped or came back short, for the operator; NULL when there is nothing to say',
    session_id           VARCHAR(128) NULL COMMENT 'session holding the upload once the device connected; no foreign key: retention may delete the session first',
    incident_id          BIGINT       NULL COMMENT 'incident the video was fetched for, NULL when an operator asked; no foreign key, like session_id',
    CHECK (state IN ('requested', 'uploading', 'complete', 'stopped', 'failed')),
    FOREIGN KEY (sim) REFERENCES devices(sim)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX playbacks_sim_from ON playbacks (sim, from_ms);
CREATE INDEX playbacks_session ON playbacks (session_id);
