//! `anytime wallet …` and `anytime pay`: the server's wallet over HTTP/JSON (docs/protocol.md,
//! "Wallet") with this profile's session token, and payment messages sent into the chat through
//! the client core — end-to-end encrypted, so a payment's note never reaches the server. Every
//! rule (PIN, limits, the sandbox's cards) is the server's; this module asks, explains and prints.

use std::time::Duration;

use anyhow::{bail, Context};
use anytime_client::content::{self, Content};
use anytime_client::{ClientStore, Transport};
use anytime_proto::frame::{self, ConvKind};
use anytime_proto::http::ErrorBody;
use anytime_proto::limits::{PIN_FAILURES_MAX, PIN_LOCK_MS, WALLET_DAILY_UNITS_MAX, WALLET_TRANSFER_UNITS_MAX};
use anytime_proto::wallet::{
    Balance, History, PayRequest, PayoutRequest, PayoutResult, PinRequest, TopUpConfirm, TopUpRequest, TopUpResult,
    TransferView, WalletSummary,
};
use anytime_proto::{ConvId, ErrorCode, UserId};
use reqwest::{Method, RequestBuilder};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::message_tools::utc_minute;
use super::{conversation, expect, name_of, Session};
use crate::profile::hex;
use crate::secret::{Ask, AskKind};
use crate::WalletCommand;

/// One wallet request, answer included.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Tries of a request that is safe to repeat (it carries its idempotency key) when the network
/// or a busy server failed it: the server moves the money once and answers the first result.
pub(super) const ATTEMPTS: u32 = 3;
/// Wait before the first repeat; doubles after each.
const RETRY_DELAY: Duration = Duration::from_millis(500);
/// Entries of each chat's local history searched for messages that name a transfer.
const CLAIMS_SEARCHED: usize = 10_000;
/// Tries at exporting a CSV page that matches its JSON page (a transfer landing in between
/// shifts the first page).
const EXPORT_TRIES: u32 = 3;
/// The sandbox's second-step code, as its documentation gives it to anyone testing.
const SANDBOX_CODE: &str = "123456";
const SANDBOX_CARDS: &str = "4242 4242 4242 4242 succeeds, 4000 0000 0000 0002 is declined, \
     4000 0000 0000 3220 asks for a second step (code 123456)";

/// Why a wallet request failed.
pub(super) enum Failure {
    /// No answer: the request may or may not have reached the server.
    Network(String),
    /// The server said no.
    Refused { status: u16, code: Option<ErrorCode>, message: String },
}

impl Failure {
    pub(super) fn code(&self) -> Option<ErrorCode> {
        match self {
            Failure::Refused { code, .. } => *code,
            Failure::Network(_) => None,
        }
    }

    /// Worth repeating with the same idempotency key.
    fn transient(&self) -> bool {
        match self {
            Failure::Network(_) => true,
            Failure::Refused { code, status, .. } => {
                matches!(
                    code,
                    Some(
                        ErrorCode::ServerBusy
                            | ErrorCode::ShuttingDown
                            | ErrorCode::Internal
                            | ErrorCode::LedgerConflict
                            | ErrorCode::RequestTimeout
                    )
                ) || (code.is_none() && *status >= 500)
            }
        }
    }

    /// An error that says what failed, the stable code, and what to do about it.
    pub(super) fn explain(self, what: &str) -> anyhow::Error {
        match self {
            Failure::Network(error) => {
                anyhow::anyhow!("{what} failed: no answer from the server ({error}); is it running? try again")
            }
            Failure::Refused { code: Some(code), message, .. } => match advice(code) {
                Some(advice) => anyhow::anyhow!("{what} failed: {message} ({code}); {advice}"),
                None => anyhow::anyhow!("{what} failed: {message} ({code})"),
            },
            Failure::Refused { status, message, .. } => {
                anyhow::anyhow!("{what} failed: the server answered {status} {message}")
            }
        }
    }
}

