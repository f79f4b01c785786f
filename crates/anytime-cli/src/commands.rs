//! Every client subcommand: open the profile, connect, catch up, act, print.

mod files;
mod message_tools;
mod money;
mod wallet;

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use std::collections::{BTreeMap, BTreeSet, HashMap};

use anytime_client::content::{self, Content, ReceiptKind};
use anytime_client::e2ee::{DeviceCrypto, DeviceIdentity};
use anytime_client::timeline::is_request;
use anytime_client::{Client, ClientError, ClientStore, Event, Transport};
use anytime_proto::frame::{self, ConvKind};
use anytime_proto::http::{ErrorBody, SessionResponse};
use anytime_proto::{ConvId, DeviceId, MsgId, ServerFrame, UserId};
use serde_json::json;
use tokio::sync::mpsc;

use crate::net::{self, Net};
use crate::profile::{
    envelope_line, hex, money_line, parse_msg_id, payment_line, preview_line, request_line, split_line, HistoryEntry,
    Profile,
};
use crate::profile_access::{self, Access, Forwarded, Reply};
use crate::profile_server;
use crate::secret::{self, Ask};
use crate::Command;

/// Quiet time after which catching up counts as done.
const IDLE_MS: u64 = 400;
/// How much of a chat's history decides whether it is a message request (who wrote in it).
const REQUEST_CHECK_ENTRIES: usize = 1_000;
/// Profile setting: this device judges new chats as message requests (set at registration; a
/// device logged in later first accepts the chats the account already had).
const REQUESTS_KNOWN: &str = "requests-known";
/// Profile settings `username:USER`: usernames seen, for lines printed without the server.
const USERNAME_PREFIX: &str = "username:";

/// Where a command's output goes: this process's stdout, or — for a command run on behalf of
/// another process (see `profile_access`) — back to that process, rendered for its `--json`.
#[derive(Default)]
pub struct Out {
    json: bool,
    /// The output of a command run for another process: (its `--json`, lines and notes).
    capture: RefCell<Option<(bool, Vec<Reply>)>>,
    /// Other processes' `follow`s attached to this one: (their `--json`, where lines go).
    followers: RefCell<Vec<(bool, mpsc::Sender<Reply>)>>,
    /// Usernames of the people events mention, for human-readable lines (ids in JSON).
    names: RefCell<HashMap<UserId, String>>,
    /// This profile's user, once known: "(mentions you)".
    me: Cell<Option<UserId>>,
    /// The last message shown per chat, (id, author): a link preview right after its message is
    /// shown as a line under it.
    last_message: RefCell<HashMap<ConvId, (MsgId, UserId)>>,
    /// For a command run for another process: where its questions go and its answers come from.
    asker: RefCell<Option<Asker>>,
    /// For a command run for another process: that process's working directory.
    cwd: RefCell<Option<PathBuf>>,
}

/// The way back to the process a command runs for, to ask the person at its terminal.
struct Asker {
    reply: mpsc::Sender<Reply>,
    answers: mpsc::Receiver<Result<String, String>>,
}

/// How long a question to another process's terminal waits for its answer.
const ANSWER_WAIT: Duration = Duration::from_secs(300);

fn render(json: bool, human: &dyn std::fmt::Display, value: &serde_json::Value) -> String {
    if json {
        value.to_string()
    } else {
        human.to_string()
    }
}

impl Out {
    fn new(json: bool) -> Out {
        Out { json, ..Out::default() }
    }

    fn stdout(&self, line: &str) -> anyhow::Result<()> {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{line}")?;
        stdout.flush()?;
        Ok(())
    }

    /// A command's own output.
    fn print(&self, human: impl std::fmt::Display, value: serde_json::Value) -> anyhow::Result<()> {
        if let Some((json, lines)) = self.capture.borrow_mut().as_mut() {
            lines.push(Reply::Out(render(*json, &human, &value)));
            return Ok(());
        }
        self.stdout(&render(self.json, &human, &value))
    }

    /// A remark beside a command's output (stderr): something optional that did not happen.
    fn note(&self, text: &str) {
        if let Some((_, lines)) = self.capture.borrow_mut().as_mut() {
            lines.push(Reply::Note(text.to_owned()));
            return;
        }
        eprintln!("anytime: {text}");
    }

    /// Something that arrived (a message, a group change): shown by this process and by every
    /// `follow` attached to it, and part of the output of a command that caused it.
    fn event(&self, event: &Event) -> anyhow::Result<()> {
        let under = match event {
            Event::Message { conv, sender, content: Content::LinkPreview(preview), .. } => {
                self.last_message.borrow().get(conv) == Some(&(preview.to, sender.user))
            }
            _ => false,
        };
        let (human, value) = describe_event(event, &self.names.borrow(), self.me.get(), under);
        if let Event::Message {
            conv,
            msg_id,
            sender,
            content: Content::Text(_) | Content::Reply(_) | Content::Forward(_) | Content::Payment(_),
            ..
        } = event
        {
            self.last_message.borrow_mut().insert(*conv, (*msg_id, sender.user));
        }
        self.followers.borrow_mut().retain(|(json, tx)| tx.try_send(Reply::Out(render(*json, &human, &value))).is_ok());
        if let Some((json, lines)) = self.capture.borrow_mut().as_mut() {
            lines.push(Reply::Out(render(*json, &human, &value)));
        }
        self.stdout(&render(self.json, &human, &value))
    }

    fn begin_capture(&self, json: bool) {
        *self.capture.borrow_mut() = Some((json, Vec::new()));
    }

    fn end_capture(&self) -> Vec<Reply> {
        self.capture.borrow_mut().take().map(|(_, lines)| lines).unwrap_or_default()
    }

    /// Asks the person who typed the command (a PIN, a code): on this process's terminal or
    /// environment, or — for a command run for another process — on that one's.
    async fn ask(&self, ask: Ask) -> anyhow::Result<String> {
        let remote = self.asker.borrow_mut().take();
        let Some(mut asker) = remote else {
            return tokio::task::spawn_blocking(move || secret::answer(&ask))
                .await
                .context("while asking on the terminal")?;
        };
        // What the command printed so far comes first: the question follows from it.
        let lines = self.capture.borrow_mut().as_mut().map(|(_, lines)| std::mem::take(lines)).unwrap_or_default();
        let result = async {
            for line in lines.into_iter().chain([Reply::Ask(ask)]) {
                asker.reply.send(line).await.map_err(|_| anyhow::anyhow!("the command's process went away"))?;
            }
            match tokio::time::timeout(ANSWER_WAIT, asker.answers.recv()).await {
                Ok(Some(Ok(answer))) => Ok(answer),
                Ok(Some(Err(error))) => Err(anyhow::anyhow!(error)),
                Ok(None) => bail!("the command's process went away before answering"),
                Err(_) => bail!("no answer within {} minutes", ANSWER_WAIT.as_secs() / 60),
            }
        }
        .await;
        *self.asker.borrow_mut() = Some(asker);
        result
    }

