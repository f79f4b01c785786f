//! Conformance cases for `ServerStore` implementations: the atomic rules the delivery service
//! relies on (dense seqs, idempotent ids, one winner per epoch, one claimer per key package,
//! garbage collection, device approval, invite limits). Every backend runs every case on a fresh,
//! empty store: `for case in CASES { (case.run)(make_store().await).await }`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use anytime_proto::frame::{ConvKind, PresencePrivacy};
use anytime_proto::{ConvId, DeviceId, ErrorCode, MsgId, UserId};
use anytime_server_core::store::*;

pub type Store = Arc<dyn ServerStore>;
type CaseFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One named conformance case.
pub struct Case {
    pub name: &'static str,
    pub run: fn(Store) -> CaseFuture,
}

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        pub const CASES: &[Case] = &[$(Case { name: stringify!($name), run: |store| Box::pin($name(store)) },)*];
    };
}

cases!(
    seqs_are_dense_and_message_ids_idempotent_per_device,
    commits_are_accepted_only_at_the_current_epoch,
    key_packages_are_claimed_once_with_a_last_resort_fallback,
    garbage_collection_deletes_what_every_device_acknowledged_and_what_retention_expired,
    a_new_device_starts_at_the_end_and_a_revoked_one_leaves_no_trace,
    invites_count_uses_atomically,
    a_group_holds_a_thousand_members_with_two_devices_each,
    a_pending_device_is_no_recipient_until_approved_with_its_code,
    push_endpoints_are_one_per_existing_device,
);

/// A user named `name` with its first device (`10 * id`); fixtures for other store tests too.
pub fn user(id: u64, name: &str) -> (UserRecord, DeviceRecord) {
    let user = UserRecord {
        id: UserId(id),
        username: name.into(),
        password_hash: "x".into(),
        display_name: name.into(),
        avatar: None,
        presence_privacy: PresencePrivacy::Contacts,
        created_at_ms: 1,
    };
    (user, device(id, id * 10))
}

/// An approved device `id` of `user`, its token hash derived from the id.
pub fn device(user: u64, id: u64) -> DeviceRecord {
    let mut token_hash = [0u8; 32];
    token_hash[..8].copy_from_slice(&id.to_le_bytes());
    DeviceRecord {
        id: DeviceId(id),
        user: UserId(user),
        name: "d".into(),
        token_hash,
        created_at_ms: 1,
        expires_at_ms: u64::MAX / 2,
        last_seen_ms: 1,
        approved: true,
        link_code: None,
    }
}

async fn setup(store: &Store) -> ConvId {
    for (id, name) in [(1, "ann"), (2, "bob")] {
        let (u, d) = user(id, name);
        store.create_user(u, d).await.unwrap();
    }
    let conv = store
        .create_conversation(NewConversation {
            id: ConvId(100),
            kind: ConvKind::Group,
            name: "g".into(),
            creator: UserId(1),
            members: vec![UserId(2)],
            created_at_ms: 1,
        })
        .await
        .unwrap();
    conv
}

fn message(conv: ConvId, id: u8, device: u64) -> NewMessage {
    NewMessage {
        conv,
        sender: UserId(device / 10),
        sender_device: DeviceId(device),
        msg_id: MsgId([id; 16]),
        payload: vec![id],
        at_ms: 5,
    }
}

