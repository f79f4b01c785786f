//! The client core's [`ClientStore`] on a local SQLite file: the terminal client's profile. One
//! identity (account + device) per file: its MLS state, the decrypted history (with full-text
//! search), the outbox and per-conversation progress, plus a few settings (`kv`) and verified
//! contacts.
//!
//! History follows the client core's timeline rules ([`Effect`]); `migrate.rs` versions the
//! schema. Every [`ClientStore::save`] is one transaction, durable at commit
//! (`synchronous=FULL`).

mod apply;
mod error;
mod migrate;

use std::path::Path;

use anytime_client::timeline::{Effect, Entry, EntryKind, PaymentInfo, Preview};
use anytime_client::{Changes, ClientStore, Content, Queued, Record, StoreError};
use anytime_proto::frame::Seq;
use anytime_proto::{ConvId, DeviceId, MsgId, UserId};
use rusqlite::{params, Connection, OptionalExtension};

use crate::error::Context;
pub use crate::error::ProfileError;

/// The database file inside a profile directory.
pub const FILE_NAME: &str = "profile.sqlite3";

pub struct SqliteClientStore {
    db: Connection,
    /// Wall clock in ms: stamps own messages and notices, expires disappearing messages.
    clock: fn() -> u64,
}

/// A verified contact: the safety number the user compared, and their direct chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub user: UserId,
    pub safety_number: String,
    pub conv: ConvId,
    /// The user was already told the number changed.
    pub warned: bool,
}

/// The columns `read_entries` expects, in its order.
const ENTRY_COLUMNS: &str =
    "conv, msg_id, seq, sender_user, sender_device, sent_at_ms, kind, body, reply_to, edited, deleted, own,
    expires_at_ms, mentions, forwarded, preview_url, preview_title, preview_description, starred,
    payment_transfer, payment_to, payment_amount, payment_currency, payment_shares, attachment";

fn system_clock() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn msg_id(bytes: &[u8]) -> MsgId {
    let mut id = [0u8; 16];
    if bytes.len() == 16 {
        id.copy_from_slice(bytes);
    }
    MsgId(id)
}

impl SqliteClientStore {
    /// Opens (creating and upgrading as needed) the profile in `dir`.
    pub fn open(dir: &Path) -> Result<SqliteClientStore, ProfileError> {
        std::fs::create_dir_all(dir).map_err(|source| ProfileError::CreateDir { path: dir.to_path_buf(), source })?;
        let mut db = Connection::open(dir.join(FILE_NAME)).context("opening the profile database")?;
        db.pragma_update(None, "journal_mode", "WAL").context("switching to WAL")?;
        db.pragma_update(None, "synchronous", "FULL").context("setting synchronous=FULL")?;
        migrate::migrate(&mut db)?;
        let store = SqliteClientStore { db, clock: system_clock };
        store.delete_expired()?;
        Ok(store)
    }

    /// Replaces the wall clock (tests).
    pub fn set_clock(&mut self, clock: fn() -> u64) {
        self.clock = clock;
    }

    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ProfileError> {
        self.db
            .query_row("SELECT value FROM kv WHERE key = ?", [key], |r| r.get(0))
            .optional()
            .context("reading a setting")
    }

