//! Conversations, membership and invite links.

use anytime_proto::frame::{ConvKind, ConversationSummary};
use anytime_proto::{ConvId, DeviceId, ErrorCode, UserId};
use anytime_server_core::store::{
    ConversationRecord, InviteRecord, MemberRecord, NewConversation, StoreError, StoreResult,
};
use rusqlite::{params, Connection, OptionalExtension};

use crate::accounts::direct_key;
use crate::engine::backend;
use crate::sql::{id, uid};

fn kind_to_i64(kind: ConvKind) -> i64 {
    match kind {
        ConvKind::Direct => 0,
        ConvKind::Group => 1,
    }
}

fn kind_from_i64(n: i64) -> ConvKind {
    if n == 0 {
        ConvKind::Direct
    } else {
        ConvKind::Group
    }
}

pub(crate) fn create_conversation(conn: &Connection, new: NewConversation) -> StoreResult<ConvId> {
    let key = match (new.kind, new.members.as_slice()) {
        (ConvKind::Direct, [peer]) => Some(direct_key(new.creator, *peer)),
        (ConvKind::Direct, _) => return Err(StoreError::Rejected(ErrorCode::InvalidArgument)),
        (ConvKind::Group, _) => None,
    };
    if let Some(key) = &key {
        let existing: Option<i64> = conn
            .query_row("SELECT id FROM conversations WHERE direct_key = ?", [key], |r| r.get(0))
            .optional()
            .map_err(backend)?;
        if let Some(existing) = existing {
            return Ok(ConvId(uid(existing)));
        }
    }
    conn.execute(
        "INSERT INTO conversations (id, kind, name, epoch, last_seq, direct_key, created_at_ms) VALUES (?, ?, ?, 0, 0, ?, ?)",
        params![id(new.id.0), kind_to_i64(new.kind), new.name, key, id(new.created_at_ms)],
    )
    .map_err(backend)?;
    let creator_is_admin = new.kind == ConvKind::Group;
    insert_member(conn, new.id, new.creator, creator_is_admin, new.created_at_ms)?;
    for user in new.members {
        insert_member(conn, new.id, user, false, new.created_at_ms)?;
    }
    Ok(new.id)
}

/// Adds the member and starts each of its devices at the conversation's current end.
fn insert_member(conn: &Connection, conv: ConvId, user: UserId, admin: bool, at_ms: u64) -> StoreResult<()> {
    conn.prepare_cached("INSERT INTO members (conv_id, user_id, admin, joined_at_ms) VALUES (?, ?, ?, ?)")
        .and_then(|mut stmt| stmt.execute(params![id(conv.0), id(user.0), admin, id(at_ms)]))
        .map_err(backend)?;
    conn.prepare_cached(
        "INSERT OR IGNORE INTO cursors (device_id, conv_id, acked_seq)
         SELECT d.id, ?1, (SELECT last_seq FROM conversations WHERE id = ?1) FROM devices d WHERE d.user_id = ?2 AND d.approved = 1",
    )
    .and_then(|mut stmt| stmt.execute(params![id(conv.0), id(user.0)]))
    .map_err(backend)?;
    Ok(())
}

pub(crate) fn conversation(conn: &Connection, conv: ConvId) -> StoreResult<Option<ConversationRecord>> {
    conn.prepare_cached("SELECT kind, name, epoch, last_seq, created_at_ms FROM conversations WHERE id = ?")
        .and_then(|mut stmt| {
            stmt.query_row([id(conv.0)], |r| {
                Ok(ConversationRecord {
                    id: conv,
                    kind: kind_from_i64(r.get(0)?),
                    name: r.get(1)?,
                    epoch: uid(r.get(2)?),
                    last_seq: uid(r.get(3)?),
                    created_at_ms: uid(r.get(4)?),
                })
            })
            .optional()
        })
        .map_err(backend)
}

pub(crate) fn members(conn: &Connection, conv: ConvId) -> StoreResult<Vec<MemberRecord>> {
    conn.prepare_cached("SELECT user_id, admin FROM members WHERE conv_id = ? ORDER BY joined_at_ms, user_id")
        .and_then(|mut stmt| {
            stmt.query_map([id(conv.0)], |r| Ok(MemberRecord { user: UserId(uid(r.get(0)?)), admin: r.get(1)? }))?
                .collect()
        })
        .map_err(backend)
}

