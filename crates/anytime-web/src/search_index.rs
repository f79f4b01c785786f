//! The search index of the browser's decrypted history, kept in IndexedDB beside it (the
//! server never sees any of it). Two object stores:
//!
//! - `docs`: one record per searchable message, `<conv>:<msg>` → [`Doc`] (who, when, the text):
//!   what a result shows, and the truth a posting is checked against.
//! - `search`: one key per (word, message), `<word> \x01 <newest-first time> \x01 <conv>:<msg>`,
//!   with an empty value. A query word is a key range (every word starting with it). The
//!   postings of the query's rarest word (counted by the database) are the candidates, read as
//!   keys only; a message must match every word of the query (the doc check).
//!
//! Postings are never trusted on their own: a hit counts only if its doc exists and still
//! contains the words (an edit, a delete or an expiry may leave old postings behind until the
//! query that finds them removes them). Pure functions (no browser): tested natively.
//!
//! Written by hand rather than with a search crate: the index must live in IndexedDB, written
//! in the same transaction as the history it indexes, and no crate does that; what it needs
//! (words, prefixes, intersection) is small.

use std::collections::BTreeSet;

use anytime_client::timeline::Entry;
use anytime_proto::ids::hex;
use anytime_proto::{ConvId, MsgId, UserId};
use serde::{Deserialize, Serialize};

/// A word is indexed by at most this many characters (a query word longer than it matches
/// by its first ones, then the doc check decides).
pub const WORD_CHARS_MAX: usize = 24;
/// Distinct words indexed per message: a message is at most 64 KiB, so this bounds its postings.
pub const WORDS_PER_MESSAGE_MAX: usize = 512;
/// Words of a query that are looked up (the rest still filter through the doc check).
pub const QUERY_WORDS_MAX: usize = 8;
/// Postings read per query (its rarest word's), newest first for a whole word: bounds a query's
/// memory when even its rarest word is in most messages (older ones are then found by adding a
/// rarer word).
pub const POSTINGS_PER_WORD_MAX: u32 = 20_000;

const SEPARATOR: char = '\u{1}';
/// The first byte of a stored doc.
const DOC_FORMAT: u8 = 1;

/// What a search result shows, and what its postings are checked against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Doc {
    pub sent_at_ms: u64,
    pub sender: UserId,
    pub own: bool,
    pub body: String,
    pub expires_at_ms: Option<u64>,
}

/// Scripts written without spaces between words: each of their characters is a word of its own,
/// so a query for two characters finds them anywhere in a sentence.
fn unspaced(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF   // Hiragana, Katakana
        | 0x3400..=0x4DBF // CJK Extension A
        | 0x4E00..=0x9FFF // CJK Unified Ideographs
        | 0xF900..=0xFAFF // CJK Compatibility Ideographs
        | 0x0E00..=0x0E7F // Thai
    )
}

/// The words of `text`: runs of letters and digits, lowercased, cut to [`WORD_CHARS_MAX`]
/// characters; each character of an unspaced script is a word. In order, repeats included.
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut chars = 0;
    let end = |word: &mut String, chars: &mut usize, out: &mut Vec<String>| {
        if !word.is_empty() {
            out.push(std::mem::take(word));
        }
        *chars = 0;
    };
    for c in text.chars() {
        if unspaced(c) {
            end(&mut word, &mut chars, &mut out);
            out.push(c.to_string());
        } else if c.is_alphanumeric() {
            if chars < WORD_CHARS_MAX {
                word.extend(c.to_lowercase());
                chars += 1;
            }
        } else {
            end(&mut word, &mut chars, &mut out);
        }
    }
    end(&mut word, &mut chars, &mut out);
    out
}

/// Whether `entry` is findable: a message with text, not deleted.
pub fn indexable(entry: &Entry) -> bool {
    entry.kind.is_message() && !entry.deleted && !entry.body.is_empty()
}

pub fn doc_of(entry: &Entry) -> Doc {
    Doc {
        sent_at_ms: entry.sent_at_ms,
        sender: entry.sender,
        own: entry.own,
        body: entry.body.clone(),
        expires_at_ms: entry.expires_at_ms,
    }
}

pub fn doc_key(conv: ConvId, msg: MsgId) -> String {
    format!("{conv}:{}", hex(&msg.0))
}

/// The range of doc keys of one conversation (for forgetting its history).
pub fn doc_range(conv: ConvId) -> (String, String) {
    (format!("{conv}:"), format!("{conv}:\u{ffff}"))
}

pub fn encode_doc(doc: &Doc) -> Vec<u8> {
    let mut bytes = vec![DOC_FORMAT];
    // Serialising plain data into a Vec cannot fail.
    bytes.extend(postcard::to_allocvec(doc).unwrap_or_default());
    bytes
}

/// `None` for a doc this version cannot read (then the hit is skipped, not misread).
pub fn decode_doc(bytes: &[u8]) -> Option<Doc> {
    match bytes.split_first() {
        Some((&DOC_FORMAT, rest)) => postcard::from_bytes(rest).ok(),
        _ => None,
    }
}

/// The posting keys of a message: one per distinct word of `body`.
pub fn postings(conv: ConvId, msg: MsgId, sent_at_ms: u64, body: &str) -> Vec<String> {
    let distinct: BTreeSet<String> = words(body).into_iter().collect();
    let newest_first = u64::MAX - sent_at_ms;
    let doc = doc_key(conv, msg);
    distinct
        .into_iter()
        .take(WORDS_PER_MESSAGE_MAX)
        .map(|word| format!("{word}{SEPARATOR}{newest_first:016x}{SEPARATOR}{doc}"))
        .collect()
}

