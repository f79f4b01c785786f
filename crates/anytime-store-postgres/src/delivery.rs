//! The delivery path: appending messages and commits, cursors, welcomes, garbage collection.

use anytime_proto::frame::{Message, MessageKind, Seq};
use anytime_proto::limits::GC_EXPIRED_DEVICES_MAX;
use anytime_proto::{ConvId, DeviceId, ErrorCode, MsgId, UserId};
use anytime_server_core::store::{
    Appended, Collected, CommitAccepted, NewCommit, NewMessage, PendingWelcome, StoreError, StoreResult,
};
use deadpool_postgres::{GenericClient, Pool};

use crate::accounts::delete_device;
use crate::conversations::lock_conversation;
use crate::pg::{backend, client, exec, id, query, query_one, query_opt, rejected, uid};

struct SentBefore {
    conv: ConvId,
    seq: Seq,
    epoch_after: Option<u64>,
}

async fn sent_before<C: GenericClient>(c: &C, device: DeviceId, msg_id: &MsgId) -> StoreResult<Option<SentBefore>> {
    let row = query_opt(
        c,
        "SELECT conv_id, seq, epoch_after FROM sent_ids WHERE device_id = $1 AND msg_id = $2",
        &[&id(device.0), &&msg_id.0[..]],
    )
    .await?;
    Ok(row.map(|r| SentBefore {
        conv: ConvId(uid(r.get(0))),
        seq: uid(r.get(1)),
        epoch_after: r.get::<_, Option<i64>>(2).map(uid),
    }))
}

#[allow(clippy::too_many_arguments)]
async fn insert_message<C: GenericClient>(
    c: &C,
    conv: ConvId,
    seq: Seq,
    sender: UserId,
    device: DeviceId,
    msg_id: &MsgId,
    kind: i16,
    epoch: u64,
    at_ms: u64,
    payload: &[u8],
    epoch_after: Option<u64>,
) -> StoreResult<()> {
    exec(
        c,
        "INSERT INTO messages (conv_id, seq, sender, sender_device, msg_id, kind, epoch, sent_at_ms, payload)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[&id(conv.0), &id(seq), &id(sender.0), &id(device.0), &&msg_id.0[..], &kind, &id(epoch), &id(at_ms), &payload],
    )
    .await?;
    exec(
        c,
        "INSERT INTO sent_ids (device_id, msg_id, conv_id, seq, epoch_after, at_ms) VALUES ($1, $2, $3, $4, $5, $6)",
        &[&id(device.0), &&msg_id.0[..], &id(conv.0), &id(seq), &epoch_after.map(id), &id(at_ms)],
    )
    .await?;
    Ok(())
}

/// Appends one message inside the caller's transaction (the batch writer's).
pub(crate) async fn append_message_in<C: GenericClient>(c: &C, m: &NewMessage) -> StoreResult<Appended> {
    if let Some(before) = sent_before(c, m.sender_device, &m.msg_id).await? {
        if before.conv != m.conv || before.epoch_after.is_some() {
            return Err(rejected(ErrorCode::MessageIdReused));
        }
        return Ok(Appended { seq: before.seq, duplicate: true });
    }
    // The row lock taken here orders this conversation's seqs across nodes until commit.
    let row = query_opt(
        c,
        "UPDATE conversations SET last_seq = last_seq + 1 WHERE id = $1 RETURNING last_seq",
        &[&id(m.conv.0)],
    )
    .await?;
    let Some(row) = row else { return Err(rejected(ErrorCode::ConversationNotFound)) };
    let seq = uid(row.get(0));
    // A concurrent first send of the same id on another node makes this insert conflict; the
    // job fails and the client's retry then finds the stored id.
    insert_message(c, m.conv, seq, m.sender, m.sender_device, &m.msg_id, 0, 0, m.at_ms, &m.payload, None).await?;
    Ok(Appended { seq, duplicate: false })
}

pub(crate) async fn append_commit(pool: &Pool, commit: NewCommit) -> StoreResult<CommitAccepted> {
    let mut c = client(pool).await?;
    let tx = c.transaction().await.map_err(backend)?;
    lock_conversation(&tx, commit.conv).await?;
    if let Some(before) = sent_before(&tx, commit.sender_device, &commit.msg_id).await? {
        return match before.epoch_after {
            Some(epoch) if before.conv == commit.conv => Ok(CommitAccepted { seq: before.seq, epoch, duplicate: true }),
            _ => Err(rejected(ErrorCode::MessageIdReused)),
        };
    }
    let accepted = query_opt(&tx,
            "UPDATE conversations SET last_seq = last_seq + 1, epoch = epoch + 1 WHERE id = $1 AND epoch = $2 RETURNING last_seq, epoch",
            &[&id(commit.conv.0), &id(commit.epoch)],
        ).await?;
    let Some(row) = accepted else {
        let current: i64 =
            query_one(&tx, "SELECT epoch FROM conversations WHERE id = $1", &[&id(commit.conv.0)]).await?.get(0);
        return Err(StoreError::EpochMismatch { current: uid(current) });
    };
    let (seq, epoch) = (uid(row.get(0)), uid(row.get(1)));
    insert_message(
        &tx,
        commit.conv,
        seq,
        commit.sender,
        commit.sender_device,
        &commit.msg_id,
        1,
        commit.epoch,
        commit.at_ms,
        &commit.commit,
        Some(epoch),
    )
    .await?;
    if let Some(welcome) = commit.welcome {
        exec(
            &tx,
            "INSERT INTO welcomes (id, conv_id, payload, created_at_ms) VALUES ($1, $2, $3, $4)",
            &[&id(welcome.id), &id(commit.conv.0), &welcome.payload, &id(commit.at_ms)],
        )
        .await?;
        for device in welcome.devices {
            exec(
                &tx,
                "INSERT INTO welcome_targets (device_id, welcome_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&id(device.0), &id(welcome.id)],
            )
            .await?;
        }
    }
    tx.commit().await.map_err(backend)?;
    Ok(CommitAccepted { seq, epoch, duplicate: false })
}

