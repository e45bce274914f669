-- Step 4 (MySQL/MariaDB). Who may see and command what. What a terminal said about itself when it registered
-- (0x0100), settings shared by every process (the persistent JT/T 808 auth secret, hlsd's
-- session key), the SIM allow-list, operator accounts with their API keys and grants, device
-- groups, the audit log, and who is watching which stream (for the automatic 0x9102).

CREATE TABLE terminals (
    sim            VARCHAR(20)  NOT NULL PRIMARY KEY COMMENT 'device that registered (one row per SIM, replaced by every registration)',
    maker_id       VARCHAR(16)  NOT NULL COMMENT 'manufacturer id from 0x0100 (5 bytes in 2013, 11 in 2019)',
    model          VARCHAR(40)  NOT NULL COMMENT 'terminal model from 0x0100 (20 bytes in 2013, 30 in 2019)',
    terminal_id    VARCHAR(40)  NOT NULL COMMENT 'terminal id from 0x0100 (7 bytes in 2013, 30 in 2019)',
    plate_color    INTEGER      NOT NULL COMMENT 'plate colour code from 0x0100 (JT/T 415: 1 blue, 2 yellow, 3 black, 4 white, 9 other; 0 = no plate, VIN sent instead)',
    province       INTEGER      NOT NULL COMMENT 'province code from 0x0100 (GB/T 2260 first two digits)',
    city           INTEGER      NOT NULL COMMENT 'city/county code from 0x0100 (GB/T 2260 last four digits)',
    registered_ms  BIGINT       NOT NULL COMMENT 'host time of the registration these values come from',
    FOREIGN KEY (sim) REFERENCES devices(sim)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE settings (
    name           VARCHAR(64)  NOT NULL PRIMARY KEY COMMENT 'setting name, e.g. ''jt808_auth_secret'' or ''hlsd_session_key''',
    value          TEXT         NOT NULL COMMENT 'its value; secrets are stored as written (protect the database like the config file)',
    updated_ms     BIGINT       NOT NULL COMMENT 'host time it was last written'
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE allowed_sims (
    sim            VARCHAR(20)  NOT NULL PRIMARY KEY COMMENT 'SIM (12 or 20 digits) allowed to register; while this table and the config''s list are both empty, every SIM is',
    note           TEXT         NULL COMMENT 'what the operator wrote about it (vehicle, customer), NULL when nothing',
    added_ms       BIGINT       NOT NULL COMMENT 'host time it was allowed'
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE users (
    name           VARCHAR(64)  NOT NULL PRIMARY KEY COMMENT 'login name, [A-Za-z0-9_.@-]{1,64}',
    role           VARCHAR(16)  NOT NULL COMMENT 'viewer watches what it is granted; operator also starts/stops video and asks devices for recordings; admin does everything and manages users and devices',
    password_hash  TEXT         NOT NULL COMMENT 'Argon2id PHC string (salt and parameters included); never the password',
    created_ms     BIGINT       NOT NULL COMMENT 'host time the account was made',
    disabled       BOOLEAN      NOT NULL DEFAULT false COMMENT 'true refuses its logins, sessions and API keys without deleting its audit trail',
    CHECK (role IN ('viewer', 'operator', 'admin'))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE api_keys (
    id             VARCHAR(32)  NOT NULL PRIMARY KEY COMMENT 'public part of the key (the key is fk_<id>_<secret>), used to find the row',
    user_name      VARCHAR(64)  NOT NULL COMMENT 'account the key acts as, with that account''s role and grants',
    secret_sha256  VARCHAR(64)  NOT NULL COMMENT 'hex SHA-256 of the secret part (256 random bits, so a fast hash is enough); the secret itself is shown once',
    label          TEXT         NULL COMMENT 'what the key is for, e.g. the script using it',
    created_ms     BIGINT       NOT NULL COMMENT 'host time the key was made',
    FOREIGN KEY (user_name) REFERENCES users(name) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE grants (
    user_name      VARCHAR(64)  NOT NULL COMMENT 'account that may see what target names (operators may also command it)',
    target         VARCHAR(80)  NOT NULL COMMENT 'a SIM, ''group:<name>'' (every device of a group) or ''*'' (every device and raw stream)',
    FOREIGN KEY (user_name) REFERENCES users(name) ON DELETE CASCADE,
    PRIMARY KEY (user_name, target)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE device_groups (
    sim            VARCHAR(20)  NOT NULL COMMENT 'device in the group; no foreign key, so a vehicle can be grouped before it first connects',
    group_name     VARCHAR(64)  NOT NULL COMMENT 'group name, granted as ''group:<name>''',
    PRIMARY KEY (sim, group_name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX device_groups_group ON device_groups (group_name);

CREATE TABLE audit_log (
    id             BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY COMMENT 'database-generated id, in the order entries were written',
    at_ms          BIGINT       NOT NULL COMMENT 'host time of the action',
    actor          VARCHAR(80)  NOT NULL COMMENT 'who: a user name, ''anonymous'', ''apikey:<id>'' or ''system'' (automatic stops)',
    action         VARCHAR(32)  NOT NULL COMMENT 'what: e.g. ''live.start'', ''live.stop'', ''live.auto_stop'', ''playback.request'', ''playback.control'', ''token.mint'', ''login'', ''login.failed'', ''user.add''',
    target         VARCHAR(160) NOT NULL COMMENT 'on what: a stream, a device/channel, a user name',
    detail         TEXT         NULL COMMENT 'outcome or parameters, for the reader; NULL when nothing',
    client         VARCHAR(64)  NULL COMMENT 'peer address of the request, NULL for the system'
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX audit_log_at ON audit_log (at_ms);

CREATE TABLE viewers (
    stream         VARCHAR(64)  NOT NULL COMMENT 'live stream somebody watches',
    instance       VARCHAR(128) NOT NULL COMMENT 'hlsd instance that served the playlist (host and port), so several hlsd never overwrite each other',
    last_ms        BIGINT       NOT NULL COMMENT 'host time that instance last served the stream''s playlist; ingestd stops the device''s video (0x9102) once every row is older than the idle limit',
    PRIMARY KEY (stream, instance)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