/// The key range of every posting whose word starts with `word`.
pub fn word_range(word: &str) -> (String, String) {
    (word.to_owned(), format!("{word}\u{ffff}"))
}

/// A posting key read back: the message's doc key and its newest-first order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Posting {
    pub newest_first: u64,
    pub doc: String,
}

pub fn parse_posting(key: &str) -> Option<Posting> {
    let mut parts = key.splitn(3, SEPARATOR);
    let (_word, order, doc) = (parts.next()?, parts.next()?, parts.next()?);
    Some(Posting { newest_first: u64::from_str_radix(order, 16).ok()?, doc: doc.to_owned() })
}

/// The query's words, distinct, at most [`QUERY_WORDS_MAX`] (longest first: the rarest, so the
/// smallest posting lists).
pub fn query_words(query: &str) -> Vec<String> {
    let mut distinct: Vec<String> = words(query).into_iter().collect::<BTreeSet<_>>().into_iter().collect();
    distinct.sort_by_key(|w| std::cmp::Reverse(w.chars().count()));
    distinct.truncate(QUERY_WORDS_MAX);
    distinct
}

/// Whether `doc` matches every word of `query` (each a prefix of one of its words), and has
/// not expired at `now_ms`.
pub fn matches(doc: &Doc, query: &[String], now_ms: u64) -> bool {
    if doc.expires_at_ms.is_some_and(|at| at <= now_ms) {
        return false;
    }
    let words = words(&doc.body);
    query.iter().all(|q| words.iter().any(|w| w.starts_with(q.as_str())))
}

/// The postings of every query word intersected: the messages that have all the words, newest
/// first. `lists[i]` are the posting keys read for `query[i]`.
pub fn intersect(lists: &[Vec<String>]) -> Vec<Posting> {
    let Some((first, rest)) = lists.split_first() else { return Vec::new() };
    let mut candidates: Vec<Posting> = first.iter().filter_map(|k| parse_posting(k)).collect();
    for list in rest {
        let docs: BTreeSet<String> = list.iter().filter_map(|k| parse_posting(k)).map(|p| p.doc).collect();
        candidates.retain(|p| docs.contains(&p.doc));
    }
    candidates.sort();
    candidates.dedup_by(|a, b| a.doc == b.doc);
    candidates
}

/// A doc key read back into its conversation and message.
pub fn parse_doc_key(key: &str) -> Option<(ConvId, MsgId)> {
    let (conv, msg) = key.split_once(':')?;
    Some((conv.parse().ok()?, msg.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_lowercased_runs_and_unspaced_scripts_are_split_by_character() {
        assert_eq!(words("Hello, WORLD! it's 2026"), ["hello", "world", "it", "s", "2026"]);
        assert_eq!(words("Grüße aus Köln"), ["grüße", "aus", "köln"]);
        assert_eq!(words("我们明天见 ok"), ["我", "们", "明", "天", "见", "ok"]);
        assert_eq!(words(""), Vec::<String>::new());
        let long = "a".repeat(100);
        assert_eq!(words(&long), ["a".repeat(WORD_CHARS_MAX)]);
    }

    fn doc(body: &str) -> Doc {
        Doc { sent_at_ms: 5, sender: UserId(1), own: false, body: body.into(), expires_at_ms: None }
    }

    #[test]
    fn a_query_matches_word_prefixes_of_every_word() {
        let q = query_words("pic meet");
        assert!(matches(&doc("Let's meet for a picnic"), &q, 0));
        assert!(!matches(&doc("a picnic"), &q, 0), "meet is missing");
        assert!(!matches(&doc("epic meeting"), &query_words("pic"), 0), "a prefix of a word, not its middle");
        let mut expiring = doc("picnic meet");
        expiring.expires_at_ms = Some(10);
        assert!(matches(&expiring, &q, 9));
        assert!(!matches(&expiring, &q, 10), "expired");
    }

    #[test]
    fn postings_sort_newest_first_and_intersect_on_the_message() {
        let (conv, old, new) = (ConvId(7), MsgId([1; 16]), MsgId([2; 16]));
        let a = postings(conv, old, 1_000, "picnic in the park, picnic!");
        assert_eq!(a.len(), 4, "one posting per distinct word");
        let b = postings(conv, new, 2_000, "park picnic");
        let (lo, hi) = word_range("pic");
        let in_range = |list: &[String]| list.iter().filter(|k| **k >= lo && **k <= hi).cloned().collect::<Vec<_>>();
        let pic: Vec<String> = in_range(&a).into_iter().chain(in_range(&b)).collect();
        let (lo, hi) = word_range("park");
        let park: Vec<String> = a.iter().chain(&b).filter(|k| **k >= lo && **k <= hi).cloned().collect();
        let hits = intersect(&[pic, park]);
        let docs: Vec<_> = hits.iter().map(|p| parse_doc_key(&p.doc)).collect();
        assert_eq!(docs, [Some((conv, new)), Some((conv, old))], "newest first, each once");
        assert!(intersect(&[b.clone(), Vec::new()]).is_empty());
    }

    #[test]
    fn docs_round_trip_and_a_newer_format_is_skipped() {
        let d = doc("hi");
        assert_eq!(decode_doc(&encode_doc(&d)), Some(d));
        let mut newer = encode_doc(&doc("hi"));
        newer[0] = DOC_FORMAT + 1;
        assert_eq!(decode_doc(&newer), None);
        assert_eq!(decode_doc(&[]), None);
        assert!(parse_posting("garbage").is_none());
        assert!(parse_doc_key("zz:zz").is_none());
    }
}
