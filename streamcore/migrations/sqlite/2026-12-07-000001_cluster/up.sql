-- Step 5. Many ingestd on one catalog: each registers itself and beats a heartbeat, and the
-- node holding a device's JT/T 808 session is recorded, so any hlsd sends that device's
-- commands to the right ingestd.

CREATE TABLE ingest_nodes (
    id             TEXT    NOT NULL PRIMARY KEY, -- instance id (--instance-id; default host name and JT/T 808 port)
    control_url    TEXT    NOT NULL,             -- base URL of its control API as other machines reach it (hlsd forwards device commands there)
    media_addr     TEXT    NULL,                 -- public JT/T 1078 address it tells devices to send video to (host:port), NULL when it cannot tell
    started_ms     BIGINT  NOT NULL,             -- host time the instance started
    heartbeat_ms   BIGINT  NOT NULL              -- host time of its last heartbeat; a node silent for three heartbeats counts as gone
) WITHOUT ROWID;

CREATE TABLE device_nodes (
    sim            TEXT    NOT NULL PRIMARY KEY, -- device whose JT/T 808 session a node holds
    node           TEXT    NOT NULL,             -- ingest_nodes.id of the node holding it (the newest connection wins)
    since_ms       BIGINT  NOT NULL              -- host time that node took the session
) WITHOUT ROWID;
