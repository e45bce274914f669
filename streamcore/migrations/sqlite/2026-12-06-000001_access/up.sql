-- Step 4. Who may see and command what. What a terminal said about itself when it registered
-- (0x0100), settings shared by every process (the persistent JT/T 808 auth secret, hlsd's
-- session key), the SIM allow-list, operator accounts with their API keys and grants, device
-- groups, the audit log, and who is watching which stream (for the automatic 0x9102).

CREATE TABLE terminals (
    sim            TEXT    NOT NULL PRIMARY KEY REFERENCES devices(sim), -- device that registered (one row per SIM, replaced by every registration)
    maker_id       TEXT    NOT NULL,             -- manufacturer id from 0x0100 (5 bytes in 2013, 11 in 2019)
    model          TEXT    NOT NULL,             -- terminal model from 0x0100 (20 bytes in 2013, 30 in 2019)
    terminal_id    TEXT    NOT NULL,             -- terminal id from 0x0100 (7 bytes in 2013, 30 in 2019)
    plate_color    INTEGER NOT NULL,             -- plate colour code from 0x0100 (JT/T 415: 1 blue, 2 yellow, 3 black, 4 white, 9 other; 0 = no plate, VIN sent instead)
    province       INTEGER NOT NULL,             -- province code from 0x0100 (GB/T 2260 first two digits)
    city           INTEGER NOT NULL,             -- city/county code from 0x0100 (GB/T 2260 last four digits)
    registered_ms  BIGINT  NOT NULL              -- host time of the registration these values come from
);

CREATE TABLE settings (
    name           TEXT    NOT NULL PRIMARY KEY, -- setting name, e.g. 'jt808_auth_secret' or 'hlsd_session_key'
    value          TEXT    NOT NULL,             -- its value; secrets are stored as written (protect the database like the config file)
    updated_ms     BIGINT  NOT NULL              -- host time it was last written
);

CREATE TABLE allowed_sims (
    sim            TEXT    NOT NULL PRIMARY KEY, -- SIM (12 or 20 digits) allowed to register; while this table and the config's list are both empty, every SIM is
    note           TEXT    NULL,                 -- what the operator wrote about it (vehicle, customer), NULL when nothing
    added_ms       BIGINT  NOT NULL              -- host time it was allowed
);

CREATE TABLE users (
    name           TEXT    NOT NULL PRIMARY KEY, -- login name, [A-Za-z0-9_.@-]{1,64}
    role           TEXT    NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')), -- viewer watches what it is granted; operator also starts/stops video and asks devices for recordings; admin does everything and manages users and devices
    password_hash  TEXT    NOT NULL,             -- Argon2id PHC string (salt and parameters included); never the password
    created_ms     BIGINT  NOT NULL,             -- host time the account was made
    disabled       BOOLEAN NOT NULL DEFAULT false -- true refuses its logins, sessions and API keys without deleting its audit trail
);

CREATE TABLE api_keys (
    id             TEXT    NOT NULL PRIMARY KEY, -- public part of the key (the key is fk_<id>_<secret>), used to find the row
    user_name      TEXT    NOT NULL REFERENCES users(name) ON DELETE CASCADE, -- account the key acts as, with that account's role and grants
    secret_sha256  TEXT    NOT NULL,             -- hex SHA-256 of the secret part (256 random bits, so a fast hash is enough); the secret itself is shown once
    label          TEXT    NULL,                 -- what the key is for, e.g. the script using it
    created_ms     BIGINT  NOT NULL              -- host time the key was made
);

CREATE TABLE grants (
    user_name      TEXT    NOT NULL REFERENCES users(name) ON DELETE CASCADE, -- account that may see what target names (operators may also command it)
    target         TEXT    NOT NULL,             -- a SIM, 'group:<name>' (every device of a group) or '*' (every device and raw stream)
    PRIMARY KEY (user_name, target)
) WITHOUT ROWID;

CREATE TABLE device_groups (
    sim            TEXT    NOT NULL,             -- device in the group; no foreign key, so a vehicle can be grouped before it first connects
    group_name     TEXT    NOT NULL,             -- group name, granted as 'group:<name>'
    PRIMARY KEY (sim, group_name)
) WITHOUT ROWID;
CREATE INDEX device_groups_group ON device_groups (group_name);

CREATE TABLE audit_log (
    id             INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, -- database-generated id, in the order entries were written
    at_ms          BIGINT  NOT NULL,             -- host time of the action
    actor          TEXT    NOT NULL,             -- who: a user name, 'anonymous', 'apikey:<id>' or 'system' (automatic stops)
    action         TEXT    NOT NULL,             -- what: e.g. 'live.start', 'live.stop', 'live.auto_stop', 'playback.request', 'playback.control', 'token.mint', 'login', 'login.failed', 'user.add'
    target         TEXT    NOT NULL,             -- on what: a stream, a device/channel, a user name
    detail         TEXT    NULL,                 -- outcome or parameters, for the reader; NULL when nothing
    client         TEXT    NULL                  -- peer address of the request, NULL for the system
);
CREATE INDEX audit_log_at ON audit_log (at_ms);

CREATE TABLE viewers (
    stream         TEXT    NOT NULL,             -- live stream somebody watches
    instance       TEXT    NOT NULL,             -- hlsd instance that served the playlist (host and port), so several hlsd never overwrite each other
    last_ms        BIGINT  NOT NULL,             -- host time that instance last served the stream's playlist; ingestd stops the device's video (0x9102) once every row is older than the idle limit
    PRIMARY KEY (stream, instance)
) WITHOUT ROWID;
