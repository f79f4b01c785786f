//! Where the ledger's state lives: the trait the shell calls (load what a batch touches, commit
//! what it changed in one transaction), with an in-memory implementation in this crate and the
//! SQLite and PostgreSQL ones in the store crates, all held to `conformance`.

use async_trait::async_trait;

use crate::currency::Currency;
use crate::types::{Account, AccountId, HoldStatus, Transfer, TransferId};

/// One atomic write: everything a batch changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Accounts as they are now, each with the version the store must still have (`None`: the
    /// account is new). A store refuses the whole batch if any version moved on meanwhile.
    pub accounts: Vec<(Account, Option<u64>)>,
    /// New transfers.
    pub transfers: Vec<Transfer>,
    /// Holds whose status changed (captured, released, expired).
    pub holds: Vec<(TransferId, HoldStatus)>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty() && self.transfers.is_empty() && self.holds.is_empty()
    }
}

/// What the store found of what the ledger asked for (ids it lacks are simply absent).
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub accounts: Vec<Account>,
    pub transfers: Vec<Transfer>,
}

/// Sums over every account of one currency: debits equal credits, posted and pending, always.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub debits_posted: u128,
    pub credits_posted: u128,
    pub debits_pending: u128,
    pub credits_pending: u128,
}

#[derive(Debug, thiserror::Error)]
#[error("ledger store: {0}")]
pub struct StoreError(pub String);

impl StoreError {
    pub fn new(error: impl std::fmt::Display) -> StoreError {
        StoreError(error.to_string())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// Another writer changed an account since it was loaded, or the transfer id exists: nothing
    /// was written; reload and post the batch again.
    #[error("the ledger changed meanwhile; nothing was written")]
    Conflict,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[async_trait]
pub trait LedgerStore: Send + Sync {
    async fn load(&self, accounts: &[AccountId], transfers: &[TransferId]) -> Result<Loaded, StoreError>;
    /// Writes `changes` in one durable transaction, or nothing.
    async fn commit(&self, changes: &Changes) -> Result<(), CommitError>;
    /// Open holds that expire at or before `now_ms`, oldest first.
    async fn expired_holds(&self, now_ms: u64, limit: u32) -> Result<Vec<TransferId>, StoreError>;
    /// Transfers that debit or credit `account`, newest first, older than `before` (timestamp, id).
    async fn transfers_of(
        &self,
        account: AccountId,
        before: Option<(u64, TransferId)>,
        limit: u32,
    ) -> Result<Vec<Transfer>, StoreError>;
    /// Sums per currency over every account (the zero-sum check).
    async fn totals(&self) -> Result<Vec<(Currency, Totals)>, StoreError>;
}
