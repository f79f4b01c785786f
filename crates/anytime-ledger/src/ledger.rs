//! The ledger state machine. Per batch the shell drives it in three steps:
//!
//! 1. `while let Some(want) = ledger.wants(&batch) { ledger.loaded(want, store.load(..)) }` — the
//!    accounts and transfers the batch touches come into the working set (holds first, then their
//!    accounts: two rounds at most);
//! 2. `ledger.post_batch(now_ms, &batch)` — each command applied or refused, in order;
//! 3. `store.commit(&ledger.take_changes())` — durable before any result is told; on failure,
//!    `ledger.reset()` and the results are void (post the batch again).
//!
//! Several batches may be posted before one commit (group commit): the changes accumulate.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::currency::Currency;
use crate::error::TransferError;
use crate::store::{Changes, Loaded};
use crate::types::{Account, AccountId, Command, HoldStatus, Transfer, TransferId, TransferKind, AMOUNT_MAX};

/// What a batch needs loaded before it can be posted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prefetch {
    pub accounts: Vec<AccountId>,
    pub transfers: Vec<TransferId>,
}

/// What an accepted command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Posted {
    /// `duplicate`: the id was applied before (a retry); this is that first result, nothing moved.
    Transfer { transfer: Transfer, duplicate: bool },
    /// `existed`: the same account was already open.
    Opened { account: AccountId, existed: bool },
}

#[derive(Debug, Default)]
pub struct Ledger {
    accounts: HashMap<AccountId, Account>,
    transfers: HashMap<TransferId, Transfer>,
    /// Asked of the store and not there (until the next commit or reset).
    absent_accounts: HashSet<AccountId>,
    absent_transfers: HashSet<TransferId>,
    /// Accounts changed since the last `take_changes`: the version they were loaded with (`None`
    /// for accounts opened since).
    dirty: BTreeMap<AccountId, Option<u64>>,
    new_transfers: Vec<Transfer>,
    holds: BTreeMap<TransferId, HoldStatus>,
}

impl Ledger {
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// What `batch` touches that the working set lacks; `None` when it can be posted.
    pub fn wants(&self, batch: &[Command]) -> Option<Prefetch> {
        let mut want = Prefetch::default();
        let account = |id: AccountId, want: &mut Prefetch| {
            if !self.accounts.contains_key(&id) && !self.absent_accounts.contains(&id) && !want.accounts.contains(&id) {
                want.accounts.push(id);
            }
        };
        let transfer = |id: TransferId, want: &mut Prefetch| {
            if !self.transfers.contains_key(&id)
                && !self.absent_transfers.contains(&id)
                && !want.transfers.contains(&id)
            {
                want.transfers.push(id);
            }
        };
        for command in batch {
            match command {
                Command::Transfer { id, debit, credit, .. } => {
                    transfer(*id, &mut want);
                    account(*debit, &mut want);
                    account(*credit, &mut want);
                }
                Command::Post { id, pending, .. } | Command::Void { id, pending } => {
                    transfer(*id, &mut want);
                    transfer(*pending, &mut want);
                    if let Some(hold) = self.transfers.get(pending) {
                        account(hold.debit, &mut want);
                        account(hold.credit, &mut want);
                    }
                }
                Command::Open(new) => account(new.id, &mut want),
            }
        }
        (!want.accounts.is_empty() || !want.transfers.is_empty()).then_some(want)
    }

    /// Takes in what the store returned for `asked`; what it did not return does not exist.
    pub fn loaded(&mut self, asked: &Prefetch, found: Loaded) {
        for account in found.accounts {
            self.accounts.entry(account.id).or_insert(account);
        }
        for transfer in found.transfers {
            self.transfers.entry(transfer.id).or_insert(transfer);
        }
        for id in &asked.accounts {
            if !self.accounts.contains_key(id) {
                self.absent_accounts.insert(*id);
            }
        }
        for id in &asked.transfers {
            if !self.transfers.contains_key(id) {
                self.absent_transfers.insert(*id);
            }
        }
    }

    /// Applies `batch` in order. Every command's accounts and transfers must have been offered
    /// (see [`Ledger::wants`]); a refused command changes nothing.
    pub fn post_batch(&mut self, now_ms: u64, batch: &[Command]) -> Vec<Result<Posted, TransferError>> {
        assert!(self.wants(batch).is_none(), "post_batch before the batch was prefetched");
        let mut before: HashMap<AccountId, Account> = HashMap::new();
        let results = batch.iter().map(|command| self.apply(now_ms, command, &mut before)).collect();
        self.check_batch(&before);
        results
    }

