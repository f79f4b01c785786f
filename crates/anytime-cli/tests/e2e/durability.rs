//! Crash safety: what the server acknowledged survives SIGKILL, and retries are idempotent.

use std::collections::HashMap;

use anytime_proto::frame;
use anytime_proto::{MsgId, ServerFrame};
use anytime_testkit::msg_id;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_send_storm_loses_no_acknowledged_message_and_retries_do_not_duplicate() {
    // Goal: kill -9 while hundreds of sends are in flight; after restart every message the
    // server had answered `Sent` for is there with the same seq, and resending every id (as
    // a client's outbox does) stores each lost one once and no acknowledged one twice.
    let mut h = Harness::start();
    let alice = h.register("alice").await;
    let bob = h.register("bob").await;
    let mut a = h.connect(&alice).await;
    let conv = create_direct(&mut a, bob.user_id).await;

    const TOTAL: usize = 3_000;
    let ids: Vec<MsgId> = (0..TOTAL).map(|_| msg_id()).collect();
    let mut request_of: HashMap<u32, usize> = HashMap::new();
    let mut acked: HashMap<usize, u64> = HashMap::new();
    let mut next = 0;
    // Keep a window of sends in flight; kill once a third is acknowledged, mid-window.
    while acked.len() < TOTAL / 3 {
        while next < TOTAL && request_of.len() - acked.len() < 200 {
            let request = frame::Send { conv, msg_id: ids[next], payload: format!("m{next}").into_bytes() };
            request_of.insert(a.send(request.into()).await.unwrap(), next);
            next += 1;
        }
        let oldest = *request_of.keys().filter(|id| !acked.contains_key(&request_of[id])).min().unwrap();
        match a.answer(oldest).await.unwrap() {
            ServerFrame::Sent(sent) => {
                acked.insert(request_of[&oldest], sent.seq);
            }
            other => panic!("{other:?}"),
        }
    }
    // More sends are in flight right now; some may be on disk without an answer.
    for (i, id) in ids.iter().enumerate().take((next + 300).min(TOTAL)).skip(next) {
        let request = frame::Send { conv, msg_id: *id, payload: format!("m{i}").into_bytes() };
        a.send(request.into()).await.unwrap();
    }
    h.server.kill().unwrap();
    let acked_before_kill = acked.len();
    assert!(acked_before_kill >= TOTAL / 3);

    h.server.restart().unwrap();
    let mut a = h.connect(&alice).await;
    // The outbox resends everything, acknowledged or not, with the same ids, pipelined.
    let mut seq_of = HashMap::new();
    for window in (0..TOTAL).collect::<Vec<_>>().chunks(250) {
        let mut requests = Vec::new();
        for &i in window {
            let request = frame::Send { conv, msg_id: ids[i], payload: format!("m{i}").into_bytes() };
            requests.push((i, a.send(request.into()).await.unwrap()));
        }
        for (i, request_id) in requests {
            match a.answer(request_id).await.unwrap() {
                ServerFrame::Sent(sent) => {
                    if let Some(before) = acked.get(&i) {
                        assert!(sent.duplicate, "acknowledged message {i} was stored again");
                        assert_eq!(sent.seq, *before, "acknowledged message {i} changed seq");
                    }
                    seq_of.insert(i, sent.seq);
                }
                other => panic!("{other:?}"),
            }
        }
    }
    // Bob, who was offline, reads the whole conversation: each message exactly once.
    let mut b = h.connect(&bob).await;
    let received = receive(&mut b, conv, TOTAL).await;
    assert!(received.iter().map(|m| m.seq).eq(1..=TOTAL as u64), "dense seqs, no duplicates");
    let by_seq: HashMap<u64, &anytime_proto::frame::Message> = received.iter().map(|m| (m.seq, m)).collect();
    for (i, id) in ids.iter().enumerate() {
        let message = by_seq[&seq_of[&i]];
        assert_eq!(&message.msg_id, id);
        assert_eq!(message.payload, format!("m{i}").into_bytes());
    }
    assert_no_more_messages(&mut b, conv).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_flushes_and_restart_keeps_accounts_and_chats() {
    // Goal: SIGTERM exits cleanly (status 0) and everything is there after a restart.
    let mut h = Harness::start();
    let alice = h.register("alice").await;
    let bob = h.register("bob").await;
    let mut a = h.connect(&alice).await;
    let conv = create_direct(&mut a, bob.user_id).await;
    send(&mut a, conv, b"kept").await;
    let status = h.server.terminate().unwrap();
    assert!(status.success(), "{status:?}");
    h.server.restart().unwrap();
    let mut b = h.connect(&bob).await;
    assert_eq!(receive(&mut b, conv, 1).await[0].payload, b"kept");
    let again = anytime_testkit::login(&h.base(), "alice", "second").await;
    assert!(again.is_ok());
}
