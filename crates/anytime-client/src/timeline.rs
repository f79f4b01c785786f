//! A conversation's history as a user sees it: the client core's [`Event`]s folded into messages
//! with their edits, deletions, reactions and receipts applied. Plain data without I/O or a clock
//! (the caller passes `now_ms`), serialisable so a shell can persist it as it likes (the web
//! client keeps one per conversation in IndexedDB).

use anytime_proto::frame::Seq;
use anytime_proto::limits::{MENTIONS_MAX, REACTION_BYTES_MAX};
use anytime_proto::{ConvId, DeviceId, MsgId, UserId};
use serde::{Deserialize, Serialize};

use crate::client::Event;
use crate::content::{Content, ReceiptKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    Text,
    Reply,
    /// "disappearing messages: …" notices.
    Timer,
    Unsupported,
    Undecryptable,
    /// Encryption repairs: a device re-added, this device rejoined.
    Notice,
    /// Money sent in the chat (`Entry::payment`); the body is its note.
    Payment,
    /// A money request, a split bill, a red envelope (`Entry::payment` names it; the body is
    /// its note).
    MoneyRequest,
    SplitBill,
    RedEnvelope,
    /// A file, photo, clip or voice note (`Entry::attachment`); the body is its caption.
    Attachment,
}

impl EntryKind {
    const ALL: [EntryKind; 11] = [
        EntryKind::Text,
        EntryKind::Reply,
        EntryKind::Timer,
        EntryKind::Unsupported,
        EntryKind::Undecryptable,
        EntryKind::Notice,
        EntryKind::Payment,
        EntryKind::MoneyRequest,
        EntryKind::SplitBill,
        EntryKind::RedEnvelope,
        EntryKind::Attachment,
    ];

    /// A stable name, for stores that keep the kind as text (and the CLI's JSON).
    pub fn name(self) -> &'static str {
        match self {
            EntryKind::Text => "text",
            EntryKind::Reply => "reply",
            EntryKind::Timer => "timer",
            EntryKind::Unsupported => "unsupported",
            EntryKind::Undecryptable => "undecryptable",
            EntryKind::Notice => "notice",
            EntryKind::Payment => "payment",
            EntryKind::MoneyRequest => "money_request",
            EntryKind::SplitBill => "split_bill",
            EntryKind::RedEnvelope => "red_envelope",
            EntryKind::Attachment => "attachment",
        }
    }

    pub fn from_name(name: &str) -> Option<EntryKind> {
        EntryKind::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// Something someone wrote (as opposed to notices this device or the group produced).
    pub fn is_message(self) -> bool {
        matches!(
            self,
            EntryKind::Text
                | EntryKind::Reply
                | EntryKind::Payment
                | EntryKind::MoneyRequest
                | EntryKind::SplitBill
                | EntryKind::RedEnvelope
                | EntryKind::Attachment
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub msg_id: MsgId,
    /// Server order; 0 for entries that have none (undecryptable ones keep theirs).
    pub seq: Seq,
    pub sender: UserId,
    pub sender_device: DeviceId,
    pub sent_at_ms: u64,
    pub kind: EntryKind,
    pub body: String,
    pub reply_to: Option<MsgId>,
    pub edited: bool,
    pub deleted: bool,
    pub own: bool,
    /// (user, emoji), one per user and emoji.
    pub reactions: Vec<(UserId, String)>,
    pub delivered_to: Vec<UserId>,
    pub read_by: Vec<UserId>,
    /// Disappearing messages: gone from this device after this instant.
    pub expires_at_ms: Option<u64>,
    /// People the author mentioned (@name), each once.
    pub mentions: Vec<UserId>,
    /// Passed on from another chat.
    pub forwarded: bool,
    /// The author's preview of the first link in the message.
    pub preview: Option<Preview>,
    /// Starred on this device (never sent anywhere).
    pub starred: bool,
    /// For `EntryKind::Payment`: what was sent, as the message says.
    pub payment: Option<PaymentInfo>,
    /// For `EntryKind::Attachment`: the sealed file, its key and what it is.
    pub attachment: Option<crate::content::Attachment>,
}

/// The money of a payment, request, split bill or red envelope entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentInfo {
    /// The wallet's id: the transfer, request, split or envelope.
    pub transfer: String,
    /// Who is paid (payment) or asked (request); nobody (0) for splits and envelopes.
    pub to: UserId,
    pub amount: String,
    pub currency: String,
    /// A red envelope's shares (0 otherwise).
    pub shares: u32,
}

/// A link preview as shown under a message (see `crate::preview`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preview {
    pub url: String,
    pub title: String,
    pub description: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeline {
    pub conv: ConvId,
    pub entries: Vec<Entry>,
    /// Disappearing-message timer, seconds; 0 = off.
    pub timer_seconds: u32,
    /// Messages from others not yet marked read on this device.
    pub unread: u32,
}

/// What applying an event changed, so a UI can react (notify, send a delivery receipt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Nothing,
    /// A new visible message from someone else.
    NewIncoming,
    /// A new own message, or an edit/delete/reaction/receipt of an existing one.
    Updated,
}