    /// `path` as the person who typed the command means it (relative to their working directory).
    fn path(&self, path: &Path) -> PathBuf {
        match self.cwd.borrow().as_deref() {
            Some(cwd) if path.is_relative() => cwd.join(path),
            _ => path.to_owned(),
        }
    }
}

/// A user as people know them: the username when known, else the id.
fn name_of(names: &HashMap<UserId, String>, user: UserId) -> String {
    names.get(&user).cloned().unwrap_or_else(|| format!("user {user}"))
}

/// An event as a line and as JSON. `me`: this profile's user ("(mentions you)"); `under`: the
/// event is the link preview of the message shown just before it, so it reads as a line under it.
fn describe_event(
    event: &Event,
    names: &HashMap<UserId, String>,
    me: Option<UserId>,
    under: bool,
) -> (String, serde_json::Value) {
    match event {
        Event::Message { conv, seq, msg_id, sender, content, own, .. } => {
            let (kind, text) = describe(content);
            let who = name_of(names, sender.user);
            let mentions = message_tools::mentions_in(content);
            let mut value = json!({"type": "message", "conv": conv, "seq": seq, "msg_id": hex(&msg_id.0),
                "sender": sender.user, "sender_device": sender.device, "sender_name": names.get(&sender.user),
                "kind": kind, "text": text, "own": own, "mentions": mentions,
                "forwarded": matches!(content, Content::Forward(_)), "preview": null});
            if let Content::LinkPreview(p) = content {
                value["preview"] = json!({"url": p.url, "title": p.title, "description": p.description});
                value["preview_for"] = json!(hex(&p.to.0));
            }
            if let Content::Attachment(a) = content {
                value["attachment"] = json!({"name": a.name, "mime": a.mime, "size": a.size, "blob": a.blob});
            }
            if let Content::Payment(p) = content {
                value["payment"] =
                    json!({"transfer": p.transfer, "to": p.to, "amount": p.amount, "currency": p.currency});
                value["to_name"] = json!(names.get(&p.to));
            }
            match content {
                Content::MoneyRequest(r) => {
                    value["payment"] = json!({"transfer": r.id, "to": r.payer, "amount": r.amount,
                        "currency": r.currency, "shares": 0});
                    value["to_name"] = json!(names.get(&r.payer));
                }
                Content::SplitBill(b) => {
                    value["payment"] = json!({"transfer": b.id, "to": UserId(0), "amount": b.total,
                        "currency": b.currency, "shares": 0});
                }
                Content::RedEnvelope(e) => {
                    value["payment"] = json!({"transfer": e.id, "to": UserId(0), "amount": e.total,
                        "currency": e.currency, "shares": e.shares});
                }
                _ => {}
            }
            let mentions_me = if me.is_some_and(|me| mentions.contains(&me)) { " (mentions you)" } else { "" };
            let human = match content {
                // Receipts are not messages: say what they mean.
                Content::Receipt(receipt) => {
                    let what = match receipt.kind {
                        ReceiptKind::Delivered => "delivered to",
                        ReceiptKind::Read => "read by",
                    };
                    let n = receipt.messages.len();
                    format!("[{conv}] {what} {who} ({n} message{})", if n == 1 { "" } else { "s" })
                }
                Content::LinkPreview(p) if under => preview_line(&message_tools::shown(p)),
                Content::Payment(p) => {
                    let to = name_of(names, p.to);
                    format!("[{conv}] #{seq} {}", payment_line(&who, &to, &p.amount, &p.currency, &p.note))
                }
                Content::MoneyRequest(r) => {
                    let payer = name_of(names, r.payer);
                    format!("[{conv}] #{seq} {}", request_line(&who, &payer, &r.amount, &r.currency, &r.note, &r.id))
                }
                Content::SplitBill(b) => {
                    format!("[{conv}] #{seq} {}", split_line(&who, &b.total, &b.currency, &b.note, &b.id))
                }
                Content::RedEnvelope(e) => format!(
                    "[{conv}] #{seq} {}",
                    envelope_line(&who, &e.total, &e.currency, e.shares, &e.note, &e.id)
                ),
                _ => format!("[{conv}] #{seq} {who}: {text}{mentions_me}"),
            };
            (human, value)
        }
        Event::Undecryptable { conv, seq, sender, reason } => (
            format!("[{conv}] #{seq} {}: (cannot decrypt: {reason})", name_of(names, *sender)),
            json!({"type": "undecryptable", "conv": conv, "seq": seq, "sender": sender, "reason": reason}),
        ),
        Event::GroupChanged { conv, epoch, removed_self } => (
            format!(
                "[{conv}] encryption group changed (epoch {epoch}){}",
                if *removed_self { ", you were removed" } else { "" }
            ),
            json!({"type": "group_changed", "conv": conv, "epoch": epoch, "removed_self": removed_self}),
        ),
        Event::Joined { conv } => (format!("[{conv}] joined"), json!({"type": "joined", "conv": conv})),
        Event::ConversationChanged { conv, removed } => (
            format!("[{conv}] {}", if *removed { "you were removed" } else { "chat changed" }),
            json!({"type": "conversation_changed", "conv": conv, "removed": removed}),
        ),
        Event::DeviceRepaired { conv, device, epoch } => (
            format!(
                "[{conv}] re-added device {} of {}: its encryption state had diverged and its messages could not be read (epoch {epoch})",
                device.device,
                name_of(names, device.user)
            ),
            json!({"type": "device_repaired", "conv": conv, "user": device.user, "device": device.device, "epoch": epoch}),
        ),
        Event::Rejoined { conv, epoch } => (
            format!(
                "[{conv}] this device's encryption state had diverged; a member re-added it with fresh keys (epoch {epoch}). Messages sent to it meanwhile may be unreadable"
            ),
            json!({"type": "rejoined", "conv": conv, "epoch": epoch}),
        ),
        Event::MessagesExpired { conv, up_to_seq } => (
            format!("[{conv}] messages up to #{up_to_seq} expired on the server before this device fetched them"),
            json!({"type": "messages_expired", "conv": conv, "up_to_seq": up_to_seq}),
        ),
    }
}

