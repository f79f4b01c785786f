//! Mentions, link previews, forwarding, stars and "delete for me" in the terminal client, end to
//! end: real `anytime` processes, a real server, and (for previews) a tiny web server the test
//! runs on 127.0.0.1.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::{anytime, human, Device};
use crate::support::Harness;

const PAGE: &str = r#"<!doctype html><html><head><title>Plain title</title>
<meta property="og:title" content="The Preview Title">
<meta property="og:description" content="What the page is about">
</head><body>Hello</body></html>"#;

/// A web server answering every GET with `PAGE` (as `text/html`), or plain text under `/plain`,
/// and recording each request line.
struct PageServer {
    base: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl PageServer {
    fn start() -> PageServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the page server");
        let base = format!("http://{}", listener.local_addr().expect("its address"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        // Serves until the test process ends.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => break,
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let request_line = head.lines().next().unwrap_or_default().to_owned();
                let path = request_line.split(' ').nth(1).unwrap_or("/").to_owned();
                seen.lock().expect("requests lock").push(request_line);
                let (content_type, body) = if path.starts_with("/plain") {
                    ("text/plain", "just text")
                } else {
                    ("text/html; charset=utf-8", PAGE)
                };
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes());
            }
        });
        PageServer { base, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("requests lock").clone()
    }
}

/// Runs `anytime --json ARGS`, which must succeed: (its JSON lines, its stderr). Proxies from the
/// environment are turned off so link previews reach the page server directly.
fn run_with_stderr(device: &Device, args: &[&str]) -> (Vec<Value>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_anytime"))
        .arg("--profile")
        .arg(&device.profile)
        .arg("--json")
        .args(args)
        .env("ANYTIME_LOG", "warn")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .output()
        .expect("run anytime");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "anytime {args:?}: {stderr}");
    let lines =
        String::from_utf8_lossy(&output.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    (lines, stderr)
}

fn user_id(device: &Device) -> String {
    device.run(&["whoami"])[0]["user"].as_str().expect("user id").to_owned()
}

fn entry(device: &Device, conv: &str, msg_id: &str) -> Option<Value> {
    device.history(conv).into_iter().find(|e| e["msg_id"] == msg_id)
}

fn msg_id(output: &[Value]) -> String {
    output[0]["msg_id"].as_str().expect("msg_id").to_owned()
}

#[test]
fn mentions_name_members_only_and_a_forward_arrives_labelled_without_them() {
    let h = Harness::start();
    let alice = Device::new(&h, "alice", "one", true);
    let bob = Device::new(&h, "bob", "one", true);
    let cat = Device::new(&h, "cat", "one", true);
    // dan has an account but is not in the group: "@dan" stays plain text.
    let _dan = Device::new(&h, "dan", "one", true);
    let (alice_id, bob_id, cat_id) = (user_id(&alice), user_id(&bob), user_id(&cat));
    let group = alice.conv(&["group", "trip", "bob", "cat"]);
    bob.run(&["sync"]);
    cat.run(&["sync"]);

    let text = "@Bob, bring the map; @cat too. @dan @nobody mail@alice @bob";
    let sent = alice.run(&["send", &group, text]);
    assert_eq!(sent.len(), 1, "no link, so no preview: {sent:?}");
    let first = msg_id(&sent);
    let got = bob.run(&["sync"]);
    let message = got.iter().find(|e| e["type"] == "message" && e["text"] == text).expect("bob receives it");
    assert_eq!(message["mentions"], json!([bob_id, cat_id]), "members, each once, in order");
    assert_eq!(entry(&bob, &group, &first).expect("in bob's history")["mentions"], json!([bob_id, cat_id]));
    assert!(human(&bob, &["history", &group]).contains(&format!("{text} (mentions you)")));

    // A reply mentions too; a plain message mentions nobody.
    cat.run(&["sync"]);
    cat.run(&["reply", &group, &first, "@alice got it"]);
    cat.run(&["send", &group, "no names here"]);
    let got = alice.run(&["sync"]);
    let reply = got.iter().find(|e| e["kind"] == "reply").expect("alice receives the reply");
    assert_eq!(reply["mentions"], json!([alice_id]));
    let plain = got.iter().find(|e| e["text"] == "no names here").expect("and the plain message");
    assert_eq!(plain["mentions"], json!([]));
    let lines = human(&bob, &["sync"]);
    assert!(!lines.contains("(mentions you)"), "the reply names alice, not bob: {lines}");

    // bob forwards alice's message to his direct chat with cat: labelled, the text as written,
    // without the group's mentions.
    let direct = bob.conv(&["direct", "cat"]);
    let forwarded = msg_id(&bob.run(&["forward", &group, &first, &direct]));
    let got = cat.run(&["sync"]);
    let message = got.iter().find(|e| e["msg_id"] == forwarded.as_str()).expect("cat receives the forward");
    assert_eq!(
        (message["forwarded"].clone(), message["text"].clone()),
        (json!(true), json!(format!("(forwarded) {text}")))
    );
    let at_cat = entry(&cat, &direct, &forwarded).expect("in cat's history");
    assert_eq!(at_cat["forwarded"], true);
    assert_eq!(at_cat["text"], text);
    assert_eq!(at_cat["mentions"], json!([]));
    assert!(human(&cat, &["history", &direct]).contains(&format!("(forwarded) {text}")));
    assert_eq!(entry(&bob, &direct, &forwarded).expect("in bob's history")["forwarded"], true);

    // What cannot be forwarded says why.
    let error = anytime(&bob.profile, &["forward", &group, &"0".repeat(32), &direct]).unwrap_err();
    assert!(error.contains("no message") && error.contains(&format!("anytime history {group}")), "{error}");
    alice.run(&["delete", &group, &first]);
    bob.run(&["sync"]);
    let error = anytime(&bob.profile, &["forward", &group, &first, &direct]).unwrap_err();
    assert!(error.contains("no text to forward"), "{error}");
}

