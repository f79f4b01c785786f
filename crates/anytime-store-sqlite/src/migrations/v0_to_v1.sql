-- Schema version 1: accounts, devices, conversations, delivery.
-- Ids are random 64-bit values stored as SQLite INTEGER (two's complement of the u64).

CREATE TABLE users (
    id               INTEGER PRIMARY KEY,
    username         TEXT    NOT NULL UNIQUE,
    password_hash    TEXT    NOT NULL,
    display_name     TEXT    NOT NULL,
    avatar           TEXT,
    presence_privacy INTEGER NOT NULL,
    created_at_ms    INTEGER NOT NULL
);

CREATE TABLE devices (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users(id),
    name          TEXT    NOT NULL,
    token_hash    BLOB    NOT NULL UNIQUE,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    last_seen_ms  INTEGER NOT NULL
);
CREATE INDEX devices_by_user ON devices(user_id);

CREATE TABLE blocks (
    blocker INTEGER NOT NULL,
    blocked INTEGER NOT NULL,
    PRIMARY KEY (blocker, blocked)
) WITHOUT ROWID;

-- kind: 0 direct, 1 group. direct_key: "<smaller id>:<larger id>" for direct chats, so there is
-- one direct chat per pair of users.
CREATE TABLE conversations (
    id            INTEGER PRIMARY KEY,
    kind          INTEGER NOT NULL,
    name          TEXT    NOT NULL,
    epoch         INTEGER NOT NULL DEFAULT 0,
    last_seq      INTEGER NOT NULL DEFAULT 0,
    direct_key    TEXT UNIQUE,
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE members (
    conv_id      INTEGER NOT NULL,
    user_id      INTEGER NOT NULL,
    admin        INTEGER NOT NULL,
    joined_at_ms INTEGER NOT NULL,
    PRIMARY KEY (conv_id, user_id)
) WITHOUT ROWID;
CREATE INDEX members_by_user ON members(user_id);

-- Per device and conversation: the last seq the device acknowledged.
CREATE TABLE cursors (
    device_id INTEGER NOT NULL,
    conv_id   INTEGER NOT NULL,
    acked_seq INTEGER NOT NULL,
    PRIMARY KEY (device_id, conv_id)
) WITHOUT ROWID;
CREATE INDEX cursors_by_conv ON cursors(conv_id);

-- Stored ciphertext, until every recipient device acknowledged it (or retention ran out).
-- kind: 0 application, 1 commit (epoch = the epoch it was committed from).
CREATE TABLE messages (
    conv_id       INTEGER NOT NULL,
    seq           INTEGER NOT NULL,
    sender        INTEGER NOT NULL,
    sender_device INTEGER NOT NULL,
    msg_id        BLOB    NOT NULL,
    kind          INTEGER NOT NULL,
    epoch         INTEGER NOT NULL,
    sent_at_ms    INTEGER NOT NULL,
    payload       BLOB    NOT NULL
);
CREATE UNIQUE INDEX messages_by_conv_seq ON messages(conv_id, seq);
CREATE INDEX messages_by_time ON messages(sent_at_ms);

-- Idempotency keys of sends and commits; outlive the message by the retention period.
CREATE TABLE sent_ids (
    device_id   INTEGER NOT NULL,
    msg_id      BLOB    NOT NULL,
    conv_id     INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    epoch_after INTEGER,
    at_ms       INTEGER NOT NULL,
    PRIMARY KEY (device_id, msg_id)
) WITHOUT ROWID;
CREATE INDEX sent_ids_by_time ON sent_ids(at_ms);

CREATE TABLE key_packages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id   INTEGER NOT NULL,
    last_resort INTEGER NOT NULL,
    data        BLOB    NOT NULL
);
CREATE INDEX key_packages_by_device ON key_packages(device_id, last_resort, id);

CREATE TABLE welcomes (
    id            INTEGER PRIMARY KEY,
    conv_id       INTEGER NOT NULL,
    payload       BLOB    NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE welcome_targets (
    device_id  INTEGER NOT NULL,
    welcome_id INTEGER NOT NULL,
    PRIMARY KEY (device_id, welcome_id)
) WITHOUT ROWID;
CREATE INDEX welcome_targets_by_welcome ON welcome_targets(welcome_id);

CREATE TABLE invites (
    code          TEXT    PRIMARY KEY,
    conv_id       INTEGER NOT NULL,
    created_by    INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    max_uses      INTEGER NOT NULL,
    uses          INTEGER NOT NULL,
    revoked       INTEGER NOT NULL
);
CREATE INDEX invites_by_conv ON invites(conv_id);