/// What to do after a refusal with `code`.
fn advice(code: ErrorCode) -> Option<String> {
    Some(match code {
        ErrorCode::InsufficientFunds => {
            "top up with `anytime wallet top-up AMOUNT CURRENCY --card NUMBER` (`anytime wallet` shows what is available)"
                .into()
        }
        ErrorCode::PinWrong => format!(
            "check the PIN and try again ({PIN_FAILURES_MAX} wrong PINs in a row lock payments for {} minutes); no PIN yet? set one with `anytime wallet pin`",
            PIN_LOCK_MS / 60_000
        ),
        ErrorCode::PinLocked => format!(
            "payments stay locked for {} minutes after {PIN_FAILURES_MAX} wrong PINs in a row; wait, then try again",
            PIN_LOCK_MS / 60_000
        ),
        ErrorCode::LimitExceeded => format!(
            "one transfer moves at most {WALLET_TRANSFER_UNITS_MAX} units and a wallet sends at most {WALLET_DAILY_UNITS_MAX} units per UTC day: send less, or wait until tomorrow (UTC)"
        ),
        ErrorCode::InvalidAmount => {
            "give a positive amount with at most the currency's decimals, e.g. 12.34 (USD) or 1500 (JPY)".into()
        }
        ErrorCode::UnknownCurrency => "`anytime wallet` lists the currencies".into(),
        ErrorCode::UserNotFound => "that account no longer exists".into(),
        ErrorCode::RateLimited => "too many wallet operations this minute; wait a minute and try again".into(),
        ErrorCode::Duplicate => "run the command again (it uses a fresh idempotency key)".into(),
        ErrorCode::Expired => "the second step took too long; top up again".into(),
        ErrorCode::InvalidToken | ErrorCode::TokenExpired => {
            "this device's session is no longer valid; log in again with `anytime login`".into()
        }
        ErrorCode::ServerBusy
        | ErrorCode::ShuttingDown
        | ErrorCode::Internal
        | ErrorCode::LedgerConflict
        | ErrorCode::RequestTimeout => "try again in a moment".into(),
        _ => return None,
    })
}

/// The wallet API as this profile's account.
pub(super) struct Api {
    pub(super) base: String,
    pub(super) token: String,
    http: reqwest::Client,
}

impl Api {
    pub(super) fn of(s: &Session) -> anyhow::Result<Api> {
        let store = s.client.store();
        let base = store
            .get_text("server")?
            .context("this profile has no account: run `anytime register` or `anytime login` first")?;
        let token = store.get_text("token")?.context("this profile has no session: run `anytime login`")?;
        let http = reqwest::Client::builder().timeout(HTTP_TIMEOUT).build().context("while setting up HTTP")?;
        Ok(Api { base, token, http })
    }