fn describe(content: &Content) -> (&'static str, String) {
    match content {
        Content::Text(t) => ("text", t.body.clone()),
        Content::Reply(r) => ("reply", format!("(reply to {}) {}", hex(&r.to.0), r.body)),
        Content::Reaction(r) => {
            ("reaction", format!("{} {} {}", if r.remove { "unreacted" } else { "reacted" }, r.emoji, hex(&r.to.0)))
        }
        Content::Edit(e) => ("edit", format!("(edited {}) {}", hex(&e.to.0), e.body)),
        Content::Delete(d) => ("delete", format!("(deleted {})", hex(&d.to.0))),
        Content::Receipt(r) => ("receipt", format!("{:?} receipt for {} messages", r.kind, r.messages.len())),
        Content::Timer(t) => ("timer", format!("disappearing messages: {} s", t.seconds)),
        Content::Forward(f) => ("forward", format!("(forwarded) {}", f.body)),
        Content::Payment(p) => ("payment", p.note.clone()),
        Content::MoneyRequest(r) => ("money_request", format!("(asks {} {}) {}", r.amount, r.currency, r.note)),
        Content::SplitBill(b) => ("split_bill", format!("(split bill of {} {}) {}", b.total, b.currency, b.note)),
        Content::RedEnvelope(e) => {
            ("red_envelope", format!("(red envelope: {} {} in {} shares) {}", e.total, e.currency, e.shares, e.note))
        }
        Content::LinkPreview(p) => {
            ("link_preview", format!("(link preview for {}) {} — {}", hex(&p.to.0), p.title, p.url))
        }
        Content::Attachment(a) => (
            "attachment",
            format!(
                "📎 {} ({}){}",
                a.name,
                crate::profile::human_size(a.size),
                if a.caption.is_empty() { String::new() } else { format!(" — {}", a.caption) }
            ),
        ),
        Content::Unsupported { kind } => ("unsupported", format!("unsupported message (kind {kind})")),
    }
}

struct Session {
    client: Client<Profile>,
    net: Net,
    out: Out,
    /// What the catch-up on connect produced (printed by `sync` and `follow`).
    initial: Vec<Event>,
}

fn new_msg_id() -> MsgId {
    anytime_client_tokio::msg_id()
}

fn expect<T>(frame: ServerFrame, pick: impl FnOnce(ServerFrame) -> Option<T>) -> anyhow::Result<T> {
    if let ServerFrame::Error(error) = &frame {
        bail!("the server refused: {} ({})", error.code, error.code.description());
    }
    let shown = format!("{frame:?}");
    pick(frame).with_context(|| format!("unexpected answer from the server: {shown}"))
}

impl Session {
    async fn open(dir: &Path, out: Out) -> anyhow::Result<Session> {
        let profile = Profile::open(dir)?;
        let server = profile
            .get_text("server")?
            .context("this profile has no account: run `anytime register` or `anytime login` first")?;
        let token = profile.get_text("token")?.context("this profile has no session: run `anytime login`")?;
        let state = profile.get("crypto")?.context("this profile has no encryption keys: run `anytime login` again")?;
        let crypto = DeviceCrypto::import(&state).context("while loading this device's encryption state")?;
        let net = net::connect(&server, &token, 6).await?;
        out.me.set(Some(crypto.identity().user));
        let mut session = Session { client: Client::new(crypto, profile), net, out, initial: Vec::new() };
        // A device approved since its login uploads its key packages on first use (catch_up).
        session.initial = session.catch_up(false).await?;
        Ok(session)
    }

    /// `Client::catch_up`, optionally printing what it brought and safety-number warnings.
    async fn catch_up(&mut self, print: bool) -> anyhow::Result<Vec<Event>> {
        let all = self.client.catch_up(&mut self.net, IDLE_MS).await?;
        // Confirmed where messages are received, printed or not (`show` only prints).
        self.confirm_delivery(&all).await?;
        if print {
            self.show(&all).await?;
            self.warn_changed_safety_numbers()?;
        }
        Ok(all)
    }

    /// Prints a warning, once, for each verified contact whose keys changed since verification.
    fn warn_changed_safety_numbers(&self) -> anyhow::Result<()> {
        for contact in self.client.store().verified_contacts()? {
            let (user, conv) = (contact.user, contact.conv);
            if contact.warned || !self.client.has_group(conv) {
                continue;
            }
            let now = self.client.safety_number_with(conv, user);
            if now.digits != contact.safety_number {
                self.out.print(
                    format!("WARNING: the safety number with user {user} changed (a device was added or removed); compare it again with `anytime safety`"),
                    json!({"type": "safety_number_changed", "user": user, "conv": conv}),
                )?;
                self.client.store().set_warned(user)?;
            }
        }
        Ok(())
    }

    /// The username of the other member of a direct chat ("(just you)" if none).
    /// Marks a chat as one this account talks in: it is never a message request.
    fn accept(&self, conv: ConvId) -> anyhow::Result<()> {
        self.client.store().set(&format!("accepted:{conv}"), b"1")?;
        Ok(())
    }

