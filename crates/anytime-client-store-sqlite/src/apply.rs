//! Carries out the client core's timeline [`Effect`]s on the profile's tables, as each variant
//! documents: the rules themselves (what makes an entry, its text, expiry, who may edit) are the
//! core's, so this store and the browser's in-memory timelines cannot drift apart. The
//! conformance cases in `anytime_client::store_conformance` compare the two.

use anytime_client::content::ReceiptKind;
use anytime_client::timeline::{receipt_lists, Effect, Entry};
use anytime_proto::ids::hex;
use anytime_proto::{ConvId, UserId};
use rusqlite::{params, Connection};

pub(crate) fn receipt_name(kind: ReceiptKind) -> &'static str {
    match kind {
        ReceiptKind::Delivered => "delivered",
        ReceiptKind::Read => "read",
    }
}

pub(crate) fn apply(db: &Connection, conv: ConvId, effect: Effect) -> rusqlite::Result<()> {
    let conv_id = conv.0 as i64;
    match effect {
        Effect::Insert(entry) => insert(db, conv, &entry),
        Effect::SetTimer { seconds, notice } => {
            db.execute(
                "INSERT INTO timers (conv, seconds) VALUES (?, ?) ON CONFLICT(conv) DO UPDATE SET seconds = excluded.seconds",
                params![conv_id, seconds],
            )?;
            insert(db, conv, &notice)
        }
        Effect::React { to, user, emoji, remove } => {
            if !exists(db, conv, &to.0)? {
                return Ok(());
            }
            // Delete then insert: a reaction given again moves to the end, as in the timeline.
            db.execute(
                "DELETE FROM reactions WHERE msg_id = ? AND user = ? AND emoji = ?",
                params![&to.0[..], user.0 as i64, emoji],
            )?;
            if !remove {
                db.execute(
                    "INSERT INTO reactions (msg_id, user, emoji) VALUES (?, ?, ?)",
                    params![&to.0[..], user.0 as i64, emoji],
                )?;
            }
            Ok(())
        }
        Effect::Edit { to, author, body } => {
            let changed = db.execute(
                "UPDATE messages SET body = ?, edited = 1 WHERE msg_id = ? AND conv = ? AND sender_user = ? AND deleted = 0",
                params![body, &to.0[..], conv_id, author.0 as i64],
            )?;
            if changed > 0 {
                db.execute("UPDATE search SET body = ? WHERE msg_id = ?", params![body, hex(&to.0)])?;
            }
            Ok(())
        }
        Effect::Delete { to, author } => {
            let changed = db.execute(
                "UPDATE messages SET body = '', deleted = 1, mentions = '', preview_url = NULL, preview_title = NULL, preview_description = NULL,
                 attachment = NULL WHERE msg_id = ? AND conv = ? AND sender_user = ?",
                params![&to.0[..], conv_id, author.0 as i64],
            )?;
            if changed > 0 {
                db.execute("DELETE FROM search WHERE msg_id = ?", [hex(&to.0)])?;
                db.execute("DELETE FROM reactions WHERE msg_id = ?", [&to.0[..]])?;
            }
            Ok(())
        }
        Effect::Receipt { user, kind, messages, .. } => {
            for id in &messages {
                if !exists(db, conv, &id.0)? {
                    continue;
                }
                for list in receipt_lists(kind) {
                    db.execute(
                        "INSERT OR IGNORE INTO receipts (msg_id, user, kind) VALUES (?, ?, ?)",
                        params![&id.0[..], user.0 as i64, receipt_name(*list)],
                    )?;
                }
            }
            Ok(())
        }
        Effect::Preview { to, author, preview } => {
            db.execute(
                "UPDATE messages SET preview_url = ?, preview_title = ?, preview_description = ?
                 WHERE msg_id = ? AND conv = ? AND sender_user = ? AND deleted = 0",
                params![preview.url, preview.title, preview.description, &to.0[..], conv_id, author.0 as i64],
            )?;
            Ok(())
        }
        Effect::Star { to, starred } => {
            db.execute(
                "UPDATE messages SET starred = ? WHERE msg_id = ? AND conv = ?",
                params![starred, &to.0[..], conv_id],
            )?;
            Ok(())
        }
        Effect::Hide { to } => {
            if db.execute("DELETE FROM messages WHERE msg_id = ? AND conv = ?", params![&to.0[..], conv_id])? > 0 {
                db.execute("DELETE FROM reactions WHERE msg_id = ?", [&to.0[..]])?;
                db.execute("DELETE FROM receipts WHERE msg_id = ?", [&to.0[..]])?;
                db.execute("DELETE FROM search WHERE msg_id = ?", [hex(&to.0)])?;
            }
            Ok(())
        }
    }
}