/// What one event does to a conversation's history: the rules of [`Timeline::apply`] as data, so
/// a store that keeps history its own way (the terminal client's SQLite profile) applies exactly
/// the same rules. Which events make entries, their text, expiry and ids are decided here; a store
/// only has to carry an effect out as its variant documents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Effect {
    /// A new entry. If one with this id exists, nothing changes except a missing seq (0) taking
    /// this one's: own messages come back from the server with their number.
    Insert(Entry),
    /// The disappearing-message timer becomes `seconds` (0 = off); then `notice` is inserted.
    SetTimer { seconds: u32, notice: Entry },
    /// `user` adds (or removes) `emoji` on the entry `to`, whoever wrote it; one per user and emoji.
    React { to: MsgId, user: UserId, emoji: String, remove: bool },
    /// Only the author edits, and not a deleted entry: the body changes, `edited` is set.
    Edit { to: MsgId, author: UserId, body: String },
    /// Only the author deletes: body cleared, reactions gone, `deleted` set.
    Delete { to: MsgId, author: UserId },
    /// `user` received or read `messages` (read implies delivered; each user once per list).
    /// `own`: one of this account's devices, so on `Read` the unread count resets.
    Receipt { user: UserId, kind: ReceiptKind, messages: Vec<MsgId>, own: bool },
    /// Only the author attaches a link preview, to an entry that is not deleted; a later one
    /// replaces it.
    Preview { to: MsgId, author: UserId, preview: Preview },
    /// Local only (no event makes it): this device stars or unstars the entry `to`.
    Star { to: MsgId, starred: bool },
    /// Local only: "delete for me" — the entry `to` leaves this device's history; nobody else
    /// learns of it.
    Hide { to: MsgId },
}

/// The receipt lists a receipt of `kind` puts its sender on: read implies delivered.
pub fn receipt_lists(kind: ReceiptKind) -> &'static [ReceiptKind] {
    match kind {
        ReceiptKind::Delivered => &[ReceiptKind::Delivered],
        ReceiptKind::Read => &[ReceiptKind::Read, ReceiptKind::Delivered],
    }
}

