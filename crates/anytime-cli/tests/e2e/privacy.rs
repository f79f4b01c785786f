//! The server forgets: payload bytes never reach the log, and leave the data directory once
//! every recipient device has acknowledged them.

use std::path::Path;
use std::time::Duration;

use anytime_proto::frame;

use crate::support::*;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() && contains(&std::fs::read(&path).unwrap(), needle) {
            hits.push(path.display().to_string());
        }
    }
    hits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_bytes_never_reach_the_log_and_leave_the_data_directory_after_delivery() {
    let h = Harness::start_with(&["--gc-interval-secs", "1"]);
    let marker = format!("MARKER-{:032x}", rand_marker());
    let alice = h.register("alice").await;
    let bob = h.register("bob").await;
    let mut a = h.connect(&alice).await;
    let mut b = h.connect(&bob).await;
    let direct = create_direct(&mut a, bob.user_id).await;
    let group = create_group(&mut a, "g", &[bob.user_id]).await;
    for conv in [direct, group] {
        for i in 0..20 {
            send(&mut a, conv, format!("{marker} #{i}").as_bytes()).await;
        }
    }
    // The recipients decrypt (here: read) it; both of alice's and bob's devices acknowledge.
    for conv in [direct, group] {
        let at_bob = receive(&mut b, conv, 20).await;
        assert!(at_bob.iter().all(|m| contains(&m.payload, marker.as_bytes())));
        receive(&mut a, conv, 20).await;
    }
    // Writes queued after the acks: once answered, the acks are durable too.
    let profile = || frame::SetProfile { display_name: "x".into(), avatar: None };
    expect_ok(&mut a, profile().into()).await;
    expect_ok(&mut b, profile().into()).await;

    // Garbage collection runs every second; give it a few passes.
    let mut hits = Vec::new();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        hits = files_containing(h.server.data_dir(), marker.as_bytes());
        if hits.is_empty() {
            break;
        }
    }
    assert!(hits.is_empty(), "marker still on disk in {hits:?}");
    if let Some(db) = &h.database {
        let mut stored = true;
        for _ in 0..20 {
            stored = db.any_payload_contains(marker.as_bytes()).unwrap();
            if !stored {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert!(!stored, "marker still stored in PostgreSQL after delivery");
    }
    let log = std::fs::read(h.server.log_path()).unwrap();
    assert!(!log.is_empty(), "the server logged nothing at debug level");
    assert!(!contains(&log, marker.as_bytes()), "marker found in the server log");
    assert!(!contains(&log, b"MARKER"), "marker found in the server log");
}

fn rand_marker() -> u128 {
    u128::from_le_bytes(anytime_testkit::msg_id().0)
}
