//! The session task: owns the client core and the connection, and handles the UI's commands and
//! the server's pushes one at a time (the core's state is never touched by two at once). On a
//! lost connection it reconnects with backoff and resumes from the stored cursors.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use anytime_client::content::{self, Content, ReceiptKind};
use anytime_client::e2ee::DeviceCrypto;
use anytime_client::{Client, ClientError, Event, StoreError};
use anytime_proto::frame::{self, PresencePrivacy};
use anytime_proto::{ConvId, DeviceId, ErrorCode, MsgId, ServerFrame, UserId};
use futures_channel::{mpsc, oneshot};
use futures_util::future::{select, Either};
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::persist::WebStore;
use crate::view::{hex, parse_msg_id};
use crate::ws::WsTransport;
use crate::{now_ms, random_id, sleep, Shared};

/// Quiet time after which catching up counts as done.
const IDLE_MS: u64 = 300;
/// How long a "typing…" indicator stays without a new typing event.
const TYPING_SHOWN_MS: u64 = 6_000;
const BACKOFF_MAX_MS: u64 = 10_000;

pub(crate) enum Cmd {
    Direct(String),
    Group(String, Vec<String>),
    Send {
        conv: String,
        text: String,
        reply_to: Option<String>,
    },
    React {
        conv: String,
        msg: String,
        emoji: String,
        remove: bool,
    },
    Edit {
        conv: String,
        msg: String,
        text: String,
    },
    Delete {
        conv: String,
        msg: String,
    },
    /// Send a message of one chat to another, marked as forwarded.
    Forward {
        from: String,
        msg: String,
        to: String,
    },
    /// The preview of the first link in an own message, from the page this browser fetched.
    Preview {
        conv: String,
        msg: String,
        url: String,
        page: String,
    },
    /// Tell the chat about a payment the wallet made (the note stays end to end encrypted).
    Payment {
        conv: String,
        transfer: String,
        to: String,
        amount: String,
        currency: String,
        note: String,
    },
    /// Tell the chat about a money request ("request"), split bill ("split") or red envelope
    /// ("envelope") the wallet made.
    MoneyMessage {
        conv: String,
        kind: String,
        id: String,
        payer: Option<String>,
        amount: String,
        currency: String,
        shares: u32,
        note: String,
    },
    /// Tell the chat about a file the page sealed and uploaded (`files::AttachmentFields`, JSON).
    Attachment {
        conv: String,
        fields: String,
    },
    /// Star or unstar a message (on this device only).
    Star {
        conv: String,
        msg: String,
        starred: bool,
    },
    /// Delete a message from this device only.
    DeleteForMe {
        conv: String,
        msg: String,
    },
    MarkRead(String),
    /// Take a message request into the chat list.
    Accept(String),
    /// Delete a message request (and block whoever sent it, if `true`).
    Decline(String, bool),
    Typing(String),
    Timer(String, u32),
    Rename(String, String),
    Add(String, Vec<String>),
    Remove(String, String),
    Admin(String, String, bool),
    Leave(String),
    Invite(String),
    Join(String),
    Safety(String, bool),
    Devices,
    Approve(String),
    Revoke(String),
    Privacy(String),
    Logout,
}

pub(crate) type Job = (Cmd, oneshot::Sender<Result<Value, String>>);

/// Why a connected session ended.
enum Ended {
    /// The page dropped the App, or the user logged out.
    Stopped,
    /// The server will not take this session again (revoked, expired).
    SignedOut(String),
    /// Worth reconnecting.
    Lost(String),
}

fn ended(error: ClientError) -> Ended {
    match error {
        ClientError::Server { code: ErrorCode::InvalidToken | ErrorCode::TokenExpired } => {
            Ended::SignedOut("this device's session ended; sign in again".into())
        }
        ClientError::Server { code: ErrorCode::DeviceNotApproved } => {
            Ended::Lost("this device waits for approval from one of your other devices".into())
        }
        other => Ended::Lost(other.to_string()),
    }
}

pub(crate) async fn run(shared: Rc<Shared>, mut commands: mpsc::Receiver<Job>) {
    // One client core for the page's life: messages written while offline are encrypted into
    // its outbox and go out when the connection is back.
    let mut client = match open_client(&shared) {
        Ok(client) => client,
        Err(Ended::SignedOut(reason)) => return signed_out(&shared, reason),
        Err(_) => return,
    };
    let mut backoff = 500;
    loop {
        set_status(&shared, "connecting".into());
        let ended;
        (client, ended) = connect_and_serve(&shared, client, &mut commands).await;
        match ended {
            Ended::Stopped => return,
            Ended::SignedOut(reason) => return signed_out(&shared, reason),
            Ended::Lost(reason) => set_status(&shared, format!("offline: {reason}")),
        }
        if !offline(&shared, &mut client, &mut commands, backoff).await {
            return;
        }
        backoff = (backoff * 2).min(BACKOFF_MAX_MS);
    }
}

