//! The delivery path: appending messages and commits, cursors, welcomes, garbage collection.

use anytime_proto::frame::{Message, MessageKind, Seq};
use anytime_proto::limits::{GC_EXPIRED_DEVICES_MAX, GC_ROWS_MAX};
use anytime_proto::{ConvId, DeviceId, ErrorCode, MsgId, UserId};
use anytime_server_core::store::{
    Appended, Collected, CommitAccepted, NewCommit, NewMessage, PendingWelcome, StoreError, StoreResult,
};
use rusqlite::{params, Connection, OptionalExtension};

use crate::engine::backend;
use crate::sql::{id, uid};

const KIND_APPLICATION: i64 = 0;
const KIND_COMMIT: i64 = 1;

/// A previous send or commit with the same (device, message id).
struct SentBefore {
    conv: ConvId,
    seq: Seq,
    epoch_after: Option<u64>,
}

fn sent_before(conn: &Connection, device: DeviceId, msg_id: &MsgId) -> StoreResult<Option<SentBefore>> {
    conn.prepare_cached("SELECT conv_id, seq, epoch_after FROM sent_ids WHERE device_id = ? AND msg_id = ?")
        .and_then(|mut stmt| {
            stmt.query_row(params![id(device.0), &msg_id.0[..]], |r| {
                Ok(SentBefore {
                    conv: ConvId(uid(r.get(0)?)),
                    seq: uid(r.get(1)?),
                    epoch_after: r.get::<_, Option<i64>>(2)?.map(uid),
                })
            })
            .optional()
        })
        .map_err(backend)
}

struct Row<'a> {
    conv: ConvId,
    seq: Seq,
    sender: UserId,
    sender_device: DeviceId,
    msg_id: &'a MsgId,
    kind: i64,
    epoch: u64,
    at_ms: u64,
    payload: &'a [u8],
    epoch_after: Option<u64>,
}

fn insert_message(conn: &Connection, row: Row<'_>) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO messages (conv_id, seq, sender, sender_device, msg_id, kind, epoch, sent_at_ms, payload)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            id(row.conv.0),
            id(row.seq),
            id(row.sender.0),
            id(row.sender_device.0),
            &row.msg_id.0[..],
            row.kind,
            id(row.epoch),
            id(row.at_ms),
            row.payload
        ])
    })
    .map_err(backend)?;
    conn.prepare_cached(
        "INSERT INTO sent_ids (device_id, msg_id, conv_id, seq, epoch_after, at_ms) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            id(row.sender_device.0),
            &row.msg_id.0[..],
            id(row.conv.0),
            id(row.seq),
            row.epoch_after.map(id),
            id(row.at_ms)
        ])
    })
    .map_err(backend)?;
    Ok(())
}

pub(crate) fn append_message(conn: &Connection, message: NewMessage) -> StoreResult<Appended> {
    if let Some(before) = sent_before(conn, message.sender_device, &message.msg_id)? {
        if before.conv != message.conv || before.epoch_after.is_some() {
            return Err(StoreError::Rejected(ErrorCode::MessageIdReused));
        }
        return Ok(Appended { seq: before.seq, duplicate: true });
    }
    let seq: Option<i64> = conn
        .prepare_cached("UPDATE conversations SET last_seq = last_seq + 1 WHERE id = ? RETURNING last_seq")
        .and_then(|mut stmt| stmt.query_row([id(message.conv.0)], |r| r.get(0)).optional())
        .map_err(backend)?;
    let seq = uid(seq.ok_or(StoreError::Rejected(ErrorCode::ConversationNotFound))?);
    insert_message(
        conn,
        Row {
            conv: message.conv,
            seq,
            sender: message.sender,
            sender_device: message.sender_device,
            msg_id: &message.msg_id,
            kind: KIND_APPLICATION,
            epoch: 0,
            at_ms: message.at_ms,
            payload: &message.payload,
            epoch_after: None,
        },
    )?;
    Ok(Appended { seq, duplicate: false })
}

