//! The attachment index on PostgreSQL (`anytime_media::BlobIndex`), shared by every node. A new
//! blob takes a transaction-scoped advisory lock on its owner, so the quota holds when the owner
//! uploads through several nodes at once; `advance` is a conditional UPDATE.

use anytime_media::{BlobId, BlobIndex, BlobRecord, BlobResult, BlobStoreError};
use anytime_proto::{ConvId, DeviceId, UserId};
use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use crate::PgStore;

/// The first half of the advisory lock key of an owner's quota (the second is the owner id's
/// high and low words folded), apart from the migration lock's single-key space.
const QUOTA_LOCK: i32 = 0x626c_6f62; // "blob"

fn failed(error: impl std::fmt::Display) -> BlobStoreError {
    BlobStoreError::Backend(error.to_string())
}

fn key(id: BlobId) -> Vec<u8> {
    id.to_be_bytes().to_vec()
}

fn int(n: u64) -> BlobResult<i64> {
    i64::try_from(n).map_err(failed)
}

fn uint(n: i64) -> BlobResult<u64> {
    u64::try_from(n).map_err(failed)
}

const COLUMNS: &str = "id, owner, owner_device, conv, size, received, created_at_ms, completed_at_ms";

fn record(row: &Row) -> BlobResult<BlobRecord> {
    let id: Vec<u8> = row.try_get(0).map_err(failed)?;
    let id: [u8; 16] = id.as_slice().try_into().map_err(failed)?;
    Ok(BlobRecord {
        id: u128::from_be_bytes(id),
        owner: UserId(row.try_get::<_, i64>(1).map_err(failed)? as u64),
        owner_device: DeviceId(row.try_get::<_, i64>(2).map_err(failed)? as u64),
        conv: ConvId(row.try_get::<_, i64>(3).map_err(failed)? as u64),
        size: uint(row.try_get(4).map_err(failed)?)?,
        received: uint(row.try_get(5).map_err(failed)?)?,
        created_at_ms: uint(row.try_get(6).map_err(failed)?)?,
        completed_at_ms: row.try_get::<_, Option<i64>>(7).map_err(failed)?.map(uint).transpose()?,
    })
}

async fn used(c: &impl GenericClient, owner: UserId) -> BlobResult<u64> {
    let row = c
        .query_one("SELECT COALESCE(SUM(size), 0)::BIGINT FROM blobs WHERE owner = $1", &[&(owner.0 as i64)])
        .await
        .map_err(failed)?;
    uint(row.try_get(0).map_err(failed)?)
}

#[async_trait]
impl BlobIndex for PgStore {
    async fn create_blob(&self, blob: &BlobRecord, quota_bytes: u64) -> BlobResult<()> {
        let mut c = self.pool.get().await.map_err(failed)?;
        let tx = c.transaction().await.map_err(failed)?;
        let folded = ((blob.owner.0 >> 32) ^ (blob.owner.0 & 0xffff_ffff)) as u32 as i32;
        tx.execute("SELECT pg_advisory_xact_lock($1, $2)", &[&QUOTA_LOCK, &folded]).await.map_err(failed)?;
        if used(&tx, blob.owner).await?.saturating_add(blob.size) > quota_bytes {
            return Err(BlobStoreError::QuotaExceeded);
        }
        let inserted = tx
            .execute(
                &format!(
                    "INSERT INTO blobs ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING"
                ),
                &[
                    &key(blob.id),
                    &(blob.owner.0 as i64),
                    &(blob.owner_device.0 as i64),
                    &(blob.conv.0 as i64),
                    &int(blob.size)?,
                    &int(blob.received)?,
                    &int(blob.created_at_ms)?,
                    &blob.completed_at_ms.map(int).transpose()?,
                ],
            )
            .await
            .map_err(failed)?;
        if inserted == 0 {
            return Err(BlobStoreError::Exists);
        }
        tx.commit().await.map_err(failed)
    }

    async fn blob(&self, id: BlobId) -> BlobResult<Option<BlobRecord>> {
        let c = self.pool.get().await.map_err(failed)?;
        let row =
            c.query_opt(&format!("SELECT {COLUMNS} FROM blobs WHERE id = $1"), &[&key(id)]).await.map_err(failed)?;
        row.as_ref().map(record).transpose()
    }