async fn seqs_are_dense_and_message_ids_idempotent_per_device(store: Store) {
    let conv = setup(&store).await;
    let mut pending = Vec::new();
    for id in 1..=5 {
        pending.push(store.submit_message(message(conv, id, 10)).await.unwrap());
    }
    // Queued in order, so stored in order.
    for (i, p) in pending.into_iter().enumerate() {
        assert_eq!(p.await.unwrap(), Appended { seq: i as u64 + 1, duplicate: false });
    }
    let replay = store.submit_message(message(conv, 3, 10)).await.unwrap().await.unwrap();
    assert_eq!(replay, Appended { seq: 3, duplicate: true });
    // The same id from another device is another message.
    let other = store.submit_message(message(conv, 3, 20)).await.unwrap().await.unwrap();
    assert_eq!(other, Appended { seq: 6, duplicate: false });
    let stored = store.messages_after(conv, 0, 100).await.unwrap();
    assert!(stored.iter().map(|m| m.seq).eq(1..=6));
    // An id reused for another conversation is refused and changes nothing.
    let other_conv = store
        .create_conversation(NewConversation {
            id: ConvId(200),
            kind: ConvKind::Direct,
            name: String::new(),
            creator: UserId(1),
            members: vec![UserId(2)],
            created_at_ms: 1,
        })
        .await
        .unwrap();
    // A backend may refuse when queueing or when completing; either way nothing is stored.
    let reused = match store.submit_message(message(other_conv, 1, 10)).await {
        Ok(pending) => pending.await,
        Err(error) => Err(error),
    };
    assert_eq!(reused, Err(StoreError::Rejected(ErrorCode::MessageIdReused)));
    assert!(store.messages_after(other_conv, 0, 10).await.unwrap().is_empty());
}

async fn commits_are_accepted_only_at_the_current_epoch(store: Store) {
    let conv = setup(&store).await;
    let commit = |epoch, id: u8, device: u64| NewCommit {
        conv,
        epoch,
        sender: UserId(device / 10),
        sender_device: DeviceId(device),
        msg_id: MsgId([id; 16]),
        commit: vec![id],
        welcome: None,
        at_ms: 1,
    };
    // Two commits for epoch 0 racing: both queued before either is answered.
    let (a, b) = tokio::join!(store.append_commit(commit(0, 1, 10)), store.append_commit(commit(0, 2, 20)));
    let results = [a, b];
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(results.contains(&Err(StoreError::EpochMismatch { current: 1 })));
    assert_eq!(store.conversation(conv).await.unwrap().unwrap().epoch, 1);
    // A retried winner is idempotent; the loser succeeds at epoch 1.
    let winner = results.iter().position(|r| r.is_ok()).unwrap();
    let (id, device) = if winner == 0 { (1, 10) } else { (2, 20) };
    assert!(store.append_commit(commit(0, id, device)).await.unwrap().duplicate);
    let (id, device) = if winner == 0 { (2, 20) } else { (1, 10) };
    let accepted = store.append_commit(commit(1, id, device)).await.unwrap();
    assert_eq!((accepted.epoch, accepted.duplicate), (2, false));
}

async fn key_packages_are_claimed_once_with_a_last_resort_fallback(store: Store) {
    let _conv = setup(&store).await;
    // Claims are allowed between users who share a conversation (checked by the caller).
    assert!(store.share_conversation(UserId(1), UserId(2)).await.unwrap());
    assert!(store.share_conversation(UserId(2), UserId(1)).await.unwrap());
    let (stranger, stranger_device) = user(3, "cyd");
    store.create_user(stranger, stranger_device).await.unwrap();
    assert!(!store.share_conversation(UserId(3), UserId(2)).await.unwrap());
    let packages: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i]).collect();
    assert_eq!(store.upload_key_packages(DeviceId(20), packages, Some(vec![99]), 200).await.unwrap(), 3);
    let mut claimed = Vec::new();
    for _ in 0..5 {
        claimed.extend(store.claim_key_packages(UserId(2)).await.unwrap());
    }
    let one_time: Vec<_> = claimed.iter().filter(|c| !c.last_resort).map(|c| c.package.clone()).collect();
    assert_eq!(one_time, [vec![0], vec![1], vec![2]]);
    assert!(claimed.iter().filter(|c| c.last_resort).all(|c| c.package == [99]));
    assert_eq!(store.key_package_count(DeviceId(20)).await.unwrap(), (0, true));
    // A user whose device has nothing at all: refused, and nothing else is claimed.
    assert_eq!(store.claim_key_packages(UserId(1)).await, Err(StoreError::Rejected(ErrorCode::NoKeyPackage)));
    // The per-device cap holds.
    let too_many: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i]).collect();
    assert_eq!(
        store.upload_key_packages(DeviceId(20), too_many, None, 4).await,
        Err(StoreError::Rejected(ErrorCode::TooManyKeyPackages))
    );
}

