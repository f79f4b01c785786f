//! Rules of the SQL stores that the conformance cases do not cover, checked on `MemoryStore`:
//! direct-chat deduplication, admin succession, welcomes, invites, refusals that change
//! nothing, session expiry.

use anytime_proto::frame::{ConvKind, MessageKind};
use anytime_proto::{ConvId, DeviceId, ErrorCode, MsgId, UserId};
use anytime_server_core::store::*;
use anytime_store_conformance::{self as conformance, device};
use anytime_store_memory::MemoryStore;

/// A user record as the conformance fixtures make it (`user{id}`).
fn user(id: u64) -> UserRecord {
    conformance::user(id, &format!("user{id}")).0
}

/// Users 1..=n, each with device `10 * id`.
async fn store_with_users(n: u64) -> MemoryStore {
    let store = MemoryStore::new();
    for id in 1..=n {
        store.create_user(user(id), device(id, id * 10)).await.unwrap();
    }
    store
}

fn new_conversation(id: u64, kind: ConvKind, creator: u64, members: &[u64]) -> NewConversation {
    NewConversation {
        id: ConvId(id),
        kind,
        name: "c".into(),
        creator: UserId(creator),
        members: members.iter().map(|m| UserId(*m)).collect(),
        created_at_ms: 1,
    }
}

fn commit(conv: ConvId, epoch: u64, id: u8, welcome: Option<NewWelcome>) -> NewCommit {
    NewCommit {
        conv,
        epoch,
        sender: UserId(1),
        sender_device: DeviceId(10),
        msg_id: MsgId([id; 16]),
        commit: vec![id],
        welcome,
        at_ms: 5,
    }
}

#[tokio::test]
async fn a_direct_chat_is_one_per_pair_and_makes_contacts() {
    let store = store_with_users(3).await;
    let first = store.create_conversation(new_conversation(100, ConvKind::Direct, 1, &[2])).await.unwrap();
    let again = store.create_conversation(new_conversation(101, ConvKind::Direct, 2, &[1])).await.unwrap();
    assert_eq!((first, again), (ConvId(100), ConvId(100)));
    assert!(store.conversation(ConvId(101)).await.unwrap().is_none());
    assert!(store.are_contacts(UserId(2), UserId(1)).await.unwrap());
    assert!(!store.are_contacts(UserId(1), UserId(3)).await.unwrap());
    assert_eq!(
        store.create_conversation(new_conversation(102, ConvKind::Direct, 1, &[2, 3])).await,
        Err(StoreError::Rejected(ErrorCode::InvalidArgument))
    );
    // Sharing a group does not make contacts.
    store.create_conversation(new_conversation(103, ConvKind::Group, 1, &[3])).await.unwrap();
    assert!(store.share_conversation(UserId(3), UserId(1)).await.unwrap());
    assert!(!store.are_contacts(UserId(1), UserId(3)).await.unwrap());
    // Once both left, the pair can start a new direct chat.
    store.remove_member(first, UserId(1)).await.unwrap();
    assert!(store.are_contacts(UserId(1), UserId(2)).await.unwrap());
    store.remove_member(first, UserId(2)).await.unwrap();
    assert!(store.conversation(first).await.unwrap().is_none());
    assert!(!store.are_contacts(UserId(1), UserId(2)).await.unwrap());
    let fresh = store.create_conversation(new_conversation(104, ConvKind::Direct, 2, &[1])).await.unwrap();
    assert_eq!(fresh, ConvId(104));
}

