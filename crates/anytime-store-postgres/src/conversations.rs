//! Conversations, membership and invite links.

use anytime_proto::frame::{ConvKind, ConversationSummary};
use anytime_proto::{ConvId, DeviceId, ErrorCode, UserId};
use anytime_server_core::store::{ConversationRecord, InviteRecord, MemberRecord, NewConversation, StoreResult};
use deadpool_postgres::{GenericClient, Pool};

use crate::pg::{backend, client, direct_key, exec, execute, id, query, query_one, query_opt, rejected, uid};

fn kind_to_i16(kind: ConvKind) -> i16 {
    match kind {
        ConvKind::Direct => 0,
        ConvKind::Group => 1,
    }
}

fn kind_from_i16(n: i16) -> ConvKind {
    if n == 0 {
        ConvKind::Direct
    } else {
        ConvKind::Group
    }
}

async fn insert_member<C: GenericClient>(
    c: &C,
    conv: ConvId,
    user: UserId,
    admin: bool,
    at_ms: u64,
) -> StoreResult<()> {
    exec(
        c,
        "INSERT INTO members (conv_id, user_id, admin, joined_at_ms) VALUES ($1, $2, $3, $4)",
        &[&id(conv.0), &id(user.0), &admin, &id(at_ms)],
    )
    .await?;
    exec(c,
        "INSERT INTO cursors (device_id, conv_id, acked_seq)
         SELECT d.id, $1, (SELECT last_seq FROM conversations WHERE id = $1) FROM devices d WHERE d.user_id = $2 AND d.approved
         ON CONFLICT DO NOTHING",
        &[&id(conv.0), &id(user.0)],
    ).await?;
    Ok(())
}

pub(crate) async fn create_conversation(pool: &Pool, new: NewConversation) -> StoreResult<ConvId> {
    let key = match (new.kind, new.members.as_slice()) {
        (ConvKind::Direct, [peer]) => Some(direct_key(new.creator, *peer)),
        (ConvKind::Direct, _) => return Err(rejected(ErrorCode::InvalidArgument)),
        (ConvKind::Group, _) => None,
    };
    let mut c = client(pool).await?;
    let tx = c.transaction().await.map_err(backend)?;
    let inserted = exec(&tx,
            "INSERT INTO conversations (id, kind, name, epoch, last_seq, direct_key, created_at_ms) VALUES ($1, $2, $3, 0, 0, $4, $5)
             ON CONFLICT (direct_key) DO NOTHING",
            &[&id(new.id.0), &kind_to_i16(new.kind), &new.name, &key, &id(new.created_at_ms)],
        ).await?;
    if inserted == 0 {
        // The direct chat of this pair exists already (maybe created by the other side just now).
        let row = query_one(&tx, "SELECT id FROM conversations WHERE direct_key = $1", &[&key]).await?;
        return Ok(ConvId(uid(row.get(0))));
    }
    insert_member(&tx, new.id, new.creator, new.kind == ConvKind::Group, new.created_at_ms).await?;
    for user in new.members {
        insert_member(&tx, new.id, user, false, new.created_at_ms).await?;
    }
    tx.commit().await.map_err(backend)?;
    Ok(new.id)
}

pub(crate) async fn conversation(pool: &Pool, conv: ConvId) -> StoreResult<Option<ConversationRecord>> {
    let row = query_opt(
        &client(pool).await?,
        "SELECT kind, name, epoch, last_seq, created_at_ms FROM conversations WHERE id = $1",
        &[&id(conv.0)],
    )
    .await?;
    Ok(row.map(|r| ConversationRecord {
        id: conv,
        kind: kind_from_i16(r.get(0)),
        name: r.get(1),
        epoch: uid(r.get(2)),
        last_seq: uid(r.get(3)),
        created_at_ms: uid(r.get(4)),
    }))
}

pub(crate) async fn members(pool: &Pool, conv: ConvId) -> StoreResult<Vec<MemberRecord>> {
    let rows = query(
        &client(pool).await?,
        "SELECT user_id, admin FROM members WHERE conv_id = $1 ORDER BY joined_at_ms, user_id",
        &[&id(conv.0)],
    )
    .await?;
    Ok(rows.iter().map(|r| MemberRecord { user: UserId(uid(r.get(0))), admin: r.get(1) }).collect())
}