    /// Releases holds past their expiry (the shell passes the ids its store reported, after
    /// prefetching them like a batch of `Void`s). Returns the holds it expired.
    pub fn expire(&mut self, now_ms: u64, holds: &[TransferId]) -> Vec<TransferId> {
        let mut before = HashMap::new();
        let mut expired = Vec::new();
        for id in holds {
            let Some(hold) = self.transfers.get(id).cloned() else { continue };
            if let TransferKind::Pending { expires_at_ms } = hold.kind {
                if hold.hold == Some(HoldStatus::Open) && expires_at_ms <= now_ms {
                    self.release(&hold, HoldStatus::Expired, &mut before);
                    expired.push(*id);
                }
            }
        }
        self.check_batch(&before);
        expired
    }

    /// Everything changed since the last call, for one store transaction. The working set
    /// keeps accounts and open holds; other transfers leave it (the store has them).
    pub fn take_changes(&mut self) -> Changes {
        let mut changes = Changes::default();
        for (id, version) in std::mem::take(&mut self.dirty) {
            // Dirty accounts are in the working set: they were changed there.
            let Some(account) = self.accounts.get_mut(&id) else { continue };
            account.version = version.map_or(0, |v| v + 1);
            changes.accounts.push((account.clone(), version));
        }
        changes.transfers = std::mem::take(&mut self.new_transfers);
        changes.holds = std::mem::take(&mut self.holds).into_iter().collect();
        self.transfers.retain(|_, t| t.hold == Some(HoldStatus::Open));
        self.absent_accounts.clear();
        self.absent_transfers.clear();
        changes
    }

    /// Forgets the working set and uncommitted changes (after a failed commit).
    pub fn reset(&mut self) {
        *self = Ledger::default();
    }

    /// An account as the working set has it.
    pub fn account(&self, id: AccountId) -> Option<&Account> {
        self.accounts.get(&id)
    }

    fn apply(
        &mut self,
        now_ms: u64,
        command: &Command,
        before: &mut HashMap<AccountId, Account>,
    ) -> Result<Posted, TransferError> {
        match command {
            Command::Open(account) => self.open(account),
            Command::Transfer { id, debit, credit, amount, currency, code, reference, hold } => {
                let transfer = Transfer {
                    id: *id,
                    debit: *debit,
                    credit: *credit,
                    amount: *amount,
                    currency: *currency,
                    kind: match hold {
                        Some(expires_at_ms) => TransferKind::Pending { expires_at_ms: *expires_at_ms },
                        None => TransferKind::Posted,
                    },
                    code: *code,
                    reference: *reference,
                    timestamp_ms: now_ms,
                    hold: hold.map(|_| HoldStatus::Open),
                };
                if let Some(existing) = self.transfers.get(id) {
                    return same_transfer(existing, &transfer);
                }
                self.transfer(now_ms, transfer, before)
            }
            Command::Post { id, pending, amount } => {
                if let Some(existing) = self.transfers.get(id) {
                    let same = existing.kind == TransferKind::Post { pending: *pending }
                        && amount.is_none_or(|a| a == existing.amount);
                    return duplicate_or_conflict(existing, same);
                }
                let hold = self.open_hold(now_ms, *pending, before)?;
                let amount = amount.unwrap_or(hold.amount);
                if amount == 0 {
                    return Err(TransferError::AmountZero);
                }
                if amount > hold.amount {
                    return Err(TransferError::AmountExceedsHold);
                }
                self.release(&hold, HoldStatus::Posted, before);
                let (debit, credit) = self.pair_mut(hold.debit, hold.credit, before);
                // Within the hold, which was within the limits: cannot overflow or go negative.
                debit.debits_posted += amount;
                credit.credits_posted += amount;
                let post = Transfer {
                    id: *id,
                    amount,
                    kind: TransferKind::Post { pending: *pending },
                    timestamp_ms: now_ms,
                    hold: None,
                    ..hold
                };
                Ok(self.stored(post))
            }
            Command::Void { id, pending } => {
                if let Some(existing) = self.transfers.get(id) {
                    let same = existing.kind == TransferKind::Void { pending: *pending };
                    return duplicate_or_conflict(existing, same);
                }
                let hold = self.open_hold(now_ms, *pending, before)?;
                self.release(&hold, HoldStatus::Voided, before);
                let void = Transfer {
                    id: *id,
                    kind: TransferKind::Void { pending: *pending },
                    timestamp_ms: now_ms,
                    hold: None,
                    ..hold
                };
                Ok(self.stored(void))
            }
        }
    }

