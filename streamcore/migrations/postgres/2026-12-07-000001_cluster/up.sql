-- Step 5 (PostgreSQL). Many ingestd on one catalog: each registers itself and beats a
-- heartbeat, and the node holding a device's JT/T 808 session is recorded, so any hlsd sends
-- that device's commands to the right ingestd.

CREATE TABLE ingest_nodes (
    id             VARCHAR(128) NOT NULL PRIMARY KEY,
    control_url    TEXT         NOT NULL,
    media_addr     VARCHAR(128) NULL,
    started_ms     BIGINT       NOT NULL,
    heartbeat_ms   BIGINT       NOT NULL
);
COMMENT ON COLUMN ingest_nodes.id IS 'instance id (--instance-id; default host name and JT/T 808 port)';
COMMENT ON COLUMN ingest_nodes.control_url IS 'base URL of its control API as other machines reach it (hlsd forwards device commands there)';
COMMENT ON COLUMN ingest_nodes.media_addr IS 'public JT/T 1078 address it tells devices to send video to (host:port), NULL when it cannot tell';
COMMENT ON COLUMN ingest_nodes.started_ms IS 'host time the instance started';
COMMENT ON COLUMN ingest_nodes.heartbeat_ms IS 'host time of its last heartbeat; a node silent for three heartbeats counts as gone';

CREATE TABLE device_nodes (
    sim            VARCHAR(20)  NOT NULL PRIMARY KEY,
    node           VARCHAR(128) NOT NULL,
    since_ms       BIGINT       NOT NULL
);
COMMENT ON COLUMN device_nodes.sim IS 'device whose JT/T 808 session a node holds';
COMMENT ON COLUMN device_nodes.node IS 'ingest_nodes.id of the node holding it (the newest connection wins)';
COMMENT ON COLUMN device_nodes.since_ms IS 'host time that node took the session';
