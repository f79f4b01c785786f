//! Accounts, devices, push endpoints and blocks.

use anytime_proto::{DeviceId, ErrorCode, UserId};
use anytime_server_core::store::{DeviceRecord, StoreResult, UserRecord};
use deadpool_postgres::{GenericClient, Pool};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::pg::{
    backend, client, exec, id, privacy_from_i16, privacy_to_i16, query, query_one, query_opt, rejected, uid,
};

const USER_COLUMNS: &str = "id, username, password_hash, display_name, avatar, presence_privacy, created_at_ms";

fn user_from_row(row: &Row) -> UserRecord {
    UserRecord {
        id: UserId(uid(row.get(0))),
        username: row.get(1),
        password_hash: row.get(2),
        display_name: row.get(3),
        avatar: row.get(4),
        presence_privacy: privacy_from_i16(row.get(5)),
        created_at_ms: uid(row.get(6)),
    }
}

const DEVICE_COLUMNS: &str =
    "id, user_id, name, token_hash, created_at_ms, expires_at_ms, last_seen_ms, approved, link_code";

fn device_from_row(row: &Row) -> DeviceRecord {
    let hash: Vec<u8> = row.get(3);
    let mut token_hash = [0u8; 32];
    if hash.len() == 32 {
        token_hash.copy_from_slice(&hash);
    }
    DeviceRecord {
        id: DeviceId(uid(row.get(0))),
        user: UserId(uid(row.get(1))),
        name: row.get(2),
        token_hash,
        created_at_ms: uid(row.get(4)),
        expires_at_ms: uid(row.get(5)),
        last_seen_ms: uid(row.get(6)),
        approved: row.get(7),
        link_code: row.get(8),
    }
}

pub(crate) async fn user_where(
    pool: &Pool,
    condition: &str,
    value: &(dyn ToSql + Sync),
) -> StoreResult<Option<UserRecord>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE {condition}");
    Ok(query_opt(&client(pool).await?, &sql, &[value]).await?.as_ref().map(user_from_row))
}

pub(crate) async fn devices_where(
    pool: &Pool,
    condition: &str,
    value: &(dyn ToSql + Sync),
) -> StoreResult<Vec<DeviceRecord>> {
    let sql = format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE {condition} ORDER BY created_at_ms, id");
    Ok(query(&client(pool).await?, &sql, &[value]).await?.iter().map(device_from_row).collect())
}

async fn insert_device<C: GenericClient>(c: &C, device: &DeviceRecord) -> StoreResult<()> {
    exec(c,
        "INSERT INTO devices (id, user_id, name, token_hash, created_at_ms, expires_at_ms, last_seen_ms, approved, link_code)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[&id(device.id.0), &id(device.user.0), &device.name, &&device.token_hash[..], &id(device.created_at_ms),
          &id(device.expires_at_ms), &id(device.last_seen_ms), &device.approved, &device.link_code],
    ).await?;
    if device.approved {
        start_cursors(c, device.id, device.user).await?;
    }
    Ok(())
}

/// An approved device reads each conversation of its account from the current end.
async fn start_cursors<C: GenericClient>(c: &C, device: DeviceId, user: UserId) -> StoreResult<()> {
    exec(
        c,
        "INSERT INTO cursors (device_id, conv_id, acked_seq)
         SELECT $1, m.conv_id, c.last_seq FROM members m JOIN conversations c ON c.id = m.conv_id WHERE m.user_id = $2
         ON CONFLICT DO NOTHING",
        &[&id(device.0), &id(user.0)],
    )
    .await?;
    Ok(())
}

pub(crate) async fn create_user(pool: &Pool, user: UserRecord, device: DeviceRecord) -> StoreResult<()> {
    let mut c = client(pool).await?;
    let tx = c.transaction().await.map_err(backend)?;
    let inserted = exec(
        &tx,
        &format!("INSERT INTO users ({USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING"),
        &[
            &id(user.id.0),
            &user.username,
            &user.password_hash,
            &user.display_name,
            &user.avatar,
            &privacy_to_i16(user.presence_privacy),
            &id(user.created_at_ms),
        ],
    )
    .await?;
    if inserted == 0 {
        return Err(rejected(ErrorCode::UsernameTaken));
    }
    insert_device(&tx, &device).await?;
    tx.commit().await.map_err(backend)
}

