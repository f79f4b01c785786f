//! MLS key packages: upload, claim (each one-time package exactly once), count.

use anytime_proto::frame::ClaimedKeyPackage;
use anytime_proto::{DeviceId, ErrorCode, UserId};
use anytime_server_core::store::{StoreError, StoreResult};
use rusqlite::{params, Connection, OptionalExtension};

use crate::engine::backend;
use crate::sql::{id, uid};

pub(crate) fn upload(
    conn: &Connection,
    device: DeviceId,
    packages: Vec<Vec<u8>>,
    last_resort: Option<Vec<u8>>,
    per_device_max: u32,
) -> StoreResult<u32> {
    let (stored, _) = count(conn, device)?;
    if stored as usize + packages.len() > per_device_max as usize {
        return Err(StoreError::Rejected(ErrorCode::TooManyKeyPackages));
    }
    for package in packages {
        conn.prepare_cached("INSERT INTO key_packages (device_id, last_resort, data) VALUES (?, 0, ?)")
            .and_then(|mut stmt| stmt.execute(params![id(device.0), package]))
            .map_err(backend)?;
    }
    if let Some(package) = last_resort {
        conn.execute("DELETE FROM key_packages WHERE device_id = ? AND last_resort = 1", [id(device.0)])
            .map_err(backend)?;
        conn.execute(
            "INSERT INTO key_packages (device_id, last_resort, data) VALUES (?, 1, ?)",
            params![id(device.0), package],
        )
        .map_err(backend)?;
    }
    Ok(count(conn, device)?.0)
}

pub(crate) fn claim(conn: &Connection, user: UserId) -> StoreResult<Vec<ClaimedKeyPackage>> {
    let devices: Vec<i64> = conn
        .prepare_cached("SELECT id FROM devices WHERE user_id = ? AND approved = 1 ORDER BY created_at_ms")
        .and_then(|mut stmt| stmt.query_map([id(user.0)], |r| r.get(0))?.collect())
        .map_err(backend)?;
    let mut claimed = Vec::with_capacity(devices.len());
    for device in devices {
        // The writer runs one job at a time, so select-then-delete cannot hand a package out
        // twice; a rejected claim (no device has anything) rolls back with its savepoint.
        let one_time: Option<(i64, Vec<u8>)> = conn
            .prepare_cached(
                "SELECT id, data FROM key_packages WHERE device_id = ? AND last_resort = 0 ORDER BY id LIMIT 1",
            )
            .and_then(|mut stmt| stmt.query_row([device], |r| Ok((r.get(0)?, r.get(1)?))).optional())
            .map_err(backend)?;
        if let Some((row, package)) = one_time {
            conn.execute("DELETE FROM key_packages WHERE id = ?", [row]).map_err(backend)?;
            claimed.push(ClaimedKeyPackage { device: DeviceId(uid(device)), package, last_resort: false });
            continue;
        }
        let last_resort: Option<Vec<u8>> = conn
            .prepare_cached("SELECT data FROM key_packages WHERE device_id = ? AND last_resort = 1")
            .and_then(|mut stmt| stmt.query_row([device], |r| r.get(0)).optional())
            .map_err(backend)?;
        if let Some(package) = last_resort {
            claimed.push(ClaimedKeyPackage { device: DeviceId(uid(device)), package, last_resort: true });
        }
        // A device that never uploaded (just linked, not yet online) is skipped: it is added to
        // the group once it has uploaded, when members reconcile.
    }
    if claimed.is_empty() {
        return Err(StoreError::Rejected(ErrorCode::NoKeyPackage));
    }
    Ok(claimed)
}

pub(crate) fn count(conn: &Connection, device: DeviceId) -> StoreResult<(u32, bool)> {
    conn.prepare_cached(
        "SELECT COALESCE(SUM(last_resort = 0), 0), COALESCE(MAX(last_resort), 0) FROM key_packages WHERE device_id = ?",
    )
    .and_then(|mut stmt| stmt.query_row([id(device.0)], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? == 1))))
    .map_err(backend)
}
