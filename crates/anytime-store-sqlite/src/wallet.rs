//! The wallet's payment PINs on SQLite (`anytime_wallet::WalletStore`).

use anytime_proto::UserId;
use anytime_wallet::pin::PinRecord;
use anytime_wallet::{WalletStore, WalletStoreError};
use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};

use crate::engine::backend;
use crate::SqliteStore;

fn failed(error: anytime_server_core::store::StoreError) -> WalletStoreError {
    WalletStoreError(error.to_string())
}

#[async_trait]
impl WalletStore for SqliteStore {
    async fn pin(&self, user: UserId) -> Result<Option<PinRecord>, WalletStoreError> {
        self.engine
            .read(move |c| {
                c.query_row(
                    "SELECT hash, failures, locked_until_ms FROM wallet_pins WHERE user_id = ?",
                    [user.0 as i64],
                    |r| {
                        Ok(PinRecord {
                            hash: r.get(0)?,
                            failures: r.get(1)?,
                            locked_until_ms: r.get::<_, i64>(2)? as u64,
                        })
                    },
                )
                .optional()
                .map_err(backend)
            })
            .await
            .map_err(failed)
    }

    async fn put_pin(&self, user: UserId, record: &PinRecord) -> Result<(), WalletStoreError> {
        let record = record.clone();
        self.engine
            .write(move |c| {
                c.execute(
                    "INSERT INTO wallet_pins (user_id, hash, failures, locked_until_ms) VALUES (?, ?, ?, ?)
                     ON CONFLICT(user_id) DO UPDATE SET hash = excluded.hash, failures = excluded.failures,
                     locked_until_ms = excluded.locked_until_ms",
                    params![user.0 as i64, record.hash, record.failures, record.locked_until_ms as i64],
                )
                .map(|_| ())
                .map_err(backend)
            })
            .await
            .map_err(failed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn pins_are_kept_and_replaced() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = SqliteStore::open(&dir.path().join("w.sqlite3"), Arc::default()).expect("open");
        assert_eq!(store.pin(UserId(5)).await.expect("read"), None);
        let record = PinRecord { hash: "$argon2id$x".into(), failures: 2, locked_until_ms: 99 };
        store.put_pin(UserId(5), &record).await.expect("write");
        store.put_pin(UserId(5), &PinRecord { failures: 3, ..record.clone() }).await.expect("write");
        assert_eq!(store.pin(UserId(5)).await.expect("read"), Some(PinRecord { failures: 3, ..record }));
        assert_eq!(store.pin(UserId(6)).await.expect("read"), None);
    }
}
