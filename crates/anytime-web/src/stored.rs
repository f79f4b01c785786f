//! How a conversation's history is laid out in IndexedDB: a small head (`tl:<conv>`: timer,
//! unread count, how many chunks) and the entries in chunks of [`CHUNK_ENTRIES`]
//! (`tl:<conv>:<n>`), so a new message rewrites only the last chunk instead of the whole history
//! of a long chat. Every value starts with a format byte; a value from a newer format is refused
//! rather than misread. Histories stored before chunks existed (`conv:<id>`, one blob, entries
//! without mentions, previews or stars) are read by [`legacy_timeline`] and rewritten.
//!
//! Pure functions (no browser): the layout is tested natively.

use anytime_client::timeline::{Entry, EntryKind, Timeline};
use anytime_proto::frame::Seq;
use anytime_proto::{ConvId, DeviceId, MsgId, UserId};
use serde::{Deserialize, Serialize};

/// Entries per chunk: a chunk of ordinary messages is a few tens of kilobytes.
pub const CHUNK_ENTRIES: usize = 256;

/// The first byte of every value written in this layout.
const FORMAT: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub timer_seconds: u32,
    pub unread: u32,
    pub chunks: u32,
}

pub fn head_key(conv: ConvId) -> String {
    format!("tl:{}", conv.0)
}

pub fn chunk_key(conv: ConvId, chunk: u32) -> String {
    format!("tl:{}:{chunk}", conv.0)
}

pub enum Key {
    Head(ConvId),
    Chunk(ConvId, u32),
    Legacy(ConvId),
}

pub fn parse_key(key: &str) -> Option<Key> {
    if let Some(id) = key.strip_prefix("conv:") {
        return id.parse().ok().map(|id| Key::Legacy(ConvId(id)));
    }
    let rest = key.strip_prefix("tl:")?;
    match rest.split_once(':') {
        None => rest.parse().ok().map(|id| Key::Head(ConvId(id))),
        Some((id, chunk)) => Some(Key::Chunk(ConvId(id.parse().ok()?), chunk.parse().ok()?)),
    }
}

pub fn chunks_of(entries: usize) -> u32 {
    entries.div_ceil(CHUNK_ENTRIES) as u32
}

/// The value stored under `chunk_key(conv, chunk)`.
pub fn encode_chunk(timeline: &Timeline, chunk: u32) -> Vec<u8> {
    let start = (chunk as usize * CHUNK_ENTRIES).min(timeline.entries.len());
    let end = (start + CHUNK_ENTRIES).min(timeline.entries.len());
    versioned(&timeline.entries[start..end])
}

pub fn encode_head(timeline: &Timeline) -> Vec<u8> {
    versioned(&Head {
        timer_seconds: timeline.timer_seconds,
        unread: timeline.unread,
        chunks: chunks_of(timeline.entries.len()),
    })
}

fn versioned<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut bytes = vec![FORMAT];
    // Serialising plain data into a Vec cannot fail.
    bytes.extend(postcard::to_allocvec(value).unwrap_or_default());
    bytes
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoredError {
    #[error("it was written by a newer version of Anytime (format {0}); reload to update the app")]
    Newer(u8),
    #[error("it is unreadable ({0})")]
    Corrupt(String),
}

fn unversioned<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, StoredError> {
    match bytes.split_first() {
        Some((&FORMAT, rest)) => postcard::from_bytes(rest).map_err(|e| StoredError::Corrupt(e.to_string())),
        Some((&newer, _)) => Err(StoredError::Newer(newer)),
        None => Err(StoredError::Corrupt("empty".into())),
    }
}

pub fn decode_head(bytes: &[u8]) -> Result<Head, StoredError> {
    unversioned(bytes)
}

pub fn decode_chunk(bytes: &[u8]) -> Result<Vec<Entry>, StoredError> {
    unversioned(bytes)
}

/// A conversation as loaded: its head and whichever chunks were found.
#[derive(Default)]
pub struct Loading {
    pub head: Option<Head>,
    pub chunks: std::collections::BTreeMap<u32, Vec<Entry>>,
}

impl Loading {
    /// The timeline, or `None` when a chunk the head counts is missing (a write that never
    /// completed cannot cause this: head and chunks go in one transaction).
    pub fn finish(self, conv: ConvId) -> Option<Timeline> {
        let head = self.head?;
        let mut timeline = Timeline::new(conv);
        timeline.timer_seconds = head.timer_seconds;
        timeline.unread = head.unread;
        let mut chunks = self.chunks;
        for n in 0..head.chunks {
            timeline.entries.extend(chunks.remove(&n)?);
        }
        Some(timeline)
    }
}

/// An entry as stored before mentions, forwarding, link previews and stars existed. Frozen:
/// postcard has no field names, so this must match the old layout field for field.
#[derive(Deserialize)]
struct LegacyEntry {
    msg_id: MsgId,
    seq: Seq,
    sender: UserId,
    sender_device: DeviceId,
    sent_at_ms: u64,
    kind: EntryKind,
    body: String,
    reply_to: Option<MsgId>,
    edited: bool,
    deleted: bool,
    own: bool,
    reactions: Vec<(UserId, String)>,
    delivered_to: Vec<UserId>,
    read_by: Vec<UserId>,
    expires_at_ms: Option<u64>,
}

#[derive(Deserialize)]
struct LegacyTimeline {
    conv: ConvId,
    entries: Vec<LegacyEntry>,
    timer_seconds: u32,
    unread: u32,
}