pub(crate) fn append_commit(conn: &Connection, commit: NewCommit) -> StoreResult<CommitAccepted> {
    if let Some(before) = sent_before(conn, commit.sender_device, &commit.msg_id)? {
        return match before.epoch_after {
            Some(epoch) if before.conv == commit.conv => Ok(CommitAccepted { seq: before.seq, epoch, duplicate: true }),
            _ => Err(StoreError::Rejected(ErrorCode::MessageIdReused)),
        };
    }
    let current: Option<i64> = conn
        .prepare_cached("SELECT epoch FROM conversations WHERE id = ?")
        .and_then(|mut stmt| stmt.query_row([id(commit.conv.0)], |r| r.get(0)).optional())
        .map_err(backend)?;
    let current = uid(current.ok_or(StoreError::Rejected(ErrorCode::ConversationNotFound))?);
    if current != commit.epoch {
        return Err(StoreError::EpochMismatch { current });
    }
    let (seq, epoch): (i64, i64) = conn
        .prepare_cached(
            "UPDATE conversations SET last_seq = last_seq + 1, epoch = epoch + 1 WHERE id = ? RETURNING last_seq, epoch",
        )
        .and_then(|mut stmt| stmt.query_row([id(commit.conv.0)], |r| Ok((r.get(0)?, r.get(1)?))))
        .map_err(backend)?;
    let (seq, epoch) = (uid(seq), uid(epoch));
    insert_message(
        conn,
        Row {
            conv: commit.conv,
            seq,
            sender: commit.sender,
            sender_device: commit.sender_device,
            msg_id: &commit.msg_id,
            kind: KIND_COMMIT,
            epoch: commit.epoch,
            at_ms: commit.at_ms,
            payload: &commit.commit,
            epoch_after: Some(epoch),
        },
    )?;
    if let Some(welcome) = commit.welcome {
        conn.execute(
            "INSERT INTO welcomes (id, conv_id, payload, created_at_ms) VALUES (?, ?, ?, ?)",
            params![id(welcome.id), id(commit.conv.0), welcome.payload, id(commit.at_ms)],
        )
        .map_err(backend)?;
        for device in welcome.devices {
            conn.execute(
                "INSERT OR IGNORE INTO welcome_targets (device_id, welcome_id) VALUES (?, ?)",
                params![id(device.0), id(welcome.id)],
            )
            .map_err(backend)?;
        }
    }
    Ok(CommitAccepted { seq, epoch, duplicate: false })
}

pub(crate) fn messages_after(conn: &Connection, conv: ConvId, after: Seq, limit: u32) -> StoreResult<Vec<Message>> {
    conn.prepare_cached(
        "SELECT seq, sender, sender_device, msg_id, kind, epoch, sent_at_ms, payload FROM messages
         WHERE conv_id = ? AND seq > ? ORDER BY seq LIMIT ?",
    )
    .and_then(|mut stmt| {
        stmt.query_map(params![id(conv.0), id(after), limit], |r| {
            let msg_id: Vec<u8> = r.get(3)?;
            let mut id_bytes = [0u8; 16];
            if msg_id.len() == 16 {
                id_bytes.copy_from_slice(&msg_id);
            }
            let kind = if r.get::<_, i64>(4)? == KIND_COMMIT {
                MessageKind::Commit { epoch: uid(r.get(5)?) }
            } else {
                MessageKind::Application
            };
            Ok(Message {
                conv,
                seq: uid(r.get(0)?),
                sender: UserId(uid(r.get(1)?)),
                sender_device: DeviceId(uid(r.get(2)?)),
                msg_id: MsgId(id_bytes),
                kind,
                sent_at_ms: uid(r.get(6)?),
                payload: r.get(7)?,
            })
        })?
        .collect()
    })
    .map_err(backend)
}

pub(crate) fn cursors(conn: &Connection, device: DeviceId) -> StoreResult<Vec<(ConvId, Seq)>> {
    conn.prepare_cached("SELECT conv_id, acked_seq FROM cursors WHERE device_id = ?")
        .and_then(|mut stmt| {
            stmt.query_map([id(device.0)], |r| Ok((ConvId(uid(r.get(0)?)), uid(r.get(1)?))))?.collect()
        })
        .map_err(backend)
}

