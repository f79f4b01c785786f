//! Money requests, split bills and red envelopes in the terminal client, end to end: a group of
//! three, a split bill of 30 USD (one share paid with the PIN, one declined) seen in `sync` and
//! `history` with its id and tracked with `split show`, and a red envelope of two shares grabbed.

use serde_json::Value;

use super::wallet::{fails, ok};
use super::{human, Device};
use crate::support::Harness;

fn usd(device: &Device) -> String {
    let summary = ok(device, &["wallet"], &[]);
    let balances = summary[0]["balances"].as_array().cloned().unwrap_or_default();
    balances
        .iter()
        .find(|b| b["currency"] == "USD")
        .map_or_else(|| "0".to_owned(), |b| b["balance"].as_str().unwrap().to_owned())
}

/// The share of `username` in a split's tracker: (request id, status).
fn share_of(tracker: &Value, username: &str) -> (String, String) {
    let request = tracker["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .find(|r| r["payer_name"] == username)
        .unwrap_or_else(|| panic!("no share of {username}: {tracker}"));
    (request["id"].as_str().unwrap().to_owned(), request["status"].as_str().unwrap().to_owned())
}

#[test]
fn cli_split_bill_paid_and_declined_then_a_red_envelope_grabbed() {
    let h = Harness::start_with(&["--argon2-memory-kib", "1024", "--argon2-iterations", "1"]);
    let alice = Device::new(&h, "alice", "one", true);
    let bob = Device::new(&h, "bob", "one", true);
    let carol = Device::new(&h, "carol", "one", true);
    let conv = alice.conv(&["group", "dinner", "bob", "carol"]);
    bob.run(&["sync"]);
    carol.run(&["sync"]);
    for (device, pin) in [(&alice, "1357"), (&bob, "2468")] {
        ok(device, &["wallet", "pin"], &[("ANYTIME_PIN", pin)]);
        ok(device, &["wallet", "top-up", "50.00", "USD", "--card", "4242 4242 4242 4242"], &[]);
    }

    // alice splits 30 USD among the three of them: bob and carol are asked 10.00 each.
    let made = ok(&alice, &["split", &conv, "30.00", "USD", "--note", "dinner"], &[]);
    let split = made[0]["id"].as_str().expect("a split id").to_owned();
    assert_eq!(split.len(), 32, "{made:?}");
    assert_eq!(made[0]["asked"], "20.00", "alice's own share is not asked: {made:?}");
    assert_eq!(made[0]["requests"].as_array().map(Vec::len), Some(2), "{made:?}");

    // A custom split: each named member asked their own amount; bad shares ask nothing.
    let custom = ok(&alice, &["split", &conv, "25.00", "USD", "--share", "bob=12.50", "--share", "carol=7.25"], &[]);
    let asked: Vec<(String, String)> = custom[0]["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .map(|r| {
            (
                r["payer_name"].as_str().unwrap_or_default().to_owned(),
                r["amount"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert!(
        asked.contains(&("bob".into(), "12.50".into())) && asked.contains(&("carol".into(), "7.25".into())),
        "{asked:?}"
    );
    assert_eq!(custom[0]["asked"], "19.75");
    let error = fails(&alice, &["split", &conv, "5", "USD", "--share", "bob"], &[]);
    assert!(error.contains("USERNAME=AMOUNT"), "{error}");
    let error = fails(&alice, &["split", &conv, "5", "USD", "--share", "bob=0"], &[]);
    assert!(error.contains("invalid_amount"), "{error}");
    let error = fails(&alice, &["split", &conv, "5", "USD", "--share", "bob=1", "--share", "bob=2"], &[]);
    assert!(error.contains("twice"), "{error}");

    // bob and carol see it with its id, live and in their history.
    let line = format!("🧾 alice split 30.00 USD — dinner [split {split}]");
    let shown = human(&bob, &["sync"]);
    assert!(shown.contains(&line), "{shown}");
    let synced = ok(&carol, &["sync"], &[]);
    let seen = synced.iter().find(|e| e["kind"] == "split_bill").unwrap_or_else(|| panic!("{synced:?}"));
    assert_eq!(
        (seen["payment"]["transfer"].as_str(), seen["payment"]["amount"].as_str()),
        (Some(&*split), Some("30.00"))
    );
    let entries = bob.run(&["history", &conv]);
    let entry = entries.iter().find(|e| e["kind"] == "split_bill").unwrap_or_else(|| panic!("{entries:?}"));
    assert_eq!((entry["payment"]["transfer"].as_str(), entry["text"].as_str()), (Some(&*split), Some("dinner")));
    assert!(human(&carol, &["history", &conv]).contains(&line));

    // bob pays his share (its id from the tracker) with his PIN; carol declines hers.
    let tracker = ok(&bob, &["split", "show", &split], &[]);
    let (bob_request, status) = share_of(&tracker[0], "bob");
    assert_eq!(status, "open");
    let error = fails(&bob, &["request", "pay", &bob_request], &[("ANYTIME_PIN", "0000")]);
    assert!(error.contains("pin_wrong") && error.contains("Nothing was paid"), "{error}");
    assert_eq!(usd(&bob), "50.00");
    let paid = ok(&bob, &["request", "pay", &bob_request], &[("ANYTIME_PIN", "2468")]);
    assert_eq!(paid[0]["status"], "paid", "{paid:?}");
    let transfer = paid[0]["transfer"].as_str().expect("the transfer that paid it").to_owned();
    assert_eq!(usd(&bob), "40.00");
    assert_eq!(usd(&alice), "60.00");
    let (carol_request, _) = share_of(&ok(&carol, &["split", "show", &split], &[])[0], "carol");
    let error = fails(&carol, &["request", "pay", &bob_request], &[("ANYTIME_PIN", "1111")]);
    assert!(error.contains("no request") && error.contains("invalid_argument"), "{error}");
    let declined = ok(&carol, &["request", "decline", &carol_request], &[]);
    assert_eq!(declined[0]["status"], "declined", "{declined:?}");

    // The tracker: bob paid, carol declined, 10.00 of 20.00 came in.
    let tracker = &ok(&alice, &["split", "show", &split], &[])[0];
    assert_eq!((tracker["paid"].as_str(), tracker["asked"].as_str()), (Some("10.00"), Some("20.00")), "{tracker}");
    assert_eq!(share_of(tracker, "bob").1, "paid");
    assert_eq!(share_of(tracker, "carol").1, "declined");
    let shown = human(&alice, &["split", "show", &split]);
    assert!(shown.contains("paid 10.00 of 20.00 USD") && shown.contains("declined"), "{shown}");
    // alice is told in the chat, with the transfer that paid it.
    alice.run(&["sync"]);
    let entries = alice.run(&["history", &conv]);
    let payment = entries.iter().find(|e| e["kind"] == "payment").unwrap_or_else(|| panic!("{entries:?}"));
    assert_eq!(
        (payment["payment"]["transfer"].as_str(), payment["text"].as_str()),
        (Some(&*transfer), Some("paid your request"))
    );

    let shown = human(&alice, &["history", &conv]);
    assert!(shown.contains("💸 bob sent 10.00 USD to alice — paid your request"), "{shown}");

    // A red envelope of two equal shares: bob grabs 1.00, once.
    let made = ok(
        &alice,
        &["envelope", &conv, "2.00", "USD", "--shares", "2", "--equal", "--note", "best wishes"],
        &[("ANYTIME_PIN", "1357")],
    );
    let envelope = made[0]["id"].as_str().expect("an envelope id").to_owned();
    assert_eq!(usd(&alice), "58.00");
    let shown = human(&bob, &["sync"]);
    assert!(shown.contains(&format!("🧧 alice: 2.00 USD in 2 shares — best wishes [envelope {envelope}]")), "{shown}");
    let grabbed = ok(&bob, &["grab", &envelope], &[]);
    assert_eq!((grabbed[0]["status"].as_str(), grabbed[0]["amount"].as_str()), (Some("grabbed"), Some("1.00")));
    assert!(human(&bob, &["wallet"]).contains("USD  balance 41.00"));
    let again = ok(&bob, &["grab", &envelope], &[]);
    assert_eq!(again[0]["again"], true, "{again:?}");
    assert_eq!(usd(&bob), "41.00", "grabbing again got nothing more");
    assert!(human(&carol, &["grab", &envelope]).contains("you got 1.00 USD"));
    assert!(human(&alice, &["grab", &envelope]).contains("all shares were taken"));
    assert_eq!(usd(&alice), "58.00");
}
