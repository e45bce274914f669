-- Step 6. One writer per stream across nodes that share an object store: the node writing a
-- stream holds its lease, and every upload it makes is checked against the lease's fencing
-- number, so a node that lost the stream (its device reconnected elsewhere) stops writing.

CREATE TABLE stream_leases (
    stream             TEXT    NOT NULL PRIMARY KEY, -- stream name (live/<stream>/ in the store)
    node               TEXT    NOT NULL,             -- ingest_nodes.id of the node writing the stream
    fence              BIGINT  NOT NULL,             -- fencing number: raised each time another node takes the stream; uploads carrying an older one are refused
    source_started_ms  BIGINT  NOT NULL,             -- host time the writer's source connection started; a newer connection takes the stream, an older one cannot take it back
    last_sequence      BIGINT  NULL,                 -- highest media sequence number uploaded under any fence; a new writer starts above it, so no two writers name a segment alike
    renewed_ms         BIGINT  NOT NULL              -- host time of the holder's last checked upload (for operators; liveness comes from the node's heartbeat)
) WITHOUT ROWID;
