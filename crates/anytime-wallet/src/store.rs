//! The wallet's own records beside the ledger: payment PINs. (Balances and transfers are the
//! ledger's.)

use std::collections::HashMap;
use std::sync::Mutex;

use anytime_proto::UserId;
use async_trait::async_trait;

use crate::pin::PinRecord;

#[derive(Debug, thiserror::Error)]
#[error("wallet store: {0}")]
pub struct WalletStoreError(pub String);

#[async_trait]
pub trait WalletStore: Send + Sync {
    async fn pin(&self, user: UserId) -> Result<Option<PinRecord>, WalletStoreError>;
    /// Writes (durably) the record of `user`.
    async fn put_pin(&self, user: UserId, record: &PinRecord) -> Result<(), WalletStoreError>;
}

#[derive(Debug, Default)]
pub struct MemoryWalletStore {
    pins: Mutex<HashMap<UserId, PinRecord>>,
}

#[async_trait]
impl WalletStore for MemoryWalletStore {
    async fn pin(&self, user: UserId) -> Result<Option<PinRecord>, WalletStoreError> {
        Ok(self.pins.lock().unwrap_or_else(|e| e.into_inner()).get(&user).cloned())
    }

    async fn put_pin(&self, user: UserId, record: &PinRecord) -> Result<(), WalletStoreError> {
        self.pins.lock().unwrap_or_else(|e| e.into_inner()).insert(user, record.clone());
        Ok(())
    }
}
