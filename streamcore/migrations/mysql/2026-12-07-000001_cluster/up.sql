-- Step 5 (MySQL/MariaDB). Many ingestd on one catalog: each registers itself and beats a
-- heartbeat, and the node holding a device's JT/T 808 session is recorded, so any hlsd sends
-- that device's commands to the right ingestd.

CREATE TABLE ingest_nodes (
    id             VARCHAR(128) NOT NULL PRIMARY KEY COMMENT 'instance id (--instance-id; default host name and JT/T 808 port)',
    control_url    TEXT         NOT NULL COMMENT 'base URL of its control API as other machines reach it (hlsd forwards device commands there)',
    media_addr     VARCHAR(128) NULL COMMENT 'public JT/T 1078 address it tells devices to send video to (host:port), NULL when it cannot tell',
    started_ms     BIGINT       NOT NULL COMMENT 'host time the instance started',
    heartbeat_ms   BIGINT       NOT NULL COMMENT 'host time of its last heartbeat; a node silent for three heartbeats counts as gone'
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE device_nodes (
    sim            VARCHAR(20)  NOT NULL PRIMARY KEY COMMENT 'device whose JT/T 808 session a node holds',
    node           VARCHAR(128) NOT NULL COMMENT 'ingest_nodes.id of the node holding it (the newest connection wins)',
    since_ms       BIGINT       NOT NULL COMMENT 'host time that node took the session'
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
