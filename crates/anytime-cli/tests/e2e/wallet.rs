//! The wallet over HTTP against a real server: sandbox top-ups (succeed, decline, second step),
//! payments with a PIN, idempotent retries, limits, PIN lockout, bad input that changes nothing,
//! history and CSV; and money that survives SIGKILL exactly once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use anytime_proto::http::SessionResponse;
use anytime_proto::wallet::{PayRequest, PinRequest, TopUpConfirm, TopUpRequest, WalletOp, WalletReply};
use anytime_proto::{frame, ErrorCode, ServerFrame, UserId};
use serde_json::{json, Value};

use crate::support::*;

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn new(base: String) -> Api {
        Api { base, http: reqwest::Client::new() }
    }

    /// (HTTP status, JSON body or null).
    async fn call(&self, session: &SessionResponse, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.http.get(url),
            _ => self.http.post(url),
        }
        .bearer_auth(&session.token);
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        let text = response.text().await.expect("a body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn ok(&self, session: &SessionResponse, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, value) = self.call(session, method, path, body).await;
        assert!((200..300).contains(&status), "{method} {path}: {status} {value}");
        value
    }

    /// The error code of a refused call.
    async fn refused(&self, session: &SessionResponse, method: &str, path: &str, body: Option<Value>) -> String {
        let (status, value) = self.call(session, method, path, body.clone()).await;
        assert!(status >= 400, "{method} {path} {body:?} was accepted: {value}");
        value["code"].as_str().unwrap_or_default().to_owned()
    }

    async fn balance(&self, session: &SessionResponse, currency: &str) -> String {
        let summary = self.ok(session, "GET", "/v1/wallet", None).await;
        let balances = summary["balances"].as_array().cloned().unwrap_or_default();
        balances
            .iter()
            .find(|b| b["currency"] == currency)
            .map(|b| b["balance"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_else(|| "0".into())
    }
}

fn pay(key: &str, to: UserId, amount: &str, pin: &str) -> Value {
    json!({"key": key, "to": to, "currency": "USD", "amount": amount, "pin": pin})
}

fn top_up(key: &str, amount: &str, card: &str) -> Value {
    json!({"key": key, "currency": "USD", "amount": amount, "card": card})
}

/// The ledger's tables only (a wrong PIN does change the PIN's failure count, by design).
fn ledger_snapshot(h: &Harness) -> BTreeMap<String, Vec<String>> {
    h.snapshot().into_iter().filter(|(table, _)| table.starts_with("ledger_")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallet_top_up_pay_retry_limits_pin_and_bad_input() {
    let h = Harness::start_with(&["--argon2-memory-kib", "1024", "--argon2-iterations", "1"]);
    let api = Api::new(h.base());
    let (alice, bob, carol) = (h.register("alice").await, h.register("bob").await, h.register("carol").await);

    let summary = api.ok(&alice, "GET", "/v1/wallet", None).await;
    assert_eq!((summary["sandbox"].as_bool(), summary["pin_set"].as_bool()), (Some(true), Some(false)));
    assert_eq!(
        api.refused(&alice, "POST", "/v1/wallet/pay", Some(pay("p0", bob.user_id, "1", "1234"))).await,
        "pin_wrong"
    );

    // Sandbox cards: one succeeds (once per key), one is declined, one needs a second step.
    let first = api.ok(&alice, "POST", "/v1/wallet/top-up", Some(top_up("t1", "100.00", "4242 4242 4242 4242"))).await;
    assert_eq!(first["status"], "succeeded");
    assert_eq!(first["transfer"]["duplicate"], false);
    let again = api.ok(&alice, "POST", "/v1/wallet/top-up", Some(top_up("t1", "100.00", "4242 4242 4242 4242"))).await;
    assert_eq!(
        (again["transfer"]["duplicate"].as_bool(), &again["transfer"]["id"]),
        (Some(true), &first["transfer"]["id"])
    );
    let declined = api.ok(&alice, "POST", "/v1/wallet/top-up", Some(top_up("t2", "5", "4000 0000 0000 0002"))).await;
    assert_eq!(declined["status"], "declined");
    let step = api.ok(&alice, "POST", "/v1/wallet/top-up", Some(top_up("t3", "20", "4000000000003220"))).await;
    assert_eq!(step["status"], "confirmation_required");
    let challenge = step["challenge"].as_str().expect("a challenge").to_owned();
    let wrong = api
        .ok(&alice, "POST", "/v1/wallet/top-up/confirm", Some(json!({"challenge": challenge, "code": "000000"})))
        .await;
    assert_eq!(wrong["status"], "declined");
    let confirmed = api
        .ok(&alice, "POST", "/v1/wallet/top-up/confirm", Some(json!({"challenge": challenge, "code": "123456"})))
        .await;
    assert_eq!(confirmed["status"], "succeeded");
    assert_eq!(
        api.refused(&bob, "POST", "/v1/wallet/top-up/confirm", Some(json!({"challenge": challenge, "code": "123456"})))
            .await,
        "invalid_argument",
        "a used challenge (and anyone else's) is gone"
    );
    assert_eq!(api.balance(&alice, "USD").await, "120.00");

    // PIN, then a payment, and its retry.
    api.ok(&alice, "POST", "/v1/wallet/pin", Some(json!({"pin": "2468"}))).await;
    assert_eq!(
        api.refused(&alice, "POST", "/v1/wallet/pin", Some(json!({"pin": "1111"}))).await,
        "pin_wrong",
        "changing needs the current PIN"
    );
    let paid = api.ok(&alice, "POST", "/v1/wallet/pay", Some(pay("p1", bob.user_id, "12.34", "2468"))).await;
    assert_eq!(
        (paid["direction"].as_str(), paid["amount"].as_str(), paid["duplicate"].as_bool()),
        (Some("out"), Some("12.34"), Some(false))
    );
    let retried = api.ok(&alice, "POST", "/v1/wallet/pay", Some(pay("p1", bob.user_id, "12.34", "2468"))).await;
    assert_eq!((retried["duplicate"].as_bool(), &retried["id"]), (Some(true), &paid["id"]));
    assert_eq!(api.balance(&alice, "USD").await, "107.66");
    assert_eq!(api.balance(&bob, "USD").await, "12.34");
    let id = paid["id"].as_str().expect("an id").to_owned();
    let seen = api.ok(&bob, "GET", &format!("/v1/wallet/transfers/{id}"), None).await;
    assert_eq!((&seen["direction"], &seen["counterparty"]), (&json!("in"), &json!(alice.user_id)));

    // Bad input: each refused with its code, the ledger unchanged.
    let before = ledger_snapshot(&h);
    let cases: Vec<(&str, &str, Value, &str)> = vec![
        ("zero", "/v1/wallet/pay", pay("b1", bob.user_id, "0", "2468"), "invalid_amount"),
        ("negative", "/v1/wallet/pay", pay("b2", bob.user_id, "-5", "2468"), "invalid_amount"),
        ("i64 max", "/v1/wallet/pay", pay("b3", bob.user_id, "9223372036854775807", "2468"), "invalid_amount"),
        ("too many decimals", "/v1/wallet/pay", pay("b4", bob.user_id, "1.234", "2468"), "invalid_amount"),
        (
            "unknown currency",
            "/v1/wallet/pay",
            json!({"key": "b5", "to": bob.user_id, "currency": "XYZ", "amount": "1", "pin": "2468"}),
            "unknown_currency",
        ),
        ("nobody", "/v1/wallet/pay", pay("b6", UserId(424242), "1", "2468"), "user_not_found"),
        ("myself", "/v1/wallet/pay", pay("b7", alice.user_id, "1", "2468"), "invalid_argument"),
        ("more than I have", "/v1/wallet/pay", pay("b8", bob.user_id, "500", "2468"), "insufficient_funds"),
        (
            "over the per-transfer limit",
            "/v1/wallet/top-up",
            top_up("b9", "10000.01", "4242424242424242"),
            "limit_exceeded",
        ),
        ("no key", "/v1/wallet/pay", pay("", bob.user_id, "1", "2468"), "invalid_argument"),
        ("reused key, other payment", "/v1/wallet/pay", pay("p1", bob.user_id, "1.00", "2468"), "duplicate"),
        ("not a test card", "/v1/wallet/top-up", top_up("b10", "1", "5555555555554444"), "invalid_argument"),
        ("malformed", "/v1/wallet/pay", json!({"key": 5}), "invalid_argument"),
        ("wrong PIN", "/v1/wallet/pay", pay("b11", bob.user_id, "1", "0000"), "pin_wrong"),
    ];
    for (what, path, body, code) in cases {
        assert_eq!(api.refused(&alice, "POST", path, Some(body)).await, code, "{what}");
        assert_eq!(ledger_snapshot(&h), before, "{what} changed the ledger");
    }
    assert_eq!(
        api.refused(&carol, "GET", &format!("/v1/wallet/transfers/{id}"), None).await,
        "invalid_argument",
        "someone else's transfer"
    );
    assert_eq!(api.refused(&carol, "GET", "/v1/wallet/history?currency=ABC", None).await, "unknown_currency");
    let no_token = SessionResponse { token: "at1.nope".into(), ..carol.clone() };
    assert_eq!(api.refused(&no_token, "GET", "/v1/wallet", None).await, "invalid_token");

    // Five wrong PINs in a row (the first was the last bad-input case) lock payments, the right
    // PIN included.
    for _ in 0..3 {
        assert_eq!(
            api.refused(&alice, "POST", "/v1/wallet/pay", Some(pay("l", bob.user_id, "1", "1357"))).await,
            "pin_wrong"
        );
    }
    assert_eq!(
        api.refused(&alice, "POST", "/v1/wallet/pay", Some(pay("l", bob.user_id, "1", "1357"))).await,
        "pin_locked"
    );
    assert_eq!(
        api.refused(&alice, "POST", "/v1/wallet/pay", Some(pay("l", bob.user_id, "1", "2468"))).await,
        "pin_locked"
    );
    assert_eq!(ledger_snapshot(&h), before);

    // History, newest first, in pages; the same as CSV.
    let page = api.ok(&alice, "GET", "/v1/wallet/history?currency=USD&limit=2", None).await;
    let purposes: Vec<&str> =
        page["transfers"].as_array().expect("transfers").iter().map(|t| t["purpose"].as_str().unwrap_or("")).collect();
    assert_eq!(purposes, ["payment", "top_up"]);
    let next = page["next"].as_str().expect("another page").to_owned();
    let rest = api.ok(&alice, "GET", &format!("/v1/wallet/history?currency=USD&limit=2&before={next}"), None).await;
    assert_eq!(rest["transfers"].as_array().map(Vec::len), Some(1));
    let csv = reqwest::Client::new()
        .get(format!("{}/v1/wallet/history?currency=USD&format=csv", h.base()))
        .bearer_auth(&alice.token)
        .send()
        .await
        .expect("csv")
        .text()
        .await
        .expect("text");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "id,time_ms,direction,purpose,counterparty,amount,currency");
    assert!(lines[1].contains(&format!(",out,payment,{},12.34,USD", bob.user_id)), "{csv}");
    assert_eq!(lines.len(), 4, "{csv}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_payments_survive_sigkill_exactly_once_and_the_ledger_sums_to_zero() {
    const USERS: usize = 50;
    const PAYMENTS: usize = 1_000;
    let mut h = Harness::start_with(&["--argon2-memory-kib", "1024", "--argon2-iterations", "1"]);
    let api = Arc::new(Api::new(h.base()));
    let mut users = Vec::new();
    for n in 0..USERS {
        let user = h.register(&format!("payer{n}")).await;
        api.ok(&user, "POST", "/v1/wallet/pin", Some(json!({"pin": "1234"}))).await;
        api.ok(&user, "POST", "/v1/wallet/top-up", Some(top_up(&format!("fund{n}"), "100.00", "4242424242424242")))
            .await;
        users.push(user);
    }
    let users = Arc::new(users);
    // Deterministic "random" payments: who pays whom how much.
    let plan: Vec<(usize, usize, String)> = (0..PAYMENTS)
        .map(|i| {
            let x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
            let from = (x % USERS as u64) as usize;
            let to = (from + 1 + ((x >> 8) % (USERS as u64 - 1)) as usize) % USERS;
            (from, to, format!("{}.{:02}", 1 + (x >> 16) % 30, (x >> 24) % 100))
        })
        .collect();
    let attempt = |i: usize| {
        let (api, users, (from, to, amount)) = (api.clone(), users.clone(), plan[i].clone());
        async move {
            let body = pay(&format!("pay{i}"), users[to].user_id, &amount, "1234");
            let (status, value) = api.call(&users[from], "POST", "/v1/wallet/pay", Some(body)).await;
            (i, status, value)
        }
    };
    // Payments 64 at a time; the server is killed once 400 are answered.
    let mut acknowledged: HashMap<usize, Value> = HashMap::new();
    let mut next = 0;
    let mut in_flight = tokio::task::JoinSet::new();
    while acknowledged.len() < 400 {
        while next < PAYMENTS && in_flight.len() < 64 {
            in_flight.spawn(attempt(next));
            next += 1;
        }
        let (i, status, value) = in_flight.join_next().await.expect("a payment").expect("joined");
        if status == 503 {
            // PIN checks share the password-hashing gate: busy is backpressure; retry.
            in_flight.spawn(attempt(i));
            continue;
        }
        if status == 200 {
            acknowledged.insert(i, value);
        } else {
            assert_eq!(value["code"], "insufficient_funds", "payment {i}: {status} {value}");
            acknowledged.insert(i, Value::Null);
        }
    }
    h.server.kill().expect("SIGKILL");
    in_flight.abort_all();
    h.server.restart().expect("restart");
    let api = Api::new(h.base());
    // Every payment again with its key: the acknowledged ones answer their first result.
    let mut paid = 0;
    for (i, (from, to, amount)) in plan.iter().enumerate() {
        let body = pay(&format!("pay{i}"), users[*to].user_id, amount, "1234");
        let (status, value) = api.call(&users[*from], "POST", "/v1/wallet/pay", Some(body)).await;
        match acknowledged.get(&i) {
            Some(first) if !first.is_null() => {
                assert_eq!(status, 200, "acknowledged payment {i}: {value}");
                assert_eq!((value["duplicate"].as_bool(), &value["id"]), (Some(true), &first["id"]), "payment {i}");
            }
            _ => {}
        }
        if status == 200 {
            paid += 1;
        }
    }
    // Exactly one transfer per successful payment (each in its payer's history once), balances
    // from them, nothing negative, and money only moved: never made or lost.
    let mut stored = 0;
    let mut total = 0i128;
    for user in users.iter() {
        let mut before = String::new();
        loop {
            let page = api.ok(user, "GET", &format!("/v1/wallet/history?currency=USD&limit=200{before}"), None).await;
            let transfers = page["transfers"].as_array().cloned().unwrap_or_default();
            stored += transfers.iter().filter(|t| t["direction"] == "out" && t["purpose"] == "payment").count();
            match page["next"].as_str() {
                Some(next) => before = format!("&before={next}"),
                None => break,
            }
        }
        let cents: i128 = api.balance(user, "USD").await.replace('.', "").parse().expect("a balance");
        assert!(cents >= 0);
        total += cents;
    }
    assert_eq!(stored, paid, "every payment stored exactly once");
    assert_eq!(total, USERS as i128 * 10_000, "the sum of all wallets is what was topped up");
}

fn envelope(key: &str, conv: anytime_proto::ConvId, total: &str, shares: u32, split: &str) -> Value {
    json!({"key": key, "conv": conv, "currency": "USD", "total": total, "shares": shares, "split": split, "pin": "2468"})
}

fn cents(text: &str) -> i128 {
    text.replace('.', "").parse().expect("an amount")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_envelope_shares_go_to_exactly_as_many_grabbers_and_the_rest_comes_back() {
    const MEMBERS: usize = 100;
    let h = Harness::start_with(&[
        "--argon2-memory-kib",
        "1024",
        "--argon2-iterations",
        "1",
        "--red-envelope-ttl-secs",
        "3",
        "--gc-interval-secs",
        "1",
    ]);
    let api = Arc::new(Api::new(h.base()));
    let alice = h.register("alice").await;
    let mut members = Vec::new();
    for n in 0..MEMBERS {
        members.push(h.register(&format!("member{n}")).await);
    }
    let outsider = h.register("outsider").await;
    let mut a = h.connect(&alice).await;
    let ids: Vec<UserId> = members.iter().map(|m| m.user_id).collect();
    let group = create_group(&mut a, "party", &ids).await;
    let direct = create_direct(&mut a, outsider.user_id).await;
    api.ok(&alice, "POST", "/v1/wallet/pin", Some(json!({"pin": "2468"}))).await;
    api.ok(&alice, "POST", "/v1/wallet/top-up", Some(top_up("fund", "200.00", "4242424242424242"))).await;

    let made =
        api.ok(&alice, "POST", "/v1/wallet/envelopes", Some(envelope("e1", group, "100.00", 10, "random"))).await;
    assert_eq!((made["status"].as_str(), made["left"].as_str()), (Some("open"), Some("100.00")));
    let id = made["id"].as_str().expect("an id").to_owned();
    assert_eq!(api.balance(&alice, "USD").await, "100.00", "the total left the sender's wallet");
    let retry =
        api.ok(&alice, "POST", "/v1/wallet/envelopes", Some(envelope("e1", group, "100.00", 10, "random"))).await;
    assert_eq!(retry["id"], made["id"]);
    assert_eq!(api.balance(&alice, "USD").await, "100.00", "a retried creation moves nothing again");

    // A hundred members grab at once: ten get a share.
    let mut grabs = tokio::task::JoinSet::new();
    for member in members.iter().cloned() {
        let (api, path) = (api.clone(), format!("/v1/wallet/envelopes/{id}/grab"));
        grabs.spawn(async move {
            let answer = api.ok(&member, "POST", &path, None).await;
            (member, answer)
        });
    }
    let mut winners = Vec::new();
    while let Some(joined) = grabs.join_next().await {
        let (member, answer) = joined.expect("joined");
        match answer["status"].as_str() {
            Some("grabbed") => winners.push((member, answer["amount"].as_str().expect("an amount").to_owned())),
            Some("empty") => {}
            other => panic!("{other:?}: {answer}"),
        }
    }
    assert_eq!(winners.len(), 10, "exactly as many grabs as shares succeed");
    assert_eq!(winners.iter().map(|(_, amount)| cents(amount)).sum::<i128>(), 10_000, "the shares add up to the total");
    for (member, amount) in &winners {
        assert_eq!(&api.balance(member, "USD").await, amount, "each winner got its share, once");
        let again = api.ok(member, "POST", &format!("/v1/wallet/envelopes/{id}/grab"), None).await;
        assert_eq!((again["again"].as_bool(), again["amount"].as_str()), (Some(true), Some(amount.as_str())));
        assert_eq!(&api.balance(member, "USD").await, amount, "grabbing again pays nothing more");
    }
    let view = api.ok(&alice, "GET", &format!("/v1/wallet/envelopes/{id}"), None).await;
    assert_eq!((view["grabs"].as_array().map(Vec::len), view["left"].as_str()), (Some(10), Some("0.00")));
    assert_eq!(
        api.refused(&outsider, "POST", &format!("/v1/wallet/envelopes/{id}/grab"), None).await,
        "invalid_argument",
        "not a member"
    );
    assert_eq!(api.refused(&outsider, "GET", &format!("/v1/wallet/envelopes/{id}"), None).await, "invalid_argument");
    assert_eq!(
        api.refused(&alice, "POST", "/v1/wallet/envelopes", Some(envelope("e2", direct, "1.00", 1, "equal"))).await,
        "not_a_group"
    );
    assert_eq!(
        api.refused(&alice, "POST", "/v1/wallet/envelopes", Some(envelope("e3", group, "0.05", 10, "equal"))).await,
        "invalid_amount",
        "every share needs at least a cent"
    );
    assert_eq!(
        api.refused(&alice, "POST", "/v1/wallet/envelopes", Some(envelope("e4", group, "500.00", 5, "equal"))).await,
        "insufficient_funds"
    );

    // An envelope nobody empties: after its expiry the rest goes back to the sender.
    let small = api.ok(&alice, "POST", "/v1/wallet/envelopes", Some(envelope("e5", group, "10.00", 5, "equal"))).await;
    let small_id = small["id"].as_str().expect("an id").to_owned();
    for member in &members[..2] {
        let grabbed = api.ok(member, "POST", &format!("/v1/wallet/envelopes/{small_id}/grab"), None).await;
        assert_eq!(grabbed["amount"], "2.00");
    }
    assert_eq!(api.balance(&alice, "USD").await, "90.00");
    let mut refunded = Value::Null;
    for _ in 0..100 {
        refunded = api.ok(&alice, "GET", &format!("/v1/wallet/envelopes/{small_id}"), None).await;
        if refunded["status"] == "refunded" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!((refunded["status"].as_str(), refunded["left"].as_str()), (Some("refunded"), Some("0.00")));
    assert_eq!(api.balance(&alice, "USD").await, "96.00", "the three shares nobody took came back");
    assert_eq!(
        api.refused(&members[3], "POST", &format!("/v1/wallet/envelopes/{small_id}/grab"), None).await,
        "expired"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_bill_tracks_who_paid_and_requests_are_paid_once() {
    let h = Harness::start_with(&["--argon2-memory-kib", "1024", "--argon2-iterations", "1"]);
    let api = Api::new(h.base());
    let (alice, bob, carol, dave) =
        (h.register("alice").await, h.register("bob").await, h.register("carol").await, h.register("dave").await);
    let mut a = h.connect(&alice).await;
    let group = create_group(&mut a, "dinner", &[bob.user_id, carol.user_id]).await;
    for (user, key) in [(&bob, "b"), (&carol, "c")] {
        api.ok(user, "POST", "/v1/wallet/pin", Some(json!({"pin": "2468"}))).await;
        api.ok(user, "POST", "/v1/wallet/top-up", Some(top_up(key, "50.00", "4242424242424242"))).await;
    }

    // Thirty dollars among three: alice asks bob and carol for ten each.
    let body = json!({"key": "s1", "conv": group, "currency": "USD", "total": "30.00",
        "people": [alice.user_id, bob.user_id, carol.user_id, bob.user_id]});
    let split = api.ok(&alice, "POST", "/v1/wallet/splits", Some(body.clone())).await;
    assert_eq!((split["asked"].as_str(), split["paid"].as_str()), (Some("20.00"), Some("0.00")));
    let again = api.ok(&alice, "POST", "/v1/wallet/splits", Some(body)).await;
    assert_eq!(again["id"], split["id"], "a retried split is the same split");
    let requests = split["requests"].as_array().cloned().expect("requests");
    let of = |user: &SessionResponse| {
        requests
            .iter()
            .find(|r| r["payer"] == json!(user.user_id))
            .and_then(|r| r["id"].as_str())
            .expect("a request")
            .to_owned()
    };
    let (for_bob, for_carol) = (of(&bob), of(&carol));
    assert_eq!(requests.len(), 2, "the maker's own share is not asked");
    // Each payer's wallet lists what they are asked (and nobody else's).
    let listed = |list: Value| -> Vec<String> {
        list.as_array().expect("a list").iter().map(|r| r["id"].as_str().unwrap_or_default().to_owned()).collect()
    };
    assert_eq!(listed(api.ok(&bob, "GET", "/v1/wallet/requests", None).await), std::slice::from_ref(&for_bob));
    assert_eq!(listed(api.ok(&carol, "GET", "/v1/wallet/requests", None).await), std::slice::from_ref(&for_carol));
    assert!(
        listed(api.ok(&alice, "GET", "/v1/wallet/requests", None).await).is_empty(),
        "the requester is asked nothing"
    );
    assert!(listed(api.ok(&dave, "GET", "/v1/wallet/requests", None).await).is_empty());

    let paid = api.ok(&bob, "POST", &format!("/v1/wallet/requests/{for_bob}/pay"), Some(json!({"pin": "2468"}))).await;
    assert!(listed(api.ok(&bob, "GET", "/v1/wallet/requests", None).await).is_empty(), "paid: no longer asked");
    assert_eq!(paid["status"], "paid");
    let twice = api.ok(&bob, "POST", &format!("/v1/wallet/requests/{for_bob}/pay"), Some(json!({"pin": "2468"}))).await;
    assert_eq!(twice["status"], "paid");
    assert_eq!(api.balance(&bob, "USD").await, "40.00", "paid once");
    assert_eq!(api.balance(&alice, "USD").await, "10.00");
    let declined = api.ok(&carol, "POST", &format!("/v1/wallet/requests/{for_carol}/close"), None).await;
    assert_eq!(declined["status"], "declined");
    assert_eq!(
        api.refused(&carol, "POST", &format!("/v1/wallet/requests/{for_carol}/pay"), Some(json!({"pin": "2468"})))
            .await,
        "invalid_argument",
        "a declined request cannot be paid"
    );
    let tracker =
        api.ok(&carol, "GET", &format!("/v1/wallet/splits/{}", split["id"].as_str().expect("id")), None).await;
    let statuses: BTreeMap<String, String> = tracker["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .map(|r| (r["payer"].as_str().unwrap_or("").to_owned(), r["status"].as_str().unwrap_or("").to_owned()))
        .collect();
    assert_eq!(statuses.get(&bob.user_id.to_string()).map(String::as_str), Some("paid"));
    assert_eq!(statuses.get(&carol.user_id.to_string()).map(String::as_str), Some("declined"));
    assert_eq!((tracker["paid"].as_str(), tracker["asked"].as_str()), (Some("10.00"), Some("20.00")));
    assert_eq!(
        api.refused(&dave, "GET", &format!("/v1/wallet/splits/{}", split["id"].as_str().expect("id")), None).await,
        "invalid_argument",
        "not for outsiders"
    );

    // A plain request: bob asks carol; a non-member cannot be asked; others cannot see it.
    let asked = api
        .ok(
            &bob,
            "POST",
            "/v1/wallet/requests",
            Some(json!({"key": "r1", "conv": group, "payer": carol.user_id, "currency": "USD", "amount": "5"})),
        )
        .await;
    assert_eq!(asked["status"], "open");
    let id = asked["id"].as_str().expect("id").to_owned();
    assert_eq!(api.refused(&dave, "GET", &format!("/v1/wallet/requests/{id}"), None).await, "invalid_argument");
    assert_eq!(
        api.refused(&bob, "POST", &format!("/v1/wallet/requests/{id}/pay"), Some(json!({"pin": "2468"}))).await,
        "invalid_argument",
        "only the payer pays"
    );
    assert_eq!(
        api.refused(
            &bob,
            "POST",
            "/v1/wallet/requests",
            Some(json!({"key": "r2", "conv": group, "payer": dave.user_id, "currency": "USD", "amount": "5"}))
        )
        .await,
        "not_member"
    );
    api.ok(&carol, "POST", &format!("/v1/wallet/requests/{id}/pay"), Some(json!({"pin": "2468"}))).await;
    assert_eq!(api.balance(&carol, "USD").await, "45.00");
    assert_eq!(api.balance(&bob, "USD").await, "45.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_limit_counts_payments_and_envelopes_also_after_a_restart() {
    let mut h = Harness::start_with(&["--argon2-memory-kib", "1024", "--argon2-iterations", "1"]);
    let (alice, bob) = (h.register("alice").await, h.register("bob").await);
    let mut a = h.connect(&alice).await;
    let group = create_group(&mut a, "limits", &[bob.user_id]).await;
    let api = Api::new(h.base());
    api.ok(&alice, "POST", "/v1/wallet/pin", Some(json!({"pin": "2468"}))).await;
    for n in 0..6 {
        api.ok(&alice, "POST", "/v1/wallet/top-up", Some(top_up(&format!("d{n}"), "10000", "4242424242424242"))).await;
    }
    for n in 0..4 {
        api.ok(&alice, "POST", "/v1/wallet/pay", Some(pay(&format!("p{n}"), bob.user_id, "10000", "2468"))).await;
    }
    api.ok(&alice, "POST", "/v1/wallet/envelopes", Some(envelope("env", group, "5000", 5, "equal"))).await;
    // The count survives a restart: the new process reads today's transfers back.
    h.server.kill().expect("SIGKILL");
    h.server.restart().expect("restart");
    let api = Api::new(h.base());
    api.ok(&alice, "POST", "/v1/wallet/pay", Some(pay("p4", bob.user_id, "5000", "2468"))).await;
    assert_eq!(
        api.refused(&alice, "POST", "/v1/wallet/pay", Some(pay("p5", bob.user_id, "0.01", "2468"))).await,
        "limit_exceeded",
        "50,000 sent today: payments and the envelope"
    );
    assert_eq!(api.balance(&alice, "USD").await, "10000.00");
}

fn payout(key: &str, amount: &str, card: &str, pin: &str) -> Value {
    json!({"key": key, "currency": "USD", "amount": amount, "card": card, "pin": pin})
}

/// (balance, available) of the caller's USD wallet.
async fn usd(api: &Api, session: &SessionResponse) -> (String, String) {
    let summary = api.ok(session, "GET", "/v1/wallet", None).await;
    let usd = summary["balances"].as_array().and_then(|b| b.iter().find(|b| b["currency"] == "USD").cloned());
    let field = |name: &str| usd.as_ref().and_then(|b| b[name].as_str()).unwrap_or("0").to_owned();
    (field("balance"), field("available"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payouts_hold_the_money_then_capture_or_release_it_and_an_unanswered_one_expires_back() {
    let h = Harness::start_with(&[
        "--argon2-memory-kib",
        "1024",
        "--argon2-iterations",
        "1",
        "--payout-hold-ttl-secs",
        "3",
        "--gc-interval-secs",
        "1",
    ]);
    let api = Api::new(h.base());
    let (alice, bob) = (h.register("alice").await, h.register("bob").await);
    api.ok(&alice, "POST", "/v1/wallet/pin", Some(json!({"pin": "2468"}))).await;
    api.ok(&alice, "POST", "/v1/wallet/top-up", Some(top_up("fund", "100.00", "4242424242424242"))).await;

    // Paid: the hold is captured, once however often it is asked.
    let paid =
        api.ok(&alice, "POST", "/v1/wallet/payouts", Some(payout("o1", "30.00", "4242 4242 4242 4242", "2468"))).await;
    assert_eq!((paid["status"].as_str(), paid["transfer"]["hold"].as_str()), (Some("paid"), Some("captured")));
    assert_eq!(
        (paid["transfer"]["purpose"].as_str(), paid["transfer"]["amount"].as_str()),
        (Some("payout"), Some("30.00"))
    );
    let again =
        api.ok(&alice, "POST", "/v1/wallet/payouts", Some(payout("o1", "30.00", "4242 4242 4242 4242", "2468"))).await;
    assert_eq!((again["status"].as_str(), again["transfer"]["duplicate"].as_bool()), (Some("paid"), Some(true)));
    assert_eq!(again["transfer"]["id"], paid["transfer"]["id"]);
    assert_eq!(usd(&api, &alice).await, ("70.00".into(), "70.00".into()), "paid out once");

    // Declined: released, the money is back at once.
    let declined =
        api.ok(&alice, "POST", "/v1/wallet/payouts", Some(payout("o2", "10.00", "4000000000000002", "2468"))).await;
    assert_eq!(
        (declined["status"].as_str(), declined["transfer"]["hold"].as_str()),
        (Some("declined"), Some("released"))
    );
    assert_eq!(usd(&api, &alice).await, ("70.00".into(), "70.00".into()));

    // Bad input changes nothing in the ledger.
    let before = ledger_snapshot(&h);
    for (body, code) in [
        (payout("b1", "5", "5555 5555 5555 4444", "2468"), "invalid_argument"),
        (payout("b2", "5", "4242424242424242", "1111"), "pin_wrong"),
        (payout("b3", "0", "4242424242424242", "2468"), "invalid_amount"),
        (payout("b4", "-5", "4242424242424242", "2468"), "invalid_amount"),
        (payout("b5", "9223372036854775807", "4242424242424242", "2468"), "invalid_amount"),
        (payout("b6", "70.01", "4242424242424242", "2468"), "insufficient_funds"),
        (payout("", "5", "4242424242424242", "2468"), "invalid_argument"),
        (
            json!({"key": "b7", "currency": "XYZ", "amount": "5", "card": "4242424242424242", "pin": "2468"}),
            "unknown_currency",
        ),
    ] {
        assert_eq!(api.refused(&alice, "POST", "/v1/wallet/payouts", Some(body.clone())).await, code, "{body}");
    }
    assert_eq!(ledger_snapshot(&h), before, "refused payouts left the ledger as it was");

    // The provider does not answer: the money stays held (not spendable), then comes back.
    let pending =
        api.ok(&alice, "POST", "/v1/wallet/payouts", Some(payout("o3", "20.00", "4000 0000 0000 0077", "2468"))).await;
    assert_eq!((pending["status"].as_str(), pending["transfer"]["hold"].as_str()), (Some("pending"), Some("held")));
    assert_eq!(usd(&api, &alice).await, ("70.00".into(), "50.00".into()), "20 held, not spendable");
    assert_eq!(
        api.refused(&alice, "POST", "/v1/wallet/pay", Some(pay("p1", bob.user_id, "60.00", "2468"))).await,
        "insufficient_funds",
        "held money cannot be spent twice"
    );
    let mut expired = Value::Null;
    for _ in 0..40 {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        if usd(&api, &alice).await.1 == "70.00" {
            expired = api
                .ok(&alice, "POST", "/v1/wallet/payouts", Some(payout("o3", "20.00", "4000000000000077", "2468")))
                .await;
            break;
        }
    }
    assert_eq!((expired["status"].as_str(), expired["transfer"]["hold"].as_str()), (Some("expired"), Some("expired")));
    assert_eq!(usd(&api, &alice).await, ("70.00".into(), "70.00".into()), "the unanswered payout's money is back");

    // The history lists each payout once, with where its hold ended.
    let history = api.ok(&alice, "GET", "/v1/wallet/history?currency=USD", None).await;
    let payouts: Vec<(String, String)> = history["transfers"]
        .as_array()
        .expect("transfers")
        .iter()
        .filter(|t| t["purpose"] == "payout")
        .map(|t| {
            (t["amount"].as_str().unwrap_or_default().to_owned(), t["hold"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    assert_eq!(
        payouts,
        [("20.00".into(), "expired".into()), ("10.00".into(), "released".into()), ("30.00".into(), "captured".into())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and NATS: ANYTIME_E2E_DATABASE and ANYTIME_E2E_NATS, then -- --include-ignored"]
async fn the_daily_limit_holds_across_nodes_of_a_cluster() {
    let c = crate::cluster::Cluster::start_with(2, &["--argon2-memory-kib", "1024", "--argon2-iterations", "1"]);
    let (n0, n1) = (Api::new(c.base(0)), Api::new(c.base(1)));
    let alice = anytime_testkit::register(&c.base(0), "alice").await.unwrap();
    let bob = anytime_testkit::register(&c.base(1), "bob").await.unwrap();
    n0.ok(&alice, "POST", "/v1/wallet/pin", Some(json!({"pin": "2468"}))).await;
    for n in 0..7 {
        n0.ok(&alice, "POST", "/v1/wallet/top-up", Some(top_up(&format!("d{n}"), "10000", "4242424242424242"))).await;
    }
    // Six payments of 10,000 (the daily limit is 50,000), three on each node, at once: each node
    // alone would let its three through.
    let mut tasks = Vec::new();
    for n in 0..6 {
        let api = Api::new(c.base(n % 2));
        let (alice, to) = (alice.clone(), bob.user_id);
        tasks.push(tokio::spawn(async move {
            let (status, body) =
                api.call(&alice, "POST", "/v1/wallet/pay", Some(pay(&format!("p{n}"), to, "10000", "2468"))).await;
            (status, body["code"].as_str().unwrap_or_default().to_owned())
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    let paid = outcomes.iter().filter(|(status, _)| *status == 200).count();
    let refused: Vec<&str> = outcomes.iter().filter(|(s, _)| *s != 200).map(|(_, code)| code.as_str()).collect();
    assert_eq!((paid, refused), (5, vec!["limit_exceeded"]), "{outcomes:?}");
    assert_eq!(n1.balance(&alice, "USD").await, "20000.00");
    assert_eq!(n0.balance(&bob, "USD").await, "50000.00");
    // Neither node lets more through afterwards.
    for (n, api) in [&n0, &n1].into_iter().enumerate() {
        let code =
            api.refused(&alice, "POST", "/v1/wallet/pay", Some(pay(&format!("q{n}"), bob.user_id, "0.01", "2468")));
        assert_eq!(code.await, "limit_exceeded", "node {n}");
    }
}

/// One wallet call over the WebSocket.
async fn call(client: &mut anytime_testkit::RawClient, op: WalletOp) -> Result<WalletReply, ErrorCode> {
    match client.request(frame::WalletCall { op }.into()).await.expect("the server answers") {
        ServerFrame::WalletResult(result) => Ok(result.reply),
        ServerFrame::Error(error) => Err(error.code),
        other => panic!("not a wallet answer: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wallet_works_over_the_websocket_with_the_same_rules_and_codes_as_over_http() {
    let h = Harness::start_with(&["--argon2-memory-kib", "1024", "--argon2-iterations", "1"]);
    let (alice, bob) = (h.register("alice").await, h.register("bob").await);
    let (mut a, mut b) = (h.connect(&alice).await, h.connect(&bob).await);
    assert_eq!(
        call(&mut a, WalletOp::SetPin(PinRequest { pin: "2468".into(), current_pin: None })).await,
        Ok(WalletReply::Done)
    );
    let card = |key: &str, amount: &str, card: &str| TopUpRequest {
        key: key.into(),
        currency: "USD".into(),
        amount: amount.into(),
        card: card.into(),
    };
    let Ok(WalletReply::TopUp(topped)) = call(&mut a, WalletOp::TopUp(card("t1", "50.00", "4242424242424242"))).await
    else {
        panic!("top-up")
    };
    assert_eq!(topped.status, "succeeded");
    // A card that needs a second step, answered over the socket too.
    let Ok(WalletReply::TopUp(step)) = call(&mut a, WalletOp::TopUp(card("t2", "5.00", "4000000000003220"))).await
    else {
        panic!("second-step top-up")
    };
    let challenge = step.challenge.clone().expect("a challenge");
    let confirm = TopUpConfirm { challenge, code: "123456".into() };
    let Ok(WalletReply::TopUp(confirmed)) = call(&mut a, WalletOp::ConfirmTopUp(confirm)).await else {
        panic!("confirm")
    };
    assert_eq!(confirmed.status, "succeeded");

    let pay = |key: &str, amount: &str, pin: &str| PayRequest {
        key: key.into(),
        to: bob.user_id,
        currency: "USD".into(),
        amount: amount.into(),
        pin: pin.into(),
    };
    let Ok(WalletReply::Transfer(paid)) = call(&mut a, WalletOp::Pay(pay("p1", "12.50", "2468"))).await else {
        panic!("pay")
    };
    assert_eq!((paid.amount.as_str(), paid.duplicate), ("12.50", false));
    // The same key again moves nothing and answers the first transfer, as over HTTP.
    let Ok(WalletReply::Transfer(again)) = call(&mut a, WalletOp::Pay(pay("p1", "12.50", "2468"))).await else {
        panic!("retry")
    };
    assert_eq!((again.id.as_str(), again.duplicate), (paid.id.as_str(), true));
    // Refusals carry the wallet's stable codes and move nothing.
    let before = ledger_snapshot(&h);
    assert_eq!(call(&mut a, WalletOp::Pay(pay("p2", "1.00", "1111"))).await, Err(ErrorCode::PinWrong));
    assert_eq!(call(&mut a, WalletOp::Pay(pay("p3", "100.00", "2468"))).await, Err(ErrorCode::InsufficientFunds));
    assert_eq!(call(&mut a, WalletOp::Pay(pay("p4", "0", "2468"))).await, Err(ErrorCode::InvalidAmount));
    assert_eq!(call(&mut a, WalletOp::Pay(pay("p1", "13.00", "2468"))).await, Err(ErrorCode::Duplicate));
    assert!(call(&mut b, WalletOp::Transfer { id: "00".repeat(16) }).await.is_err(), "no such transfer");
    assert_eq!(ledger_snapshot(&h), before, "refused calls change nothing");

    // Bob sees it over his socket, and HTTP sees the same ledger.
    let Ok(WalletReply::Summary(summary)) = call(&mut b, WalletOp::Summary).await else { panic!("summary") };
    let usd = summary.balances.iter().find(|b| b.currency == "USD").expect("a USD balance");
    assert_eq!(usd.balance, "12.50");
    assert_eq!(Api::new(h.base()).balance(&alice, "USD").await, "42.50");
    let history = WalletOp::History { currency: "USD".into(), before: None, limit: 10 };
    let Ok(WalletReply::History(history)) = call(&mut b, history).await else { panic!("history") };
    assert_eq!(
        history.transfers.iter().map(|t| (t.id.as_str(), t.direction.as_str())).collect::<Vec<_>>(),
        [(paid.id.as_str(), "in")]
    );
    let Ok(WalletReply::Transfer(seen)) = call(&mut b, WalletOp::Transfer { id: paid.id.clone() }).await else {
        panic!("transfer")
    };
    assert_eq!((seen.id, seen.amount), (paid.id, "12.50".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_payout_gives_back_its_part_of_the_daily_limit() {
    let h = Harness::start_with(&["--argon2-memory-kib", "1024", "--argon2-iterations", "1"]);
    let api = Api::new(h.base());
    let (alice, bob) = (h.register("alice").await, h.register("bob").await);
    api.ok(&alice, "POST", "/v1/wallet/pin", Some(json!({"pin": "2468"}))).await;
    api.ok(&alice, "POST", "/v1/wallet/top-up", Some(top_up("fund", "10000", "4242424242424242"))).await;
    // Five payouts of 10,000 (the whole daily limit) held and released by the provider.
    for n in 0..5 {
        let declined = api.ok(
            &alice,
            "POST",
            "/v1/wallet/payouts",
            Some(payout(&format!("o{n}"), "10000", "4000000000000002", "2468")),
        );
        assert_eq!(declined.await["status"], "declined");
    }
    // Nothing left the wallet today, so a payment of 10,000 is within the limit.
    api.ok(&alice, "POST", "/v1/wallet/pay", Some(pay("p", bob.user_id, "10000", "2468"))).await;
    assert_eq!(api.balance(&bob, "USD").await, "10000.00");
}
