//! `anytime request`, `anytime split`, `anytime envelope` and `anytime grab`: money requests,
//! split bills and red envelopes (docs/protocol.md, "Wallet"). The wallet keeps them and moves
//! the money; the chat is told with an end-to-end encrypted message naming the wallet's id (the
//! note never reaches the server). Members act on them by that id.

use anyhow::{bail, Context};
use anytime_client::content::{self, Content};
use anytime_client::Transport;
use anytime_proto::frame::{self, ConvKind};
use anytime_proto::wallet::{
    EnvelopeRequest, EnvelopeView, GrabResult, MoneyRequestBody, MoneyRequestView, PayRequestBody, SplitBody,
    SplitShare, SplitView,
};
use anytime_proto::{ConvId, ErrorCode, UserId};
use reqwest::Method;
use serde_json::json;

use super::wallet::{fresh_key, Api, Failure, ATTEMPTS};
use super::{conversation, expect, name_of, Session};
use crate::profile::hex;
use crate::secret::{Ask, AskKind};
use crate::{RequestCommand, SplitCommand};

/// A wallet id (request, split, envelope) as given on the command line: 32 hex digits.
fn wallet_id(id: &str, what: &str, shown_by: &str) -> anyhow::Result<String> {
    let id = id.to_ascii_lowercase();
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("a {what} id is 32 hex digits ({shown_by})");
    }
    Ok(id)
}

const REQUEST_ID_SHOWN: &str =
    "the request's message in the chat shows it (`anytime history CHAT`), and `anytime split show SPLIT` lists a split's";

/// The chat's members, after making sure this device can write to it (the message goes out
/// after the wallet acted).
async fn members_of(s: &mut Session, conv: ConvId) -> anyhow::Result<(frame::ConversationInfo, Vec<UserId>)> {
    let info = expect(s.net.request(frame::GetConversation { conv }.into()).await?, conversation)
        .with_context(|| format!("{conv} is not one of your chats (`anytime chats` lists them)"))?;
    ensure_group(s, conv).await?;
    let members = info.members.iter().map(|m| m.user).collect();
    Ok((info, members))
}

async fn ensure_group(s: &mut Session, conv: ConvId) -> anyhow::Result<()> {
    if !s.client.has_group(conv) {
        s.catch_up(false).await?;
        if !s.client.has_group(conv) {
            bail!(
                "this device is not in the encrypted group of {conv} yet (a member's device adds it when it syncs); nothing was done, retry later"
            );
        }
    }
    Ok(())
}

/// Asks for the payment PIN, after checking that one is set.
async fn pin_for(s: &mut Session, api: &Api, prompt: String) -> anyhow::Result<String> {
    if !api.summary().await?.pin_set {
        bail!("this needs a payment PIN: set one with `anytime wallet pin`; nothing was paid");
    }
    s.out.ask(Ask { kind: AskKind::Pin, prompt }).await
}

fn my_name(s: &Session) -> String {
    s.client.store().get_text("username").ok().flatten().unwrap_or_else(|| "you".into())
}

/// Sends the chat message for something the wallet already did; a failure says what was done.
async fn tell_chat(s: &mut Session, conv: ConvId, message: Content, done: &str) -> anyhow::Result<(String, u64)> {
    let (msg_id, seq) = s.send_quietly(conv, message).await.with_context(|| {
        format!("{done}, but its message could not be sent to {conv}; tell the chat its id with `anytime send`")
    })?;
    Ok((hex(&msg_id.0), seq))
}

