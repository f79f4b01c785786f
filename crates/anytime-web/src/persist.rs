//! The browser's local store: an in-memory working set (the client core's `ClientStore` is
//! synchronous) written to IndexedDB before anything that depends on it leaves the device.
//!
//! Keys: `account`, `crypto` (MLS state), `meta` (cursors, outbox, verified safety numbers) and
//! each conversation's decrypted history in chunks (`tl:<id>`, `tl:<id>:<n>`: see
//! [`crate::stored`]). Only what changed since the last flush is written — for a history, the
//! chunks from the first changed entry on — in one IndexedDB transaction. The transport flushes before every frame it
//! sends, which keeps the core's order of effects: a ratchet step or an outbox entry is on disk
//! before the message that depends on it is on the wire.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use anytime_client::timeline::{Effect, Timeline};
use anytime_client::{Changes, ClientStore, Content, Event, Queued, Record, StoreError};
use anytime_proto::frame::Seq;
use anytime_proto::{ConvId, DeviceId, MsgId, UserId};
use js_sys::{Array, Uint8Array};
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;

use crate::stored;

#[wasm_bindgen(module = "/js/idb.js")]
extern "C" {
    #[wasm_bindgen(catch, js_name = idbOpen)]
    async fn idb_open(name: &str) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(catch, js_name = idbLoadAll)]
    async fn idb_load_all(db: &JsValue) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(catch, js_name = idbPut)]
    async fn idb_put(db: &JsValue, keys: Array, values: Array, deletes: Array) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(catch, js_name = idbWipe)]
    async fn idb_wipe(db: &JsValue, name: &str) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(catch, js_name = holdStoreLock)]
    async fn hold_store_lock(name: &str, on_waiting: &js_sys::Function) -> Result<JsValue, JsValue>;
}

const DB_NAME: &str = "anytime";
/// The Web Lock that makes one tab the store's only writer (see `js/idb.js`).
const STORE_LOCK: &str = "anytime-store";

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
    pub timelines: BTreeMap<ConvId, Timeline>,
    /// Under its own key too (`chat-state`), for the same reason.
    pub chat_state: ChatState,
}

#[derive(Default)]
struct Dirty {
    account: bool,
    crypto: bool,
    meta: bool,
    /// Conversation → index of the first entry that changed (entries after it may have moved).
    convs: BTreeMap<ConvId, usize>,
    /// Keys to delete in the next flush (histories in the layout before chunks).
    deletes: Vec<String>,
}

pub struct Persist {
    db: JsValue,
    pub data: RefCell<Data>,
    dirty: RefCell<Dirty>,
    /// How many chunks of each history are in IndexedDB, so a history that shrank (delete for
    /// me, expiry) loses the chunks past its end.
    stored_chunks: RefCell<BTreeMap<ConvId, u32>>,
    /// Events recorded since the UI last looked (drained by the session loop).
    pub recorded: RefCell<Vec<Event>>,
}

fn js_error(context: &str, error: JsValue) -> String {
    format!("{context}: {}", error.as_string().unwrap_or_else(|| format!("{error:?}")))
}

fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