    async fn advance(&self, id: BlobId, from: u64, to: u64, now_ms: u64, recipients: &[DeviceId]) -> BlobResult<()> {
        let mut c = self.pool.get().await.map_err(failed)?;
        let tx = c.transaction().await.map_err(failed)?;
        let moved = tx
            .query_opt(
                "UPDATE blobs SET received = $2,
                   completed_at_ms = CASE WHEN $2 = size THEN $4 ELSE completed_at_ms END
                 WHERE id = $1 AND received = $3 RETURNING size",
                &[&key(id), &int(to)?, &int(from)?, &int(now_ms)?],
            )
            .await
            .map_err(failed)?;
        let Some(row) = moved else {
            let at = tx.query_opt("SELECT received FROM blobs WHERE id = $1", &[&key(id)]).await.map_err(failed)?;
            return match at {
                None => Err(BlobStoreError::NotFound),
                Some(row) => Err(BlobStoreError::Moved(uint(row.try_get(0).map_err(failed)?)?)),
            };
        };
        if uint(row.try_get(0).map_err(failed)?)? == to {
            let devices: Vec<i64> = recipients.iter().map(|d| d.0 as i64).collect();
            tx.execute(
                "INSERT INTO blob_recipients (blob, device) SELECT $1, d FROM UNNEST($2::BIGINT[]) AS d
                 ON CONFLICT DO NOTHING",
                &[&key(id), &devices],
            )
            .await
            .map_err(failed)?;
        }
        tx.commit().await.map_err(failed)
    }

    async fn fetched(&self, id: BlobId, device: DeviceId) -> BlobResult<()> {
        let c = self.pool.get().await.map_err(failed)?;
        c.execute("DELETE FROM blob_recipients WHERE blob = $1 AND device = $2", &[&key(id), &(device.0 as i64)])
            .await
            .map_err(failed)?;
        Ok(())
    }

    async fn recipients_left(&self, id: BlobId) -> BlobResult<u32> {
        let c = self.pool.get().await.map_err(failed)?;
        let row =
            c.query_one("SELECT COUNT(*) FROM blob_recipients WHERE blob = $1", &[&key(id)]).await.map_err(failed)?;
        u32::try_from(row.try_get::<_, i64>(0).map_err(failed)?).map_err(failed)
    }

    async fn used_bytes(&self, owner: UserId) -> BlobResult<u64> {
        let c = self.pool.get().await.map_err(failed)?;
        used(&c, owner).await
    }

    async fn due(&self, completed_before_ms: u64, created_before_ms: u64, limit: u32) -> BlobResult<Vec<BlobId>> {
        let c = self.pool.get().await.map_err(failed)?;
        let rows = c
            .query(
                "SELECT id FROM blobs WHERE
                   (completed_at_ms IS NULL AND created_at_ms < $2)
                   OR (completed_at_ms IS NOT NULL AND (completed_at_ms < $1
                       OR NOT EXISTS (SELECT 1 FROM blob_recipients r WHERE r.blob = blobs.id)))
                 LIMIT $3",
                &[&int(completed_before_ms)?, &int(created_before_ms)?, &i64::from(limit)],
            )
            .await
            .map_err(failed)?;
        rows.iter()
            .map(|row| {
                let id: Vec<u8> = row.try_get(0).map_err(failed)?;
                let id: [u8; 16] = id.as_slice().try_into().map_err(failed)?;
                Ok(u128::from_be_bytes(id))
            })
            .collect()
    }

    async fn delete_blob(&self, id: BlobId) -> BlobResult<()> {
        let mut c = self.pool.get().await.map_err(failed)?;
        let tx = c.transaction().await.map_err(failed)?;
        tx.execute("DELETE FROM blob_recipients WHERE blob = $1", &[&key(id)]).await.map_err(failed)?;
        tx.execute("DELETE FROM blobs WHERE id = $1", &[&key(id)]).await.map_err(failed)?;
        tx.commit().await.map_err(failed)
    }
}
