//! The web client's core: the same `anytime-client` the CLI uses (protocol, MLS, sync), compiled
//! to wasm32 and exposed to the page's UI (crates/anytime-web/static) through wasm-bindgen.
//!
//! Layers, as in the native client: `persist` (IndexedDB behind the core's synchronous store),
//! `ws` (the browser WebSocket as the core's transport), `session` (one task that owns the
//! client and serialises the UI's commands with the server's pushes) and `view` (the JSON the
//! UI renders). The UI never sees keys or ciphertext; it calls commands and re-reads views when
//! told something changed.

/// Diagnostics to the browser console (the web client's equivalent of tracing output).
macro_rules! console_log {
    ($($arg:tt)*) => { web_sys::console::log_1(&wasm_bindgen::JsValue::from_str(&format!($($arg)*))) };
}
pub(crate) use console_log;

mod files;
mod persist;
mod search_index;
mod session;
mod stored;
mod stored_frozen;
mod view;
mod window;
mod ws;

use std::cell::RefCell;
use std::rc::Rc;

use anytime_client::e2ee::{DeviceCrypto, DeviceIdentity};
use anytime_proto::http::SessionResponse;
use futures_channel::{mpsc, oneshot};
use js_sys::Promise;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::persist::{Account, Persist};

/// UI actions waiting for the session (a user clicks far slower than this drains).
const COMMAND_QUEUE_LEN_MAX: usize = 256;
/// Pause between two steps of indexing old history in the background.
const INDEX_PAUSE_MS: u64 = 20;
/// How long the app must not have written before a step of background indexing runs.
const INDEX_QUIET_MS: u64 = 300;
/// Search results shown at most (newest first); a longer query narrows them.
const SEARCH_RESULTS_MAX: usize = 100;
use crate::session::{Cmd, Job};
use crate::view::View;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(callback: &js_sys::Function, ms: i32);
}

/// How long logging out waits for the server before wiping anyway.
const LOGOUT_WAIT_MS: u64 = 5_000;

/// Resolves after `ms` milliseconds (in a window or a worker).
pub(crate) async fn sleep(ms: u64) {
    let promise = Promise::new(&mut |resolve, _reject| set_timeout(&resolve, ms.min(i32::MAX as u64) as i32));
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

pub(crate) fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

/// 16 random bytes from the browser's CSPRNG.
pub(crate) fn random_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    // crypto.getRandomValues cannot fail for 16 bytes in any browser that runs wasm.
    let _ = getrandom_02::getrandom(&mut id);
    id
}

/// State shared by the page-facing [`App`] and the session task.
pub(crate) struct Shared {
    pub persist: Rc<Persist>,
    pub view: RefCell<View>,
    pub commands: RefCell<Option<mpsc::Sender<Job>>>,
    pub on_change: RefCell<Option<js_sys::Function>>,
}

impl Shared {
    /// Tells the UI what changed: `kind` is "chats", "timeline", "status", "message" (a new
    /// message from someone else, for notifications) or "signed_out".
    pub fn notify(&self, kind: &str, conv: Option<anytime_proto::ConvId>) {
        if let Some(callback) = self.on_change.borrow().as_ref() {
            let conv = conv.map(|c| JsValue::from_str(&c.to_string())).unwrap_or(JsValue::NULL);
            let _ = callback.call2(&JsValue::NULL, &JsValue::from_str(kind), &conv);
        }
    }
}

fn js_err(text: impl std::fmt::Display) -> JsValue {
    JsValue::from_str(&text.to_string())
}

/// The web client as the page sees it. Every command returns a Promise of a JSON string.
#[wasm_bindgen]
pub struct App {
    shared: Rc<Shared>,
}

