//! The attachment index on SQLite (`anytime_media::BlobIndex`). Writes run in the single writer,
//! which makes the quota check and the offset compare-and-set atomic.

use anytime_media::{BlobId, BlobIndex, BlobRecord, BlobResult, BlobStoreError};
use anytime_proto::{ConvId, DeviceId, UserId};
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use anytime_server_core::store::StoreResult;

use crate::engine::backend;
use crate::SqliteStore;

fn failed(error: anytime_server_core::store::StoreError) -> BlobStoreError {
    BlobStoreError::Backend(error.to_string())
}

fn key(id: BlobId) -> [u8; 16] {
    id.to_be_bytes()
}

#[async_trait]
impl BlobIndex for SqliteStore {
    async fn create_blob(&self, blob: &BlobRecord, quota_bytes: u64) -> BlobResult<()> {
        let blob = blob.clone();
        self.engine.write(move |c| create(c, &blob, quota_bytes)).await.map_err(failed)?
    }

    async fn blob(&self, id: BlobId) -> BlobResult<Option<BlobRecord>> {
        self.engine.read(move |c| read(c, id).map_err(backend)).await.map_err(failed)
    }

    async fn advance(&self, id: BlobId, from: u64, to: u64, now_ms: u64, recipients: &[DeviceId]) -> BlobResult<()> {
        let recipients = recipients.to_vec();
        self.engine.write(move |c| advance(c, id, from, to, now_ms, &recipients)).await.map_err(failed)?
    }

    async fn fetched(&self, id: BlobId, device: DeviceId) -> BlobResult<()> {
        self.engine
            .write(move |c| {
                c.execute(
                    "DELETE FROM blob_recipients WHERE blob = ? AND device = ?",
                    params![&key(id)[..], device.0 as i64],
                )
                .map(|_| ())
                .map_err(backend)
            })
            .await
            .map_err(failed)
    }

    async fn recipients_left(&self, id: BlobId) -> BlobResult<u32> {
        self.engine
            .read(move |c| {
                c.query_row("SELECT COUNT(*) FROM blob_recipients WHERE blob = ?", [&key(id)[..]], |r| r.get(0))
                    .map_err(backend)
            })
            .await
            .map_err(failed)
    }

    async fn used_bytes(&self, owner: UserId) -> BlobResult<u64> {
        self.engine.read(move |c| used(c, owner).map_err(backend)).await.map_err(failed)
    }

    async fn due(&self, completed_before_ms: u64, created_before_ms: u64, limit: u32) -> BlobResult<Vec<BlobId>> {
        self.engine
            .read(move |c| {
                let mut statement = c
                    .prepare_cached(
                        "SELECT id FROM blobs WHERE
                           (completed_at_ms IS NULL AND created_at_ms < ?2)
                           OR (completed_at_ms IS NOT NULL AND (completed_at_ms < ?1
                               OR NOT EXISTS (SELECT 1 FROM blob_recipients r WHERE r.blob = blobs.id)))
                         LIMIT ?3",
                    )
                    .map_err(backend)?;
                let rows = statement
                    .query_map(params![completed_before_ms as i64, created_before_ms as i64, limit], |r| {
                        r.get::<_, Vec<u8>>(0)
                    })
                    .map_err(backend)?;
                let mut ids = Vec::new();
                for row in rows {
                    ids.push(id_of(&row.map_err(backend)?)?);
                }
                Ok(ids)
            })
            .await
            .map_err(failed)
    }

    async fn delete_blob(&self, id: BlobId) -> BlobResult<()> {
        self.engine
            .write(move |c| {
                c.execute("DELETE FROM blob_recipients WHERE blob = ?", [&key(id)[..]]).map_err(backend)?;
                c.execute("DELETE FROM blobs WHERE id = ?", [&key(id)[..]]).map(|_| ()).map_err(backend)
            })
            .await
            .map_err(failed)
    }
}