fn signed_out(shared: &Shared, reason: String) {
    set_status(shared, format!("signed_out: {reason}"));
    shared.notify("signed_out", None);
}

fn open_client(shared: &Shared) -> Result<Client<WebStore>, Ended> {
    if shared.persist.data.borrow().account.is_none() {
        return Err(Ended::SignedOut("not signed in".into()));
    }
    let crypto = shared.persist.data.borrow().crypto.clone();
    match DeviceCrypto::import(&crypto) {
        Ok(crypto) => Ok(Client::new(crypto, WebStore(shared.persist.clone()))),
        Err(e) => Err(Ended::SignedOut(format!("the stored keys are unreadable ({e}); sign in again"))),
    }
}

/// Until `wait_ms` passed: messages written now wait in the outbox (shown as pending), other
/// commands fail at once instead of hanging. `false` when the page dropped the app.
async fn offline(
    shared: &Rc<Shared>,
    client: &mut Client<WebStore>,
    commands: &mut mpsc::Receiver<Job>,
    wait_ms: u64,
) -> bool {
    let mut retry = Box::pin(sleep(wait_ms));
    loop {
        let job = match select(commands.next(), retry).await {
            Either::Left((Some(job), pending)) => {
                retry = pending;
                job
            }
            Either::Left((None, _)) => return false,
            Either::Right(((), _)) => return true,
        };
        let (cmd, reply) = job;
        let answer = if let Some(done) = local_command(shared, client, &cmd) {
            match done {
                Ok(value) => shared.persist.flush().await.map(|()| value),
                Err(error) => Err(describe(&error)),
            }
        } else {
            match outgoing_content(shared, &cmd) {
                Some(Ok((conv, content))) => queue_offline(shared, client, conv, content).await,
                Some(Err(error)) => Err(describe(&error)),
                None => Err("offline: not connected to the server; retrying".into()),
            }
        };
        let _ = reply.send(answer);
    }
}

async fn queue_offline(
    shared: &Shared,
    client: &mut Client<WebStore>,
    conv: ConvId,
    content: Content,
) -> Result<Value, String> {
    let id = MsgId(random_id());
    client.queue(conv, &content, id).map_err(|e| describe(&e))?;
    shared.persist.flush().await?;
    shared.notify("timeline", Some(conv));
    Ok(json!({"msg_id": hex(&id.0), "pending": true}))
}

/// Commands that change only this device's history (they work offline too); `None` for others.
fn local_command(shared: &Shared, client: &mut Client<WebStore>, cmd: &Cmd) -> Option<Result<Value, ClientError>> {
    let (conv, msg) = match cmd {
        Cmd::Star { conv, msg, .. } | Cmd::DeleteForMe { conv, msg } => (conv, msg),
        _ => return None,
    };
    let done = (|| {
        let (conv, msg) = (conv_id(conv)?, msg_id(msg)?);
        if shared.persist.data.borrow().timelines.get(&conv).and_then(|t| t.find(msg)).is_none() {
            return Err(ClientError::Protocol("that message is not on this device".into()));
        }
        match cmd {
            Cmd::Star { starred, .. } => client.star(conv, msg, *starred)?,
            _ => client.delete_for_me(conv, msg)?,
        }
        shared.notify("timeline", Some(conv));
        shared.notify("chats", None);
        Ok(json!({}))
    })();
    Some(done)
}

/// The members of `conv` other than me, by username, for `content::mentioned`.
fn members_by_name(shared: &Shared, conv: ConvId) -> Vec<(UserId, String)> {
    let view = shared.view.borrow();
    let me = shared.persist.data.borrow().account.as_ref().map(|a| a.user);
    let Some(info) = view.chats.get(&conv) else { return Vec::new() };
    info.members
        .iter()
        .filter(|m| Some(m.user) != me)
        .filter_map(|m| view.names.get(&m.user).map(|name| (m.user, name.clone())))
        .collect()
}

