//! The terminal client end to end: `anytime` subprocesses with their own profile directories
//! talk through a real server process; the server only ever sees ciphertext.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::Harness;

mod files;
mod message_tools;
mod money;
mod wallet;

pub(crate) struct Device {
    pub(crate) profile: PathBuf,
}

pub(crate) fn anytime(profile: &Path, args: &[&str]) -> Result<Vec<Value>, String> {
    let output = Command::new(env!("CARGO_BIN_EXE_anytime"))
        .arg("--profile")
        .arg(profile)
        .arg("--json")
        .args(args)
        .env("ANYTIME_LOG", "warn")
        .output()
        .expect("run anytime");
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&output.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect())
}

impl Device {
    pub(crate) fn new(h: &Harness, name: &str, device: &str, register: bool) -> Device {
        let profile = h.path().join(format!("{name}-{device}"));
        let server = h.base();
        let password = format!("password-{name}");
        let args = ["--server", &server, name, "--password", &password, "--device-name", device];
        let verb = if register { "register" } else { "login" };
        let out =
            anytime(&profile, &[&[verb][..], &args[..]].concat()).unwrap_or_else(|e| panic!("{verb} {name}: {e}"));
        if !register {
            // Linking: approve the new device from the account's first device.
            assert_eq!(out[0]["pending"], true);
            let first = h.path().join(format!("{name}-one"));
            let code = out[0]["link_code"].as_str().unwrap();
            anytime(&first, &["approve", code]).unwrap_or_else(|e| panic!("approve {name}: {e}"));
            // Its first sync uploads its key packages, so members can add it to groups.
            anytime(&profile, &["sync"]).unwrap_or_else(|e| panic!("first sync of {name}: {e}"));
        }
        Device { profile }
    }

    pub(crate) fn run(&self, args: &[&str]) -> Vec<Value> {
        anytime(&self.profile, args).unwrap_or_else(|e| panic!("anytime {args:?}: {e}"))
    }

    pub(crate) fn conv(&self, args: &[&str]) -> String {
        self.run(args).last().expect("output")["conv"].as_str().expect("conv").to_owned()
    }

    /// Texts of the local history, in order.
    pub(crate) fn texts(&self, conv: &str) -> Vec<String> {
        self.run(&["history", conv]).iter().map(|e| e["text"].as_str().unwrap().to_owned()).collect()
    }