/// `anytime request CHAT AMOUNT CURRENCY --from USERNAME`.
pub(super) async fn request(
    s: &mut Session,
    conv: ConvId,
    amount: &str,
    currency: &str,
    from: &str,
    note: String,
) -> anyhow::Result<()> {
    let (_, members) = members_of(s, conv).await?;
    let payer = s.user(from).await?.user;
    if payer == s.client.me().user {
        bail!("you cannot ask yourself for money: name another member with --from");
    }
    if !members.contains(&payer) {
        bail!("{from} is not a member of {conv}: ask someone in the chat");
    }
    let api = Api::of(s)?;
    let body =
        MoneyRequestBody { key: fresh_key(), conv, payer, currency: currency.to_owned(), amount: amount.to_owned() };
    let made: MoneyRequestView = Api::json_retried(api.request(Method::POST, "/v1/wallet/requests").json(&body))
        .await
        .map_err(|f| anyhow::anyhow!("{:#}. Nothing was asked", f.explain("the request")))?;
    let message = Content::MoneyRequest(content::MoneyRequest {
        id: made.id.clone(),
        payer,
        amount: made.amount.clone(),
        currency: made.currency.clone(),
        note: note.clone(),
    });
    let done = format!("ASKED {from} for {} {} (request {})", made.amount, made.currency, made.id);
    let (msg_id, seq) = tell_chat(s, conv, message, &done).await?;
    let line = crate::profile::request_line(&my_name(s), from, &made.amount, &made.currency, &note, &made.id);
    let mut value = serde_json::to_value(&made)?;
    value["msg_id"] = json!(msg_id);
    value["seq"] = json!(seq);
    value["payer_name"] = json!(from);
    s.out.print(format!("{line} (message {msg_id} #{seq})"), value)
}

pub(super) async fn request_action(s: &mut Session, action: RequestCommand) -> anyhow::Result<()> {
    match action {
        RequestCommand::Pay { request } => pay_request(s, &wallet_id(&request, "request", REQUEST_ID_SHOWN)?).await,
        RequestCommand::Decline { request } => {
            close_request(s, &wallet_id(&request, "request", REQUEST_ID_SHOWN)?).await
        }
        RequestCommand::Show { request } => {
            let id = wallet_id(&request, "request", REQUEST_ID_SHOWN)?;
            let view = get_request(s, &id).await?;
            s.learn_names([view.requester, view.payer]).await;
            let line = describe_request(s, &view);
            s.out.print(line, request_value(s, &view))
        }
    }
}

async fn get_request(s: &Session, id: &str) -> anyhow::Result<MoneyRequestView> {
    let api = Api::of(s)?;
    match Api::json(api.request(Method::GET, &format!("/v1/wallet/requests/{id}"))).await {
        Ok(view) => Ok(view),
        Err(f) if f.code() == Some(ErrorCode::InvalidArgument) => {
            bail!("there is no request {id} made by or to you (invalid_argument); check the id ({REQUEST_ID_SHOWN})")
        }
        Err(f) => Err(f.explain("reading the request")),
    }
}

fn describe_request(s: &Session, r: &MoneyRequestView) -> String {
    let names = s.out.names.borrow();
    let paid = r.transfer.as_deref().map(|t| format!(" (transfer {t})")).unwrap_or_default();
    format!(
        "request {}: {} asks {} for {} {} — {}{paid}",
        r.id,
        name_of(&names, r.requester),
        name_of(&names, r.payer),
        r.amount,
        r.currency,
        r.status
    )
}

fn request_value(s: &Session, r: &MoneyRequestView) -> serde_json::Value {
    let names = s.out.names.borrow();
    let mut value = serde_json::to_value(r).unwrap_or_default();
    value["requester_name"] = json!(names.get(&r.requester));
    value["payer_name"] = json!(names.get(&r.payer));
    value
}