impl Effect {
    /// The effect of `event` on a conversation whose timer is `timer_seconds`; `now_ms` stamps
    /// own messages (sent_at 0) and local notices. `None`: the event leaves history unchanged.
    pub fn of(event: &Event, timer_seconds: u32, now_ms: u64) -> Option<Effect> {
        match event {
            Event::Message { seq, msg_id, sender, sent_at_ms, content, own, .. } => {
                let sent_at = if *sent_at_ms == 0 { now_ms } else { *sent_at_ms };
                let expires = (timer_seconds > 0).then(|| sent_at + u64::from(timer_seconds) * 1000);
                let entry = |kind: EntryKind, body: String, reply_to: Option<MsgId>, expires: Option<u64>| Entry {
                    sender_device: sender.device,
                    reply_to,
                    own: *own,
                    expires_at_ms: expires,
                    ..local_entry(*msg_id, *seq, sender.user, kind, body, sent_at)
                };
                let with_mentions = |mut entry: Entry, mentions: &[UserId]| {
                    for user in mentions.iter().take(MENTIONS_MAX) {
                        if !entry.mentions.contains(user) {
                            entry.mentions.push(*user);
                        }
                    }
                    entry
                };
                Some(match content {
                    Content::Text(text) => Effect::Insert(with_mentions(
                        entry(EntryKind::Text, text.body.clone(), None, expires),
                        &text.mentions,
                    )),
                    Content::Reply(reply) => Effect::Insert(with_mentions(
                        entry(EntryKind::Reply, reply.body.clone(), Some(reply.to), expires),
                        &reply.mentions,
                    )),
                    Content::Forward(forward) => Effect::Insert(Entry {
                        forwarded: true,
                        ..entry(EntryKind::Text, forward.body.clone(), None, expires)
                    }),
                    Content::Payment(payment) => Effect::Insert(Entry {
                        payment: Some(PaymentInfo {
                            transfer: payment.transfer.clone(),
                            to: payment.to,
                            amount: payment.amount.clone(),
                            currency: payment.currency.clone(),
                            shares: 0,
                        }),
                        ..entry(EntryKind::Payment, payment.note.clone(), None, expires)
                    }),
                    Content::MoneyRequest(r) => Effect::Insert(Entry {
                        payment: Some(PaymentInfo {
                            transfer: r.id.clone(),
                            to: r.payer,
                            amount: r.amount.clone(),
                            currency: r.currency.clone(),
                            shares: 0,
                        }),
                        ..entry(EntryKind::MoneyRequest, r.note.clone(), None, expires)
                    }),
                    Content::SplitBill(b) => Effect::Insert(Entry {
                        payment: Some(PaymentInfo {
                            transfer: b.id.clone(),
                            to: UserId(0),
                            amount: b.total.clone(),
                            currency: b.currency.clone(),
                            shares: 0,
                        }),
                        ..entry(EntryKind::SplitBill, b.note.clone(), None, expires)
                    }),
                    Content::RedEnvelope(e) => Effect::Insert(Entry {
                        payment: Some(PaymentInfo {
                            transfer: e.id.clone(),
                            to: UserId(0),
                            amount: e.total.clone(),
                            currency: e.currency.clone(),
                            shares: e.shares,
                        }),
                        ..entry(EntryKind::RedEnvelope, e.note.clone(), None, expires)
                    }),
                    Content::Attachment(attachment) if attachment.acceptable() => Effect::Insert(Entry {
                        attachment: Some((**attachment).clone()),
                        ..entry(EntryKind::Attachment, attachment.caption.clone(), None, expires)
                    }),
                    Content::Attachment(_) => Effect::Insert(entry(
                        EntryKind::Unsupported,
                        "an attachment this device cannot use".into(),
                        None,
                        expires,
                    )),
                    Content::LinkPreview(preview) => {
                        if !crate::preview::acceptable(preview) {
                            return None;
                        }
                        Effect::Preview {
                            to: preview.to,
                            author: sender.user,
                            preview: Preview {
                                url: preview.url.clone(),
                                title: preview.title.clone(),
                                description: preview.description.clone(),
                            },
                        }
                    }
                    Content::Unsupported { .. } => {
                        Effect::Insert(entry(EntryKind::Unsupported, "unsupported message".into(), None, expires))
                    }
                    Content::Timer(timer) => {
                        let text = if timer.seconds == 0 {
                            "disappearing messages: off".to_owned()
                        } else {
                            format!("disappearing messages: {}", describe_seconds(timer.seconds))
                        };
                        Effect::SetTimer { seconds: timer.seconds, notice: entry(EntryKind::Timer, text, None, None) }
                    }
                    Content::Reaction(reaction) => {
                        if reaction.emoji.is_empty() || reaction.emoji.len() > REACTION_BYTES_MAX {
                            // A reaction is one emoji (a few code points), not a message.
                            return None;
                        }
                        Effect::React {
                            to: reaction.to,
                            user: sender.user,
                            emoji: reaction.emoji.clone(),
                            remove: reaction.remove,
                        }
                    }
                    Content::Edit(edit) => Effect::Edit { to: edit.to, author: sender.user, body: edit.body.clone() },
                    Content::Delete(delete) => Effect::Delete { to: delete.to, author: sender.user },
                    Content::Receipt(receipt) => Effect::Receipt {
                        user: sender.user,
                        kind: receipt.kind,
                        messages: receipt.messages.clone(),
                        own: *own,
                    },
                })
            }
            Event::Undecryptable { seq, sender, reason, .. } => {
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&seq.to_be_bytes());
                let body = format!("cannot decrypt this message ({reason})");
                Some(Effect::Insert(local_entry(MsgId(id), *seq, *sender, EntryKind::Undecryptable, body, now_ms)))
            }
            Event::DeviceRepaired { device, epoch, .. } => Some(Effect::Insert(notice(
                *epoch,
                device.user,
                "re-added a device of this member with fresh keys: its encryption had diverged and its messages could not be read".into(),
                now_ms,
            ))),
            Event::Rejoined { epoch, .. } => Some(Effect::Insert(notice(
                *epoch,
                UserId(0),
                "this device's encryption had diverged; it was re-added with fresh keys. Messages sent meanwhile may be unreadable here".into(),
                now_ms,
            ))),
            _ => None,
        }
    }
}

