//! A profile directory: one identity (account + device) with its local SQLite store — MLS
//! state, decrypted history (with full-text search), the outbox and per-conversation progress.
//! Implements the client core's `ClientStore`.

use std::path::Path;

use anyhow::Context;
use anytime_client::content::{Content, ReceiptKind};
use anytime_client::{Changes, ClientStore, Event, Queued, Record, StoreError};
use anytime_proto::frame::Seq;
use anytime_proto::{ConvId, MsgId};
use rusqlite::{params, Connection, OptionalExtension};

const SCHEMA: &str = "
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

/// Schema changes after the first release, applied in order; `PRAGMA user_version` counts how
/// many a profile already has.
const MIGRATIONS: &[&str] = &[
    // 1: the outbox keeps what each queued message says (local history and silent resends
    // after a restart).
    "ALTER TABLE outbox ADD COLUMN content BLOB;",
];

fn migrate(db: &Connection) -> anyhow::Result<()> {
    let version: i64 = db.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        let tx = db.unchecked_transaction()?;
        tx.execute_batch(migration).with_context(|| format!("while upgrading the profile to version {}", i + 1))?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

pub struct Profile {
    db: Connection,
}

/// A row of the local history.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HistoryEntry {
    pub msg_id: String,
    pub conv: String,
    pub seq: u64,
    pub sender: String,
    pub sender_device: String,
    pub sent_at_ms: u64,
    pub kind: String,
    pub text: String,
    pub reply_to: Option<String>,
    pub edited: bool,
    pub deleted: bool,
    pub own: bool,
    pub reactions: Vec<(String, String)>,
    pub read_by: Vec<String>,
}

pub use anytime_proto::ids::hex;

