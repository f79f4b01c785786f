//! What travels inside the encryption: a content kind and its body, in the versioned envelope
//! of `anytime_proto::envelope`.
//!
//! New kinds (attachments, payments, orders, game moves) get new numbers; a client that does not
//! know a kind decodes it as [`Content::Unsupported`] and shows "unsupported message" — never an
//! error — so old clients keep working as the schema grows.

use anytime_proto::envelope::{Envelope, EnvelopeError};
use anytime_proto::{MsgId, UserId};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReceiptKind {
    Delivered,
    Read,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Text {
    pub body: String,
    pub mentions: Vec<UserId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub to: MsgId,
    pub body: String,
    pub mentions: Vec<UserId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reaction {
    pub to: MsgId,
    pub emoji: String,
    /// Takes a previous reaction back.
    pub remove: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edit {
    pub to: MsgId,
    pub body: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delete {
    pub to: MsgId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub kind: ReceiptKind,
    pub messages: Vec<MsgId>,
}

/// A message passed on from another chat: shown with a "Forwarded" label, without who wrote it
/// or where (as WhatsApp and Signal do). Mentions stay behind: they named people of that chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forward {
    pub body: String,
}

/// A preview of the first link in the author's message `to`, made by the author's device (the
/// server never fetches a URL). Sent right after the message, so a slow or dead site never holds
/// the message back; applies only to the author's own message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkPreview {
    pub to: MsgId,
    pub url: String,
    pub title: String,
    pub description: String,
}

/// Money sent to someone in this chat: the server's ledger moved it (the wallet answered with
/// `transfer`); this message tells the chat, with a note only the chat can read. The amount is
/// the sender's claim: a receiver checks the transfer with the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// The ledger transfer id, 32 hex digits.
    pub transfer: String,
    pub to: UserId,
    /// Decimal, in `currency`'s unit ("12.34").
    pub amount: String,
    pub currency: String,
    pub note: String,
}

/// A money request, a split bill or a red envelope the wallet made, told to the chat (the note
/// stays end to end encrypted). `id` is the wallet's id of it; members act on it through the
/// wallet (pay, decline, grab) and read its state there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoneyRequest {
    pub id: String,
    pub payer: UserId,
    pub amount: String,
    pub currency: String,
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitBill {
    pub id: String,
    /// The whole bill.
    pub total: String,
    pub currency: String,
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedEnvelope {
    pub id: String,
    pub total: String,
    pub currency: String,
    pub shares: u32,
    pub note: String,
}

/// A file sealed on the sending device (`anytime_media::seal`) and uploaded as a blob: the key
/// and digest travel only here, inside the MLS message, so the server keeps bytes it cannot read.
/// Photos, clips and voice notes are attachments whose `mime` says so, with their dimensions or
/// length, a small thumbnail and a placeholder string drawn while the file loads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The server's blob id, 32 hex digits.
    pub blob: String,
    pub key: [u8; 32],
    /// SHA-256 of the sealed bytes, checked before a download is trusted.
    pub digest: [u8; 32],
    /// Bytes of the file itself.
    pub size: u64,
    pub name: String,
    pub mime: String,
    /// What the sender wrote with it.
    pub caption: String,
    /// Pixels, for photos and clips; 0 when not known.
    pub width: u32,
    pub height: u32,
    /// For clips and voice notes; 0 otherwise.
    pub duration_ms: u32,
    /// A small JPEG shown before the file is fetched; empty when there is none.
    pub thumbnail: Vec<u8>,
    /// A blurhash-style placeholder; empty when there is none.
    pub placeholder: String,
}

impl Attachment {
    /// Whether a receiving device can use it: a blob id, sizes within the limits, text fields
    /// within theirs. Anything else is shown as an unsupported message.
    pub fn acceptable(&self) -> bool {
        use anytime_proto::limits::{
            ATTACHMENT_MIME_BYTES_MAX, ATTACHMENT_NAME_BYTES_MAX, ATTACHMENT_THUMBNAIL_BYTES_MAX, BLOB_BYTES_MAX,
        };
        anytime_media::blob::id_from_hex(&self.blob).is_some()
            && anytime_media::seal::sealed_len(self.size) <= BLOB_BYTES_MAX
            && self.name.len() <= ATTACHMENT_NAME_BYTES_MAX as usize
            && self.mime.len() <= ATTACHMENT_MIME_BYTES_MAX as usize
            && self.caption.len() <= anytime_proto::limits::MESSAGE_BYTES_MAX as usize / 2
            && self.thumbnail.len() <= ATTACHMENT_THUMBNAIL_BYTES_MAX as usize
            && self.placeholder.len() <= 128
    }

    /// Bytes of the sealed blob.
    pub fn sealed_size(&self) -> u64 {
        anytime_media::seal::sealed_len(self.size)
    }
}

/// Sets the chat's disappearing-message timer; 0 turns it off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    pub seconds: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Text(Text),
    Reply(Reply),
    Reaction(Reaction),
    Edit(Edit),
    Delete(Delete),
    Receipt(Receipt),
    Timer(Timer),
    Forward(Forward),
    LinkPreview(LinkPreview),
    Payment(Payment),
    MoneyRequest(MoneyRequest),
    SplitBill(SplitBill),
    RedEnvelope(RedEnvelope),
    /// Boxed: the key and digest make it the largest kind by far.
    Attachment(Box<Attachment>),
    /// A kind this build does not know (from a newer client).
    Unsupported {
        kind: u16,
    },
}

