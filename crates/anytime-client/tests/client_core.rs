//! The client core without sockets or disks: an in-memory store and a scripted transport.

use anytime_client::content::{Receipt, ReceiptKind, Text};
use anytime_client::e2ee::{DeviceCrypto, DeviceIdentity};
use anytime_client::{Client, ClientError, Content, Event, MemoryStore, Transport};
use anytime_proto::frame::{self, Seq};
use anytime_proto::{ClientFrame, ConvId, DeviceId, ErrorCode, MsgId, ServerFrame, UserId};
use async_trait::async_trait;

const CONV: ConvId = ConvId(5);

/// A server stand-in: answers sends with increasing seqs, or fails while `down`.
#[derive(Default)]
struct Scripted {
    down: bool,
    next_seq: Seq,
    requests: Vec<ClientFrame>,
    /// The answer to `GetConversation` (`None`: not a member).
    info: Option<frame::ConversationInfo>,
}

#[async_trait(?Send)]
impl Transport for Scripted {
    async fn request(&mut self, frame: ClientFrame) -> Result<ServerFrame, ClientError> {
        if self.down {
            return Err(ClientError::Transport("connection lost".into()));
        }
        if let ClientFrame::GetConversation(_) = frame {
            return Ok(match &self.info {
                Some(info) => ServerFrame::ConversationInfo(info.clone()),
                None => ServerFrame::error(ErrorCode::ConversationNotFound),
            });
        }
        self.requests.push(frame);
        self.next_seq += 1;
        Ok(ServerFrame::Sent(frame::Sent { seq: self.next_seq, duplicate: false }))
    }

    async fn notify(&mut self, _frame: ClientFrame) -> Result<(), ClientError> {
        Ok(())
    }

    async fn next_push(&mut self, _wait_ms: u64) -> Result<Option<ServerFrame>, ClientError> {
        Ok(None)
    }
}

fn alice_in_a_group() -> Client<MemoryStore> {
    let mut alice = DeviceCrypto::new(DeviceIdentity { user: UserId(1), device: DeviceId(10) }).unwrap();
    let mut bob = DeviceCrypto::new(DeviceIdentity { user: UserId(2), device: DeviceId(20) }).unwrap();
    alice.create_group(CONV).unwrap();
    let package = bob.key_packages(1).unwrap().remove(0);
    alice.add_devices(CONV, &[package]).unwrap();
    alice.merge_pending(CONV).unwrap();
    Client::new(alice, MemoryStore::default())
}