/// A notice entry at a group epoch: its id is derived from the epoch so a replay adds nothing.
fn notice(epoch: u64, about: UserId, body: String, now_ms: u64) -> Entry {
    let mut id = [0u8; 16];
    id[0] = b'N';
    id[8..].copy_from_slice(&epoch.to_be_bytes());
    local_entry(MsgId(id), 0, about, EntryKind::Notice, body, now_ms)
}

/// An entry this device writes itself (no message content behind it).
fn local_entry(msg_id: MsgId, seq: Seq, sender: UserId, kind: EntryKind, body: String, now_ms: u64) -> Entry {
    Entry {
        msg_id,
        seq,
        sender,
        sender_device: DeviceId(0),
        sent_at_ms: now_ms,
        kind,
        body,
        reply_to: None,
        edited: false,
        deleted: false,
        own: false,
        reactions: Vec::new(),
        delivered_to: Vec::new(),
        read_by: Vec::new(),
        expires_at_ms: None,
        mentions: Vec::new(),
        forwarded: false,
        preview: None,
        starred: false,
        payment: None,
        attachment: None,
    }
}

impl Entry {
    /// A text entry with nothing attached: replies, reactions, receipts and the rest empty (for
    /// stores' tests and fixtures).
    pub fn plain(
        msg_id: MsgId,
        seq: Seq,
        sender: UserId,
        sender_device: DeviceId,
        sent_at_ms: u64,
        body: String,
    ) -> Entry {
        Entry { sender_device, ..local_entry(msg_id, seq, sender, EntryKind::Text, body, sent_at_ms) }
    }

    /// What forwarding this entry sends: its text, for a message that still has one.
    pub fn forward(&self) -> Option<Content> {
        (matches!(self.kind, EntryKind::Text | EntryKind::Reply) && !self.deleted && !self.body.is_empty())
            .then(|| Content::Forward(crate::content::Forward { body: self.body.clone() }))
    }
}

impl Timeline {
    pub fn new(conv: ConvId) -> Timeline {
        Timeline { conv, ..Timeline::default() }
    }

    pub fn last(&self) -> Option<&Entry> {
        self.entries.last()
    }

    pub fn find(&self, msg_id: MsgId) -> Option<&Entry> {
        self.entries.iter().find(|e| e.msg_id == msg_id)
    }

    fn find_mut(&mut self, msg_id: MsgId, author: UserId) -> Option<&mut Entry> {
        // Only the author may edit or delete: the MLS-authenticated sender must match.
        self.entries.iter_mut().find(|e| e.msg_id == msg_id && e.sender == author)
    }