    fn history(&self, conv: &str) -> Vec<Value> {
        self.run(&["history", conv])
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn two_cli_users_chat_both_ways_and_the_server_never_sees_the_plaintext() {
    let h = Harness::start();
    let alice = Device::new(&h, "alice", "laptop", true);
    let bob = Device::new(&h, "bob", "phone", true);
    let marker =
        format!("MARKER-{}", anytime_testkit::msg_id().0.iter().map(|b| format!("{b:02x}")).collect::<String>());
    let conv = alice.conv(&["direct", "bob"]);
    alice.run(&["send", &conv, &format!("hello bob {marker}")]);
    let got = bob.run(&["sync"]);
    let messages: Vec<&Value> = got.iter().filter(|e| e["type"] == "message").collect();
    assert_eq!(messages.len(), 1, "{got:?}");
    assert_eq!(messages[0]["text"], format!("hello bob {marker}"));
    bob.run(&["send", &conv, "hi alice"]);
    let got = alice.run(&["sync"]);
    assert!(got.iter().any(|e| e["type"] == "message" && e["text"] == "hi alice"), "{got:?}");
    assert_eq!(alice.texts(&conv), [format!("hello bob {marker}"), "hi alice".to_owned()]);
    assert_eq!(bob.texts(&conv), [format!("hello bob {marker}"), "hi alice".to_owned()]);
    // The recipients read it; the server's disk and log never had it, even undelivered.
    for path in files::files_under(h.server.data_dir()) {
        assert!(!contains(&std::fs::read(&path).unwrap(), marker.as_bytes()), "marker in {}", path.display());
    }
    assert!(!contains(&std::fs::read(h.server.log_path()).unwrap(), marker.as_bytes()), "marker in the server log");
    // Local search finds it on the device.
    let found = bob.run(&["search", &marker]);
    assert_eq!(found.len(), 1);
}

#[test]
fn cli_group_of_three_users_with_two_devices_each_and_removal() {
    let h = Harness::start();
    let ann1 = Device::new(&h, "ann", "one", true);
    let ann2 = Device::new(&h, "ann", "two", false);
    let ben1 = Device::new(&h, "ben", "one", true);
    let ben2 = Device::new(&h, "ben", "two", false); // stays offline until the end
    let cat1 = Device::new(&h, "cat", "one", true);
    let cat2 = Device::new(&h, "cat", "two", false);
    let conv = ann1.conv(&["group", "trio", "ben", "cat"]);
    for d in [&ann2, &ben1, &cat1, &cat2] {
        d.run(&["sync"]);
    }
    let online = [&ann1, &ann2, &ben1, &cat1, &cat2];
    let mut sent = Vec::new();
    for round in 0..2 {
        for (i, d) in online.iter().enumerate() {
            let text = format!("r{round}-d{i}");
            d.run(&["send", &conv, &text]);
            sent.push(text);
        }
    }
    for d in online {
        d.run(&["sync"]);
        assert_eq!(d.texts(&conv), sent, "every device decrypts every message once, in order");
    }
    // The device that was offline throughout gets everything when it first syncs.
    ben2.run(&["sync"]);
    assert_eq!(ben2.texts(&conv), sent);

    // Cat is removed; what is sent afterwards is unreadable for both of cat's devices.
    ann1.run(&["remove", &conv, "cat"]);
    ann1.run(&["send", &conv, "after cat left"]);
    for d in [&ben1, &ben2, &ann2] {
        d.run(&["sync"]);
        assert_eq!(d.texts(&conv).last().unwrap(), "after cat left");
    }
    for d in [&cat1, &cat2] {
        d.run(&["sync"]);
        assert!(!d.texts(&conv).iter().any(|t| t == "after cat left"));
    }
}

#[test]
fn reactions_edits_deletes_and_disappearing_messages_apply_on_every_device() {
    let h = Harness::start();
    let alice = Device::new(&h, "alice", "one", true);
    let alice2 = Device::new(&h, "alice", "two", false);
    let bob = Device::new(&h, "bob", "one", true);
    let conv = alice.conv(&["direct", "bob"]);
    alice2.run(&["sync"]);
    let first = alice.run(&["send", &conv, "first draft"])[0]["msg_id"].as_str().unwrap().to_owned();
    let second = alice.run(&["send", &conv, "regret this"])[0]["msg_id"].as_str().unwrap().to_owned();
    bob.run(&["sync"]);
    bob.run(&["react", &conv, &first, "👍"]);
    alice.run(&["sync"]);
    alice.run(&["edit", &conv, &first, "final text"]);
    alice.run(&["delete", &conv, &second]);
    for d in [&alice, &alice2, &bob] {
        d.run(&["sync"]);
        let history = d.history(&conv);
        let first_entry = history.iter().find(|e| e["msg_id"] == first.as_str()).expect("first message");
        assert_eq!(first_entry["text"], "final text");
        assert_eq!(first_entry["edited"], true);
        assert_eq!(first_entry["reactions"][0][1], "👍");
        let second_entry = history.iter().find(|e| e["msg_id"] == second.as_str()).expect("second message");
        assert_eq!(second_entry["deleted"], true);
        assert_eq!(second_entry["text"], "");
    }
    // Only the author can edit: bob's edit of alice's message changes nothing.
    bob.run(&["edit", &conv, &first, "bob was here"]);
    alice.run(&["sync"]);
    assert!(alice.texts(&conv).contains(&"final text".to_owned()));

    // Disappearing messages: a 1-second timer, then a message that vanishes everywhere.
    alice.run(&["timer", &conv, "1"]);
    alice.run(&["send", &conv, "self-destructing"]);
    for d in [&alice2, &bob] {
        d.run(&["sync"]);
    }
    std::thread::sleep(std::time::Duration::from_millis(1_500));
    for d in [&alice, &alice2, &bob] {
        assert!(!d.texts(&conv).iter().any(|t| t == "self-destructing"), "expired message still shown");
    }
}

#[test]
fn a_linked_device_joins_existing_chats_a_revoked_one_is_cut_off_and_safety_numbers_track_keys() {
    let h = Harness::start();
    let alice = Device::new(&h, "alice", "one", true);
    let bob = Device::new(&h, "bob", "one", true);
    let conv = alice.conv(&["direct", "bob"]);
    bob.run(&["sync"]);
    let at_alice = alice.run(&["safety", "bob"])[0].clone();
    let at_bob = bob.run(&["safety", "alice", "--verify"])[0].clone();
    assert_eq!(at_alice["digits"], at_bob["digits"], "both sides compute the same safety number");

    // Alice links a second device; a member's client adds it to the existing chat.
    let pending_profile = h.path().join("alice-spare");
    let server = h.base();
    let out =
        anytime(&pending_profile, &["login", "--server", &server, "alice", "--password", "password-alice"]).unwrap();
    let err = anytime(&pending_profile, &["sync"]).unwrap_err();
    assert!(err.contains("anytime approve"), "an unapproved device is told what to do: {err}");
    assert_eq!(out[0]["pending"], true);
    let alice2 = Device::new(&h, "alice", "two", false);
    let synced = bob.run(&["sync"]);
    assert!(
        synced.iter().any(|e| e["type"] == "safety_number_changed"),
        "bob, who verified alice, is warned when her keys change: {synced:?}"
    );
    bob.run(&["send", &conv, "for both of alice's devices"]);
    alice2.run(&["sync"]);
    assert_eq!(alice2.texts(&conv), ["for both of alice's devices"]);
    let after_link = bob.run(&["safety", "alice"])[0].clone();
    assert_eq!(after_link["changed"], true, "a new device changes the safety number, with a warning");
    assert_ne!(after_link["digits"], at_bob["digits"]);

    // Alice revokes the second device: its session ends and it reads nothing more.
    let devices = alice.run(&["devices"]);
    let second = devices.iter().find(|d| d["current"] == false && d["approved"] == true).unwrap()["device"]
        .as_str()
        .unwrap()
        .to_owned();
    alice.run(&["revoke", &second]);
    bob.run(&["sync"]);
    bob.run(&["send", &conv, "after the revocation"]);
    let err = anytime(&alice2.profile, &["sync"]).expect_err("revoked device still connects");
    assert!(err.contains("log in again"), "{err}");
    assert!(!alice2.texts(&conv).iter().any(|t| t == "after the revocation"));
    alice.run(&["sync"]);
    assert_eq!(alice.texts(&conv).last().unwrap(), "after the revocation");
    // Revoking changes the number again: back to the one bob verified first.
    let after_revoke = bob.run(&["safety", "alice"])[0].clone();
    assert_eq!(after_revoke["digits"], at_bob["digits"]);
}

#[test]
fn errors_tell_the_user_what_to_do_next() {
    let h = Harness::start();
    let alice = Device::new(&h, "alice", "one", true);
    let err = anytime(&alice.profile, &["direct", "nobody"]).unwrap_err();
    assert!(err.contains("no user named"), "{err}");
    let err = anytime(&alice.profile, &["send", "not-a-chat", "x"]).unwrap_err();
    assert!(err.contains("anytime chats"), "{err}");
    let empty = h.path().join("empty");
    let err = anytime(&empty, &["chats"]).unwrap_err();
    assert!(err.contains("anytime register"), "{err}");
}

#[test]
fn two_members_changing_the_group_at_once_both_succeed_and_everyone_still_reads_everything() {
    // Goal: two admins add different people at the same moment; one commit wins the epoch, the
    // other client recovers by itself (applies the winner, retries), and messages flow.
    let h = Harness::start();
    let ann = Device::new(&h, "ann", "one", true);
    let ben = Device::new(&h, "ben", "one", true);
    let cat = Device::new(&h, "cat", "one", true);
    let dan = Device::new(&h, "dan", "one", true);
    let conv = ann.conv(&["group", "race", "ben"]);
    ben.run(&["sync"]);
    ann.run(&["admin", &conv, "ben"]);
    let spawn = |d: &Device, args: Vec<String>| {
        std::process::Command::new(env!("CARGO_BIN_EXE_anytime"))
            .arg("--profile")
            .arg(&d.profile)
            .arg("--json")
            .args(args)
            .env("ANYTIME_LOG", "warn")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let first = spawn(&ann, vec!["add".into(), conv.clone(), "cat".into()]);
    let second = spawn(&ben, vec!["add".into(), conv.clone(), "dan".into()]);
    for child in [first, second] {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }
    for d in [&ann, &ben, &cat, &dan] {
        d.run(&["sync"]);
    }
    ben.run(&["send", &conv, "from ben"]);
    dan.run(&["send", &conv, "from dan"]);
    for d in [&ann, &ben, &cat, &dan] {
        d.run(&["sync"]);
        let texts = d.texts(&conv);
        assert!(texts.contains(&"from ben".to_owned()) && texts.contains(&"from dan".to_owned()), "{texts:?}");
    }
}

/// The profile's saved MLS state, as the next command would load it.
fn saved_crypto(device: &Device) -> anytime_client::DeviceCrypto {
    let db = rusqlite::Connection::open(device.profile.join("profile.sqlite3")).unwrap();
    let state: Vec<u8> = db.query_row("SELECT value FROM kv WHERE key = 'crypto'", [], |r| r.get(0)).unwrap();
    anytime_client::DeviceCrypto::import(&state).unwrap()
}

#[test]
fn leaving_a_group_forgets_its_keys_on_disk_and_odd_message_ids_are_refused_not_a_crash() {
    let h = Harness::start();
    let alice = Device::new(&h, "alice", "one", true);
    let _bob = Device::new(&h, "bob", "one", true);
    let conv = alice.conv(&["group", "trip", "bob"]);
    let id: anytime_proto::ConvId = conv.parse().unwrap();
    assert!(saved_crypto(&alice).has_group(id));
    alice.run(&["leave", &conv]);
    assert!(!saved_crypto(&alice).has_group(id), "the group's keys are gone from the saved state");

    // A 32-byte message id with a two-byte character used to panic on a byte slice.
    let chat = alice.conv(&["direct", "bob"]);
    let odd = format!("a\u{e9}{}", "a".repeat(29));
    let error = anytime(&alice.profile, &["react", &chat, &odd, "👍"]).unwrap_err();
    assert!(error.contains("a message id is 32 hex digits"), "{error}");
    assert!(!error.contains("panicked"), "{error}");
}

/// The human-readable output of a command (no `--json`).
fn human(device: &Device, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_anytime"))
        .arg("--profile")
        .arg(&device.profile)
        .args(args)
        .env("ANYTIME_LOG", "warn")
        .output()
        .expect("run anytime");
    assert!(output.status.success(), "anytime {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn people_are_named_receipts_read_as_receipts_and_a_sent_message_keeps_its_number() {
    let h = Harness::start();
    let alice = Device::new(&h, "alice", "one", true);
    let bob = Device::new(&h, "bob", "one", true);
    let conv = alice.conv(&["direct", "bob"]);
    bob.run(&["sync"]);
    let bob_id = bob.run(&["whoami"])[0]["user"].as_str().unwrap().to_owned();

    // `send` and `history` agree on the message's number.
    let sent = alice.run(&["send", &conv, "hello bob"]);
    let seq = sent[0]["seq"].as_u64().unwrap();
    let mine = alice.history(&conv).into_iter().find(|e| e["text"] == "hello bob").expect("in alice's history");
    assert_eq!(mine["seq"].as_u64(), Some(seq), "history shows the number send printed");

    // bob answers and reads: alice sees bob's name, and a receipt as a receipt.
    bob.run(&["sync"]);
    bob.run(&["send", &conv, "hi alice"]);
    bob.run(&["read", &conv]);
    let lines = human(&alice, &["sync"]);
    assert!(lines.contains("bob: hi alice"), "{lines}");
    assert!(lines.contains("read by bob (1 message)"), "{lines}");
    // bob's terminal confirmed delivery when it synced, as a browser does (✓✓ on alice's side).
    assert!(lines.contains("delivered to bob (1 message)"), "{lines}");
    assert!(!lines.contains("receipt for"), "{lines}");
    assert!(!lines.contains(&bob_id), "no raw user id where a name is known: {lines}");

    // A direct chat is listed under the other person's name.
    let chats = human(&alice, &["chats"]);
    assert!(chats.contains(&format!("{conv} direct \"bob\"")), "{chats}");
}

#[test]
fn follow_stops_on_sigint_even_when_started_with_sigint_ignored() {
    let h = Harness::start();
    let alice = Device::new(&h, "alice", "one", true);
    // A non-interactive shell starts background jobs with SIGINT ignored; `follow` must still
    // stop on it, cleanly.
    let mut follow = Command::new("sh")
        .arg("-c")
        .arg("trap '' INT; exec \"$0\" --profile \"$1\" follow")
        .arg(env!("CARGO_BIN_EXE_anytime"))
        .arg(&alice.profile)
        .env("ANYTIME_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start follow");
    let socket = alice.profile.join("anytime.sock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !socket.exists() {
        assert!(std::time::Instant::now() < deadline, "follow did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(follow.id() as libc::pid_t, libc::SIGINT) }, 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(status) = follow.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "follow ignored SIGINT");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    assert!(!socket.exists(), "the profile socket is removed on the way out");
}

#[test]
fn a_first_message_from_a_stranger_is_a_request_that_reads_nothing_back_until_accepted() {
    let h = Harness::start();
    let alice = Device::new(&h, "alice", "one", true);
    let bob = Device::new(&h, "bob", "one", true);
    let conv = alice.conv(&["direct", "bob"]);
    alice.run(&["send", &conv, "hello stranger"]);
    bob.run(&["sync"]);
    let request = |device: &Device| device.run(&["chats"])[0]["request"].clone();
    assert_eq!(request(&bob), true, "bob never talked with alice");
    assert_eq!(request(&alice), false, "alice started it");
    assert!(human(&bob, &["chats"]).contains("message request"));

    // Reading a request would tell alice it was seen: refused, with what to do instead.
    let error = anytime(&bob.profile, &["read", &conv]).unwrap_err();
    assert!(error.contains(&format!("anytime accept {conv}")), "{error}");
    assert!(!human(&alice, &["sync"]).contains("read by bob"));

    bob.run(&["accept", &conv]);
    assert_eq!(request(&bob), false);
    bob.run(&["read", &conv]);
    assert!(human(&alice, &["sync"]).contains("read by bob (1 message)"));

    // Paged history: the newest page, then the page before its first message.
    for n in 1..=3 {
        alice.run(&["send", &conv, &format!("page {n}")]);
    }
    let texts = |page: &[serde_json::Value]| -> Vec<String> {
        page.iter().map(|e| e["text"].as_str().unwrap_or_default().to_owned()).collect()
    };
    let newest = alice.run(&["history", &conv, "--limit", "2"]);
    assert_eq!(texts(&newest), ["page 2", "page 3"]);
    let first = newest[0]["msg_id"].as_str().unwrap().to_owned();
    let earlier = alice.run(&["history", &conv, "--limit", "2", "--before", &first]);
    assert_eq!(texts(&earlier), ["hello stranger", "page 1"]);
    let error = anytime(&alice.profile, &["history", &conv, "--before", &"0".repeat(32)]).unwrap_err();
    assert!(error.contains("no message"), "{error}");
}
