//! Several nodes behind one address space: three `anytime serve` processes share one PostgreSQL
//! database and one NATS subject prefix. Runs when ANYTIME_E2E_DATABASE and ANYTIME_E2E_NATS are
//! set (CI sets both); each run gets its own database and prefix.

use std::collections::HashMap;
use std::path::Path;

use anytime_proto::frame;
use anytime_proto::{MsgId, ServerFrame};
use anytime_testkit::{msg_id, RawClient, ServerOptions, ServerProcess, TestDatabase};

use crate::support::*;

pub(crate) struct Cluster {
    nodes: Vec<ServerProcess>,
    _database: TestDatabase,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// These tests are `#[ignore]`d unless asked for (`-- --include-ignored`); asked for without
    /// PostgreSQL and NATS, they fail and say what to set.
    fn start(n: usize) -> Cluster {
        Cluster::start_with(n, &[])
    }

    /// `start` with more arguments for every node.
    pub(crate) fn start_with(n: usize, args: &[&str]) -> Cluster {
        let (Ok(admin), Ok(nats)) = (std::env::var("ANYTIME_E2E_DATABASE"), std::env::var("ANYTIME_E2E_NATS")) else {
            panic!("set ANYTIME_E2E_DATABASE (postgres://…) and ANYTIME_E2E_NATS (nats://…) to run the cluster tests");
        };
        let database = TestDatabase::create(&admin).expect("test database");
        let prefix = format!("anytime-test-{}", u64::from_le_bytes(msg_id().0[..8].try_into().unwrap()));
        let dir = tempfile::tempdir().unwrap();
        let nodes = (0..n)
            .map(|i| {
                let mut options = ServerOptions::default();
                options.extra_args.extend(
                    ["--database", &database.url, "--nats", &nats, "--nats-prefix", &prefix]
                        .iter()
                        .map(|s| s.to_string()),
                );
                options.extra_args.extend(args.iter().map(|s| s.to_string()));
                let work = dir.path().join(format!("node{i}"));
                std::fs::create_dir_all(&work).unwrap();
                ServerProcess::start(Path::new(env!("CARGO_BIN_EXE_anytime")), &work, options).expect("node starts")
            })
            .collect();
        Cluster { nodes, _database: database, _dir: dir }
    }

    pub(crate) fn base(&self, node: usize) -> String {
        self.nodes[node].base_url()
    }

