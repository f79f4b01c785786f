//! Fetches the page behind a link for its preview (`send`, `reply`): only http(s), only HTML,
//! at most `PREVIEW_PAGE_BYTES_MAX` bytes read, within a few seconds. Reading the page is the
//! client core's job (`anytime_client::preview::from_page`); this module only does the I/O.
//!
//! The fetch goes from this device straight to the site, so the site learns the user's IP
//! address (the server never fetches URLs: it cannot read messages). `--no-preview` skips it.

use std::time::Duration;

use anyhow::{bail, Context};
use anytime_proto::limits::PREVIEW_PAGE_BYTES_MAX;

/// The whole fetch, connecting to the last byte read: a slow site costs the command this much.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Redirects followed (a shortened link usually takes one or two).
const REDIRECTS_MAX: usize = 5;

/// The start of the HTML page at `url` (at most `PREVIEW_PAGE_BYTES_MAX` bytes, as text), or why
/// there is none, in words for a note to the user.
pub async fn fetch_page(url: &str) -> anyhow::Result<String> {
    let parsed = reqwest::Url::parse(url).context("it is not a valid link")?;
    if !matches!(parsed.scheme(), "http" | "https") {
        bail!("only http and https links get previews");
    }
    let client = reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .redirect(reqwest::redirect::Policy::limited(REDIRECTS_MAX))
        .user_agent(concat!("Anytime/", env!("CARGO_PKG_VERSION"), " (link preview)"))
        .build()
        .context("could not set up the web client")?;
    let mut response = client
        .get(parsed)
        .header(reqwest::header::ACCEPT, "text/html")
        .send()
        .await
        .map_err(|error| anyhow::anyhow!(reason(&error)))?;
    if !response.status().is_success() {
        bail!("the site answered {}", response.status());
    }
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if !is_html(&content_type) {
        bail!("it is not a web page (content type {content_type:?})");
    }
    // Streamed: a huge or endless response is cut off after the head, never read whole.
    let mut page = Vec::new();
    while page.len() < PREVIEW_PAGE_BYTES_MAX {
        let Some(chunk) = response.chunk().await.map_err(|error| anyhow::anyhow!(reason(&error)))? else {
            break;
        };
        let room = PREVIEW_PAGE_BYTES_MAX - page.len();
        page.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    // A character cut at the end, or a page in another encoding, becomes U+FFFD: the title and
    // description of a UTF-8 (or ASCII) page read the same.
    Ok(String::from_utf8_lossy(&page).into_owned())
}

/// `text/html` or `application/xhtml+xml`, with or without parameters (`; charset=utf-8`).
fn is_html(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("text/html") || essence.eq_ignore_ascii_case("application/xhtml+xml")
}

/// A fetch failure in a few words (reqwest's own message repeats the URL and nests its cause).
fn reason(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return format!("the site did not answer within {} s", FETCH_TIMEOUT.as_secs());
    }
    if error.is_redirect() {
        return format!("more than {REDIRECTS_MAX} redirects");
    }
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    if error.is_connect() {
        return format!("could not connect ({cause})");
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_html_content_types_are_pages() {
        assert!(is_html("text/html"));
        assert!(is_html("Text/HTML; charset=utf-8"));
        assert!(is_html("application/xhtml+xml"));
        assert!(!is_html("text/plain"));
        assert!(!is_html("image/png"));
        assert!(!is_html(""));
        assert!(!is_html("text/html-but-not"));
    }
}