pub(crate) fn ack(conn: &Connection, device: DeviceId, conv: ConvId, seq: Seq) -> StoreResult<()> {
    let changed = conn
        .prepare_cached("UPDATE cursors SET acked_seq = MAX(acked_seq, ?) WHERE device_id = ? AND conv_id = ?")
        .and_then(|mut stmt| stmt.execute(params![id(seq), id(device.0), id(conv.0)]))
        .map_err(backend)?;
    if changed == 0 {
        return Err(StoreError::Rejected(ErrorCode::ConversationNotFound));
    }
    Ok(())
}

pub(crate) fn pending_welcomes(conn: &Connection, device: DeviceId) -> StoreResult<Vec<PendingWelcome>> {
    conn.prepare_cached(
        "SELECT w.id, w.conv_id, w.payload FROM welcome_targets t JOIN welcomes w ON w.id = t.welcome_id
         WHERE t.device_id = ? ORDER BY w.created_at_ms",
    )
    .and_then(|mut stmt| {
        stmt.query_map([id(device.0)], |r| {
            Ok(PendingWelcome { id: uid(r.get(0)?), conv: ConvId(uid(r.get(1)?)), payload: r.get(2)? })
        })?
        .collect()
    })
    .map_err(backend)
}

pub(crate) fn ack_welcome(conn: &Connection, device: DeviceId, welcome: u64) -> StoreResult<()> {
    let removed = conn
        .execute(
            "DELETE FROM welcome_targets WHERE device_id = ? AND welcome_id = ?",
            params![id(device.0), id(welcome)],
        )
        .map_err(backend)?;
    if removed == 0 {
        return Err(StoreError::Rejected(ErrorCode::UnknownWelcome));
    }
    conn.execute(
        "DELETE FROM welcomes WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM welcome_targets WHERE welcome_id = ?1)",
        [id(welcome)],
    )
    .map_err(backend)?;
    Ok(())
}

pub(crate) fn collect_garbage(conn: &Connection, now_ms: u64, retention_ms: u64) -> StoreResult<Collected> {
    let cutoff = id(now_ms.saturating_sub(retention_ms));
    let mut collected = Collected::default();
    // Every device of every member acknowledged these (conversations with no device at all
    // have nobody left to deliver to).
    collected.messages += conn
        .execute(
            "DELETE FROM messages WHERE rowid IN (
                SELECT m.rowid FROM messages m
                LEFT JOIN (SELECT conv_id, MIN(acked_seq) AS low FROM cursors GROUP BY conv_id) c
                  ON c.conv_id = m.conv_id
                WHERE c.low IS NULL OR m.seq <= c.low
                LIMIT ?)",
            [GC_ROWS_MAX],
        )
        .map_err(backend)? as u64;
    collected.messages += conn
        .execute(
            "DELETE FROM messages WHERE rowid IN (SELECT rowid FROM messages WHERE sent_at_ms < ? LIMIT ?)",
            params![cutoff, GC_ROWS_MAX],
        )
        .map_err(backend)? as u64;
    conn.execute("DELETE FROM sent_ids WHERE at_ms < ?", [cutoff]).map_err(backend)?;
    conn.execute("DELETE FROM welcomes WHERE created_at_ms < ?", [cutoff]).map_err(backend)?;
    conn.execute("DELETE FROM welcome_targets WHERE welcome_id NOT IN (SELECT id FROM welcomes)", [])
        .map_err(backend)?;
    let expired: Vec<i64> = conn
        .prepare_cached("SELECT id FROM devices WHERE expires_at_ms <= ? LIMIT ?")
        .and_then(|mut stmt| stmt.query_map([id(now_ms), GC_EXPIRED_DEVICES_MAX as i64], |r| r.get(0))?.collect())
        .map_err(backend)?;
    for device in &expired {
        crate::accounts::delete_device(conn, *device).map_err(backend)?;
    }
    collected.expired_devices = expired.iter().map(|d| DeviceId(uid(*d))).collect();
    Ok(collected)
}
