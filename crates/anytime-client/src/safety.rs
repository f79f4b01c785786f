//! Safety numbers: a fingerprint of two users' device keys that both sides compute identically,
//! shown as 60 digits (12 groups of 5) or as a string to put in a QR code. It changes whenever
//! either side adds or removes a device, which is how a key change becomes visible.

use anytime_proto::UserId;
use sha2::{Digest, Sha256};

/// Rounds of hashing: slows down a search for another key set with the same number.
const ITERATIONS: u32 = 5_200;
const VERSION: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafetyNumber {
    /// 60 decimal digits, in groups of five separated by spaces.
    pub digits: String,
    /// `anytime-safety:1:<hex>`, for a QR code.
    pub qr: String,
}

/// One user's half: 30 digits from their id and all their devices' signature keys.
fn half(user: UserId, keys: &[Vec<u8>]) -> (Vec<u8>, String) {
    let mut keys = keys.to_vec();
    keys.sort();
    let mut hash = Sha256::new();
    hash.update([VERSION]);
    hash.update(user.0.to_be_bytes());
    for key in &keys {
        hash.update((key.len() as u32).to_be_bytes());
        hash.update(key);
    }
    let mut digest = hash.finalize().to_vec();
    for _ in 0..ITERATIONS {
        let mut round = Sha256::new();
        round.update(&digest);
        round.update(user.0.to_be_bytes());
        digest = round.finalize().to_vec();
    }
    let digits = digest[..30]
        .chunks(5)
        .map(|chunk| {
            let n = chunk.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            format!("{:05}", n % 100_000)
        })
        .collect::<Vec<_>>()
        .join(" ");
    (digest, digits)
}

/// The safety number of two users, each given with their devices' signature keys. The order of
/// the arguments does not matter.
pub fn safety_number(a: (UserId, &[Vec<u8>]), b: (UserId, &[Vec<u8>])) -> SafetyNumber {
    let (first, second) = if a.0 <= b.0 { (a, b) } else { (b, a) };
    let (hash_1, digits_1) = half(first.0, first.1);
    let (hash_2, digits_2) = half(second.0, second.1);
    let hex: String = hash_1.iter().chain(&hash_2).map(|b| format!("{b:02x}")).collect();
    SafetyNumber { digits: format!("{digits_1} {digits_2}"), qr: format!("anytime-safety:{VERSION}:{hex}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_compute_the_same_number_and_it_changes_with_the_keys() {
        let alice = (UserId(1), vec![vec![1u8; 32], vec![2u8; 32]]);
        let bob = (UserId(2), vec![vec![3u8; 32]]);
        let ab = safety_number((alice.0, &alice.1), (bob.0, &bob.1));
        let ba = safety_number((bob.0, &bob.1), (alice.0, &alice.1));
        assert_eq!(ab, ba);
        assert_eq!(ab.digits.split(' ').count(), 12);
        assert!(ab.digits.chars().all(|c| c.is_ascii_digit() || c == ' '));
        // Device order does not matter; a new device does.
        let reordered = vec![vec![2u8; 32], vec![1u8; 32]];
        assert_eq!(safety_number((alice.0, &reordered), (bob.0, &bob.1)), ab);
        let more = vec![vec![3u8; 32], vec![4u8; 32]];
        assert_ne!(safety_number((alice.0, &alice.1), (bob.0, &more)), ab);
    }
}
