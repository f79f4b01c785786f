//! Accounts, devices, profiles and blocks.

use anytime_proto::frame::PresencePrivacy;
use anytime_proto::{DeviceId, ErrorCode, UserId};
use anytime_server_core::store::{DeviceRecord, StoreError, StoreResult, UserRecord};
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::engine::backend;
use crate::sql::{id, uid};

pub(crate) fn privacy_to_i64(privacy: PresencePrivacy) -> i64 {
    match privacy {
        PresencePrivacy::Everyone => 0,
        PresencePrivacy::Contacts => 1,
        PresencePrivacy::Nobody => 2,
    }
}

fn privacy_from_i64(n: i64) -> PresencePrivacy {
    match n {
        0 => PresencePrivacy::Everyone,
        2 => PresencePrivacy::Nobody,
        _ => PresencePrivacy::Contacts,
    }
}

const USER_COLUMNS: &str = "id, username, password_hash, display_name, avatar, presence_privacy, created_at_ms";

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        id: UserId(uid(row.get(0)?)),
        username: row.get(1)?,
        password_hash: row.get(2)?,
        display_name: row.get(3)?,
        avatar: row.get(4)?,
        presence_privacy: privacy_from_i64(row.get(5)?),
        created_at_ms: uid(row.get(6)?),
    })
}

const DEVICE_COLUMNS: &str =
    "id, user_id, name, token_hash, created_at_ms, expires_at_ms, last_seen_ms, approved, link_code";

fn device_from_row(row: &Row<'_>) -> rusqlite::Result<DeviceRecord> {
    let hash: Vec<u8> = row.get(3)?;
    let mut token_hash = [0u8; 32];
    if hash.len() == 32 {
        token_hash.copy_from_slice(&hash);
    }
    Ok(DeviceRecord {
        id: DeviceId(uid(row.get(0)?)),
        user: UserId(uid(row.get(1)?)),
        name: row.get(2)?,
        token_hash,
        created_at_ms: uid(row.get(4)?),
        expires_at_ms: uid(row.get(5)?),
        last_seen_ms: uid(row.get(6)?),
        approved: row.get(7)?,
        link_code: row.get(8)?,
    })
}

pub(crate) fn create_user(conn: &Connection, user: UserRecord, device: DeviceRecord) -> StoreResult<()> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO users (id, username, password_hash, display_name, avatar, presence_privacy, created_at_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                id(user.id.0),
                user.username,
                user.password_hash,
                user.display_name,
                user.avatar,
                privacy_to_i64(user.presence_privacy),
                id(user.created_at_ms)
            ])
        })
        .map_err(backend)?;
    if inserted == 0 {
        return Err(StoreError::Rejected(ErrorCode::UsernameTaken));
    }
    insert_device(conn, &device)
}

fn insert_device(conn: &Connection, device: &DeviceRecord) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO devices (id, user_id, name, token_hash, created_at_ms, expires_at_ms, last_seen_ms, approved, link_code)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            id(device.id.0),
            id(device.user.0),
            device.name,
            &device.token_hash[..],
            id(device.created_at_ms),
            id(device.expires_at_ms),
            id(device.last_seen_ms),
            device.approved,
            device.link_code
        ])
    })
    .map_err(backend)?;
    if device.approved {
        start_cursors(conn, device.id, device.user)?;
    }
    Ok(())
}

/// An approved device reads each conversation of its account from the current end.
fn start_cursors(conn: &Connection, device: DeviceId, user: UserId) -> StoreResult<()> {
    // The new device reads each conversation of its account from the current end: it cannot
    // decrypt anything older anyway, since it joins the MLS groups from now on.
    conn.prepare_cached(
        "INSERT INTO cursors (device_id, conv_id, acked_seq)
         SELECT ?1, m.conv_id, c.last_seq FROM members m JOIN conversations c ON c.id = m.conv_id
         WHERE m.user_id = ?2",
    )
    .and_then(|mut stmt| stmt.execute(params![id(device.0), id(user.0)]))
    .map_err(backend)?;
    Ok(())
}

