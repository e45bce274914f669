ALTER TABLE incidents DROP COLUMN session_id;
DROP INDEX streams_sim_channel;
ALTER TABLE streams ADD CONSTRAINT streams_sim_channel_key UNIQUE (sim, channel);
