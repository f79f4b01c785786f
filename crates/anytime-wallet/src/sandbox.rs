//! The sandbox payment provider: funds wallets on one machine with test card numbers, as a
//! card processor's test mode does. Named as a sandbox everywhere it shows; no real money moves.
//! Cards (spaces ignored):
//! - 4242 4242 4242 4242 — succeeds;
//! - 4000 0000 0000 0002 — declined;
//! - 4000 0000 0000 3220 — needs a second step (like 3-D Secure): confirm with [`CHALLENGE_CODE`].

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

pub fn charge(card: &str) -> Outcome {
    let digits: String = card.chars().filter(|c| !c.is_whitespace() && *c != '-').collect();
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
    }
}