/// The message a command writes, if it writes one (those can be queued while offline).
fn outgoing_content(shared: &Shared, cmd: &Cmd) -> Option<Result<(ConvId, Content), ClientError>> {
    let content = |conv: &str, make: &dyn Fn(ConvId) -> Result<Content, ClientError>| {
        Some(conv_id(conv).and_then(|conv| Ok((conv, make(conv)?))))
    };
    match cmd {
        Cmd::Send { conv, text, reply_to } => content(conv, &|conv| {
            let members = members_by_name(shared, conv);
            let mentions = content::mentioned(text, members.iter().map(|(user, name)| (*user, name.as_str())));
            Ok(match reply_to {
                Some(to) => Content::Reply(content::Reply { to: msg_id(to)?, body: text.clone(), mentions }),
                None => Content::Text(content::Text { body: text.clone(), mentions }),
            })
        }),
        Cmd::Forward { from, msg, to } => content(to, &|_| {
            let (from, msg) = (conv_id(from)?, msg_id(msg)?);
            let data = shared.persist.data.borrow();
            let entry = data.timelines.get(&from).and_then(|t| t.find(msg));
            let entry = entry.ok_or_else(|| ClientError::Protocol("that message is not on this device".into()))?;
            entry.forward().ok_or_else(|| ClientError::Protocol("that message has no text to forward".into()))
        }),
        Cmd::Attachment { conv, fields } => content(conv, &|_| {
            let fields: crate::files::AttachmentFields = serde_json::from_str(fields)
                .map_err(|e| ClientError::Protocol(format!("the file's description is malformed: {e}")))?;
            crate::files::attachment(fields).map(|a| Content::Attachment(Box::new(a))).map_err(ClientError::Protocol)
        }),
        Cmd::Payment { conv, transfer, to, amount, currency, note } => content(conv, &|_| {
            Ok(Content::Payment(content::Payment {
                transfer: transfer.clone(),
                to: user_id(to)?,
                amount: amount.clone(),
                currency: currency.clone(),
                note: note.clone(),
            }))
        }),
        Cmd::MoneyMessage { conv, kind, id, payer, amount, currency, shares, note } => content(conv, &|_| {
            let (id, amount, currency, note) = (id.clone(), amount.clone(), currency.clone(), note.clone());
            Ok(match kind.as_str() {
                "request" => {
                    let payer = user_id(payer.as_deref().unwrap_or_default())?;
                    Content::MoneyRequest(content::MoneyRequest { id, payer, amount, currency, note })
                }
                "split" => Content::SplitBill(content::SplitBill { id, total: amount, currency, note }),
                "envelope" => {
                    Content::RedEnvelope(content::RedEnvelope { id, total: amount, currency, shares: *shares, note })
                }
                other => return Err(ClientError::Protocol(format!("{other:?} is not a money message"))),
            })
        }),
        Cmd::React { conv, msg, emoji, remove } => content(conv, &|_| {
            Ok(Content::Reaction(content::Reaction { to: msg_id(msg)?, emoji: emoji.clone(), remove: *remove }))
        }),
        Cmd::Edit { conv, msg, text } => {
            content(conv, &|_| Ok(Content::Edit(content::Edit { to: msg_id(msg)?, body: text.clone() })))
        }
        Cmd::Delete { conv, msg } => content(conv, &|_| Ok(Content::Delete(content::Delete { to: msg_id(msg)? }))),
        _ => None,
    }
}

fn set_status(shared: &Shared, status: String) {
    shared.view.borrow_mut().status = status;
    shared.notify("status", None);
}

async fn connect_and_serve(
    shared: &Rc<Shared>,
    client: Client<WebStore>,
    commands: &mut mpsc::Receiver<Job>,
) -> (Client<WebStore>, Ended) {
    let Some(account) = shared.persist.data.borrow().account.clone() else {
        return (client, Ended::SignedOut("not signed in".into()));
    };
    let url = format!("{}/v1/ws", account.server.replacen("http", "ws", 1));
    let net = match WsTransport::connect(&url, &account.token, shared.persist.clone()).await {
        Ok(net) => net,
        Err(e) => return (client, ended(e)),
    };
    let mut s = Session { client, net, shared: shared.clone(), last_send: None };
    let ended = s.serve(commands).await;
    (s.client, ended)
}

