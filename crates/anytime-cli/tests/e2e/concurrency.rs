//! Races the delivery service must settle: concurrent commits on one epoch, concurrent claims
//! of one device's key packages.

use std::collections::HashSet;

use anytime_proto::frame;
use anytime_proto::{ErrorCode, ServerFrame};
use anytime_testkit::msg_id;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_for_one_epoch_exactly_one_wins() {
    // Goal: of N members committing at epoch 0 at once, one is accepted; every loser learns the
    // current epoch and succeeds when it retries there.
    let h = Harness::start();
    let names = ["cam0", "cam1", "cam2", "cam3", "cam4"];
    let mut sessions = Vec::new();
    for name in names {
        sessions.push(h.register(name).await);
    }
    let mut owner = h.connect(&sessions[0]).await;
    let others: Vec<_> = sessions[1..].iter().map(|s| s.user_id).collect();
    let conv = create_group(&mut owner, "race", &others).await;
    owner.close().await;

    let mut clients = Vec::new();
    for session in &sessions {
        clients.push(h.connect(session).await);
    }
    let mut tasks = Vec::new();
    for (i, mut client) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let commit = frame::Commit { conv, epoch: 0, msg_id: msg_id(), commit: vec![i as u8; 64], welcome: None };
            let answer = client.request(commit.into()).await.unwrap();
            (client, answer)
        }));
    }
    let mut winners = 0;
    let mut losers = Vec::new();
    for task in tasks {
        let (client, answer) = task.await.unwrap();
        match answer {
            ServerFrame::Committed(c) => {
                assert_eq!(c.epoch, 1);
                winners += 1;
            }
            ServerFrame::Error(e) => {
                assert_eq!(e.code, ErrorCode::EpochMismatch);
                assert!(e.epoch.unwrap() >= 1);
                losers.push(client);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(winners, 1);
    assert_eq!(losers.len(), 4);
    // Retrying one at a time at the group's current epoch succeeds.
    for (epoch, client) in (1..).zip(losers.iter_mut()) {
        let commit = frame::Commit { conv, epoch, msg_id: msg_id(), commit: vec![9; 8], welcome: None };
        match client.request(commit.into()).await.unwrap() {
            ServerFrame::Committed(c) => assert_eq!(c.epoch, epoch + 1),
            other => panic!("{other:?}"),
        }
    }
    // Everyone sees the five commits in one order, each from the epoch before it.
    let received = receive(&mut losers[0], conv, 5).await;
    let epochs: Vec<_> = received
        .iter()
        .map(|m| match m.kind {
            frame::MessageKind::Commit { epoch } => epoch,
            frame::MessageKind::Application => panic!("not a commit"),
        })
        .collect();
    assert_eq!(epochs, [0, 1, 2, 3, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_key_package_claims_never_hand_out_a_package_twice() {
    // Goal: 60 claims racing from 6 connections over 50 one-time packages: 50 distinct
    // one-time packages, then only the last-resort package, which stays.
    let h = Harness::start();
    let bob = h.register("bob").await;
    let mut b = h.connect(&bob).await;
    let packages: Vec<Vec<u8>> = (0..50u32).map(|i| format!("kp-{i}").into_bytes()).collect();
    let upload = frame::UploadKeyPackages { packages, last_resort: Some(b"last-resort".to_vec()) };
    match expect_ok(&mut b, upload.into()).await {
        ServerFrame::KeyPackageCount(count) => {
            assert_eq!(count.count, 50);
            assert!(count.has_last_resort);
        }
        other => panic!("{other:?}"),
    }
    let mut tasks = Vec::new();
    for i in 0..6 {
        let claimer = h.register(&format!("claimer{i}")).await;
        let mut client = h.connect(&claimer).await;
        let bob_id = bob.user_id;
        // Claims are for adding bob to a conversation the claimer is in with him.
        create_direct(&mut client, bob_id).await;
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            let ids: Vec<u32> = {
                let mut ids = Vec::new();
                for _ in 0..10 {
                    ids.push(client.send(frame::ClaimKeyPackages { user: bob_id }.into()).await.unwrap());
                }
                ids
            };
            for id in ids {
                match client.answer(id).await.unwrap() {
                    ServerFrame::KeyPackages(k) => got.extend(k.packages),
                    other => panic!("{other:?}"),
                }
            }
            got
        }));
    }
    let mut one_time = Vec::new();
    let mut last_resort = 0;
    for task in tasks {
        for package in task.await.unwrap() {
            assert_eq!(package.device, bob.device_id);
            if package.last_resort {
                assert_eq!(package.package, b"last-resort");
                last_resort += 1;
            } else {
                one_time.push(package.package);
            }
        }
    }
    assert_eq!(one_time.len(), 50);
    assert_eq!(one_time.iter().collect::<HashSet<_>>().len(), 50, "a package was handed out twice");
    assert_eq!(last_resort, 10);
    // Bob is told to replenish.
    assert!(b.wait_for(|p| matches!(p, ServerFrame::KeyPackagesLow(_)).then_some(())).await.is_ok());
    match expect_ok(&mut b, frame::GetKeyPackageCount {}.into()).await {
        ServerFrame::KeyPackageCount(count) => {
            assert_eq!(count.count, 0);
            assert!(count.has_last_resort);
        }
        other => panic!("{other:?}"),
    }
}