#[tokio::test]
async fn a_queued_message_keeps_what_it_says_across_a_lost_connection() {
    let mut client = alice_in_a_group();
    let mut net = Scripted { down: true, ..Scripted::default() };
    let text = Content::Text(Text { body: "hello".into(), mentions: Vec::new() });
    let receipt = Content::Receipt(Receipt { kind: ReceiptKind::Read, messages: vec![MsgId([9; 16])] });
    assert!(client.send(&mut net, CONV, text.clone(), MsgId([1; 16])).await.is_err());
    assert!(client.send(&mut net, CONV, receipt.clone(), MsgId([2; 16])).await.is_err());
    assert_eq!(client.store().outbox.len(), 2, "both wait in the outbox, encrypted");
    assert!(client.store().records.is_empty(), "nothing is in the history before the server has it");

    // Back online (after a restart the shell flushes the outbox the same way).
    net.down = false;
    client.flush_outbox(&mut net).await.unwrap();
    assert!(client.store().outbox.is_empty());
    // The receipt wakes nobody: it goes as SendSilent, the text as Send.
    assert!(matches!(net.requests[0], ClientFrame::Send(_)), "{:?}", net.requests[0]);
    assert!(matches!(net.requests[1], ClientFrame::SendSilent(_)), "{:?}", net.requests[1]);
    // And the user's own messages enter the local history, with the seq the server gave.
    let own: Vec<(Seq, Content)> = client
        .store()
        .records
        .iter()
        .filter_map(|(_, _, event)| match event {
            Some(Event::Message { seq, content, own: true, .. }) => Some((*seq, content.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(own, vec![(1, text), (2, receipt)]);
}

#[tokio::test]
async fn every_send_writes_the_ratchet_step_and_the_outbox_entry_in_one_batch() {
    let mut client = alice_in_a_group();
    let mut net = Scripted::default();
    let before = client.store().saves;
    let text = Content::Text(Text { body: "one".into(), mentions: Vec::new() });
    client.send(&mut net, CONV, text, MsgId([3; 16])).await.unwrap();
    // One batch before the frame leaves (state + outbox), one after the server stored it
    // (history + outbox removal).
    assert_eq!(client.store().saves - before, 2);
    assert!(client.store().crypto.is_some());
    assert!(client.store().outbox.is_empty());
}

/// Answers every send with one error.
struct Refusing(ErrorCode);

#[async_trait(?Send)]
impl Transport for Refusing {
    async fn request(&mut self, _frame: ClientFrame) -> Result<ServerFrame, ClientError> {
        let error = frame::Error { code: self.0, message: String::new(), epoch: None };
        Ok(ServerFrame::Error(error))
    }

    async fn notify(&mut self, _frame: ClientFrame) -> Result<(), ClientError> {
        Ok(())
    }

    async fn next_push(&mut self, _wait_ms: u64) -> Result<Option<ServerFrame>, ClientError> {
        Ok(None)
    }
}

#[tokio::test]
async fn a_message_refused_for_good_leaves_the_outbox_and_a_busy_server_keeps_it() {
    let mut client = alice_in_a_group();
    let text = || Content::Text(Text { body: "x".into(), mentions: Vec::new() });
    // Removed from the chat meanwhile: the send fails with the reason and is not retried.
    let mut gone = Refusing(ErrorCode::ConversationNotFound);
    let error = client.send(&mut gone, CONV, text(), MsgId([4; 16])).await.unwrap_err();
    assert!(matches!(error, ClientError::Server { code: ErrorCode::ConversationNotFound }));
    assert!(client.store().outbox.is_empty(), "it would block every later flush");
    // A busy server: the message waits for the next flush.
    let mut busy = Refusing(ErrorCode::ServerBusy);
    assert!(client.send(&mut busy, CONV, text(), MsgId([5; 16])).await.is_err());
    assert_eq!(client.store().outbox.len(), 1);
    assert!(client.flush_outbox(&mut busy).await.is_err());
    // And once that conversation is gone too, a flush clears it and succeeds.
    let mut gone = Refusing(ErrorCode::ConversationNotFound);
    client.flush_outbox(&mut gone).await.unwrap();
    assert!(client.store().outbox.is_empty());
}

#[tokio::test]
async fn written_offline_a_message_waits_in_the_outbox_and_goes_out_in_order_on_the_next_sync() {
    let mut client = alice_in_a_group();
    let text = |body: &str| Content::Text(Text { body: body.into(), mentions: Vec::new() });
    client.queue(CONV, &text("first"), MsgId([1; 16])).unwrap();
    client.queue(CONV, &text("second"), MsgId([2; 16])).unwrap();
    let queued: Vec<_> = client.store().outbox.iter().map(|q| (q.msg_id, q.content.clone())).collect();
    assert_eq!(queued, vec![(MsgId([1; 16]), Some(text("first"))), (MsgId([2; 16]), Some(text("second")))]);
    assert!(client.store().crypto.is_some(), "the ratchet step is saved with the entry");
    assert!(
        matches!(client.queue(ConvId(99), &text("x"), MsgId([3; 16])), Err(ClientError::NotInGroup(_))),
        "a chat without keys is refused, not queued"
    );
    let mut net = Scripted::default();
    client.sync(&mut net, 0).await.unwrap();
    let sent: Vec<MsgId> = net
        .requests
        .iter()
        .map(|f| match f {
            ClientFrame::Send(s) => s.msg_id,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(sent, vec![MsgId([1; 16]), MsgId([2; 16])], "in the order written");
    assert!(client.store().outbox.is_empty());
    let history = anytime_client::ClientStore::history(client.store(), CONV, 10).unwrap();
    let bodies: Vec<(&str, u64)> = history.iter().map(|e| (e.body.as_str(), e.seq)).collect();
    assert_eq!(bodies, vec![("first", 1), ("second", 2)], "now in history with the server's numbers");
}

/// The server's view of CONV: alice and bob, each with the one device in the group, at `epoch`.
fn both_members(epoch: u64) -> frame::ConversationInfo {
    let member = |user, device| frame::Member { user: UserId(user), admin: false, devices: vec![DeviceId(device)] };
    frame::ConversationInfo {
        conv: CONV,
        kind: frame::ConvKind::Group,
        name: String::new(),
        epoch,
        last_seq: 1,
        members: vec![member(1, 10), member(2, 20)],
    }
}

#[tokio::test]
async fn after_removed_the_group_is_kept_but_unused_until_it_is_known_current_or_stale() {
    let removed = || ServerFrame::ConversationChanged(frame::ConversationChanged { conv: CONV, removed: true });
    let text = Content::Text(Text { body: "still here?".into(), mentions: Vec::new() });
    let mut client = alice_in_a_group();
    let mut net = Scripted::default();
    client.handle_push(&mut net, removed()).await.unwrap();
    assert!(client.has_group(CONV), "only a removal commit takes a device out of the group");
    let refused = client.send(&mut net, CONV, text.clone(), MsgId([1; 16])).await;
    assert!(matches!(refused, Err(ClientError::NotInGroup(_))), "{refused:?}");
    // Not a member: still nothing is sent with it, and it is kept.
    client.reconcile(&mut net, CONV).await.unwrap();
    assert!(client.has_group(CONV));
    assert!(client.send(&mut net, CONV, text.clone(), MsgId([2; 16])).await.is_err());
    // Added back before anyone committed the removal: the group is at the server's epoch, still ours.
    net.info = Some(both_members(1));
    client.reconcile(&mut net, CONV).await.unwrap();
    assert_eq!(client.send(&mut net, CONV, text.clone(), MsgId([3; 16])).await.ok(), Some(1));

    // Removed again, and this time the group moved on without this device (it missed the commits).
    let mut client = alice_in_a_group();
    client.handle_push(&mut net, removed()).await.unwrap();
    net.info = Some(both_members(4));
    client.reconcile(&mut net, CONV).await.unwrap();
    assert!(!client.has_group(CONV), "a group left behind the server's epoch is dropped");
    assert!(matches!(client.send(&mut net, CONV, text, MsgId([4; 16])).await, Err(ClientError::NotInGroup(_))));
}
