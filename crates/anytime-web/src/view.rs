//! What the UI renders, as JSON: the chat list and one chat with its timeline. Built from the
//! server's membership (names, admins), the decrypted local timelines and the ephemeral state
//! (presence, typing) the session task keeps here.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anytime_client::timeline::{self, Entry, EntryKind, Timeline};
use anytime_proto::frame::{ConvKind, ConversationInfo, PresencePrivacy};
use anytime_proto::{ConvId, MsgId, UserId};
use serde_json::{json, Value};

use anytime_client::Content;

use crate::persist::{Account, Data, Hit};
use crate::{now_ms, Shared};

#[derive(Default)]
pub struct View {
    pub status: String,
    pub chats: BTreeMap<ConvId, ConversationInfo>,
    pub names: HashMap<UserId, String>,
    /// user → (online, last seen).
    pub presence: HashMap<UserId, (bool, Option<u64>)>,
    /// (conv, user) → shown until.
    pub typing: HashMap<(ConvId, UserId), u64>,
    pub privacy: Option<PresencePrivacy>,
    /// Direct chats whose peer's safety number changed since it was verified.
    pub safety_changed: HashMap<ConvId, bool>,
}

pub use anytime_proto::ids::hex;

pub fn parse_msg_id(text: &str) -> Option<MsgId> {
    text.parse().ok()
}

pub fn account_json(a: &Account) -> Value {
    json!({"username": a.username, "user": a.user.to_string(), "device": a.device.to_string(), "server": a.server})
}

fn name(view: &View, user: UserId) -> String {
    view.names.get(&user).cloned().unwrap_or_else(|| format!("user {user}"))
}

/// The other member of a direct chat.
fn peer(info: &ConversationInfo, me: UserId) -> Option<UserId> {
    info.members.iter().map(|m| m.user).find(|u| *u != me)
}

fn title(view: &View, info: &ConversationInfo, me: UserId) -> String {
    match info.kind {
        ConvKind::Group => info.name.clone(),
        ConvKind::Direct => peer(info, me).map(|u| name(view, u)).unwrap_or_else(|| "(just you)".into()),
    }
}

fn preview(entry: &Entry) -> String {
    if entry.deleted {
        "message deleted".into()
    } else if let Some(p) = &entry.payment {
        let note: String = entry.body.chars().take(60).collect();
        let icon = match entry.kind {
            EntryKind::MoneyRequest => "💸 asks",
            EntryKind::SplitBill => "🧾 split",
            EntryKind::RedEnvelope => "🧧",
            _ => "💸",
        };
        format!("{icon} {} {}{}{note}", p.amount, p.currency, if note.is_empty() { "" } else { " · " })
    } else if let Some(a) = &entry.attachment {
        let caption: String = entry.body.chars().take(60).collect();
        let name: String = a.name.chars().take(40).collect();
        let icon = if a.mime.starts_with("image/") { "📷" } else { "📎" };
        format!("{icon} {name}{}{caption}", if caption.is_empty() { "" } else { " · " })
    } else {
        entry.body.chars().take(80).collect()
    }
}

fn presence_json(view: &View, user: Option<UserId>) -> Value {
    match user.and_then(|u| view.presence.get(&u)) {
        Some((true, _)) => json!({"online": true}),
        Some((false, last_seen)) => json!({"online": false, "last_seen_ms": last_seen}),
        None => Value::Null,
    }
}

fn typing_names(view: &View, conv: ConvId, now: u64) -> Vec<String> {
    let mut names: Vec<String> = view
        .typing
        .iter()
        .filter(|((c, _), until)| *c == conv && **until > now)
        .map(|((_, user), _)| name(view, *user))
        .collect();
    names.sort();
    names
}

/// Users this account talks with: the other member of every direct chat it accepted or wrote in.
fn contacts(view: &View, data: &Data, me: UserId) -> BTreeSet<UserId> {
    view.chats
        .values()
        .filter(|info| info.kind == ConvKind::Direct)
        .filter(|info| data.chat_state.accepted.contains(&info.conv) || data.writers(info.conv).any(|u| u == me))
        .filter_map(|info| peer(info, me))
        .collect()
}

fn request_given(data: &Data, contacts: &BTreeSet<UserId>, conv: ConvId, me: UserId) -> bool {
    let accepted = data.chat_state.accepted.contains(&conv);
    timeline::is_request_by(me, accepted, data.writers(conv), |u| contacts.contains(&u))
}

/// Whether `conv` is a message request (see `anytime_client::timeline::is_request`).
pub fn is_request(view: &View, data: &Data, conv: ConvId) -> bool {
    let Some(me) = data.account.as_ref().map(|a| a.user) else { return false };
    request_given(data, &contacts(view, data, me), conv, me)
}

