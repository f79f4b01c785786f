//! Shared setup: a server per test, accounts, connections, and database snapshots.

use std::collections::BTreeMap;
use std::path::Path;

use anytime_proto::frame::{self, Message};
use anytime_proto::http::SessionResponse;
use anytime_proto::{ConvId, ServerFrame, UserId};
use anytime_testkit::{RawClient, ServerOptions, ServerProcess};
use tempfile::TempDir;

pub struct Harness {
    pub server: ServerProcess,
    /// Set when the suite runs on PostgreSQL (`ANYTIME_E2E_DATABASE`); dropped after the server.
    pub database: Option<anytime_testkit::TestDatabase>,
    _dir: TempDir,
}

impl Harness {
    pub fn start() -> Harness {
        Harness::start_with(&[])
    }

    /// Extra `anytime serve` flags (rate limits stay off unless a test asks for them).
    pub fn start_with(args: &[&str]) -> Harness {
        let mut options = ServerOptions::default();
        options.extra_args.extend(args.iter().map(|a| a.to_string()));
        Harness::start_with_options(options)
    }

    /// Full control over the server's flags (e.g. rate limits on) and process limits.
    pub fn start_with_options(mut options: ServerOptions) -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        // The same suite runs on embedded SQLite (default) and on PostgreSQL when
        // ANYTIME_E2E_DATABASE names a server (CI sets it).
        let database = std::env::var("ANYTIME_E2E_DATABASE")
            .ok()
            .map(|admin| anytime_testkit::TestDatabase::create(&admin).expect("create a test database"));
        if let Some(db) = &database {
            options.extra_args.extend(["--database".to_owned(), db.url.clone()]);
        }
        let server =
            ServerProcess::start(Path::new(env!("CARGO_BIN_EXE_anytime")), dir.path(), options).expect("server starts");
        Harness { server, database, _dir: dir }
    }

    /// A scratch directory that lives as long as the harness.
    pub fn path(&self) -> &Path {
        self._dir.path()
    }

    pub fn base(&self) -> String {
        self.server.base_url()
    }

    pub async fn register(&self, name: &str) -> SessionResponse {
        anytime_testkit::register(&self.base(), name).await.expect("register")
    }

    /// Logs in a new device (pending, with a link code) without approving it.
    pub async fn login(&self, name: &str, device: &str) -> SessionResponse {
        anytime_testkit::login(&self.base(), name, device).await.expect("login")
    }

    /// Logs in a new device and approves it from `first`, an approved device of the account.
    pub async fn link(&self, first: &SessionResponse, name: &str, device: &str) -> SessionResponse {
        let second = self.login(name, device).await;
        let code = second.link_code.clone().expect("a second device gets a link code");
        let mut approver = self.connect(first).await;
        expect_ok(&mut approver, frame::ApproveDevice { code }.into()).await;
        approver.close().await;
        second
    }

    pub async fn connect(&self, session: &SessionResponse) -> RawClient {
        RawClient::connect(&self.server.ws_url(), &session.token).await.expect("connect")
    }

    /// Every row of every table, as text, for "the database is unchanged" checks.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<String>> {
        match &self.database {
            Some(db) => db.snapshot().expect("PostgreSQL snapshot"),
            None => snapshot(&self.server.database_path()),
        }
    }
}

pub fn snapshot(db: &Path) -> BTreeMap<String, Vec<String>> {
    let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open db");
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut out = BTreeMap::new();
    for table in tables {
        let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
        let columns = stmt.column_count();
        let mut rows: Vec<String> = stmt
            .query_map([], |row| {
                let mut text = String::new();
                for i in 0..columns {
                    let value: rusqlite::types::Value = row.get(i)?;
                    text.push_str(&format!("{value:?}|"));
                }
                Ok(text)
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        rows.sort();
        out.insert(table, rows);
    }
    out
}

pub async fn expect_ok(client: &mut RawClient, request: anytime_proto::ClientFrame) -> ServerFrame {
    let answer = client.request(request).await.expect("answer");
    if let ServerFrame::Error(error) = &answer {
        panic!("request failed: {error:?}");
    }
    answer
}

pub async fn create_group(client: &mut RawClient, name: &str, members: &[UserId]) -> ConvId {
    let request = frame::CreateGroup { name: name.into(), members: members.to_vec() };
    match expect_ok(client, request.into()).await {
        ServerFrame::ConversationInfo(info) => info.conv,
        other => panic!("unexpected answer {other:?}"),
    }
}

pub async fn create_direct(client: &mut RawClient, peer: UserId) -> ConvId {
    match expect_ok(client, frame::CreateDirect { peer }.into()).await {
        ServerFrame::ConversationInfo(info) => info.conv,
        other => panic!("unexpected answer {other:?}"),
    }
}

pub async fn send(client: &mut RawClient, conv: ConvId, payload: &[u8]) -> u64 {
    let request = frame::Send { conv, msg_id: anytime_testkit::msg_id(), payload: payload.to_vec() };
    match expect_ok(client, request.into()).await {
        ServerFrame::Sent(sent) => sent.seq,
        other => panic!("unexpected answer {other:?}"),
    }
}

/// Waits for `n` messages of `conv`, acknowledging each, skipping other pushes.
pub async fn receive(client: &mut RawClient, conv: ConvId, n: usize) -> Vec<Message> {
    let mut messages = Vec::with_capacity(n);
    while messages.len() < n {
        let message = client
            .wait_for(|push| match push {
                ServerFrame::Message(m) if m.conv == conv => Some(m.clone()),
                _ => None,
            })
            .await
            .unwrap_or_else(|e| panic!("after {} of {n} messages: {e:#}", messages.len()));
        client.send(frame::Ack { conv, seq: message.seq }.into()).await.expect("ack");
        messages.push(message);
    }
    messages
}

/// Asserts no further message of `conv` arrives within a short while.
pub async fn assert_no_more_messages(client: &mut RawClient, conv: ConvId) {
    let wait = std::time::Duration::from_millis(500);
    while let Some(push) = client.next_push_within(wait).await.expect("read") {
        if let ServerFrame::Message(m) = push {
            assert_ne!(m.conv, conv, "unexpected extra message seq {}", m.seq);
        }
    }
}
