//! The server core without sockets, disks or clocks: `Session`s driven directly with encoded
//! frames, over the in-memory store, with a fake clock and a seeded RNG.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anytime_proto::frame::{self, MessageKind};
use anytime_proto::http::{RegisterRequest, SessionResponse};
use anytime_proto::{decode_server, encode_client, ClientFrame, ConvId, ErrorCode, MsgId, ServerFrame};
use anytime_server_core::env::Sleep;
use anytime_server_core::outbound::Outbound;
use anytime_server_core::session::Live;
use anytime_server_core::{Config, Env, Flow, Metrics, ServerCore, Session};
use anytime_store_memory::MemoryStore;
use bytes::Bytes;
use tokio::sync::mpsc;

/// Time that moves only when a test says so, and a reproducible RNG (splitmix64).
struct FakeEnv {
    now_ms: AtomicU64,
    rng: Mutex<u64>,
}

impl FakeEnv {
    fn new(seed: u64) -> Arc<FakeEnv> {
        Arc::new(FakeEnv { now_ms: AtomicU64::new(1_000_000), rng: Mutex::new(seed) })
    }

    fn advance(&self, ms: u64) {
        self.now_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Env for FakeEnv {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }

    fn fill_random(&self, buf: &mut [u8]) {
        let mut state = self.rng.lock().unwrap();
        for byte in buf {
            *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = *state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            *byte = (z ^ (z >> 31)) as u8;
        }
    }

    /// These tests never fill a connection's queue, so nothing waits on a timer.
    fn sleep(&self, _duration: Duration) -> Sleep {
        Box::pin(std::future::pending())
    }
}

fn core(env: Arc<FakeEnv>) -> Arc<ServerCore> {
    // Cheap password hashing: these tests are about sessions, not argon2.
    let config = Config { argon2_cost: (64, 1), ..Config::default() };
    Arc::new(ServerCore::new(Arc::new(MemoryStore::new()), env, Arc::new(Metrics::default()), config))
}

const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

async fn register(core: &ServerCore, name: &str) -> SessionResponse {
    let request =
        RegisterRequest { username: name.into(), password: format!("password-{name}"), device_name: "d".into() };
    core.register(IP, request).await.expect("register")
}

/// One device's connection, as the shell would drive it: frames in, queued output out.
struct Conn {
    session: Session,
    out: mpsc::Receiver<Bytes>,
    outbound: Arc<Outbound>,
    live: Option<Live>,
    next_id: u32,
    /// Pushes (request id 0) received so far.
    pushes: Vec<ServerFrame>,
}

impl Conn {
    fn open(core: &Arc<ServerCore>) -> Conn {
        let (tx, out) = mpsc::channel(1024);
        let outbound = Arc::new(Outbound::default());
        let session = Session::new(core.clone(), tx, outbound.clone(), IP);
        Conn { session, out, outbound, live: None, next_id: 0, pushes: Vec::new() }
    }

    async fn authenticated(core: &Arc<ServerCore>, token: &str) -> Conn {
        let mut conn = Conn::open(core);
        let answer = conn.request(frame::Hello { token: token.into() }.into()).await;
        assert!(matches!(answer, ServerFrame::HelloOk(_)), "{answer:?}");
        conn
    }

    /// What the socket writer would send, with pushes set aside; returns the answer to `id`.
    fn drain(&mut self, id: u32) -> Option<ServerFrame> {
        let mut answer = None;
        while let Ok(bytes) = self.out.try_recv() {
            self.outbound.remove(bytes.len() as u64);
            let (request_id, frame) = decode_server(&bytes).expect("the server sends decodable frames");
            if request_id == 0 {
                self.pushes.push(frame);
            } else if request_id == id {
                answer = Some(frame);
            }
        }
        answer
    }

    async fn request(&mut self, frame: ClientFrame) -> ServerFrame {
        self.next_id += 1;
        let id = self.next_id;
        match self.session.on_bytes(&encode_client(id, &frame)).await {
            Flow::Pending(pending) => {
                let completed = pending.await;
                self.session.on_completed(completed).await;
            }
            Flow::Live(live) => self.live = Some(live),
            Flow::Continue | Flow::Close => {}
        }
        self.drain(id).expect("an answer to every request")
    }

    /// Hands the hub's pushes for this connection to its session (the shell's select loop).
    async fn pump(&mut self) {
        while let Some(push) = self.live.as_mut().and_then(|live| live.rx.try_recv().ok()) {
            self.outbound.remove(push.wire_bytes());
            self.session.on_push(push).await;
        }
        self.drain(u32::MAX);
    }