/// Opens the local store (IndexedDB) of this browser. One tab at a time: if the app is open in
/// another tab, `on_waiting` is called and the promise resolves when that tab has closed.
#[wasm_bindgen(js_name = openApp)]
pub async fn open_app(on_waiting: js_sys::Function) -> Result<App, JsValue> {
    let persist = Persist::open(&on_waiting).await.map_err(js_err)?;
    let shared = Shared {
        persist: Rc::new(persist),
        view: RefCell::default(),
        commands: RefCell::default(),
        on_change: RefCell::default(),
    };
    wasm_bindgen_futures::spawn_local(index_backlog(shared.persist.clone()));
    Ok(App { shared: Rc::new(shared) })
}

/// Indexes histories stored before the search index existed, a few chunks at a time with a
/// pause between, so the page stays responsive while it runs.
async fn index_backlog(persist: Rc<Persist>) {
    loop {
        if persist.quiet_ms() < INDEX_QUIET_MS {
            // The session is busy (opening, catching up, sending): its writes go first.
            sleep(INDEX_QUIET_MS).await;
            continue;
        }
        match persist.index_step().await {
            Ok(true) => sleep(INDEX_PAUSE_MS).await,
            Ok(false) => return,
            Err(e) => {
                console_log!("search index: {e}");
                return;
            }
        }
    }
}

#[wasm_bindgen]
impl App {
    /// The signed-in account as JSON, or null.
    pub fn account(&self) -> JsValue {
        match &self.shared.persist.data.borrow().account {
            Some(a) => JsValue::from_str(&view::account_json(a).to_string()),
            None => JsValue::NULL,
        }
    }

    /// Stores a fresh device for a register/login answer (`session` is the server's JSON):
    /// makes its MLS identity and writes both to IndexedDB.
    pub fn enroll(&self, server: String, username: String, session: String) -> Promise {
        let shared = self.shared.clone();
        future_to_promise(async move {
            let session: SessionResponse =
                serde_json::from_str(&session).map_err(|e| js_err(format!("unreadable login answer: {e}")))?;
            let identity = DeviceIdentity { user: session.user_id, device: session.device_id };
            let crypto = DeviceCrypto::new(identity).map_err(js_err)?;
            let account = Account {
                server: server.trim_end_matches('/').to_owned(),
                token: session.token,
                user: session.user_id,
                device: session.device_id,
                username,
            };
            shared.persist.set_account(account, crypto.export());
            shared.persist.flush().await.map_err(js_err)?;
            Ok(JsValue::from_str(&serde_json::json!({"pending": session.link_code}).to_string()))
        })
    }

