//! Conversions between protocol integers and SQLite's signed 64-bit INTEGER.
//!
//! Ids, seqs and timestamps are u64 on the wire. SQLite stores i64, so they are stored as the
//! same 64 bits (a bijection); ordering comparisons in SQL are only made on seqs and times,
//! which stay far below 2^63.

pub(crate) fn id(n: u64) -> i64 {
    n as i64
}

pub(crate) fn uid(n: i64) -> u64 {
    n as u64
}
