//! How a conversation's history is laid out in IndexedDB: a small head (`tl:<conv>`: timer,
//! unread count, how many chunks) and the entries in chunks of [`CHUNK_ENTRIES`]
//! (`tl:<conv>:<n>`), so a new message rewrites only the last chunk instead of the whole history
//! of a long chat. Every value starts with a format byte; a value from a newer format is refused
//! rather than misread. Histories stored before chunks existed (`conv:<id>`, one blob, entries
//! without mentions, previews or stars) are read by [`legacy_timeline`] and rewritten.
//!
//! Pure functions (no browser): the layout is tested natively.

use std::collections::BTreeSet;

use anytime_client::timeline::{Effect, Entry, EntryKind, Timeline};
use anytime_proto::frame::Seq;
use anytime_proto::{ConvId, DeviceId, MsgId, UserId};
use serde::{Deserialize, Serialize};

/// Entries per chunk: a chunk of ordinary messages is a few tens of kilobytes.
pub const CHUNK_ENTRIES: usize = 256;

/// The first byte of chunks and heads written before lazy loading and attachments (their
/// entries are `stored_frozen::EntryV1`).
const FORMAT_V1: u8 = 1;
/// Heads with a summary and pending effects, from before attachments (`EffectV1`).
const HEAD_FORMAT_V2: u8 = 2;
/// The first byte of every chunk written now (entries with attachments).
const FORMAT: u8 = 3;
/// The first byte of every head written now.
const HEAD_FORMAT: u8 = 4;

/// A history's head as read: format 1 heads (before lazy loading) have no summary, so their
/// history is loaded whole once, summarised and indexed for search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub timer_seconds: u32,
    pub unread: u32,
    pub chunks: u32,
    pub summary: Option<Summary>,
    /// Effects on entries of chunks not in memory, applied when those chunks are loaded.
    pub pending: Vec<Effect>,
}

/// What the chat list needs to know of a whole history without loading it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Everyone who wrote a message in it (for message requests and contacts).
    pub writers: BTreeSet<UserId>,
    /// Its starred messages.
    pub starred: BTreeSet<MsgId>,
    /// The first chunk holding a message with a disappearing timer: loaded at open, so expired
    /// messages leave the disk even when nobody scrolls back to them.
    pub expiring_chunk: Option<u32>,
    /// Chunks `0..unindexed` are not in the search index yet (a history stored before the
    /// index existed): indexed in the background, newest first (see `Persist::index_step`).
    pub unindexed: u32,
}

impl Summary {
    /// The summary of a whole history.
    pub fn of(timeline: &Timeline) -> Summary {
        let mut summary = Summary::default();
        for (index, entry) in timeline.entries.iter().enumerate() {
            summary.note(entry);
            if entry.expires_at_ms.is_some() && summary.expiring_chunk.is_none() {
                summary.expiring_chunk = Some((index / CHUNK_ENTRIES) as u32);
            }
        }
        summary
    }

    /// Takes in one entry (as inserted or as loaded).
    pub fn note(&mut self, entry: &Entry) {
        if entry.kind.is_message() {
            self.writers.insert(entry.sender);
        }
        if entry.starred {
            self.starred.insert(entry.msg_id);
        }
    }
}

/// Format 1 heads, field for field.
#[derive(Deserialize)]
struct HeadV1 {
    timer_seconds: u32,
    unread: u32,
    chunks: u32,
}

/// Format 2 heads, field for field.
#[derive(Deserialize)]
struct HeadV2 {
    timer_seconds: u32,
    unread: u32,
    chunks: u32,
    summary: Summary,
    pending: Vec<crate::stored_frozen::EffectV1>,
}