pub(crate) async fn member_devices(pool: &Pool, conv: ConvId) -> StoreResult<Vec<(UserId, DeviceId)>> {
    let rows = query(&client(pool).await?,
            "SELECT m.user_id, d.id FROM members m JOIN devices d ON d.user_id = m.user_id WHERE m.conv_id = $1 AND d.approved",
            &[&id(conv.0)],
        ).await?;
    Ok(rows.iter().map(|r| (UserId(uid(r.get(0))), DeviceId(uid(r.get(1))))).collect())
}

pub(crate) async fn conversations_of(pool: &Pool, user: UserId) -> StoreResult<Vec<ConversationSummary>> {
    let rows = query(
        &client(pool).await?,
        "SELECT c.id, c.kind, c.name, c.epoch, c.last_seq, (SELECT COUNT(*) FROM members m2 WHERE m2.conv_id = c.id)
             FROM members m JOIN conversations c ON c.id = m.conv_id WHERE m.user_id = $1 ORDER BY c.created_at_ms",
        &[&id(user.0)],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| ConversationSummary {
            conv: ConvId(uid(r.get(0))),
            kind: kind_from_i16(r.get(1)),
            name: r.get(2),
            epoch: uid(r.get(3)),
            last_seq: uid(r.get(4)),
            member_count: r.get::<_, i64>(5) as u32,
        })
        .collect())
}

/// Locks the conversation row: membership changes of one conversation run one at a time.
pub(crate) async fn lock_conversation<C: GenericClient>(c: &C, conv: ConvId) -> StoreResult<()> {
    let found = query_opt(c, "SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE", &[&id(conv.0)]).await?;
    if found.is_none() {
        return Err(rejected(ErrorCode::ConversationNotFound));
    }
    Ok(())
}

async fn add_members_in<C: GenericClient>(
    c: &C,
    conv: ConvId,
    users: Vec<UserId>,
    max: u32,
    at_ms: u64,
) -> StoreResult<()> {
    lock_conversation(c, conv).await?;
    let present: Vec<i64> = query(c, "SELECT user_id FROM members WHERE conv_id = $1", &[&id(conv.0)])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let new: Vec<UserId> = users.into_iter().filter(|u| !present.contains(&id(u.0))).collect();
    if new.is_empty() {
        return Err(rejected(ErrorCode::AlreadyMember));
    }
    if present.len() + new.len() > max as usize {
        return Err(rejected(ErrorCode::TooManyMembers));
    }
    for user in new {
        insert_member(c, conv, user, false, at_ms).await?;
    }
    Ok(())
}

pub(crate) async fn add_members(
    pool: &Pool,
    conv: ConvId,
    users: Vec<UserId>,
    max: u32,
    at_ms: u64,
) -> StoreResult<()> {
    let mut c = client(pool).await?;
    let tx = c.transaction().await.map_err(backend)?;
    add_members_in(&tx, conv, users, max, at_ms).await?;
    tx.commit().await.map_err(backend)
}

pub(crate) async fn remove_member(pool: &Pool, conv: ConvId, user: UserId) -> StoreResult<()> {
    let mut c = client(pool).await?;
    let tx = c.transaction().await.map_err(backend)?;
    lock_conversation(&tx, conv).await?;
    let removed =
        exec(&tx, "DELETE FROM members WHERE conv_id = $1 AND user_id = $2", &[&id(conv.0), &id(user.0)]).await?;
    if removed == 0 {
        return Err(rejected(ErrorCode::NotMember));
    }
    exec(
        &tx,
        "DELETE FROM cursors WHERE conv_id = $1 AND device_id IN (SELECT id FROM devices WHERE user_id = $2)",
        &[&id(conv.0), &id(user.0)],
    )
    .await?;
    let left: i64 = query_one(&tx, "SELECT COUNT(*) FROM members WHERE conv_id = $1", &[&id(conv.0)]).await?.get(0);
    if left == 0 {
        for sql in [
            "DELETE FROM conversations WHERE id = $1",
            "DELETE FROM messages WHERE conv_id = $1",
            "DELETE FROM invites WHERE conv_id = $1",
        ] {
            exec(&tx, sql, &[&id(conv.0)]).await?;
        }
    } else {
        // A group always keeps an admin: promote the longest-standing member if none is left.
        exec(
            &tx,
            "UPDATE members SET admin = TRUE WHERE conv_id = $1
               AND NOT EXISTS (SELECT 1 FROM members WHERE conv_id = $1 AND admin)
               AND user_id = (SELECT user_id FROM members WHERE conv_id = $1 ORDER BY joined_at_ms, user_id LIMIT 1)
               AND (SELECT kind FROM conversations WHERE id = $1) = 1",
            &[&id(conv.0)],
        )
        .await?;
    }
    tx.commit().await.map_err(backend)
}