    fn open(&mut self, account: &Account) -> Result<Posted, TransferError> {
        if let Some(existing) = self.accounts.get(&account.id) {
            let same = existing.currency == account.currency
                && existing.kind == account.kind
                && existing.owner == account.owner;
            return if same {
                Ok(Posted::Opened { account: account.id, existed: true })
            } else {
                Err(TransferError::AccountExists)
            };
        }
        let fresh = Account::new(account.id, account.currency, account.kind, account.owner);
        self.accounts.insert(fresh.id, fresh);
        self.absent_accounts.remove(&account.id);
        self.dirty.entry(account.id).or_insert(None);
        Ok(Posted::Opened { account: account.id, existed: false })
    }

    fn transfer(
        &mut self,
        now_ms: u64,
        transfer: Transfer,
        before: &mut HashMap<AccountId, Account>,
    ) -> Result<Posted, TransferError> {
        let amount = transfer.amount;
        if amount == 0 {
            return Err(TransferError::AmountZero);
        }
        if amount > AMOUNT_MAX {
            return Err(TransferError::AmountTooLarge);
        }
        if transfer.debit == transfer.credit {
            return Err(TransferError::SameAccount);
        }
        let debit = self.accounts.get(&transfer.debit).ok_or(TransferError::DebitAccountNotFound)?;
        let credit = self.accounts.get(&transfer.credit).ok_or(TransferError::CreditAccountNotFound)?;
        if debit.currency != transfer.currency || credit.currency != transfer.currency {
            return Err(TransferError::CurrencyMismatch);
        }
        if let TransferKind::Pending { expires_at_ms } = transfer.kind {
            if expires_at_ms <= now_ms {
                return Err(TransferError::ExpiryInPast);
            }
        }
        let debits_after = sum(&[debit.debits_posted, debit.debits_pending, amount])?;
        if debit.kind.debits_within_credits() && debits_after > debit.credits_posted {
            return Err(TransferError::InsufficientFunds);
        }
        let credits_after = sum(&[credit.credits_posted, credit.credits_pending, amount])?;
        if credit.kind.credits_within_debits() && credits_after > credit.debits_posted {
            return Err(TransferError::CreditsExceedDebits);
        }
        // Each field is at most the sums checked above.
        let pending = transfer.hold.is_some();
        let (debit, credit) = self.pair_mut(transfer.debit, transfer.credit, before);
        if pending {
            debit.debits_pending += amount;
            credit.credits_pending += amount;
        } else {
            debit.debits_posted += amount;
            credit.credits_posted += amount;
        }
        Ok(self.stored(transfer))
    }

    /// The open hold `pending`; one past its expiry is expired now (and refused).
    fn open_hold(
        &mut self,
        now_ms: u64,
        pending: TransferId,
        before: &mut HashMap<AccountId, Account>,
    ) -> Result<Transfer, TransferError> {
        let hold = self.transfers.get(&pending).cloned().ok_or(TransferError::HoldNotFound)?;
        let TransferKind::Pending { expires_at_ms } = hold.kind else {
            return Err(TransferError::HoldNotFound);
        };
        match hold.hold {
            Some(HoldStatus::Open) if expires_at_ms <= now_ms => {
                self.release(&hold, HoldStatus::Expired, before);
                Err(TransferError::Expired)
            }
            Some(HoldStatus::Open) => Ok(hold),
            Some(HoldStatus::Posted) => Err(TransferError::HoldAlreadyPosted),
            Some(HoldStatus::Voided) => Err(TransferError::HoldAlreadyVoided),
            Some(HoldStatus::Expired) => Err(TransferError::Expired),
            None => Err(TransferError::HoldNotFound),
        }
    }

