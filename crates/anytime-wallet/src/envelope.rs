//! Red envelopes: money put into a group chat for its members to grab, first come first served.
//! The total goes into an escrow account when the envelope is made; each grab takes the next
//! share out of it; after `ENVELOPE_TTL_MS` what is left goes back to the sender. Shares are
//! fixed when the envelope is made (random or equal), so concurrent grabs only race for the
//! next index, which the store arbitrates.

use anytime_ledger::{AccountId, AccountKind, Currency, TransferId};
use anytime_proto::limits::ENVELOPE_SHARES_MAX;
use anytime_proto::{ConvId, UserId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Each share a random amount (WeChat's "double average": at most twice the mean of what is
    /// left), at least one minor unit each.
    Random,
    Equal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Open,
    /// Past its expiry; the rest went back to the sender.
    Refunded,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Refunded => "refunded",
        }
    }

    pub fn from_name(name: &str) -> Option<Status> {
        [Status::Open, Status::Refunded].into_iter().find(|s| s.name() == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub id: u128,
    pub owner: UserId,
    pub conv: ConvId,
    pub currency: Currency,
    pub total: u128,
    /// The amounts, in the order they are grabbed; they add up to `total`.
    pub shares: Vec<u128>,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    pub status: Status,
}

/// One grab: who took which share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub user: UserId,
    pub index: u32,
    pub amount: u128,
    pub at_ms: u64,
}

/// What a grab found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grab {
    /// This user's share: `fresh` unless the user had grabbed before (a retry).
    Share { claim: Claim, fresh: bool },
    /// Every share is taken.
    Empty,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("an envelope has 1 to {ENVELOPE_SHARES_MAX} shares")]
    Shares,
    #[error("the total must give every share at least one minor unit")]
    TooSmall,
}

/// The shares of `total` in `shares` parts; `random` yields uniform random u64s.
pub fn split(
    total: u128,
    shares: u32,
    how: Split,
    mut random: impl FnMut() -> u64,
) -> Result<Vec<u128>, EnvelopeError> {
    if shares == 0 || shares > ENVELOPE_SHARES_MAX {
        return Err(EnvelopeError::Shares);
    }
    let n = u128::from(shares);
    if total < n {
        return Err(EnvelopeError::TooSmall);
    }
    let parts = match how {
        Split::Equal => (0..n).map(|i| total / n + u128::from(i < total % n)).collect(),
        Split::Random => {
            let mut left = total;
            let mut parts = Vec::with_capacity(shares as usize);
            for i in 0..n {
                let remaining = n - i;
                if remaining == 1 {
                    parts.push(left);
                    break;
                }
                // Leave at least one unit for each later share; at most twice the mean.
                let max = (left - (remaining - 1)).min(2 * left / remaining).max(1);
                let share = 1 + u128::from(random()) % max;
                parts.push(share);
                left -= share;
            }
            parts
        }
    };
    assert_eq!(parts.iter().sum::<u128>(), total, "shares add up to the total");
    assert!(parts.iter().all(|p| *p >= 1), "every share has money");
    Ok(parts)
}

/// Where the envelope's money waits.
pub fn escrow(envelope: u128, currency: Currency) -> AccountId {
    let owner = crate::ids::derive(&[b"escrow", &envelope.to_be_bytes()]) as u64;
    AccountId::of(AccountKind::Escrow, currency, owner)
}

/// The ledger transfer that pays share `index` (one per share: a retried grab moves nothing twice).
pub fn share_transfer(envelope: u128, index: u32) -> TransferId {
    TransferId(crate::ids::derive(&[b"share", &envelope.to_be_bytes(), &index.to_be_bytes()]))
}

/// The ledger transfer that gives the rest back.
pub fn refund_transfer(envelope: u128) -> TransferId {
    TransferId(crate::ids::derive(&[b"refund", &envelope.to_be_bytes()]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_and_each_has_money() {
        let mut x = 7u64;
        let mut rng = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for total in [10u128, 11, 1_000, 123_457] {
            for n in [1u32, 2, 3, 10] {
                for how in [Split::Random, Split::Equal] {
                    let parts = split(total, n, how, &mut rng).expect("valid");
                    assert_eq!(parts.len(), n as usize);
                    assert_eq!(parts.iter().sum::<u128>(), total);
                }
            }
        }
        assert_eq!(split(10, 3, Split::Equal, &mut rng), Ok(vec![4, 3, 3]));
        assert_eq!(split(2, 3, Split::Equal, &mut rng), Err(EnvelopeError::TooSmall));
        assert_eq!(split(100, 0, Split::Random, &mut rng), Err(EnvelopeError::Shares));
        assert_eq!(split(1_000, ENVELOPE_SHARES_MAX + 1, Split::Random, &mut rng), Err(EnvelopeError::Shares));
        assert_ne!(share_transfer(1, 0), share_transfer(1, 1));
        assert_ne!(escrow(1, Currency::USD), escrow(2, Currency::USD));
    }
}
