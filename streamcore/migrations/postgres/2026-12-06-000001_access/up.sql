-- Step 4 (PostgreSQL). Who may see and command what. What a terminal said about itself when it registered
-- (0x0100), settings shared by every process (the persistent JT/T 808 auth secret, hlsd's
-- session key), the SIM allow-list, operator accounts with their API keys and grants, device
-- groups, the audit log, and who is watching which stream (for the automatic 0x9102).

CREATE TABLE terminals (
    sim            VARCHAR(20)  NOT NULL PRIMARY KEY REFERENCES devices(sim),
    maker_id       VARCHAR(16)  NOT NULL,
    model          VARCHAR(40)  NOT NULL,
    terminal_id    VARCHAR(40)  NOT NULL,
    plate_color    INTEGER      NOT NULL,
    province       INTEGER      NOT NULL,
    city           INTEGER      NOT NULL,
    registered_ms  BIGINT       NOT NULL
);
COMMENT ON COLUMN terminals.sim IS 'device that registered (one row per SIM, replaced by every registration)';
COMMENT ON COLUMN terminals.maker_id IS 'manufacturer id from 0x0100 (5 bytes in 2013, 11 in 2019)';
COMMENT ON COLUMN terminals.model IS 'terminal model from 0x0100 (20 bytes in 2013, 30 in 2019)';
COMMENT ON COLUMN terminals.terminal_id IS 'terminal id from 0x0100 (7 bytes in 2013, 30 in 2019)';
COMMENT ON COLUMN terminals.plate_color IS 'plate colour code from 0x0100 (JT/T 415: 1 blue, 2 yellow, 3 black, 4 white, 9 other; 0 = no plate, VIN sent instead)';
COMMENT ON COLUMN terminals.province IS 'province code from 0x0100 (GB/T 2260 first two digits)';
COMMENT ON COLUMN terminals.city IS 'city/county code from 0x0100 (GB/T 2260 last four digits)';
COMMENT ON COLUMN terminals.registered_ms IS 'host time of the registration these values come from';

CREATE TABLE settings (
    name           VARCHAR(64)  NOT NULL PRIMARY KEY,
    value          TEXT         NOT NULL,
    updated_ms     BIGINT       NOT NULL
);
COMMENT ON COLUMN settings.name IS 'setting name, e.g. ''jt808_auth_secret'' or ''hlsd_session_key''';
COMMENT ON COLUMN settings.value IS 'its value; secrets are stored as written (protect the database like the config file)';
COMMENT ON COLUMN settings.updated_ms IS 'host time it was last written';

CREATE TABLE allowed_sims (
    sim            VARCHAR(20)  NOT NULL PRIMARY KEY,
    note           TEXT         NULL,
    added_ms       BIGINT       NOT NULL
);
COMMENT ON COLUMN allowed_sims.sim IS 'SIM (12 or 20 digits) allowed to register; while this table and the config''s list are both empty, every SIM is';
COMMENT ON COLUMN allowed_sims.note IS 'what the operator wrote about it (vehicle, customer), NULL when nothing';
COMMENT ON COLUMN allowed_sims.added_ms IS 'host time it was allowed';

CREATE TABLE users (
    name           VARCHAR(64)  NOT NULL PRIMARY KEY,
    role           VARCHAR(16)  NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    password_hash  TEXT         NOT NULL,
    created_ms     BIGINT       NOT NULL,
    disabled       BOOLEAN      NOT NULL DEFAULT false
);
COMMENT ON COLUMN users.name IS 'login name, [A-Za-z0-9_.@-]{1,64}';
COMMENT ON COLUMN users.role IS 'viewer watches what it is granted; operator also starts/stops video and asks devices for recordings; admin does everything and manages users and devices';
COMMENT ON COLUMN users.password_hash IS 'Argon2id PHC string (salt and parameters included); never the password';
COMMENT ON COLUMN users.created_ms IS 'host time the account was made';
COMMENT ON COLUMN users.disabled IS 'true refuses its logins, sessions and API keys without deleting its audit trail';