    /// Connects and keeps the session running (reconnecting with backoff); `on_change(kind,
    /// conv)` is called whenever something the UI shows changed.
    pub fn start(&self, on_change: js_sys::Function) {
        *self.shared.on_change.borrow_mut() = Some(on_change);
        if self.shared.commands.borrow().is_some() {
            return;
        }
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE_LEN_MAX);
        *self.shared.commands.borrow_mut() = Some(tx);
        wasm_bindgen_futures::spawn_local(session::run(self.shared.clone(), rx));
    }

    /// The session token, for the page's own HTTP calls (registering a Web Push endpoint).
    #[wasm_bindgen(js_name = sessionToken)]
    pub fn session_token(&self) -> Option<String> {
        self.shared.persist.data.borrow().account.as_ref().map(|a| a.token.clone())
    }

    /// "connecting", "online", "offline: …" or "signed_out".
    pub fn status(&self) -> String {
        self.shared.view.borrow().status.clone()
    }

    /// The chat list as JSON (newest activity first).
    pub fn chats(&self) -> String {
        view::chats_json(&self.shared).to_string()
    }

    /// One chat with its newest `limit` timeline entries as JSON (also the first unread one,
    /// and `include`, a message id to show — a search result).
    pub fn chat(&self, conv: String, limit: u32, include: Option<String>) -> String {
        let include = include.as_deref().and_then(view::parse_msg_id);
        match conv.parse() {
            Ok(conv) => view::chat_json(&self.shared, conv, limit as usize, include).to_string(),
            Err(_) => "null".to_owned(),
        }
    }

    /// Messages on this device with every word of `query` (as word beginnings), newest first:
    /// a Promise of JSON, from the search index in IndexedDB.
    pub fn search(&self, query: String) -> Promise {
        let shared = self.shared.clone();
        future_to_promise(async move {
            let hits = shared.persist.search(&query, SEARCH_RESULTS_MAX).await.map_err(js_err)?;
            Ok(JsValue::from_str(&view::search_json(&shared, &hits).to_string()))
        })
    }

    /// The local store's figures as JSON: how long opening it took, how many history entries
    /// are in memory (of how many stored, about) and the wasm memory's size. For the curious
    /// and the benchmarks (BENCHMARKS.md).
    pub fn stats(&self) -> String {
        use wasm_bindgen::JsCast;
        let persist = &self.shared.persist;
        let data = persist.data.borrow();
        let in_memory: usize = data.timelines.values().map(|t| t.entries.len()).sum();
        let on_disk_only: usize = data.windows.values().map(|w| w.base as usize * stored::CHUNK_ENTRIES).sum();
        let memory = wasm_bindgen::memory()
            .dyn_into::<js_sys::WebAssembly::Memory>()
            .map(|m| js_sys::ArrayBuffer::from(m.buffer()).byte_length())
            .unwrap_or(0);
        serde_json::json!({
            "opened_in_ms": persist.opened_in_ms.get(),
            "entries_in_memory": in_memory,
            "entries_stored": in_memory + on_disk_only,
            "wasm_memory_bytes": memory,
        })
        .to_string()
    }

    /// About how many messages are still being added to the search index (old history).
    pub fn unindexed(&self) -> u32 {
        self.shared.persist.unindexed() as u32
    }

    /// Starred messages of every chat, oldest first: a Promise of JSON (older parts of
    /// histories holding starred messages are loaded first).
    pub fn starred(&self) -> Promise {
        let shared = self.shared.clone();
        future_to_promise(async move {
            shared.persist.load_starred().await.map_err(js_err)?;
            Ok(JsValue::from_str(&view::starred_json(&shared).to_string()))
        })
    }

    /// Loads older messages of `conv` until at least `count` entries are in memory (or all of
    /// them): for "Load earlier messages". Resolves when `chat(conv, count)` can show them.
    #[wasm_bindgen(js_name = loadEarlier)]
    pub fn load_earlier(&self, conv: String, count: u32) -> Promise {
        let shared = self.shared.clone();
        future_to_promise(async move {
            let conv = conv.parse().map_err(|_| js_err("not a chat id"))?;
            let count = count as usize;
            shared.persist.load_older_until(conv, |t| t.entries.len() >= count).await.map_err(js_err)?;
            shared.persist.flush().await.map_err(js_err)?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Loads `conv` back to message `msg` (a search hit or a starred message in an older part
    /// of the history), so `chat(conv, limit, msg)` shows it.
    pub fn reveal(&self, conv: String, msg: String) -> Promise {
        let shared = self.shared.clone();
        future_to_promise(async move {
            let conv = conv.parse().map_err(|_| js_err("not a chat id"))?;
            let msg = view::parse_msg_id(&msg).ok_or_else(|| js_err("not a message id"))?;
            shared.persist.reveal(conv, msg).await.map_err(js_err)?;
            shared.persist.flush().await.map_err(js_err)?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// The username of `user` (hex id) if this device knows it.
    #[wasm_bindgen(js_name = nameOf)]
    pub fn name_of(&self, user: String) -> Option<String> {
        let user: anytime_proto::UserId = user.parse().ok()?;
        self.shared.view.borrow().names.get(&user).cloned()
    }

    /// The link in `text` a preview would be made for, if any.
    #[wasm_bindgen(js_name = linkIn)]
    pub fn link_in(&self, text: String) -> Option<String> {
        anytime_client::preview::first_link(&text).map(str::to_owned)
    }

    fn run(&self, cmd: Cmd) -> Promise {
        let sender = self.shared.commands.borrow().clone();
        future_to_promise(async move {
            let mut sender = sender.ok_or_else(|| js_err("not signed in"))?;
            let (tx, rx) = oneshot::channel();
            sender.try_send((cmd, tx)).map_err(|error| {
                if error.is_full() {
                    js_err("too many actions at once; try again in a moment")
                } else {
                    js_err("the session has ended; reload the page")
                }
            })?;
            match rx.await {
                Ok(Ok(value)) => Ok(JsValue::from_str(&value.to_string())),
                Ok(Err(error)) => Err(js_err(error)),
                Err(_) => Err(js_err("the connection dropped before the answer; try again")),
            }
        })
    }

    /// Forwards message `msg` of chat `from` to chat `to`.
    pub fn forward(&self, from: String, msg: String, to: String) -> Promise {
        self.run(Cmd::Forward { from, msg, to })
    }

    /// Sends the preview of `url` (the first link of the own message `msg`), made from `page`,
    /// the text this browser fetched; resolves to `{"preview": false}` when the page has none.
    pub fn preview(&self, conv: String, msg: String, url: String, page: String) -> Promise {
        self.run(Cmd::Preview { conv, msg, url, page })
    }

    /// Sends the payment message for a transfer the wallet made (`to`: the recipient's user id).
    #[wasm_bindgen(js_name = sendPayment)]
    pub fn send_payment(
        &self,
        conv: String,
        transfer: String,
        to: String,
        amount: String,
        currency: String,
        note: String,
    ) -> Promise {
        self.run(Cmd::Payment { conv, transfer, to, amount, currency, note })
    }

    /// Sends the chat message of a money request (`kind` "request", with `payer`), split bill
    /// ("split") or red envelope ("envelope", with `shares`) the wallet made as `id`.
    #[wasm_bindgen(js_name = sendMoneyMessage)]
    #[allow(clippy::too_many_arguments)]
    pub fn send_money_message(
        &self,
        conv: String,
        kind: String,
        id: String,
        payer: Option<String>,
        amount: String,
        currency: String,
        shares: u32,
        note: String,
    ) -> Promise {
        self.run(Cmd::MoneyMessage { conv, kind, id, payer, amount, currency, shares, note })
    }

    /// Sends the chat message of a file the page sealed (`FileSealer`) and uploaded: `fields`
    /// is JSON `{blob, key, digest, size, name, mime, caption}`.
    #[wasm_bindgen(js_name = sendAttachment)]
    pub fn send_attachment(&self, conv: String, fields: String) -> Promise {
        self.run(Cmd::Attachment { conv, fields })
    }

    /// An opener for the file of message `msg` in `conv`, for the page to feed the download to.
    #[wasm_bindgen(js_name = attachmentOpener)]
    pub fn attachment_opener(&self, conv: String, msg: String) -> Result<files::FileOpener, JsValue> {
        let conv: anytime_proto::ConvId = conv.parse().map_err(|_| js_err("not a chat id"))?;
        let msg = view::parse_msg_id(&msg).ok_or_else(|| js_err("not a message id"))?;
        let data = self.shared.persist.data.borrow();
        let entry = data.timelines.get(&conv).and_then(|t| t.find(msg));
        let attachment = entry
            .and_then(|e| e.attachment.clone())
            .ok_or_else(|| js_err("that message has no file on this device"))?;
        Ok(files::FileOpener::new(attachment))
    }

    pub fn star(&self, conv: String, msg: String, starred: bool) -> Promise {
        self.run(Cmd::Star { conv, msg, starred })
    }

    /// Deletes a message from this browser only.
    #[wasm_bindgen(js_name = deleteForMe)]
    pub fn delete_for_me(&self, conv: String, msg: String) -> Promise {
        self.run(Cmd::DeleteForMe { conv, msg })
    }

    pub fn direct(&self, username: String) -> Promise {
        self.run(Cmd::Direct(username))
    }

    pub fn group(&self, name: String, members: Vec<String>) -> Promise {
        self.run(Cmd::Group(name, members))
    }

    /// Sends a text, or a reply when `reply_to` (a message id) is given.
    pub fn send(&self, conv: String, text: String, reply_to: Option<String>) -> Promise {
        self.run(Cmd::Send { conv, text, reply_to })
    }

    pub fn react(&self, conv: String, msg: String, emoji: String, remove: bool) -> Promise {
        self.run(Cmd::React { conv, msg, emoji, remove })
    }

    pub fn edit(&self, conv: String, msg: String, text: String) -> Promise {
        self.run(Cmd::Edit { conv, msg, text })
    }

    pub fn delete(&self, conv: String, msg: String) -> Promise {
        self.run(Cmd::Delete { conv, msg })
    }

    /// Marks the chat read here and tells the senders (read receipts).
    /// Takes a message request into the chat list (and marks it read).
    pub fn accept(&self, conv: String) -> Promise {
        self.run(Cmd::Accept(conv))
    }

    /// Deletes a message request; `block` also blocks whoever wrote in it.
    pub fn decline(&self, conv: String, block: bool) -> Promise {
        self.run(Cmd::Decline(conv, block))
    }

    #[wasm_bindgen(js_name = markRead)]
    pub fn mark_read(&self, conv: String) -> Promise {
        self.run(Cmd::MarkRead(conv))
    }

    pub fn typing(&self, conv: String) -> Promise {
        self.run(Cmd::Typing(conv))
    }

    #[wasm_bindgen(js_name = setTimer)]
    pub fn set_timer(&self, conv: String, seconds: u32) -> Promise {
        self.run(Cmd::Timer(conv, seconds))
    }

    pub fn rename(&self, conv: String, name: String) -> Promise {
        self.run(Cmd::Rename(conv, name))
    }

    #[wasm_bindgen(js_name = addMembers)]
    pub fn add_members(&self, conv: String, usernames: Vec<String>) -> Promise {
        self.run(Cmd::Add(conv, usernames))
    }

    #[wasm_bindgen(js_name = removeMember)]
    pub fn remove_member(&self, conv: String, user: String) -> Promise {
        self.run(Cmd::Remove(conv, user))
    }

    #[wasm_bindgen(js_name = setAdmin)]
    pub fn set_admin(&self, conv: String, user: String, admin: bool) -> Promise {
        self.run(Cmd::Admin(conv, user, admin))
    }

    pub fn leave(&self, conv: String) -> Promise {
        self.run(Cmd::Leave(conv))
    }

    pub fn invite(&self, conv: String) -> Promise {
        self.run(Cmd::Invite(conv))
    }

    pub fn join(&self, code: String) -> Promise {
        self.run(Cmd::Join(code))
    }

    /// Safety number with the other member of a direct chat.
    pub fn safety(&self, conv: String) -> Promise {
        self.run(Cmd::Safety(conv, false))
    }

    /// Marks the current safety number of a direct chat's peer as verified.
    pub fn verify(&self, conv: String) -> Promise {
        self.run(Cmd::Safety(conv, true))
    }

    pub fn devices(&self) -> Promise {
        self.run(Cmd::Devices)
    }

    pub fn approve(&self, code: String) -> Promise {
        self.run(Cmd::Approve(code))
    }

    pub fn revoke(&self, device: String) -> Promise {
        self.run(Cmd::Revoke(device))
    }

    /// "everyone", "contacts" or "nobody".
    #[wasm_bindgen(js_name = setPresencePrivacy)]
    pub fn set_presence_privacy(&self, privacy: String) -> Promise {
        self.run(Cmd::Privacy(privacy))
    }

    /// Ends this device's session on the server and wipes everything local.
    pub fn logout(&self) -> Promise {
        let shared = self.shared.clone();
        let ended = self.run(Cmd::Logout);
        future_to_promise(async move {
            // Wiping must happen even when the server cannot be reached: wait for the server's
            // answer at most a few seconds.
            let answered = Box::pin(wasm_bindgen_futures::JsFuture::from(ended));
            let _ = futures_util::future::select(answered, Box::pin(sleep(LOGOUT_WAIT_MS))).await;
            shared.commands.borrow_mut().take();
            shared.persist.wipe().await.map_err(js_err)?;
            Ok(JsValue::from_str("{}"))
        })
    }
}
