-- Anytime schema version 1 for PostgreSQL (the same model as the SQLite schema v2).
-- Ids are random 64-bit values stored as BIGINT (two's complement of the u64).
CREATE TABLE users (
    id BIGINT PRIMARY KEY, username TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL,
    display_name TEXT NOT NULL, avatar TEXT, presence_privacy SMALLINT NOT NULL, created_at_ms BIGINT NOT NULL);
CREATE TABLE devices (
    id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, name TEXT NOT NULL, token_hash BYTEA NOT NULL UNIQUE,
    created_at_ms BIGINT NOT NULL, expires_at_ms BIGINT NOT NULL, last_seen_ms BIGINT NOT NULL,
    approved BOOLEAN NOT NULL, link_code TEXT);
CREATE INDEX devices_by_user ON devices(user_id);
CREATE TABLE blocks (blocker BIGINT NOT NULL, blocked BIGINT NOT NULL, PRIMARY KEY (blocker, blocked));
CREATE TABLE conversations (
    id BIGINT PRIMARY KEY, kind SMALLINT NOT NULL, name TEXT NOT NULL, epoch BIGINT NOT NULL DEFAULT 0,
    last_seq BIGINT NOT NULL DEFAULT 0, direct_key TEXT UNIQUE, created_at_ms BIGINT NOT NULL);
CREATE TABLE members (
    conv_id BIGINT NOT NULL, user_id BIGINT NOT NULL, admin BOOLEAN NOT NULL, joined_at_ms BIGINT NOT NULL,
    PRIMARY KEY (conv_id, user_id));
CREATE INDEX members_by_user ON members(user_id);
CREATE TABLE cursors (device_id BIGINT NOT NULL, conv_id BIGINT NOT NULL, acked_seq BIGINT NOT NULL, PRIMARY KEY (device_id, conv_id));
CREATE INDEX cursors_by_conv ON cursors(conv_id);
CREATE TABLE messages (
    conv_id BIGINT NOT NULL, seq BIGINT NOT NULL, sender BIGINT NOT NULL, sender_device BIGINT NOT NULL,
    msg_id BYTEA NOT NULL, kind SMALLINT NOT NULL, epoch BIGINT NOT NULL, sent_at_ms BIGINT NOT NULL,
    payload BYTEA NOT NULL, PRIMARY KEY (conv_id, seq));
CREATE INDEX messages_by_time ON messages(sent_at_ms);
CREATE TABLE sent_ids (
    device_id BIGINT NOT NULL, msg_id BYTEA NOT NULL, conv_id BIGINT NOT NULL, seq BIGINT NOT NULL,
    epoch_after BIGINT, at_ms BIGINT NOT NULL, PRIMARY KEY (device_id, msg_id));
CREATE INDEX sent_ids_by_time ON sent_ids(at_ms);
CREATE TABLE key_packages (id BIGSERIAL PRIMARY KEY, device_id BIGINT NOT NULL, last_resort BOOLEAN NOT NULL, data BYTEA NOT NULL);
CREATE INDEX key_packages_by_device ON key_packages(device_id, last_resort, id);
CREATE TABLE welcomes (id BIGINT PRIMARY KEY, conv_id BIGINT NOT NULL, payload BYTEA NOT NULL, created_at_ms BIGINT NOT NULL);
CREATE TABLE welcome_targets (device_id BIGINT NOT NULL, welcome_id BIGINT NOT NULL, PRIMARY KEY (device_id, welcome_id));
CREATE TABLE invites (
    code TEXT PRIMARY KEY, conv_id BIGINT NOT NULL, created_by BIGINT NOT NULL, expires_at_ms BIGINT NOT NULL,
    max_uses INTEGER NOT NULL, uses INTEGER NOT NULL, revoked BOOLEAN NOT NULL);
