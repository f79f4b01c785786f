//! One writer per state (issue 18): `follow` and `send` on one CLI profile, or two `send`s
//! racing, must never fork the device's MLS state (a fork reuses ratchet keys and leaves the
//! other side with "cannot decrypt" for good); a second server on one data directory refuses
//! to start.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cli::{anytime, Device};
use crate::support::Harness;

/// Every `undecryptable` event in a device's output, anywhere.
fn undecryptable(events: &[Value]) -> Vec<&Value> {
    events.iter().filter(|e| e["type"] == "undecryptable").collect()
}

fn spawn_anytime(profile: &Path, args: &[&str], stdout: Stdio) -> Child {
    Command::new(env!("CARGO_BIN_EXE_anytime"))
        .arg("--profile")
        .arg(profile)
        .arg("--json")
        .args(args)
        .env("ANYTIME_LOG", "warn")
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start anytime")
}

/// Runs `sync` on `device` until its history holds every text of `expected` (bounded), and
/// returns everything the syncs printed.
fn sync_until_all(device: &Device, conv: &str, expected: &[String]) -> Vec<Value> {
    let mut printed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        printed.extend(device.run(&["sync"]));
        let texts = device.texts(conv);
        let missing: Vec<&String> = expected.iter().filter(|t| !texts.contains(t)).collect();
        if missing.is_empty() {
            return printed;
        }
        assert!(Instant::now() < deadline, "still missing {} messages, e.g. {:?}", missing.len(), &missing[..1]);
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{} did not appear", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn issue_18_follow_and_fifty_sends_on_one_profile_never_fork_the_state() {
    let h = Harness::start();
    let alice = Device::new(&h, "alice", "one", true);
    let alice2 = Device::new(&h, "alice", "two", false);
    let bob = Device::new(&h, "bob", "one", true);
    let conv = alice.conv(&["direct", "bob"]);
    bob.run(&["sync"]);
    alice2.run(&["sync"]);

    // alice runs `follow` in one terminal…
    let follow_log = h.path().join("alice-follow.jsonl");
    let mut follow = spawn_anytime(
        &alice.profile,
        &["follow", "--seconds", "300"],
        Stdio::from(std::fs::File::create(&follow_log).unwrap()),
    );
    wait_for_file(&alice.profile.join("anytime.sock"));

    // …and 50 `send`s at once in others, while bob sends to her.
    let alice_texts: Vec<String> = (0..50).map(|i| format!("from alice's terminal {i}")).collect();
    let bob_texts: Vec<String> = (0..15).map(|i| format!("from bob {i}")).collect();
    let bob_sender = {
        let (profile, conv, texts) = (bob.profile.clone(), conv.clone(), bob_texts.clone());
        std::thread::spawn(move || {
            for text in texts {
                anytime(&profile, &["send", &conv, &text]).unwrap_or_else(|e| panic!("bob's send: {e}"));
            }
        })
    };
    let sends: Vec<Child> =
        alice_texts.iter().map(|text| spawn_anytime(&alice.profile, &["send", &conv, text], Stdio::piped())).collect();
    for send in sends {
        let output = send.wait_with_output().unwrap();
        assert!(output.status.success(), "send failed: {}", String::from_utf8_lossy(&output.stderr));
        let answer: Value = serde_json::from_slice(&output.stdout).expect("one JSON line from send");
        assert!(answer["seq"].as_u64().is_some_and(|seq| seq > 0), "{answer}");
    }
    bob_sender.join().unwrap();

    // Every message decrypts on every device, both ways.
    let everything: Vec<String> = alice_texts.iter().chain(&bob_texts).cloned().collect();
    let at_bob = sync_until_all(&bob, &conv, &alice_texts);
    assert_eq!(undecryptable(&at_bob), Vec::<&Value>::new());
    let at_alice2 = sync_until_all(&alice2, &conv, &everything);
    assert_eq!(undecryptable(&at_alice2), Vec::<&Value>::new());
    // alice's `follow` printed bob's messages as they came, and nothing it could not read.
    let deadline = Instant::now() + Duration::from_secs(30);
    let followed = loop {
        let printed: Vec<Value> = std::fs::read_to_string(&follow_log)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect();
        let seen = |t: &String| printed.iter().any(|e| e["type"] == "message" && e["text"] == t.as_str());
        if bob_texts.iter().all(seen) || Instant::now() > deadline {
            break printed;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    for text in &bob_texts {
        assert!(followed.iter().any(|e| e["text"] == text.as_str()), "follow did not show {text:?}");
    }
    assert_eq!(undecryptable(&followed), Vec::<&Value>::new());

    // `follow` is killed (no clean exit): its leftovers do not stand in the way, and the state
    // it leaves behind still talks to bob in both directions.
    follow.kill().unwrap();
    follow.wait().unwrap();
    assert_eq!(alice.texts(&conv).len(), everything.len(), "alice's own history holds all 65 once");
    alice.run(&["send", &conv, "after follow stopped"]);
    bob.run(&["send", &conv, "bob again"]);
    let at_bob = sync_until_all(&bob, &conv, &["after follow stopped".to_owned()]);
    assert_eq!(undecryptable(&at_bob), Vec::<&Value>::new());
    let at_alice = sync_until_all(&alice, &conv, &["bob again".to_owned()]);
    assert_eq!(undecryptable(&at_alice), Vec::<&Value>::new());
}

#[test]
fn issue_18_two_send_processes_racing_on_one_profile_take_turns() {
    let h = Harness::start();
    let alice = Device::new(&h, "alice", "one", true);
    let bob = Device::new(&h, "bob", "one", true);
    let conv = alice.conv(&["direct", "bob"]);
    bob.run(&["sync"]);
    let racers: Vec<_> = (0..2)
        .map(|racer| {
            let (profile, conv) = (alice.profile.clone(), conv.clone());
            std::thread::spawn(move || {
                let mut texts = Vec::new();
                for i in 0..12 {
                    let text = format!("racer {racer} message {i}");
                    anytime(&profile, &["send", &conv, &text]).unwrap_or_else(|e| panic!("racer {racer}: {e}"));
                    texts.push(text);
                }
                texts
            })
        })
        .collect();
    let sent: Vec<String> = racers.into_iter().flat_map(|r| r.join().unwrap()).collect();
    let at_bob = sync_until_all(&bob, &conv, &sent);
    assert_eq!(undecryptable(&at_bob), Vec::<&Value>::new());
    assert_eq!(bob.texts(&conv).len(), 24, "each message exactly once");
    // And alice still reads bob.
    bob.run(&["send", &conv, "got all 24"]);
    let at_alice = sync_until_all(&alice, &conv, &["got all 24".to_owned()]);
    assert_eq!(undecryptable(&at_alice), Vec::<&Value>::new());
}

#[test]
fn issue_18_a_second_server_on_the_same_data_directory_refuses_to_start() {
    let h = Harness::start();
    let output = Command::new(env!("CARGO_BIN_EXE_anytime"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(h.server.data_dir())
        .env("ANYTIME_LOG", "warn")
        .output()
        .expect("run a second server");
    assert_eq!(output.status.code(), Some(2), "the second server exits non-zero");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("another Anytime server"), "{stderr}");
    assert!(stderr.contains(&h.base()), "the message names the running server's address: {stderr}");
    // The first one is untouched.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let health = runtime.block_on(reqwest::get(format!("{}/healthz", h.base()))).expect("first server answers");
    assert!(health.status().is_success());
}

/// Copies a profile directory (no process holds it): what a second process that loaded the
/// profile before the first wrote back amounted to.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn issue_18_a_device_whose_state_forked_before_the_fix_is_re_added_and_recovers() {
    let h = Harness::start();
    let alice = Device::new(&h, "alice", "one", true);
    let bob = Device::new(&h, "bob", "one", true);
    let conv = alice.conv(&["direct", "bob"]);
    bob.run(&["sync"]);
    bob.run(&["send", &conv, "hello before the fork"]);
    sync_until_all(&alice, &conv, &["hello before the fork".to_owned()]);

    // Fork bob's state the way two processes did: one sends from the saved state, the other
    // writes back the state from before that send and sends too, reusing the ratchet generation.
    let saved = h.path().join("bob-saved");
    copy_dir(&bob.profile, &saved);
    bob.run(&["send", &conv, "sent by the first process"]);
    std::fs::remove_dir_all(&bob.profile).unwrap();
    copy_dir(&saved, &bob.profile);
    bob.run(&["send", &conv, "sent by the second process"]);

    // alice cannot read the second (the key was already used), says so, and re-adds bob's device.
    let at_alice = sync_until_all(&alice, &conv, &["sent by the first process".to_owned()]);
    let unreadable = undecryptable(&at_alice);
    assert_eq!(unreadable.len(), 1, "exactly the forked message is unreadable: {at_alice:?}");
    assert!(unreadable[0]["reason"].as_str().unwrap().contains("diverged"), "{:?}", unreadable[0]);
    let repaired: Vec<&Value> = at_alice.iter().filter(|e| e["type"] == "device_repaired").collect();
    assert_eq!(repaired.len(), 1, "alice re-added bob's device once: {at_alice:?}");
    assert_eq!(repaired[0]["user"], bob.run(&["whoami"])[0]["user"]);

    // bob rejoins from the Welcome, with a visible notice, and both directions work again.
    let at_bob = bob.run(&["sync"]);
    assert!(at_bob.iter().any(|e| e["type"] == "rejoined" && e["conv"] == conv.as_str()), "{at_bob:?}");
    bob.run(&["send", &conv, "bob after the repair"]);
    alice.run(&["send", &conv, "alice after the repair"]);
    let at_alice = sync_until_all(&alice, &conv, &["bob after the repair".to_owned()]);
    assert_eq!(undecryptable(&at_alice), Vec::<&Value>::new());
    let at_bob = sync_until_all(&bob, &conv, &["alice after the repair".to_owned()]);
    assert_eq!(undecryptable(&at_bob), Vec::<&Value>::new());
}