pub(crate) async fn messages_after(pool: &Pool, conv: ConvId, after: Seq, limit: u32) -> StoreResult<Vec<Message>> {
    let rows = query(
        &client(pool).await?,
        "SELECT seq, sender, sender_device, msg_id, kind, epoch, sent_at_ms, payload FROM messages
             WHERE conv_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        &[&id(conv.0), &id(after), &i64::from(limit)],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let raw: Vec<u8> = r.get(3);
            let mut msg_id = [0u8; 16];
            if raw.len() == 16 {
                msg_id.copy_from_slice(&raw);
            }
            let kind = if r.get::<_, i16>(4) == 1 {
                MessageKind::Commit { epoch: uid(r.get(5)) }
            } else {
                MessageKind::Application
            };
            Message {
                conv,
                seq: uid(r.get(0)),
                sender: UserId(uid(r.get(1))),
                sender_device: DeviceId(uid(r.get(2))),
                msg_id: MsgId(msg_id),
                kind,
                sent_at_ms: uid(r.get(6)),
                payload: r.get(7),
            }
        })
        .collect())
}

pub(crate) async fn cursors(pool: &Pool, device: DeviceId) -> StoreResult<Vec<(ConvId, Seq)>> {
    let rows =
        query(&client(pool).await?, "SELECT conv_id, acked_seq FROM cursors WHERE device_id = $1", &[&id(device.0)])
            .await?;
    Ok(rows.iter().map(|r| (ConvId(uid(r.get(0))), uid(r.get(1)))).collect())
}

pub(crate) async fn ack_in<C: GenericClient>(c: &C, device: DeviceId, conv: ConvId, seq: Seq) -> StoreResult<()> {
    let changed = exec(
        c,
        "UPDATE cursors SET acked_seq = GREATEST(acked_seq, $1) WHERE device_id = $2 AND conv_id = $3",
        &[&id(seq), &id(device.0), &id(conv.0)],
    )
    .await?;
    if changed == 0 {
        return Err(rejected(ErrorCode::ConversationNotFound));
    }
    Ok(())
}
pub(crate) async fn pending_welcomes(pool: &Pool, device: DeviceId) -> StoreResult<Vec<PendingWelcome>> {
    let rows = query(
        &client(pool).await?,
        "SELECT w.id, w.conv_id, w.payload FROM welcome_targets t JOIN welcomes w ON w.id = t.welcome_id
             WHERE t.device_id = $1 ORDER BY w.created_at_ms",
        &[&id(device.0)],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| PendingWelcome { id: uid(r.get(0)), conv: ConvId(uid(r.get(1))), payload: r.get(2) })
        .collect())
}

pub(crate) async fn ack_welcome(pool: &Pool, device: DeviceId, welcome: u64) -> StoreResult<()> {
    let mut c = client(pool).await?;
    let tx = c.transaction().await.map_err(backend)?;
    let removed = exec(
        &tx,
        "DELETE FROM welcome_targets WHERE device_id = $1 AND welcome_id = $2",
        &[&id(device.0), &id(welcome)],
    )
    .await?;
    if removed == 0 {
        return Err(rejected(ErrorCode::UnknownWelcome));
    }
    exec(
        &tx,
        "DELETE FROM welcomes WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM welcome_targets WHERE welcome_id = $1)",
        &[&id(welcome)],
    )
    .await?;
    tx.commit().await.map_err(backend)
}

pub(crate) async fn collect_garbage(pool: &Pool, now_ms: u64, retention_ms: u64) -> StoreResult<Collected> {
    let cutoff = id(now_ms.saturating_sub(retention_ms));
    let mut c = client(pool).await?;
    let tx = c.transaction().await.map_err(backend)?;
    let acked = exec(
        &tx,
        "DELETE FROM messages m WHERE m.seq <= COALESCE(
                (SELECT MIN(acked_seq) FROM cursors c WHERE c.conv_id = m.conv_id), m.seq)",
        &[],
    )
    .await?;
    let expired = exec(&tx, "DELETE FROM messages WHERE sent_at_ms < $1", &[&cutoff]).await?;
    exec(&tx, "DELETE FROM sent_ids WHERE at_ms < $1", &[&cutoff]).await?;
    exec(&tx, "DELETE FROM welcomes WHERE created_at_ms < $1", &[&cutoff]).await?;
    exec(
        &tx,
        "DELETE FROM welcome_targets t WHERE NOT EXISTS (SELECT 1 FROM welcomes w WHERE w.id = t.welcome_id)",
        &[],
    )
    .await?;
    let limit = GC_EXPIRED_DEVICES_MAX as i64;
    let stale: Vec<i64> =
        query(&tx, "SELECT id FROM devices WHERE expires_at_ms <= $1 LIMIT $2", &[&id(now_ms), &limit])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
    for device in &stale {
        delete_device(&tx, *device).await?;
    }
    tx.commit().await.map_err(backend)?;
    Ok(Collected { messages: acked + expired, expired_devices: stale.iter().map(|d| DeviceId(uid(*d))).collect() })
}
