//! Money in (and later out) through a payment provider. The ledger does not care which one
//! funded it: the server holds one `PaymentProvider`, the sandbox by default (`sandbox.rs`), and
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

#[async_trait]
pub trait PaymentProvider: Send + Sync {
    /// Shown to users, so a sandbox is never mistaken for real money.
    fn is_sandbox(&self) -> bool;
    /// Charges `card` `amount` minor units of `currency`.
    async fn charge(&self, card: &str, currency: Currency, amount: u128) -> Charge;
    /// Answers the second step of a charge that needed one.
    async fn confirm(&self, code: &str) -> bool;
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
}