    /// The message requests among `chats` (see `anytime_client::timeline::is_request`).
    async fn requests(&mut self, chats: &[frame::ConversationSummary]) -> anyhow::Result<BTreeSet<ConvId>> {
        let me = self.client.me().user;
        if self.client.store().get(REQUESTS_KNOWN)?.is_none() {
            // A device logged in to an existing account (or a profile from before requests
            // existed): the chats the account already has are not requests.
            for c in chats {
                self.accept(c.conv)?;
            }
            self.client.store().set(REQUESTS_KNOWN, b"1")?;
        }
        let mut accepted = BTreeSet::new();
        let mut histories = BTreeMap::new();
        for c in chats {
            if self.client.store().get(&format!("accepted:{}", c.conv))?.is_some() {
                // Accepted: never a request, and its peer is a contact; no history needed.
                accepted.insert(c.conv);
                histories.insert(c.conv, Vec::new());
            } else {
                histories.insert(c.conv, self.client.store().history(c.conv, REQUEST_CHECK_ENTRIES)?);
            }
        }
        if accepted.len() == chats.len() {
            return Ok(BTreeSet::new());
        }
        let mut contacts = BTreeSet::new();
        for c in chats.iter().filter(|c| c.kind == ConvKind::Direct) {
            let wrote = histories[&c.conv].iter().any(|e| e.sender == me && e.kind.is_message());
            if !(accepted.contains(&c.conv) || wrote) {
                continue;
            }
            if let Ok(ServerFrame::ConversationInfo(info)) =
                self.net.request(frame::GetConversation { conv: c.conv }.into()).await
            {
                contacts.extend(info.members.iter().map(|m| m.user).filter(|u| *u != me));
            }
        }
        Ok(chats
            .iter()
            .map(|c| c.conv)
            .filter(|conv| is_request(me, accepted.contains(conv), &histories[conv], |u| contacts.contains(&u)))
            .collect())
    }

    async fn chat_list(&mut self) -> anyhow::Result<Vec<frame::ConversationSummary>> {
        expect(self.net.request(frame::ListConversations {}.into()).await?, |f| match f {
            ServerFrame::Conversations(c) => Some(c.conversations),
            _ => None,
        })
    }

    async fn peer_name(&mut self, conv: ConvId, me: UserId) -> String {
        let peer = match self.net.request(frame::GetConversation { conv }.into()).await {
            Ok(ServerFrame::ConversationInfo(info)) => info.members.iter().map(|m| m.user).find(|u| *u != me),
            _ => None,
        };
        let Some(peer) = peer else { return "(just you)".into() };
        if let Some(name) = self.out.names.borrow().get(&peer) {
            return name.clone();
        }
        match self.net.request(frame::GetProfile { user: peer }.into()).await {
            Ok(ServerFrame::Profile(profile)) => {
                self.remember_name(peer, profile.username.clone());
                profile.username
            }
            _ => format!("user {peer}"),
        }
    }

    /// Keeps a username for this process's lines, and on the profile for `history`, which reads
    /// only this device (a payment's payer and payee by name).
    fn remember_name(&self, user: UserId, username: String) {
        // A name not kept shows as the user id: nothing to fail for.
        let _ = self.client.store().set(&format!("{USERNAME_PREFIX}{user}"), username.as_bytes());
        self.out.names.borrow_mut().insert(user, username);
    }

    /// Looks up the usernames of `users` not known yet (once per process).
    async fn learn_names(&mut self, users: impl IntoIterator<Item = UserId>) {
        let unknown: BTreeSet<UserId> =
            users.into_iter().filter(|user| !self.out.names.borrow().contains_key(user)).collect();
        for user in unknown {
            // Names are for reading; a failed lookup leaves the id in the line.
            if let Ok(ServerFrame::Profile(profile)) = self.net.request(frame::GetProfile { user }.into()).await {
                self.remember_name(user, profile.username);
            }
        }
    }

    /// Prints events, with the usernames of the people in them (looked up once per process).
    async fn show(&mut self, events: &[Event]) -> anyhow::Result<()> {
        let people: Vec<UserId> = events
            .iter()
            .filter_map(|event| match event {
                Event::Message { sender, .. } => Some(sender.user),
                Event::Undecryptable { sender, .. } => Some(*sender),
                Event::DeviceRepaired { device, .. } => Some(device.user),
                _ => None,
            })
            .chain(events.iter().filter_map(|event| match event {
                Event::Message { content: Content::Payment(p), .. } => Some(p.to),
                Event::Message { content: Content::MoneyRequest(r), .. } => Some(r.payer),
                _ => None,
            }))
            .collect();
        self.learn_names(people).await;
        for event in events {
            self.out.event(event)?;
        }
        Ok(())
    }

