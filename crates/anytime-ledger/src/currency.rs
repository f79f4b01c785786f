//! ISO 4217 currencies: a code and the number of digits after the decimal point. Amounts are
//! integers in the currency's minor unit (cents, yen); there is no conversion between currencies.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::LedgerError;

/// An ISO 4217 currency this ledger knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Currency([u8; 3]);

/// (code, digits of the minor unit). Only currencies listed here are accepted: an unknown code is
/// bad input, never a new currency with a guessed exponent.
const KNOWN: &[(&str, u8)] = &[
    ("AUD", 2),
    ("BHD", 3),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CNY", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HKD", 2),
    ("IDR", 2),
    ("INR", 2),
    ("JPY", 0),
    ("KRW", 0),
    ("KWD", 3),
    ("MXN", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("PLN", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("THB", 2),
    ("TRY", 2),
    ("USD", 2),
    ("VND", 0),
    ("ZAR", 2),
];

impl Currency {
    pub const USD: Currency = Currency(*b"USD");
    pub const EUR: Currency = Currency(*b"EUR");
    pub const JPY: Currency = Currency(*b"JPY");

    pub fn parse(code: &str) -> Result<Currency, LedgerError> {
        let upper = code.trim().to_ascii_uppercase();
        KNOWN
            .iter()
            .find(|(known, _)| *known == upper)
            .map(|(known, _)| {
                let mut bytes = [0; 3];
                bytes.copy_from_slice(known.as_bytes());
                Currency(bytes)
            })
            .ok_or_else(|| LedgerError::UnknownCurrency(code.chars().take(8).collect()))
    }

    /// Every currency this ledger knows, by code.
    pub fn all() -> impl Iterator<Item = Currency> {
        KNOWN.iter().filter_map(|(code, _)| Currency::parse(code).ok())
    }

    pub fn code(&self) -> &str {
        // Only built from the ASCII codes of `KNOWN`.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }

    /// Digits after the decimal point: 2 for USD (cents), 0 for JPY.
    pub fn minor_digits(&self) -> u8 {
        KNOWN.iter().find(|(known, _)| known.as_bytes() == self.0).map_or(2, |(_, digits)| *digits)
    }

    /// `amount` minor units as a decimal string ("12.34").
    pub fn format(&self, amount: u128) -> String {
        let digits = u32::from(self.minor_digits());
        if digits == 0 {
            return amount.to_string();
        }
        let unit = 10u128.pow(digits);
        format!("{}.{:0width$}", amount / unit, amount % unit, width = digits as usize)
    }

    /// A decimal string ("12.34", "12", "0.5") as minor units; more digits than the currency has,
    /// signs, exponents and overflow are refused.
    pub fn parse_amount(&self, text: &str) -> Result<u128, LedgerError> {
        let bad = || LedgerError::BadAmount(text.chars().take(40).collect());
        let digits = usize::from(self.minor_digits());
        let (whole, fraction) = text.trim().split_once('.').unwrap_or((text.trim(), ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) || fraction.len() > digits {
            return Err(bad());
        }
        if text.contains('.') && fraction.is_empty() {
            return Err(bad());
        }
        let padded = format!("{whole}{fraction:0<digits$}");
        let amount: u128 = padded.parse().map_err(|_| bad())?;
        if amount > crate::types::AMOUNT_MAX {
            return Err(bad());
        }
        Ok(amount)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_amounts_parse_strictly() {
        assert_eq!(Currency::parse(" usd ").map(|c| c.code().to_owned()), Ok("USD".to_owned()));
        assert!(matches!(Currency::parse("XYZ"), Err(LedgerError::UnknownCurrency(_))));
        let usd = Currency::USD;
        assert_eq!(usd.parse_amount("12.34"), Ok(1234));
        assert_eq!(usd.parse_amount("12"), Ok(1200));
        assert_eq!(usd.parse_amount("0.5"), Ok(50));
        for bad in ["", "-1", "1.234", "1e3", "12.", ".5", "1,00", "99999999999999999999999999999999999999999"] {
            assert!(usd.parse_amount(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Currency::JPY.parse_amount("1500"), Ok(1500));
        assert!(Currency::JPY.parse_amount("1.5").is_err());
        assert_eq!(usd.format(1234), "12.34");
        assert_eq!(usd.format(5), "0.05");
        assert_eq!(Currency::JPY.format(1500), "1500");
        assert_eq!(Currency::parse("KWD").map(|c| c.format(1500)), Ok("1.500".to_owned()));
    }
}
