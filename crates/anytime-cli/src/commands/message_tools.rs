//! Mentions and link previews for `send` and `reply`, plus `forward`, `star`, `starred` and
//! `delete --for-me`. What these mean (entries, local effects, reading a page) is the client
//! core's; this module finds who `@name` is, fetches pages, looks entries up and prints.

use std::collections::{BTreeSet, HashMap};

use anyhow::Context;
use anytime_client::content::{self, Content, LinkPreview};
use anytime_client::preview;
use anytime_client::timeline::{Entry, Preview};
use anytime_client::{ClientStore, Transport};
use anytime_proto::frame::{self, ConvKind};
use anytime_proto::limits::MENTIONS_MAX;
use anytime_proto::{ConvId, MsgId, ServerFrame, UserId};
use serde_json::json;

use super::{name_of, Session};
use crate::preview_fetch;
use crate::profile::{hex, preview_line, HistoryEntry, Profile};

/// Usernames of chat members looked up per command to learn whom the `@name`s mean. Requests
/// count against the account's rate limit (bursts of 500), and the people one names are mostly
/// known already (they wrote in the chat); in a larger group, later members go unresolved.
const MENTION_LOOKUPS_MAX: usize = 200;

impl Session {
    /// The members of `conv` that `text` mentions (`@username`). Names are matched on this
    /// device against the member list, so the server never sees what follows an `@`.
    pub(super) async fn mentions(&mut self, conv: ConvId, text: &str) -> anyhow::Result<Vec<UserId>> {
        let words = mention_words(text);
        if words.is_empty() {
            return Ok(Vec::new());
        }
        let info = match self.net.request(frame::GetConversation { conv }.into()).await? {
            ServerFrame::ConversationInfo(info) => info,
            // Not a chat of this account: sending says so.
            _ => return Ok(Vec::new()),
        };
        let me = self.client.me().user;
        let others: Vec<UserId> = info.members.iter().map(|m| m.user).filter(|user| *user != me).collect();
        let unknown: Vec<UserId> =
            others.iter().copied().filter(|user| !self.out.names.borrow().contains_key(user)).collect();
        for user in unknown.into_iter().take(MENTION_LOOKUPS_MAX) {
            if self.all_named(&words, &others) {
                break;
            }
            self.learn_names([user]).await;
        }
        let names = self.out.names.borrow();
        let members = others.iter().filter_map(|user| names.get(user).map(|name| (*user, name.as_str())));
        Ok(content::mentioned(text, members))
    }

    /// Whether every word names one of `members` whose username is known.
    fn all_named(&self, words: &[String], members: &[UserId]) -> bool {
        let names = self.out.names.borrow();
        let named = |word: &String| members.iter().any(|u| names.get(u).is_some_and(|n| n.eq_ignore_ascii_case(word)));
        words.iter().all(named)
    }

    /// After `send`/`reply`: fetches the page of the first link in `text` and sends its preview
    /// for the message `to`. The message is already sent, so a preview that cannot be made is a
    /// note on stderr, not a failure.
    pub(super) async fn send_link_preview(&mut self, conv: ConvId, to: MsgId, text: &str) -> anyhow::Result<()> {
        let Some(url) = preview::first_link(text) else { return Ok(()) };
        let page = match preview_fetch::fetch_page(url).await {
            Ok(page) => page,
            Err(error) => {
                self.out.note(&format!("no link preview for {url}: {error:#}"));
                return Ok(());
            }
        };
        match preview::from_page(to, url, &page) {
            Some(preview) => self.send_preview(conv, preview).await,
            None => {
                self.out.note(&format!("no link preview for {url}: the page has no title or description"));
                Ok(())
            }
        }
    }

    async fn send_preview(&mut self, conv: ConvId, preview: LinkPreview) -> anyhow::Result<()> {
        let (to, url, shown) = (preview.to, preview.url.clone(), shown(&preview));
        match self.send_quietly(conv, Content::LinkPreview(preview)).await {
            Ok((msg_id, seq)) => self.out.print(
                preview_line(&shown),
                json!({"msg_id": hex(&msg_id.0), "seq": seq, "conv": conv, "preview_for": hex(&to.0), "preview": shown}),
            ),
            Err(error) => {
                self.out.note(&format!("no link preview for {url}: sending it failed ({error:#}); the message was sent"));
                Ok(())
            }
        }
    }
}

/// `forward`: sends the text of a message of this device's history to another chat, as a
/// forwarded message. Its link preview goes along (made by its author; nothing is fetched).
pub(super) async fn forward(s: &mut Session, from: ConvId, msg_id: MsgId, to: ConvId) -> anyhow::Result<()> {
    let entry = on_device(s.client.store(), from, msg_id)?;
    let content = entry.forward().with_context(|| {
        format!("message {msg_id} has no text to forward (it was deleted, or it is not a message); pick another with `anytime history {from}`")
    })?;
    let forwarded = s.send(to, content).await?;
    if let Some(p) = entry.preview {
        let preview = LinkPreview { to: forwarded, url: p.url, title: p.title, description: p.description };
        s.send_preview(to, preview).await?;
    }
    Ok(())
}

/// `star` / `star --remove`: on this device only.
pub(super) fn star(s: &mut Session, conv: ConvId, msg_id: MsgId, starred: bool) -> anyhow::Result<()> {
    on_device(s.client.store(), conv, msg_id)?;
    s.client.star(conv, msg_id, starred)?;
    s.out.print(
        format!("{} {msg_id}", if starred { "starred" } else { "unstarred" }),
        json!({"conv": conv, "msg_id": msg_id.to_string(), "starred": starred}),
    )
}

