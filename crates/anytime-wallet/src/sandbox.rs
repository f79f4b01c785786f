//! The sandbox payment provider: funds wallets on one machine with test card numbers, as a
//! card processor's test mode does. Named as a sandbox everywhere it shows; no real money moves.
//! Cards (spaces ignored):
//! - 4242 4242 4242 4242 — succeeds;
//! - 4000 0000 0000 0002 — declined;
//! - 4000 0000 0000 3220 — needs a second step (like 3-D Secure): confirm with [`CHALLENGE_CODE`].
//!
//! Payouts (money out to a card) go to the same test cards: 4242… is paid, …0002 is declined, and
//! 4000 0000 0000 0077 stays pending (the provider never answers, as one that is down would not):
//! the money stays held until the hold expires and comes back.

/// What the second step asks the user to type in the sandbox.
pub const CHALLENGE_CODE: &str = "123456";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Declined,
    NeedsConfirmation,
    /// Not a test card: the sandbox only knows the cards above.
    UnknownCard,
}

fn digits(card: &str) -> String {
    card.chars().filter(|c| !c.is_whitespace() && *c != '-').collect()
}

/// What the sandbox does with a payout to `card`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayoutOutcome {
    Paid,
    Declined,
    /// No answer: the payout is neither paid nor declined (yet).
    Pending,
    UnknownCard,
}

pub fn payout(card: &str) -> PayoutOutcome {
    match digits(card).as_str() {
        "4242424242424242" => PayoutOutcome::Paid,
        "4000000000000002" => PayoutOutcome::Declined,
        "4000000000000077" => PayoutOutcome::Pending,
        _ => PayoutOutcome::UnknownCard,
    }
}

pub fn charge(card: &str) -> Outcome {
    let digits = digits(card);
    match digits.as_str() {
        "4242424242424242" => Outcome::Succeeded,
        "4000000000000002" => Outcome::Declined,
        "4000000000003220" => Outcome::NeedsConfirmation,
        _ => Outcome::UnknownCard,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_cards_behave_as_documented() {
        assert_eq!(charge("4242 4242 4242 4242"), Outcome::Succeeded);
        assert_eq!(charge("4000-0000-0000-0002"), Outcome::Declined);
        assert_eq!(charge("4000000000003220"), Outcome::NeedsConfirmation);
        assert_eq!(charge("5555 5555 5555 4444"), Outcome::UnknownCard);
        assert_eq!(payout("4242 4242 4242 4242"), PayoutOutcome::Paid);
        assert_eq!(payout("4000 0000 0000 0002"), PayoutOutcome::Declined);
        assert_eq!(payout("4000 0000 0000 0077"), PayoutOutcome::Pending);
        assert_eq!(payout("4000000000003220"), PayoutOutcome::UnknownCard, "no second step for payouts");
    }
}