impl Session {
    async fn serve(&mut self, commands: &mut mpsc::Receiver<Job>) -> Ended {
        if let Err(e) = self.catch_up().await {
            return ended(e);
        }
        if let Err(e) = self.after_batch().await {
            return ended(e);
        }
        set_status(&self.shared, "online".into());
        loop {
            let next = select(commands.next(), self.net.pushes.next()).await;
            let result = match next {
                Either::Left((None, _)) => return Ended::Stopped,
                Either::Left((Some((Cmd::Logout, reply)), _)) => {
                    let answer = self.net_request(frame::Logout {}.into()).await;
                    let _ = reply.send(answer.map(|_| json!({})).map_err(|e| e.to_string()));
                    self.net.close();
                    return Ended::Stopped;
                }
                Either::Left((Some((cmd, reply)), _)) => {
                    self.last_send = None;
                    let answer = self.command(cmd).await;
                    if let Err(error) = &answer {
                        crate::console_log!("command failed: {error}");
                    }
                    let lost = matches!(answer, Err(ClientError::Transport(_)));
                    let answer = match (lost, self.last_send) {
                        // The connection dropped after the message was encrypted into the
                        // outbox: it is pending, and goes out after reconnecting.
                        (true, Some(id)) if self.is_queued(id) => {
                            self.shared.notify("timeline", None);
                            Ok(json!({"msg_id": hex(&id.0), "pending": true}))
                        }
                        _ => answer.map_err(|e| describe(&e)),
                    };
                    let _ = reply.send(answer);
                    if lost {
                        return Ended::Lost("the connection dropped".into());
                    }
                    Ok(())
                }
                Either::Right((Some(push), _)) => self.push(push).await,
                Either::Right((None, _)) => return Ended::Lost("the connection closed".into()),
            };
            if let Err(e) = result {
                return ended(e);
            }
            if let Err(e) = self.after_batch().await {
                return ended(e);
            }
        }
    }

    fn is_queued(&self, id: MsgId) -> bool {
        self.shared.persist.data.borrow().meta.outbox.iter().any(|(_, queued, _)| *queued == id)
    }
}

fn describe(error: &ClientError) -> String {
    match error {
        ClientError::Server { code: ErrorCode::UserNotFound } => "there is no user with that name".into(),
        ClientError::Server { code: ErrorCode::NotAdmin } => "only admins of this group can do that".into(),
        other => other.to_string(),
    }
}

struct Session {
    client: Client<WebStore>,
    net: WsTransport,
    shared: Rc<Shared>,
    /// The id of the message the current command is sending, if any.
    last_send: Option<MsgId>,
}

fn conv_id(text: &str) -> Result<ConvId, ClientError> {
    text.parse().map_err(|_| ClientError::Protocol(format!("{text:?} is not a chat id")))
}

fn user_id(text: &str) -> Result<UserId, ClientError> {
    text.parse().map_err(|_| ClientError::Protocol(format!("{text:?} is not a user id")))
}

fn msg_id(text: &str) -> Result<MsgId, ClientError> {
    parse_msg_id(text).ok_or_else(|| ClientError::Protocol(format!("{text:?} is not a message id")))
}

fn refused(frame: ServerFrame) -> ClientError {
    match frame {
        ServerFrame::Error(e) => ClientError::Server { code: e.code },
        other => ClientError::Protocol(format!("unexpected answer {other:?}")),
    }
}

impl Session {
    async fn net_request(&mut self, frame: anytime_proto::ClientFrame) -> Result<ServerFrame, ClientError> {
        use anytime_client::Transport;
        self.net.request(frame).await
    }

    async fn conversation(
        &mut self,
        frame: anytime_proto::ClientFrame,
    ) -> Result<frame::ConversationInfo, ClientError> {
        match self.net_request(frame).await? {
            ServerFrame::ConversationInfo(info) => Ok(info),
            other => Err(refused(other)),
        }
    }

    async fn done(&mut self, frame: anytime_proto::ClientFrame) -> Result<(), ClientError> {
        match self.net_request(frame).await? {
            ServerFrame::Done(_) => Ok(()),
            other => Err(refused(other)),
        }
    }

    async fn user_by_name(&mut self, username: &str) -> Result<UserId, ClientError> {
        match self.net_request(frame::LookupUser { username: username.trim().to_owned() }.into()).await? {
            ServerFrame::Profile(p) => {
                self.shared.view.borrow_mut().names.insert(p.user, p.username);
                Ok(p.user)
            }
            other => Err(refused(other)),
        }
    }