#[test]
fn stars_and_delete_for_me_change_this_device_only() {
    let h = Harness::start();
    let alice = Device::new(&h, "alice", "one", true);
    let bob = Device::new(&h, "bob", "one", true);
    let conv = alice.conv(&["direct", "bob"]);
    let first = msg_id(&alice.run(&["send", &conv, "first"]));
    let second = msg_id(&alice.run(&["send", &conv, "second"]));
    bob.run(&["sync"]);
    let from_bob = msg_id(&bob.run(&["send", &conv, "from bob"]));
    alice.run(&["sync"]);

    alice.run(&["star", &conv, &from_bob]);
    alice.run(&["star", &conv, &first]);
    let starred = alice.run(&["starred"]);
    let texts: Vec<&Value> = starred.iter().map(|e| &e["text"]).collect();
    assert_eq!(texts, [&json!("first"), &json!("from bob")], "oldest first: {starred:?}");
    let bobs = &starred[1];
    assert_eq!(bobs["msg_id"], from_bob.as_str());
    assert_eq!(bobs["conv"], conv.as_str());
    assert_eq!(bobs["chat"], "bob", "a direct chat is titled after the other person");
    assert_eq!(bobs["sender_name"], "bob");
    assert_eq!(bobs["starred"], true);
    assert_eq!(bobs["forwarded"], false);
    assert_eq!(bobs["mentions"], json!([]));
    assert_eq!(bobs["preview"], Value::Null);
    assert!(bobs["sent_at_ms"].as_u64().is_some_and(|t| t > 0));
    assert_eq!(starred[0]["sender_name"], "alice");
    let listing = human(&alice, &["starred"]);
    assert!(listing.contains("\"bob\" bob: from bob ★") && listing.contains("UTC"), "{listing}");
    assert_eq!(entry(&alice, &conv, &from_bob).unwrap()["starred"], true);
    assert_eq!(entry(&alice, &conv, &second).unwrap()["starred"], false);
    assert!(human(&alice, &["history", &conv]).contains("from bob ★"));
    // Stars are this device's: bob's copy is not starred.
    assert!(bob.run(&["starred"]).is_empty());
    assert_eq!(entry(&bob, &conv, &from_bob).unwrap()["starred"], false);

    alice.run(&["star", &conv, &first, "--remove"]);
    let starred = alice.run(&["starred"]);
    assert_eq!(starred.len(), 1);
    assert_eq!(starred[0]["msg_id"], from_bob.as_str());
    let error = anytime(&alice.profile, &["star", &conv, &"0".repeat(32)]).unwrap_err();
    assert!(error.contains("no message"), "{error}");

    // Delete for me: gone from alice's device (also from her stars), bob keeps it.
    let out = alice.run(&["delete", &conv, &from_bob, "--for-me"]);
    assert_eq!(out[0]["deleted_for_me"], true);
    assert!(entry(&alice, &conv, &from_bob).is_none());
    assert!(alice.run(&["starred"]).is_empty());
    bob.run(&["sync"]);
    let at_bob = entry(&bob, &conv, &from_bob).expect("bob still has it");
    assert_eq!((at_bob["deleted"].clone(), at_bob["text"].clone()), (json!(false), json!("from bob")));
    bob.run(&["send", &conv, "later"]);
    alice.run(&["sync"]);
    assert_eq!(alice.texts(&conv), ["first", "second", "later"], "still gone after another sync");
    let error = anytime(&alice.profile, &["delete", &conv, &from_bob, "--for-me"]).unwrap_err();
    assert!(error.contains("no message"), "{error}");
    // Without the flag, delete stays "for everyone".
    alice.run(&["delete", &conv, &second]);
    bob.run(&["sync"]);
    assert_eq!(entry(&bob, &conv, &second).unwrap()["deleted"], true);
}