pub fn parse_msg_id(text: &str) -> anyhow::Result<MsgId> {
    text.parse().map_err(|_| anyhow::anyhow!("a message id is 32 hex digits (see `anytime history`)"))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Profile {
    pub fn open(dir: &Path) -> anyhow::Result<Profile> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("while creating the profile directory {}", dir.display()))?;
        let db = Connection::open(dir.join("profile.sqlite3")).context("while opening the profile database")?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.execute_batch(SCHEMA).context("while creating the profile schema")?;
        migrate(&db)?;
        let profile = Profile { db };
        profile.delete_expired()?;
        Ok(profile)
    }

    pub fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(self.db.query_row("SELECT value FROM kv WHERE key = ?", [key], |r| r.get(0)).optional()?)
    }

    pub fn get_text(&self, key: &str) -> anyhow::Result<Option<String>> {
        Ok(self.get(key)?.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    pub fn set(&self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        self.db.execute(
            "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    /// Disappearing messages: gone from this device once their timer ran out.
    fn delete_expired(&self) -> anyhow::Result<()> {
        let now = now_ms() as i64;
        self.db.execute(
            "DELETE FROM search WHERE msg_id IN (SELECT lower(hex(msg_id)) FROM messages WHERE expires_at_ms <= ?)",
            [now],
        )?;
        self.db.execute("DELETE FROM messages WHERE expires_at_ms <= ?", [now])?;
        Ok(())
    }

    pub fn history(&self, conv: ConvId, limit: u32) -> anyhow::Result<Vec<HistoryEntry>> {
        self.delete_expired()?;
        let mut stmt = self.db.prepare(
            "SELECT msg_id, seq, sender_user, sender_device, sent_at_ms, kind, body, reply_to, edited, deleted, own
             FROM messages WHERE conv = ? ORDER BY local_order DESC LIMIT ?",
        )?;
        let rows = stmt.query_map(params![conv.0 as i64, limit], |r| {
            let msg_id: Vec<u8> = r.get(0)?;
            let reply_to: Option<Vec<u8>> = r.get(7)?;
            Ok(HistoryEntry {
                msg_id: hex(&msg_id),
                conv: conv.to_string(),
                seq: r.get::<_, i64>(1)? as u64,
                sender: anytime_proto::UserId(r.get::<_, i64>(2)? as u64).to_string(),
                sender_device: anytime_proto::DeviceId(r.get::<_, i64>(3)? as u64).to_string(),
                sent_at_ms: r.get::<_, i64>(4)? as u64,
                kind: r.get(5)?,
                text: r.get(6)?,
                reply_to: reply_to.map(|b| hex(&b)),
                edited: r.get(8)?,
                deleted: r.get(9)?,
                own: r.get(10)?,
                reactions: Vec::new(),
                read_by: Vec::new(),
            })
        })?;
        let mut entries: Vec<HistoryEntry> = rows.collect::<Result<_, _>>()?;
        entries.reverse();
        for entry in &mut entries {
            let id = parse_msg_id(&entry.msg_id)?;
            let mut stmt =
                self.db.prepare("SELECT user, emoji FROM reactions WHERE msg_id = ? ORDER BY user, emoji")?;
            entry.reactions = stmt
                .query_map([&id.0[..]], |r| {
                    Ok((anytime_proto::UserId(r.get::<_, i64>(0)? as u64).to_string(), r.get(1)?))
                })?
                .collect::<Result<_, _>>()?;
            let mut stmt =
                self.db.prepare("SELECT user FROM receipts WHERE msg_id = ? AND kind = 'read' ORDER BY user")?;
            entry.read_by = stmt
                .query_map([&id.0[..]], |r| Ok(anytime_proto::UserId(r.get::<_, i64>(0)? as u64).to_string()))?
                .collect::<Result<_, _>>()?;
        }
        Ok(entries)
    }

    /// Full-text search over this device's decrypted messages.
    pub fn search(&self, query: &str) -> anyhow::Result<Vec<(String, String)>> {
        self.delete_expired()?;
        // Quote the query as one FTS5 phrase so user input cannot be FTS syntax.
        let phrase = format!("\"{}\"", query.replace('"', "\"\""));
        let mut stmt = self.db.prepare(
            "SELECT s.msg_id, m.body FROM search s JOIN messages m ON lower(hex(m.msg_id)) = s.msg_id
             WHERE search MATCH ? AND m.deleted = 0 ORDER BY m.local_order",
        )?;
        let rows = stmt.query_map([phrase], |r| Ok((r.get::<_, String>(0)?.to_lowercase(), r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn verified(&self, user: anytime_proto::UserId) -> anyhow::Result<Option<String>> {
        Ok(self
            .db
            .query_row("SELECT safety_number FROM verified WHERE user = ?", [user.0 as i64], |r| r.get(0))
            .optional()?)
    }

    pub fn set_verified(&self, user: anytime_proto::UserId, number: &str, conv: ConvId) -> anyhow::Result<()> {
        self.db.execute(
            "INSERT INTO verified (user, safety_number, conv, warned) VALUES (?, ?, ?, 0)
             ON CONFLICT(user) DO UPDATE SET safety_number = excluded.safety_number, conv = excluded.conv, warned = 0",
            params![user.0 as i64, number, conv.0 as i64],
        )?;
        Ok(())
    }

    /// Verified contacts: (user, verified safety number, their direct chat, already warned).
    pub fn verified_contacts(&self) -> anyhow::Result<Vec<(anytime_proto::UserId, String, ConvId, bool)>> {
        let mut stmt = self.db.prepare("SELECT user, safety_number, conv, warned FROM verified")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                anytime_proto::UserId(r.get::<_, i64>(0)? as u64),
                r.get(1)?,
                ConvId(r.get::<_, i64>(2)? as u64),
                r.get(3)?,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn set_warned(&self, user: anytime_proto::UserId) -> anyhow::Result<()> {
        self.db.execute("UPDATE verified SET warned = 1 WHERE user = ?", [user.0 as i64])?;
        Ok(())
    }

    fn timer_ms(&self, conv: ConvId) -> rusqlite::Result<Option<u64>> {
        let seconds: Option<i64> =
            self.db.query_row("SELECT seconds FROM timers WHERE conv = ?", [conv.0 as i64], |r| r.get(0)).optional()?;
        Ok(seconds.filter(|s| *s > 0).map(|s| s as u64 * 1000))
    }

    fn apply(&self, conv: ConvId, seq: Seq, event: &Event) -> rusqlite::Result<()> {
        let Event::Message { msg_id, sender, sent_at_ms, content, own, seq: message_seq, .. } = event else {
            return Ok(());
        };
        // Own messages are recorded without advancing the cursor (record seq 0), but they have
        // the server's seq: show that one, as `send` did.
        let seq = if seq == 0 { *message_seq } else { seq };
        let sent_at = if *sent_at_ms == 0 { now_ms() } else { *sent_at_ms };
        let by_author = "AND sender_user = ?";
        let insert = |kind: &str, body: &str, reply_to: Option<&MsgId>| -> rusqlite::Result<()> {
            let expires = self.timer_ms(conv)?.map(|ms| (sent_at + ms) as i64);
            let inserted = self.db.execute(
                "INSERT OR IGNORE INTO messages (msg_id, conv, seq, sender_user, sender_device, sent_at_ms, kind, body, reply_to, own, expires_at_ms, local_order)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, (SELECT COALESCE(MAX(local_order), 0) + 1 FROM messages))",
                params![&msg_id.0[..], conv.0 as i64, seq as i64, sender.user.0 as i64, sender.device.0 as i64, sent_at as i64, kind, body, reply_to.map(|r| r.0.to_vec()), own, expires],
            )?;
            if inserted > 0 {
                self.db.execute("INSERT INTO search (body, msg_id) VALUES (?, ?)", params![body, hex(&msg_id.0)])?;
            }
            Ok(())
        };
        match content {
            Content::Text(text) => insert("text", &text.body, None),
            Content::Reply(reply) => insert("reply", &reply.body, Some(&reply.to)),
            Content::Unsupported { .. } => insert("unsupported", "unsupported message", None),
            Content::Reaction(reaction) => {
                if reaction.remove {
                    self.db.execute(
                        "DELETE FROM reactions WHERE msg_id = ? AND user = ? AND emoji = ?",
                        params![&reaction.to.0[..], sender.user.0 as i64, reaction.emoji],
                    )?;
                } else {
                    self.db.execute(
                        "INSERT OR IGNORE INTO reactions (msg_id, user, emoji) VALUES (?, ?, ?)",
                        params![&reaction.to.0[..], sender.user.0 as i64, reaction.emoji],
                    )?;
                }
                Ok(())
            }
            Content::Edit(edit) => {
                let changed = self.db.execute(
                    &format!("UPDATE messages SET body = ?, edited = 1 WHERE msg_id = ? AND deleted = 0 {by_author}"),
                    params![edit.body, &edit.to.0[..], sender.user.0 as i64],
                )?;
                if changed > 0 {
                    self.db
                        .execute("UPDATE search SET body = ? WHERE msg_id = ?", params![edit.body, hex(&edit.to.0)])?;
                }
                Ok(())
            }
            Content::Delete(delete) => {
                let changed = self.db.execute(
                    &format!("UPDATE messages SET body = '', deleted = 1 WHERE msg_id = ? {by_author}"),
                    params![&delete.to.0[..], sender.user.0 as i64],
                )?;
                if changed > 0 {
                    self.db.execute("DELETE FROM search WHERE msg_id = ?", [hex(&delete.to.0)])?;
                }
                Ok(())
            }
            Content::Receipt(receipt) => {
                let kind = match receipt.kind {
                    ReceiptKind::Delivered => "delivered",
                    ReceiptKind::Read => "read",
                };
                for id in &receipt.messages {
                    self.db.execute(
                        "INSERT OR IGNORE INTO receipts (msg_id, user, kind) VALUES (?, ?, ?)",
                        params![&id.0[..], sender.user.0 as i64, kind],
                    )?;
                }
                Ok(())
            }
            Content::Timer(timer) => {
                self.db.execute("INSERT INTO timers (conv, seconds) VALUES (?, ?) ON CONFLICT(conv) DO UPDATE SET seconds = excluded.seconds", params![conv.0 as i64, timer.seconds])?;
                insert(
                    "timer",
                    &format!(
                        "disappearing messages: {}",
                        if timer.seconds == 0 { "off".to_owned() } else { format!("{} s", timer.seconds) }
                    ),
                    None,
                )
            }
        }
    }
}

impl ClientStore for Profile {
    fn last_seq(&self, conv: ConvId) -> Result<Seq, StoreError> {
        self.db
            .query_row("SELECT last_seq FROM seqs WHERE conv = ?", [conv.0 as i64], |r| r.get::<_, i64>(0))
            .optional()
            .map(|v| v.unwrap_or(0) as u64)
            .map_err(StoreError::new)
    }

    fn outbox(&self) -> Result<Vec<Queued>, StoreError> {
        let mut stmt = self
            .db
            .prepare("SELECT conv, msg_id, ciphertext, content FROM outbox ORDER BY id")
            .map_err(StoreError::new)?;
        let rows = stmt
            .query_map([], |r| {
                let id: Vec<u8> = r.get(1)?;
                let mut msg_id = [0u8; 16];
                if id.len() == 16 {
                    msg_id.copy_from_slice(&id);
                }
                let content: Option<Vec<u8>> = r.get(3)?;
                Ok(Queued {
                    conv: ConvId(r.get::<_, i64>(0)? as u64),
                    msg_id: MsgId(msg_id),
                    ciphertext: r.get(2)?,
                    content: content.and_then(|bytes| Content::decode(&bytes).ok()),
                })
            })
            .map_err(StoreError::new)?;
        rows.collect::<Result<_, _>>().map_err(StoreError::new)
    }

    /// One SQLite transaction (synchronous=FULL: durable at commit) for the whole batch.
    fn save(&mut self, changes: Changes<'_>) -> Result<(), StoreError> {
        self.save_changes(changes).map_err(StoreError::new)
    }
}

impl Profile {
    fn save_changes(&mut self, changes: Changes<'_>) -> rusqlite::Result<()> {
        let tx = self.db.unchecked_transaction()?;
        if let Some(state) = &changes.crypto {
            tx.execute(
                "INSERT INTO kv (key, value) VALUES ('crypto', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [state],
            )?;
        }
        if let Some(Record { conv, seq, event }) = changes.record {
            if let Some(event) = event {
                self.apply(conv, seq, event)?;
            }
            if seq > 0 {
                tx.execute(
                    "INSERT INTO seqs (conv, last_seq) VALUES (?, ?) ON CONFLICT(conv) DO UPDATE SET last_seq = MAX(last_seq, excluded.last_seq)",
                    params![conv.0 as i64, seq as i64],
                )?;
            }
        }
        if let Some(entry) = changes.outbox_add {
            tx.execute(
                "INSERT OR IGNORE INTO outbox (conv, msg_id, ciphertext, content) VALUES (?, ?, ?, ?)",
                params![entry.conv.0 as i64, &entry.msg_id.0[..], entry.ciphertext, entry.content.encode()],
            )?;
        }
        if let Some(msg_id) = changes.outbox_remove {
            tx.execute("DELETE FROM outbox WHERE msg_id = ?", [&msg_id.0[..]])?;
        }
        tx.commit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anytime_client::content::Text;
    use anytime_client::OutboxEntry;

    #[test]
    fn a_message_id_with_non_ascii_characters_is_an_error_not_a_panic() {
        // 32 bytes, but 'é' is two of them: slicing by bytes would split it.
        let text = format!("a\u{e9}{}", "a".repeat(29));
        assert_eq!(text.len(), 32);
        assert!(parse_msg_id(&text).is_err());
        assert!(parse_msg_id(&"0f".repeat(16)).is_ok());
    }

    #[test]
    fn an_old_profile_is_migrated_and_the_outbox_keeps_what_each_message_says() {
        let dir = tempfile::tempdir().unwrap();
        {
            // A profile from before migration 1: its outbox has no content column.
            let db = Connection::open(dir.path().join("profile.sqlite3")).unwrap();
            db.execute_batch(
                "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, conv INTEGER NOT NULL, msg_id BLOB NOT NULL UNIQUE, ciphertext BLOB NOT NULL);
                 INSERT INTO outbox (conv, msg_id, ciphertext) VALUES (7, x'00000000000000000000000000000001', x'01');",
            )
            .unwrap();
        }
        let mut profile = Profile::open(dir.path()).unwrap();
        let version: i64 = profile.db.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        let content = Content::Text(Text { body: "queued".into(), mentions: Vec::new() });
        let entry = OutboxEntry { conv: ConvId(7), msg_id: MsgId([2; 16]), ciphertext: &[2], content: &content };
        profile.save(Changes { outbox_add: Some(entry), ..Changes::default() }).unwrap();
        let queued = profile.outbox().unwrap();
        assert_eq!(queued.len(), 2);
        assert_eq!(queued[0].content, None, "the old entry has no content");
        assert_eq!(queued[1].content, Some(content));
        // Opening again applies nothing twice.
        drop(profile);
        assert_eq!(Profile::open(dir.path()).unwrap().outbox().unwrap().len(), 2);
    }
}