/// The members `body` mentions: words `@name` (case-insensitive, trailing punctuation ignored)
/// that name one of `members` (user, username), each once, at most `MENTIONS_MAX`. Both
/// clients write mentions this way, so what a picker inserted and what a user typed agree.
pub fn mentioned<'a>(body: &str, members: impl IntoIterator<Item = (UserId, &'a str)> + Clone) -> Vec<UserId> {
    let mut found = Vec::new();
    for word in body.split(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | '(' | ')')) {
        let Some(name) = word.strip_prefix('@') else { continue };
        let name = name.trim_end_matches(['.', ',', ':', ';', '!', '?', '\'']);
        let user = members.clone().into_iter().find(|(_, username)| username.eq_ignore_ascii_case(name));
        if let Some((user, _)) = user {
            if !found.contains(&user) && found.len() < anytime_proto::limits::MENTIONS_MAX {
                found.push(user);
            }
        }
    }
    found
}

impl Content {
    /// Something a person wrote or sent (not a receipt, edit, reaction or preview): the kinds a
    /// receiving device acknowledges with a delivery receipt and notifies about.
    pub fn is_message(&self) -> bool {
        matches!(
            self,
            Content::Text(_)
                | Content::Reply(_)
                | Content::Forward(_)
                | Content::Payment(_)
                | Content::MoneyRequest(_)
                | Content::SplitBill(_)
                | Content::RedEnvelope(_)
                | Content::Attachment(_)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    #[error("the message is not an Anytime content envelope")]
    NotAnEnvelope,
    #[error("content envelope version {0} is newer than this client understands")]
    NewerEnvelope(u16),
    #[error("the body of content kind {0} is malformed")]
    MalformedBody(u16),
}

macro_rules! kinds {
    ($($num:literal => $variant:ident,)*) => {
        impl Content {
            pub fn encode(&self) -> Vec<u8> {
                let (kind, body) = match self {
                    $(Content::$variant(body) => ($num, postcard::to_allocvec(body)),)*
                    Content::Unsupported { kind } => (*kind, Ok(Vec::new())),
                };
                // Plain data into a Vec cannot fail.
                Envelope::new(kind, body.unwrap_or_default()).encode()
            }

            pub fn decode(bytes: &[u8]) -> Result<Content, ContentError> {
                let envelope = Envelope::decode(bytes).map_err(|e| match e {
                    EnvelopeError::NotAnEnvelope => ContentError::NotAnEnvelope,
                    EnvelopeError::Newer(version) => ContentError::NewerEnvelope(version),
                })?;
                match envelope.kind {
                    $($num => postcard::from_bytes(&envelope.body)
                        .map(Content::$variant)
                        .map_err(|_| ContentError::MalformedBody($num)),)*
                    kind => Ok(Content::Unsupported { kind }),
                }
            }
        }
    };
}

kinds! {
    1 => Text,
    2 => Reply,
    3 => Reaction,
    4 => Edit,
    5 => Delete,
    6 => Receipt,
    7 => Timer,
    8 => Forward,
    9 => LinkPreview,
    10 => Payment,
    11 => MoneyRequest,
    12 => SplitBill,
    13 => RedEnvelope,
    14 => Attachment,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_are_members_named_after_an_at_sign_once_each() {
        let members = [(UserId(1), "alice"), (UserId(2), "bob"), (UserId(3), "bo")];
        let found = mentioned("@Bob, @alice: ask @bob and @carol (@bo) mail@bob", members);
        assert_eq!(found, vec![UserId(2), UserId(1), UserId(3)]);
        assert!(mentioned("no one here @", members).is_empty());
    }

    #[test]
    fn every_kind_round_trips_and_unknown_kinds_are_unsupported_not_errors() {
        let samples = [
            Content::Text(Text { body: "hi".into(), mentions: vec![UserId(3)] }),
            Content::Reply(Reply { to: MsgId([1; 16]), body: "yes".into(), mentions: vec![] }),
            Content::Reaction(Reaction { to: MsgId([1; 16]), emoji: "👍".into(), remove: false }),
            Content::Edit(Edit { to: MsgId([1; 16]), body: "fixed".into() }),
            Content::Delete(Delete { to: MsgId([1; 16]) }),
            Content::Receipt(Receipt { kind: ReceiptKind::Read, messages: vec![MsgId([2; 16])] }),
            Content::Timer(Timer { seconds: 3600 }),
            Content::Forward(Forward { body: "passed on".into() }),
            Content::LinkPreview(LinkPreview {
                to: MsgId([3; 16]),
                url: "https://example.org/a".into(),
                title: "A".into(),
                description: "About a".into(),
            }),
            Content::Payment(Payment {
                transfer: "00ff".repeat(8),
                to: UserId(4),
                amount: "12.34".into(),
                currency: "USD".into(),
                note: "lunch".into(),
            }),
            Content::MoneyRequest(MoneyRequest {
                id: "01".repeat(16),
                payer: UserId(5),
                amount: "5".into(),
                currency: "EUR".into(),
                note: "tickets".into(),
            }),
            Content::SplitBill(SplitBill {
                id: "02".repeat(16),
                total: "30".into(),
                currency: "USD".into(),
                note: "dinner".into(),
            }),
            Content::RedEnvelope(RedEnvelope {
                id: "03".repeat(16),
                total: "10".into(),
                currency: "USD".into(),
                shares: 5,
                note: "happy new year".into(),
            }),
            Content::Attachment(Box::new(Attachment {
                blob: "04".repeat(16),
                key: [5; 32],
                digest: [6; 32],
                size: 1234,
                name: "photo.jpg".into(),
                mime: "image/jpeg".into(),
                caption: "the view".into(),
                width: 4000,
                height: 3000,
                duration_ms: 0,
                thumbnail: vec![0xff, 0xd8],
                placeholder: "LEHV6nWB2yk8".into(),
            })),
        ];
        for content in samples {
            assert_eq!(Content::decode(&content.encode()), Ok(content));
        }
        let future = Envelope::new(900, vec![1, 2, 3]).encode();
        assert_eq!(Content::decode(&future), Ok(Content::Unsupported { kind: 900 }));
        let newer = Envelope { version: 2, kind: 1, body: vec![] }.encode();
        assert_eq!(Content::decode(&newer), Err(ContentError::NewerEnvelope(2)));
        assert_eq!(Content::decode(&[0xff; 3]), Err(ContentError::NotAnEnvelope));
    }
}
