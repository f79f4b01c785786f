//! The wallet domain's rules, without I/O: who may move money and how much (payment PIN with
//! lockout, per-transfer and daily limits), how ids are derived (a client's idempotency key
//! becomes a ledger transfer id; a user's wallet is a derived ledger account), and the sandbox
//! payment provider that funds wallets on one machine. The money itself is the ledger's
//! (`anytime-ledger`); the server shell composes both.

pub mod envelope;
pub mod ids;
pub mod limits;
pub mod pin;
pub mod provider;
pub mod request;
pub mod sandbox;
mod store;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use store::{same_envelope, MemoryWalletStore, WalletStore, WalletStoreError};

/// What a transfer is for (the ledger's `code`): shown in histories and exports.
pub mod purpose {
    pub const PAYMENT: u16 = 1;
    pub const TOP_UP: u16 = 2;
    /// Into a red envelope's escrow, out of it to a grabber, and the rest back.
    pub const ENVELOPE: u16 = 3;
    pub const ENVELOPE_SHARE: u16 = 4;
    pub const ENVELOPE_REFUND: u16 = 5;
    /// Paying a money request (or a share of a split bill).
    pub const REQUEST: u16 = 6;
    /// Money out to a card: held while the provider pays it out, then captured or released.
    pub const PAYOUT: u16 = 7;

    pub fn name(code: u16) -> &'static str {
        match code {
            PAYMENT => "payment",
            TOP_UP => "top_up",
            ENVELOPE => "red_envelope",
            ENVELOPE_SHARE => "red_envelope_share",
            ENVELOPE_REFUND => "red_envelope_refund",
            REQUEST => "request",
            PAYOUT => "payout",
            _ => "other",
        }
    }
}
