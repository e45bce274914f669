-- Step 2. A device channel has two streams: its live video <SIM>_<ch> and the recordings it
-- plays back to us, <SIM>_<ch>_pb. UNIQUE (sim, channel) made the second one's row vanish (an
-- insert-or-ignore) and its sessions then failed their foreign key; it becomes a plain index.
-- Incidents can name the session that holds their video (a playback upload).
ALTER TABLE streams DROP CONSTRAINT streams_sim_channel_key;
CREATE INDEX streams_sim_channel ON streams (sim, channel);
COMMENT ON COLUMN streams.name IS 'stream name: <SIM>_<channel> (live) or <SIM>_<channel>_pb (playback uploads) for devices, [A-Za-z0-9_-]{1,64} for raw streams; names the directory live/<name>/';
COMMENT ON COLUMN streams.channel IS 'JT/T 1078 logical channel number, NULL for raw streams; a channel has a live and a playback stream';
ALTER TABLE incidents ADD COLUMN session_id VARCHAR(128) NULL;
COMMENT ON COLUMN incidents.session_id IS 'session whose segments are the incident''s video (a playback upload), NULL when the video is found by time on the channel''s live stream; no foreign key: retention may delete the session first';