    /// Processes what is pending, repairs groups, refreshes the chat list and presence.
    async fn catch_up(&mut self) -> Result<(), ClientError> {
        self.client.catch_up(&mut self.net, IDLE_MS).await?;
        let list = match self.net_request(frame::ListConversations {}.into()).await? {
            ServerFrame::Conversations(c) => c.conversations,
            other => return Err(refused(other)),
        };
        let listed: BTreeSet<ConvId> = list.iter().map(|c| c.conv).collect();
        self.shared.view.borrow_mut().chats.retain(|conv, _| listed.contains(conv));
        for conv in listed {
            // A chat nobody has started the group of yet (its creator went away first).
            if !self.client.has_group(conv) {
                self.client.reconcile(&mut self.net, conv).await?;
            }
            self.refresh_chat(conv).await?;
        }
        self.subscribe_presence().await?;
        if !self.shared.persist.data.borrow().chat_state.initialized {
            let chats: Vec<ConvId> = self.shared.view.borrow().chats.keys().copied().collect();
            let mut data = self.shared.persist.data.borrow_mut();
            data.chat_state.accepted.extend(chats);
            data.chat_state.initialized = true;
            self.shared.persist.touch_meta();
        }
        self.shared.notify("chats", None);
        Ok(())
    }

    /// Re-reads one conversation's members and name (and learns usernames it lacks).
    async fn refresh_chat(&mut self, conv: ConvId) -> Result<(), ClientError> {
        let info = match self.net_request(frame::GetConversation { conv }.into()).await? {
            ServerFrame::ConversationInfo(info) => info,
            ServerFrame::Error(_) => {
                self.shared.view.borrow_mut().chats.remove(&conv);
                return Ok(());
            }
            other => return Err(refused(other)),
        };
        for member in &info.members {
            if self.shared.view.borrow().names.contains_key(&member.user) {
                continue;
            }
            if let ServerFrame::Profile(p) = self.net_request(frame::GetProfile { user: member.user }.into()).await? {
                self.shared.view.borrow_mut().names.insert(p.user, p.username);
            }
        }
        let direct = info.kind == frame::ConvKind::Direct;
        self.shared.view.borrow_mut().chats.insert(conv, info);
        if direct && self.client.has_group(conv) {
            // Key-change warning: compare with the number the user verified, if any.
            let changed = self.safety(conv, false)?["changed"].as_bool().unwrap_or(false);
            self.shared.view.borrow_mut().safety_changed.insert(conv, changed);
        }
        Ok(())
    }

    /// Presence of everyone this account shares a chat with.
    async fn subscribe_presence(&mut self) -> Result<(), ClientError> {
        let me = self.client.me().user;
        let users: BTreeSet<UserId> = self
            .shared
            .view
            .borrow()
            .chats
            .values()
            .flat_map(|c| c.members.iter().map(|m| m.user))
            .filter(|u| *u != me)
            .collect();
        let answer = self.net_request(frame::SubscribePresence { users: users.into_iter().collect() }.into()).await?;
        if let ServerFrame::PresenceList(list) = answer {
            let mut view = self.shared.view.borrow_mut();
            for p in list.presence {
                view.presence.insert(p.user, (p.online, p.last_seen_ms));
            }
        }
        Ok(())
    }

    async fn push(&mut self, push: ServerFrame) -> Result<(), ClientError> {
        match push {
            ServerFrame::TypingEvent(t) => {
                if t.user != self.client.me().user {
                    let until = now_ms() + TYPING_SHOWN_MS;
                    self.shared.view.borrow_mut().typing.insert((t.conv, t.user), until);
                    self.shared.notify("timeline", Some(t.conv));
                }
                Ok(())
            }
            ServerFrame::PresenceEvent(p) => {
                self.shared.view.borrow_mut().presence.insert(p.user, (p.online, p.last_seen_ms));
                self.shared.notify("chats", None);
                Ok(())
            }
            ServerFrame::SessionRevoked(_) => Err(ClientError::Server { code: ErrorCode::InvalidToken }),
            other => {
                let events = self.client.handle_push_and_repair(&mut self.net, other).await?;
                self.follow_up(events).await
            }
        }
    }

