//! The profile's schema, versioned by `PRAGMA user_version`: version 0 is the first release's
//! schema (created if missing), each entry of [`MIGRATIONS`] takes it one version further, in its
//! own transaction. A profile from a newer release is refused instead of being half understood.

use rusqlite::Connection;

use crate::error::{Context, ProfileError};

pub(crate) const BASE: &str = "
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS seqs (conv INTEGER PRIMARY KEY, last_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    msg_id BLOB PRIMARY KEY, conv INTEGER NOT NULL, seq INTEGER NOT NULL, sender_user INTEGER NOT NULL,
    sender_device INTEGER NOT NULL, sent_at_ms INTEGER NOT NULL, kind TEXT NOT NULL, body TEXT NOT NULL,
    reply_to BLOB, edited INTEGER NOT NULL DEFAULT 0, deleted INTEGER NOT NULL DEFAULT 0, own INTEGER NOT NULL,
    expires_at_ms INTEGER, local_order INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS messages_by_conv ON messages(conv, local_order);
CREATE TABLE IF NOT EXISTS reactions (msg_id BLOB NOT NULL, user INTEGER NOT NULL, emoji TEXT NOT NULL, PRIMARY KEY (msg_id, user, emoji));
CREATE TABLE IF NOT EXISTS receipts (msg_id BLOB NOT NULL, user INTEGER NOT NULL, kind TEXT NOT NULL, PRIMARY KEY (msg_id, user, kind));
CREATE TABLE IF NOT EXISTS timers (conv INTEGER PRIMARY KEY, seconds INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, conv INTEGER NOT NULL, msg_id BLOB NOT NULL UNIQUE, ciphertext BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS verified (user INTEGER PRIMARY KEY, safety_number TEXT NOT NULL, conv INTEGER NOT NULL DEFAULT 0, warned INTEGER NOT NULL DEFAULT 0);
CREATE VIRTUAL TABLE IF NOT EXISTS search USING fts5(body, msg_id UNINDEXED);
";

/// Schema changes after the first release, in order; the profile's `user_version` counts how many
/// it has.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the outbox keeps what each queued message says (local history and silent resends
    // after a restart).
    "ALTER TABLE outbox ADD COLUMN content BLOB;",
    // 2: history follows the client core's timeline rules: a deleted message loses its
    // reactions, a read receipt implies delivery, and only messages are searchable.
    "DELETE FROM reactions WHERE msg_id IN (SELECT msg_id FROM messages WHERE deleted = 1);
     INSERT OR IGNORE INTO receipts (msg_id, user, kind) SELECT msg_id, user, 'delivered' FROM receipts WHERE kind = 'read';
     DELETE FROM search WHERE msg_id IN (SELECT lower(hex(msg_id)) FROM messages WHERE kind NOT IN ('text', 'reply'));",
    // 3: mentions (user ids, comma-separated), forwarded messages, link previews and stars.
    "ALTER TABLE messages ADD COLUMN mentions TEXT NOT NULL DEFAULT '';
     ALTER TABLE messages ADD COLUMN forwarded INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE messages ADD COLUMN preview_url TEXT;
     ALTER TABLE messages ADD COLUMN preview_title TEXT;
     ALTER TABLE messages ADD COLUMN preview_description TEXT;
     ALTER TABLE messages ADD COLUMN starred INTEGER NOT NULL DEFAULT 0;
     CREATE INDEX messages_starred ON messages(starred) WHERE starred = 1;",
    // 4: payments, money requests, split bills and red envelopes in chats (the note is the body).
    "ALTER TABLE messages ADD COLUMN payment_transfer TEXT;
     ALTER TABLE messages ADD COLUMN payment_to INTEGER;
     ALTER TABLE messages ADD COLUMN payment_amount TEXT;
     ALTER TABLE messages ADD COLUMN payment_currency TEXT;
     ALTER TABLE messages ADD COLUMN payment_shares INTEGER NOT NULL DEFAULT 0;",
    // 5: attachments (key, digest and what the file is), kept as the content envelope of kind 14
    // they arrived in, so the column needs no layout of its own.
    "ALTER TABLE messages ADD COLUMN attachment BLOB;",
];

pub(crate) fn migrate(db: &mut Connection) -> Result<(), ProfileError> {
    let version: i64 =
        db.pragma_query_value(None, "user_version", |r| r.get(0)).context("reading the profile version")?;
    if version > MIGRATIONS.len() as i64 {
        return Err(ProfileError::TooNew { found: version, known: MIGRATIONS.len() });
    }
    db.execute_batch(BASE).context("creating the profile schema")?;
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        let failed = |source| ProfileError::Migrate { version: i + 1, source };
        let tx = db.transaction().map_err(failed)?;
        tx.execute_batch(migration).map_err(failed)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64).map_err(failed)?;
        tx.commit().map_err(failed)?;
    }
    Ok(())
}
