//! Money requests, and split bills made of them: someone asks a member of a chat for an amount;
//! the payer pays (with the PIN) or declines; unpaid requests expire. A split bill is one request
//! per member for their share, with a tracker of who has paid. No money is held for a request:
//! it moves when the payer pays, by a transfer id derived from the request, so paying twice
//! moves it once.

use anytime_ledger::{Currency, TransferId};
use anytime_proto::{ConvId, UserId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Open,
    Paid,
    Declined,
    Cancelled,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Paid => "paid",
            Status::Declined => "declined",
            Status::Cancelled => "cancelled",
        }
    }

    pub fn from_name(name: &str) -> Option<Status> {
        [Status::Open, Status::Paid, Status::Declined, Status::Cancelled].into_iter().find(|s| s.name() == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoneyRequest {
    pub id: u128,
    /// Who asks (and is paid).
    pub requester: UserId,
    pub payer: UserId,
    pub conv: ConvId,
    pub currency: Currency,
    pub amount: u128,
    /// The split bill it belongs to, if any.
    pub split: Option<u128>,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    pub status: Status,
}

impl MoneyRequest {
    /// What a reader should see: an open request past its expiry has expired.
    pub fn state(&self, now_ms: u64) -> &'static str {
        match self.status {
            Status::Open if self.expires_at_ms <= now_ms => "expired",
            other => other.name(),
        }
    }
}

/// A retried creation asks for the same request.
pub fn same_request(a: &MoneyRequest, b: &MoneyRequest) -> bool {
    a.requester == b.requester
        && a.payer == b.payer
        && a.conv == b.conv
        && a.currency == b.currency
        && a.amount == b.amount
        && a.split == b.split
}

/// The ledger transfer that pays request `id` (one per request).
pub fn payment_transfer(id: u128) -> TransferId {
    TransferId(crate::ids::derive(&[b"request-payment", &id.to_be_bytes()]))
}

/// The id of the request of `member` in split `split`.
pub fn split_request_id(split: u128, member: UserId) -> u128 {
    crate::ids::derive(&[b"split-request", &split.to_be_bytes(), &member.0.to_be_bytes()])
}

/// Equal shares of `total` among `people` (the first ones get the cents that do not divide).
pub fn equal_shares(total: u128, people: usize) -> Vec<u128> {
    let n = people.max(1) as u128;
    (0..n).map(|i| total / n + u128::from(i < total % n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_and_ids() {
        assert_eq!(equal_shares(1000, 3), vec![334, 333, 333]);
        assert_eq!(equal_shares(1000, 3).iter().sum::<u128>(), 1000);
        assert_ne!(split_request_id(1, UserId(2)), split_request_id(1, UserId(3)));
        assert_ne!(payment_transfer(1), payment_transfer(2));
        let r = MoneyRequest {
            id: 1,
            requester: UserId(1),
            payer: UserId(2),
            conv: ConvId(3),
            currency: Currency::USD,
            amount: 5,
            split: None,
            created_at_ms: 0,
            expires_at_ms: 10,
            status: Status::Open,
        };
        assert_eq!((r.state(9), r.state(10)), ("open", "expired"));
    }
}