pub(crate) fn approve_device(
    conn: &Connection,
    user: UserId,
    code: &str,
    now_ms: u64,
    expires_at_ms: u64,
) -> StoreResult<DeviceId> {
    let pending: Option<i64> = conn
        .query_row(
            "SELECT id FROM devices WHERE user_id = ? AND approved = 0 AND link_code = ? AND expires_at_ms > ?",
            params![id(user.0), code, id(now_ms)],
            |r| r.get(0),
        )
        .optional()
        .map_err(backend)?;
    let Some(device) = pending else {
        return Err(StoreError::Rejected(ErrorCode::LinkCodeInvalid));
    };
    conn.execute(
        "UPDATE devices SET approved = 1, link_code = NULL, expires_at_ms = ? WHERE id = ?",
        params![id(expires_at_ms), device],
    )
    .map_err(backend)?;
    start_cursors(conn, DeviceId(uid(device)), user)?;
    Ok(DeviceId(uid(device)))
}

pub(crate) fn create_device(conn: &Connection, device: DeviceRecord, devices_max: u32) -> StoreResult<()> {
    let count: u32 = conn
        .query_row("SELECT COUNT(*) FROM devices WHERE user_id = ?", [id(device.user.0)], |r| r.get(0))
        .map_err(backend)?;
    if count >= devices_max {
        return Err(StoreError::Rejected(ErrorCode::TooManyDevices));
    }
    insert_device(conn, &device)
}

pub(crate) fn user_by_username(conn: &Connection, username: &str) -> StoreResult<Option<UserRecord>> {
    conn.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE username = ?"))
        .and_then(|mut stmt| stmt.query_row([username], user_from_row).optional())
        .map_err(backend)
}

pub(crate) fn user(conn: &Connection, user: UserId) -> StoreResult<Option<UserRecord>> {
    conn.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?"))
        .and_then(|mut stmt| stmt.query_row([id(user.0)], user_from_row).optional())
        .map_err(backend)
}

pub(crate) fn device_by_token_hash(conn: &Connection, hash: [u8; 32]) -> StoreResult<Option<DeviceRecord>> {
    conn.prepare_cached(&format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE token_hash = ?"))
        .and_then(|mut stmt| stmt.query_row([&hash[..]], device_from_row).optional())
        .map_err(backend)
}

pub(crate) fn devices(conn: &Connection, user: UserId) -> StoreResult<Vec<DeviceRecord>> {
    conn.prepare_cached(&format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE user_id = ? ORDER BY created_at_ms"))
        .and_then(|mut stmt| stmt.query_map([id(user.0)], device_from_row)?.collect())
        .map_err(backend)
}

/// Deletes a device and everything that exists only for it.
pub(crate) fn delete_device(conn: &Connection, device: i64) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM devices WHERE id = ?", [device])?;
    conn.execute("DELETE FROM cursors WHERE device_id = ?", [device])?;
    conn.execute("DELETE FROM key_packages WHERE device_id = ?", [device])?;
    conn.execute("DELETE FROM welcome_targets WHERE device_id = ?", [device])?;
    conn.execute("DELETE FROM push_endpoints WHERE device_id = ?", [device])?;
    Ok(())
}

pub(crate) fn set_push_endpoint(conn: &Connection, device: DeviceId, endpoint: Option<String>) -> StoreResult<()> {
    match endpoint {
        Some(endpoint) => conn.execute(
            "INSERT INTO push_endpoints (device_id, endpoint) SELECT id, ? FROM devices WHERE id = ?
             ON CONFLICT(device_id) DO UPDATE SET endpoint = excluded.endpoint",
            params![endpoint, id(device.0)],
        ),
        None => conn.execute("DELETE FROM push_endpoints WHERE device_id = ?", [id(device.0)]),
    }
    .map_err(backend)?;
    Ok(())
}

pub(crate) fn push_endpoints(conn: &Connection, devices: &[DeviceId]) -> StoreResult<Vec<(DeviceId, String)>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT p.device_id, p.endpoint FROM push_endpoints p JOIN devices d ON d.id = p.device_id
             WHERE p.device_id = ?",
        )
        .map_err(backend)?;
    let mut out = Vec::new();
    for device in devices {
        let row: Option<(i64, String)> =
            stmt.query_row([id(device.0)], |r| Ok((r.get(0)?, r.get(1)?))).optional().map_err(backend)?;
        if let Some((device, endpoint)) = row {
            out.push((DeviceId(device as u64), endpoint));
        }
    }
    Ok(out)
}