    /// Takes an open hold's amount off both accounts' pending sums and sets its status.
    fn release(&mut self, hold: &Transfer, status: HoldStatus, before: &mut HashMap<AccountId, Account>) {
        let (debit, credit) = self.pair_mut(hold.debit, hold.credit, before);
        // An open hold's amount is in both pending sums.
        debit.debits_pending -= hold.amount;
        credit.credits_pending -= hold.amount;
        if let Some(stored) = self.transfers.get_mut(&hold.id) {
            stored.hold = Some(status);
        }
        // A hold created in this same batch is still in `new_transfers`: it is written with its
        // final status; an older one gets a status change.
        match self.new_transfers.iter_mut().find(|t| t.id == hold.id) {
            Some(new) => new.hold = Some(status),
            None => {
                self.holds.insert(hold.id, status);
            }
        }
    }

    /// Both accounts of a transfer, mutable, marked dirty and snapshotted for the batch check.
    fn pair_mut(
        &mut self,
        debit: AccountId,
        credit: AccountId,
        before: &mut HashMap<AccountId, Account>,
    ) -> (&mut Account, &mut Account) {
        assert_ne!(debit, credit, "a transfer between an account and itself");
        for id in [debit, credit] {
            let account = self.accounts.get(&id).expect("the accounts of an applied transfer are in the working set");
            before.entry(id).or_insert_with(|| account.clone());
            let version = account.version;
            let new = self.dirty.get(&id).is_some_and(|v| v.is_none());
            if !new {
                self.dirty.insert(id, Some(version));
            }
        }
        let [Some(d), Some(c)] = self.accounts.get_disjoint_mut([&debit, &credit]) else {
            unreachable!("both accounts were found just above");
        };
        (d, c)
    }

    fn stored(&mut self, transfer: Transfer) -> Posted {
        self.absent_transfers.remove(&transfer.id);
        self.transfers.insert(transfer.id, transfer.clone());
        self.new_transfers.push(transfer.clone());
        Posted::Transfer { transfer, duplicate: false }
    }

    /// The batch's invariants: per currency, what it added to debits equals what it added to
    /// credits (posted and pending); no wallet or escrow spent more than it had, no funding
    /// account paid out more than came in.
    fn check_batch(&self, before: &HashMap<AccountId, Account>) {
        let mut deltas: BTreeMap<Currency, [i128; 4]> = BTreeMap::new();
        for (id, old) in before {
            let new = &self.accounts[id];
            assert_eq!(new.currency, old.currency);
            let d = deltas.entry(new.currency).or_default();
            let delta = |a: u128, b: u128| a as i128 - b as i128;
            d[0] += delta(new.debits_posted, old.debits_posted);
            d[1] += delta(new.credits_posted, old.credits_posted);
            d[2] += delta(new.debits_pending, old.debits_pending);
            d[3] += delta(new.credits_pending, old.credits_pending);
            if new.kind.debits_within_credits() {
                assert!(new.debits_posted + new.debits_pending <= new.credits_posted, "{:?} overspent", new.id);
            }
            if new.kind.credits_within_debits() {
                assert!(new.credits_posted + new.credits_pending <= new.debits_posted, "{:?} overpaid", new.id);
            }
        }
        for (currency, [debits, credits, debits_pending, credits_pending]) in deltas {
            assert_eq!(debits, credits, "{currency}: posted debits and credits diverged");
            assert_eq!(debits_pending, credits_pending, "{currency}: pending debits and credits diverged");
        }
    }
}

fn sum(parts: &[u128]) -> Result<u128, TransferError> {
    parts.iter().try_fold(0u128, |acc, p| acc.checked_add(*p)).ok_or(TransferError::AmountTooLarge)
}

fn duplicate_or_conflict(existing: &Transfer, same: bool) -> Result<Posted, TransferError> {
    if same {
        Ok(Posted::Transfer { transfer: existing.clone(), duplicate: true })
    } else {
        Err(TransferError::Duplicate)
    }
}

/// A retry of `existing` if it asks for the same movement (a hold's expiry may differ: a client
/// retrying later computes a later one).
fn same_transfer(existing: &Transfer, asked: &Transfer) -> Result<Posted, TransferError> {
    let same = existing.debit == asked.debit
        && existing.credit == asked.credit
        && existing.amount == asked.amount
        && existing.currency == asked.currency
        && existing.code == asked.code
        && existing.reference == asked.reference
        && matches!(existing.kind, TransferKind::Pending { .. }) == matches!(asked.kind, TransferKind::Pending { .. })
        && matches!(existing.kind, TransferKind::Posted | TransferKind::Pending { .. });
    duplicate_or_conflict(existing, same)
}