/// `anytime request pay ID`: pays, then tells the request's chat with a payment message.
async fn pay_request(s: &mut Session, id: &str) -> anyhow::Result<()> {
    let view = get_request(s, id).await?;
    let me = s.client.me().user;
    if view.payer != me {
        bail!("request {id} asks someone else to pay; only its payer can pay it");
    }
    if view.status != "open" && view.status != "paid" {
        bail!("request {id} is {}: there is nothing to pay", view.status);
    }
    ensure_group(s, view.conv).await?;
    s.learn_names([view.requester]).await;
    let requester = name_of(&s.out.names.borrow(), view.requester);
    let api = Api::of(s)?;
    let prompt = format!("Payment PIN to pay {} {} to {requester}: ", view.amount, view.currency);
    let pin = pin_for(s, &api, prompt).await?;
    let sent = api.request(Method::POST, &format!("/v1/wallet/requests/{id}/pay")).json(&PayRequestBody { pin });
    let paid: MoneyRequestView = match Api::json_retried(sent).await {
        Ok(paid) => paid,
        Err(Failure::Network(error)) => bail!(
            "paying the request failed: no answer from the server after {ATTEMPTS} tries ({error}); it may or may not have gone through — `anytime request show {id}` tells. Nothing was sent to the chat"
        ),
        Err(f) if f.code() == Some(ErrorCode::InvalidArgument) => bail!(
            "the server refused to pay request {id} (invalid_argument): it was declined or cancelled, or is not yours to pay (`anytime request show {id}`). Nothing was paid"
        ),
        Err(f) if f.code() == Some(ErrorCode::Expired) => {
            bail!("request {id} has expired (expired): requests stay open 7 days. Nothing was paid")
        }
        Err(f) => bail!("{:#}. Nothing was paid and nothing was sent to the chat", f.explain("paying the request")),
    };
    let transfer = paid.transfer.clone().context("the server says the request is paid but names no transfer")?;
    let note = "paid your request".to_owned();
    let payment = Content::Payment(content::Payment {
        transfer: transfer.clone(),
        to: view.requester,
        amount: paid.amount.clone(),
        currency: paid.currency.clone(),
        note: note.clone(),
    });
    let done = format!("PAID {} {} to {requester} (request {id}, transfer {transfer})", paid.amount, paid.currency);
    let (msg_id, seq) = tell_chat(s, paid.conv, payment, &done).await?;
    let line = crate::profile::payment_line(&my_name(s), &requester, &paid.amount, &paid.currency, &note);
    let mut value = request_value(s, &paid);
    value["msg_id"] = json!(msg_id);
    value["seq"] = json!(seq);
    s.out.print(format!("{line} (request {id}, transfer {transfer}, message {msg_id} #{seq})"), value)
}

/// `anytime request decline ID`: the payer declines, the requester cancels.
async fn close_request(s: &mut Session, id: &str) -> anyhow::Result<()> {
    let api = Api::of(s)?;
    let closed: MoneyRequestView =
        match Api::json(api.request(Method::POST, &format!("/v1/wallet/requests/{id}/close"))).await {
            Ok(closed) => closed,
            Err(f) if f.code() == Some(ErrorCode::InvalidArgument) => bail!(
                "the server refused to close request {id} (invalid_argument): it is already paid or closed, or not made by or to you (`anytime request show {id}`)"
            ),
            Err(f) if f.code() == Some(ErrorCode::Expired) => bail!("request {id} has expired already (expired)"),
            Err(f) => return Err(f.explain("declining the request")),
        };
    s.learn_names([closed.requester, closed.payer]).await;
    let line = describe_request(s, &closed);
    s.out.print(line, request_value(s, &closed))
}

