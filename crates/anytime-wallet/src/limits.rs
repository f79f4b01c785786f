//! How much may leave a wallet: per transfer and per UTC day, in whole units of the currency
//! (so the same numbers mean the same for cents and yen).

use anytime_ledger::Currency;
use anytime_proto::limits::{WALLET_DAILY_UNITS_MAX, WALLET_TRANSFER_UNITS_MAX};

const DAY_MS: u64 = 86_400_000;

/// `units` whole units of `currency` in minor units.
pub fn minor(currency: Currency, units: u64) -> u128 {
    u128::from(units) * 10u128.pow(u32::from(currency.minor_digits()))
}

pub fn per_transfer(currency: Currency) -> u128 {
    minor(currency, WALLET_TRANSFER_UNITS_MAX)
}

pub fn daily(currency: Currency) -> u128 {
    minor(currency, WALLET_DAILY_UNITS_MAX)
}

/// The start of the UTC day of `now_ms`.
pub fn day_start(now_ms: u64) -> u64 {
    now_ms - now_ms % DAY_MS
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("more than one transfer may move ({max} minor units)")]
    PerTransfer { max: u128 },
    #[error("over today's limit ({max} minor units; {left} left)")]
    Daily { max: u128, left: u128 },
}

/// Whether `amount` may leave a wallet that already sent `spent_today`.
pub fn check(currency: Currency, amount: u128, spent_today: u128) -> Result<(), LimitError> {
    if amount > per_transfer(currency) {
        return Err(LimitError::PerTransfer { max: per_transfer(currency) });
    }
    let max = daily(currency);
    if spent_today.saturating_add(amount) > max {
        return Err(LimitError::Daily { max, left: max.saturating_sub(spent_today) });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_in_whole_units_of_each_currency() {
        assert_eq!(per_transfer(Currency::USD), u128::from(WALLET_TRANSFER_UNITS_MAX) * 100);
        assert_eq!(per_transfer(Currency::JPY), u128::from(WALLET_TRANSFER_UNITS_MAX));
        assert!(check(Currency::USD, per_transfer(Currency::USD), 0).is_ok());
        assert!(matches!(
            check(Currency::USD, per_transfer(Currency::USD) + 1, 0),
            Err(LimitError::PerTransfer { .. })
        ));
        assert!(matches!(check(Currency::USD, 2, daily(Currency::USD) - 1), Err(LimitError::Daily { left: 1, .. })));
        assert_eq!(day_start(DAY_MS * 3 + 5), DAY_MS * 3);
    }
}
