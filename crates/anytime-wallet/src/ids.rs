//! Ids the wallet derives, so retries and lookups need no table: a client's idempotency key is
//! scoped to its user (nobody can collide with or probe another user's keys), and each user has
//! one wallet account per currency.

use anytime_ledger::{AccountId, AccountKind, Currency, TransferId};
use anytime_proto::limits::WALLET_KEY_BYTES_MAX;
use anytime_proto::UserId;
use sha2::{Digest, Sha256};

/// Idempotency keys are 1 to `WALLET_KEY_BYTES_MAX` bytes of printable ASCII.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= WALLET_KEY_BYTES_MAX && key.bytes().all(|b| b.is_ascii_graphic())
}

/// A 128-bit id derived from `parts` (SHA-256, each part length-prefixed so no two lists of
/// parts collide by concatenation). Every id the wallet derives goes through here.
pub fn derive(parts: &[&[u8]]) -> u128 {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    let digest = hash.finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(id)
}

/// The ledger transfer id of `user`'s request with idempotency `key` (`purpose` separates the
/// namespaces of top-ups, payments, envelopes, …).
pub fn transfer_id(user: UserId, purpose: &str, key: &str) -> TransferId {
    TransferId(derive(&[b"transfer", &user.0.to_be_bytes(), purpose.as_bytes(), key.as_bytes()]))
}

pub fn wallet(user: UserId, currency: Currency) -> AccountId {
    AccountId::of(AccountKind::Wallet, currency, user.0)
}

/// Where money that came in through the payment provider is counted.
pub fn funding(currency: Currency) -> AccountId {
    AccountId::of(AccountKind::Funding, currency, 0)
}

/// Where money paid out to cards goes (what the provider settles with the operator).
pub fn settlement(currency: Currency) -> AccountId {
    AccountId::of(AccountKind::Settlement, currency, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_scoped_and_stable() {
        let a = transfer_id(UserId(1), "pay", "k1");
        assert_eq!(a, transfer_id(UserId(1), "pay", "k1"));
        assert_ne!(a, transfer_id(UserId(2), "pay", "k1"), "per user");
        assert_ne!(a, transfer_id(UserId(1), "top_up", "k1"), "per purpose");
        assert_ne!(wallet(UserId(1), Currency::USD), wallet(UserId(1), Currency::EUR));
        assert_ne!(wallet(UserId(0), Currency::USD), funding(Currency::USD));
        assert!(valid_key("0b5c1f2e-uuid") && !valid_key("") && !valid_key("has space") && !valid_key(&"k".repeat(65)));
    }
}