/// `delete --for-me`: the message leaves this device's history; nobody else is told.
pub(super) fn delete_for_me(s: &mut Session, conv: ConvId, msg_id: MsgId) -> anyhow::Result<()> {
    on_device(s.client.store(), conv, msg_id)?;
    s.client.delete_for_me(conv, msg_id)?;
    s.out.print(
        format!("deleted {msg_id} from this device (the other members still have it)"),
        json!({"conv": conv, "msg_id": msg_id.to_string(), "deleted_for_me": true}),
    )
}

/// `starred`: every message starred on this device, oldest first, with its chat and sender.
pub(super) async fn starred(s: &mut Session) -> anyhow::Result<()> {
    let entries = s.client.store().starred()?;
    if entries.is_empty() {
        return Ok(());
    }
    let convs: BTreeSet<ConvId> = entries.iter().map(|(conv, _)| *conv).collect();
    let me = s.client.me().user;
    let mut titles = HashMap::new();
    for chat in s.chat_list().await?.into_iter().filter(|c| convs.contains(&c.conv)) {
        // A direct chat has no name of its own: it is called after the other person.
        let title = if chat.kind == ConvKind::Direct { s.peer_name(chat.conv, me).await } else { chat.name };
        titles.insert(chat.conv, title);
    }
    s.learn_names(entries.iter().map(|(_, e)| e.sender)).await;
    let me = me.to_string();
    for (conv, entry) in entries {
        let title = titles.get(&conv).cloned().unwrap_or_else(|| "(a chat you are no longer in)".to_owned());
        let sender_name = s.out.names.borrow().get(&entry.sender).cloned();
        let who = name_of(&s.out.names.borrow(), entry.sender);
        let e = HistoryEntry::new(conv, entry);
        let human =
            format!("{conv} {} {} {title:?} {who}: {}", e.msg_id, utc_minute(e.sent_at_ms), e.text_line(Some(&me)));
        let mut value = serde_json::to_value(&e)?;
        value["chat"] = json!(title);
        value["sender_name"] = json!(sender_name);
        s.out.print(human, value)?;
    }
    Ok(())
}

/// Whom a received message mentions, as its history entry keeps them: the first
/// `MENTIONS_MAX`, each once.
pub(super) fn mentions_in(content: &Content) -> Vec<UserId> {
    let listed = match content {
        Content::Text(text) => text.mentions.as_slice(),
        Content::Reply(reply) => reply.mentions.as_slice(),
        _ => &[],
    };
    let mut mentions = Vec::new();
    for user in listed.iter().take(MENTIONS_MAX) {
        if !mentions.contains(user) {
            mentions.push(*user);
        }
    }
    mentions
}

/// A link preview as a history entry shows it.
pub(super) fn shown(preview: &LinkPreview) -> Preview {
    Preview { url: preview.url.clone(), title: preview.title.clone(), description: preview.description.clone() }
}

/// The entry `msg_id` of `conv` in this device's history, or an error that says where to look.
fn on_device(profile: &Profile, conv: ConvId, msg_id: MsgId) -> anyhow::Result<Entry> {
    find_entry(profile, conv, msg_id)?.with_context(|| {
        format!("no message {msg_id} in chat {conv} on this device; `anytime history {conv}` lists them")
    })
}

fn find_entry(profile: &Profile, conv: ConvId, msg_id: MsgId) -> anyhow::Result<Option<Entry>> {
    Ok(profile.entry(conv, msg_id)?)
}

/// The words of `body` that could name someone, lowercased, each once: they say when enough
/// names are known. The same words as `content::mentioned` reads (its unit test holds them
/// together).
fn mention_words(body: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    let names = body
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | '(' | ')'))
        .filter_map(|word| word.strip_prefix('@'))
        .map(|name| name.trim_end_matches(['.', ',', ':', ';', '!', '?', '\'']).to_ascii_lowercase());
    for name in names.filter(|name| !name.is_empty()) {
        if !words.contains(&name) {
            words.push(name);
        }
    }
    words
}

/// `2026-12-04 17:07 UTC` for a time in milliseconds since the Unix epoch.
pub(super) fn utc_minute(ms: u64) -> String {
    let minutes = ms / 60_000;
    let (days, minute_of_day) = (minutes / 1_440, minutes % 1_440);
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", minute_of_day / 60, minute_of_day % 60)
}

/// (year, month, day) of the day `days` after 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_words_looked_up_are_the_ones_the_core_reads_as_mentions() {
        let text = "@Bob, bring the map; @cat too. (@dan) mail@eve @@x @ @bob! @Bob's";
        let words = mention_words(text);
        assert_eq!(words, ["bob", "cat", "dan", "@x", "bob's"]);
        // Members named after exactly these words are exactly the ones mentioned.
        let members: Vec<(UserId, &str)> =
            words.iter().enumerate().map(|(i, w)| (UserId(i as u64), w.as_str())).collect();
        let found = content::mentioned(text, members.iter().copied());
        assert_eq!(found, (0..words.len() as u64).map(UserId).collect::<Vec<_>>());
        assert!(mention_words("no one here mail@x.org").is_empty());
    }

    #[test]
    fn times_read_as_utc_dates() {
        assert_eq!(utc_minute(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_minute(951_782_400_000), "2000-02-29 00:00 UTC");
        assert_eq!(utc_minute(1_796_397_959_000), "2026-12-04 15:25 UTC");
    }
}