/// A request deleted here stays hidden until someone writes in it again.
fn hidden(data: &Data, conv: ConvId) -> bool {
    data.chat_state.declined.contains(&conv) && data.writers(conv).next().is_none()
}

pub fn chats_json(shared: &Shared) -> Value {
    let view = shared.view.borrow();
    let data = shared.persist.data.borrow();
    let Some(me) = data.account.as_ref().map(|a| a.user) else { return json!([]) };
    let now = now_ms();
    let contacts = contacts(&view, &data, me);
    let mut chats: Vec<(u64, Value)> = view
        .chats
        .values()
        .filter(|info| !hidden(&data, info.conv))
        .map(|info| {
            let timeline = data.timelines.get(&info.conv);
            let last = timeline.and_then(Timeline::last);
            let activity = last.map(|e| e.sent_at_ms).unwrap_or(0);
            let value = json!({
                "conv": info.conv.to_string(),
                "kind": if info.kind == ConvKind::Direct { "direct" } else { "group" },
                "title": title(&view, info, me),
                "unread": timeline.map(|t| t.unread).unwrap_or(0),
                "mentions": timeline.map(|t| unread_mentions(t, me)).unwrap_or(0),
                "last": last.map(|e| json!({"text": preview(e), "sender": name(&view, e.sender), "own": e.own, "at": e.sent_at_ms})),
                "presence": if info.kind == ConvKind::Direct { presence_json(&view, peer(info, me)) } else { Value::Null },
                "typing": typing_names(&view, info.conv, now),
                "request": request_given(&data, &contacts, info.conv, me),
            });
            (activity, value)
        })
        .collect();
    chats.sort_by_key(|c| std::cmp::Reverse(c.0));
    Value::Array(chats.into_iter().map(|(_, v)| v).collect())
}

fn status(entry: &Entry, me: UserId) -> &'static str {
    if !entry.own {
        ""
    } else if entry.read_by.iter().any(|u| *u != me) {
        "read"
    } else if entry.delivered_to.iter().any(|u| *u != me) {
        "delivered"
    } else if entry.seq > 0 {
        "sent"
    } else {
        "sending"
    }
}

/// Entries that count as unread when they are among the last `unread` of them (see
/// `Timeline::insert`): others' messages.
fn counts_as_unread(entry: &Entry) -> bool {
    !entry.own && entry.kind.is_message()
}

/// The quoted message above a reply.
fn reply_json(view: &View, timeline: Option<&Timeline>, to: MsgId) -> Value {
    match timeline.and_then(|t| t.find(to)) {
        Some(original) => {
            json!({"msg_id": hex(&to.0), "sender": name(view, original.sender), "text": preview(original)})
        }
        None => json!({"msg_id": hex(&to.0), "sender": "", "text": "(message not on this device)"}),
    }
}

/// The quote of a reply whose original is in an older part of the history than is loaded.
fn earlier_reply_json(to: MsgId) -> Value {
    json!({"msg_id": hex(&to.0), "sender": "", "text": "(an earlier message)", "earlier": true})
}

fn entry_json(view: &View, timeline: &Timeline, older: bool, me: UserId, e: &Entry) -> Value {
    let mut reactions: BTreeMap<&str, (u32, bool)> = BTreeMap::new();
    for (user, emoji) in &e.reactions {
        let slot = reactions.entry(emoji.as_str()).or_default();
        slot.0 += 1;
        slot.1 |= *user == me;
    }
    let reply = e.reply_to.map(|to| match timeline.find(to) {
        None if older => earlier_reply_json(to),
        _ => reply_json(view, Some(timeline), to),
    });
    json!({
        "msg_id": hex(&e.msg_id.0),
        "seq": e.seq,
        "sender": name(view, e.sender),
        "own": e.own,
        "at": e.sent_at_ms,
        "kind": match e.kind {
            EntryKind::Text => "text",
            EntryKind::Reply => "reply",
            EntryKind::Timer | EntryKind::Notice => "notice",
            EntryKind::Unsupported => "unsupported",
            EntryKind::Undecryptable => "undecryptable",
            EntryKind::Payment => "payment",
            EntryKind::MoneyRequest => "money_request",
            EntryKind::SplitBill => "split_bill",
            EntryKind::RedEnvelope => "red_envelope",
            EntryKind::Attachment => "attachment",
        },
        "text": e.body,
        "reply": reply,
        "edited": e.edited,
        "deleted": e.deleted,
        "status": status(e, me),
        "reactions": reactions.into_iter().map(|(emoji, (count, mine))| json!({"emoji": emoji, "count": count, "mine": mine})).collect::<Vec<_>>(),
        "expires_at_ms": e.expires_at_ms,
        "mentions": e.mentions.iter().map(|u| name(view, *u)).collect::<Vec<_>>(),
        "mentions_me": e.mentions.contains(&me),
        "forwarded": e.forwarded,
        "starred": e.starred,
        "preview": e.preview.as_ref().map(|p| json!({"url": p.url, "title": p.title, "description": p.description})),
        "payment": e.payment.as_ref().map(|p| json!({"transfer": p.transfer, "to": name(view, p.to), "to_me": p.to == me, "amount": p.amount, "currency": p.currency, "shares": p.shares})),
        // The key stays in wasm: the page asks the client to fetch and open the file by message.
        "attachment": e.attachment.as_ref().map(|a| json!({"name": a.name, "mime": a.mime, "size": a.size, "width": a.width, "height": a.height})),
    })
}

