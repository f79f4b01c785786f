//! What can go wrong, with the stable codes clients see (docs/protocol.md).

/// Why one transfer of a batch was refused; nothing of it was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    #[error("the amount must be more than zero")]
    AmountZero,
    #[error("the amount is larger than any single transfer may be")]
    AmountTooLarge,
    #[error("money cannot move from an account to itself")]
    SameAccount,
    #[error("there is no account to take the money from")]
    DebitAccountNotFound,
    #[error("there is no account to give the money to")]
    CreditAccountNotFound,
    #[error("the accounts or the transfer are in different currencies")]
    CurrencyMismatch,
    #[error("not enough money")]
    InsufficientFunds,
    #[error("the account cannot take that much")]
    CreditsExceedDebits,
    #[error("a different transfer already has this id")]
    Duplicate,
    #[error("there is no such hold")]
    HoldNotFound,
    #[error("the hold was already captured")]
    HoldAlreadyPosted,
    #[error("the hold was already released")]
    HoldAlreadyVoided,
    #[error("the hold has expired")]
    Expired,
    #[error("more than the hold holds")]
    AmountExceedsHold,
    #[error("a hold must expire in the future")]
    ExpiryInPast,
    #[error("an account with this id exists and differs")]
    AccountExists,
}

impl TransferError {
    /// Stable, for clients and logs.
    pub fn code(self) -> &'static str {
        match self {
            TransferError::AmountZero => "amount_zero",
            TransferError::AmountTooLarge => "amount_too_large",
            TransferError::SameAccount => "same_account",
            TransferError::DebitAccountNotFound | TransferError::CreditAccountNotFound => "account_not_found",
            TransferError::CurrencyMismatch => "currency_mismatch",
            TransferError::InsufficientFunds => "insufficient_funds",
            TransferError::CreditsExceedDebits => "limit_exceeded",
            TransferError::Duplicate => "duplicate",
            TransferError::HoldNotFound => "hold_not_found",
            TransferError::HoldAlreadyPosted => "already_captured",
            TransferError::HoldAlreadyVoided => "already_released",
            TransferError::Expired => "expired",
            TransferError::AmountExceedsHold => "amount_exceeds_hold",
            TransferError::ExpiryInPast => "expired",
            TransferError::AccountExists => "duplicate",
        }
    }
}

/// Bad input outside a batch (parsing currencies and amounts).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    #[error("{0:?} is not a currency this ledger knows (ISO 4217 codes such as USD, EUR, JPY)")]
    UnknownCurrency(String),
    #[error("{0:?} is not an amount (digits, with at most the currency's decimals)")]
    BadAmount(String),
}