    /// Membership changes (groups already repaired by the core) need the chat list refreshed;
    /// a commit by another member may also have changed who is in the chat.
    async fn follow_up(&mut self, events: Vec<Event>) -> Result<(), ClientError> {
        let mut changed = BTreeSet::new();
        let mut commits = BTreeSet::new();
        for event in events {
            match event {
                Event::ConversationChanged { conv, removed: true } => {
                    self.shared.view.borrow_mut().chats.remove(&conv);
                    self.shared.notify("chats", None);
                }
                Event::ConversationChanged { conv, removed: false }
                | Event::Joined { conv }
                | Event::Rejoined { conv, .. } => {
                    changed.insert(conv);
                }
                Event::GroupChanged { conv, removed_self: false, .. } => {
                    changed.insert(conv);
                    commits.insert(conv);
                }
                _ => {}
            }
        }
        let new_people = changed.iter().any(|c| !self.shared.view.borrow().chats.contains_key(c));
        for conv in changed {
            if commits.contains(&conv) {
                self.client.reconcile(&mut self.net, conv).await?;
            }
            self.refresh_chat(conv).await?;
            self.shared.notify("chats", Some(conv));
        }
        if new_people {
            self.subscribe_presence().await?;
        }
        Ok(())
    }

    /// After each command or push: acknowledge delivery of new messages (delivery receipts),
    /// write what changed to IndexedDB and tell the UI.
    async fn after_batch(&mut self) -> Result<(), ClientError> {
        let recorded = std::mem::take(&mut *self.shared.persist.recorded.borrow_mut());
        let mut delivered: BTreeMap<ConvId, Vec<MsgId>> = BTreeMap::new();
        let mut touched = BTreeSet::new();
        for event in &recorded {
            if let Event::Message { conv, msg_id, own, content, sender, .. } = event {
                touched.insert(*conv);
                if !own {
                    // Whoever sent something has stopped typing it.
                    self.shared.view.borrow_mut().typing.remove(&(*conv, sender.user));
                }
                if !own && content.is_message() {
                    delivered.entry(*conv).or_default().push(*msg_id);
                    self.shared.notify("message", Some(*conv));
                }
            } else if let Event::Undecryptable { conv, .. } = event {
                touched.insert(*conv);
            }
        }
        for (conv, messages) in delivered {
            let receipt = Content::Receipt(content::Receipt { kind: ReceiptKind::Delivered, messages });
            self.send_content(conv, receipt).await?;
        }
        // Also loads whole any history that collected too many effects on older messages.
        self.shared.persist.settle().await.map_err(|e| ClientError::Store(StoreError(e)))?;
        for conv in touched {
            self.shared.notify("timeline", Some(conv));
        }
        if !recorded.is_empty() {
            self.shared.notify("chats", None);
        }
        Ok(())
    }

    async fn send_content(&mut self, conv: ConvId, content: Content) -> Result<Value, ClientError> {
        let id = MsgId(random_id());
        self.last_send = Some(id);
        let (seq, events) = self.client.send_or_catch_up(&mut self.net, conv, content, id, IDLE_MS).await?;
        self.follow_up(events).await?;
        Ok(json!({"msg_id": hex(&id.0), "seq": seq}))
    }

