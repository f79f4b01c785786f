//! Accounts and transfers: plain data, the same in memory, on disk and in tests.

use serde::{Deserialize, Serialize};

use crate::currency::Currency;

/// The largest amount of one transfer, minor units (`limits.rs`).
pub use anytime_proto::limits::LEDGER_AMOUNT_MAX as AMOUNT_MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AccountId(pub u128);

/// Chosen by the client (derived from its idempotency key): a retry carries the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TransferId(pub u128);

/// What an account is for; it decides which balance may not go below zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AccountKind {
    /// A user's money (credit-normal): its debits, posted and held, never exceed its credits.
    Wallet,
    /// Money that came in through a payment provider (debit-normal): pay-outs never exceed it.
    Funding,
    /// Money on its way to or from businesses (later: orders, bookings).
    Settlement,
    /// Fees the operator earned.
    Fees,
    /// Money set aside for one purpose (a red envelope): like a wallet, never below zero.
    Escrow,
}

impl AccountKind {
    pub const ALL: [AccountKind; 5] =
        [AccountKind::Wallet, AccountKind::Funding, AccountKind::Settlement, AccountKind::Fees, AccountKind::Escrow];

    pub fn code(self) -> u16 {
        match self {
            AccountKind::Wallet => 1,
            AccountKind::Funding => 2,
            AccountKind::Settlement => 3,
            AccountKind::Fees => 4,
            AccountKind::Escrow => 5,
        }
    }

    pub fn from_code(code: u16) -> Option<AccountKind> {
        AccountKind::ALL.into_iter().find(|k| k.code() == code)
    }

    pub(crate) fn debits_within_credits(self) -> bool {
        matches!(self, AccountKind::Wallet | AccountKind::Escrow)
    }

    pub(crate) fn credits_within_debits(self) -> bool {
        matches!(self, AccountKind::Funding)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: AccountId,
    pub currency: Currency,
    pub kind: AccountKind,
    /// Whose it is: a user id for wallets, an envelope or order id for escrow, 0 for the system.
    pub owner: u64,
    pub debits_pending: u128,
    pub debits_posted: u128,
    pub credits_pending: u128,
    pub credits_posted: u128,
    /// Bumped by every change, so a store shared by several nodes refuses a write made from a
    /// stale copy (optimistic concurrency).
    pub version: u64,
}

impl Account {
    pub fn new(id: AccountId, currency: Currency, kind: AccountKind, owner: u64) -> Account {
        Account {
            id,
            currency,
            kind,
            owner,
            debits_pending: 0,
            debits_posted: 0,
            credits_pending: 0,
            credits_posted: 0,
            version: 0,
        }
    }

    /// What a credit-normal account (wallet, escrow) can spend: posted credits less posted and
    /// held debits.
    pub fn available(&self) -> u128 {
        self.credits_posted.saturating_sub(self.debits_posted).saturating_sub(self.debits_pending)
    }

    /// Posted balance of a credit-normal account.
    pub fn balance(&self) -> u128 {
        self.credits_posted.saturating_sub(self.debits_posted)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferKind {
    /// Moves money now.
    Posted,
    /// Holds money until posted, voided or `expires_at_ms` (then voided by [`crate::Ledger::expire`]).
    Pending { expires_at_ms: u64 },
    /// Completes the hold `pending` (with at most its amount; the rest is released).
    Post { pending: TransferId },
    /// Releases the hold `pending`.
    Void { pending: TransferId },
}

/// Where a hold stands; `None` on transfers that are not holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HoldStatus {
    Open,
    Posted,
    Voided,
    Expired,
}

impl HoldStatus {
    pub fn name(self) -> &'static str {
        match self {
            HoldStatus::Open => "open",
            HoldStatus::Posted => "posted",
            HoldStatus::Voided => "voided",
            HoldStatus::Expired => "expired",
        }
    }

    pub fn from_name(name: &str) -> Option<HoldStatus> {
        [HoldStatus::Open, HoldStatus::Posted, HoldStatus::Voided, HoldStatus::Expired]
            .into_iter()
            .find(|s| s.name() == name)
    }
}

/// A transfer as applied and stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub id: TransferId,
    pub debit: AccountId,
    pub credit: AccountId,
    pub amount: u128,
    pub currency: Currency,
    pub kind: TransferKind,
    /// What it is for (payment, request, split, envelope, refund, …): the wallet domain's codes.
    pub code: u16,
    /// What it belongs to (a request, an envelope, an order), 0 for nothing.
    pub reference: u128,
    pub timestamp_ms: u64,
    /// For holds: where the hold stands (the only field that changes after a transfer is stored).
    pub hold: Option<HoldStatus>,
}

/// What the shell asks the ledger to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Move (or, with `hold`, hold until that instant) `amount` from `debit` to `credit`.
    Transfer {
        id: TransferId,
        debit: AccountId,
        credit: AccountId,
        amount: u128,
        currency: Currency,
        code: u16,
        reference: u128,
        hold: Option<u64>,
    },
    /// Capture a hold: all of it (`amount` None) or part, the rest going back.
    Post { id: TransferId, pending: TransferId, amount: Option<u128> },
    /// Release a hold.
    Void { id: TransferId, pending: TransferId },
    /// Open an account (idempotent: the same account again is not an error).
    Open(Account),
}

impl AccountId {
    /// The id of the account of `kind` in `currency` owned by `owner`: derived, so a wallet's
    /// account needs no lookup table and the same (kind, currency, owner) is always one account.
    /// Layout: kind (16 bits) | currency (24 bits, its three ASCII letters) | 24 zero bits | owner (64 bits).
    pub fn of(kind: AccountKind, currency: Currency, owner: u64) -> AccountId {
        let code = currency.code().as_bytes();
        let letters = (u128::from(code[0]) << 16) | (u128::from(code[1]) << 8) | u128::from(code[2]);
        AccountId((u128::from(kind.code()) << 112) | (letters << 88) | u128::from(owner))
    }
}