/// Unread messages of `timeline` that mention `me`: the chat list shows an "@" for them.
fn unread_mentions(timeline: &Timeline, me: UserId) -> usize {
    let unread = timeline.entries.iter().rev().filter(|e| counts_as_unread(e)).take(timeline.unread as usize);
    unread.filter(|e| e.mentions.contains(&me)).count()
}

/// Messages written on this device that wait in the outbox (offline): shown as pending bubbles
/// after the timeline, in the order they will go out.
fn pending_json(view: &View, data: &Data, conv: ConvId, me: UserId) -> Vec<Value> {
    data.meta
        .outbox
        .iter()
        .filter(|(c, _, _)| *c == conv)
        .filter_map(|(_, id, _)| {
            let content = Content::decode(data.outbox_content.get(id)?).ok()?;
            let payment = match &content {
                Content::Payment(p) => json!({"transfer": p.transfer, "to": name(view, p.to), "to_me": false,
                    "amount": p.amount, "currency": p.currency, "shares": 0}),
                Content::MoneyRequest(r) => json!({"transfer": r.id, "to": name(view, r.payer), "to_me": false,
                    "amount": r.amount, "currency": r.currency, "shares": 0}),
                Content::SplitBill(b) => json!({"transfer": b.id, "to": "", "to_me": false,
                    "amount": b.total, "currency": b.currency, "shares": 0}),
                Content::RedEnvelope(e) => json!({"transfer": e.id, "to": "", "to_me": false,
                    "amount": e.total, "currency": e.currency, "shares": e.shares}),
                _ => Value::Null,
            };
            let (kind, text, reply_to, forwarded) = match content {
                Content::Text(t) => ("text", t.body, None, false),
                Content::Reply(r) => ("reply", r.body, Some(r.to), false),
                Content::Forward(f) => ("text", f.body, None, true),
                Content::Payment(p) => ("payment", p.note, None, false),
                Content::MoneyRequest(r) => ("money_request", r.note, None, false),
                Content::SplitBill(b) => ("split_bill", b.note, None, false),
                Content::RedEnvelope(e) => ("red_envelope", e.note, None, false),
                Content::Attachment(a) => ("attachment", a.caption, None, false),
                _ => return None,
            };
            let reply = reply_to.map(|to| reply_json(view, data.timelines.get(&conv), to));
            Some(json!({
                "msg_id": hex(&id.0), "seq": 0, "sender": name(view, me), "own": true, "at": null, "kind": kind,
                "text": text, "reply": reply, "edited": false, "deleted": false, "status": "pending",
                "reactions": [], "expires_at_ms": null, "mentions": [], "mentions_me": false,
                "forwarded": forwarded, "starred": false, "preview": null, "payment": payment,
            }))
        })
        .collect()
}

/// A message to jump to (a search hit) further back than this many entries is shown in a page
/// of its own: rendering everything from it to the end could be the whole history.
const FAR_JUMP_ENTRIES: usize = 200;
/// Entries shown after and before a far jump's message (before: more with a larger `limit`).
const JUMP_CONTEXT_AFTER: usize = 40;
const JUMP_CONTEXT_BEFORE: usize = 10;

