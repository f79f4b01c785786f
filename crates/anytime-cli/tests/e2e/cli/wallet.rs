//! The wallet in the terminal client, end to end: real `anytime` processes and a real server
//! with the sandbox provider. A PIN, top-ups with the sandbox's cards (success, second step,
//! declined), a payment in a chat whose note only the chat can read, the receiver's check of it
//! with the server, history and its CSV export — also through a running `follow`, which asks the
//! terminal the command was typed in for the PIN.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{human, Device};
use crate::support::Harness;

/// Cheap PIN hashing: the PIN's rules are the same, the tests just do not wait for argon2.
fn start() -> Harness {
    Harness::start_with(&["--argon2-memory-kib", "1024", "--argon2-iterations", "1"])
}

/// Runs `anytime --json ARGS` with only the given PIN variables set, `stdin` as its input (none:
/// an empty one) and `cwd` as its working directory.
fn run_with(device: &Device, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>, cwd: Option<&Path>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_anytime"));
    command
        .arg("--profile")
        .arg(&device.profile)
        .arg("--json")
        .args(args)
        .env("ANYTIME_LOG", "warn")
        .env_remove("ANYTIME_PIN")
        .env_remove("ANYTIME_CURRENT_PIN")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
    let mut child = command.spawn().expect("run anytime");
    {
        use std::io::Write;
        let mut input = child.stdin.take().expect("stdin");
        input.write_all(stdin.unwrap_or_default().as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("anytime finishes")
}

/// The JSON lines of a command that must succeed.
pub(super) fn ok(device: &Device, args: &[&str], env: &[(&str, &str)]) -> Vec<Value> {
    lines(run_with(device, args, env, None, None), args)
}

fn lines(output: Output, args: &[&str]) -> Vec<Value> {
    assert!(output.status.success(), "anytime {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect()
}

/// The error text of a command that must fail (non-zero exit).
pub(super) fn fails(device: &Device, args: &[&str], env: &[(&str, &str)]) -> String {
    let output = run_with(device, args, env, None, None);
    assert!(!output.status.success(), "anytime {args:?} succeeded: {}", String::from_utf8_lossy(&output.stdout));
    assert_ne!(output.status.code(), Some(0));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// (balance, available) in `currency`, as `anytime wallet` shows them.
fn balance(device: &Device, currency: &str) -> (String, String) {
    let summary = ok(device, &["wallet"], &[]);
    let balances = summary[0]["balances"].as_array().cloned().unwrap_or_default();
    balances
        .iter()
        .find(|b| b["currency"] == currency)
        .map(|b| (b["balance"].as_str().unwrap().to_owned(), b["available"].as_str().unwrap().to_owned()))
        .unwrap_or_else(|| ("0".into(), "0".into()))
}

fn payments(history: &[Value]) -> Vec<&Value> {
    history.iter().filter(|e| e["kind"] == "payment").collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn cli_wallet_payout_to_sandbox_cards_paid_declined_and_held() {
    let h = start();
    let alice = Device::new(&h, "alice", "one", true);
    let error =
        fails(&alice, &["wallet", "payout", "5", "USD", "--card", "4242424242424242"], &[("ANYTIME_PIN", "2468")]);
    assert!(error.contains("anytime wallet pin"), "no PIN yet: {error}");
    ok(&alice, &["wallet", "pin"], &[("ANYTIME_PIN", "2468")]);
    ok(&alice, &["wallet", "top-up", "50", "USD", "--card", "4242 4242 4242 4242"], &[]);
    let pin = [("ANYTIME_PIN", "2468")];

    let paid = ok(&alice, &["wallet", "payout", "20", "USD", "--card", "4242 4242 4242 4242"], &pin);
    assert_eq!((paid[0]["status"].as_str(), paid[0]["transfer"]["hold"].as_str()), (Some("paid"), Some("captured")));
    assert_eq!(paid[0]["balance"]["balance"], "30.00");
    let declined = ok(&alice, &["wallet", "payout", "5", "USD", "--card", "4000000000000002"], &pin);
    assert_eq!(declined[0]["status"], "declined");
    let held = ok(&alice, &["wallet", "payout", "10", "USD", "--card", "4000 0000 0000 0077"], &pin);
    assert_eq!(held[0]["status"], "pending");
    assert_eq!(balance(&alice, "USD"), ("30.00".into(), "20.00".into()), "10 held while the provider is silent");

    let error = fails(&alice, &["wallet", "payout", "5", "USD", "--card", "5555 5555 5555 4444"], &pin);
    assert!(error.contains("test cards") && error.contains("nothing was paid out"), "{error}");
    let error =
        fails(&alice, &["wallet", "payout", "5", "USD", "--card", "4242424242424242"], &[("ANYTIME_PIN", "0000")]);
    assert!(error.contains("pin_wrong"), "{error}");
    let error = fails(&alice, &["wallet", "payout", "25", "USD", "--card", "4242424242424242"], &pin);
    assert!(error.contains("insufficient_funds"), "more than is available: {error}");

    let history = human(&alice, &["wallet", "history", "USD"]);
    assert!(history.contains("payout") && history.contains("[captured]") && history.contains("[held]"), "{history}");
    assert!(history.contains("[released]"), "{history}");
}

#[test]
fn cli_wallet_pin_top_ups_a_payment_with_an_encrypted_note_checks_history_and_csv() {
    let h = start();
    let alice = Device::new(&h, "alice", "one", true);
    let bob = Device::new(&h, "bob", "one", true);
    let carol = Device::new(&h, "carol", "one", true);
    let bob_id = bob.run(&["whoami"])[0]["user"].as_str().unwrap().to_owned();
    let conv = alice.conv(&["direct", "bob"]);
    bob.run(&["sync"]);

    // The wallet says plainly that its provider is the sandbox.
    let summary = &ok(&alice, &["wallet"], &[])[0];
    assert_eq!((summary["sandbox"].as_bool(), summary["provider"].as_str()), (Some(true), Some("sandbox")));
    assert_eq!(summary["pin_set"], false);
    assert!(summary["transfer_units_max"].as_u64().is_some_and(|n| n > 0), "{summary}");
    let shown = human(&alice, &["wallet"]);
    assert!(shown.contains("SANDBOX") && shown.contains("no real money"), "{shown}");
    assert!(shown.contains("anytime wallet pin"), "no PIN yet, and it says how to set one: {shown}");

    // No PIN: paying is refused before anything is asked or moved.
    let error = fails(&alice, &["pay", &conv, "1", "USD"], &[("ANYTIME_PIN", "2468")]);
    assert!(error.contains("anytime wallet pin"), "{error}");
    // A PIN must come from somewhere: no terminal, no variable, nothing on stdin.
    let error = fails(&alice, &["wallet", "pin"], &[]);
    assert!(error.contains("ANYTIME_PIN"), "{error}");
    let error = fails(&alice, &["wallet", "pin"], &[("ANYTIME_PIN", "12ab")]);
    assert!(error.contains("4 to 8 digits"), "{error}");
    let set = ok(&alice, &["wallet", "pin"], &[("ANYTIME_PIN", "2468")]);
    assert_eq!((set[0]["pin_set"].as_bool(), set[0]["changed"].as_bool()), (Some(true), Some(false)));
    assert_eq!(ok(&alice, &["wallet"], &[])[0]["pin_set"], true);
    // Changing it needs the current one.
    let error = fails(&alice, &["wallet", "pin"], &[("ANYTIME_PIN", "1357"), ("ANYTIME_CURRENT_PIN", "0000")]);
    assert!(error.contains("pin_wrong"), "{error}");
    let changed = ok(&alice, &["wallet", "pin"], &[("ANYTIME_PIN", "1357"), ("ANYTIME_CURRENT_PIN", "2468")]);
    assert_eq!(changed[0]["changed"], true);

    // Top-ups with the sandbox's cards: one succeeds, one after its second step.
    let topped = ok(&alice, &["wallet", "top-up", "100.00", "USD", "--card", "4242 4242 4242 4242"], &[]);
    assert_eq!(topped[0]["status"], "succeeded");
    assert_eq!(topped[0]["balance"]["balance"], "100.00");
    let stepped =
        ok(&alice, &["wallet", "top-up", "20", "USD", "--card", "4000 0000 0000 3220", "--code", "123456"], &[]);
    assert_eq!(stepped[0]["transfer"]["amount"], "20.00");
    assert_eq!(balance(&alice, "USD"), ("120.00".into(), "120.00".into()));
    // A wrong second-step code, a declined card and a card the sandbox does not know change nothing.
    let error =
        fails(&alice, &["wallet", "top-up", "20", "USD", "--card", "4000000000003220", "--code", "000000"], &[]);
    assert!(error.contains("declined the second step"), "{error}");
    let error = fails(&alice, &["wallet", "top-up", "5", "USD", "--card", "4000 0000 0000 0002"], &[]);
    assert!(error.contains("the sandbox declined the card ending 0002"), "{error}");
    let error = fails(&alice, &["wallet", "top-up", "5", "USD", "--card", "5555 5555 5555 4444"], &[]);
    assert!(error.contains("test cards"), "{error}");
    let error = fails(&alice, &["wallet", "top-up", "5", "XXX", "--card", "4242424242424242"], &[]);
    assert!(error.contains("unknown_currency"), "{error}");
    assert_eq!(balance(&alice, "USD"), ("120.00".into(), "120.00".into()));

    // A wrong PIN: nothing is paid and nothing reaches the chat.
    let error = fails(&alice, &["pay", &conv, "12.34", "USD", "--note", "wrong pin"], &[("ANYTIME_PIN", "9999")]);
    assert!(error.contains("pin_wrong") && error.contains("nothing was sent to the chat"), "{error}");
    // Too much: the code, and what to do.
    let error = fails(&alice, &["pay", &conv, "500", "USD"], &[("ANYTIME_PIN", "1357")]);
    assert!(error.contains("insufficient_funds") && error.contains("anytime wallet top-up"), "{error}");
    assert_eq!(balance(&alice, "USD").0, "120.00");
    assert_eq!(payments(&alice.run(&["history", &conv])), Vec::<&Value>::new());
    let synced = bob.run(&["sync"]);
    assert!(!synced.iter().any(|e| e["kind"] == "payment"), "{synced:?}");

    // The payment, with a note only the chat can read.
    let note = format!("for lunch NOTE-{}", std::process::id());
    let paid = ok(&alice, &["pay", &conv, "12.34", "USD", "--note", &note], &[("ANYTIME_PIN", "1357")]);
    let transfer = paid[0]["transfer"].as_str().expect("a transfer id").to_owned();
    assert_eq!(transfer.len(), 32, "{paid:?}");
    assert_eq!((paid[0]["amount"].as_str(), paid[0]["to"].as_str()), (Some("12.34"), Some(bob_id.as_str())));
    assert_eq!(balance(&alice, "USD").0, "107.66");

    // bob sees who paid whom, how much and why, live and in his history.
    let lines = human(&bob, &["sync"]);
    assert!(lines.contains(&format!("💸 alice sent 12.34 USD to bob — {note}")), "{lines}");
    let entries = bob.run(&["history", &conv]);
    let got = payments(&entries);
    assert_eq!(got.len(), 1, "{entries:?}");
    assert_eq!(got[0]["text"], note.as_str());
    assert_eq!(got[0]["payment"]["transfer"], transfer.as_str());
    assert_eq!(got[0]["payment"]["amount"], "12.34");
    assert_eq!(got[0]["payment"]["currency"], "USD");
    assert_eq!(got[0]["payment"]["to"], bob_id.as_str());
    let lines = human(&bob, &["history", &conv]);
    assert!(lines.contains(&format!("💸 alice sent 12.34 USD to bob — {note}")), "{lines}");
    assert_eq!(payments(&alice.run(&["history", &conv])).len(), 1, "the payer's own history has it too");
    assert_eq!(balance(&bob, "USD"), ("12.34".into(), "12.34".into()));
    // The note went end to end encrypted: never on the server's disk or in its log.
    for entry in std::fs::read_dir(h.server.data_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            assert!(!contains(&std::fs::read(&path).unwrap(), note.as_bytes()), "the note in {}", path.display());
        }
    }
    assert!(!contains(&std::fs::read(h.server.log_path()).unwrap(), note.as_bytes()), "the note in the server log");

    // bob checks the message's claim with the server; carol, not a party, is told it is not hers.
    let checked = ok(&bob, &["wallet", "check", &transfer], &[]);
    assert_eq!(checked[0]["verified"], true);
    assert_eq!((checked[0]["direction"].as_str(), checked[0]["amount"].as_str()), (Some("in"), Some("12.34")));
    assert_eq!(checked[0]["counterparty_name"], "alice");
    assert_eq!(checked[0]["claims"][0]["matches"], true, "{checked:?}");
    let shown = human(&bob, &["wallet", "check", &transfer]);
    assert!(shown.contains("VERIFIED") && shown.contains("matches"), "{shown}");
    let error = fails(&carol, &["wallet", "check", &transfer], &[]);
    assert!(error.contains("no transfer"), "{error}");
    let error = fails(&bob, &["wallet", "check", "not-a-transfer"], &[]);
    assert!(error.contains("32 hex digits"), "{error}");

    // alice's history, newest first, the same page by page.
    let listed = ok(&alice, &["wallet", "history", "USD"], &[]);
    let summary: Vec<(String, String, String)> = listed
        .iter()
        .map(|t| {
            let field = |k: &str| t[k].as_str().unwrap_or_default().to_owned();
            (field("direction"), field("purpose"), field("amount"))
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("out".into(), "payment".into(), "12.34".into()),
            ("in".into(), "top_up".into(), "20.00".into()),
            ("in".into(), "top_up".into(), "100.00".into())
        ]
    );
    assert_eq!(listed[0]["counterparty_name"], "bob");
    assert_eq!(listed[0]["id"], transfer.as_str());
    assert_eq!(ok(&alice, &["wallet", "history", "USD", "--page-size", "1"], &[]), listed);
    assert_eq!(ok(&alice, &["wallet", "history", "USD", "--limit", "2"], &[]).len(), 2);
    let shown = human(&alice, &["wallet", "history", "USD"]);
    assert!(shown.contains("-12.34 USD  to bob"), "{shown}");

    // The CSV export: every page, one header.
    let csv_path = h.path().join("alice-usd.csv");
    let wrote = ok(&alice, &["wallet", "history", "USD", "--csv", csv_path.to_str().unwrap(), "--page-size", "1"], &[]);
    assert_eq!(wrote[0]["rows"], 3);
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 4, "{csv}");
    assert!(rows[0].starts_with("id,time_ms,direction"), "{csv}");
    assert!(rows[1].starts_with(&transfer) && rows[1].contains(",out,payment,"), "{csv}");
    assert!(rows[1].ends_with(",12.34,USD"), "{csv}");
    assert!(rows[2].contains(",in,top_up,") && rows[3].contains(",100.00,USD"), "{csv}");

    // In a group, whom to pay is named, and must be a member.
    let group = alice.conv(&["group", "lunch", "bob"]);
    bob.run(&["sync"]);
    let error = fails(&alice, &["pay", &group, "1", "USD"], &[("ANYTIME_PIN", "1357")]);
    assert!(error.contains("--to"), "{error}");
    let error = fails(&alice, &["pay", &group, "1", "USD", "--to", "carol"], &[("ANYTIME_PIN", "1357")]);
    assert!(error.contains("not a member"), "{error}");
    let paid = ok(&alice, &["pay", &group, "1.5", "USD", "--to", "bob", "--note", "tip"], &[("ANYTIME_PIN", "1357")]);
    assert_eq!(paid[0]["amount"], "1.50", "the message carries the server's amount");
    let synced = bob.run(&["sync"]);
    let event = synced.iter().find(|e| e["kind"] == "payment").unwrap_or_else(|| panic!("{synced:?}"));
    assert_eq!(event["text"], "tip");
    assert_eq!(event["payment"]["amount"], "1.50");
    assert_eq!(event["payment"]["to"], bob_id.as_str());
    assert_eq!(event["payment"]["transfer"], paid[0]["transfer"]);
    assert_eq!(balance(&bob, "USD").0, "13.84");
}

fn spawn_follow(device: &Device) -> Child {
    Command::new(env!("CARGO_BIN_EXE_anytime"))
        .arg("--profile")
        .arg(&device.profile)
        .args(["follow", "--seconds", "300"])
        .env("ANYTIME_LOG", "warn")
        .env_remove("ANYTIME_PIN")
        .env_remove("ANYTIME_CURRENT_PIN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start follow")
}

#[test]
fn cli_wallet_commands_run_through_a_running_follow_which_asks_the_terminal_they_came_from() {
    let h = start();
    let alice = Device::new(&h, "alice", "one", true);
    let bob = Device::new(&h, "bob", "one", true);
    let conv = alice.conv(&["direct", "bob"]);
    bob.run(&["sync"]);

    // alice's `follow` serves her profile; it has no PIN variable and no terminal.
    let mut follow = spawn_follow(&alice);
    let socket = alice.profile.join("anytime.sock");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "follow did not start");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The PIN is a line on the stdin of the command typed, which answers follow's question.
    let set = lines(run_with(&alice, &["wallet", "pin"], &[], Some("4321\n"), None), &["wallet", "pin"]);
    assert_eq!(set[0]["pin_set"], true);
    // So is a second step's code.
    let args = ["wallet", "top-up", "50", "USD", "--card", "4000000000003220"];
    let topped = lines(run_with(&alice, &args, &[], Some("123456\n"), None), &args);
    assert_eq!(topped[0]["balance"]["balance"], "50.00");
    // Nothing to answer with: a clear error, and follow goes on serving.
    let output = run_with(&alice, &["pay", &conv, "1", "USD"], &[], None, None);
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("no payment PIN was given"), "{error}");
    // The variable of the command's own process answers too.
    let paid = ok(&alice, &["pay", &conv, "7", "USD", "--note", "via follow"], &[("ANYTIME_PIN", "4321")]);
    assert_eq!(paid[0]["amount"], "7.00");
    // A relative CSV path means the typed command's directory, not follow's.
    let here = h.path().join("exports");
    std::fs::create_dir_all(&here).unwrap();
    let args = ["wallet", "history", "USD", "--csv", "usd.csv"];
    lines(run_with(&alice, &args, &[], None, Some(&here)), &args);
    let csv = std::fs::read_to_string(here.join("usd.csv")).expect("the export where the command was typed");
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(follow.try_wait().unwrap().is_none(), "follow still runs");
    follow.kill().unwrap();
    follow.wait().unwrap();

    let synced = bob.run(&["sync"]);
    let event = synced.iter().find(|e| e["kind"] == "payment").unwrap_or_else(|| panic!("{synced:?}"));
    assert_eq!((event["text"].as_str(), event["payment"]["amount"].as_str()), (Some("via follow"), Some("7.00")));
    let checked = ok(&bob, &["wallet", "check", event["payment"]["transfer"].as_str().unwrap()], &[]);
    assert_eq!(checked[0]["claims"][0]["matches"], true, "{checked:?}");
}
