//! The wallet's payment PINs on PostgreSQL (`anytime_wallet::WalletStore`).

use anytime_proto::UserId;
use anytime_wallet::pin::PinRecord;
use anytime_wallet::{WalletStore, WalletStoreError};
use async_trait::async_trait;

use crate::PgStore;

fn failed(error: impl std::fmt::Display) -> WalletStoreError {
    WalletStoreError(error.to_string())
}

#[async_trait]
impl WalletStore for PgStore {
    async fn pin(&self, user: UserId) -> Result<Option<PinRecord>, WalletStoreError> {
        let c = self.pool.get().await.map_err(failed)?;
        let row = c
            .query_opt(
                "SELECT hash, failures, locked_until_ms FROM wallet_pins WHERE user_id = $1",
                &[&crate::pg::id(user.0)],
            )
            .await
            .map_err(failed)?;
        let Some(row) = row else { return Ok(None) };
        let failures: i32 = row.try_get(1).map_err(failed)?;
        let locked: i64 = row.try_get(2).map_err(failed)?;
        Ok(Some(PinRecord {
            hash: row.try_get(0).map_err(failed)?,
            failures: u32::try_from(failures).map_err(failed)?,
            locked_until_ms: u64::try_from(locked).map_err(failed)?,
        }))
    }

    async fn put_pin(&self, user: UserId, record: &PinRecord) -> Result<(), WalletStoreError> {
        let c = self.pool.get().await.map_err(failed)?;
        let failures = i32::try_from(record.failures).map_err(failed)?;
        let locked = i64::try_from(record.locked_until_ms).map_err(failed)?;
        c.execute(
            "INSERT INTO wallet_pins (user_id, hash, failures, locked_until_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id) DO UPDATE SET hash = EXCLUDED.hash, failures = EXCLUDED.failures,
             locked_until_ms = EXCLUDED.locked_until_ms",
            &[&crate::pg::id(user.0), &record.hash, &failures, &locked],
        )
        .await
        .map_err(failed)?;
        Ok(())
    }
}