pub(crate) fn member(conn: &Connection, conv: ConvId, user: UserId) -> StoreResult<Option<MemberRecord>> {
    conn.prepare_cached("SELECT admin FROM members WHERE conv_id = ? AND user_id = ?")
        .and_then(|mut stmt| {
            stmt.query_row(params![id(conv.0), id(user.0)], |r| Ok(MemberRecord { user, admin: r.get(0)? })).optional()
        })
        .map_err(backend)
}

pub(crate) fn member_devices(conn: &Connection, conv: ConvId) -> StoreResult<Vec<(UserId, DeviceId)>> {
    conn.prepare_cached(
        "SELECT m.user_id, d.id FROM members m JOIN devices d ON d.user_id = m.user_id WHERE m.conv_id = ? AND d.approved = 1",
    )
    .and_then(|mut stmt| {
        stmt.query_map([id(conv.0)], |r| Ok((UserId(uid(r.get(0)?)), DeviceId(uid(r.get(1)?)))))?.collect()
    })
    .map_err(backend)
}

pub(crate) fn conversations_of(conn: &Connection, user: UserId) -> StoreResult<Vec<ConversationSummary>> {
    conn.prepare_cached(
        "SELECT c.id, c.kind, c.name, c.epoch, c.last_seq,
                (SELECT COUNT(*) FROM members m2 WHERE m2.conv_id = c.id)
         FROM members m JOIN conversations c ON c.id = m.conv_id WHERE m.user_id = ? ORDER BY c.created_at_ms",
    )
    .and_then(|mut stmt| {
        stmt.query_map([id(user.0)], |r| {
            Ok(ConversationSummary {
                conv: ConvId(uid(r.get(0)?)),
                kind: kind_from_i64(r.get(1)?),
                name: r.get(2)?,
                epoch: uid(r.get(3)?),
                last_seq: uid(r.get(4)?),
                member_count: r.get(5)?,
            })
        })?
        .collect()
    })
    .map_err(backend)
}

pub(crate) fn rename(conn: &Connection, conv: ConvId, name: String) -> StoreResult<()> {
    conn.execute("UPDATE conversations SET name = ? WHERE id = ?", params![name, id(conv.0)]).map_err(backend)?;
    Ok(())
}

fn member_count(conn: &Connection, conv: ConvId) -> StoreResult<u32> {
    conn.query_row("SELECT COUNT(*) FROM members WHERE conv_id = ?", [id(conv.0)], |r| r.get(0)).map_err(backend)
}

pub(crate) fn add_members(
    conn: &Connection,
    conv: ConvId,
    users: Vec<UserId>,
    max: u32,
    at_ms: u64,
) -> StoreResult<()> {
    let mut new = Vec::with_capacity(users.len());
    for user in users {
        if member(conn, conv, user)?.is_none() {
            new.push(user);
        }
    }
    if new.is_empty() {
        return Err(StoreError::Rejected(ErrorCode::AlreadyMember));
    }
    if member_count(conn, conv)? as usize + new.len() > max as usize {
        return Err(StoreError::Rejected(ErrorCode::TooManyMembers));
    }
    for user in new {
        insert_member(conn, conv, user, false, at_ms)?;
    }
    Ok(())
}

