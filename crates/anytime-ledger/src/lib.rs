//! The wallet's ledger: double-entry accounts and transfers in integer minor units, as a sans-I/O
//! state machine (TigerBeetle's shape). The shell prefetches what a batch touches
//! ([`Ledger::wants`] → [`LedgerStore::load`] → [`Ledger::loaded`]), posts the batch
//! ([`Ledger::post_batch`]), persists the resulting [`Changes`] in one transaction and only then
//! answers. The core reads no clock (time is an input), does no I/O and keeps no locks.
//!
//! Invariants, checked by `assert!` after every batch and by the tests: every transfer debits one
//! account and credits another by the same amount, so per currency the sum of all debits equals
//! the sum of all credits; a wallet's debits (posted and held) never exceed its credits; a
//! transfer id is applied once — a retry with the same id and fields returns the first result.

mod currency;
mod error;
mod ledger;
mod memory;
mod store;
mod types;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use currency::Currency;
pub use error::{LedgerError, TransferError};
pub use ledger::{Ledger, Posted, Prefetch};
pub use memory::MemoryLedgerStore;
pub use store::{Changes, CommitError, LedgerStore, Loaded, StoreError, Totals};
pub use types::{Account, AccountId, AccountKind, Command, HoldStatus, Transfer, TransferId, TransferKind, AMOUNT_MAX};
