//! The browser's local store: an in-memory working set (the client core's `ClientStore` is
//! synchronous) written to IndexedDB before anything that depends on it leaves the device.
//!
//! Object store `kv`: `account`, `crypto` (MLS state), `meta` (cursors, outbox, verified safety
//! numbers) and each conversation's decrypted history in chunks (`tl:<id>`, `tl:<id>:<n>`: see
//! [`crate::stored`]). Object stores `search` and `docs`: the search index of that history
//! ([`crate::search_index`]). Only what changed since the last flush is written — for a
//! history, the chunks from the first changed entry on, with its index changes — in one
//! IndexedDB transaction. The transport flushes before every frame it sends, which keeps the
//! core's order of effects: a ratchet step or an outbox entry is on disk before the message
//! that depends on it is on the wire.
//!
//! A long history is not loaded whole: opening reads each chat's newest chunks (and those its
//! unread messages and disappearing messages are in); older chunks are read when the user
//! scrolls back, opens a search hit or the starred list ([`crate::window`]).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use anytime_client::timeline::{Effect, Entry, Timeline};
use anytime_client::{Changes, ClientStore, Content, Event, Queued, Record, StoreError};
use anytime_proto::frame::Seq;
use anytime_proto::{ConvId, DeviceId, MsgId, UserId};
use js_sys::{Array, Uint8Array};
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;

use crate::search_index::{self as index, Doc};
use crate::stored::{self, Summary};
use crate::window::{self, Window};

#[wasm_bindgen(module = "/js/idb.js")]
extern "C" {
    #[wasm_bindgen(catch, js_name = idbOpen)]
    async fn idb_open(name: &str) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(catch, js_name = idbKeys)]
    async fn idb_keys(db: &JsValue, store: &str) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(catch, js_name = idbKeysInRange)]
    async fn idb_keys_in_range(
        db: &JsValue,
        store: &str,
        lower: &str,
        upper: &str,
        limit: u32,
    ) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(catch, js_name = idbCount)]
    async fn idb_count(db: &JsValue, store: &str, lower: &str, upper: &str) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(catch, js_name = idbGetMany)]
    async fn idb_get_many(db: &JsValue, store: &str, keys: Array) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(catch, js_name = idbWrite)]
    async fn idb_write(db: &JsValue, ops: Array) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(catch, js_name = idbWipe)]
    async fn idb_wipe(db: &JsValue, name: &str) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(catch, js_name = holdStoreLock)]
    async fn hold_store_lock(name: &str, on_waiting: &js_sys::Function) -> Result<JsValue, JsValue>;
}

const DB_NAME: &str = "anytime";
/// The Web Lock that makes one tab the store's only writer (see `js/idb.js`).
const STORE_LOCK: &str = "anytime-store";
const KV: &str = "kv";
const SEARCH: &str = "search";
const DOCS: &str = "docs";
/// Doc records read per round while checking search candidates.
const DOCS_PER_READ: usize = 64;
/// Chunks indexed per background step (a few thousand index writes in one transaction).
const INDEX_CHUNKS_PER_STEP: u32 = 4;
/// Chunks of a history read in one round when loading far back (~2 MiB of history).
const CHUNKS_PER_READ_MAX: u32 = 64;

/// Who this browser is signed in as.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Account {
    pub server: String,
    pub token: String,
    pub user: UserId,
    pub device: DeviceId,
    pub username: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Meta {
    pub seqs: BTreeMap<ConvId, Seq>,
    pub outbox: Vec<(ConvId, MsgId, Vec<u8>)>,
    /// Verified safety numbers: user → (digits, direct chat, already warned of a change).
    pub verified: BTreeMap<UserId, (String, ConvId, bool)>,
}

/// Message requests this device decided on (see `anytime_client::timeline::is_request`).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ChatState {
    /// Chats this account started, joined or accepted.
    pub accepted: BTreeSet<ConvId>,
    /// Requests deleted here: hidden until someone writes again.
    pub declined: BTreeSet<ConvId>,
    /// Set by the first catch-up, which accepts every chat the account already had: a linked
    /// device (or a store from before requests existed) must not show old chats as requests.
    pub initialized: bool,
}

#[derive(Default)]
pub struct Data {
    pub account: Option<Account>,
    pub crypto: Vec<u8>,
    pub meta: Meta,
    /// What each outbox entry says (encoded `Content`), kept beside `meta` under its own key so
    /// stores written before it existed still load.
    pub outbox_content: BTreeMap<MsgId, Vec<u8>>,
    /// Each history's entries in memory: its newest chunks, or all of it (see `windows`).
    pub timelines: BTreeMap<ConvId, Timeline>,
    /// Which chunks of each history are in memory, its summary and pending effects.
    pub windows: BTreeMap<ConvId, Window>,
    /// Under its own key too (`chat-state`), for the same reason.
    pub chat_state: ChatState,
}

impl Data {
    /// Who wrote messages in `conv`, over its whole history.
    pub fn writers(&self, conv: ConvId) -> impl Iterator<Item = UserId> + '_ {
        self.windows.get(&conv).into_iter().flat_map(|w| w.summary.writers.iter().copied())
    }

    /// Whether `conv` has entries before those in memory.
    pub fn has_older(&self, conv: ConvId) -> bool {
        self.windows.get(&conv).is_some_and(|w| !w.whole())
    }
}