pub(crate) fn revoke_device(conn: &Connection, user: UserId, device: DeviceId) -> StoreResult<()> {
    let owner: Option<i64> = conn
        .query_row("SELECT user_id FROM devices WHERE id = ?", [id(device.0)], |r| r.get(0))
        .optional()
        .map_err(backend)?;
    if owner != Some(id(user.0)) {
        return Err(StoreError::Rejected(ErrorCode::DeviceNotFound));
    }
    delete_device(conn, id(device.0)).map_err(backend)
}

pub(crate) fn touch_device(conn: &Connection, device: DeviceId, at_ms: u64) -> StoreResult<()> {
    conn.execute("UPDATE devices SET last_seen_ms = ? WHERE id = ?", params![id(at_ms), id(device.0)])
        .map_err(backend)?;
    Ok(())
}

pub(crate) fn set_profile(conn: &Connection, user: UserId, name: String, avatar: Option<String>) -> StoreResult<()> {
    conn.execute("UPDATE users SET display_name = ?, avatar = ? WHERE id = ?", params![name, avatar, id(user.0)])
        .map_err(backend)?;
    Ok(())
}

pub(crate) fn set_presence_privacy(conn: &Connection, user: UserId, privacy: PresencePrivacy) -> StoreResult<()> {
    conn.execute("UPDATE users SET presence_privacy = ? WHERE id = ?", params![privacy_to_i64(privacy), id(user.0)])
        .map_err(backend)?;
    Ok(())
}

pub(crate) fn block(conn: &Connection, blocker: UserId, blocked: UserId) -> StoreResult<()> {
    conn.execute(
        "INSERT INTO blocks (blocker, blocked) VALUES (?, ?) ON CONFLICT DO NOTHING",
        params![id(blocker.0), id(blocked.0)],
    )
    .map_err(backend)?;
    Ok(())
}

pub(crate) fn unblock(conn: &Connection, blocker: UserId, blocked: UserId) -> StoreResult<()> {
    conn.execute("DELETE FROM blocks WHERE blocker = ? AND blocked = ?", params![id(blocker.0), id(blocked.0)])
        .map_err(backend)?;
    Ok(())
}

pub(crate) fn blocked_by(conn: &Connection, blocker: UserId) -> StoreResult<Vec<UserId>> {
    conn.prepare_cached("SELECT blocked FROM blocks WHERE blocker = ? ORDER BY blocked")
        .and_then(|mut stmt| stmt.query_map([id(blocker.0)], |r| Ok(UserId(uid(r.get(0)?))))?.collect())
        .map_err(backend)
}

pub(crate) fn is_blocked(conn: &Connection, blocker: UserId, blocked: UserId) -> StoreResult<bool> {
    conn.prepare_cached("SELECT 1 FROM blocks WHERE blocker = ? AND blocked = ?")
        .and_then(|mut stmt| stmt.exists(params![id(blocker.0), id(blocked.0)]))
        .map_err(backend)
}

pub(crate) fn direct_key(a: UserId, b: UserId) -> String {
    let (low, high) = if a.0 <= b.0 { (a, b) } else { (b, a) };
    format!("{low}:{high}")
}

pub(crate) fn share_conversation(conn: &Connection, a: UserId, b: UserId) -> StoreResult<bool> {
    conn.prepare_cached(
        "SELECT 1 FROM members m1 JOIN members m2 ON m2.conv_id = m1.conv_id AND m2.user_id = ?2 WHERE m1.user_id = ?1 LIMIT 1",
    )
    .and_then(|mut stmt| stmt.exists([id(a.0), id(b.0)]))
    .map_err(backend)
}

pub(crate) fn are_contacts(conn: &Connection, a: UserId, b: UserId) -> StoreResult<bool> {
    conn.prepare_cached("SELECT 1 FROM conversations WHERE direct_key = ?")
        .and_then(|mut stmt| stmt.exists([direct_key(a, b)]))
        .map_err(backend)
}
