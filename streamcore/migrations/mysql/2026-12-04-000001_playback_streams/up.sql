-- Step 2. A device channel has two streams: its live video <SIM>_<ch> and the recordings it
-- plays back to us, <SIM>_<ch>_pb. UNIQUE (sim, channel) made the second one's row vanish (an
-- insert-or-ignore) and its sessions then failed their foreign key; it becomes a plain index.
-- MySQL and MariaDB name an unnamed UNIQUE index after its first column; the new index is
-- created first because the foreign key on sim needs one.
-- Incidents can name the session that holds their video (a playback upload).
CREATE INDEX streams_sim_channel ON streams (sim, channel);
ALTER TABLE streams DROP INDEX sim;
ALTER TABLE streams MODIFY channel INTEGER NULL COMMENT 'JT/T 1078 logical channel number, NULL for raw streams; a channel has a live and a playback stream';
ALTER TABLE incidents ADD COLUMN session_id VARCHAR(128) NULL COMMENT 'session whose segments are the incident''s video (a playback upload), NULL when the video is found by time on the channel''s live stream; no foreign key: retention may delete the session first';