pub(crate) async fn set_admin(pool: &Pool, conv: ConvId, user: UserId, admin: bool) -> StoreResult<()> {
    let mut c = client(pool).await?;
    let tx = c.transaction().await.map_err(backend)?;
    lock_conversation(&tx, conv).await?;
    let changed = exec(
        &tx,
        "UPDATE members SET admin = $1 WHERE conv_id = $2 AND user_id = $3",
        &[&admin, &id(conv.0), &id(user.0)],
    )
    .await?;
    if changed == 0 {
        return Err(rejected(ErrorCode::NotMember));
    }
    let admins: i64 =
        query_one(&tx, "SELECT COUNT(*) FROM members WHERE conv_id = $1 AND admin", &[&id(conv.0)]).await?.get(0);
    if admins == 0 {
        return Err(rejected(ErrorCode::InvalidArgument));
    }
    tx.commit().await.map_err(backend)
}

pub(crate) async fn create_invite(pool: &Pool, invite: InviteRecord) -> StoreResult<()> {
    execute(
        pool,
        "INSERT INTO invites (code, conv_id, created_by, expires_at_ms, max_uses, uses, revoked) VALUES ($1, $2, $3, $4, $5, 0, FALSE)",
        &[&invite.code, &id(invite.conv.0), &id(invite.created_by.0), &id(invite.expires_at_ms), &(invite.max_uses as i32)],
    )
    .await
}

pub(crate) async fn invite(pool: &Pool, code: &str) -> StoreResult<Option<InviteRecord>> {
    let row = query_opt(
        &client(pool).await?,
        "SELECT conv_id, created_by, expires_at_ms, max_uses, uses, revoked FROM invites WHERE code = $1",
        &[&code],
    )
    .await?;
    Ok(row.map(|r| InviteRecord {
        code: code.to_owned(),
        conv: ConvId(uid(r.get(0))),
        created_by: UserId(uid(r.get(1))),
        expires_at_ms: uid(r.get(2)),
        max_uses: r.get::<_, i32>(3) as u32,
        uses: r.get::<_, i32>(4) as u32,
        revoked: r.get(5),
    }))
}

pub(crate) async fn revoke_invite(pool: &Pool, code: &str) -> StoreResult<()> {
    let changed = exec(&client(pool).await?, "UPDATE invites SET revoked = TRUE WHERE code = $1", &[&code]).await?;
    if changed == 0 {
        return Err(rejected(ErrorCode::InviteNotFound));
    }
    Ok(())
}

pub(crate) async fn join_invite(pool: &Pool, code: &str, user: UserId, now_ms: u64, max: u32) -> StoreResult<ConvId> {
    let mut c = client(pool).await?;
    let tx = c.transaction().await.map_err(backend)?;
    let used = query_opt(&tx,
            "UPDATE invites SET uses = uses + 1 WHERE code = $1 AND NOT revoked AND expires_at_ms > $2 AND uses < max_uses RETURNING conv_id",
            &[&code, &id(now_ms)],
        ).await?;
    let Some(row) = used else {
        let invite = query_opt(&tx, "SELECT revoked, expires_at_ms FROM invites WHERE code = $1", &[&code]).await?;
        return Err(rejected(match invite {
            None => ErrorCode::InviteNotFound,
            Some(r) if r.get::<_, bool>(0) => ErrorCode::InviteRevoked,
            Some(r) if uid(r.get(1)) <= now_ms => ErrorCode::InviteExpired,
            Some(_) => ErrorCode::InviteExhausted,
        }));
    };
    let conv = ConvId(uid(row.get(0)));
    add_members_in(&tx, conv, vec![user], max, now_ms).await?;
    tx.commit().await.map_err(backend)?;
    Ok(conv)
}