    pub(super) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token)
    }

    /// Sends; a refusal becomes `Failure::Refused` with the server's code.
    pub(super) async fn send(request: RequestBuilder) -> Result<reqwest::Response, Failure> {
        let response = request.send().await.map_err(|e| Failure::Network(e.to_string()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        Err(match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => Failure::Refused { status: status.as_u16(), code: Some(body.code), message: body.message },
            Err(_) => Failure::Refused { status: status.as_u16(), code: None, message: text.trim().to_owned() },
        })
    }

    pub(super) async fn json<T: DeserializeOwned>(request: RequestBuilder) -> Result<T, Failure> {
        let text = Api::send(request).await?.text().await.map_err(|e| Failure::Network(e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| Failure::Refused {
            status: 200,
            code: None,
            message: format!("with an unreadable answer ({e}): {text:?}"),
        })
    }

    /// `json`, repeated (same request, same idempotency key) while the network or a busy server
    /// fails it: the server applies it once, and a repeat gets the first answer.
    pub(super) async fn json_retried<T: DeserializeOwned>(request: RequestBuilder) -> Result<T, Failure> {
        let mut delay = RETRY_DELAY;
        let mut attempt = 1;
        loop {
            // JSON bodies can always be cloned; one that could not is sent once.
            let Some(this) = request.try_clone() else { return Api::json(request).await };
            match Api::json(this).await {
                Err(failure) if failure.transient() && attempt < ATTEMPTS => {
                    tracing::info!(attempt, "wallet request failed; repeating it with the same key");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    pub(super) async fn summary(&self) -> anyhow::Result<WalletSummary> {
        Api::json(self.request(Method::GET, "/v1/wallet")).await.map_err(|f| f.explain("reading the wallet"))
    }

    fn history_page(&self, currency: &str, before: Option<&str>, limit: u32, csv: bool) -> RequestBuilder {
        let mut query = vec![("currency", currency.to_owned()), ("limit", limit.to_string())];
        if let Some(before) = before {
            query.push(("before", before.to_owned()));
        }
        if csv {
            query.push(("format", "csv".to_owned()));
        }
        self.request(Method::GET, "/v1/wallet/history").query(&query)
    }
}

/// A fresh idempotency key: 128 random bits in hex, as a UUID carries.
pub(super) fn fresh_key() -> String {
    hex(&anytime_client_tokio::msg_id().0)
}

fn balance_in(summary: &WalletSummary, currency: &str) -> Balance {
    summary.balances.iter().find(|b| b.currency.eq_ignore_ascii_case(currency)).cloned().unwrap_or_else(|| Balance {
        currency: currency.to_ascii_uppercase(),
        balance: "0".into(),
        available: "0".into(),
    })
}

/// A card as shown back: its last four digits.
fn card_shown(card: &str) -> String {
    let digits: Vec<char> = card.chars().filter(char::is_ascii_digit).collect();
    let last: String = digits[digits.len().saturating_sub(4)..].iter().collect();
    format!("ending {last}")
}

pub(super) async fn run(s: &mut Session, action: Option<WalletCommand>) -> anyhow::Result<()> {
    match action {
        None => summary(s).await,
        Some(WalletCommand::Pin) => pin(s).await,
        Some(WalletCommand::TopUp { amount, currency, card, code }) => top_up(s, &amount, &currency, &card, code).await,
        Some(WalletCommand::Payout { amount, currency, card }) => payout(s, &amount, &currency, &card).await,
        Some(WalletCommand::History { currency, csv: Some(path), .. }) => export_csv(s, &currency, &path).await,
        Some(WalletCommand::History { currency, csv: None, limit, page_size }) => {
            history(s, &currency, limit, page_size).await
        }
        Some(WalletCommand::Check { transfer }) => check(s, &transfer).await,
    }
}

/// `anytime wallet`.
async fn summary(s: &mut Session) -> anyhow::Result<()> {
    let w = Api::of(s)?.summary().await?;
    let mut human = if w.sandbox {
        "Wallet — provider: SANDBOX (test cards only, no real money)".to_owned()
    } else {
        "Wallet — provider: live (real money)".to_owned()
    };
    if w.balances.is_empty() {
        human.push_str("\n  no money yet: top up with `anytime wallet top-up AMOUNT CURRENCY --card NUMBER`");
    }
    for b in &w.balances {
        human.push_str(&format!("\n  {}  balance {}  available {}", b.currency, b.balance, b.available));
    }
    human.push_str(if w.pin_set {
        "\nPayment PIN: set"
    } else {
        "\nPayment PIN: not set (set one with `anytime wallet pin` before paying)"
    });
    human.push_str(&format!("\nCurrencies: {}", w.currencies.join(", ")));
    human.push_str(&format!(
        "\nLimits: at most {} units per transfer and {} units sent per UTC day, in any currency",
        w.transfer_units_max, w.daily_units_max
    ));
    if w.sandbox {
        human.push_str(&format!("\nSandbox test cards: {SANDBOX_CARDS}"));
    }
    let mut value = serde_json::to_value(&w)?;
    value["provider"] = json!(if w.sandbox { "sandbox" } else { "live" });
    s.out.print(human, value)
}

/// `anytime wallet pin`: sets the PIN, or changes it (the current one first).
async fn pin(s: &mut Session) -> anyhow::Result<()> {
    let api = Api::of(s)?;
    let change = api.summary().await?.pin_set;
    let current_pin = if change {
        Some(s.out.ask(Ask { kind: AskKind::CurrentPin, prompt: "Current payment PIN: ".into() }).await?)
    } else {
        None
    };
    let pin = s.out.ask(Ask { kind: AskKind::NewPin, prompt: "New payment PIN (4 to 8 digits): ".into() }).await?;
    if !(4..=8).contains(&pin.len()) || !pin.bytes().all(|b| b.is_ascii_digit()) {
        bail!("a payment PIN is 4 to 8 digits; nothing changed");
    }
    let request = api.request(Method::POST, "/v1/wallet/pin").json(&PinRequest { pin, current_pin });
    match Api::send(request).await {
        Ok(_) => {}
        Err(f) if f.code() == Some(ErrorCode::PinWrong) => bail!(
            "the current PIN is wrong (pin_wrong); nothing changed. {PIN_FAILURES_MAX} wrong PINs in a row lock payments for {} minutes",
            PIN_LOCK_MS / 60_000
        ),
        Err(f) if f.code() == Some(ErrorCode::InvalidArgument) => {
            bail!("the server refused that PIN (invalid_argument): a payment PIN is 4 to 8 digits; nothing changed")
        }
        Err(f) => return Err(f.explain(if change { "changing the PIN" } else { "setting the PIN" })),
    }
    s.out.print(
        if change { "payment PIN changed" } else { "payment PIN set" },
        json!({"pin_set": true, "changed": change}),
    )
}

/// `anytime wallet top-up`.
async fn top_up(s: &mut Session, amount: &str, currency: &str, card: &str, code: Option<String>) -> anyhow::Result<()> {
    let api = Api::of(s)?;
    let request = TopUpRequest {
        key: fresh_key(),
        currency: currency.to_owned(),
        amount: amount.to_owned(),
        card: card.to_owned(),
    };
    let refused = |f: Failure| match f.code() {
        Some(ErrorCode::InvalidArgument) => anyhow::anyhow!(
            "the top-up failed: the sandbox knows only its test cards (invalid_argument); {SANDBOX_CARDS}"
        ),
        _ => f.explain("the top-up"),
    };
    let mut result: TopUpResult =
        Api::json_retried(api.request(Method::POST, "/v1/wallet/top-up").json(&request)).await.map_err(refused)?;
    if result.status == "confirmation_required" {
        let challenge = result.challenge.clone().context("the server asked for a second step but named none")?;
        let code = match code {
            Some(code) => code,
            None => {
                s.out.note(&format!(
                    "the sandbox asks for a second step for the card {} (as 3-D Secure does); its code is {SANDBOX_CODE}",
                    card_shown(card)
                ));
                s.out.ask(Ask { kind: AskKind::Code, prompt: "Code of the card's second step: ".into() }).await?
            }
        };
        let confirm = TopUpConfirm { challenge, code };
        result = Api::json(api.request(Method::POST, "/v1/wallet/top-up/confirm").json(&confirm))
            .await
            .map_err(|f| f.explain("confirming the top-up"))?;
        if result.status == "declined" {
            bail!(
                "the sandbox declined the second step for the card {}: the code is wrong (the sandbox's is {SANDBOX_CODE}); nothing was charged and the balance is unchanged — run the top-up again",
                card_shown(card)
            );
        }
    }
    match result.status.as_str() {
        "succeeded" => {}
        "declined" => bail!(
            "the sandbox declined the card {}: nothing was charged and the balance is unchanged (sandbox test cards: {SANDBOX_CARDS})",
            card_shown(card)
        ),
        other => bail!("the top-up ended as {other:?}, which this version does not know; see `anytime wallet`"),
    }
    let transfer = result.transfer.context("the server's answer names no transfer")?;
    let balance = balance_in(&api.summary().await?, &transfer.currency);
    let again = if transfer.duplicate { " (already done: nothing charged again)" } else { "" };
    s.out.print(
        format!(
            "topped up {} {} from the sandbox card {} (transfer {}){again}\nbalance: {} {} (available {})",
            transfer.amount,
            transfer.currency,
            card_shown(card),
            transfer.id,
            balance.balance,
            balance.currency,
            balance.available
        ),
        json!({"status": "succeeded", "sandbox": true, "transfer": transfer, "balance": balance}),
    )
}

/// `anytime wallet payout`: money out to a sandbox card, held until the provider answers.
async fn payout(s: &mut Session, amount: &str, currency: &str, card: &str) -> anyhow::Result<()> {
    let api = Api::of(s)?;
    if !api.summary().await?.pin_set {
        bail!("a payout needs a payment PIN: set one with `anytime wallet pin`; nothing was paid out");
    }
    let currency = currency.to_ascii_uppercase();
    let prompt = format!("Payment PIN to pay {amount} {currency} out to the card {}: ", card_shown(card));
    let pin = s.out.ask(Ask { kind: AskKind::Pin, prompt }).await?;
    let request = PayoutRequest {
        key: fresh_key(),
        currency: currency.clone(),
        amount: amount.to_owned(),
        card: card.to_owned(),
        pin,
    };
    let result: PayoutResult =
        match Api::json_retried(api.request(Method::POST, "/v1/wallet/payouts").json(&request)).await {
            Ok(result) => result,
            Err(Failure::Network(error)) => bail!(
                "the payout failed: no answer from the server after {ATTEMPTS} tries ({error}); look at `anytime wallet history {currency}` before trying again"
            ),
            Err(f) if f.code() == Some(ErrorCode::InvalidArgument) => bail!(
                "the sandbox pays out only to its test cards (invalid_argument): 4242 4242 4242 4242 is paid, 4000 0000 0000 0002 is declined, 4000 0000 0000 0077 never answers; nothing was paid out"
            ),
            Err(f) => bail!("{:#}. Nothing was paid out", f.explain("the payout")),
        };
    let t = &result.transfer;
    let balance = balance_in(&api.summary().await?, &t.currency);
    let what = match result.status.as_str() {
        "paid" => format!("paid out {} {} to the sandbox card {}", t.amount, t.currency, card_shown(card)),
        "declined" => format!(
            "the sandbox declined the payout to the card {}: the {} {} are back in the wallet",
            card_shown(card),
            t.amount,
            t.currency
        ),
        "pending" => format!(
            "the payout of {} {} to the card {} waits for the provider: the money is held (not spendable) until it answers, or back in the wallet when the hold expires",
            t.amount,
            t.currency,
            card_shown(card)
        ),
        "expired" => format!("the provider never answered: the {} {} came back to the wallet", t.amount, t.currency),
        other => format!("the payout ended as {other:?}, which this version does not know; see `anytime wallet`"),
    };
    s.out.print(
        format!(
            "{what} (transfer {})\nbalance: {} {} (available {})",
            t.id, balance.balance, balance.currency, balance.available
        ),
        json!({"status": result.status, "sandbox": true, "transfer": t, "balance": balance}),
    )
}

/// A transfer as a line and as JSON (with the counterparty's username when known).
fn describe_transfer(s: &Session, t: &TransferView) -> (String, serde_json::Value) {
    let names = s.out.names.borrow();
    let other = t.counterparty.map(|user| name_of(&names, user));
    let (sign, with) = match (t.direction.as_str(), &other) {
        ("in", Some(who)) => ("+", format!("from {who}")),
        ("in", None) => ("+", "from the sandbox provider".to_owned()),
        (_, Some(who)) => ("-", format!("to {who}")),
        (_, None) => ("-", "to the sandbox provider".to_owned()),
    };
    let hold = t.hold.as_ref().map(|h| format!("  [{h}]")).unwrap_or_default();
    let human = format!(
        "{}  {:<3}  {:<8}  {sign}{} {}  {with}  {}{hold}",
        utc_minute(t.at_ms),
        t.direction,
        t.purpose,
        t.amount,
        t.currency,
        t.id
    );
    let mut value = serde_json::to_value(t).unwrap_or_default();
    value["counterparty_name"] = json!(t.counterparty.and_then(|user| names.get(&user).cloned()));
    (human, value)
}

/// `anytime wallet history CURRENCY`: newest first, page after page.
async fn history(s: &mut Session, currency: &str, limit: Option<u32>, page_size: u32) -> anyhow::Result<()> {
    let api = Api::of(s)?;
    let mut before: Option<String> = None;
    let mut shown = 0u32;
    loop {
        let page: History = Api::json(api.history_page(currency, before.as_deref(), page_size, false))
            .await
            .map_err(|f| f.explain("reading the wallet's history"))?;
        s.learn_names(page.transfers.iter().filter_map(|t| t.counterparty)).await;
        for t in &page.transfers {
            if limit.is_some_and(|limit| shown >= limit) {
                return Ok(());
            }
            let (human, value) = describe_transfer(s, t);
            s.out.print(human, value)?;
            shown += 1;
        }
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    if shown == 0 {
        s.out.note(&format!("no transfers in {} yet", currency.to_ascii_uppercase()));
    }
    Ok(())
}

/// `anytime wallet history CURRENCY --csv FILE`: the server's CSV export, every page of it.
async fn export_csv(s: &mut Session, currency: &str, path: &std::path::Path) -> anyhow::Result<()> {
    let api = Api::of(s)?;
    let page_size = anytime_proto::limits::WALLET_HISTORY_PAGE_MAX;
    let mut csv = String::new();
    let mut rows = 0usize;
    let mut before: Option<String> = None;
    loop {
        // The JSON page names the next one; the CSV page with the same bounds is what is kept.
        // They agree unless a transfer landed in between: then both are read again.
        let mut tries = 0;
        let (page, text) = loop {
            let page: History = Api::json(api.history_page(currency, before.as_deref(), page_size, false))
                .await
                .map_err(|f| f.explain("exporting the wallet's history"))?;
            let response = Api::send(api.history_page(currency, before.as_deref(), page_size, true))
                .await
                .map_err(|f| f.explain("exporting the wallet's history"))?;
            let text = response.text().await.context("while reading the CSV export")?;
            let ids: Vec<&str> = text.lines().skip(1).map(|line| line.split(',').next().unwrap_or_default()).collect();
            if ids.iter().copied().eq(page.transfers.iter().map(|t| t.id.as_str())) {
                break (page, text);
            }
            tries += 1;
            if tries >= EXPORT_TRIES {
                bail!("the wallet kept changing during the export; try again");
            }
        };
        let mut lines = text.lines();
        let header = lines.next().context("the server's CSV export has no header")?;
        if csv.is_empty() {
            csv.push_str(header);
            csv.push('\n');
        }
        for line in lines {
            csv.push_str(line);
            csv.push('\n');
            rows += 1;
        }
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    let path = s.out.path(path);
    std::fs::write(&path, &csv).with_context(|| format!("while writing {}", path.display()))?;
    let currency = currency.to_ascii_uppercase();
    s.out.print(
        format!("wrote {rows} transfers in {currency} to {}", path.display()),
        json!({"csv": path, "rows": rows, "currency": currency}),
    )
}

/// `anytime wallet check TRANSFER`: whether the server has that transfer for this account, and
/// whether the payment messages on this device that name it say the same.
async fn check(s: &mut Session, transfer: &str) -> anyhow::Result<()> {
    let id = transfer.to_ascii_lowercase();
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("a transfer id is 32 hex digits (a payment message shows it: `anytime history CHAT --json`)");
    }
    let api = Api::of(s)?;
    let t: TransferView = match Api::json(api.request(Method::GET, &format!("/v1/wallet/transfers/{id}"))).await {
        Ok(t) => t,
        Err(f) if f.code() == Some(ErrorCode::InvalidArgument) => bail!(
            "NOT VERIFIED: the server has no transfer {id} for you — it is not a payment to or from this account, so a message claiming it is not backed by the server"
        ),
        Err(f) => return Err(f.explain("checking the transfer")),
    };
    s.learn_names(t.counterparty).await;
    let me = s.client.me().user;
    // The messages on this device that name this transfer, and whether they tell the truth.
    let mut claims = Vec::new();
    for conv in s.client.groups() {
        for entry in s.client.store().history(conv, CLAIMS_SEARCHED)? {
            let Some(p) = entry.payment.as_ref().filter(|p| p.transfer.eq_ignore_ascii_case(&id)) else { continue };
            let (payer, payee) = match t.direction.as_str() {
                "in" => (t.counterparty, Some(me)),
                _ => (Some(me), t.counterparty),
            };
            let matches = t.purpose == "payment"
                && p.amount == t.amount
                && p.currency.eq_ignore_ascii_case(&t.currency)
                && Some(entry.sender) == payer
                && Some(p.to) == payee;
            claims.push((conv, entry.msg_id, entry.sender, p.clone(), matches));
        }
    }
    let (line, mut value) = describe_transfer(s, &t);
    let names = s.out.names.borrow().clone();
    let mut human = format!("VERIFIED: the server has this transfer for you\n{line}");
    let mut listed = Vec::new();
    for (conv, msg_id, sender, p, matches) in &claims {
        human.push_str(&format!(
            "\nmessage {msg_id} in {conv} from {} claims {} {} to {}: {}",
            name_of(&names, *sender),
            p.amount,
            p.currency,
            name_of(&names, p.to),
            if *matches { "matches" } else { "DOES NOT MATCH the server's transfer" }
        ));
        listed.push(
            json!({"conv": conv, "msg_id": msg_id.to_string(), "sender": sender, "payment": p, "matches": matches}),
        );
    }
    value["verified"] = json!(true);
    value["claims"] = json!(listed);
    s.out.print(human, value)?;
    if claims.iter().any(|c| !c.4) {
        bail!("a payment message names transfer {id} but claims something else than the server's transfer");
    }
    Ok(())
}

/// `anytime pay CHAT AMOUNT CURRENCY`: pays a member of the chat, then tells the chat. Nothing is
/// sent to the chat unless the server moved the money.
pub(super) async fn pay(
    s: &mut Session,
    conv: ConvId,
    amount: &str,
    currency: &str,
    to: Option<&str>,
    note: String,
) -> anyhow::Result<()> {
    let info = expect(s.net.request(frame::GetConversation { conv }.into()).await?, conversation)
        .with_context(|| format!("{conv} is not one of your chats (`anytime chats` lists them)"))?;
    let me = s.client.me().user;
    let others: Vec<UserId> = info.members.iter().map(|m| m.user).filter(|user| *user != me).collect();
    let (payee, payee_name) = match to {
        Some(username) => {
            let user = s.user(username).await?.user;
            if !others.contains(&user) {
                bail!("{username} is not a member of {conv}: pay someone in the chat");
            }
            (user, username.to_owned())
        }
        None if info.kind == ConvKind::Direct => {
            let Some(&user) = others.first() else { bail!("nobody else is in {conv} to pay") };
            s.learn_names([user]).await;
            (user, name_of(&s.out.names.borrow(), user))
        }
        None => bail!("{conv} is a group: name whom to pay with --to USERNAME"),
    };
    // The message goes out after the money moved: make sure it can.
    if !s.client.has_group(conv) {
        s.catch_up(false).await?;
        if !s.client.has_group(conv) {
            bail!(
                "this device is not in the encrypted group of {conv} yet (a member's device adds it when it syncs); nothing was paid, retry later"
            );
        }
    }
    let api = Api::of(s)?;
    if !api.summary().await?.pin_set {
        bail!("paying needs a payment PIN: set one with `anytime wallet pin`; nothing was paid");
    }
    let prompt = format!("Payment PIN to send {amount} {} to {payee_name}: ", currency.to_ascii_uppercase());
    let pin = s.out.ask(Ask { kind: AskKind::Pin, prompt }).await?;
    let request =
        PayRequest { key: fresh_key(), to: payee, currency: currency.to_owned(), amount: amount.to_owned(), pin };
    let paid: TransferView =
        match Api::json_retried(api.request(Method::POST, "/v1/wallet/pay").json(&request)).await {
            Ok(paid) => paid,
            Err(Failure::Network(error)) => bail!(
                "the payment failed: no answer from the server after {ATTEMPTS} tries ({error}); it may or may not have gone through — look at `anytime wallet history {}` before paying again. Nothing was sent to the chat",
                currency.to_ascii_uppercase()
            ),
            Err(f) => bail!("{:#}. Nothing was paid and nothing was sent to the chat", f.explain("the payment")),
        };
    let payment = content::Payment {
        transfer: paid.id.clone(),
        to: payee,
        amount: paid.amount.clone(),
        currency: paid.currency.clone(),
        note: note.clone(),
    };
    let (msg_id, seq) = s.send_quietly(conv, Content::Payment(payment)).await.with_context(|| {
        format!(
            "PAID {} {} to {payee_name} (transfer {}), but the payment message could not be sent to {conv}; {payee_name} sees the money in `anytime wallet history {}` — tell them with `anytime send`",
            paid.amount, paid.currency, paid.id, paid.currency
        )
    })?;
    let me_name = s.client.store().get_text("username")?.unwrap_or_else(|| "you".into());
    s.out.print(
        format!(
            "{} (transfer {}, message {} #{seq})",
            crate::profile::payment_line(&me_name, &payee_name, &paid.amount, &paid.currency, &note),
            paid.id,
            hex(&msg_id.0)
        ),
        json!({"conv": conv, "msg_id": hex(&msg_id.0), "seq": seq, "transfer": paid.id, "to": payee,
            "to_name": payee_name, "amount": paid.amount, "currency": paid.currency, "duplicate": paid.duplicate}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// Reads one HTTP request from `stream` and returns its body.
    async fn read_request(stream: &mut TcpStream) -> String {
        let mut data = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.expect("read the request");
            assert!(n > 0, "the request ended early");
            data.extend_from_slice(&buf[..n]);
            let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
            let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .map_or(0, |value| value.trim().parse().expect("a length"));
            if data.len() >= end + 4 + len {
                return String::from_utf8_lossy(&data[end + 4..end + 4 + len]).into_owned();
            }
        }
    }

    async fn answer(stream: &mut TcpStream, status: &str, body: &str) {
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(response.as_bytes()).await.expect("answer");
    }

    async fn api() -> (Api, TcpListener) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("listen");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        (Api { base, token: "token".into(), http: reqwest::Client::new() }, listener)
    }

    fn pay_request() -> PayRequest {
        PayRequest { key: fresh_key(), to: UserId(7), currency: "USD".into(), amount: "1".into(), pin: "1234".into() }
    }

    #[tokio::test]
    async fn a_payment_whose_answer_is_lost_is_sent_again_with_the_same_key() {
        let (api, listener) = api().await;
        let server = tokio::spawn(async move {
            // The first request arrives and its connection drops before any answer.
            let (mut first, _) = listener.accept().await.expect("first");
            let mut bodies = vec![read_request(&mut first).await];
            drop(first);
            let (mut second, _) = listener.accept().await.expect("second");
            bodies.push(read_request(&mut second).await);
            let view = json!({"id": "ab".repeat(16), "direction": "out", "counterparty": UserId(7), "purpose": "payment",
                "amount": "1.00", "currency": "USD", "at_ms": 1, "duplicate": true});
            answer(&mut second, "200 OK", &view.to_string()).await;
            bodies
        });
        let request = pay_request();
        let sent = api.request(Method::POST, "/v1/wallet/pay").json(&request);
        let paid: TransferView = match Api::json_retried(sent).await {
            Ok(paid) => paid,
            Err(f) => panic!("the repeat was not answered: {:#}", f.explain("paying")),
        };
        assert_eq!((paid.amount.as_str(), paid.duplicate), ("1.00", true));
        let keys: Vec<String> = server
            .await
            .expect("server")
            .iter()
            .map(|body| serde_json::from_str::<PayRequest>(body).expect("a pay request").key)
            .collect();
        assert_eq!(keys, [request.key.clone(), request.key], "the repeat carries the same idempotency key");
    }

    #[tokio::test]
    async fn a_refused_payment_is_not_repeated_and_says_what_to_do() {
        let (api, listener) = api().await;
        let server = tokio::spawn(async move {
            let (mut first, _) = listener.accept().await.expect("first");
            read_request(&mut first).await;
            let body = json!({"code": "insufficient_funds", "message": "not enough money in the wallet"});
            answer(&mut first, "402 Payment Required", &body.to_string()).await;
            // No second request comes, well past the first repeat's delay.
            tokio::time::timeout(RETRY_DELAY * 3, listener.accept()).await.is_err()
        });
        let sent = api.request(Method::POST, "/v1/wallet/pay").json(&pay_request());
        let Err(failure) = Api::json_retried::<TransferView>(sent).await else { panic!("a refusal was taken as paid") };
        assert_eq!(failure.code(), Some(ErrorCode::InsufficientFunds));
        let text = format!("{:#}", failure.explain("the payment"));
        assert!(text.contains("(insufficient_funds)") && text.contains("anytime wallet top-up"), "{text}");
        assert!(server.await.expect("server"), "a refusal was sent again");
    }
}
