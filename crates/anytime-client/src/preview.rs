//! Link previews, made by the sender's device: find the first link in a message, read a title
//! and a description from the page the shell fetched, and bound what a receiver accepts. No I/O
//! here: the CLI fetches with reqwest, the browser with `fetch`, and both hand the text in.
//!
//! The page is read by a small scanner of `<title>` and `<meta>` tags rather than an HTML parser
//! (html5ever and friends): a preview needs three values from the head, and a full parser would
//! add hundreds of kilobytes to the web client's wasm for them.

use anytime_proto::limits::{
    PREVIEW_DESCRIPTION_BYTES_MAX, PREVIEW_PAGE_BYTES_MAX, PREVIEW_TITLE_BYTES_MAX, PREVIEW_URL_BYTES_MAX,
};
use anytime_proto::MsgId;

use crate::content::LinkPreview;

/// The first http(s) link in `body`, without trailing punctuation that ends a sentence.
pub fn first_link(body: &str) -> Option<&str> {
    body.split(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"'))
        .map(|word| word.trim_start_matches(['(', '[', '\'']))
        .filter(|word| word.starts_with("https://") || word.starts_with("http://"))
        .map(|word| word.trim_end_matches(['.', ',', ';', ':', '!', '?', ')', ']', '\'']))
        .find(|url| url.len() <= PREVIEW_URL_BYTES_MAX && url.split("://").nth(1).is_some_and(|rest| !rest.is_empty()))
}

/// The preview of `url` for the message `to`, from the page's text (at most
/// `PREVIEW_PAGE_BYTES_MAX` of it is read). `None` when the page names nothing to show.
pub fn from_page(to: MsgId, url: &str, page: &str) -> Option<LinkPreview> {
    let head = &page[..floor_char_boundary(page, PREVIEW_PAGE_BYTES_MAX)];
    let mut og_title = None;
    let mut og_description = None;
    let mut description = None;
    for tag in tags(head, "meta") {
        let key = attribute(tag, "property").or_else(|| attribute(tag, "name")).map(|k| k.to_ascii_lowercase());
        let Some(content) = attribute(tag, "content") else { continue };
        match key.as_deref() {
            Some("og:title") => og_title = og_title.or(Some(content)),
            Some("og:description") => og_description = og_description.or(Some(content)),
            Some("description") => description = description.or(Some(content)),
            _ => {}
        }
    }
    let title = og_title.map(decode_entities).or_else(|| title_element(head)).unwrap_or_default();
    let description = og_description.or(description).map(decode_entities).unwrap_or_default();
    let preview = LinkPreview {
        to,
        url: url.to_owned(),
        title: clamp(&collapse_spaces(&title), PREVIEW_TITLE_BYTES_MAX),
        description: clamp(&collapse_spaces(&description), PREVIEW_DESCRIPTION_BYTES_MAX),
    };
    (!preview.title.is_empty() || !preview.description.is_empty()).then_some(preview)
}

/// Whether a received preview is within bounds and about an http(s) link; others are ignored.
pub fn acceptable(preview: &LinkPreview) -> bool {
    (preview.url.starts_with("https://") || preview.url.starts_with("http://"))
        && preview.url.len() <= PREVIEW_URL_BYTES_MAX
        && preview.title.len() <= PREVIEW_TITLE_BYTES_MAX
        && preview.description.len() <= PREVIEW_DESCRIPTION_BYTES_MAX
}

/// The insides of every `<name ...>` tag, case-insensitively, in order.
fn tags<'a>(html: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    let lower = html.to_ascii_lowercase();
    let open = format!("<{name}");
    let mut at = 0;
    std::iter::from_fn(move || loop {
        let start = at + lower[at..].find(&open)?;
        let after = start + open.len();
        let end = after + lower[after..].find('>')?;
        at = end + 1;
        // `<metadata>` is not `<meta>`.
        if lower[after..].starts_with(|c: char| c.is_ascii_whitespace() || c == '/') {
            return Some(&html[after..end]);
        }
    })
}