    async fn command(&mut self, cmd: Cmd) -> Result<Value, ClientError> {
        match cmd {
            Cmd::Direct(username) => {
                let peer = self.user_by_name(&username).await?;
                let info = self.conversation(frame::CreateDirect { peer }.into()).await?;
                self.client.establish(&mut self.net, &info).await?;
                self.opened(info.conv).await
            }
            Cmd::Group(name, members) => {
                let mut users = Vec::new();
                for m in members.iter().filter(|m| !m.trim().is_empty()) {
                    users.push(self.user_by_name(m).await?);
                }
                let info = self.conversation(frame::CreateGroup { name, members: users }.into()).await?;
                self.client.establish(&mut self.net, &info).await?;
                self.opened(info.conv).await
            }
            Cmd::Star { .. } | Cmd::DeleteForMe { .. } => match local_command(&self.shared, &mut self.client, &cmd) {
                Some(done) => done,
                None => Err(ClientError::Protocol("not a local change".into())),
            },
            Cmd::Preview { conv, msg, url, page } => {
                let (conv, msg) = (conv_id(&conv)?, msg_id(&msg)?);
                match anytime_client::preview::from_page(msg, &url, &page) {
                    Some(preview) => {
                        self.send_content(conv, Content::LinkPreview(preview)).await?;
                        Ok(json!({"preview": true}))
                    }
                    None => Ok(json!({"preview": false})),
                }
            }
            Cmd::Send { .. }
            | Cmd::React { .. }
            | Cmd::Edit { .. }
            | Cmd::Delete { .. }
            | Cmd::Forward { .. }
            | Cmd::Payment { .. }
            | Cmd::MoneyMessage { .. }
            | Cmd::Attachment { .. } => {
                match outgoing_content(&self.shared, &cmd) {
                    Some(writes) => {
                        let (conv, content) = writes?;
                        self.send_content(conv, content).await
                    }
                    None => Err(ClientError::Protocol("not a message".into())),
                }
            }
            Cmd::MarkRead(conv) => self.mark_read(conv_id(&conv)?).await,
            Cmd::Typing(conv) => {
                use anytime_client::Transport;
                let conv = conv_id(&conv)?;
                if !self.is_request(conv) {
                    self.net.notify(frame::Typing { conv }.into()).await?;
                }
                Ok(json!({}))
            }
            Cmd::Accept(conv) => {
                let conv = conv_id(&conv)?;
                self.accept(conv);
                // What arrived while it was a request counts as read now: say so.
                self.mark_read(conv).await
            }
            Cmd::Decline(conv, block) => {
                let conv = conv_id(&conv)?;
                let me = self.client.me().user;
                let (group, writers) = {
                    let view = self.shared.view.borrow();
                    let data = self.shared.persist.data.borrow();
                    let group = view.chats.get(&conv).is_some_and(|c| c.kind == frame::ConvKind::Group);
                    let writers: BTreeSet<UserId> = data.writers(conv).filter(|u| *u != me).collect();
                    (group, writers)
                };
                if block {
                    for user in writers {
                        self.done(frame::Block { user }.into()).await?;
                    }
                }
                if group {
                    self.leave(conv).await?;
                } else {
                    // A direct chat cannot be left: its history goes, and it stays hidden until
                    // someone writes in it again.
                    self.shared.persist.forget_history(conv);
                    let mut data = self.shared.persist.data.borrow_mut();
                    data.chat_state.declined.insert(conv);
                    data.chat_state.accepted.remove(&conv);
                    self.shared.persist.touch_meta();
                }
                self.shared.notify("chats", None);
                Ok(json!({}))
            }
            Cmd::Timer(conv, seconds) => {
                self.send_content(conv_id(&conv)?, Content::Timer(content::Timer { seconds })).await
            }
            Cmd::Rename(conv, name) => {
                let conv = conv_id(&conv)?;
                self.done(frame::RenameGroup { conv, name }.into()).await?;
                self.opened(conv).await
            }
            Cmd::Add(conv, usernames) => {
                let conv = conv_id(&conv)?;
                let mut users = Vec::new();
                for name in usernames.iter().filter(|m| !m.trim().is_empty()) {
                    users.push(self.user_by_name(name).await?);
                }
                let info = self.conversation(frame::AddMembers { conv, users }.into()).await?;
                self.client.establish(&mut self.net, &info).await?;
                self.opened(conv).await
            }
            Cmd::Remove(conv, user) => {
                let (conv, user) = (conv_id(&conv)?, user_id(&user)?);
                self.done(frame::RemoveMember { conv, user }.into()).await?;
                self.client.remove_user_from_group(&mut self.net, conv, user).await?;
                self.opened(conv).await
            }
            Cmd::Admin(conv, user, admin) => {
                let (conv, user) = (conv_id(&conv)?, user_id(&user)?);
                self.done(frame::SetAdmin { conv, user, admin }.into()).await?;
                self.opened(conv).await
            }
            Cmd::Leave(conv) => self.leave(conv_id(&conv)?).await,
            Cmd::Invite(conv) => {
                let conv = conv_id(&conv)?;
                let request = frame::CreateInvite { conv, ttl_secs: 7 * 86_400, max_uses: 50 };
                match self.net_request(request.into()).await? {
                    ServerFrame::Invite(i) => Ok(json!({"code": i.code, "expires_at_ms": i.expires_at_ms})),
                    other => Err(refused(other)),
                }
            }
            Cmd::Join(code) => {
                let code = code.trim().rsplit(['#', '/', '=']).next().unwrap_or_default().to_owned();
                let info = self.conversation(frame::JoinInvite { code }.into()).await?;
                self.accept(info.conv);
                self.refresh_chat(info.conv).await?;
                self.subscribe_presence().await?;
                self.shared.notify("chats", None);
                Ok(json!({"conv": info.conv.to_string()}))
            }
            Cmd::Safety(conv, verify) => self.safety(conv_id(&conv)?, verify),
            Cmd::Devices => match self.net_request(frame::ListDevices {}.into()).await? {
                ServerFrame::Devices(d) => Ok(Value::Array(
                    d.devices
                        .into_iter()
                        .map(|d| {
                            json!({"device": d.device.to_string(), "name": d.name, "current": d.current,
                                "approved": d.approved, "last_seen_ms": d.last_seen_ms, "created_at_ms": d.created_at_ms})
                        })
                        .collect(),
                )),
                other => Err(refused(other)),
            },
            Cmd::Approve(code) => {
                self.done(frame::ApproveDevice { code: code.trim().to_owned() }.into()).await?;
                Ok(json!({}))
            }
            Cmd::Revoke(device) => {
                let device: DeviceId =
                    device.parse().map_err(|_| ClientError::Protocol(format!("{device:?} is not a device id")))?;
                self.done(frame::RevokeDevice { device }.into()).await?;
                for conv in self.client.groups() {
                    self.client.reconcile(&mut self.net, conv).await?;
                }
                Ok(json!({}))
            }
            Cmd::Privacy(privacy) => {
                let privacy = match privacy.as_str() {
                    "everyone" => PresencePrivacy::Everyone,
                    "contacts" => PresencePrivacy::Contacts,
                    "nobody" => PresencePrivacy::Nobody,
                    other => return Err(ClientError::Protocol(format!("unknown presence setting {other:?}"))),
                };
                self.done(frame::SetPresencePrivacy { privacy }.into()).await?;
                self.shared.view.borrow_mut().privacy = Some(privacy);
                Ok(json!({}))
            }
            Cmd::Logout => Ok(json!({})),
        }
    }

