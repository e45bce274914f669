ALTER TABLE incidents DROP COLUMN session_id;
CREATE UNIQUE INDEX sim ON streams (sim, channel);
DROP INDEX streams_sim_channel ON streams;