    /// Tells the senders their messages reached this device (✓✓ on their side), as the web
    /// client does: one silent receipt per conversation for new messages (`Content::is_message`).
    async fn confirm_delivery(&mut self, events: &[Event]) -> anyhow::Result<()> {
        let mut delivered: BTreeMap<ConvId, Vec<MsgId>> = BTreeMap::new();
        for event in events {
            if let Event::Message { conv, msg_id, own: false, content, .. } = event {
                if content.is_message() {
                    delivered.entry(*conv).or_default().push(*msg_id);
                }
            }
        }
        for (conv, messages) in delivered {
            let receipt = Content::Receipt(content::Receipt { kind: ReceiptKind::Delivered, messages });
            match self.client.send(&mut self.net, conv, receipt, new_msg_id()).await {
                // Left the chat meanwhile, or not in its group yet: nobody to tell.
                Ok(_) | Err(ClientError::NotInGroup(_)) | Err(ClientError::Server { .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }

    async fn reconcile(&mut self, conv: ConvId) -> anyhow::Result<Vec<Event>> {
        Ok(self.client.reconcile(&mut self.net, conv).await?)
    }

    async fn user(&mut self, username: &str) -> anyhow::Result<frame::Profile> {
        let answer = self.net.request(frame::LookupUser { username: username.to_owned() }.into()).await?;
        match answer {
            ServerFrame::Profile(profile) => {
                self.remember_name(profile.user, profile.username.clone());
                Ok(profile)
            }
            ServerFrame::Error(e) if e.code == anytime_proto::ErrorCode::UserNotFound => {
                bail!("there is no user named {username:?}; check the spelling (usernames are exact)")
            }
            other => expect(other, |_| None),
        }
    }

    /// Sends `content` and prints its id and number.
    async fn send(&mut self, conv: ConvId, content: Content) -> anyhow::Result<MsgId> {
        let (msg_id, seq) = self.send_quietly(conv, content).await?;
        self.out.print(
            format!("sent {} (#{seq})", hex(&msg_id.0)),
            json!({"msg_id": hex(&msg_id.0), "seq": seq, "conv": conv}),
        )?;
        Ok(msg_id)
    }

    async fn send_quietly(&mut self, conv: ConvId, content: Content) -> anyhow::Result<(MsgId, frame::Seq)> {
        let msg_id = new_msg_id();
        match self.client.send_or_catch_up(&mut self.net, conv, content, msg_id, IDLE_MS).await {
            Err(ClientError::NotInGroup(_)) => bail!(
                "this device is not in the encrypted group of {conv} yet (a member's device adds it when it syncs); retry later"
            ),
            other => Ok((msg_id, other?.0)),
        }
    }
}

fn parse_conv(text: &str) -> anyhow::Result<ConvId> {
    text.parse().map_err(|_| anyhow::anyhow!("{text:?} is not a chat id; `anytime chats` lists them"))
}

async fn account(server: &str, path: &str, body: serde_json::Value) -> anyhow::Result<SessionResponse> {
    let url = format!("{}{path}", server.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .post(&url)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("could not reach {server}; is the server running?"))?;
    if !response.status().is_success() {
        let error: ErrorBody = response.json().await.context("the server answered with an unreadable error")?;
        bail!("{} ({})", error.message, error.code);
    }
    Ok(response.json().await?)
}

async fn enroll_via(dir: &Path, json: bool, path: &str, account: crate::AccountArgs) -> anyhow::Result<()> {
    let crate::AccountArgs { server, username, password, device_name } = account;
    let body = json!({"username": username, "password": password, "device_name": device_name});
    let session = self::account(&server, path, body).await?;
    enroll(dir, json, &server, &username, session, path == "/v1/register").await
}

async fn enroll(
    dir: &Path,
    json: bool,
    server: &str,
    username: &str,
    session: SessionResponse,
    new_account: bool,
) -> anyhow::Result<()> {
    let profile = Profile::open(dir)?;
    if profile.get("token")?.is_some() {
        bail!("the profile {} already holds an account; use another --profile", dir.display());
    }
    if new_account {
        // A new account has no chats yet: every chat someone else starts is judged.
        profile.set(REQUESTS_KNOWN, b"1")?;
    }
    let identity = DeviceIdentity { user: session.user_id, device: session.device_id };
    let crypto = DeviceCrypto::new(identity)?;
    profile.set("crypto", &crypto.export())?;
    profile.set("server", server.trim_end_matches('/').as_bytes())?;
    profile.set("token", session.token.as_bytes())?;
    profile.set("user", session.user_id.to_string().as_bytes())?;
    profile.set("device", session.device_id.to_string().as_bytes())?;
    profile.set("username", username.as_bytes())?;
    if let Some(code) = &session.link_code {
        // Pending: it cannot connect until approved, so key packages are uploaded on first use.
        let human = format!(
            "{username}: new device {} waits for approval.\nOn a device already linked to this account, run:\n  anytime approve {code}\nthen run `anytime sync` here.",
            session.device_id
        );
        let value = json!({"user": session.user_id, "device": session.device_id, "username": username, "pending": true, "link_code": code});
        return Out::new(json).print(human, value);
    }
    let mut net = net::connect(server, &session.token, 3).await?;
    let mut client = Client::new(crypto, profile);
    let count = client.replenish_key_packages(&mut net).await?;
    Out::new(json).print(
        format!("{username} is user {} on device {} ({count} key packages uploaded)", session.user_id, session.device_id),
        json!({"user": session.user_id, "device": session.device_id, "username": username, "key_packages": count, "pending": false}),
    )
}

/// Runs a client command on the profile `profile` (`what` names it in lock notes: `anytime send`).
pub fn run(profile: Option<PathBuf>, json: bool, command: Command, what: &str) -> anyhow::Result<()> {
    let dir = match profile {
        Some(dir) => dir,
        None => {
            dirs::data_dir().context("no user data directory is known; pass --profile DIR")?.join("anytime-profile")
        }
    };
    loop {
        match profile_access::open(&dir, what)? {
            Access::Local(lock) => {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                let result = runtime.block_on(dispatch(dir, json, command));
                drop(lock);
                return result;
            }
            Access::Remote(stream) => {
                if matches!(command, Command::Register(_) | Command::Login(_)) {
                    bail!(
                        "the profile {} already holds an account (a running `anytime follow` uses it); use another --profile",
                        dir.display()
                    );
                }
                let follow_for = match &command {
                    Command::Follow { seconds } => seconds.map(Duration::from_secs),
                    _ => None,
                };
                // The command line as typed: the serving process parses it as we did.
                let args = std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
                let cwd = std::env::current_dir().ok();
                let request = profile_access::Request { args, json, cwd };
                match profile_access::forward(stream, &request, follow_for)? {
                    Forwarded::Finished => return Ok(()),
                    // It was stopping: the profile is free, or served by another process, now.
                    Forwarded::Retry => continue,
                }
            }
        }
    }
}

/// Runs `command` in this process, which holds the profile's lock.
async fn dispatch(dir: PathBuf, json: bool, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Register(account) => enroll_via(&dir, json, "/v1/register", account).await,
        Command::Login(account) => enroll_via(&dir, json, "/v1/login", account).await,
        Command::Whoami | Command::History { .. } | Command::Search { .. } => {
            offline(&Profile::open(&dir)?, &Out::new(json), command)
        }
        Command::Follow { seconds } => {
            let session = Session::open(&dir, Out::new(json)).await?;
            follow(session, &dir, seconds).await
        }
        command => {
            let mut session = Session::open(&dir, Out::new(json)).await?;
            execute(&mut session, command).await
        }
    }
}

/// The commands that only read this device's local store.
fn offline(profile: &Profile, out: &Out, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Whoami => {
            let field = |k| profile.get_text(k).map(|v| v.unwrap_or_default());
            let (username, user, device, server) =
                (field("username")?, field("user")?, field("device")?, field("server")?);
            if user.is_empty() {
                bail!("this profile has no account: run `anytime register` or `anytime login` first");
            }
            out.print(
                format!("{username} (user {user}, device {device}) on {server}"),
                json!({"username": username, "user": user, "device": device, "server": server}),
            )
        }
        Command::History { chat, limit, before } => {
            let conv = parse_conv(&chat)?;
            let before = before.as_deref().map(parse_msg_id).transpose()?;
            let page = profile.history_page(conv, before, limit as usize)?.with_context(|| {
                format!(
                    "no message {} in chat {conv} on this device (see `anytime history {conv}`)",
                    before.map(|b| b.to_string()).unwrap_or_default()
                )
            })?;
            let me = profile.get_text("user")?;
            for e in page {
                let e = HistoryEntry::new(conv, e);
                let human = match &e.payment {
                    Some(p) => {
                        let (from, to) = (stored_name(profile, &e.sender)?, stored_name(profile, &p.to.to_string())?);
                        let line = money_line(e.kind, &from, &to, p, &e.text);
                        format!("{} #{} {}", e.msg_id, e.seq, e.decorated(&line, me.as_deref()))
                    }
                    None => format!("{} #{} {}: {}", e.msg_id, e.seq, e.sender, e.text_line(me.as_deref())),
                };
                out.print(human, serde_json::to_value(&e)?)?;
            }
            Ok(())
        }
        Command::Search { query } => {
            for (msg_id, body) in profile.search(&query)? {
                let msg_id = msg_id.to_string();
                out.print(format!("{msg_id} {body}"), json!({"msg_id": msg_id, "text": body}))?;
            }
            Ok(())
        }
        _ => unreachable!("offline() is only called with Whoami, History and Search"),
    }
}

/// A user's name as this profile knows it without asking the server: the username seen last
/// (this account's own from login), else "user ID".
fn stored_name(profile: &Profile, user: &str) -> anyhow::Result<String> {
    if profile.get_text("user")?.as_deref() == Some(user) {
        if let Some(name) = profile.get_text("username")? {
            return Ok(name);
        }
    }
    Ok(profile.get_text(&format!("{USERNAME_PREFIX}{user}"))?.unwrap_or_else(|| format!("user {user}")))
}

/// Runs a command that needs the server in an open session (this process's own, or the one a
/// running `follow` serves other processes from).
async fn execute(s: &mut Session, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Whoami | Command::History { .. } | Command::Search { .. } => {
            offline(s.client.store(), &s.out, command)?;
        }
        Command::Sync => {
            let initial = std::mem::take(&mut s.initial);
            s.show(&initial).await?;
            s.catch_up(true).await?;
        }
        Command::Lookup { username } => {
            let p = s.user(&username).await?;
            s.out.print(
                format!("{} is user {} ({} devices)", p.username, p.user, p.devices.len()),
                json!({"user": p.user, "username": p.username, "display_name": p.display_name, "devices": p.devices}),
            )?;
        }
        Command::Chats => {
            let list = s.chat_list().await?;
            let requests = s.requests(&list).await?;
            let me = s.client.me().user;
            for c in list {
                let kind = if c.kind == ConvKind::Direct { "direct" } else { "group" };
                // A direct chat has no name of its own: it is called after the other person.
                let title = if c.kind == ConvKind::Direct { s.peer_name(c.conv, me).await } else { c.name.clone() };
                let request = requests.contains(&c.conv);
                s.out.print(
                    format!(
                        "{} {kind} {title:?} ({} members){}",
                        c.conv,
                        c.member_count,
                        if request { " — message request: `anytime accept` it to reply with read receipts" } else { "" }
                    ),
                    json!({"conv": c.conv, "kind": kind, "name": c.name, "title": title, "members": c.member_count, "last_seq": c.last_seq, "request": request}),
                )?;
            }
        }
        Command::Accept { chat } => {
            let conv = parse_conv(&chat)?;
            s.accept(conv)?;
            s.out.print(format!("accepted {conv}"), json!({"conv": conv, "accepted": true}))?;
        }
        Command::Direct { username } => {
            let peer = s.user(&username).await?;
            let info = expect(s.net.request(frame::CreateDirect { peer: peer.user }.into()).await?, conversation)?;
            for e in s.client.establish(&mut s.net, &info).await? {
                s.out.event(&e)?;
            }
            s.accept(info.conv)?;
            s.out.print(format!("{}", info.conv), json!({"conv": info.conv}))?;
        }
        Command::Group { name, members } => {
            let mut users = Vec::new();
            for m in &members {
                users.push(s.user(m).await?.user);
            }
            let info = expect(s.net.request(frame::CreateGroup { name, members: users }.into()).await?, conversation)?;
            s.client.establish(&mut s.net, &info).await?;
            s.accept(info.conv)?;
            s.out.print(format!("{}", info.conv), json!({"conv": info.conv}))?;
        }
        Command::Add { chat, members } => {
            let conv = parse_conv(&chat)?;
            let mut users = Vec::new();
            for m in &members {
                users.push(s.user(m).await?.user);
            }
            let info = expect(s.net.request(frame::AddMembers { conv, users }.into()).await?, conversation)?;
            s.client.establish(&mut s.net, &info).await?;
            s.out.print(format!("added to {conv}"), json!({"conv": conv}))?;
        }
        Command::Remove { chat, member } => {
            let conv = parse_conv(&chat)?;
            let user = s.user(&member).await?.user;
            expect(s.net.request(frame::RemoveMember { conv, user }.into()).await?, done)?;
            s.client.remove_user_from_group(&mut s.net, conv, user).await?;
            s.out.print(format!("removed {member} from {conv}"), json!({"conv": conv, "removed": user}))?;
        }
        Command::Admin { chat, member, revoke } => {
            let conv = parse_conv(&chat)?;
            let user = s.user(&member).await?.user;
            expect(s.net.request(frame::SetAdmin { conv, user, admin: !revoke }.into()).await?, done)?;
            s.out.print("done", json!({"conv": conv, "user": user, "admin": !revoke}))?;
        }
        Command::Leave { chat } => {
            let conv = parse_conv(&chat)?;
            expect(s.net.request(frame::Leave { conv }.into()).await?, done)?;
            s.client.forget_group(conv)?;
            s.out.print(format!("left {conv}"), json!({"conv": conv}))?;
        }
        Command::Invite { chat, ttl_secs, max_uses } => {
            let conv = parse_conv(&chat)?;
            let invite =
                expect(s.net.request(frame::CreateInvite { conv, ttl_secs, max_uses }.into()).await?, |f| match f {
                    ServerFrame::Invite(i) => Some(i),
                    _ => None,
                })?;
            s.out.print(
                &invite.code,
                json!({"code": invite.code, "conv": conv, "expires_at_ms": invite.expires_at_ms}),
            )?;
        }
        Command::Join { code } => {
            let info = expect(s.net.request(frame::JoinInvite { code }.into()).await?, conversation)?;
            s.accept(info.conv)?;
            s.out.print(
                format!("{} (an existing member's device adds this device to the encryption group)", info.conv),
                json!({"conv": info.conv}),
            )?;
        }
        Command::Send { chat, text, preview } => {
            let conv = parse_conv(&chat)?;
            let mentions = s.mentions(conv, &text).await?;
            let msg_id = s.send(conv, Content::Text(content::Text { body: text.clone(), mentions })).await?;
            if !preview.no_preview {
                s.send_link_preview(conv, msg_id, &text).await?;
            }
        }
        Command::Reply { chat, message, text, preview } => {
            let conv = parse_conv(&chat)?;
            let to = parse_msg_id(&message)?;
            let mentions = s.mentions(conv, &text).await?;
            let msg_id = s.send(conv, Content::Reply(content::Reply { to, body: text.clone(), mentions })).await?;
            if !preview.no_preview {
                s.send_link_preview(conv, msg_id, &text).await?;
            }
        }
        Command::Forward { from_chat, message, to_chat } => {
            let (from, to) = (parse_conv(&from_chat)?, parse_conv(&to_chat)?);
            message_tools::forward(s, from, parse_msg_id(&message)?, to).await?;
        }
        Command::Star { chat, message, remove } => {
            message_tools::star(s, parse_conv(&chat)?, parse_msg_id(&message)?, !remove)?;
        }
        Command::Starred => message_tools::starred(s).await?,
        Command::React { chat, message, emoji, remove } => {
            let conv = parse_conv(&chat)?;
            s.send(conv, Content::Reaction(content::Reaction { to: parse_msg_id(&message)?, emoji, remove })).await?;
        }
        Command::Edit { chat, message, text } => {
            let conv = parse_conv(&chat)?;
            s.send(conv, Content::Edit(content::Edit { to: parse_msg_id(&message)?, body: text })).await?;
        }
        Command::Delete { chat, message, for_me: true } => {
            message_tools::delete_for_me(s, parse_conv(&chat)?, parse_msg_id(&message)?)?;
        }
        Command::Delete { chat, message, for_me: false } => {
            let conv = parse_conv(&chat)?;
            s.send(conv, Content::Delete(content::Delete { to: parse_msg_id(&message)? })).await?;
        }
        Command::Timer { chat, seconds } => {
            let conv = parse_conv(&chat)?;
            s.send(conv, Content::Timer(content::Timer { seconds })).await?;
        }
        Command::Read { chat } => {
            let conv = parse_conv(&chat)?;
            let list = s.chat_list().await?;
            if s.requests(&list).await?.contains(&conv) {
                bail!(
                    "{conv} is a message request: its sender learns you read it only once you accept (`anytime accept {conv}`, then `anytime read {conv}`)"
                );
            }
            let ids: Vec<MsgId> = s
                .client
                .store()
                .history(conv, 1_000)?
                .iter()
                .filter(|e| !e.own && e.kind.is_message())
                .map(|e| e.msg_id)
                .collect();
            s.send(conv, Content::Receipt(content::Receipt { kind: ReceiptKind::Read, messages: ids })).await?;
        }
        Command::Safety { username, verify } => safety(s, &username, verify).await?,
        Command::Devices => {
            let list = expect(s.net.request(frame::ListDevices {}.into()).await?, |f| match f {
                ServerFrame::Devices(d) => Some(d.devices),
                _ => None,
            })?;
            for d in list {
                s.out.print(
                    format!("{} {:?}{}", d.device, d.name, if d.current { " (this device)" } else { "" }),
                    json!({"device": d.device, "name": d.name, "current": d.current, "approved": d.approved, "last_seen_ms": d.last_seen_ms}),
                )?;
            }
        }
        Command::Approve { code } => {
            expect(s.net.request(frame::ApproveDevice { code }.into()).await?, done)?;
            s.out.print("approved: the new device joins your chats when it next syncs", json!({"approved": true}))?;
        }
        Command::Revoke { device } => {
            let device: DeviceId = device
                .parse()
                .map_err(|_| anyhow::anyhow!("{device:?} is not a device id; `anytime devices` lists them"))?;
            expect(s.net.request(frame::RevokeDevice { device }.into()).await?, done)?;
            // Remove it from every group this device shares with it.
            let convs: Vec<ConvId> = s.client.groups();
            for conv in convs {
                s.reconcile(conv).await?;
            }
            s.out.print(format!("revoked {device}"), json!({"revoked": device}))?;
        }
        Command::Wallet { action } => wallet::run(s, action).await?,
        Command::SendFile {
            chat,
            path,
            caption,
            mime,
            limit_rate,
            as_file,
            filter,
            brightness,
            contrast,
            saturation,
        } => {
            let path = s.out.path(&path);
            let Some(filter) = anytime_media::filter::Filter::from_name(&filter) else {
                let names: Vec<&str> = anytime_media::filter::Filter::ALL.iter().map(|f| f.name()).collect();
                bail!("there is no filter {filter:?}; the filters are {}", names.join(", "));
            };
            let adjust = anytime_media::filter::Adjust { brightness, contrast, saturation };
            let options = files::SendOptions { caption, mime, limit_rate, as_file, filter, adjust };
            files::send_file(s, parse_conv(&chat)?, &path, options).await?;
        }
        Command::Download { chat, message, output } => {
            let output = output.map(|o| s.out.path(&o));
            let cwd = s.out.path(Path::new("."));
            files::download(s, parse_conv(&chat)?, parse_msg_id(&message)?, output, &cwd).await?;
        }
        Command::Pay { chat, amount, currency, to, note } => {
            wallet::pay(s, parse_conv(&chat)?, &amount, &currency, to.as_deref(), note).await?;
        }
        Command::Request { action: Some(action), .. } => money::request_action(s, action).await?,
        Command::Request { action: None, chat, amount, currency, from, note } => {
            let (Some(chat), Some(amount), Some(currency), Some(from)) = (chat, amount, currency, from) else {
                bail!("usage: anytime request CHAT AMOUNT CURRENCY --from USERNAME [--note TEXT]");
            };
            money::request(s, parse_conv(&chat)?, &amount, &currency, &from, note).await?;
        }
        Command::Split { action: Some(action), .. } => money::split_action(s, action).await?,
        Command::Split { action: None, chat, total, currency, with, shares, note } => {
            let (Some(chat), Some(total), Some(currency)) = (chat, total, currency) else {
                bail!("usage: anytime split CHAT TOTAL CURRENCY [--with U1,U2 | --share U=AMOUNT...] [--note TEXT]");
            };
            money::split(s, parse_conv(&chat)?, &total, &currency, &with, &shares, note).await?;
        }
        Command::Envelope { chat, total, currency, shares, equal, note } => {
            money::envelope(s, parse_conv(&chat)?, &total, &currency, shares, equal, note).await?;
        }
        Command::Grab { envelope } => money::grab(s, &envelope).await?,
        Command::Block { username } => {
            let user = s.user(&username).await?.user;
            expect(s.net.request(frame::Block { user }.into()).await?, done)?;
            s.out.print(format!("blocked {username}"), json!({"blocked": user}))?;
        }
        Command::Unblock { username } => {
            let user = s.user(&username).await?.user;
            expect(s.net.request(frame::Unblock { user }.into()).await?, done)?;
            s.out.print(format!("unblocked {username}"), json!({"unblocked": user}))?;
        }
        Command::Serve(_) | Command::Register(_) | Command::Login(_) | Command::Follow { .. } => {
            unreachable!("run by dispatch, never in a session")
        }
    }
    Ok(())
}

fn conversation(frame: ServerFrame) -> Option<frame::ConversationInfo> {
    match frame {
        ServerFrame::ConversationInfo(info) => Some(info),
        _ => None,
    }
}

fn done(frame: ServerFrame) -> Option<()> {
    matches!(frame, ServerFrame::Done(_)).then_some(())
}

async fn safety(s: &mut Session, username: &str, verify: bool) -> anyhow::Result<()> {
    let peer = s.user(username).await?;
    let info = expect(s.net.request(frame::CreateDirect { peer: peer.user }.into()).await?, conversation)?;
    s.client.establish(&mut s.net, &info).await?;
    let number = s.client.safety_number_with(info.conv, peer.user);
    let previous = s.client.store().verified(peer.user)?;
    let changed = previous.as_ref().is_some_and(|p| *p != number.digits);
    if verify {
        s.client.store().set_verified(peer.user, &number.digits, info.conv)?;
    }
    let status = match (&previous, changed, verify) {
        (_, _, true) => "verified",
        (Some(_), true, _) => {
            "CHANGED since you verified it: their keys changed (new or removed device); compare again"
        }
        (Some(_), false, _) => "verified",
        (None, _, _) => "not verified",
    };
    s.out.print(
        format!("safety number with {username}: {}\n{}\nstatus: {status}", number.digits, number.qr),
        json!({"user": peer.user, "digits": number.digits, "qr": number.qr, "verified": verify || (previous.is_some() && !changed), "changed": changed}),
    )
}

/// Resolves on SIGINT or SIGTERM. Installing the handlers replaces an inherited "ignore".
fn stop_requested() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt()).context("while setting up Ctrl-C handling")?;
        let mut terminate = signal(SignalKind::terminate()).context("while setting up SIGTERM handling")?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

