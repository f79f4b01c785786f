//! Identifiers. Server-chosen ids are random 64-bit values, so they leak neither counts nor
//! creation order and cannot be enumerated; a message id is 128 bits chosen by the sending
//! client and doubles as its idempotency key.
//!
//! In binary frames ids are plain integers; in JSON (human-readable formats) they are
//! 16-digit lowercase hex strings, because JavaScript numbers cannot hold 64 bits exactly.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! id_u64 {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:016x}", self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:016x})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                if s.is_empty() || s.len() > 16 {
                    return Err(IdParseError);
                }
                u64::from_str_radix(s, 16).map($name).map_err(|_| IdParseError)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                if serializer.is_human_readable() {
                    serializer.collect_str(self)
                } else {
                    serializer.serialize_u64(self.0)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                if deserializer.is_human_readable() {
                    let s = String::deserialize(deserializer)?;
                    s.parse().map_err(serde::de::Error::custom)
                } else {
                    u64::deserialize(deserializer).map($name)
                }
            }
        }
    };
}

id_u64!(
    /// An account.
    UserId
);
id_u64!(
    /// One device (one login) of an account; every device is its own MLS member.
    DeviceId
);
id_u64!(
    /// A direct chat or a group.
    ConvId
);

/// Client-chosen message id: the idempotency key of a `Send` or `Commit`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct MsgId(pub [u8; 16]);

impl fmt::Debug for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MsgId(")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// 32 lowercase hex digits: how people and JSON see a message id.
impl fmt::Display for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl FromStr for MsgId {
    type Err = MsgIdParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // ASCII first: the byte offsets below must fall on character boundaries.
        if s.len() != 32 || !s.is_ascii() {
            return Err(MsgIdParseError);
        }
        let mut id = [0u8; 16];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| MsgIdParseError)?;
        }
        Ok(MsgId(id))
    }
}

/// Lowercase hex of any bytes.
pub fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(text, "{b:02x}");
    }
    text
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an id is 1 to 16 hexadecimal digits")]
pub struct IdParseError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a message id is 32 hexadecimal digits")]
pub struct MsgIdParseError;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_round_trip_as_32_hex_digits_and_reject_garbage_without_panicking() {
        let id = MsgId([0xab; 16]);
        assert_eq!(id.to_string(), "ab".repeat(16));
        assert_eq!(id.to_string().parse::<MsgId>(), Ok(id));
        for bad in ["", "ab", &"zz".repeat(16), &format!("a\u{e9}{}", "a".repeat(29)), &"ab".repeat(17)] {
            assert_eq!(bad.parse::<MsgId>(), Err(MsgIdParseError), "{bad:?}");
        }
    }

    #[test]
    fn ids_round_trip_as_hex_text_and_reject_garbage() {
        let id = UserId(0x00ab_cdef_0123_4567);
        assert_eq!(id.to_string(), "00abcdef01234567");
        assert_eq!("00abcdef01234567".parse::<UserId>(), Ok(id));
        assert_eq!("".parse::<UserId>(), Err(IdParseError));
        assert_eq!("12345678901234567".parse::<UserId>(), Err(IdParseError));
        assert_eq!("xyz".parse::<UserId>(), Err(IdParseError));
    }
}