/// A history stored as one `conv:<id>` blob by earlier versions.
pub fn legacy_timeline(bytes: &[u8]) -> Result<Timeline, StoredError> {
    let old: LegacyTimeline = postcard::from_bytes(bytes).map_err(|e| StoredError::Corrupt(e.to_string()))?;
    let entries = old
        .entries
        .into_iter()
        .map(|e| Entry {
            msg_id: e.msg_id,
            seq: e.seq,
            sender: e.sender,
            sender_device: e.sender_device,
            sent_at_ms: e.sent_at_ms,
            kind: e.kind,
            body: e.body,
            reply_to: e.reply_to,
            edited: e.edited,
            deleted: e.deleted,
            own: e.own,
            reactions: e.reactions,
            delivered_to: e.delivered_to,
            read_by: e.read_by,
            expires_at_ms: e.expires_at_ms,
            mentions: Vec::new(),
            forwarded: false,
            preview: None,
            starred: false,
            payment: None,
        })
        .collect();
    Ok(Timeline { conv: old.conv, entries, timer_seconds: old.timer_seconds, unread: old.unread })
}

#[cfg(test)]
mod tests {
    use super::*;
    use anytime_client::timeline::Preview;

    fn entry(n: u32) -> Entry {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&n.to_be_bytes());
        Entry {
            msg_id: MsgId(id),
            seq: u64::from(n),
            sender: UserId(2),
            sender_device: DeviceId(20),
            sent_at_ms: 1_000 + u64::from(n),
            kind: EntryKind::Text,
            body: format!("m{n}"),
            reply_to: None,
            edited: false,
            deleted: false,
            own: false,
            reactions: vec![(UserId(3), "👍".into())],
            delivered_to: Vec::new(),
            read_by: vec![UserId(1)],
            expires_at_ms: None,
            mentions: vec![UserId(1)],
            forwarded: n.is_multiple_of(2),
            preview: Some(Preview { url: "https://x.test".into(), title: "X".into(), description: String::new() }),
            starred: n.is_multiple_of(3),
            payment: None,
        }
    }

    #[test]
    fn a_timeline_round_trips_through_head_and_chunks() {
        let conv = ConvId(9);
        let mut timeline = Timeline::new(conv);
        timeline.entries = (0..(2 * CHUNK_ENTRIES as u32 + 5)).map(entry).collect();
        timeline.timer_seconds = 60;
        timeline.unread = 4;
        let mut loading = Loading::default();
        let head = encode_head(&timeline);
        assert!(matches!(parse_key(&head_key(conv)), Some(Key::Head(c)) if c == conv));
        loading.head = Some(decode_head(&head).expect("head"));
        assert_eq!(loading.head.as_ref().map(|h| h.chunks), Some(3));
        for n in 0..3 {
            assert!(matches!(parse_key(&chunk_key(conv, n)), Some(Key::Chunk(c, m)) if c == conv && m == n));
            loading.chunks.insert(n, decode_chunk(&encode_chunk(&timeline, n)).expect("chunk"));
        }
        assert_eq!(loading.finish(conv).as_ref(), Some(&timeline));
    }

    #[test]
    fn a_missing_chunk_or_a_newer_format_is_not_misread() {
        let conv = ConvId(9);
        let mut timeline = Timeline::new(conv);
        timeline.entries = (0..(CHUNK_ENTRIES as u32 + 1)).map(entry).collect();
        let mut loading =
            Loading { head: Some(decode_head(&encode_head(&timeline)).expect("head")), ..Loading::default() };
        loading.chunks.insert(0, decode_chunk(&encode_chunk(&timeline, 0)).expect("chunk"));
        assert!(loading.finish(conv).is_none(), "chunk 1 is missing");
        let mut newer = encode_head(&timeline);
        newer[0] = FORMAT + 1;
        assert_eq!(decode_head(&newer), Err(StoredError::Newer(FORMAT + 1)));
        assert!(matches!(decode_chunk(&[FORMAT, 0xff, 0xff]), Err(StoredError::Corrupt(_))));
    }

    #[test]
    fn a_history_stored_before_chunks_is_read_with_empty_new_fields() {
        // The old layout, field for field, as earlier versions wrote it.
        #[derive(Serialize)]
        struct OldEntry {
            msg_id: MsgId,
            seq: Seq,
            sender: UserId,
            sender_device: DeviceId,
            sent_at_ms: u64,
            kind: EntryKind,
            body: String,
            reply_to: Option<MsgId>,
            edited: bool,
            deleted: bool,
            own: bool,
            reactions: Vec<(UserId, String)>,
            delivered_to: Vec<UserId>,
            read_by: Vec<UserId>,
            expires_at_ms: Option<u64>,
        }
        let old = (
            ConvId(4),
            vec![OldEntry {
                msg_id: MsgId([7; 16]),
                seq: 3,
                sender: UserId(2),
                sender_device: DeviceId(20),
                sent_at_ms: 5,
                kind: EntryKind::Reply,
                body: "old".into(),
                reply_to: Some(MsgId([6; 16])),
                edited: true,
                deleted: false,
                own: false,
                reactions: vec![(UserId(1), "🎉".into())],
                delivered_to: vec![UserId(1)],
                read_by: vec![],
                expires_at_ms: Some(99),
            }],
            30u32,
            1u32,
        );
        let timeline = legacy_timeline(&postcard::to_allocvec(&old).expect("encode")).expect("legacy");
        assert_eq!((timeline.conv, timeline.timer_seconds, timeline.unread), (ConvId(4), 30, 1));
        let e = &timeline.entries[0];
        assert_eq!(
            (e.body.as_str(), e.reply_to, e.edited, e.expires_at_ms),
            ("old", Some(MsgId([6; 16])), true, Some(99))
        );
        assert_eq!(e.reactions, vec![(UserId(1), "🎉".to_owned())]);
        assert!(e.mentions.is_empty() && !e.forwarded && e.preview.is_none() && !e.starred && e.payment.is_none());
    }
}