/// Requests from other processes queued for the session loop.
const REQUEST_QUEUE_LEN: usize = 64;

/// `follow`: prints what arrives, reconnecting by itself, and serves the profile to other
/// `anytime` processes meanwhile (see `profile_access`): their commands run here, between two
/// pushes, so this process stays the profile's only writer.
async fn follow(mut s: Session, dir: &Path, seconds: Option<u64>) -> anyhow::Result<()> {
    let deadline = seconds.map(|secs| Instant::now() + Duration::from_secs(secs));
    let (requests_tx, mut requests) = mpsc::channel(REQUEST_QUEUE_LEN);
    let _listening = match profile_server::listen(dir, requests_tx) {
        Ok(listening) => Some(listening),
        Err(error) => {
            // Other commands then wait for this one to end instead of running through it.
            tracing::warn!(%error, "could not open the profile socket; other commands on this profile wait until `follow` stops");
            None
        }
    };
    // Ctrl-C or SIGTERM end `follow` cleanly (socket removed, lock released) — also when it runs
    // without a terminal, where a shell may have started it with SIGINT ignored.
    let stop = stop_requested()?;
    tokio::pin!(stop);
    let initial = std::mem::take(&mut s.initial);
    s.show(&initial).await?;
    s.catch_up(true).await?;
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(());
        }
        tokio::select! {
            _ = &mut stop => return Ok(()),
            push = s.net.next_push(500) => match push {
                Ok(Some(push)) => {
                    let events = s.client.handle_push_and_repair(&mut s.net, push).await?;
                    s.confirm_delivery(&events).await?;
                    s.show(&events).await?;
                }
                Ok(None) => {}
                Err(ClientError::Transport(_)) => s = reconnect(s, dir).await?,
                Err(error) => return Err(error.into()),
            },
            Some(incoming) = requests.recv() => serve_remote(&mut s, incoming).await,
        }
    }
}