    async fn connect(&self, node: usize, token: &str) -> RawClient {
        RawClient::connect(&self.nodes[node].ws_url(), token).await.expect("connect")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and NATS: ANYTIME_E2E_DATABASE and ANYTIME_E2E_NATS, then -- --include-ignored"]
async fn users_on_three_nodes_chat_in_a_group_and_every_device_gets_everything_once_in_order() {
    let c = Cluster::start(3);
    let mut sessions = Vec::new();
    for (i, name) in ["ann", "ben", "cat"].iter().enumerate() {
        let first = anytime_testkit::register(&c.base(i), name).await.unwrap();
        sessions.push(first);
    }
    let mut owner = c.connect(0, &sessions[0].token).await;
    let conv = create_group(&mut owner, "cluster", &[sessions[1].user_id, sessions[2].user_id]).await;
    owner.close().await;
    const PER_DEVICE: usize = 30;
    let mut tasks = Vec::new();
    for (i, session) in sessions.iter().enumerate() {
        // Each user talks to a different node.
        let mut client = c.connect(i, &session.token).await;
        tasks.push(tokio::spawn(async move {
            for m in 0..PER_DEVICE {
                send(&mut client, conv, format!("n{i}-m{m}").as_bytes()).await;
            }
            let got = receive(&mut client, conv, PER_DEVICE * 3).await;
            assert_no_more_messages(&mut client, conv).await;
            got
        }));
    }
    let mut orders = Vec::new();
    for task in tasks {
        let got = task.await.unwrap();
        assert!(got.iter().map(|m| m.seq).eq(1..=(PER_DEVICE * 3) as u64), "dense, ordered, no duplicates");
        orders.push(got.iter().map(|m| m.msg_id).collect::<Vec<_>>());
    }
    assert!(orders.windows(2).all(|w| w[0] == w[1]), "all nodes' devices saw one order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and NATS: ANYTIME_E2E_DATABASE and ANYTIME_E2E_NATS, then -- --include-ignored"]
async fn a_killed_node_loses_nothing_acknowledged_its_clients_move_on_and_it_rejoins() {
    let mut c = Cluster::start(3);
    let alice = anytime_testkit::register(&c.base(0), "alice").await.unwrap();
    let bob = anytime_testkit::register(&c.base(0), "bob").await.unwrap();
    let mut a = c.connect(1, &alice.token).await;
    let conv = create_direct(&mut a, bob.user_id).await;
    let mut b = c.connect(2, &bob.token).await;
    const TOTAL: usize = 600;
    let ids: Vec<MsgId> = (0..TOTAL).map(|_| msg_id()).collect();
    let mut acked: HashMap<usize, u64> = HashMap::new();
    let mut in_flight = Vec::new();
    for (i, id) in ids.iter().enumerate().take(TOTAL / 2) {
        in_flight.push((
            i,
            a.send(frame::Send { conv, msg_id: *id, payload: format!("m{i}").into_bytes() }.into()).await.unwrap(),
        ));
        if in_flight.len() == 50 {
            for (i, request) in in_flight.drain(..) {
                if let ServerFrame::Sent(sent) = a.answer(request).await.unwrap() {
                    acked.insert(i, sent.seq);
                }
            }
        }
    }
    // Node 1 dies with sends in flight; alice's outbox moves to node 0 and resends everything.
    c.nodes[1].kill().unwrap();
    let mut a = c.connect(0, &alice.token).await;
    for (i, id) in ids.iter().enumerate() {
        match a.request(frame::Send { conv, msg_id: *id, payload: format!("m{i}").into_bytes() }.into()).await.unwrap()
        {
            ServerFrame::Sent(sent) => {
                if let Some(seq) = acked.get(&i) {
                    assert!(sent.duplicate && sent.seq == *seq, "acknowledged message {i} changed");
                }
            }
            other => panic!("{other:?}"),
        }
    }
    let got = receive(&mut b, conv, TOTAL).await;
    assert!(got.iter().map(|m| m.seq).eq(1..=TOTAL as u64), "every message once, in order, across the failover");
    assert_no_more_messages(&mut b, conv).await;
    // The node comes back and serves again.
    c.nodes[1].restart().unwrap();
    let mut again = c.connect(1, &alice.token).await;
    send(&mut again, conv, b"node 1 is back").await;
    assert_eq!(receive(&mut b, conv, 1).await[0].payload, b"node 1 is back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and NATS: ANYTIME_E2E_DATABASE and ANYTIME_E2E_NATS, then -- --include-ignored"]
async fn two_nodes_race_on_one_commit_and_exactly_one_wins() {
    let c = Cluster::start(2);
    let ann = anytime_testkit::register(&c.base(0), "ann").await.unwrap();
    let ben = anytime_testkit::register(&c.base(1), "ben").await.unwrap();
    let mut a = c.connect(0, &ann.token).await;
    let conv = create_group(&mut a, "race", &[ben.user_id]).await;
    let mut b = c.connect(1, &ben.token).await;
    for round in 0..5u64 {
        let commit = |id: u8| frame::Commit { conv, epoch: round, msg_id: msg_id(), commit: vec![id], welcome: None };
        let (x, y) = tokio::join!(a.request(commit(1).into()), b.request(commit(2).into()));
        let answers = [x.unwrap(), y.unwrap()];
        let wins = answers.iter().filter(|f| matches!(f, ServerFrame::Committed(_))).count();
        let losses = answers
            .iter()
            .filter(|f| matches!(f, ServerFrame::Error(e) if e.code == anytime_proto::ErrorCode::EpochMismatch && e.epoch == Some(round + 1)))
            .count();
        assert_eq!((wins, losses), (1, 1), "round {round}: {answers:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and NATS: ANYTIME_E2E_DATABASE and ANYTIME_E2E_NATS, then -- --include-ignored"]
async fn presence_and_typing_cross_nodes() {
    // Goal: a contact on another node sees a user come online, type, and go offline.
    let c = Cluster::start(2);
    let alice = anytime_testkit::register(&c.base(0), "alice").await.unwrap();
    let bob = anytime_testkit::register(&c.base(1), "bob").await.unwrap();
    let mut a = c.connect(0, &alice.token).await;
    let conv = create_direct(&mut a, bob.user_id).await;
    match expect_ok(&mut a, frame::SubscribePresence { users: vec![bob.user_id] }.into()).await {
        ServerFrame::PresenceList(list) => assert!(list.presence.iter().all(|p| !p.online)),
        other => panic!("{other:?}"),
    }
    let presence_of = |online: bool| {
        move |push: &ServerFrame| match push {
            ServerFrame::PresenceEvent(e) if e.online == online => Some(()),
            _ => None,
        }
    };
    let mut b = c.connect(1, &bob.token).await;
    a.wait_for(presence_of(true)).await.expect("online seen from the other node");
    b.send(frame::Typing { conv }.into()).await.unwrap();
    a.wait_for(|p| matches!(p, ServerFrame::TypingEvent(t) if t.user == bob.user_id).then_some(())).await.unwrap();
    b.close().await;
    a.wait_for(presence_of(false)).await.expect("offline seen from the other node");
}
