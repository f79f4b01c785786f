//! History layouts as earlier versions of the app wrote them to IndexedDB, frozen field for field
//! (postcard has no field names, so a layout cannot grow in place): entries and pending effects
//! from before attachments. [`crate::stored`] reads them and writes the current layout back.

use anytime_client::content::ReceiptKind;
use anytime_client::timeline::{Effect, Entry, EntryKind, PaymentInfo, Preview};
use anytime_proto::frame::Seq;
use anytime_proto::{DeviceId, MsgId, UserId};
use serde::Deserialize;

/// An entry of chunk format 1 (before attachments).
#[derive(Deserialize)]
pub(crate) struct EntryV1 {
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
    mentions: Vec<UserId>,
    forwarded: bool,
    preview: Option<Preview>,
    starred: bool,
    payment: Option<PaymentInfo>,
}

impl From<EntryV1> for Entry {
    fn from(e: EntryV1) -> Entry {
        Entry {
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
            mentions: e.mentions,
            forwarded: e.forwarded,
            preview: e.preview,
            starred: e.starred,
            payment: e.payment,
            attachment: None,
        }
    }
}

/// A pending effect of head format 2 (its entries are [`EntryV1`]s).
#[derive(Deserialize)]
pub(crate) enum EffectV1 {
    Insert(EntryV1),
    SetTimer { seconds: u32, notice: EntryV1 },
    React { to: MsgId, user: UserId, emoji: String, remove: bool },
    Edit { to: MsgId, author: UserId, body: String },
    Delete { to: MsgId, author: UserId },
    Receipt { user: UserId, kind: ReceiptKind, messages: Vec<MsgId>, own: bool },
    Preview { to: MsgId, author: UserId, preview: Preview },
    Star { to: MsgId, starred: bool },
    Hide { to: MsgId },
}

impl From<EffectV1> for Effect {
    fn from(e: EffectV1) -> Effect {
        match e {
            EffectV1::Insert(entry) => Effect::Insert(entry.into()),
            EffectV1::SetTimer { seconds, notice } => Effect::SetTimer { seconds, notice: notice.into() },
            EffectV1::React { to, user, emoji, remove } => Effect::React { to, user, emoji, remove },
            EffectV1::Edit { to, author, body } => Effect::Edit { to, author, body },
            EffectV1::Delete { to, author } => Effect::Delete { to, author },
            EffectV1::Receipt { user, kind, messages, own } => Effect::Receipt { user, kind, messages, own },
            EffectV1::Preview { to, author, preview } => Effect::Preview { to, author, preview },
            EffectV1::Star { to, starred } => Effect::Star { to, starred },
            EffectV1::Hide { to } => Effect::Hide { to },
        }
    }
}