/// Opens a new session after the connection dropped; resumes from the stored cursors.
async fn reconnect(mut s: Session, dir: &Path) -> anyhow::Result<Session> {
    let out = std::mem::take(&mut s.out);
    drop(s);
    let mut s = Session::open(dir, out).await?;
    let initial = std::mem::take(&mut s.initial);
    s.show(&initial).await?;
    Ok(s)
}

/// Runs a command another process sent (its command line, parsed as it would parse it) and
/// sends its output back; a `follow` is attached to this one's stream of events.
async fn serve_remote(s: &mut Session, incoming: profile_server::Incoming) {
    use clap::Parser;
    let profile_server::Incoming { request, reply, answers } = incoming;
    let cli = match crate::Cli::try_parse_from(std::iter::once("anytime".to_owned()).chain(request.args)) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = reply.send(Reply::Error(error.to_string().trim_end().to_owned())).await;
            return;
        }
    };
    let json = request.json || cli.json;
    let command = match cli.command {
        Command::Follow { .. } => {
            s.out.followers.borrow_mut().push((json, reply));
            return;
        }
        Command::Serve(_) | Command::Register(_) | Command::Login(_) => {
            let _ = reply
                .send(Reply::Error(
                    "this profile is in use by `anytime follow`; that command cannot run through it".into(),
                ))
                .await;
            return;
        }
        command => command,
    };
    s.out.begin_capture(json);
    *s.out.asker.borrow_mut() = Some(Asker { reply: reply.clone(), answers });
    *s.out.cwd.borrow_mut() = request.cwd;
    let result = execute(s, command).await;
    s.out.asker.borrow_mut().take();
    s.out.cwd.borrow_mut().take();
    for line in s.out.end_capture() {
        let _ = reply.send(line).await;
    }
    let last = match result {
        Ok(()) => Reply::Done(true),
        Err(error) => Reply::Error(format!("{error:#}")),
    };
    let _ = reply.send(last).await;
}