#[tokio::test]
async fn a_group_keeps_an_admin_and_goes_with_its_last_member() {
    let store = store_with_users(3).await;
    let conv = store.create_conversation(new_conversation(100, ConvKind::Group, 3, &[2, 1])).await.unwrap();
    let members = store.members(conv).await.unwrap();
    assert_eq!(
        members,
        vec![
            MemberRecord { user: UserId(1), admin: false },
            MemberRecord { user: UserId(2), admin: false },
            MemberRecord { user: UserId(3), admin: true },
        ],
        "joined together: ordered by id"
    );
    // The last admin cannot step down; nothing changes.
    assert_eq!(store.set_admin(conv, UserId(3), false).await, Err(StoreError::Rejected(ErrorCode::InvalidArgument)));
    assert_eq!(store.member(conv, UserId(3)).await.unwrap(), Some(MemberRecord { user: UserId(3), admin: true }));
    assert_eq!(store.set_admin(conv, UserId(9), true).await, Err(StoreError::Rejected(ErrorCode::NotMember)));
    // The admin leaves: the longest-standing member takes over.
    store.remove_member(conv, UserId(3)).await.unwrap();
    assert_eq!(store.member(conv, UserId(1)).await.unwrap(), Some(MemberRecord { user: UserId(1), admin: true }));
    assert!(store.cursors(DeviceId(30)).await.unwrap().is_empty());
    assert_eq!(store.remove_member(conv, UserId(3)).await, Err(StoreError::Rejected(ErrorCode::NotMember)));
    let invite = InviteRecord {
        code: "code".into(),
        conv,
        created_by: UserId(1),
        expires_at_ms: 1_000,
        max_uses: 5,
        uses: 3,
        revoked: true,
    };
    store.create_invite(invite.clone()).await.unwrap();
    assert_eq!(store.invite("code").await.unwrap(), Some(InviteRecord { uses: 0, revoked: false, ..invite }));
    store.remove_member(conv, UserId(1)).await.unwrap();
    store.remove_member(conv, UserId(2)).await.unwrap();
    assert!(store.conversation(conv).await.unwrap().is_none());
    assert!(store.invite("code").await.unwrap().is_none());
    assert!(store.conversations_of(UserId(2)).await.unwrap().is_empty());
    assert!(store.cursors(DeviceId(20)).await.unwrap().is_empty());
}

#[tokio::test]
async fn invites_refuse_when_revoked_expired_or_already_used_by_a_member() {
    let store = store_with_users(3).await;
    let conv = store.create_conversation(new_conversation(100, ConvKind::Group, 1, &[2])).await.unwrap();
    let invite = |code: &str| InviteRecord {
        code: code.into(),
        conv,
        created_by: UserId(1),
        expires_at_ms: 1_000,
        max_uses: 1,
        uses: 0,
        revoked: false,
    };
    store.create_invite(invite("a")).await.unwrap();
    assert!(matches!(store.create_invite(invite("a")).await, Err(StoreError::Backend(_))));
    let rejected = |code| Err(StoreError::Rejected(code));
    assert_eq!(store.join_invite("nope", UserId(3), 10, 100).await, rejected(ErrorCode::InviteNotFound));
    assert_eq!(store.join_invite("a", UserId(3), 1_000, 100).await, rejected(ErrorCode::InviteExpired));
    // A member joining again: refused, and the use is not counted.
    assert_eq!(store.join_invite("a", UserId(2), 10, 100).await, rejected(ErrorCode::AlreadyMember));
    assert_eq!(store.join_invite("a", UserId(3), 10, 2).await, rejected(ErrorCode::TooManyMembers));
    assert_eq!(store.invite("a").await.unwrap().unwrap().uses, 0);
    assert_eq!(store.join_invite("a", UserId(3), 10, 100).await, Ok(conv));
    assert_eq!(store.invite("a").await.unwrap().unwrap().uses, 1);
    assert_eq!(store.cursors(DeviceId(30)).await.unwrap(), vec![(conv, 0)]);
    store.revoke_invite("a").await.unwrap();
    assert_eq!(store.join_invite("a", UserId(3), 10, 100).await, rejected(ErrorCode::InviteRevoked));
    assert_eq!(store.revoke_invite("nope").await, Err(StoreError::Rejected(ErrorCode::InviteNotFound)));
    assert_eq!(
        store.add_members(ConvId(999), vec![UserId(3)], 100, 1).await,
        Err(StoreError::Rejected(ErrorCode::ConversationNotFound))
    );
}