impl Persist {
    /// Opens (or creates) the browser's database and loads everything into memory — once this
    /// tab is the only one using it: while another tab of the app is open, `on_waiting` is
    /// called and this waits until that tab closes.
    pub async fn open(on_waiting: &js_sys::Function) -> Result<Persist, String> {
        hold_store_lock(STORE_LOCK, on_waiting).await.map_err(|e| js_error("could not take the store lock", e))?;
        let db = idb_open(DB_NAME).await.map_err(|e| js_error("could not open IndexedDB", e))?;
        let loaded = idb_load_all(&db).await.map_err(|e| js_error("could not read IndexedDB", e))?;
        let loaded = Array::from(&loaded);
        let (keys, values) = (Array::from(&loaded.get(0)), Array::from(&loaded.get(1)));
        let mut data = Data::default();
        let mut dirty = Dirty::default();
        let mut loading: BTreeMap<ConvId, stored::Loading> = BTreeMap::new();
        for i in 0..keys.length() {
            let key = keys.get(i).as_string().unwrap_or_default();
            let bytes = Uint8Array::new(&values.get(i)).to_vec();
            let corrupt = |what: &str, e: &dyn std::fmt::Display| {
                format!("the stored {what} is unreadable ({e}); log out to reset")
            };
            match key.as_str() {
                "account" => data.account = Some(postcard::from_bytes(&bytes).map_err(|e| corrupt("account", &e))?),
                "crypto" => data.crypto = bytes,
                "meta" => data.meta = postcard::from_bytes(&bytes).map_err(|e| corrupt("state", &e))?,
                "chat-state" => data.chat_state = postcard::from_bytes(&bytes).map_err(|e| corrupt("chat list", &e))?,
                "outbox-content" => {
                    data.outbox_content = postcard::from_bytes(&bytes).map_err(|e| corrupt("outbox", &e))?
                }
                other => match stored::parse_key(other) {
                    Some(stored::Key::Head(conv)) => {
                        let head = stored::decode_head(&bytes).map_err(|e| corrupt("history", &e))?;
                        loading.entry(conv).or_default().head = Some(head);
                    }
                    Some(stored::Key::Chunk(conv, n)) => {
                        let chunk = stored::decode_chunk(&bytes).map_err(|e| corrupt("history", &e))?;
                        loading.entry(conv).or_default().chunks.insert(n, chunk);
                    }
                    Some(stored::Key::Legacy(conv)) => {
                        // Rewritten in chunks at the first flush, which deletes the old blob.
                        let timeline = stored::legacy_timeline(&bytes).map_err(|e| corrupt("history", &e))?;
                        data.timelines.insert(conv, timeline);
                        dirty.convs.insert(conv, 0);
                        dirty.deletes.push(other.to_owned());
                    }
                    None => {}
                },
            }
        }
        let mut stored_chunks = BTreeMap::new();
        for (conv, parts) in loading {
            stored_chunks.insert(conv, parts.chunks.keys().next_back().map_or(0, |last| last + 1));
            let timeline = parts
                .finish(conv)
                .ok_or_else(|| format!("the stored history of chat {conv} is incomplete; log out to reset"))?;
            data.timelines.insert(conv, timeline);
        }
        let now = now_ms();
        for timeline in data.timelines.values_mut() {
            if let Some(first) = timeline.entries.iter().position(|e| e.expires_at_ms.is_some_and(|at| at <= now)) {
                timeline.expire(now);
                let from = dirty.convs.entry(timeline.conv).or_insert(first);
                *from = (*from).min(first);
            }
        }
        Ok(Persist {
            db,
            data: RefCell::new(data),
            dirty: RefCell::new(dirty),
            stored_chunks: RefCell::new(stored_chunks),
            recorded: RefCell::default(),
        })
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

    /// The whole history of `conv` changed (or its head: timer, unread count).
    pub fn touch_conv(&self, conv: ConvId) {
        self.touch_conv_from(conv, 0);
    }

    /// Entries of `conv` from index `first` on changed.
    pub fn touch_conv_from(&self, conv: ConvId, first: usize) {
        let mut dirty = self.dirty.borrow_mut();
        let from = dirty.convs.entry(conv).or_insert(first);
        *from = (*from).min(first);
    }

    /// The entries `ids` of `conv` changed (searched from the newest: they usually are recent).
    pub fn touch_entries(&self, conv: ConvId, ids: &[MsgId]) {
        let first = {
            let data = self.data.borrow();
            let Some(timeline) = data.timelines.get(&conv) else { return };
            first_of(timeline, ids)
        };
        if let Some(first) = first {
            self.touch_conv_from(conv, first);
        }
    }

    /// Writes every changed key in one transaction; returns when it is durable.
    pub async fn flush(&self) -> Result<(), String> {
        let dirty = std::mem::take(&mut *self.dirty.borrow_mut());
        if !dirty.account && !dirty.crypto && !dirty.meta && dirty.convs.is_empty() && dirty.deletes.is_empty() {
            return Ok(());
        }
        let (keys, values, deletes) = (Array::new(), Array::new(), Array::new());
        for key in &dirty.deletes {
            deletes.push(&JsValue::from_str(key));
        }
        let mut stored_chunks = self.stored_chunks.borrow().clone();
        {
            let data = self.data.borrow();
            let put = |key: String, bytes: &[u8]| {
                keys.push(&JsValue::from_str(&key));
                values.push(&Uint8Array::from(bytes));
            };
            if dirty.account {
                if let Some(account) = &data.account {
                    put("account".into(), &encode(account));
                }
            }
            if dirty.crypto {
                put("crypto".into(), &data.crypto);
            }
            if dirty.meta {
                put("meta".into(), &encode(&data.meta));
                put("outbox-content".into(), &encode(&data.outbox_content));
                put("chat-state".into(), &encode(&data.chat_state));
            }
            for (&conv, &first) in &dirty.convs {
                let Some(timeline) = data.timelines.get(&conv) else { continue };
                let chunks = stored::chunks_of(timeline.entries.len());
                put(stored::head_key(conv), &stored::encode_head(timeline));
                for n in (first / stored::CHUNK_ENTRIES) as u32..chunks {
                    put(stored::chunk_key(conv, n), &stored::encode_chunk(timeline, n));
                }
                let before = stored_chunks.insert(conv, chunks).unwrap_or(0);
                for n in chunks..before {
                    deletes.push(&JsValue::from_str(&stored::chunk_key(conv, n)));
                }
            }
        }
        let written = idb_put(&self.db, keys, values, deletes).await;
        if let Err(e) = written {
            // Nothing of the transaction is on disk: keep it all for the next flush.
            let mut again = self.dirty.borrow_mut();
            again.account |= dirty.account;
            again.crypto |= dirty.crypto;
            again.meta |= dirty.meta;
            for (conv, first) in dirty.convs {
                let from = again.convs.entry(conv).or_insert(first);
                *from = (*from).min(first);
            }
            again.deletes.extend(dirty.deletes);
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
}

/// The index of the first entry `effect` can change (before it is applied); entries are only
/// ever appended, so a new one changes nothing before the end.
fn first_changed(timeline: &Timeline, effect: &Effect) -> usize {
    let end = timeline.entries.len();
    let at = |ids: &[MsgId]| first_of(timeline, ids).unwrap_or(end);
    match effect {
        Effect::Insert(entry) => at(&[entry.msg_id]),
        Effect::SetTimer { .. } => end,
        Effect::React { to, .. }
        | Effect::Edit { to, .. }
        | Effect::Delete { to, .. }
        | Effect::Preview { to, .. }
        | Effect::Star { to, .. }
        | Effect::Hide { to } => at(&[*to]),
        Effect::Receipt { messages, .. } => at(messages),
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
                let timeline = data.timelines.entry(conv).or_insert_with(|| Timeline::new(conv));
                if let Some(effect) = Effect::of(event, timeline.timer_seconds, now_ms()) {
                    let first = first_changed(timeline, &effect);
                    timeline.apply_local(effect);
                    self.0.touch_conv_from(conv, first);
                }
                self.0.recorded.borrow_mut().push(event.clone());
            }
        }
        if let Some(entry) = changes.outbox_add {
            if !data.meta.outbox.iter().any(|(_, id, _)| *id == entry.msg_id) {
                data.meta.outbox.push((entry.conv, entry.msg_id, entry.ciphertext.to_vec()));
                data.outbox_content.insert(entry.msg_id, entry.content.encode());
                self.0.touch_meta();
            }
        }
        if let Some(msg_id) = changes.outbox_remove {
            data.meta.outbox.retain(|(_, id, _)| *id != msg_id);
            data.outbox_content.remove(&msg_id);
            self.0.touch_meta();
        }
        if let Some((conv, effect)) = changes.local {
            let timeline = data.timelines.entry(conv).or_insert_with(|| Timeline::new(conv));
            let first = first_changed(timeline, &effect);
            timeline.apply_local(effect);
            self.0.touch_conv_from(conv, first);
        }
        Ok(())
    }

    fn history(&self, conv: ConvId, limit: usize) -> Result<Vec<anytime_client::timeline::Entry>, StoreError> {
        let data = self.0.data.borrow();
        let entries = data.timelines.get(&conv).map(|t| t.entries.as_slice()).unwrap_or_default();
        Ok(entries[entries.len().saturating_sub(limit)..].to_vec())
    }

    fn starred(&self) -> Result<Vec<(ConvId, anytime_client::timeline::Entry)>, StoreError> {
        Ok(anytime_client::timeline::starred(self.0.data.borrow().timelines.values()))
    }
}