fn id_of(bytes: &[u8]) -> Result<BlobId, anytime_server_core::store::StoreError> {
    let array: [u8; 16] = bytes.try_into().map_err(|_| {
        anytime_server_core::store::StoreError::Backend(format!("a blob id of {} bytes in the database", bytes.len()))
    })?;
    Ok(u128::from_be_bytes(array))
}

fn used(c: &Connection, owner: UserId) -> rusqlite::Result<u64> {
    c.query_row("SELECT COALESCE(SUM(size), 0) FROM blobs WHERE owner = ?", [owner.0 as i64], |r| r.get::<_, i64>(0))
        .map(|n| n as u64)
}

/// Rule failures are the inner `Err` (nothing written); a database failure is the outer one, which
/// rolls the job back.
fn create(c: &Connection, blob: &BlobRecord, quota_bytes: u64) -> StoreResult<BlobResult<()>> {
    let sql = backend;
    let exists: bool = c
        .query_row("SELECT EXISTS (SELECT 1 FROM blobs WHERE id = ?)", [&key(blob.id)[..]], |r| r.get(0))
        .map_err(sql)?;
    if exists {
        return Ok(Err(BlobStoreError::Exists));
    }
    if used(c, blob.owner).map_err(sql)?.saturating_add(blob.size) > quota_bytes {
        return Ok(Err(BlobStoreError::QuotaExceeded));
    }
    c.execute(
        "INSERT INTO blobs (id, owner, owner_device, conv, size, received, created_at_ms, completed_at_ms)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        params![
            &key(blob.id)[..],
            blob.owner.0 as i64,
            blob.owner_device.0 as i64,
            blob.conv.0 as i64,
            blob.size as i64,
            blob.received as i64,
            blob.created_at_ms as i64,
            blob.completed_at_ms.map(|t| t as i64),
        ],
    )
    .map_err(sql)?;
    Ok(Ok(()))
}

fn read(c: &Connection, id: BlobId) -> rusqlite::Result<Option<BlobRecord>> {
    c.query_row(
        "SELECT owner, owner_device, conv, size, received, created_at_ms, completed_at_ms FROM blobs WHERE id = ?",
        [&key(id)[..]],
        |r| {
            Ok(BlobRecord {
                id,
                owner: UserId(r.get::<_, i64>(0)? as u64),
                owner_device: DeviceId(r.get::<_, i64>(1)? as u64),
                conv: ConvId(r.get::<_, i64>(2)? as u64),
                size: r.get::<_, i64>(3)? as u64,
                received: r.get::<_, i64>(4)? as u64,
                created_at_ms: r.get::<_, i64>(5)? as u64,
                completed_at_ms: r.get::<_, Option<i64>>(6)?.map(|t| t as u64),
            })
        },
    )
    .optional()
}

fn advance(
    c: &Connection,
    id: BlobId,
    from: u64,
    to: u64,
    now_ms: u64,
    recipients: &[DeviceId],
) -> StoreResult<BlobResult<()>> {
    let sql = backend;
    let Some(blob) = read(c, id).map_err(sql)? else { return Ok(Err(BlobStoreError::NotFound)) };
    if blob.received != from {
        return Ok(Err(BlobStoreError::Moved(blob.received)));
    }
    let completed = (to == blob.size).then_some(now_ms as i64);
    c.execute(
        "UPDATE blobs SET received = ?, completed_at_ms = COALESCE(?, completed_at_ms) WHERE id = ?",
        params![to as i64, completed, &key(id)[..]],
    )
    .map_err(sql)?;
    if completed.is_some() {
        let mut insert =
            c.prepare_cached("INSERT OR IGNORE INTO blob_recipients (blob, device) VALUES (?, ?)").map_err(sql)?;
        for device in recipients {
            insert.execute(params![&key(id)[..], device.0 as i64]).map_err(sql)?;
        }
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_the_blob_index_conformance_cases() {
        let dirs = std::sync::Mutex::new(Vec::new());
        anytime_media::conformance::run_index(|| {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let store = crate::SqliteStore::open(&dir.path().join("b.sqlite3"), Arc::default()).expect("open");
            dirs.lock().expect("not poisoned").push(dir);
            async move { store }
        })
        .await;
    }
}
