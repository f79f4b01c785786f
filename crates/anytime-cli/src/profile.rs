//! A profile directory: one identity (account + device) with its local store — MLS state,
//! decrypted history, the outbox and per-conversation progress. The store is
//! `anytime-client-store-sqlite`; this module shapes its history for the terminal (text and JSON).

use anytime_client::timeline::{Entry, PaymentInfo, Preview};
use anytime_proto::{ConvId, MsgId};

pub use anytime_client_store_sqlite::SqliteClientStore as Profile;
pub use anytime_proto::ids::hex;

/// A row of the local history, as `anytime history` prints it (`--json`: one object per line).
#[derive(Debug, Clone, serde::Serialize)]
pub struct HistoryEntry {
    pub msg_id: String,
    pub conv: String,
    pub seq: u64,
    pub sender: String,
    pub sender_device: String,
    pub sent_at_ms: u64,
    pub kind: &'static str,
    pub text: String,
    pub reply_to: Option<String>,
    pub edited: bool,
    pub deleted: bool,
    pub own: bool,
    /// (user, emoji)
    pub reactions: Vec<(String, String)>,
    pub delivered_to: Vec<String>,
    pub read_by: Vec<String>,
    /// Users the author mentioned (@name), by id.
    pub mentions: Vec<String>,
    /// Passed on from another chat.
    pub forwarded: bool,
    /// The author's preview of the first link: `{url, title, description}`.
    pub preview: Option<Preview>,
    /// Starred on this device.
    pub starred: bool,
    /// A payment message: `{transfer, to, amount, currency}` as its sender claims (the text is
    /// its note; `anytime wallet check TRANSFER` asks the server).
    pub payment: Option<PaymentInfo>,
    /// A file: `{name, mime, size, blob}` (`anytime download CHAT MSG` fetches and opens it;
    /// its key stays in the profile).
    pub attachment: Option<serde_json::Value>,
}

/// "1.2 MB" for people.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

impl HistoryEntry {
    pub fn new(conv: ConvId, entry: Entry) -> HistoryEntry {
        HistoryEntry {
            msg_id: entry.msg_id.to_string(),
            conv: conv.to_string(),
            seq: entry.seq,
            sender: entry.sender.to_string(),
            sender_device: entry.sender_device.to_string(),
            sent_at_ms: entry.sent_at_ms,
            kind: entry.kind.name(),
            text: entry.body,
            reply_to: entry.reply_to.map(|id| id.to_string()),
            edited: entry.edited,
            deleted: entry.deleted,
            own: entry.own,
            reactions: entry.reactions.into_iter().map(|(user, emoji)| (user.to_string(), emoji)).collect(),
            delivered_to: entry.delivered_to.iter().map(ToString::to_string).collect(),
            read_by: entry.read_by.iter().map(ToString::to_string).collect(),
            mentions: entry.mentions.iter().map(ToString::to_string).collect(),
            forwarded: entry.forwarded,
            preview: entry.preview,
            starred: entry.starred,
            payment: entry.payment,
            attachment: entry.attachment.map(|a| {
                serde_json::json!({"name": a.name, "mime": a.mime, "size": a.size, "blob": a.blob,
                    "width": a.width, "height": a.height})
            }),
        }
    }

    /// The message as a line of text (after who sent it): a "(forwarded)" label, the text as
    /// written, flags, "(mentions you)" when `me` is mentioned, reactions, and the link preview
    /// on a line of its own.
    pub fn text_line(&self, me: Option<&str>) -> String {
        let body = match (&self.payment, &self.attachment) {
            (Some(p), _) => format!("💸 {} {}{}", p.amount, p.currency, note_suffix(&self.text)),
            (None, Some(a)) => format!(
                "📎 {} ({}){}",
                a["name"].as_str().unwrap_or_default(),
                human_size(a["size"].as_u64().unwrap_or_default()),
                note_suffix(&self.text)
            ),
            (None, None) => self.text.clone(),
        };
        self.decorated(&body, me)
    }