pub(crate) fn remove_member(conn: &Connection, conv: ConvId, user: UserId) -> StoreResult<()> {
    let removed = conn
        .execute("DELETE FROM members WHERE conv_id = ? AND user_id = ?", params![id(conv.0), id(user.0)])
        .map_err(backend)?;
    if removed == 0 {
        return Err(StoreError::Rejected(ErrorCode::NotMember));
    }
    conn.execute(
        "DELETE FROM cursors WHERE conv_id = ?1 AND device_id IN (SELECT id FROM devices WHERE user_id = ?2)",
        params![id(conv.0), id(user.0)],
    )
    .map_err(backend)?;
    if member_count(conn, conv)? == 0 {
        for sql in [
            "DELETE FROM conversations WHERE id = ?",
            "DELETE FROM messages WHERE conv_id = ?",
            "DELETE FROM invites WHERE conv_id = ?",
        ] {
            conn.execute(sql, [id(conv.0)]).map_err(backend)?;
        }
        return Ok(());
    }
    // A group always keeps an admin: promote the longest-standing member if none is left.
    conn.execute(
        "UPDATE members SET admin = 1 WHERE conv_id = ?1
           AND NOT EXISTS (SELECT 1 FROM members WHERE conv_id = ?1 AND admin = 1)
           AND user_id = (SELECT user_id FROM members WHERE conv_id = ?1 ORDER BY joined_at_ms, user_id LIMIT 1)
           AND (SELECT kind FROM conversations WHERE id = ?1) = 1",
        [id(conv.0)],
    )
    .map_err(backend)?;
    Ok(())
}

pub(crate) fn set_admin(conn: &Connection, conv: ConvId, user: UserId, admin: bool) -> StoreResult<()> {
    let changed = conn
        .execute(
            "UPDATE members SET admin = ? WHERE conv_id = ? AND user_id = ?",
            params![admin, id(conv.0), id(user.0)],
        )
        .map_err(backend)?;
    if changed == 0 {
        return Err(StoreError::Rejected(ErrorCode::NotMember));
    }
    let admins: u32 = conn
        .query_row("SELECT COUNT(*) FROM members WHERE conv_id = ? AND admin = 1", [id(conv.0)], |r| r.get(0))
        .map_err(backend)?;
    if admins == 0 {
        // Demoting the last admin would orphan the group.
        return Err(StoreError::Rejected(ErrorCode::InvalidArgument));
    }
    Ok(())
}

pub(crate) fn create_invite(conn: &Connection, invite: InviteRecord) -> StoreResult<()> {
    conn.execute(
        "INSERT INTO invites (code, conv_id, created_by, expires_at_ms, max_uses, uses, revoked) VALUES (?, ?, ?, ?, ?, 0, 0)",
        params![invite.code, id(invite.conv.0), id(invite.created_by.0), id(invite.expires_at_ms), invite.max_uses],
    )
    .map_err(backend)?;
    Ok(())
}

pub(crate) fn invite(conn: &Connection, code: &str) -> StoreResult<Option<InviteRecord>> {
    conn.prepare_cached(
        "SELECT conv_id, created_by, expires_at_ms, max_uses, uses, revoked FROM invites WHERE code = ?",
    )
    .and_then(|mut stmt| {
        stmt.query_row([code], |r| {
            Ok(InviteRecord {
                code: code.to_owned(),
                conv: ConvId(uid(r.get(0)?)),
                created_by: UserId(uid(r.get(1)?)),
                expires_at_ms: uid(r.get(2)?),
                max_uses: r.get(3)?,
                uses: r.get(4)?,
                revoked: r.get(5)?,
            })
        })
        .optional()
    })
    .map_err(backend)
}

pub(crate) fn revoke_invite(conn: &Connection, code: &str) -> StoreResult<()> {
    let changed = conn.execute("UPDATE invites SET revoked = 1 WHERE code = ?", [code]).map_err(backend)?;
    if changed == 0 {
        return Err(StoreError::Rejected(ErrorCode::InviteNotFound));
    }
    Ok(())
}

pub(crate) fn join_invite(conn: &Connection, code: &str, user: UserId, now_ms: u64, max: u32) -> StoreResult<ConvId> {
    let invite = invite(conn, code)?.ok_or(StoreError::Rejected(ErrorCode::InviteNotFound))?;
    if invite.revoked {
        return Err(StoreError::Rejected(ErrorCode::InviteRevoked));
    }
    if invite.expires_at_ms <= now_ms {
        return Err(StoreError::Rejected(ErrorCode::InviteExpired));
    }
    if invite.uses >= invite.max_uses {
        return Err(StoreError::Rejected(ErrorCode::InviteExhausted));
    }
    add_members(conn, invite.conv, vec![user], max, now_ms)?;
    conn.execute("UPDATE invites SET uses = uses + 1 WHERE code = ?", [code]).map_err(backend)?;
    Ok(invite.conv)
}