    /// Marks a chat read here and tells the others with a read receipt (not a request's).
    async fn mark_read(&mut self, conv: ConvId) -> Result<Value, ClientError> {
        if self.is_request(conv) {
            // Its sender learns nothing until it is accepted; accepting marks it read.
            return Ok(json!({}));
        }
        let me = self.client.me().user;
        let ids = {
            let mut data = self.shared.persist.data.borrow_mut();
            data.timelines.get_mut(&conv).map(|t| t.mark_read(me)).unwrap_or_default()
        };
        // The unread count (the head) and the entries now read by me.
        self.shared.persist.touch_head(conv);
        self.shared.persist.touch_entries(conv, &ids);
        if !ids.is_empty() {
            let receipt = Content::Receipt(content::Receipt { kind: ReceiptKind::Read, messages: ids });
            self.send_content(conv, receipt).await?;
        }
        self.shared.notify("chats", None);
        Ok(json!({}))
    }

    async fn leave(&mut self, conv: ConvId) -> Result<Value, ClientError> {
        self.done(frame::Leave { conv }.into()).await?;
        self.client.forget_group(conv)?;
        self.shared.view.borrow_mut().chats.remove(&conv);
        self.shared.notify("chats", None);
        Ok(json!({}))
    }

    /// A chat this account started, joined or accepted is never a message request.
    fn accept(&self, conv: ConvId) {
        let mut data = self.shared.persist.data.borrow_mut();
        data.chat_state.accepted.insert(conv);
        data.chat_state.declined.remove(&conv);
        self.shared.persist.touch_meta();
    }

    fn is_request(&self, conv: ConvId) -> bool {
        crate::view::is_request(&self.shared.view.borrow(), &self.shared.persist.data.borrow(), conv)
    }

    async fn opened(&mut self, conv: ConvId) -> Result<Value, ClientError> {
        self.accept(conv);
        self.refresh_chat(conv).await?;
        self.subscribe_presence().await?;
        self.shared.notify("chats", Some(conv));
        Ok(json!({"conv": conv.to_string()}))
    }

    fn safety(&mut self, conv: ConvId, verify: bool) -> Result<Value, ClientError> {
        let me = self.client.me().user;
        let peer = self
            .shared
            .view
            .borrow()
            .chats
            .get(&conv)
            .and_then(|c| c.members.iter().map(|m| m.user).find(|u| *u != me))
            .ok_or_else(|| ClientError::Protocol("safety numbers are for direct chats".into()))?;
        let number = self.client.safety_number_with(conv, peer);
        let mut data = self.shared.persist.data.borrow_mut();
        if verify {
            data.meta.verified.insert(peer, (number.digits.clone(), conv, false));
            self.shared.persist.touch_meta();
        }
        let previous = data.meta.verified.get(&peer).map(|(digits, _, _)| digits.clone());
        let changed = previous.as_ref().is_some_and(|p| *p != number.digits);
        Ok(
            json!({"digits": number.digits, "qr": number.qr, "verified": previous.is_some() && !changed, "changed": changed}),
        )
    }
}