/// One chat: its newest `limit` entries (older ones on request: `more` says there are some),
/// widened to include `include` (a search result) and the first unread message, which
/// `first_unread` names so the UI can draw the divider and jump to it. A result far back is
/// shown in a page of its own instead, `limit` entries ending a little after it (`newer` says
/// newer ones follow).
pub fn chat_json(shared: &Shared, conv: ConvId, limit: usize, include: Option<MsgId>) -> Value {
    let view = shared.view.borrow();
    let data = shared.persist.data.borrow();
    let (Some(info), Some(me)) = (view.chats.get(&conv), data.account.as_ref().map(|a| a.user)) else {
        return Value::Null;
    };
    let now = now_ms();
    let empty = Timeline::new(conv);
    let timeline = data.timelines.get(&conv).unwrap_or(&empty);
    let all = &timeline.entries;
    let older = data.has_older(conv);
    let first_unread = (timeline.unread > 0)
        .then(|| all.iter().enumerate().rev().filter(|(_, e)| counts_as_unread(e)).nth(timeline.unread as usize - 1))
        .flatten();
    let mut start = all.len().saturating_sub(limit.max(1));
    let mut end = all.len();
    let included = include.and_then(|id| all.iter().rposition(|e| e.msg_id == id));
    match included {
        // Far back in a long history: a page around it (the newest ones follow on request),
        // not everything from it to the end.
        Some(index) if all.len() - index > FAR_JUMP_ENTRIES => {
            end = (index + JUMP_CONTEXT_AFTER).min(all.len());
            start = end.saturating_sub(limit.max(JUMP_CONTEXT_AFTER + JUMP_CONTEXT_BEFORE));
        }
        Some(index) => {
            start = start.min(index);
            if let Some((unread, _)) = first_unread {
                start = start.min(unread);
            }
        }
        None => {
            if let Some((unread, _)) = first_unread {
                start = start.min(unread);
            }
        }
    }
    let mut entries: Vec<Value> = all[start..end]
        .iter()
        .filter(|e| e.expires_at_ms.is_none_or(|at| at > now))
        .map(|e| entry_json(&view, timeline, older, me, e))
        .collect();
    if end == all.len() {
        entries.extend(pending_json(&view, &data, conv, me));
    }
    let me_admin = info.members.iter().any(|m| m.user == me && m.admin);
    let direct_peer = (info.kind == ConvKind::Direct).then(|| peer(info, me)).flatten();
    let verified = direct_peer.and_then(|p| data.meta.verified.get(&p));
    json!({
        "conv": conv.to_string(),
        "kind": if info.kind == ConvKind::Direct { "direct" } else { "group" },
        "title": title(&view, info, me),
        "name": info.name,
        "me_admin": me_admin,
        "members": info.members.iter().map(|m| json!({"user": m.user.to_string(), "name": name(&view, m.user), "admin": m.admin, "me": m.user == me, "devices": m.devices.len()})).collect::<Vec<_>>(),
        "presence": presence_json(&view, direct_peer),
        "typing": typing_names(&view, conv, now),
        "timer_seconds": timeline.timer_seconds,
        "verified": verified.is_some(),
        "safety_changed": view.safety_changed.get(&conv).copied().unwrap_or(false),
        "entries": entries,
        "request": is_request(&view, &data, conv),
        "more": start > 0 || older,
        "newer": end < all.len(),
        "first_unread": first_unread.map(|(_, e)| hex(&e.msg_id.0)),
    })
}

/// Every starred message on this device, newest first, with the chat it is in.
pub fn starred_json(shared: &Shared) -> Value {
    let view = shared.view.borrow();
    let data = shared.persist.data.borrow();
    let Some(me) = data.account.as_ref().map(|a| a.user) else { return json!([]) };
    let mut starred = timeline::starred(data.timelines.values());
    starred.reverse();
    let items: Vec<Value> =
        starred.iter().filter_map(|(conv, e)| Some(message_link_json(&view, view.chats.get(conv)?, me, e))).collect();
    Value::Array(items)
}

/// A message somewhere in the chats (a search hit, a starred message): where it is and what it says.
fn message_link_json(view: &View, info: &ConversationInfo, me: UserId, e: &Entry) -> Value {
    json!({
        "conv": info.conv.to_string(),
        "title": title(view, info, me),
        "msg_id": hex(&e.msg_id.0),
        "sender": if e.own { "You".to_owned() } else { name(view, e.sender) },
        "text": preview(e),
        "at": e.sent_at_ms,
    })
}

/// Search results as the UI lists them: the hits the index found (newest first) in chats this
/// device is still in, each naming the chat and message to jump to.
pub fn search_json(shared: &Shared, hits: &[Hit]) -> Value {
    let view = shared.view.borrow();
    let data = shared.persist.data.borrow();
    let Some(me) = data.account.as_ref().map(|a| a.user) else { return json!([]) };
    let results: Vec<Value> = hits
        .iter()
        .filter_map(|hit| {
            let info = view.chats.get(&hit.conv)?;
            Some(json!({
                "conv": info.conv.to_string(),
                "title": title(&view, info, me),
                "msg_id": hex(&hit.msg.0),
                "sender": if hit.doc.own { "You".to_owned() } else { name(&view, hit.doc.sender) },
                "text": hit.doc.body.chars().take(80).collect::<String>(),
                "at": hit.doc.sent_at_ms,
            }))
        })
        .collect();
    Value::Array(results)
}