    /// `body` (the message as a line) with the entry's labels, flags, reactions and preview.
    pub fn decorated(&self, body: &str, me: Option<&str>) -> String {
        let mut line = String::new();
        if self.forwarded {
            line.push_str("(forwarded) ");
        }
        line.push_str(body);
        if self.edited {
            line.push_str(" (edited)");
        }
        if self.deleted {
            line.push_str(" (deleted)");
        }
        if me.is_some_and(|me| self.mentions.iter().any(|m| m == me)) {
            line.push_str(" (mentions you)");
        }
        if self.starred {
            line.push_str(" ★");
        }
        let reactions: String = self.reactions.iter().map(|(_, emoji)| emoji.as_str()).collect();
        if !reactions.is_empty() {
            line.push(' ');
            line.push_str(&reactions);
        }
        if let Some(preview) = &self.preview {
            line.push('\n');
            line.push_str(&preview_line(preview));
        }
        line
    }
}

/// A payment message as a line: `💸 alice sent 12.34 USD to bob — for lunch`.
pub fn payment_line(from: &str, to: &str, amount: &str, currency: &str, note: &str) -> String {
    format!("💸 {from} sent {amount} {currency} to {to}{}", note_suffix(note))
}

/// A money request as a line: `🙏 bob asked alice for 5.00 USD — tickets [request ID]`.
pub fn request_line(from: &str, payer: &str, amount: &str, currency: &str, note: &str, id: &str) -> String {
    format!("🙏 {from} asked {payer} for {amount} {currency}{} [request {id}]", note_suffix(note))
}

/// A split bill as a line: `🧾 alice split 30.00 USD — dinner [split ID]`.
pub fn split_line(from: &str, total: &str, currency: &str, note: &str, id: &str) -> String {
    format!("🧾 {from} split {total} {currency}{} [split {id}]", note_suffix(note))
}

/// A red envelope as a line: `🧧 alice: 10.00 USD in 5 shares — best wishes [envelope ID]`.
pub fn envelope_line(from: &str, total: &str, currency: &str, shares: u32, note: &str, id: &str) -> String {
    format!("🧧 {from}: {total} {currency} in {shares} shares{} [envelope {id}]", note_suffix(note))
}

/// The line of a money entry of the history (`kind` as `EntryKind::name`): who did what.
pub fn money_line(kind: &str, from: &str, to: &str, p: &PaymentInfo, note: &str) -> String {
    match kind {
        "money_request" => request_line(from, to, &p.amount, &p.currency, note, &p.transfer),
        "split_bill" => split_line(from, &p.amount, &p.currency, note, &p.transfer),
        "red_envelope" => envelope_line(from, &p.amount, &p.currency, p.shares, note, &p.transfer),
        _ => payment_line(from, to, &p.amount, &p.currency, note),
    }
}

fn note_suffix(note: &str) -> String {
    if note.is_empty() {
        String::new()
    } else {
        format!(" — {note}")
    }
}

/// A link preview as a line under its message: `    ↳ Title — https://…`.
pub fn preview_line(preview: &Preview) -> String {
    let label = if preview.title.is_empty() { &preview.description } else { &preview.title };
    format!("    ↳ {label} — {}", preview.url)
}

pub fn parse_msg_id(text: &str) -> anyhow::Result<MsgId> {
    text.parse().map_err(|_| anyhow::anyhow!("a message id is 32 hex digits (see `anytime history`)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_id_with_non_ascii_characters_is_an_error_not_a_panic() {
        // 32 bytes, but 'é' is two of them: slicing by bytes would split it.
        let text = format!("a\u{e9}{}", "a".repeat(29));
        assert_eq!(text.len(), 32);
        assert!(parse_msg_id(&text).is_err());
        assert!(parse_msg_id(&"0f".repeat(16)).is_ok());
    }

    #[test]
    fn a_payment_reads_as_who_paid_whom_and_why() {
        assert_eq!(
            payment_line("alice", "bob", "12.34", "USD", "for lunch"),
            "💸 alice sent 12.34 USD to bob — for lunch"
        );
        assert_eq!(payment_line("alice", "bob", "5", "JPY", ""), "💸 alice sent 5 JPY to bob");
    }
}