CREATE TABLE api_keys (
    id             VARCHAR(32)  NOT NULL PRIMARY KEY,
    user_name      VARCHAR(64)  NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    secret_sha256  VARCHAR(64)  NOT NULL,
    label          TEXT         NULL,
    created_ms     BIGINT       NOT NULL
);
COMMENT ON COLUMN api_keys.id IS 'public part of the key (the key is fk_<id>_<secret>), used to find the row';
COMMENT ON COLUMN api_keys.user_name IS 'account the key acts as, with that account''s role and grants';
COMMENT ON COLUMN api_keys.secret_sha256 IS 'hex SHA-256 of the secret part (256 random bits, so a fast hash is enough); the secret itself is shown once';
COMMENT ON COLUMN api_keys.label IS 'what the key is for, e.g. the script using it';
COMMENT ON COLUMN api_keys.created_ms IS 'host time the key was made';

CREATE TABLE grants (
    user_name      VARCHAR(64)  NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    target         VARCHAR(80)  NOT NULL,
    PRIMARY KEY (user_name, target)
);
COMMENT ON COLUMN grants.user_name IS 'account that may see what target names (operators may also command it)';
COMMENT ON COLUMN grants.target IS 'a SIM, ''group:<name>'' (every device of a group) or ''*'' (every device and raw stream)';

CREATE TABLE device_groups (
    sim            VARCHAR(20)  NOT NULL,
    group_name     VARCHAR(64)  NOT NULL,
    PRIMARY KEY (sim, group_name)
);
COMMENT ON COLUMN device_groups.sim IS 'device in the group; no foreign key, so a vehicle can be grouped before it first connects';
COMMENT ON COLUMN device_groups.group_name IS 'group name, granted as ''group:<name>''';
CREATE INDEX device_groups_group ON device_groups (group_name);

CREATE TABLE audit_log (
    id             BIGINT       NOT NULL GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    at_ms          BIGINT       NOT NULL,
    actor          VARCHAR(80)  NOT NULL,
    action         VARCHAR(32)  NOT NULL,
    target         VARCHAR(160) NOT NULL,
    detail         TEXT         NULL,
    client         VARCHAR(64)  NULL
);
COMMENT ON COLUMN audit_log.id IS 'database-generated id, in the order entries were written';
COMMENT ON COLUMN audit_log.at_ms IS 'host time of the action';
COMMENT ON COLUMN audit_log.actor IS 'who: a user name, ''anonymous'', ''apikey:<id>'' or ''system'' (automatic stops)';
COMMENT ON COLUMN audit_log.action IS 'what: e.g. ''live.start'', ''live.stop'', ''live.auto_stop'', ''playback.request'', ''playback.control'', ''token.mint'', ''login'', ''login.failed'', ''user.add''';
COMMENT ON COLUMN audit_log.target IS 'on what: a stream, a device/channel, a user name';
COMMENT ON COLUMN audit_log.detail IS 'outcome or parameters, for the reader; NULL when nothing';
COMMENT ON COLUMN audit_log.client IS 'peer address of the request, NULL for the system';
CREATE INDEX audit_log_at ON audit_log (at_ms);

CREATE TABLE viewers (
    stream         VARCHAR(64)  NOT NULL,
    instance       VARCHAR(128) NOT NULL,
    last_ms        BIGINT       NOT NULL,
    PRIMARY KEY (stream, instance)
);
COMMENT ON COLUMN viewers.stream IS 'live stream somebody watches';
COMMENT ON COLUMN viewers.instance IS 'hlsd instance that served the playlist (host and port), so several hlsd never overwrite each other';
COMMENT ON COLUMN viewers.last_ms IS 'host time that instance last served the stream''s playlist; ingestd stops the device''s video (0x9102) once every row is older than the idle limit';