#[test]
fn a_link_preview_is_made_by_the_sender_and_no_preview_fetches_nothing() {
    let pages = PageServer::start();
    let h = Harness::start();
    let alice = Device::new(&h, "alice", "one", true);
    let bob = Device::new(&h, "bob", "one", true);
    let conv = alice.conv(&["direct", "bob"]);
    bob.run(&["sync"]);

    let link = format!("{}/article", pages.base);
    let text = format!("read this: {link}.");
    let (out, _) = run_with_stderr(&alice, &["send", &conv, &text]);
    assert_eq!(out.len(), 2, "the message, then its preview: {out:?}");
    let first = msg_id(&out);
    assert_eq!(out[1]["preview_for"], first.as_str());
    assert_eq!(out[1]["preview"]["title"], "The Preview Title");
    assert_eq!(pages.requests(), ["GET /article HTTP/1.1"], "the sender's device fetched the page once");

    let got = bob.run(&["sync"]);
    assert!(got.iter().any(|e| e["kind"] == "link_preview" && e["preview_for"] == first.as_str()), "{got:?}");
    let history = bob.run(&["history", &conv]);
    assert_eq!(history.len(), 1, "a preview is not a message of its own: {history:?}");
    assert_eq!(history[0]["text"], text);
    let expected = json!({"url": link, "title": "The Preview Title", "description": "What the page is about"});
    assert_eq!(history[0]["preview"], expected);
    assert!(human(&bob, &["history", &conv]).contains(&format!("\n    ↳ The Preview Title — {link}")));
    assert_eq!(entry(&alice, &conv, &first).unwrap()["preview"], expected, "the sender sees it too");

    // A reply gets one as well; as it arrives, it reads as a line under its message.
    let second_link = format!("{}/second", pages.base);
    run_with_stderr(&alice, &["reply", &conv, &first, &format!("and {second_link}")]);
    let lines = human(&bob, &["sync"]);
    assert!(lines.contains(&format!("{second_link}\n    ↳ The Preview Title — {second_link}\n")), "{lines}");

    // --no-preview: nothing is fetched, nothing but the message is sent.
    let quiet = format!("quiet {}/secret", pages.base);
    let (out, _) = run_with_stderr(&alice, &["send", &conv, &quiet, "--no-preview"]);
    assert_eq!(out.len(), 1, "{out:?}");
    let quiet_id = msg_id(&out);
    // Not a web page: a note on stderr, and the message is sent all the same.
    let plain = format!("{}/plain", pages.base);
    let (out, stderr) = run_with_stderr(&alice, &["send", &conv, &plain]);
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(stderr.contains(&format!("no link preview for {plain}: it is not a web page")), "{stderr}");
    let plain_id = msg_id(&out);
    assert_eq!(pages.requests(), ["GET /article HTTP/1.1", "GET /second HTTP/1.1", "GET /plain HTTP/1.1"]);
    bob.run(&["sync"]);
    assert_eq!(entry(&bob, &conv, &quiet_id).expect("the quiet message arrived")["preview"], Value::Null);
    assert_eq!(entry(&bob, &conv, &plain_id).expect("the plain link arrived")["preview"], Value::Null);
}
