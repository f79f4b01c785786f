//! Money in and out through a payment provider. The ledger does not care which one funded it
//! or paid it out: the server holds one `PaymentProvider`, the sandbox by default (`sandbox.rs`), and
//! a real processor would implement the same trait.

use anytime_ledger::Currency;
use async_trait::async_trait;

use crate::sandbox;

/// What a charge came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    Succeeded,
    Declined,
    /// The card's issuer wants a second step (3-D Secure, or the sandbox's code).
    NeedsConfirmation,
    /// Not a card this provider takes.
    Refused,
}

/// What a payout (money out to a card) came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payout {
    Paid,
    Declined,
    /// Not answered yet: the money stays held; asking again with the same key gets the answer.
    Pending,
    /// Not a card this provider pays out to.
    Refused,
}

#[async_trait]
pub trait PaymentProvider: Send + Sync {
    /// Shown to users, so a sandbox is never mistaken for real money.
    fn is_sandbox(&self) -> bool;
    /// Charges `card` `amount` minor units of `currency`.
    async fn charge(&self, card: &str, currency: Currency, amount: u128) -> Charge;
    /// Answers the second step of a charge that needed one.
    async fn confirm(&self, code: &str) -> bool;
    /// Whether `card` is one this provider pays out to (checked before any money is held).
    fn pays_out_to(&self, card: &str) -> bool;
    /// Pays `amount` minor units of `currency` out to `card`. `key` is the payout's own id: a
    /// provider asked again with it pays once (processors take such idempotency keys).
    async fn payout(&self, card: &str, currency: Currency, amount: u128, key: &str) -> Payout;
}

/// The test-mode provider: test card numbers, no real money (see `sandbox`).
#[derive(Debug, Default, Clone, Copy)]
pub struct SandboxProvider;

#[async_trait]
impl PaymentProvider for SandboxProvider {
    fn is_sandbox(&self) -> bool {
        true
    }

    async fn charge(&self, card: &str, _currency: Currency, _amount: u128) -> Charge {
        match sandbox::charge(card) {
            sandbox::Outcome::Succeeded => Charge::Succeeded,
            sandbox::Outcome::Declined => Charge::Declined,
            sandbox::Outcome::NeedsConfirmation => Charge::NeedsConfirmation,
            sandbox::Outcome::UnknownCard => Charge::Refused,
        }
    }

    async fn confirm(&self, code: &str) -> bool {
        code == sandbox::CHALLENGE_CODE
    }

    fn pays_out_to(&self, card: &str) -> bool {
        sandbox::payout(card) != sandbox::PayoutOutcome::UnknownCard
    }

    async fn payout(&self, card: &str, _currency: Currency, _amount: u128, _key: &str) -> Payout {
        match sandbox::payout(card) {
            sandbox::PayoutOutcome::Paid => Payout::Paid,
            sandbox::PayoutOutcome::Declined => Payout::Declined,
            sandbox::PayoutOutcome::Pending => Payout::Pending,
            sandbox::PayoutOutcome::UnknownCard => Payout::Refused,
        }
    }
}