#[tokio::test]
async fn welcomes_wait_per_device_until_acknowledged() {
    let store = store_with_users(2).await;
    let conv = store.create_conversation(new_conversation(100, ConvKind::Group, 1, &[2])).await.unwrap();
    let welcome = NewWelcome { id: 7, devices: vec![DeviceId(20), DeviceId(21), DeviceId(20)], payload: vec![1] };
    let accepted = store.append_commit(commit(conv, 0, 1, Some(welcome))).await.unwrap();
    assert_eq!(accepted, CommitAccepted { seq: 1, epoch: 1, duplicate: false });
    let stored = store.messages_after(conv, 0, 10).await.unwrap();
    assert_eq!(stored[0].kind, MessageKind::Commit { epoch: 0 });
    let pending = store.pending_welcomes(DeviceId(20)).await.unwrap();
    assert_eq!(pending, vec![PendingWelcome { id: 7, conv, payload: vec![1] }]);
    store.ack_welcome(DeviceId(20), 7).await.unwrap();
    assert_eq!(store.ack_welcome(DeviceId(20), 7).await, Err(StoreError::Rejected(ErrorCode::UnknownWelcome)));
    assert!(store.pending_welcomes(DeviceId(20)).await.unwrap().is_empty());
    assert_eq!(store.pending_welcomes(DeviceId(21)).await.unwrap().len(), 1);
    // A welcome id used twice refuses the whole commit.
    let again = NewWelcome { id: 7, devices: vec![DeviceId(20)], payload: vec![2] };
    assert!(matches!(store.append_commit(commit(conv, 1, 2, Some(again))).await, Err(StoreError::Backend(_))));
    let record = store.conversation(conv).await.unwrap().unwrap();
    assert_eq!((record.epoch, record.last_seq), (1, 1));
    assert!(store.pending_welcomes(DeviceId(20)).await.unwrap().is_empty());
    // Retention removes an unacknowledged welcome.
    store.collect_garbage(1_000, 10).await.unwrap();
    assert!(store.pending_welcomes(DeviceId(21)).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_message_id_is_either_a_message_or_a_commit() {
    let store = store_with_users(2).await;
    let conv = store.create_conversation(new_conversation(100, ConvKind::Group, 1, &[2])).await.unwrap();
    store.append_commit(commit(conv, 0, 1, None)).await.unwrap();
    let message = |id: u8| NewMessage {
        conv,
        sender: UserId(1),
        sender_device: DeviceId(10),
        msg_id: MsgId([id; 16]),
        payload: vec![id],
        at_ms: 5,
    };
    let reused = store.submit_message(message(1)).await.unwrap().await;
    assert_eq!(reused, Err(StoreError::Rejected(ErrorCode::MessageIdReused)));
    store.submit_message(message(2)).await.unwrap().await.unwrap();
    assert_eq!(
        store.append_commit(commit(conv, 1, 2, None)).await,
        Err(StoreError::Rejected(ErrorCode::MessageIdReused))
    );
    let mut unknown = message(3);
    unknown.conv = ConvId(999);
    let unknown = store.submit_message(unknown).await.unwrap().await;
    assert_eq!(unknown, Err(StoreError::Rejected(ErrorCode::ConversationNotFound)));
    let ack = store.submit_ack(DeviceId(10), ConvId(999), 1).await.unwrap().await;
    assert_eq!(ack, Err(StoreError::Rejected(ErrorCode::ConversationNotFound)));
    assert_eq!(store.conversation(conv).await.unwrap().unwrap().last_seq, 2);
}

#[tokio::test]
async fn refusals_change_nothing_and_expired_sessions_are_collected() {
    let store = store_with_users(1).await;
    // Taken name; then a free name with a device whose token hash is taken.
    let mut other = user(2);
    other.username = "user1".into();
    assert_eq!(store.create_user(other, device(2, 20)).await, Err(StoreError::Rejected(ErrorCode::UsernameTaken)));
    let mut clash = device(2, 20);
    clash.token_hash = device(1, 10).token_hash;
    assert!(matches!(store.create_user(user(2), clash).await, Err(StoreError::Backend(_))));
    assert!(store.user(UserId(2)).await.unwrap().is_none());
    assert!(store.user_by_username("user2").await.unwrap().is_none());
    // An expiring session.
    let mut short = device(1, 11);
    short.expires_at_ms = 50;
    short.created_at_ms = 0;
    store.create_device(short.clone(), 10).await.unwrap();
    store.set_push_endpoint(DeviceId(11), Some("https://push.example/x".into())).await.unwrap();
    let devices: Vec<DeviceId> = store.devices(UserId(1)).await.unwrap().iter().map(|d| d.id).collect();
    assert_eq!(devices, [DeviceId(11), DeviceId(10)], "oldest first");
    let collected = store.collect_garbage(49, 1).await.unwrap();
    assert!(collected.expired_devices.is_empty());
    let collected = store.collect_garbage(50, 1).await.unwrap();
    assert_eq!(collected.expired_devices, vec![DeviceId(11)]);
    assert!(store.device_by_token_hash(short.token_hash).await.unwrap().is_none());
    assert!(store.push_endpoints(vec![DeviceId(11)]).await.unwrap().is_empty());
    // Blocks.
    store.block(UserId(1), UserId(3)).await.unwrap();
    store.block(UserId(1), UserId(2)).await.unwrap();
    store.block(UserId(1), UserId(2)).await.unwrap();
    assert_eq!(store.blocked_by(UserId(1)).await.unwrap(), [UserId(2), UserId(3)]);
    store.unblock(UserId(1), UserId(2)).await.unwrap();
    assert!(!store.is_blocked(UserId(1), UserId(2)).await.unwrap());
    assert!(store.is_blocked(UserId(1), UserId(3)).await.unwrap());
}