    pub fn get_text(&self, key: &str) -> Result<Option<String>, ProfileError> {
        Ok(self.get(key)?.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), ProfileError> {
        self.db
            .execute(
                "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .context("writing a setting")?;
        Ok(())
    }

    pub fn remove(&self, key: &str) -> Result<(), ProfileError> {
        self.db.execute("DELETE FROM kv WHERE key = ?", [key]).context("removing a setting")?;
        Ok(())
    }

    /// Disappearing messages: gone from this device once their timer ran out.
    fn delete_expired(&self) -> Result<(), ProfileError> {
        let now = (self.clock)() as i64;
        let expired = "SELECT msg_id FROM messages WHERE expires_at_ms <= ?1";
        self.db
            .execute(&format!("DELETE FROM search WHERE msg_id IN (SELECT lower(hex(msg_id)) FROM ({expired}))"), [now])
            .and_then(|_| self.db.execute(&format!("DELETE FROM reactions WHERE msg_id IN ({expired})"), [now]))
            .and_then(|_| self.db.execute(&format!("DELETE FROM receipts WHERE msg_id IN ({expired})"), [now]))
            .and_then(|_| self.db.execute("DELETE FROM messages WHERE expires_at_ms <= ?", [now]))
            .context("deleting expired messages")?;
        Ok(())
    }

    /// Full-text search over this device's decrypted messages: (message id, text), oldest first.
    pub fn search(&self, query: &str) -> Result<Vec<(MsgId, String)>, ProfileError> {
        self.delete_expired()?;
        // Quote the query as one FTS5 phrase so user input cannot be FTS syntax.
        let phrase = format!("\"{}\"", query.replace('"', "\"\""));
        let mut stmt = self
            .db
            .prepare(
                "SELECT m.msg_id, m.body FROM search s JOIN messages m ON lower(hex(m.msg_id)) = s.msg_id
                 WHERE search MATCH ? AND m.deleted = 0 ORDER BY m.local_order",
            )
            .context("searching")?;
        let rows = stmt
            .query_map([phrase], |r| Ok((msg_id(&r.get::<_, Vec<u8>>(0)?), r.get(1)?)))
            .and_then(|rows| rows.collect::<Result<_, _>>())
            .context("searching")?;
        Ok(rows)
    }

    pub fn verified(&self, user: UserId) -> Result<Option<String>, ProfileError> {
        self.db
            .query_row("SELECT safety_number FROM verified WHERE user = ?", [user.0 as i64], |r| r.get(0))
            .optional()
            .context("reading a verified contact")
    }

    pub fn set_verified(&self, user: UserId, number: &str, conv: ConvId) -> Result<(), ProfileError> {
        self.db
            .execute(
                "INSERT INTO verified (user, safety_number, conv, warned) VALUES (?, ?, ?, 0)
                 ON CONFLICT(user) DO UPDATE SET safety_number = excluded.safety_number, conv = excluded.conv, warned = 0",
                params![user.0 as i64, number, conv.0 as i64],
            )
            .context("saving a verified contact")?;
        Ok(())
    }

    pub fn verified_contacts(&self) -> Result<Vec<Verified>, ProfileError> {
        let mut stmt = self
            .db
            .prepare("SELECT user, safety_number, conv, warned FROM verified")
            .context("reading verified contacts")?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Verified {
                    user: UserId(r.get::<_, i64>(0)? as u64),
                    safety_number: r.get(1)?,
                    conv: ConvId(r.get::<_, i64>(2)? as u64),
                    warned: r.get(3)?,
                })
            })
            .and_then(|rows| rows.collect::<Result<_, _>>())
            .context("reading verified contacts")?;
        Ok(rows)
    }

    pub fn set_warned(&self, user: UserId) -> Result<(), ProfileError> {
        self.db
            .execute("UPDATE verified SET warned = 1 WHERE user = ?", [user.0 as i64])
            .context("marking a warning")?;
        Ok(())
    }

    fn timer_seconds(&self, conv: ConvId) -> rusqlite::Result<u32> {
        let seconds: Option<i64> =
            self.db.query_row("SELECT seconds FROM timers WHERE conv = ?", [conv.0 as i64], |r| r.get(0)).optional()?;
        Ok(seconds.unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32)
    }

    /// A page of history: the `limit` entries before `before` (or the newest), oldest first, so
    /// a chat of any length opens as fast as a short one. `None` when `before` is not in `conv`.
    pub fn history_page(
        &self,
        conv: ConvId,
        before: Option<MsgId>,
        limit: usize,
    ) -> Result<Option<Vec<Entry>>, ProfileError> {
        self.delete_expired()?;
        let before_order = match before {
            None => i64::MAX,
            Some(id) => {
                let order: Option<i64> = self
                    .db
                    .query_row(
                        "SELECT local_order FROM messages WHERE msg_id = ? AND conv = ?",
                        params![&id.0[..], conv.0 as i64],
                        |r| r.get(0),
                    )
                    .optional()
                    .context("finding a message")?;
                match order {
                    Some(order) => order,
                    None => return Ok(None),
                }
            }
        };
        self.read_history(conv, before_order, limit).map(Some).context("reading history")
    }

    /// One entry of `conv` by id, if this device has it.
    pub fn entry(&self, conv: ConvId, msg_id: MsgId) -> Result<Option<Entry>, ProfileError> {
        self.delete_expired()?;
        let sql = format!("SELECT {ENTRY_COLUMNS} FROM messages WHERE conv = ? AND msg_id = ?");
        let found = self.read_entries(&sql, params![conv.0 as i64, &msg_id.0[..]]).context("reading a message")?;
        Ok(found.into_iter().next().map(|(_, entry)| entry))
    }

    fn read_history(&self, conv: ConvId, before_order: i64, limit: usize) -> rusqlite::Result<Vec<Entry>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM messages WHERE conv = ? AND local_order < ? ORDER BY local_order DESC LIMIT ?"
        );
        let mut entries = self.read_entries(&sql, params![conv.0 as i64, before_order, limit])?;
        entries.reverse();
        Ok(entries.into_iter().map(|(_, entry)| entry).collect())
    }

    /// Entries selected by `sql` (whose columns are [`ENTRY_COLUMNS`]), with their reactions and
    /// receipts.
    fn read_entries(&self, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<Vec<(ConvId, Entry)>> {
        let mut stmt = self.db.prepare_cached(sql)?;
        let rows = stmt.query_map(params, |r| {
            let kind: String = r.get(6)?;
            let preview = match (r.get::<_, Option<String>>(15)?, r.get(16)?, r.get(17)?) {
                (Some(url), Some(title), Some(description)) => Some(Preview { url, title, description }),
                _ => None,
            };
            let entry = Entry {
                msg_id: msg_id(&r.get::<_, Vec<u8>>(1)?),
                seq: r.get::<_, i64>(2)? as u64,
                sender: UserId(r.get::<_, i64>(3)? as u64),
                sender_device: DeviceId(r.get::<_, i64>(4)? as u64),
                sent_at_ms: r.get::<_, i64>(5)? as u64,
                kind: EntryKind::from_name(&kind).unwrap_or(EntryKind::Unsupported),
                body: r.get(7)?,
                reply_to: r.get::<_, Option<Vec<u8>>>(8)?.map(|b| msg_id(&b)),
                edited: r.get(9)?,
                deleted: r.get(10)?,
                own: r.get(11)?,
                reactions: Vec::new(),
                delivered_to: Vec::new(),
                read_by: Vec::new(),
                expires_at_ms: r.get::<_, Option<i64>>(12)?.map(|at| at as u64),
                mentions: apply::mentions_of(&r.get::<_, String>(13)?),
                forwarded: r.get(14)?,
                preview,
                starred: r.get(18)?,
                payment: match (r.get::<_, Option<String>>(19)?, r.get::<_, Option<i64>>(20)?, r.get(21)?, r.get(22)?) {
                    (Some(transfer), Some(to), Some(amount), Some(currency)) => {
                        Some(PaymentInfo { transfer, to: UserId(to as u64), amount, currency, shares: r.get(23)? })
                    }
                    _ => None,
                },
                attachment: match r.get::<_, Option<Vec<u8>>>(24)?.map(|b| Content::decode(&b)) {
                    Some(Ok(Content::Attachment(attachment))) => Some(*attachment),
                    _ => None,
                },
            };
            Ok((ConvId(r.get::<_, i64>(0)? as u64), entry))
        })?;
        let mut entries: Vec<(ConvId, Entry)> = rows.collect::<Result<_, _>>()?;
        let mut reactions =
            self.db.prepare_cached("SELECT user, emoji FROM reactions WHERE msg_id = ? ORDER BY rowid")?;
        let mut receipts =
            self.db.prepare_cached("SELECT user FROM receipts WHERE msg_id = ? AND kind = ? ORDER BY rowid")?;
        for (_, entry) in &mut entries {
            let id = &entry.msg_id.0[..];
            entry.reactions = reactions
                .query_map([id], |r| Ok((UserId(r.get::<_, i64>(0)? as u64), r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            let mut users = |kind| -> rusqlite::Result<Vec<UserId>> {
                let name = apply::receipt_name(kind);
                receipts.query_map(params![id, name], |r| Ok(UserId(r.get::<_, i64>(0)? as u64)))?.collect()
            };
            entry.delivered_to = users(anytime_client::content::ReceiptKind::Delivered)?;
            entry.read_by = users(anytime_client::content::ReceiptKind::Read)?;
        }
        Ok(entries)
    }

    fn save_changes(&mut self, changes: Changes<'_>) -> rusqlite::Result<()> {
        let now = (self.clock)();
        let timer = match changes.record {
            Some(Record { conv, event: Some(_), .. }) => self.timer_seconds(conv)?,
            _ => 0,
        };
        let tx = self.db.transaction()?;
        if let Some(state) = &changes.crypto {
            tx.execute(
                "INSERT INTO kv (key, value) VALUES ('crypto', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [state],
            )?;
        }
        if let Some(Record { conv, seq, event }) = changes.record {
            if let Some(effect) = event.and_then(|event| Effect::of(event, timer, now)) {
                apply::apply(&tx, conv, effect)?;
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
                "INSERT INTO outbox (conv, msg_id, ciphertext, content) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (msg_id) DO UPDATE SET ciphertext = excluded.ciphertext, content = excluded.content",
                params![entry.conv.0 as i64, &entry.msg_id.0[..], entry.ciphertext, entry.content.encode()],
            )?;
        }
        if let Some(msg_id) = changes.outbox_remove {
            tx.execute("DELETE FROM outbox WHERE msg_id = ?", [&msg_id.0[..]])?;
        }
        if let Some((conv, effect)) = changes.local {
            apply::apply(&tx, conv, effect)?;
        }
        tx.commit()
    }
}

impl ClientStore for SqliteClientStore {
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
                let content: Option<Vec<u8>> = r.get(3)?;
                Ok(Queued {
                    conv: ConvId(r.get::<_, i64>(0)? as u64),
                    msg_id: msg_id(&r.get::<_, Vec<u8>>(1)?),
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

    fn history(&self, conv: ConvId, limit: usize) -> Result<Vec<Entry>, StoreError> {
        self.delete_expired().map_err(StoreError::new)?;
        self.read_history(conv, i64::MAX, limit).map_err(StoreError::new)
    }

    fn starred(&self) -> Result<Vec<(ConvId, Entry)>, StoreError> {
        self.delete_expired().map_err(StoreError::new)?;
        let sql = format!("SELECT {ENTRY_COLUMNS} FROM messages WHERE starred = 1 ORDER BY sent_at_ms, local_order");
        self.read_entries(&sql, []).map_err(StoreError::new)
    }
}

#[cfg(test)]
mod tests;