async fn garbage_collection_deletes_what_every_device_acknowledged_and_what_retention_expired(store: Store) {
    let conv = setup(&store).await;
    for id in 1..=4 {
        store.submit_message(message(conv, id, 10)).await.unwrap().await.unwrap();
    }
    // Ann's device acked all, Bob's device only 2: messages 1..=2 can go.
    store.submit_ack(DeviceId(10), conv, 4).await.unwrap().await.unwrap();
    store.submit_ack(DeviceId(20), conv, 2).await.unwrap().await.unwrap();
    let collected = store.collect_garbage(10, 1_000_000).await.unwrap();
    assert_eq!(collected.messages, 2);
    assert!(store.messages_after(conv, 0, 10).await.unwrap().iter().map(|m| m.seq).eq(3..=4));
    // Acks never move a cursor back.
    store.submit_ack(DeviceId(20), conv, 1).await.unwrap().await.unwrap();
    assert!(store.cursors(DeviceId(20)).await.unwrap().contains(&(conv, 2)));
    // Past retention, the rest goes even though Bob never acked it.
    let collected = store.collect_garbage(10_000, 100).await.unwrap();
    assert_eq!(collected.messages, 2);
    assert!(store.messages_after(conv, 0, 10).await.unwrap().is_empty());
}

async fn a_new_device_starts_at_the_end_and_a_revoked_one_leaves_no_trace(store: Store) {
    let conv = setup(&store).await;
    store.submit_message(message(conv, 1, 10)).await.unwrap().await.unwrap();
    store.create_device(device(2, 21), 10).await.unwrap();
    assert_eq!(store.cursors(DeviceId(21)).await.unwrap(), vec![(conv, 1)]);
    assert_eq!(store.create_device(device(2, 22), 2).await, Err(StoreError::Rejected(ErrorCode::TooManyDevices)));
    store.upload_key_packages(DeviceId(21), vec![vec![1]], None, 10).await.unwrap();
    assert_eq!(
        store.revoke_device(UserId(1), DeviceId(21)).await,
        Err(StoreError::Rejected(ErrorCode::DeviceNotFound))
    );
    store.revoke_device(UserId(2), DeviceId(21)).await.unwrap();
    assert!(store.cursors(DeviceId(21)).await.unwrap().is_empty());
    assert_eq!(store.key_package_count(DeviceId(21)).await.unwrap(), (0, false));
    assert!(store.device_by_token_hash(device(2, 21).token_hash).await.unwrap().is_none());
}

async fn invites_count_uses_atomically(store: Store) {
    let conv = setup(&store).await;
    for id in 3..=5 {
        let (u, d) = user(id, &format!("user{id}"));
        store.create_user(u, d).await.unwrap();
    }
    let invite = InviteRecord {
        code: "code".into(),
        conv,
        created_by: UserId(1),
        expires_at_ms: 1_000,
        max_uses: 2,
        uses: 0,
        revoked: false,
    };
    store.create_invite(invite).await.unwrap();
    let (a, b, c) = tokio::join!(
        store.join_invite("code", UserId(3), 10, 100),
        store.join_invite("code", UserId(4), 10, 100),
        store.join_invite("code", UserId(5), 10, 100)
    );
    let results = [a, b, c];
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 2);
    assert!(results.contains(&Err(StoreError::Rejected(ErrorCode::InviteExhausted))));
    assert_eq!(store.members(conv).await.unwrap().len(), 4);
}

async fn a_group_holds_a_thousand_members_with_two_devices_each(store: Store) {
    // Goal: membership, recipients and cursors scale to a 1,000-member group (2,000 devices).
    let _conv = setup(&store).await;
    let mut members = Vec::new();
    for id in 1_000..2_000u64 {
        let (u, d) = user(id, &format!("member{id}"));
        store.create_user(u, d).await.unwrap();
        store.create_device(device(id, id * 10 + 1), 10).await.unwrap();
        members.push(UserId(id));
    }
    let big = ConvId(300);
    store
        .create_conversation(NewConversation {
            id: big,
            kind: ConvKind::Group,
            name: "big".into(),
            creator: UserId(1),
            members: members[..500].to_vec(),
            created_at_ms: 1,
        })
        .await
        .unwrap();
    store.add_members(big, members[500..].to_vec(), 5_000, 2).await.unwrap();
    assert_eq!(store.members(big).await.unwrap().len(), 1_001);
    assert_eq!(store.member_devices(big).await.unwrap().len(), 2_001);
    let appended = store.submit_message(message(big, 1, 10)).await.unwrap().await.unwrap();
    assert_eq!(appended.seq, 1);
    assert_eq!(store.cursors(DeviceId(1_999 * 10 + 1)).await.unwrap(), vec![(big, 0)]);
    assert_eq!(
        store.add_members(big, vec![UserId(2)], 1_001, 3).await,
        Err(StoreError::Rejected(ErrorCode::TooManyMembers))
    );
}

