-- Step 6 (PostgreSQL). One writer per stream across nodes that share an object store: the node
-- writing a stream holds its lease, and every upload it makes is checked against the lease's
-- fencing number, so a node that lost the stream (its device reconnected elsewhere) stops
-- writing.

CREATE TABLE stream_leases (
    stream             VARCHAR(128) NOT NULL PRIMARY KEY,
    node               VARCHAR(128) NOT NULL,
    fence              BIGINT       NOT NULL,
    source_started_ms  BIGINT       NOT NULL,
    last_sequence      BIGINT       NULL,
    renewed_ms         BIGINT       NOT NULL
);
COMMENT ON COLUMN stream_leases.stream IS 'stream name (live/<stream>/ in the store)';
COMMENT ON COLUMN stream_leases.node IS 'ingest_nodes.id of the node writing the stream';
COMMENT ON COLUMN stream_leases.fence IS 'fencing number: raised each time another node takes the stream; uploads carrying an older one are refused';
COMMENT ON COLUMN stream_leases.source_started_ms IS 'host time the writer''s source connection started; a newer connection takes the stream, an older one cannot take it back';
COMMENT ON COLUMN stream_leases.last_sequence IS 'highest media sequence number uploaded under any fence; a new writer starts above it, so no two writers name a segment alike';
COMMENT ON COLUMN stream_leases.renewed_ms IS 'host time of the holder''s last checked upload (for operators; liveness comes from the node''s heartbeat)';
