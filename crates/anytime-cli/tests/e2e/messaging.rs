//! Delivery between real clients: direct chats, groups with several devices, offline devices,
//! membership changes, invite links, device revocation, typing and presence.

use std::collections::HashSet;
use std::time::Duration;

use anytime_proto::frame::{self, MessageKind, PresencePrivacy};
use anytime_proto::{ErrorCode, ServerFrame};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_exchange_messages_both_ways() {
    // Goal: a direct chat delivers each side's messages to the other, in order, with the
    // sender's identity, and echoes them to the sender's own device too.
    let h = Harness::start();
    let alice = h.register("alice").await;
    let bob = h.register("bob").await;
    let mut a = h.connect(&alice).await;
    let mut b = h.connect(&bob).await;
    let conv = create_direct(&mut a, bob.user_id).await;
    // Opening it again from the other side finds the same chat.
    assert_eq!(create_direct(&mut b, alice.user_id).await, conv);

    for i in 0..5 {
        assert_eq!(send(&mut a, conv, format!("a{i}").as_bytes()).await, i + 1);
    }
    let at_bob = receive(&mut b, conv, 5).await;
    for i in 0..5 {
        assert_eq!(send(&mut b, conv, format!("b{i}").as_bytes()).await, i + 6);
    }
    let at_alice = receive(&mut a, conv, 10).await;

    let payloads: Vec<String> = at_alice.iter().map(|m| String::from_utf8(m.payload.clone()).unwrap()).collect();
    assert_eq!(payloads, ["a0", "a1", "a2", "a3", "a4", "b0", "b1", "b2", "b3", "b4"]);
    assert!(at_alice.iter().map(|m| m.seq).eq(1..=10));
    assert!(at_alice[5..].iter().all(|m| m.sender == bob.user_id && m.sender_device == bob.device_id));
    assert!(at_bob.iter().all(|m| m.sender == alice.user_id && m.kind == MessageKind::Application));
    let at_bob_rest = receive(&mut b, conv, 5).await;
    assert!(at_bob.iter().chain(&at_bob_rest).map(|m| m.seq).eq(1..=10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_of_three_users_with_two_devices_each_gets_everything_exactly_once_in_order() {
    // Goal: with 5 devices sending concurrently into one group, every device — including one
    // that was offline for the whole exchange — receives all messages once, in seq order.
    let h = Harness::start();
    let mut sessions = Vec::new();
    for name in ["ann", "ben", "cat"] {
        let first = h.register(name).await;
        let second = h.link(&first, name, "device-2").await;
        sessions.push((first, second));
    }
    let (ann, ben, cat) = (&sessions[0], &sessions[1], &sessions[2]);
    let mut ann1 = h.connect(&ann.0).await;
    let conv = create_group(&mut ann1, "trio", &[ben.0.user_id, cat.0.user_id]).await;
    let offline = ben.1.clone();

    let online = vec![ann.0.clone(), ann.1.clone(), ben.0.clone(), cat.0.clone(), cat.1.clone()];
    const PER_DEVICE: usize = 20;
    let total = PER_DEVICE * online.len();
    ann1.close().await;
    let mut tasks = Vec::new();
    for (index, session) in online.into_iter().enumerate() {
        let mut client = h.connect(&session).await;
        tasks.push(tokio::spawn(async move {
            for i in 0..PER_DEVICE {
                send(&mut client, conv, format!("d{index}-m{i}").as_bytes()).await;
            }
            let received = receive(&mut client, conv, total).await;
            assert_no_more_messages(&mut client, conv).await;
            received
        }));
    }
    let mut orders = Vec::new();
    for task in tasks {
        let received = task.await.expect("device task");
        assert!(received.iter().map(|m| m.seq).eq(1..=total as u64), "seqs in order, no gaps, no repeats");
        orders.push(received.iter().map(|m| m.msg_id).collect::<Vec<_>>());
    }
    assert!(orders.windows(2).all(|w| w[0] == w[1]), "every device saw the same order");
    assert_eq!(orders[0].iter().collect::<HashSet<_>>().len(), total);

    // The device that was offline throughout catches up on connect, then hears CaughtUp.
    let mut late = h.connect(&offline).await;
    let caught = receive(&mut late, conv, total).await;
    assert!(caught.iter().map(|m| m.msg_id).eq(orders[0].iter().copied()));
    late.wait_for(|p| matches!(p, ServerFrame::CaughtUp(_)).then_some(())).await.unwrap();
    assert_no_more_messages(&mut late, conv).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_device_resumes_from_its_cursor_without_duplicates() {
    // Goal: acknowledged messages are not sent again after a reconnect; unacknowledged are.
    let h = Harness::start();
    let alice = h.register("alice").await;
    let bob = h.register("bob").await;
    let mut a = h.connect(&alice).await;
    let conv = create_direct(&mut a, bob.user_id).await;
    for i in 0..6 {
        send(&mut a, conv, format!("m{i}").as_bytes()).await;
    }
    let mut b = h.connect(&bob).await;
    let first = receive(&mut b, conv, 4).await; // acks 1..=4
    assert!(first.iter().map(|m| m.seq).eq(1..=4));
    // A write queued after the acks: once it is answered, the acks are durable too.
    expect_ok(&mut b, frame::SetProfile { display_name: "Bob".into(), avatar: None }.into()).await;
    b.close().await;
    let mut b = h.connect(&bob).await;
    let rest = receive(&mut b, conv, 2).await;
    assert!(rest.iter().map(|m| m.seq).eq(5..=6));
    assert_no_more_messages(&mut b, conv).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_member_receives_nothing_sent_after_removal() {
    // Goal: removal takes effect at once for delivery, and non-members cannot read or send.
    let h = Harness::start();
    let ann = h.register("ann").await;
    let bob = h.register("bob").await;
    let mut a = h.connect(&ann).await;
    let mut b = h.connect(&bob).await;
    let conv = create_group(&mut a, "g", &[bob.user_id]).await;
    send(&mut a, conv, b"before").await;
    assert_eq!(receive(&mut b, conv, 1).await[0].payload, b"before");
    expect_ok(&mut a, frame::RemoveMember { conv, user: bob.user_id }.into()).await;
    let removed = b
        .wait_for(|p| match p {
            ServerFrame::ConversationChanged(c) if c.conv == conv && c.removed => Some(()),
            _ => None,
        })
        .await;
    assert!(removed.is_ok());
    send(&mut a, conv, b"after").await;
    assert_no_more_messages(&mut b, conv).await;
    let answer =
        b.request(frame::Send { conv, msg_id: anytime_testkit::msg_id(), payload: b"x".to_vec() }.into()).await;
    assert!(matches!(answer.unwrap(), ServerFrame::Error(e) if e.code == ErrorCode::ConversationNotFound));
    // Bob reconnecting does not get it either.
    b.close().await;
    let mut b = h.connect(&bob).await;
    assert_no_more_messages(&mut b, conv).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_links_respect_expiry_use_limit_and_revocation() {
    // Goal: a link adds whoever uses it while valid, up to its use limit, and never after
    // revocation or expiry.
    let h = Harness::start();
    let owner = h.register("owner").await;
    let mut o = h.connect(&owner).await;
    let conv = create_group(&mut o, "club", &[]).await;
    let invite = match expect_ok(&mut o, frame::CreateInvite { conv, ttl_secs: 3600, max_uses: 1 }.into()).await {
        ServerFrame::Invite(invite) => invite,
        other => panic!("{other:?}"),
    };
    let short = match expect_ok(&mut o, frame::CreateInvite { conv, ttl_secs: 1, max_uses: 10 }.into()).await {
        ServerFrame::Invite(invite) => invite,
        other => panic!("{other:?}"),
    };
    let revoked = match expect_ok(&mut o, frame::CreateInvite { conv, ttl_secs: 3600, max_uses: 10 }.into()).await {
        ServerFrame::Invite(invite) => invite,
        other => panic!("{other:?}"),
    };
    expect_ok(&mut o, frame::RevokeInvite { code: revoked.code.clone() }.into()).await;

    let joiner = h.register("joiner").await;
    let mut j = h.connect(&joiner).await;
    match expect_ok(&mut j, frame::JoinInvite { code: invite.code.clone() }.into()).await {
        ServerFrame::ConversationInfo(info) => {
            assert_eq!(info.conv, conv);
            assert!(info.members.iter().any(|m| m.user == joiner.user_id));
        }
        other => panic!("{other:?}"),
    }
    send(&mut o, conv, b"welcome").await;
    assert_eq!(receive(&mut j, conv, 1).await[0].payload, b"welcome");

    let late = h.register("late").await;
    let mut l = h.connect(&late).await;
    let code_of = |frame: ServerFrame| match frame {
        ServerFrame::Error(e) => e.code,
        other => panic!("expected an error, got {other:?}"),
    };
    assert_eq!(
        code_of(l.request(frame::JoinInvite { code: invite.code }.into()).await.unwrap()),
        ErrorCode::InviteExhausted
    );
    assert_eq!(
        code_of(l.request(frame::JoinInvite { code: revoked.code }.into()).await.unwrap()),
        ErrorCode::InviteRevoked
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(
        code_of(l.request(frame::JoinInvite { code: short.code }.into()).await.unwrap()),
        ErrorCode::InviteExpired
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_device_is_disconnected_at_once_and_receives_nothing_more() {
    // Goal: revoking a device closes its socket immediately and its token stops working.
    let h = Harness::start();
    let alice = h.register("alice").await;
    let alice2 = h.link(&alice, "alice", "tablet").await;
    let bob = h.register("bob").await;
    let mut a1 = h.connect(&alice).await;
    let mut a2 = h.connect(&alice2).await;
    let mut b = h.connect(&bob).await;
    let conv = create_direct(&mut b, alice.user_id).await;
    send(&mut b, conv, b"to both").await;
    assert_eq!(receive(&mut a2, conv, 1).await[0].payload, b"to both");

    match expect_ok(&mut a1, frame::ListDevices {}.into()).await {
        ServerFrame::Devices(list) => {
            assert_eq!(list.devices.len(), 2);
            assert!(list.devices.iter().any(|d| d.device == alice.device_id && d.current));
        }
        other => panic!("{other:?}"),
    }
    expect_ok(&mut a1, frame::RevokeDevice { device: alice2.device_id }.into()).await;
    assert!(a2.wait_for(|p| matches!(p, ServerFrame::SessionRevoked(_)).then_some(())).await.is_ok());
    assert!(a2.closed_within(Duration::from_secs(5)).await, "revoked socket closes");

    send(&mut b, conv, b"after revoke").await;
    let later = receive(&mut a1, conv, 2).await;
    assert_eq!(later[1].payload, b"after revoke");
    let err = anytime_testkit::RawClient::connect(&h.server.ws_url(), &alice2.token).await.err().expect("rejected");
    assert!(format!("{err:#}").contains("InvalidToken"), "{err:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_is_relayed_and_presence_obeys_privacy() {
    // Goal: typing reaches the other members only; presence is visible per the user's setting.
    let h = Harness::start();
    let alice = h.register("alice").await;
    let bob = h.register("bob").await;
    let stranger = h.register("stranger").await;
    let mut a = h.connect(&alice).await;
    let mut b = h.connect(&bob).await;
    let mut s = h.connect(&stranger).await;
    let conv = create_direct(&mut a, bob.user_id).await;
    a.send(frame::Typing { conv }.into()).await.unwrap();
    let typing = b
        .wait_for(|p| match p {
            ServerFrame::TypingEvent(t) => Some(t.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!((typing.conv, typing.user), (conv, alice.user_id));

    // Default privacy is "contacts": bob (direct chat) sees alice, the stranger does not.
    let seen_by = |frame: ServerFrame| match frame {
        ServerFrame::PresenceList(list) => list.presence,
        other => panic!("{other:?}"),
    };
    let for_bob = seen_by(expect_ok(&mut b, frame::SubscribePresence { users: vec![alice.user_id] }.into()).await);
    assert_eq!(for_bob.len(), 1);
    assert!(for_bob[0].online);
    let for_stranger = seen_by(expect_ok(&mut s, frame::SubscribePresence { users: vec![alice.user_id] }.into()).await);
    assert!(for_stranger.is_empty());

    // Going offline is pushed to bob.
    a.close().await;
    let event = b
        .wait_for(|p| match p {
            ServerFrame::PresenceEvent(e) if e.user == alice.user_id => Some(e.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert!(!event.online);
    assert!(event.last_seen_ms.is_some());

    // "Nobody" hides alice even from bob.
    let mut a = h.connect(&alice).await;
    expect_ok(&mut a, frame::SetPresencePrivacy { privacy: PresencePrivacy::Nobody }.into()).await;
    let hidden = seen_by(expect_ok(&mut b, frame::SubscribePresence { users: vec![alice.user_id] }.into()).await);
    assert!(hidden.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_device_waits_for_approval_by_link_code_from_an_existing_one() {
    // Goal: a second login cannot connect or receive until an approved device of the same
    // account approves its code; a wrong code or another account cannot approve it.
    let h = Harness::start();
    let alice = h.register("alice").await;
    let mallory = h.register("mallory").await;
    let bob = h.register("bob").await;
    let mut b = h.connect(&bob).await;
    let conv = create_direct(&mut b, alice.user_id).await;
    let pending = h.login("alice", "new-phone").await;
    let code = pending.link_code.clone().expect("link code");
    assert_eq!(code.len(), 6);
    let err = anytime_testkit::RawClient::connect(&h.server.ws_url(), &pending.token).await.err().expect("refused");
    assert!(format!("{err:#}").contains("DeviceNotApproved"), "{err:#}");
    // The pending device is nobody's recipient yet.
    match expect_ok(&mut b, frame::GetConversation { conv }.into()).await {
        ServerFrame::ConversationInfo(info) => {
            let devices: Vec<_> = info.members.iter().flat_map(|m| m.devices.clone()).collect();
            assert!(!devices.contains(&pending.device_id));
        }
        other => panic!("{other:?}"),
    }
    let mut m = h.connect(&mallory).await;
    let answer = m.request(frame::ApproveDevice { code: code.clone() }.into()).await.unwrap();
    assert!(matches!(answer, ServerFrame::Error(e) if e.code == ErrorCode::LinkCodeInvalid));
    let mut a = h.connect(&alice).await;
    let answer = a.request(frame::ApproveDevice { code: "000000".into() }.into()).await.unwrap();
    assert!(matches!(answer, ServerFrame::Error(e) if e.code == ErrorCode::LinkCodeInvalid || code == "000000"));
    // Members are told the account's devices changed once it is approved.
    expect_ok(&mut a, frame::ApproveDevice { code }.into()).await;
    b.wait_for(|p| matches!(p, ServerFrame::ConversationChanged(c) if c.conv == conv).then_some(())).await.unwrap();
    let mut phone = h.connect(&pending).await;
    send(&mut b, conv, b"now you can read").await;
    assert_eq!(receive(&mut phone, conv, 1).await[0].payload, b"now you can read");
}