/// The value of `name="..."` (or single-quoted, or bare) inside a tag.
fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let lower = tag.to_ascii_lowercase();
    let mut from = 0;
    while let Some(found) = lower[from..].find(name) {
        let start = from + found;
        from = start + name.len();
        let before_ok = start == 0 || lower.as_bytes()[start - 1].is_ascii_whitespace();
        let rest = tag[from..].trim_start();
        if !before_ok || !rest.starts_with('=') {
            continue;
        }
        let value = rest[1..].trim_start();
        return Some(match value.chars().next() {
            Some(quote @ ('"' | '\'')) => value[1..].split(quote).next().unwrap_or_default(),
            _ => value.split(|c: char| c.is_ascii_whitespace() || c == '/').next().unwrap_or_default(),
        });
    }
    None
}

fn title_element(html: &str) -> Option<String> {
    let lower = html.to_ascii_lowercase();
    let open = lower.find("<title")?;
    let start = open + lower[open..].find('>')? + 1;
    let end = start + lower[start..].find("</title")?;
    Some(decode_entities(&html[start..end]))
}

/// The entities pages use in titles: the five named ones and numeric references.
fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let decoded = rest.find(';').filter(|&semi| semi <= 10).and_then(|semi| {
            let name = &rest[1..semi];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" | "#39" => Some('\''),
                "nbsp" => Some(' '),
                _ => name
                    .strip_prefix("#x")
                    .or_else(|| name.strip_prefix("#X"))
                    .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                    .or_else(|| name.strip_prefix('#').and_then(|dec| dec.parse().ok()))
                    .and_then(char::from_u32),
            };
            c.map(|c| (c, semi))
        });
        match decoded {
            Some((c, semi)) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn collapse_spaces(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `text` cut to at most `max` bytes at a character boundary, with "…" when it was cut.
fn clamp(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let cut = floor_char_boundary(text, max - '…'.len_utf8());
    format!("{}…", &text[..cut])
}

fn floor_char_boundary(text: &str, max: usize) -> usize {
    if text.len() <= max {
        return text.len();
    }
    (0..=max).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_http_link_without_trailing_punctuation() {
        assert_eq!(first_link("see https://example.org/a?b=1. ok"), Some("https://example.org/a?b=1"));
        assert_eq!(first_link("(http://x.test/y), then https://z.test"), Some("http://x.test/y"));
        assert_eq!(first_link("ftp://x.test and https:// alone"), None);
        assert_eq!(first_link("no links"), None);
    }

    #[test]
    fn reads_open_graph_first_then_title_and_description() {
        let page = r#"<html><head><TITLE> Plain &amp; simple </TITLE>
            <meta name="description" content="Fallback">
            <meta property='og:title' content="Rich &quot;title&quot; &#8211; &#x263A;">
            <metadata content="not a meta tag"></head></html>"#;
        let preview = from_page(MsgId([1; 16]), "https://x.test", page).expect("a preview");
        assert_eq!(preview.title, "Rich \"title\" – ☺");
        assert_eq!(preview.description, "Fallback");
        let plain =
            from_page(MsgId([1; 16]), "https://x.test", "<title>\n Only\n a title </title>").expect("a preview");
        assert_eq!((plain.title.as_str(), plain.description.as_str()), ("Only a title", ""));
        assert_eq!(from_page(MsgId([1; 16]), "https://x.test", "<html><body>nothing</body></html>"), None);
    }

    #[test]
    fn long_or_hostile_pages_are_cut_at_character_boundaries() {
        let title = "é".repeat(1_000);
        let page = format!("<meta name=description content=bare><title>{title}</title>");
        let preview = from_page(MsgId([1; 16]), "https://x.test", &page).expect("a preview");
        assert!(preview.title.len() <= PREVIEW_TITLE_BYTES_MAX && preview.title.ends_with('…'));
        assert_eq!(preview.description, "bare");
        assert!(acceptable(&preview));
        // Unclosed tags, stray ampersands and a huge page neither panic nor loop.
        let junk = format!("<meta content=\"x <title>&#xFFFFFFFF; &&; {}", "<".repeat(PREVIEW_PAGE_BYTES_MAX));
        assert_eq!(from_page(MsgId([1; 16]), "https://x.test", &junk), None);
        assert!(!acceptable(&LinkPreview { url: "javascript:alert(1)".into(), ..preview }));
    }
}
