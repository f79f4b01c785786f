//! MLS key packages: upload, claim (each one-time package exactly once), count.

use anytime_proto::frame::ClaimedKeyPackage;
use anytime_proto::{DeviceId, ErrorCode, UserId};
use anytime_server_core::store::StoreResult;
use deadpool_postgres::Pool;

use crate::pg::{backend, client, exec, id, query, query_one, query_opt, rejected, uid};

pub(crate) async fn key_package_count(pool: &Pool, device: DeviceId) -> StoreResult<(u32, bool)> {
    let row = query_one(&client(pool).await?,
            "SELECT COUNT(*) FILTER (WHERE NOT last_resort), COUNT(*) FILTER (WHERE last_resort) FROM key_packages WHERE device_id = $1",
            &[&id(device.0)],
        ).await?;
    Ok((row.get::<_, i64>(0) as u32, row.get::<_, i64>(1) > 0))
}

pub(crate) async fn upload_key_packages(
    pool: &Pool,
    device: DeviceId,
    packages: Vec<Vec<u8>>,
    last_resort: Option<Vec<u8>>,
    max: u32,
) -> StoreResult<u32> {
    let mut c = client(pool).await?;
    let tx = c.transaction().await.map_err(backend)?;
    exec(&tx, "SELECT 1 FROM devices WHERE id = $1 FOR UPDATE", &[&id(device.0)]).await?;
    let stored: i64 =
        query_one(&tx, "SELECT COUNT(*) FROM key_packages WHERE device_id = $1 AND NOT last_resort", &[&id(device.0)])
            .await?
            .get(0);
    if stored as usize + packages.len() > max as usize {
        return Err(rejected(ErrorCode::TooManyKeyPackages));
    }
    for package in &packages {
        exec(
            &tx,
            "INSERT INTO key_packages (device_id, last_resort, data) VALUES ($1, FALSE, $2)",
            &[&id(device.0), package],
        )
        .await?;
    }
    if let Some(package) = &last_resort {
        exec(&tx, "DELETE FROM key_packages WHERE device_id = $1 AND last_resort", &[&id(device.0)]).await?;
        exec(
            &tx,
            "INSERT INTO key_packages (device_id, last_resort, data) VALUES ($1, TRUE, $2)",
            &[&id(device.0), package],
        )
        .await?;
    }
    tx.commit().await.map_err(backend)?;
    Ok(stored as u32 + packages.len() as u32)
}

pub(crate) async fn claim_key_packages(pool: &Pool, user: UserId) -> StoreResult<Vec<ClaimedKeyPackage>> {
    let mut c = client(pool).await?;
    let tx = c.transaction().await.map_err(backend)?;
    let devices: Vec<i64> =
        query(&tx, "SELECT id FROM devices WHERE user_id = $1 AND approved ORDER BY created_at_ms, id", &[&id(user.0)])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
    let mut claimed = Vec::with_capacity(devices.len());
    for device in devices {
        // SKIP LOCKED: a concurrent claim on another node takes the next package instead of
        // waiting, and the DELETE makes each package go to exactly one claimer.
        let one_time = query_opt(&tx,
                "DELETE FROM key_packages WHERE id = (
                    SELECT id FROM key_packages WHERE device_id = $1 AND NOT last_resort ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
                 RETURNING data",
                &[&device],
            ).await?;
        if let Some(row) = one_time {
            claimed.push(ClaimedKeyPackage { device: DeviceId(uid(device)), package: row.get(0), last_resort: false });
            continue;
        }
        let last_resort =
            query_opt(&tx, "SELECT data FROM key_packages WHERE device_id = $1 AND last_resort", &[&device]).await?;
        if let Some(row) = last_resort {
            claimed.push(ClaimedKeyPackage { device: DeviceId(uid(device)), package: row.get(0), last_resort: true });
        }
    }
    if claimed.is_empty() {
        return Err(rejected(ErrorCode::NoKeyPackage));
    }
    tx.commit().await.map_err(backend)?;
    Ok(claimed)
}