/// One write of a flush, in order (IndexedDB runs a transaction's requests in order).
enum Op {
    Put(&'static str, String, Vec<u8>),
    Delete(&'static str, String),
    DeleteRange(&'static str, String, String),
}

#[derive(Default)]
struct Dirty {
    account: bool,
    crypto: bool,
    meta: bool,
    /// Conversation → index (in its whole history) of the first entry that changed: entries
    /// after it may have moved.
    convs: BTreeMap<ConvId, usize>,
    /// Chunks whose entries changed in place (pending effects applied as they were loaded).
    chunks: BTreeMap<ConvId, BTreeSet<u32>>,
    /// Search index changes and deletions, in the order they were made.
    ops: Vec<Op>,
}

pub struct Persist {
    db: JsValue,
    pub data: RefCell<Data>,
    dirty: RefCell<Dirty>,
    /// How many chunks of each history are in IndexedDB, so a history that shrank (delete for
    /// me, expiry) loses the chunks past its end.
    stored_chunks: RefCell<BTreeMap<ConvId, u32>>,
    /// Histories with more pending effects than they may keep: loaded whole by [`Persist::settle`].
    overflowing: RefCell<BTreeSet<ConvId>>,
    /// Events recorded since the UI last looked (drained by the session loop).
    pub recorded: RefCell<Vec<Event>>,
    /// When the app last wrote something (not the background indexer): the indexer waits for
    /// a quiet moment, so its transactions do not queue in front of the session's.
    last_write_ms: std::cell::Cell<u64>,
    /// How long [`Persist::open`] took, for `App::stats`.
    pub opened_in_ms: std::cell::Cell<u64>,
}

fn js_error(context: &str, error: JsValue) -> String {
    format!("{context}: {}", error.as_string().unwrap_or_else(|| format!("{error:?}")))
}

fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

fn corrupt(what: &str, e: &dyn std::fmt::Display) -> String {
    format!("the stored {what} is unreadable ({e}); log out to reset")
}

fn strings(items: impl IntoIterator<Item = impl AsRef<str>>) -> Array {
    items.into_iter().map(|s| JsValue::from_str(s.as_ref())).collect()
}

/// Values of `keys` in `store` (`None` where a key is absent).
async fn get_many(db: &JsValue, store: &str, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, String> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let values = idb_get_many(db, store, strings(keys)).await.map_err(|e| js_error("could not read IndexedDB", e))?;
    let values = Array::from(&values);
    Ok((0..values.length())
        .map(|i| {
            let v = values.get(i);
            (!v.is_undefined() && !v.is_null()).then(|| Uint8Array::new(&v).to_vec())
        })
        .collect())
}

/// The search-index docs of `ids` as `timeline` has them now (`None`: not findable).
fn docs_of(timeline: &Timeline, ids: &[MsgId]) -> Vec<(MsgId, Option<Doc>)> {
    ids.iter().map(|id| (*id, timeline.find(*id).filter(|e| index::indexable(e)).map(index::doc_of))).collect()
}

/// The index writes that take `conv`'s message `id` from `before` to `after`; with `always`,
/// `after` is written even when nothing changed (to restore a doc removed earlier).
fn reindex(ops: &mut Vec<Op>, conv: ConvId, id: MsgId, before: Option<&Doc>, after: Option<&Doc>, always: bool) {
    if before == after && !always {
        return;
    }
    if let Some(old) = before.filter(|old| Some(*old) != after) {
        for key in index::postings(conv, id, old.sent_at_ms, &old.body) {
            ops.push(Op::Delete(SEARCH, key));
        }
        ops.push(Op::Delete(DOCS, index::doc_key(conv, id)));
    }
    if let Some(new) = after {
        ops.push(Op::Put(DOCS, index::doc_key(conv, id), index::encode_doc(new)));
        for key in index::postings(conv, id, new.sent_at_ms, &new.body) {
            ops.push(Op::Put(SEARCH, key, Vec::new()));
        }
    }
}

/// A search hit: where the message is and what its doc says.
pub struct Hit {
    pub conv: ConvId,
    pub msg: MsgId,
    pub doc: Doc,
}

/// How many of the last entries of `timeline` are others' messages (what `unread` counts).
fn incoming(timeline: &Timeline) -> usize {
    timeline.entries.iter().filter(|e| !e.own && e.kind.is_message()).count()
}

impl Persist {
    /// Opens (or creates) the browser's database and loads what the app shows first — once
    /// this tab is the only one using it: while another tab of the app is open, `on_waiting`
    /// is called and this waits until that tab closes.
    pub async fn open(on_waiting: &js_sys::Function) -> Result<Persist, String> {
        hold_store_lock(STORE_LOCK, on_waiting).await.map_err(|e| js_error("could not take the store lock", e))?;
        let started = now_ms();
        let db = idb_open(DB_NAME).await.map_err(|e| js_error("could not open IndexedDB", e))?;
        let keys = idb_keys(&db, KV).await.map_err(|e| js_error("could not read IndexedDB", e))?;
        let keys: Vec<String> = Array::from(&keys).iter().filter_map(|k| k.as_string()).collect();
        let mut chunk_keys: BTreeMap<ConvId, BTreeSet<u32>> = BTreeMap::new();
        let mut first: Vec<String> = Vec::new();
        for key in keys {
            match stored::parse_key(&key) {
                Some(stored::Key::Chunk(conv, n)) => {
                    chunk_keys.entry(conv).or_default().insert(n);
                }
                _ => first.push(key),
            }
        }
        let values = get_many(&db, KV, &first).await?;
        let persist = Persist {
            db,
            data: RefCell::default(),
            dirty: RefCell::default(),
            stored_chunks: RefCell::default(),
            overflowing: RefCell::default(),
            recorded: RefCell::default(),
            last_write_ms: std::cell::Cell::new(now_ms()),
            opened_in_ms: std::cell::Cell::new(0),
        };
        let mut heads: BTreeMap<ConvId, stored::Head> = BTreeMap::new();
        let mut legacy: Vec<(ConvId, Timeline)> = Vec::new();
        {
            let mut data = persist.data.borrow_mut();
            for (key, bytes) in first.iter().zip(values) {
                let Some(bytes) = bytes else { continue };
                match key.as_str() {
                    "account" => data.account = Some(postcard::from_bytes(&bytes).map_err(|e| corrupt("account", &e))?),
                    "crypto" => data.crypto = bytes,
                    "meta" => data.meta = postcard::from_bytes(&bytes).map_err(|e| corrupt("state", &e))?,
                    "chat-state" => {
                        data.chat_state = postcard::from_bytes(&bytes).map_err(|e| corrupt("chat list", &e))?
                    }
                    "outbox-content" => {
                        data.outbox_content = postcard::from_bytes(&bytes).map_err(|e| corrupt("outbox", &e))?
                    }
                    other => match stored::parse_key(other) {
                        Some(stored::Key::Head(conv)) => {
                            heads.insert(conv, stored::decode_head(&bytes).map_err(|e| corrupt("history", &e))?);
                        }
                        Some(stored::Key::Legacy(conv)) => {
                            // Rewritten in chunks at the first flush, which deletes the old blob.
                            let timeline = stored::legacy_timeline(&bytes).map_err(|e| corrupt("history", &e))?;
                            legacy.push((conv, timeline));
                            persist.dirty.borrow_mut().ops.push(Op::Delete(KV, other.to_owned()));
                        }
                        _ => {}
                    },
                }
            }
        }
        for (conv, head) in &heads {
            let count = chunk_keys.get(conv).and_then(|c| c.iter().next_back()).map_or(0, |last| last + 1);
            persist.stored_chunks.borrow_mut().insert(*conv, count.max(head.chunks));
        }
        // The newest chunks of every history (all of those stored before summaries existed).
        let mut wanted: Vec<(ConvId, u32)> = Vec::new();
        for (conv, head) in &heads {
            wanted.extend((stored::first_chunk_at_open(head)..head.chunks).map(|n| (*conv, n)));
        }
        let chunk_names: Vec<String> = wanted.iter().map(|(conv, n)| stored::chunk_key(*conv, *n)).collect();
        let values = get_many(&persist.db, KV, &chunk_names).await?;
        let mut loading: BTreeMap<ConvId, stored::Loading> = BTreeMap::new();
        for ((conv, n), bytes) in wanted.into_iter().zip(values) {
            let parts = loading.entry(conv).or_default();
            if let Some(bytes) = bytes {
                parts.chunks.insert(n, stored::decode_chunk(&bytes).map_err(|e| corrupt("history", &e))?);
            }
        }
        let incomplete = |conv: ConvId| format!("the stored history of chat {conv} is incomplete; log out to reset");
        {
            let mut data = persist.data.borrow_mut();
            let mut dirty = persist.dirty.borrow_mut();
            for (conv, head) in heads {
                let base = stored::first_chunk_at_open(&head);
                let (summary, pending) = (head.summary.clone(), head.pending.clone());
                let mut parts = loading.remove(&conv).unwrap_or_default();
                parts.head = Some(head);
                let chunks = parts.head.as_ref().map_or(0, |h| h.chunks);
                let mut timeline = parts.finish(conv, base).ok_or_else(|| incomplete(conv))?;
                let window = match summary {
                    Some(summary) => {
                        // What was pending may concern the chunks loaded now (the history may
                        // have shrunk since): take them in as older chunks are.
                        let loaded = std::mem::take(&mut timeline.entries);
                        let mut window = Window { base: chunks, summary, pending };
                        drop(dirty);
                        persist.take_older(&mut timeline, &mut window, base, loaded);
                        dirty = persist.dirty.borrow_mut();
                        window
                    }
                    None => {
                        // Stored before summaries and the search index: all of it is here
                        // now; summarise it once and write the new head. The index follows
                        // in the background.
                        dirty.convs.insert(conv, timeline.entries.len());
                        let unindexed = stored::chunks_of(timeline.entries.len());
                        Window {
                            base: 0,
                            summary: Summary { unindexed, ..Summary::of(&timeline) },
                            pending: Vec::new(),
                        }
                    }
                };
                data.timelines.insert(conv, timeline);
                data.windows.insert(conv, window);
            }
            for (conv, timeline) in legacy {
                dirty.convs.insert(conv, 0);
                let unindexed = stored::chunks_of(timeline.entries.len());
                let summary = Summary { unindexed, ..Summary::of(&timeline) };
                data.windows.insert(conv, Window { base: 0, summary, pending: Vec::new() });
                data.timelines.insert(conv, timeline);
            }
        }
        // The unread messages are shown from the first one: load back to it.
        let short: Vec<ConvId> = {
            let data = persist.data.borrow();
            data.timelines.values().filter(|t| t.unread > 0).map(|t| t.conv).collect()
        };
        for conv in short {
            persist.load_older_until(conv, |t| incoming(t) >= t.unread as usize).await?;
        }
        persist.expire(now_ms());
        persist.opened_in_ms.set(now_ms() - started);
        Ok(persist)
    }

    /// Indexes the next few chunks of a history stored before the search index existed
    /// (newest first, so recent messages are found first); `false` once nothing is left.
    /// Entries in memory are taken from there; older ones from IndexedDB with their pending
    /// effects applied to a copy (the chunk itself waits until it is loaded).
    pub async fn index_step(&self) -> Result<bool, String> {
        let next = {
            let data = self.data.borrow();
            data.windows.iter().find(|(_, w)| w.summary.unindexed > 0).map(|(c, w)| (*c, w.summary.unindexed, w.base))
        };
        let Some((conv, to, base)) = next else { return Ok(false) };
        let from = to.saturating_sub(INDEX_CHUNKS_PER_STEP);
        let on_disk: Vec<String> = (from..to.min(base)).map(|n| stored::chunk_key(conv, n)).collect();
        let mut read = Vec::new();
        for bytes in get_many(&self.db, KV, &on_disk).await? {
            let bytes =
                bytes.ok_or_else(|| format!("the stored history of chat {conv} is incomplete; log out to reset"))?;
            read.push(stored::decode_chunk(&bytes).map_err(|e| corrupt("history", &e))?);
        }
        if self.index_read(conv, from, to, read) {
            self.write().await?;
        }
        Ok(true)
    }

    /// [`Persist::index_step`] once chunks `from..to` are read (those `read` from the disk):
    /// `false` if the history changed meanwhile (then the step is looked at again).
    fn index_read(&self, conv: ConvId, from: u32, to: u32, read: Vec<Vec<Entry>>) -> bool {
        let mut data = self.data.borrow_mut();
        let Data { timelines, windows, .. } = &mut *data;
        let (Some(timeline), Some(window)) = (timelines.get(&conv), windows.get_mut(&conv)) else { return false };
        if window.summary.unindexed != to {
            // Reset (a deleted request) or indexed meanwhile.
            return false;
        }
        let mut part = Timeline::new(conv);
        for (n, chunk) in (from..).zip(read) {
            // Loaded since it was read: memory has the latest.
            if n < window.base {
                part.entries.extend(chunk);
            }
        }
        for effect in &window.pending {
            let (now, _) = window::split(effect.clone(), |id| part.find(id).is_some());
            if let Some(now) = now {
                part.apply_local(now);
            }
        }
        let loaded =
            |n: u32| ((n.saturating_sub(window.base)) as usize * stored::CHUNK_ENTRIES).min(timeline.entries.len());
        let in_memory = &timeline.entries[loaded(from.max(window.base))..loaded(to.max(window.base))];
        let now = now_ms();
        let mut dirty = self.dirty.borrow_mut();
        for entry in part.entries.iter().chain(in_memory) {
            if index::indexable(entry) && entry.expires_at_ms.is_none_or(|at| at > now) {
                reindex(&mut dirty.ops, conv, entry.msg_id, None, Some(&index::doc_of(entry)), false);
            }
        }
        window.summary.unindexed = from;
        let end = window.absolute(timeline.entries.len());
        let first = dirty.convs.entry(conv).or_insert(end);
        *first = (*first).min(end);
        true
    }

    /// Messages not in the search index yet (being indexed in the background), about.
    pub fn unindexed(&self) -> usize {
        let data = self.data.borrow();
        data.windows.values().map(|w| w.summary.unindexed as usize * stored::CHUNK_ENTRIES).sum()
    }

    /// Removes messages whose disappearing timer ran out (from memory, disk and the index).
    pub fn expire(&self, now: u64) {
        let mut data = self.data.borrow_mut();
        let Data { timelines, windows, .. } = &mut *data;
        let mut dirty = self.dirty.borrow_mut();
        for timeline in timelines.values_mut() {
            let Some(first) = timeline.entries.iter().position(|e| e.expires_at_ms.is_some_and(|at| at <= now)) else {
                continue;
            };
            let window = windows.entry(timeline.conv).or_default();
            for entry in timeline.entries.iter().filter(|e| e.expires_at_ms.is_some_and(|at| at <= now)) {
                window.summary.starred.remove(&entry.msg_id);
                if index::indexable(entry) {
                    reindex(&mut dirty.ops, timeline.conv, entry.msg_id, Some(&index::doc_of(entry)), None, false);
                }
            }
            timeline.expire(now);
            let from = dirty.convs.entry(timeline.conv).or_insert(window.absolute(first));
            *from = (*from).min(window.absolute(first));
        }
    }

    /// Loads older chunks of `conv` (and applies their pending effects) until `enough` holds
    /// for what is in memory or all of the history is. Each round reads twice as many chunks
    /// as the one before, so going far back costs a few reads, not one per chunk.
    pub async fn load_older_until(&self, conv: ConvId, enough: impl Fn(&Timeline) -> bool) -> Result<(), String> {
        let mut batch: u32 = 1;
        loop {
            let base = {
                let data = self.data.borrow();
                let (Some(timeline), Some(window)) = (data.timelines.get(&conv), data.windows.get(&conv)) else {
                    return Ok(());
                };
                if window.whole() || enough(timeline) {
                    return Ok(());
                }
                window.base
            };
            let from = base.saturating_sub(batch);
            batch = batch.saturating_mul(2).min(CHUNKS_PER_READ_MAX);
            let names: Vec<String> = (from..base).map(|n| stored::chunk_key(conv, n)).collect();
            let mut older = Vec::with_capacity(names.len() * stored::CHUNK_ENTRIES);
            for bytes in get_many(&self.db, KV, &names).await? {
                let bytes = bytes
                    .ok_or_else(|| format!("the stored history of chat {conv} is incomplete; log out to reset"))?;
                older.extend(stored::decode_chunk(&bytes).map_err(|e| corrupt("history", &e))?);
            }
            let mut data = self.data.borrow_mut();
            let Data { timelines, windows, .. } = &mut *data;
            let (Some(timeline), Some(window)) = (timelines.get_mut(&conv), windows.get_mut(&conv)) else {
                return Ok(());
            };
            if window.base != base {
                // Something else loaded (or reset) this history meanwhile: look again.
                continue;
            }
            self.take_older(timeline, window, from, older);
        }
    }

    /// Puts `older` (chunks `from..window.base`, just read) in front of what is in memory,
    /// applying the pending effects that concern them, and marks what that changed: the
    /// chunks (in place), their search index entries and the head.
    fn take_older(&self, timeline: &mut Timeline, window: &mut Window, from: u32, older: Vec<Entry>) {
        let conv = timeline.conv;
        let base = window.base;
        let targets: Vec<MsgId> = window.pending.iter().flat_map(window::targets).collect();
        let pending_before = window.pending.clone();
        let part = Timeline { conv, entries: older.clone(), ..Timeline::default() };
        let before = docs_of(&part, &targets);
        let done = window::prepend(timeline, window, older, base - from);
        let mut dirty = self.dirty.borrow_mut();
        if !done.applied.is_empty() {
            let after = docs_of(timeline, &targets);
            for ((id, old), (_, new)) in before.iter().zip(&after) {
                if part.find(*id).is_some() {
                    reindex(&mut dirty.ops, conv, *id, old.as_ref(), new.as_ref(), true);
                }
            }
            // Only the chunks just read can have changed; rewriting from the first would
            // rewrite everything after it as well.
            let changed = before
                .iter()
                .filter_map(|(id, _)| part.entries.iter().position(|e| e.msg_id == *id))
                .map(|i| from + (i / stored::CHUNK_ENTRIES) as u32);
            dirty.chunks.entry(conv).or_default().extend(changed);
        }
        if window.pending != pending_before {
            // The head keeps the pending effects.
            let end = window.absolute(timeline.entries.len());
            let first = dirty.convs.entry(conv).or_insert(end);
            *first = (*first).min(end);
        }
        if window.whole() {
            // Now that every starred message is in memory, the summary is exact.
            window.summary.starred = timeline.entries.iter().filter(|e| e.starred).map(|e| e.msg_id).collect();
            self.overflowing.borrow_mut().remove(&conv);
        }
    }

    /// Loads `conv` back to message `msg` (a search hit, a starred message, a reply's quote).
    pub async fn reveal(&self, conv: ConvId, msg: MsgId) -> Result<(), String> {
        self.load_older_until(conv, |t| t.find(msg).is_some()).await
    }

    /// Loads every history that holds a starred message not in memory yet.
    pub async fn load_starred(&self) -> Result<(), String> {
        let convs: Vec<ConvId> = {
            let data = self.data.borrow();
            data.windows.iter().filter(|(_, w)| !w.whole() && !w.summary.starred.is_empty()).map(|(c, _)| *c).collect()
        };
        for conv in convs {
            let wanted: Vec<MsgId> = {
                let data = self.data.borrow();
                data.windows.get(&conv).map(|w| w.summary.starred.iter().copied().collect()).unwrap_or_default()
            };
            self.load_older_until(conv, |t| wanted.iter().all(|m| t.find(*m).is_some())).await?;
        }
        Ok(())
    }

    /// Loads whole the histories that collected too many pending effects, then writes them.
    pub async fn settle(&self) -> Result<(), String> {
        let convs: Vec<ConvId> = self.overflowing.borrow().iter().copied().collect();
        for conv in convs {
            self.load_older_until(conv, |_| false).await?;
            self.overflowing.borrow_mut().remove(&conv);
        }
        self.flush().await
    }

    /// Forgets the history of `conv` (a deleted message request): entries, chunks and index.
    pub fn forget_history(&self, conv: ConvId) {
        let mut data = self.data.borrow_mut();
        data.timelines.insert(conv, Timeline::new(conv));
        data.windows.insert(conv, Window::default());
        let mut dirty = self.dirty.borrow_mut();
        let (lower, upper) = index::doc_range(conv);
        dirty.ops.push(Op::DeleteRange(DOCS, lower, upper));
        dirty.convs.insert(conv, 0);
    }

    /// Messages on this device matching every word of `query` (word prefixes), newest first,
    /// from the search index; stale postings met on the way are removed.
    pub async fn search(&self, query: &str, limit: usize) -> Result<Vec<Hit>, String> {
        let words = index::query_words(query);
        if words.is_empty() {
            return Ok(Vec::new());
        }
        // Candidates come from the rarest word's postings; the doc check applies the others.
        let mut rarest: Option<(f64, &String)> = None;
        for word in &words {
            let (lower, upper) = index::word_range(word);
            let count = idb_count(&self.db, SEARCH, &lower, &upper)
                .await
                .map_err(|e| js_error("could not search IndexedDB", e))?
                .as_f64()
                .unwrap_or(0.0);
            if rarest.is_none_or(|(least, _)| count < least) {
                rarest = Some((count, word));
            }
        }
        let Some((_, word)) = rarest else { return Ok(Vec::new()) };
        let (lower, upper) = index::word_range(word);
        let keys = idb_keys_in_range(&self.db, SEARCH, &lower, &upper, index::POSTINGS_PER_WORD_MAX)
            .await
            .map_err(|e| js_error("could not search IndexedDB", e))?;
        let postings: Vec<String> = Array::from(&keys).iter().filter_map(|k| k.as_string()).collect();
        let candidates = index::intersect(std::slice::from_ref(&postings));
        let now = now_ms();
        let mut hits = Vec::new();
        let mut checked: BTreeMap<String, Option<Doc>> = BTreeMap::new();
        for batch in candidates.chunks(DOCS_PER_READ) {
            let keys: Vec<String> = batch.iter().map(|p| p.doc.clone()).collect();
            let docs = get_many(&self.db, DOCS, &keys).await?;
            for (key, bytes) in keys.into_iter().zip(docs) {
                let doc = bytes.as_deref().and_then(index::decode_doc);
                if let (Some(doc), Some((conv, msg))) = (&doc, index::parse_doc_key(&key)) {
                    if index::matches(doc, &words, now) {
                        hits.push(Hit { conv, msg, doc: doc.clone() });
                    }
                }
                checked.insert(key, doc);
            }
            if hits.len() >= limit {
                break;
            }
        }
        hits.truncate(limit);
        // Postings whose message is gone, or no longer has that word (edited): remove them.
        let mut stale_postings = Vec::new();
        for key in &postings {
            let Some(posting) = index::parse_posting(key) else { continue };
            let Some(doc) = checked.get(&posting.doc) else { continue };
            let stale = match doc {
                None => true,
                Some(doc) => !index::words(&doc.body).iter().any(|w| w.starts_with(word.as_str())),
            };
            if stale {
                stale_postings.push(Op::Delete(SEARCH, key.clone()));
            }
        }
        self.dirty.borrow_mut().ops.extend(stale_postings);
        self.flush().await?;
        Ok(hits)
    }

    pub fn set_account(&self, account: Account, crypto: Vec<u8>) {
        let mut data = self.data.borrow_mut();
        data.account = Some(account);
        data.crypto = crypto;
        let mut dirty = self.dirty.borrow_mut();
        dirty.account = true;
        dirty.crypto = true;
    }

    pub fn touch_meta(&self) {
        self.dirty.borrow_mut().meta = true;
    }

    /// The head of `conv` changed (timer, unread count), not its entries.
    pub fn touch_head(&self, conv: ConvId) {
        let end = {
            let data = self.data.borrow();
            let len = data.timelines.get(&conv).map_or(0, |t| t.entries.len());
            data.windows.get(&conv).map_or(len, |w| w.absolute(len))
        };
        self.touch_from(conv, end);
    }

    /// Entries of `conv` from index `first` of the whole history on changed.
    fn touch_from(&self, conv: ConvId, first: usize) {
        let mut dirty = self.dirty.borrow_mut();
        let from = dirty.convs.entry(conv).or_insert(first);
        *from = (*from).min(first);
    }

    /// The in-memory entries `ids` of `conv` changed (searched from the newest: they usually
    /// are recent).
    pub fn touch_entries(&self, conv: ConvId, ids: &[MsgId]) {
        let first = {
            let data = self.data.borrow();
            let (Some(timeline), Some(window)) = (data.timelines.get(&conv), data.windows.get(&conv)) else { return };
            first_of(timeline, ids).map(|i| window.absolute(i))
        };
        if let Some(first) = first {
            self.touch_from(conv, first);
        }
    }

    /// Milliseconds since the app last wrote to IndexedDB (the background indexer aside).
    pub fn quiet_ms(&self) -> u64 {
        now_ms().saturating_sub(self.last_write_ms.get())
    }

    /// Writes every changed key in one transaction; returns when it is durable.
    pub async fn flush(&self) -> Result<(), String> {
        if self.has_dirty() {
            self.last_write_ms.set(now_ms());
        }
        self.write().await
    }

    fn has_dirty(&self) -> bool {
        let dirty = self.dirty.borrow();
        dirty.account
            || dirty.crypto
            || dirty.meta
            || !dirty.convs.is_empty()
            || !dirty.chunks.is_empty()
            || !dirty.ops.is_empty()
    }

    async fn write(&self) -> Result<(), String> {
        if !self.has_dirty() {
            return Ok(());
        }
        let dirty = std::mem::take(&mut *self.dirty.borrow_mut());
        let ops = Array::new();
        let push = |op: &Op| {
            let row = match op {
                Op::Put(store, key, bytes) => Array::of4(
                    &JsValue::from_str(store),
                    &JsValue::from_str("put"),
                    &JsValue::from_str(key),
                    &Uint8Array::from(bytes.as_slice()),
                ),
                Op::Delete(store, key) => {
                    Array::of3(&JsValue::from_str(store), &JsValue::from_str("delete"), &JsValue::from_str(key))
                }
                Op::DeleteRange(store, lower, upper) => Array::of4(
                    &JsValue::from_str(store),
                    &JsValue::from_str("range"),
                    &JsValue::from_str(lower),
                    &JsValue::from_str(upper),
                ),
            };
            ops.push(&row);
        };
        for op in &dirty.ops {
            push(op);
        }
        let mut stored_chunks = self.stored_chunks.borrow().clone();
        {
            let data = self.data.borrow();
            let put = |key: String, bytes: Vec<u8>| push(&Op::Put(KV, key, bytes));
            if dirty.account {
                if let Some(account) = &data.account {
                    put("account".into(), encode(account));
                }
            }
            if dirty.crypto {
                put("crypto".into(), data.crypto.clone());
            }
            if dirty.meta {
                put("meta".into(), encode(&data.meta));
                put("outbox-content".into(), encode(&data.outbox_content));
                put("chat-state".into(), encode(&data.chat_state));
            }
            let no_window = Window::default();
            for (&conv, changed) in &dirty.chunks {
                let (Some(timeline), Some(window)) = (data.timelines.get(&conv), data.windows.get(&conv)) else {
                    continue;
                };
                let end = window.base + stored::chunks_of(timeline.entries.len());
                // Those from `first` on are written below anyway.
                let from_first = dirty.convs.get(&conv).map_or(end, |first| (*first / stored::CHUNK_ENTRIES) as u32);
                for &n in changed.iter().filter(|n| **n >= window.base && **n < end.min(from_first)) {
                    put(stored::chunk_key(conv, n), stored::encode_chunk_from(timeline, window.base, n));
                }
            }
            for (&conv, &first) in &dirty.convs {
                let Some(timeline) = data.timelines.get(&conv) else { continue };
                let window = data.windows.get(&conv).unwrap_or(&no_window);
                let mut summary = window.summary.clone();
                summary.expiring_chunk = window::expiring_chunk(timeline, window.base);
                let chunks = window.base + stored::chunks_of(timeline.entries.len());
                put(stored::head_key(conv), stored::encode_head(timeline, window.base, &summary, &window.pending));
                let first_chunk = ((first / stored::CHUNK_ENTRIES) as u32).max(window.base);
                for n in first_chunk..chunks {
                    put(stored::chunk_key(conv, n), stored::encode_chunk_from(timeline, window.base, n));
                }
                let before = stored_chunks.insert(conv, chunks).unwrap_or(0);
                for n in chunks..before {
                    push(&Op::Delete(KV, stored::chunk_key(conv, n)));
                }
            }
        }
        let written = idb_write(&self.db, ops).await;
        if let Err(e) = written {
            // Nothing of the transaction is on disk: keep it all for the next flush, first.
            let mut again = self.dirty.borrow_mut();
            again.account |= dirty.account;
            again.crypto |= dirty.crypto;
            again.meta |= dirty.meta;
            for (conv, first) in dirty.convs {
                let from = again.convs.entry(conv).or_insert(first);
                *from = (*from).min(first);
            }
            for (conv, chunks) in dirty.chunks {
                again.chunks.entry(conv).or_default().extend(chunks);
            }
            let later = std::mem::replace(&mut again.ops, dirty.ops);
            again.ops.extend(later);
            return Err(js_error("could not write IndexedDB", e));
        }
        *self.stored_chunks.borrow_mut() = stored_chunks;
        Ok(())
    }

    /// Logging out: everything this browser held about the account is deleted.
    pub async fn wipe(&self) -> Result<(), String> {
        *self.data.borrow_mut() = Data::default();
        *self.dirty.borrow_mut() = Dirty::default();
        self.stored_chunks.borrow_mut().clear();
        idb_wipe(&self.db, DB_NAME).await.map_err(|e| js_error("could not delete IndexedDB", e))?;
        Ok(())
    }

    /// Carries `effect` out on `conv`: now on what is in memory, later (pending) on older
    /// chunks; keeps the summary and the search index in step.
    fn apply(&self, data: &mut Data, conv: ConvId, effect: Effect) {
        let Data { timelines, windows, .. } = data;
        let timeline = timelines.entry(conv).or_insert_with(|| Timeline::new(conv));
        let window = windows.entry(conv).or_default();
        let (now, later) =
            if window.whole() { (Some(effect), None) } else { window::split(effect, |id| timeline.find(id).is_some()) };
        let mut dirty = self.dirty.borrow_mut();
        if let Some(later) = later {
            if let Effect::Edit { to, .. } | Effect::Delete { to, .. } = &later {
                // Until its chunk is loaded the message must not be found by its old text.
                dirty.ops.push(Op::Delete(DOCS, index::doc_key(conv, *to)));
            }
            window.pending.push(later);
            if window.pending.len() > window::PENDING_EFFECTS_MAX {
                self.overflowing.borrow_mut().insert(conv);
            }
            let end = window.absolute(timeline.entries.len());
            let from = dirty.convs.entry(conv).or_insert(end);
            *from = (*from).min(end);
        }
        let Some(now) = now else { return };
        let ids = window::targets(&now);
        let before = docs_of(timeline, &ids);
        let first = window.absolute(first_changed(timeline, &now));
        match &now {
            Effect::Insert(entry) | Effect::SetTimer { notice: entry, .. } => window.summary.note(entry),
            Effect::Star { to, starred: true } if timeline.find(*to).is_some() => {
                window.summary.starred.insert(*to);
            }
            Effect::Star { to, starred: false } | Effect::Hide { to } => {
                window.summary.starred.remove(to);
            }
            _ => {}
        }
        timeline.apply_local(now);
        let after = docs_of(timeline, &ids);
        for ((id, old), (_, new)) in before.iter().zip(&after) {
            reindex(&mut dirty.ops, conv, *id, old.as_ref(), new.as_ref(), false);
        }
        let from = dirty.convs.entry(conv).or_insert(first);
        *from = (*from).min(first);
    }
}

/// The index of the first entry `effect` can change (before it is applied); entries are only
/// ever appended, so a new one changes nothing before the end.
fn first_changed(timeline: &Timeline, effect: &Effect) -> usize {
    let end = timeline.entries.len();
    match effect {
        Effect::SetTimer { .. } => end,
        other => first_of(timeline, &window::targets(other)).unwrap_or(end),
    }
}

/// The lowest index of an entry among `ids`, searching from the newest.
fn first_of(timeline: &Timeline, ids: &[MsgId]) -> Option<usize> {
    let wanted: BTreeSet<MsgId> = ids.iter().copied().collect();
    let mut found = 0;
    let mut first = None;
    for (index, entry) in timeline.entries.iter().enumerate().rev() {
        if wanted.contains(&entry.msg_id) {
            first = Some(index);
            found += 1;
            if found == wanted.len() {
                break;
            }
        }
    }
    first
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising plain structs into a Vec cannot fail.
    postcard::to_allocvec(value).unwrap_or_default()
}

/// The client core's store: a view of [`Persist`] that marks what it changes.
pub struct WebStore(pub std::rc::Rc<Persist>);

impl ClientStore for WebStore {
    fn last_seq(&self, conv: ConvId) -> Result<Seq, StoreError> {
        Ok(self.0.data.borrow().meta.seqs.get(&conv).copied().unwrap_or(0))
    }

    fn outbox(&self) -> Result<Vec<Queued>, StoreError> {
        let data = self.0.data.borrow();
        let queued = data.meta.outbox.iter().map(|(conv, msg_id, ciphertext)| Queued {
            conv: *conv,
            msg_id: *msg_id,
            ciphertext: ciphertext.clone(),
            content: data.outbox_content.get(msg_id).and_then(|bytes| Content::decode(bytes).ok()),
        });
        Ok(queued.collect())
    }

    /// Applies the batch to the working set and marks what changed; the transport flushes every
    /// dirty key in one IndexedDB transaction before the next frame leaves, so a batch is never
    /// on disk in part.
    fn save(&mut self, changes: Changes<'_>) -> Result<(), StoreError> {
        let mut data = self.0.data.borrow_mut();
        if let Some(state) = changes.crypto {
            data.crypto = state;
            self.0.dirty.borrow_mut().crypto = true;
        }
        if let Some(Record { conv, seq, event }) = changes.record {
            if seq > 0 {
                let last = data.meta.seqs.entry(conv).or_insert(0);
                *last = (*last).max(seq);
                self.0.touch_meta();
            }
            if let Some(event) = event {
                let timer = data.timelines.get(&conv).map_or(0, |t| t.timer_seconds);
                if let Some(effect) = Effect::of(event, timer, now_ms()) {
                    self.0.apply(&mut data, conv, effect);
                }
                self.0.recorded.borrow_mut().push(event.clone());
            }
        }
        if let Some(entry) = changes.outbox_add {
            let queued = (entry.conv, entry.msg_id, entry.ciphertext.to_vec());
            match data.meta.outbox.iter_mut().find(|(_, id, _)| *id == entry.msg_id) {
                Some(old) => *old = queued,
                None => data.meta.outbox.push(queued),
            }
            data.outbox_content.insert(entry.msg_id, entry.content.encode());
            self.0.touch_meta();
        }
        if let Some(msg_id) = changes.outbox_remove {
            data.meta.outbox.retain(|(_, id, _)| *id != msg_id);
            data.outbox_content.remove(&msg_id);
            self.0.touch_meta();
        }
        if let Some((conv, effect)) = changes.local {
            self.0.apply(&mut data, conv, effect);
        }
        Ok(())
    }

    fn history(&self, conv: ConvId, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let data = self.0.data.borrow();
        let entries = data.timelines.get(&conv).map(|t| t.entries.as_slice()).unwrap_or_default();
        Ok(entries[entries.len().saturating_sub(limit)..].to_vec())
    }

    fn starred(&self) -> Result<Vec<(ConvId, Entry)>, StoreError> {
        Ok(anytime_client::timeline::starred(self.0.data.borrow().timelines.values()))
    }
}