async fn a_pending_device_is_no_recipient_until_approved_with_its_code(store: Store) {
    let conv = setup(&store).await;
    // Past its window, the code no longer approves anything.
    let mut late = device(2, 22);
    late.approved = false;
    late.link_code = Some("654321".into());
    late.expires_at_ms = 100;
    store.create_device(late, 10).await.unwrap();
    assert_eq!(
        store.approve_device(UserId(2), "654321", 100, 9).await,
        Err(StoreError::Rejected(ErrorCode::LinkCodeInvalid))
    );
    let mut pending = device(2, 21);
    pending.approved = false;
    pending.link_code = Some("123456".into());
    store.create_device(pending, 10).await.unwrap();
    assert!(store.cursors(DeviceId(21)).await.unwrap().is_empty());
    assert!(!store.member_devices(conv).await.unwrap().iter().any(|(_, d)| *d == DeviceId(21)));
    store.upload_key_packages(DeviceId(21), vec![vec![7]], None, 10).await.unwrap();
    // Claims skip it: only bob's approved device (which has no packages) is asked.
    assert_eq!(store.claim_key_packages(UserId(2)).await, Err(StoreError::Rejected(ErrorCode::NoKeyPackage)));
    // Wrong code, or another account's approval: refused, nothing changes.
    assert_eq!(
        store.approve_device(UserId(2), "000000", 5, 9).await,
        Err(StoreError::Rejected(ErrorCode::LinkCodeInvalid))
    );
    assert_eq!(
        store.approve_device(UserId(1), "123456", 5, 9).await,
        Err(StoreError::Rejected(ErrorCode::LinkCodeInvalid))
    );
    assert_eq!(store.approve_device(UserId(2), "123456", 5, 9).await.unwrap(), DeviceId(21));
    assert_eq!(store.cursors(DeviceId(21)).await.unwrap(), vec![(conv, 0)]);
    assert!(store.member_devices(conv).await.unwrap().iter().any(|(_, d)| *d == DeviceId(21)));
    // A code works once.
    assert_eq!(
        store.approve_device(UserId(2), "123456", 5, 9).await,
        Err(StoreError::Rejected(ErrorCode::LinkCodeInvalid))
    );
}

async fn push_endpoints_are_one_per_existing_device(store: Store) {
    setup(&store).await;
    let (ann, bob) = (DeviceId(10), DeviceId(20));
    store.set_push_endpoint(ann, Some("https://push.example/a1".into())).await.unwrap();
    store.set_push_endpoint(ann, Some("https://push.example/a2".into())).await.unwrap();
    store.set_push_endpoint(bob, Some("https://push.example/b".into())).await.unwrap();
    // A device that does not exist gets nothing stored.
    store.set_push_endpoint(DeviceId(999), Some("https://push.example/x".into())).await.unwrap();
    let all = store.push_endpoints(vec![ann, bob, DeviceId(999)]).await.unwrap();
    assert_eq!(
        all,
        vec![(ann, "https://push.example/a2".to_owned()), (bob, "https://push.example/b".to_owned())],
        "the latest endpoint replaces the previous one"
    );
    store.set_push_endpoint(ann, None).await.unwrap();
    assert_eq!(store.push_endpoints(vec![ann]).await.unwrap(), vec![]);
    // A revoked device's endpoint goes with it.
    store.revoke_device(UserId(2), bob).await.unwrap();
    assert_eq!(store.push_endpoints(vec![bob]).await.unwrap(), vec![]);
}