    /// Drops messages whose disappearing timer ran out.
    pub fn expire(&mut self, now_ms: u64) {
        self.entries.retain(|e| e.expires_at_ms.is_none_or(|at| at > now_ms));
    }

    /// Marks everything read; returns the ids of others' messages that were unread, for a read receipt.
    pub fn mark_read(&mut self, me: UserId) -> Vec<MsgId> {
        let ids: Vec<MsgId> = self
            .entries
            .iter()
            .filter(|e| !e.own && !e.deleted && e.kind.is_message())
            .filter(|e| !e.read_by.contains(&me))
            .map(|e| e.msg_id)
            .collect();
        for entry in self.entries.iter_mut().filter(|e| ids.contains(&e.msg_id)) {
            entry.read_by.push(me);
        }
        self.unread = 0;
        ids
    }

    /// Folds one event of this conversation in. `now_ms` stamps own messages and timers.
    pub fn apply(&mut self, event: &Event, now_ms: u64) -> Applied {
        match Effect::of(event, self.timer_seconds, now_ms) {
            Some(effect) => self.apply_effect(effect),
            None => Applied::Nothing,
        }
    }

    fn apply_effect(&mut self, effect: Effect) -> Applied {
        match effect {
            Effect::Insert(entry) => self.insert(entry),
            Effect::SetTimer { seconds, notice } => {
                self.timer_seconds = seconds;
                self.insert(notice);
                Applied::Updated
            }
            Effect::React { to, user, emoji, remove } => {
                let Some(entry) = self.entries.iter_mut().find(|e| e.msg_id == to) else {
                    return Applied::Nothing;
                };
                let key = (user, emoji);
                entry.reactions.retain(|r| *r != key);
                if !remove {
                    entry.reactions.push(key);
                }
                Applied::Updated
            }
            Effect::Edit { to, author, body } => match self.find_mut(to, author) {
                Some(entry) if !entry.deleted => {
                    entry.body = body;
                    entry.edited = true;
                    Applied::Updated
                }
                _ => Applied::Nothing,
            },
            Effect::Delete { to, author } => match self.find_mut(to, author) {
                Some(entry) => {
                    entry.body.clear();
                    entry.deleted = true;
                    entry.reactions.clear();
                    entry.preview = None;
                    entry.mentions.clear();
                    // Its key goes too: the file can no longer be opened from this device.
                    entry.attachment = None;
                    Applied::Updated
                }
                None => Applied::Nothing,
            },
            Effect::Receipt { user, kind, messages, own } => {
                for entry in self.entries.iter_mut().filter(|e| messages.contains(&e.msg_id)) {
                    for list in receipt_lists(kind) {
                        let list = match list {
                            ReceiptKind::Delivered => &mut entry.delivered_to,
                            ReceiptKind::Read => &mut entry.read_by,
                        };
                        if !list.contains(&user) {
                            list.push(user);
                        }
                    }
                }
                if own && kind == ReceiptKind::Read {
                    // Read on another of my devices.
                    self.unread = 0;
                }
                Applied::Updated
            }
            Effect::Preview { to, author, preview } => match self.find_mut(to, author) {
                Some(entry) if !entry.deleted => {
                    entry.preview = Some(preview);
                    Applied::Updated
                }
                _ => Applied::Nothing,
            },
            Effect::Star { to, starred } => match self.entries.iter_mut().find(|e| e.msg_id == to) {
                Some(entry) => {
                    entry.starred = starred;
                    Applied::Updated
                }
                None => Applied::Nothing,
            },
            Effect::Hide { to } => {
                let before = self.entries.len();
                self.entries.retain(|e| e.msg_id != to);
                if self.entries.len() == before {
                    Applied::Nothing
                } else {
                    Applied::Updated
                }
            }
        }
    }

    /// Carries out a local effect ([`Effect::Star`], [`Effect::Hide`]) — or any other.
    pub fn apply_local(&mut self, effect: Effect) -> Applied {
        self.apply_effect(effect)
    }