#[derive(Serialize, Deserialize)]
struct HeadV4 {
    timer_seconds: u32,
    unread: u32,
    chunks: u32,
    summary: Summary,
    pending: Vec<Effect>,
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

/// The value stored under `chunk_key(conv, chunk)` when the chunks before `base` are not in
/// memory: `timeline` holds the entries from chunk `base` on.
pub fn encode_chunk_from(timeline: &Timeline, base: u32, chunk: u32) -> Vec<u8> {
    encode_chunk(timeline, chunk - base)
}

/// The head of a history whose entries from chunk `base` on are `timeline`'s.
pub fn encode_head(timeline: &Timeline, base: u32, summary: &Summary, pending: &[Effect]) -> Vec<u8> {
    versioned_as(
        HEAD_FORMAT,
        &HeadV4 {
            timer_seconds: timeline.timer_seconds,
            unread: timeline.unread,
            chunks: base + chunks_of(timeline.entries.len()),
            summary: summary.clone(),
            pending: pending.to_vec(),
        },
    )
}

fn versioned<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    versioned_as(FORMAT, value)
}

fn versioned_as<T: Serialize + ?Sized>(format: u8, value: &T) -> Vec<u8> {
    let mut bytes = vec![format];
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

pub fn decode_head(bytes: &[u8]) -> Result<Head, StoredError> {
    let corrupt = |e: postcard::Error| StoredError::Corrupt(e.to_string());
    match bytes.split_first() {
        Some((&FORMAT_V1, rest)) => {
            let v1: HeadV1 = postcard::from_bytes(rest).map_err(corrupt)?;
            Ok(Head {
                timer_seconds: v1.timer_seconds,
                unread: v1.unread,
                chunks: v1.chunks,
                summary: None,
                pending: Vec::new(),
            })
        }
        Some((&HEAD_FORMAT_V2, rest)) => {
            let v2: HeadV2 = postcard::from_bytes(rest).map_err(corrupt)?;
            Ok(Head {
                timer_seconds: v2.timer_seconds,
                unread: v2.unread,
                chunks: v2.chunks,
                summary: Some(v2.summary),
                pending: v2.pending.into_iter().map(Effect::from).collect(),
            })
        }
        Some((&HEAD_FORMAT, rest)) => {
            let v4: HeadV4 = postcard::from_bytes(rest).map_err(corrupt)?;
            Ok(Head {
                timer_seconds: v4.timer_seconds,
                unread: v4.unread,
                chunks: v4.chunks,
                summary: Some(v4.summary),
                pending: v4.pending,
            })
        }
        Some((&newer, _)) => Err(StoredError::Newer(newer)),
        None => Err(StoredError::Corrupt("empty".into())),
    }
}

pub fn decode_chunk(bytes: &[u8]) -> Result<Vec<Entry>, StoredError> {
    let corrupt = |e: postcard::Error| StoredError::Corrupt(e.to_string());
    match bytes.split_first() {
        Some((&FORMAT_V1, rest)) => {
            let v1: Vec<crate::stored_frozen::EntryV1> = postcard::from_bytes(rest).map_err(corrupt)?;
            Ok(v1.into_iter().map(Entry::from).collect())
        }
        Some((&FORMAT, rest)) => postcard::from_bytes(rest).map_err(corrupt),
        Some((&newer, _)) => Err(StoredError::Newer(newer)),
        None => Err(StoredError::Corrupt("empty".into())),
    }
}

/// A conversation as loaded: its head and whichever chunks were found.
#[derive(Default)]
pub struct Loading {
    pub head: Option<Head>,
    pub chunks: std::collections::BTreeMap<u32, Vec<Entry>>,
}

impl Loading {
    /// The timeline of chunks `base..` (all of them for 0), or `None` when a chunk the head
    /// counts is missing (a write that never completed cannot cause this: head and chunks go
    /// in one transaction).
    pub fn finish(self, conv: ConvId, base: u32) -> Option<Timeline> {
        let head = self.head?;
        let mut timeline = Timeline::new(conv);
        timeline.timer_seconds = head.timer_seconds;
        timeline.unread = head.unread;
        let mut chunks = self.chunks;
        for n in base..head.chunks {
            timeline.entries.extend(chunks.remove(&n)?);
        }
        Some(timeline)
    }
}

/// Entries kept in memory at least, when the history has that many: a first page and then some.
pub const LOADED_ENTRIES_MIN: usize = CHUNK_ENTRIES;

/// The first chunk to load when the app opens: enough of the end for [`LOADED_ENTRIES_MIN`]
/// entries, and every chunk from the first one holding a disappearing message (so expired
/// messages are removed from the disk). The unread messages may need more (see `persist`).
pub fn first_chunk_at_open(head: &Head) -> u32 {
    let Some(summary) = &head.summary else { return 0 };
    // All chunks but the last are full.
    let tail = (LOADED_ENTRIES_MIN.div_ceil(CHUNK_ENTRIES) as u32 + 1).min(head.chunks);
    let mut first = head.chunks - tail;
    if let Some(expiring) = summary.expiring_chunk {
        first = first.min(expiring);
    }
    first
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
            attachment: None,
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
            reactions: vec![(UserId(3), "👍".into())],
            read_by: vec![UserId(1)],
            mentions: vec![UserId(1)],
            forwarded: n.is_multiple_of(2),
            preview: Some(Preview { url: "https://x.test".into(), title: "X".into(), description: String::new() }),
            starred: n.is_multiple_of(3),
            ..Entry::plain(MsgId(id), u64::from(n), UserId(2), DeviceId(20), 1_000 + u64::from(n), format!("m{n}"))
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
        let summary = Summary::of(&timeline);
        let pending = vec![Effect::Hide { to: MsgId([9; 16]) }];
        let head = encode_head(&timeline, 0, &summary, &pending);
        assert!(matches!(parse_key(&head_key(conv)), Some(Key::Head(c)) if c == conv));
        loading.head = Some(decode_head(&head).expect("head"));
        assert_eq!(loading.head.as_ref().map(|h| h.chunks), Some(3));
        assert_eq!(loading.head.as_ref().and_then(|h| h.summary.clone()), Some(summary));
        assert_eq!(loading.head.as_ref().map(|h| h.pending.clone()), Some(pending));
        for n in 0..3 {
            assert!(matches!(parse_key(&chunk_key(conv, n)), Some(Key::Chunk(c, m)) if c == conv && m == n));
            loading.chunks.insert(n, decode_chunk(&encode_chunk(&timeline, n)).expect("chunk"));
        }
        assert_eq!(loading.finish(conv, 0).as_ref(), Some(&timeline));
    }

    #[test]
    fn a_missing_chunk_or_a_newer_format_is_not_misread() {
        let conv = ConvId(9);
        let mut timeline = Timeline::new(conv);
        timeline.entries = (0..(CHUNK_ENTRIES as u32 + 1)).map(entry).collect();
        let mut loading = Loading {
            head: Some(decode_head(&encode_head(&timeline, 0, &Summary::default(), &[])).expect("head")),
            ..Loading::default()
        };
        loading.chunks.insert(0, decode_chunk(&encode_chunk(&timeline, 0)).expect("chunk"));
        assert!(loading.finish(conv, 0).is_none(), "chunk 1 is missing");
        let mut newer = encode_head(&timeline, 0, &Summary::default(), &[]);
        newer[0] = HEAD_FORMAT + 1;
        assert_eq!(decode_head(&newer), Err(StoredError::Newer(HEAD_FORMAT + 1)));
        assert!(matches!(decode_chunk(&[FORMAT, 0xff, 0xff]), Err(StoredError::Corrupt(_))));
    }

    #[test]
    fn a_window_is_the_chunks_from_its_base_and_opening_loads_the_newest_and_the_expiring() {
        let conv = ConvId(9);
        let mut timeline = Timeline::new(conv);
        timeline.entries = (0..(5 * CHUNK_ENTRIES as u32 + 7)).map(entry).collect();
        let tail = Timeline { entries: timeline.entries[3 * CHUNK_ENTRIES..].to_vec(), ..timeline.clone() };
        let head = decode_head(&encode_head(&tail, 3, &Summary::default(), &[])).expect("head");
        assert_eq!(head.chunks, 6, "three chunks on disk only, three in memory");
        assert_eq!(encode_chunk_from(&tail, 3, 4), encode_chunk(&timeline, 4));
        assert_eq!(first_chunk_at_open(&head), 4, "the last (partial) chunk and a full one");
        let mut loading = Loading { head: Some(head.clone()), ..Loading::default() };
        for n in 4..6 {
            loading.chunks.insert(n, decode_chunk(&encode_chunk(&timeline, n)).expect("chunk"));
        }
        let window = loading.finish(conv, 4).expect("window");
        assert_eq!(window.entries, timeline.entries[4 * CHUNK_ENTRIES..]);
        let expiring =
            Head { summary: Some(Summary { expiring_chunk: Some(1), ..Summary::default() }), ..head.clone() };
        assert_eq!(first_chunk_at_open(&expiring), 1);
        let old = Head { summary: None, ..head };
        assert_eq!(first_chunk_at_open(&old), 0, "a head from before summaries: all of it, once");
    }

    #[test]
    fn a_format_1_head_reads_without_a_summary() {
        let old = [FORMAT_V1, 30, 2, 5];
        let head = decode_head(&old).expect("v1 head");
        assert_eq!((head.timer_seconds, head.unread, head.chunks, head.summary), (30, 2, 5, None));
    }

    /// The browser suite's long-history fixture (tests/browser/history.test.mjs, `chunkBytes`)
    /// writes chunks byte for byte in this layout: if this test has to change, change it too.
    #[test]
    fn the_chunk_layout_the_browser_fixture_writes() {
        let e = Entry {
            own: true,
            read_by: vec![UserId(300)],
            ..Entry::plain(MsgId([0xab; 16]), 300, UserId(0x1234_5678_9abc_def0), DeviceId(7), 1_000, "hé".into())
        };
        let timeline = Timeline { entries: vec![e], ..Timeline::new(ConvId(1)) };
        // The fixture writes format 1 (before attachments), which the app still reads.
        let fixture = format!(
            "0101{}ac02f0bdf3d589cf959a12{}",
            "ab".repeat(16),
            "07e807000368c3a900000001000001ac02000000000000"
        );
        let bytes: Vec<u8> =
            (0..fixture.len()).step_by(2).map(|i| u8::from_str_radix(&fixture[i..i + 2], 16).expect("hex")).collect();
        assert_eq!(decode_chunk(&bytes), Ok(timeline.entries.clone()));
        // Format 3 is the same entry with an (absent) attachment after it.
        let hex: String = encode_chunk(&timeline, 0).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, format!("03{}00", &fixture[2..]));
    }

    #[test]
    fn chunks_and_heads_from_before_attachments_read_and_entries_with_one_round_trip() {
        let mut with = entry(1);
        with.kind = EntryKind::Attachment;
        with.attachment = Some(anytime_client::content::Attachment {
            blob: "0a".repeat(16),
            key: [1; 32],
            digest: [2; 32],
            size: 10,
            name: "a.pdf".into(),
            mime: "application/pdf".into(),
            caption: String::new(),
            width: 0,
            height: 0,
            duration_ms: 0,
            thumbnail: Vec::new(),
            placeholder: String::new(),
        });
        let timeline = Timeline { entries: vec![entry(0), with], ..Timeline::new(ConvId(1)) };
        assert_eq!(decode_chunk(&encode_chunk(&timeline, 0)), Ok(timeline.entries.clone()));
        // A format 2 head with a pending insert, as the previous version wrote it: the current
        // layout of an entry without attachment, less its last byte (the absent attachment).
        let plain = entry(5);
        let mut v2 = vec![HEAD_FORMAT_V2];
        v2.extend(postcard::to_allocvec(&(0u32, 1u32, 2u32, Summary::default())).expect("encode"));
        v2.push(1); // one pending effect
        let effect = postcard::to_allocvec(&Effect::Insert(plain.clone())).expect("encode");
        assert_eq!(effect.last(), Some(&0), "the absent attachment is one zero byte at the end");
        v2.extend(&effect[..effect.len() - 1]);
        let head = decode_head(&v2).expect("format 2 head");
        assert_eq!((head.unread, head.chunks), (1, 2));
        assert_eq!(head.pending, vec![Effect::Insert(plain)]);
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