/// `anytime split CHAT TOTAL CURRENCY [--with U1,U2]`.
pub(super) async fn split(
    s: &mut Session,
    conv: ConvId,
    total: &str,
    currency: &str,
    with: &[String],
    custom: &[String],
    note: String,
) -> anyhow::Result<()> {
    let (_, members) = members_of(s, conv).await?;
    let mut shares = Vec::new();
    for share in custom {
        let Some((username, amount)) = share.split_once('=') else {
            bail!("--share {share:?}: write USERNAME=AMOUNT, e.g. --share bob=12.50");
        };
        let user = s.user(username.trim()).await?.user;
        if !members.contains(&user) {
            bail!("{username} is not a member of {conv}: split among people in the chat");
        }
        if shares.iter().any(|x: &SplitShare| x.user == user) {
            bail!("--share names {username} twice: give each member one amount");
        }
        shares.push(SplitShare { user, amount: amount.trim().to_owned() });
    }
    let people = if !shares.is_empty() {
        shares.iter().map(|x| x.user).collect()
    } else if with.is_empty() {
        members
    } else {
        let mut people = Vec::new();
        for username in with.iter().map(|u| u.trim()).filter(|u| !u.is_empty()) {
            let user = s.user(username).await?.user;
            if !members.contains(&user) {
                bail!("{username} is not a member of {conv}: split among people in the chat");
            }
            if !people.contains(&user) {
                people.push(user);
            }
        }
        people
    };
    let me = s.client.me().user;
    if !people.iter().any(|user| *user != me) {
        bail!("nobody but you would share this bill: name the others with --with U1,U2");
    }
    let api = Api::of(s)?;
    let body = SplitBody {
        key: fresh_key(),
        conv,
        currency: currency.to_owned(),
        // A custom split names each share; an equal one, the total and who shares it.
        total: shares.is_empty().then(|| total.to_owned()),
        people: if shares.is_empty() { people.clone() } else { Vec::new() },
        shares,
    };
    let made: SplitView = Api::json_retried(api.request(Method::POST, "/v1/wallet/splits").json(&body))
        .await
        .map_err(|f| anyhow::anyhow!("{:#}. Nothing was asked", f.explain("the split")))?;
    let message = Content::SplitBill(content::SplitBill {
        id: made.id.clone(),
        total: total.to_owned(),
        currency: made.currency.clone(),
        note: note.clone(),
    });
    let done = format!("SPLIT {total} {} (split {})", made.currency, made.id);
    let (msg_id, seq) = tell_chat(s, conv, message, &done).await?;
    s.learn_names(people.iter().copied()).await;
    let line = crate::profile::split_line(&my_name(s), total, &made.currency, &note, &made.id);
    let (tracker, mut value) = describe_split(s, &made);
    value["conv"] = json!(conv);
    value["msg_id"] = json!(msg_id);
    value["seq"] = json!(seq);
    s.out.print(format!("{line} (message {msg_id} #{seq})\n{tracker}"), value)
}

pub(super) async fn split_action(s: &mut Session, action: SplitCommand) -> anyhow::Result<()> {
    match action {
        SplitCommand::Show { split } => {
            let id =
                wallet_id(&split, "split", "the split bill's message in the chat shows it: `anytime history CHAT`")?;
            let api = Api::of(s)?;
            let view: SplitView = match Api::json(api.request(Method::GET, &format!("/v1/wallet/splits/{id}"))).await {
                Ok(view) => view,
                Err(f) if f.code() == Some(ErrorCode::InvalidArgument) => bail!(
                    "there is no split {id} in your chats (invalid_argument); check the id (`anytime history CHAT` shows it)"
                ),
                Err(f) => return Err(f.explain("reading the split")),
            };
            let people: Vec<UserId> =
                std::iter::once(view.requester).chain(view.requests.iter().map(|r| r.payer)).collect();
            s.learn_names(people).await;
            let (human, value) = describe_split(s, &view);
            s.out.print(human, value)
        }
    }
}

/// The tracker: a line for the split, then one per share's request.
fn describe_split(s: &Session, v: &SplitView) -> (String, serde_json::Value) {
    let names = s.out.names.borrow();
    let mut human = format!(
        "split {} by {}: paid {} of {} {} asked",
        v.id,
        name_of(&names, v.requester),
        v.paid,
        v.asked,
        v.currency
    );
    let mut requests = Vec::new();
    for r in &v.requests {
        let paid = r.transfer.as_deref().map(|t| format!(" (transfer {t})")).unwrap_or_default();
        human.push_str(&format!(
            "\n  {:<12} {} {}  {:<9} request {}{paid}",
            name_of(&names, r.payer),
            r.amount,
            r.currency,
            r.status,
            r.id
        ));
        let mut value = serde_json::to_value(r).unwrap_or_default();
        value["payer_name"] = json!(names.get(&r.payer));
        requests.push(value);
    }
    let mut value = serde_json::to_value(v).unwrap_or_default();
    value["requester_name"] = json!(names.get(&v.requester));
    value["requests"] = json!(requests);
    (human, value)
}