    fn insert(&mut self, entry: Entry) -> Applied {
        if let Some(existing) = self.entries.iter_mut().find(|e| e.msg_id == entry.msg_id) {
            // Our own message comes back from the server with its seq: keep the local one.
            if existing.seq == 0 {
                existing.seq = entry.seq;
            }
            return Applied::Nothing;
        }
        let incoming = !entry.own && entry.kind.is_message();
        self.entries.push(entry);
        if incoming {
            self.unread += 1;
            Applied::NewIncoming
        } else {
            Applied::Updated
        }
    }
}

/// Every starred entry of `timelines`, oldest first (by the time it was sent).
pub fn starred<'a>(timelines: impl IntoIterator<Item = &'a Timeline>) -> Vec<(ConvId, Entry)> {
    let mut starred: Vec<(ConvId, Entry)> = timelines
        .into_iter()
        .flat_map(|t| t.entries.iter().filter(|e| e.starred).map(|e| (t.conv, e.clone())))
        .collect();
    starred.sort_by_key(|(_, e)| e.sent_at_ms);
    starred
}

/// Message requests: a chat is a request while this account has not accepted it (started it,
/// joined it by invite, or pressed Accept), has never written in it from any of its devices, and
/// only people who are not its contacts have written in it. Until it is accepted the shells send
/// no read receipts and no typing, so the sender cannot tell whether it was seen.
pub fn is_request(me: UserId, accepted: bool, entries: &[Entry], is_contact: impl Fn(UserId) -> bool) -> bool {
    is_request_by(me, accepted, entries.iter().filter(|e| e.kind.is_message()).map(|e| e.sender), is_contact)
}

/// [`is_request`] given who wrote messages in the chat (each writer once or more), for a store
/// that keeps that summary instead of the whole history in memory (the web client).
pub fn is_request_by(
    me: UserId,
    accepted: bool,
    writers: impl IntoIterator<Item = UserId>,
    is_contact: impl Fn(UserId) -> bool,
) -> bool {
    if accepted {
        return false;
    }
    let mut writers = writers.into_iter().peekable();
    writers.peek().is_some() && writers.all(|user| user != me && !is_contact(user))
}