pub(crate) async fn create_device(pool: &Pool, device: DeviceRecord, devices_max: u32) -> StoreResult<()> {
    let mut c = client(pool).await?;
    let tx = c.transaction().await.map_err(backend)?;
    // Lock the account row so two logins on two nodes cannot both pass the count.
    exec(&tx, "SELECT 1 FROM users WHERE id = $1 FOR UPDATE", &[&id(device.user.0)]).await?;
    let count: i64 =
        query_one(&tx, "SELECT COUNT(*) FROM devices WHERE user_id = $1", &[&id(device.user.0)]).await?.get(0);
    if count >= i64::from(devices_max) {
        return Err(rejected(ErrorCode::TooManyDevices));
    }
    insert_device(&tx, &device).await?;
    tx.commit().await.map_err(backend)
}

pub(crate) async fn approve_device(
    pool: &Pool,
    user: UserId,
    code: &str,
    now_ms: u64,
    expires_at_ms: u64,
) -> StoreResult<DeviceId> {
    let mut c = client(pool).await?;
    let tx = c.transaction().await.map_err(backend)?;
    let row = query_opt(
        &tx,
        "UPDATE devices SET approved = TRUE, link_code = NULL, expires_at_ms = $1
             WHERE user_id = $2 AND approved = FALSE AND link_code = $3 AND expires_at_ms > $4 RETURNING id",
        &[&id(expires_at_ms), &id(user.0), &code, &id(now_ms)],
    )
    .await?;
    let Some(row) = row else { return Err(rejected(ErrorCode::LinkCodeInvalid)) };
    let device = DeviceId(uid(row.get(0)));
    start_cursors(&tx, device, user).await?;
    tx.commit().await.map_err(backend)?;
    Ok(device)
}

pub(crate) async fn delete_device<C: GenericClient>(c: &C, device: i64) -> StoreResult<()> {
    for sql in [
        "DELETE FROM devices WHERE id = $1",
        "DELETE FROM cursors WHERE device_id = $1",
        "DELETE FROM key_packages WHERE device_id = $1",
        "DELETE FROM welcome_targets WHERE device_id = $1",
    ] {
        exec(c, sql, &[&device]).await?;
    }
    Ok(())
}

pub(crate) async fn revoke_device(pool: &Pool, user: UserId, device: DeviceId) -> StoreResult<()> {
    let mut c = client(pool).await?;
    let tx = c.transaction().await.map_err(backend)?;
    let owner = query_opt(&tx, "SELECT user_id FROM devices WHERE id = $1", &[&id(device.0)]).await?;
    if owner.map(|r| r.get::<_, i64>(0)) != Some(id(user.0)) {
        return Err(rejected(ErrorCode::DeviceNotFound));
    }
    delete_device(&tx, id(device.0)).await?;
    tx.commit().await.map_err(backend)
}

pub(crate) async fn blocked_by(pool: &Pool, blocker: UserId) -> StoreResult<Vec<UserId>> {
    let rows = query(
        &client(pool).await?,
        "SELECT blocked FROM blocks WHERE blocker = $1 ORDER BY blocked",
        &[&id(blocker.0)],
    )
    .await?;
    Ok(rows.iter().map(|r| UserId(uid(r.get(0)))).collect())
}

pub(crate) async fn push_endpoints(pool: &Pool, devices: &[DeviceId]) -> StoreResult<Vec<(DeviceId, String)>> {
    let ids: Vec<i64> = devices.iter().map(|d| id(d.0)).collect();
    let rows = query(
        &client(pool).await?,
        "SELECT device_id, endpoint FROM push_endpoints WHERE device_id = ANY($1) ORDER BY device_id",
        &[&ids],
    )
    .await?;
    Ok(rows.iter().map(|r| (DeviceId(uid(r.get(0))), r.get(1))).collect())
}