    fn messages(&self) -> Vec<&frame::Message> {
        self.pushes.iter().filter_map(|p| if let ServerFrame::Message(m) = p { Some(m) } else { None }).collect()
    }
}

async fn direct_chat(a: &mut Conn, peer: anytime_proto::UserId) -> ConvId {
    match a.request(frame::CreateDirect { peer }.into()).await {
        ServerFrame::ConversationInfo(info) => info.conv,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_send_is_answered_once_stored_and_reaches_the_other_member_in_order() {
    let core = core(FakeEnv::new(1));
    let (alice, bob) = (register(&core, "alice").await, register(&core, "bob").await);
    let mut a = Conn::authenticated(&core, &alice.token).await;
    let mut b = Conn::authenticated(&core, &bob.token).await;
    let conv = direct_chat(&mut a, bob.user_id).await;
    for (i, text) in [b"one".as_slice(), b"two", b"three"].iter().enumerate() {
        let send = frame::Send { conv, msg_id: MsgId([i as u8 + 1; 16]), payload: text.to_vec() };
        match a.request(send.into()).await {
            ServerFrame::Sent(sent) => assert_eq!((sent.seq, sent.duplicate), (i as u64 + 1, false)),
            other => panic!("{other:?}"),
        }
    }
    b.pump().await;
    let received: Vec<(u64, &[u8])> = b.messages().iter().map(|m| (m.seq, m.payload.as_slice())).collect();
    assert_eq!(received, vec![(1, b"one".as_slice()), (2, b"two"), (3, b"three")]);
    assert!(b.messages().iter().all(|m| m.sender == alice.user_id && m.kind == MessageKind::Application));
}

#[tokio::test]
async fn a_resent_message_id_is_stored_once_and_a_stranger_reads_and_writes_nothing() {
    let core = core(FakeEnv::new(2));
    let (alice, bob, mallory) =
        (register(&core, "alice").await, register(&core, "bob").await, register(&core, "mallory").await);
    let mut a = Conn::authenticated(&core, &alice.token).await;
    let mut m = Conn::authenticated(&core, &mallory.token).await;
    let conv = direct_chat(&mut a, bob.user_id).await;
    let send = frame::Send { conv, msg_id: MsgId([7; 16]), payload: b"hi".to_vec() };
    let first = a.request(send.clone().into()).await;
    let again = a.request(send.into()).await;
    match (first, again) {
        (ServerFrame::Sent(first), ServerFrame::Sent(again)) => {
            assert_eq!(first.seq, again.seq);
            assert!(!first.duplicate && again.duplicate);
        }
        other => panic!("{other:?}"),
    }
    // mallory is no member: the conversation does not exist for her, either way.
    let probe = frame::Send { conv, msg_id: MsgId([8; 16]), payload: b"x".to_vec() };
    match m.request(probe.into()).await {
        ServerFrame::Error(error) => assert_eq!(error.code, ErrorCode::ConversationNotFound),
        other => panic!("{other:?}"),
    }
    match m.request(frame::GetConversation { conv }.into()).await {
        ServerFrame::Error(error) => assert_eq!(error.code, ErrorCode::ConversationNotFound),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn only_one_commit_wins_an_epoch_and_the_loser_learns_the_current_one() {
    let core = core(FakeEnv::new(3));
    let (alice, bob) = (register(&core, "alice").await, register(&core, "bob").await);
    let mut a = Conn::authenticated(&core, &alice.token).await;
    let mut b = Conn::authenticated(&core, &bob.token).await;
    let conv = direct_chat(&mut a, bob.user_id).await;
    let commit = |msg: u8| frame::Commit { conv, epoch: 0, msg_id: MsgId([msg; 16]), commit: vec![msg], welcome: None };
    assert!(matches!(a.request(commit(1).into()).await, ServerFrame::Committed(_)));
    match b.request(commit(2).into()).await {
        ServerFrame::Error(error) => {
            assert_eq!(error.code, ErrorCode::EpochMismatch);
            assert_eq!(error.epoch, Some(1));
        }
        other => panic!("{other:?}"),
    }
    // The winner's commit reaches bob as an ordered message.
    b.pump().await;
    assert!(b.messages().iter().any(|m| m.kind == MessageKind::Commit { epoch: 0 } && m.payload == [1]));
}

#[tokio::test]
async fn a_session_token_expires_on_the_injected_clock() {
    let env = FakeEnv::new(4);
    let core = core(env.clone());
    let alice = register(&core, "alice").await;
    Conn::authenticated(&core, &alice.token).await;
    env.advance(Config::default().session_ttl_ms + 1);
    let mut late = Conn::open(&core);
    match late.request(frame::Hello { token: alice.token.clone() }.into()).await {
        ServerFrame::Error(error) => assert_eq!(error.code, ErrorCode::TokenExpired),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_same_seed_gives_the_same_ids() {
    async fn ids(seed: u64) -> (anytime_proto::UserId, ConvId) {
        let core = core(FakeEnv::new(seed));
        let (alice, bob) = (register(&core, "alice").await, register(&core, "bob").await);
        let mut a = Conn::authenticated(&core, &alice.token).await;
        (alice.user_id, direct_chat(&mut a, bob.user_id).await)
    }
    assert_eq!(ids(9).await, ids(9).await);
    assert_ne!(ids(9).await, ids(10).await);
}

/// Found by `anytime-sim` (seed 1, step 37): a member added while connected must get the
/// group's Welcome before the commits that follow it. The "you were added" push is queued before
/// the Welcome; a session that handles it late catches up from storage, where later commits
/// already are, and the Welcome still waits in the queue: the device skipped a commit it needed
/// and stayed an epoch behind for good.
#[tokio::test]
async fn a_member_added_while_connected_gets_the_welcome_before_later_commits() {
    let core = core(FakeEnv::new(5));
    let (alice, carol) = (register(&core, "alice").await, register(&core, "carol").await);
    let mut a = Conn::authenticated(&core, &alice.token).await;
    let mut c = Conn::authenticated(&core, &carol.token).await;
    let conv = match a.request(frame::CreateGroup { name: "g".into(), members: Vec::new() }.into()).await {
        ServerFrame::ConversationInfo(info) => info.conv,
        other => panic!("{other:?}"),
    };
    let added = a.request(frame::AddMembers { conv, users: vec![carol.user_id] }.into()).await;
    assert!(matches!(added, ServerFrame::ConversationInfo(_)), "{added:?}");
    let welcome = frame::WelcomeOut { devices: vec![carol.device_id], payload: b"welcome".to_vec() };
    let commit = frame::Commit { conv, epoch: 0, msg_id: MsgId([1; 16]), commit: vec![1], welcome: Some(welcome) };
    assert!(matches!(a.request(commit.into()).await, ServerFrame::Committed(_)));
    let commit = frame::Commit { conv, epoch: 1, msg_id: MsgId([2; 16]), commit: vec![2], welcome: None };
    assert!(matches!(a.request(commit.into()).await, ServerFrame::Committed(_)));
    // Carol's session handles its queue only now (a slow reader's session waits for room).
    c.pump().await;
    let order: Vec<String> = c
        .pushes
        .iter()
        .filter_map(|push| match push {
            ServerFrame::Welcome(w) if w.conv == conv => Some("welcome".to_owned()),
            ServerFrame::Message(m) if m.conv == conv => Some(format!("seq {}", m.seq)),
            _ => None,
        })
        .collect();
    assert_eq!(order.first().map(String::as_str), Some("welcome"), "{order:?}");
    assert_eq!(order.iter().filter(|o| o.starts_with("seq")).count(), 2, "{order:?}");
}

/// Found by `anytime-sim` (seed 2, step 84): a member removed and added back, whose session
/// handles both pushes late, hears that it is a member (not "removed", after which its client
/// would drop the group it is about to rejoin) and gets its new Welcome before what follows.
#[tokio::test]
async fn a_member_removed_and_added_back_meanwhile_hears_the_current_state_welcome_first() {
    let core = core(FakeEnv::new(6));
    let (alice, bob) = (register(&core, "alice").await, register(&core, "bob").await);
    let mut a = Conn::authenticated(&core, &alice.token).await;
    let mut b = Conn::authenticated(&core, &bob.token).await;
    let conv = match a.request(frame::CreateGroup { name: "g".into(), members: vec![bob.user_id] }.into()).await {
        ServerFrame::ConversationInfo(info) => info.conv,
        other => panic!("{other:?}"),
    };
    b.pump().await;
    b.pushes.clear();
    let removed = a.request(frame::RemoveMember { conv, user: bob.user_id }.into()).await;
    assert!(matches!(removed, ServerFrame::Done(_)), "{removed:?}");
    let added = a.request(frame::AddMembers { conv, users: vec![bob.user_id] }.into()).await;
    assert!(matches!(added, ServerFrame::ConversationInfo(_)), "{added:?}");
    let welcome = frame::WelcomeOut { devices: vec![bob.device_id], payload: b"welcome".to_vec() };
    let commit = frame::Commit { conv, epoch: 0, msg_id: MsgId([1; 16]), commit: vec![1], welcome: Some(welcome) };
    assert!(matches!(a.request(commit.into()).await, ServerFrame::Committed(_)));
    b.pump().await;
    let order: Vec<String> = b
        .pushes
        .iter()
        .filter_map(|push| match push {
            ServerFrame::Welcome(w) if w.conv == conv => Some("welcome".to_owned()),
            ServerFrame::Message(m) if m.conv == conv => Some(format!("seq {}", m.seq)),
            ServerFrame::ConversationChanged(c) if c.conv == conv => Some(format!("removed {}", c.removed)),
            _ => None,
        })
        .collect();
    assert!(!order.contains(&"removed true".to_owned()), "{order:?}");
    assert_eq!(order.first().map(String::as_str), Some("welcome"), "{order:?}");
}