fn describe_seconds(seconds: u32) -> String {
    match seconds {
        s if s % 86_400 == 0 => format!("{} d", s / 86_400),
        s if s % 3_600 == 0 => format!("{} h", s / 3_600),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::{self, Content};
    use crate::e2ee::DeviceIdentity;

    fn msg(seq: Seq, id: u8, user: u64, own: bool, content: Content) -> Event {
        Event::Message {
            conv: ConvId(1),
            seq,
            msg_id: MsgId([id; 16]),
            sender: DeviceIdentity { user: UserId(user), device: DeviceId(user * 10) },
            sent_at_ms: 1_000,
            content,
            own,
        }
    }

    fn text(body: &str) -> Content {
        Content::Text(content::Text { body: body.into(), mentions: Vec::new() })
    }

    #[test]
    fn edits_deletes_and_reactions_apply_only_by_their_author() {
        let mut t = Timeline::new(ConvId(1));
        assert_eq!(t.apply(&msg(1, 1, 2, false, text("hi")), 5), Applied::NewIncoming);
        assert_eq!(t.unread, 1);
        // User 3 cannot edit user 2's message.
        let forged = Content::Edit(content::Edit { to: MsgId([1; 16]), body: "forged".into() });
        assert_eq!(t.apply(&msg(2, 2, 3, false, forged), 5), Applied::Nothing);
        let edit = Content::Edit(content::Edit { to: MsgId([1; 16]), body: "hello".into() });
        t.apply(&msg(3, 3, 2, false, edit), 5);
        let react = Content::Reaction(content::Reaction { to: MsgId([1; 16]), emoji: "👍".into(), remove: false });
        t.apply(&msg(4, 4, 3, false, react), 5);
        let essay = Content::Reaction(content::Reaction { to: MsgId([1; 16]), emoji: "x".repeat(65), remove: false });
        assert_eq!(t.apply(&msg(6, 6, 3, false, essay), 5), Applied::Nothing, "an oversized reaction is ignored");
        let entry = t.find(MsgId([1; 16])).expect("entry");
        assert_eq!((entry.body.as_str(), entry.edited, entry.reactions.len()), ("hello", true, 1));
        let delete = Content::Delete(content::Delete { to: MsgId([1; 16]) });
        t.apply(&msg(5, 5, 2, false, delete), 5);
        let entry = t.find(MsgId([1; 16])).expect("entry");
        assert!(entry.deleted && entry.body.is_empty() && entry.reactions.is_empty());
        assert_eq!(t.entries.len(), 1, "edits, reactions and deletes are not entries of their own");
    }

    #[test]
    fn receipts_mark_read_and_disappearing_timer() {
        let mut t = Timeline::new(ConvId(1));
        t.apply(&msg(1, 1, 1, true, text("mine")), 5);
        let read = Content::Receipt(content::Receipt { kind: ReceiptKind::Read, messages: vec![MsgId([1; 16])] });
        t.apply(&msg(2, 2, 2, false, read), 5);
        let entry = t.find(MsgId([1; 16])).expect("entry");
        assert_eq!((entry.read_by.clone(), entry.delivered_to.clone()), (vec![UserId(2)], vec![UserId(2)]));
        t.apply(&msg(3, 3, 2, false, Content::Timer(content::Timer { seconds: 60 })), 5);
        t.apply(&msg(4, 4, 2, false, text("soon gone")), 5);
        assert_eq!(t.mark_read(UserId(1)), vec![MsgId([4; 16])]);
        assert_eq!(t.unread, 0);
        t.expire(1_000 + 60_000);
        assert!(t.find(MsgId([4; 16])).is_none(), "expired with the timer");
        assert!(t.find(MsgId([1; 16])).is_some(), "sent before the timer: kept");
    }

    #[test]
    fn repair_notices_appear_once_and_do_not_count_as_unread() {
        let mut t = Timeline::new(ConvId(1));
        let device = DeviceIdentity { user: UserId(2), device: DeviceId(20) };
        let repaired = Event::DeviceRepaired { conv: ConvId(1), device, epoch: 7 };
        assert_eq!(t.apply(&repaired, 5), Applied::Updated);
        assert_eq!(t.apply(&repaired, 6), Applied::Nothing, "a replay adds nothing");
        assert_eq!(t.apply(&Event::Rejoined { conv: ConvId(1), epoch: 9 }, 7), Applied::Updated);
        assert_eq!(t.entries.len(), 2);
        assert!(t.entries.iter().all(|e| e.kind == EntryKind::Notice && e.body.contains("diverged")));
        assert_eq!(t.unread, 0);
    }

    #[test]
    fn a_first_message_from_a_stranger_is_a_request_until_accepted_or_answered() {
        let (me, friend) = (UserId(1), UserId(3));
        let mut t = Timeline::new(ConvId(1));
        let is_friend = |u: UserId| u == friend;
        assert!(!is_request(me, false, &t.entries, is_friend), "nothing written: not a request");
        t.apply(&msg(1, 1, 2, false, text("hi, I'm a stranger")), 5);
        assert!(is_request(me, false, &t.entries, is_friend));
        assert!(!is_request(me, true, &t.entries, is_friend), "accepted");
        t.apply(&msg(2, 2, 3, false, text("I know them")), 5);
        assert!(!is_request(me, false, &t.entries, is_friend), "a contact wrote too (a group)");
        let mut t = Timeline::new(ConvId(2));
        t.apply(&msg(1, 1, 2, false, text("hi")), 5);
        // Written from another of my devices: `own` is false there, but it is still me.
        t.apply(&msg(2, 2, 1, false, text("answered")), 5);
        assert!(!is_request(me, false, &t.entries, |_| false), "answered: not a request");
    }

    #[test]
    fn own_message_is_not_duplicated_when_it_comes_back() {
        let mut t = Timeline::new(ConvId(1));
        t.apply(&msg(0, 1, 1, true, text("mine")), 5);
        t.apply(&msg(7, 1, 1, true, text("mine")), 5);
        assert_eq!(t.entries.len(), 1);
        assert_eq!(t.entries[0].seq, 7);
    }
}
