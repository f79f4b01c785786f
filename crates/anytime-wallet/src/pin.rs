//! The payment PIN: a second secret, asked before money leaves a wallet. Stored as an argon2id
//! hash (the shell hashes; this module only decides). After `PIN_FAILURES_MAX` wrong PINs in a
//! row, payments are locked for `PIN_LOCK_MS`; a right PIN resets the count.

use anytime_proto::limits::{PIN_FAILURES_MAX, PIN_LOCK_MS};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinRecord {
    /// argon2id PHC string.
    pub hash: String,
    /// Wrong PINs in a row.
    pub failures: u32,
    /// Payments refused until then (0: not locked).
    pub locked_until_ms: u64,
}

/// 4 to 8 digits.
pub fn valid_format(pin: &str) -> bool {
    (4..=8).contains(&pin.len()) && pin.bytes().all(|b| b.is_ascii_digit())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    #[error("set a payment PIN first")]
    NotSet,
    #[error("the payment PIN is wrong")]
    Wrong,
    #[error("too many wrong PINs: payments are locked until {until_ms}")]
    Locked { until_ms: u64 },
}

/// Whether a PIN may be tried now.
pub fn may_try(record: Option<&PinRecord>, now_ms: u64) -> Result<(), PinError> {
    let record = record.ok_or(PinError::NotSet)?;
    if record.locked_until_ms > now_ms {
        return Err(PinError::Locked { until_ms: record.locked_until_ms });
    }
    Ok(())
}

/// The record after a try (`matched`: the hash verified), and the answer.
pub fn after_try(record: &PinRecord, matched: bool, now_ms: u64) -> (PinRecord, Result<(), PinError>) {
    if matched {
        return (PinRecord { failures: 0, locked_until_ms: 0, ..record.clone() }, Ok(()));
    }
    let failures = record.failures + 1;
    if failures >= PIN_FAILURES_MAX {
        let until_ms = now_ms + PIN_LOCK_MS;
        (PinRecord { failures: 0, locked_until_ms: until_ms, ..record.clone() }, Err(PinError::Locked { until_ms }))
    } else {
        (PinRecord { failures, ..record.clone() }, Err(PinError::Wrong))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_pins_lock_payments_for_a_while_and_a_right_one_resets() {
        let mut record = PinRecord { hash: "h".into(), failures: 0, locked_until_ms: 0 };
        assert_eq!(may_try(None, 0), Err(PinError::NotSet));
        for _ in 1..PIN_FAILURES_MAX {
            let (next, answer) = after_try(&record, false, 1_000);
            assert_eq!(answer, Err(PinError::Wrong));
            record = next;
        }
        let (locked, answer) = after_try(&record, false, 1_000);
        assert_eq!(answer, Err(PinError::Locked { until_ms: 1_000 + PIN_LOCK_MS }));
        assert_eq!(
            may_try(Some(&locked), 1_000 + PIN_LOCK_MS - 1),
            Err(PinError::Locked { until_ms: 1_000 + PIN_LOCK_MS })
        );
        assert_eq!(may_try(Some(&locked), 1_000 + PIN_LOCK_MS), Ok(()));
        let (reset, answer) = after_try(&PinRecord { failures: 3, ..locked }, true, 2_000);
        assert_eq!((reset.failures, reset.locked_until_ms, answer), (0, 0, Ok(())));
        assert!(valid_format("1234") && valid_format("12345678"));
        assert!(!valid_format("123") && !valid_format("123456789") && !valid_format("12a4"));
    }
}
