//! A [`LedgerStore`] in memory: for tests of the ledger and its shells, and the simulation.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::currency::Currency;
use crate::store::{Changes, CommitError, LedgerStore, Loaded, StoreError, Totals};
use crate::types::{Account, AccountId, HoldStatus, Transfer, TransferId, TransferKind};

#[derive(Debug, Default)]
struct State {
    accounts: HashMap<AccountId, Account>,
    transfers: BTreeMap<TransferId, Transfer>,
}

#[derive(Debug, Default)]
pub struct MemoryLedgerStore {
    state: Mutex<State>,
}

impl MemoryLedgerStore {
    pub fn new() -> MemoryLedgerStore {
        MemoryLedgerStore::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind, still consistent per commit.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl LedgerStore for MemoryLedgerStore {
    async fn load(&self, accounts: &[AccountId], transfers: &[TransferId]) -> Result<Loaded, StoreError> {
        let state = self.state();
        Ok(Loaded {
            accounts: accounts.iter().filter_map(|id| state.accounts.get(id).cloned()).collect(),
            transfers: transfers.iter().filter_map(|id| state.transfers.get(id).cloned()).collect(),
        })
    }

    async fn commit(&self, changes: &Changes) -> Result<(), CommitError> {
        let mut state = self.state();
        for (account, expected) in &changes.accounts {
            let current = state.accounts.get(&account.id).map(|a| a.version);
            if current != *expected {
                return Err(CommitError::Conflict);
            }
        }
        if changes.transfers.iter().any(|t| state.transfers.contains_key(&t.id)) {
            return Err(CommitError::Conflict);
        }
        if changes.holds.iter().any(|(id, _)| !state.transfers.contains_key(id)) {
            return Err(CommitError::Store(StoreError("a hold status for an unknown transfer".into())));
        }
        for (account, _) in &changes.accounts {
            state.accounts.insert(account.id, account.clone());
        }
        for transfer in &changes.transfers {
            state.transfers.insert(transfer.id, transfer.clone());
        }
        for (id, status) in &changes.holds {
            if let Some(t) = state.transfers.get_mut(id) {
                t.hold = Some(*status);
            }
        }
        Ok(())
    }

    async fn expired_holds(&self, now_ms: u64, limit: u32) -> Result<Vec<TransferId>, StoreError> {
        let state = self.state();
        let mut due: Vec<(u64, TransferId)> = state
            .transfers
            .values()
            .filter(|t| t.hold == Some(HoldStatus::Open))
            .filter_map(|t| match t.kind {
                TransferKind::Pending { expires_at_ms } if expires_at_ms <= now_ms => Some((expires_at_ms, t.id)),
                _ => None,
            })
            .collect();
        due.sort();
        Ok(due.into_iter().take(limit as usize).map(|(_, id)| id).collect())
    }

    async fn transfers_of(
        &self,
        account: AccountId,
        before: Option<(u64, TransferId)>,
        limit: u32,
    ) -> Result<Vec<Transfer>, StoreError> {
        let state = self.state();
        let mut found: Vec<&Transfer> = state
            .transfers
            .values()
            .filter(|t| t.debit == account || t.credit == account)
            .filter(|t| before.is_none_or(|b| (t.timestamp_ms, t.id) < b))
            .collect();
        found.sort_by_key(|t| std::cmp::Reverse((t.timestamp_ms, t.id)));
        Ok(found.into_iter().take(limit as usize).cloned().collect())
    }

    async fn totals(&self) -> Result<Vec<(Currency, Totals)>, StoreError> {
        let state = self.state();
        let mut totals: BTreeMap<Currency, Totals> = BTreeMap::new();
        for a in state.accounts.values() {
            let t = totals.entry(a.currency).or_default();
            t.debits_posted += a.debits_posted;
            t.credits_posted += a.credits_posted;
            t.debits_pending += a.debits_pending;
            t.credits_pending += a.credits_pending;
        }
        Ok(totals.into_iter().collect())
    }
}

#[cfg(all(test, feature = "conformance"))]
mod tests {
    #[tokio::test]
    async fn passes_the_ledger_store_conformance_cases() {
        crate::conformance::run_all(|| async { super::MemoryLedgerStore::new() }).await;
    }
}