/// `anytime envelope CHAT TOTAL CURRENCY --shares N`.
pub(super) async fn envelope(
    s: &mut Session,
    conv: ConvId,
    total: &str,
    currency: &str,
    shares: u32,
    equal: bool,
    note: String,
) -> anyhow::Result<()> {
    let (info, _) = members_of(s, conv).await?;
    if info.kind == ConvKind::Direct {
        bail!("red envelopes are for groups; in a direct chat send money with `anytime pay`");
    }
    if shares == 0 {
        bail!("an envelope needs at least one share: --shares N");
    }
    let api = Api::of(s)?;
    let prompt =
        format!("Payment PIN to put {total} {} in a red envelope of {shares} shares: ", currency.to_ascii_uppercase());
    let pin = pin_for(s, &api, prompt).await?;
    let body = EnvelopeRequest {
        key: fresh_key(),
        conv,
        currency: currency.to_owned(),
        total: total.to_owned(),
        shares,
        split: if equal { "equal" } else { "random" }.to_owned(),
        pin,
    };
    let made: EnvelopeView = match Api::json_retried(api.request(Method::POST, "/v1/wallet/envelopes").json(&body)).await
    {
        Ok(made) => made,
        Err(Failure::Network(error)) => bail!(
            "the red envelope failed: no answer from the server after {ATTEMPTS} tries ({error}); it may or may not have been made — look at `anytime wallet history {}` before trying again. Nothing was sent to the chat",
            currency.to_ascii_uppercase()
        ),
        Err(f) if f.code() == Some(ErrorCode::InvalidAmount) => bail!(
            "{:#}; every share must be at least one minor unit (0.01 USD): fewer shares or more money. Nothing was paid",
            f.explain("the red envelope")
        ),
        Err(f) => bail!("{:#}. Nothing was paid and nothing was sent to the chat", f.explain("the red envelope")),
    };
    let message = Content::RedEnvelope(content::RedEnvelope {
        id: made.id.clone(),
        total: made.total.clone(),
        currency: made.currency.clone(),
        shares: made.shares,
        note: note.clone(),
    });
    let done = format!("MADE a red envelope of {} {} (envelope {})", made.total, made.currency, made.id);
    let (msg_id, seq) = tell_chat(s, conv, message, &done).await?;
    let line = crate::profile::envelope_line(&my_name(s), &made.total, &made.currency, made.shares, &note, &made.id);
    let mut value = serde_json::to_value(&made)?;
    value["msg_id"] = json!(msg_id);
    value["seq"] = json!(seq);
    s.out.print(format!("{line} (message {msg_id} #{seq})"), value)
}

/// `anytime grab ID`.
pub(super) async fn grab(s: &mut Session, envelope: &str) -> anyhow::Result<()> {
    let id = wallet_id(envelope, "red envelope", "its message in the chat shows it: `anytime history CHAT`")?;
    let api = Api::of(s)?;
    let sent = api.request(Method::POST, &format!("/v1/wallet/envelopes/{id}/grab"));
    let result: GrabResult = match Api::json_retried(sent).await {
        Ok(result) => result,
        Err(f) if f.code() == Some(ErrorCode::Expired) => {
            bail!("red envelope {id} has expired (expired): what was left went back to its sender")
        }
        Err(f) if f.code() == Some(ErrorCode::InvalidArgument) => bail!(
            "there is no red envelope {id} in your groups (invalid_argument): only members of its group can grab; check the id"
        ),
        Err(f) => return Err(f.explain("grabbing")),
    };
    let e = &result.envelope;
    let human = match (result.status.as_str(), &result.amount) {
        ("grabbed", Some(amount)) if result.again => {
            format!("you got {amount} {} (you had grabbed this envelope already: nothing more)", e.currency)
        }
        ("grabbed", Some(amount)) => format!("you got {amount} {}", e.currency),
        _ => "all shares were taken: nothing for you".to_owned(),
    };
    let human = format!("{human} ({} of {} shares grabbed)", e.grabs.len(), e.shares);
    s.out.print(human, serde_json::to_value(&result)?)
}