/// Mentions as the profile keeps them: user ids, comma-separated.
pub(crate) fn mentions_text(mentions: &[UserId]) -> String {
    mentions.iter().map(|u| u.0.to_string()).collect::<Vec<_>>().join(",")
}

pub(crate) fn mentions_of(text: &str) -> Vec<UserId> {
    text.split(',').filter_map(|id| id.parse().ok()).map(UserId).collect()
}

fn exists(db: &Connection, conv: ConvId, msg_id: &[u8]) -> rusqlite::Result<bool> {
    db.query_row(
        "SELECT EXISTS (SELECT 1 FROM messages WHERE msg_id = ? AND conv = ?)",
        params![msg_id, conv.0 as i64],
        |r| r.get(0),
    )
}

fn insert(db: &Connection, conv: ConvId, entry: &Entry) -> rusqlite::Result<()> {
    let inserted = db.execute(
        "INSERT OR IGNORE INTO messages (msg_id, conv, seq, sender_user, sender_device, sent_at_ms, kind, body, reply_to, edited, deleted, own, expires_at_ms,
             mentions, forwarded, preview_url, preview_title, preview_description, starred,
             payment_transfer, payment_to, payment_amount, payment_currency, payment_shares, attachment, local_order)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,
             (SELECT COALESCE(MAX(local_order), 0) + 1 FROM messages))",
        params![
            &entry.msg_id.0[..],
            conv.0 as i64,
            entry.seq as i64,
            entry.sender.0 as i64,
            entry.sender_device.0 as i64,
            entry.sent_at_ms as i64,
            entry.kind.name(),
            entry.body,
            entry.reply_to.map(|r| r.0.to_vec()),
            entry.edited,
            entry.deleted,
            entry.own,
            entry.expires_at_ms.map(|at| at as i64),
            mentions_text(&entry.mentions),
            entry.forwarded,
            entry.preview.as_ref().map(|p| &p.url),
            entry.preview.as_ref().map(|p| &p.title),
            entry.preview.as_ref().map(|p| &p.description),
            entry.starred,
            entry.payment.as_ref().map(|p| &p.transfer),
            entry.payment.as_ref().map(|p| p.to.0 as i64),
            entry.payment.as_ref().map(|p| &p.amount),
            entry.payment.as_ref().map(|p| &p.currency),
            entry.payment.as_ref().map_or(0, |p| p.shares),
            entry.attachment.as_ref().map(|a| anytime_client::content::Content::Attachment(Box::new(a.clone())).encode()),
        ],
    )?;
    if inserted > 0 {
        if entry.kind.is_message() {
            db.execute("INSERT INTO search (body, msg_id) VALUES (?, ?)", params![entry.body, hex(&entry.msg_id.0)])?;
        }
    } else {
        // Our own message comes back from the server with its seq: keep the local entry.
        db.execute(
            "UPDATE messages SET seq = ? WHERE msg_id = ? AND conv = ? AND seq = 0",
            params![entry.seq as i64, &entry.msg_id.0[..], conv.0 as i64],
        )?;
    }
    Ok(())
}
