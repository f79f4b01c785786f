//! Bad input, table-driven: each row gets its documented error code, leaves the database
//! exactly as it was, and the server keeps serving everyone.

use std::time::Duration;

use anytime_proto::frame;
use anytime_proto::limits::{FRAME_BYTES_MAX, MESSAGE_BYTES_MAX};
use anytime_proto::{encode_client, ClientFrame, ConvId, ErrorCode, ServerFrame, UserId};
use anytime_testkit::{msg_id, RawClient};

use crate::support::*;

/// Who sends a row's frame.
#[derive(Clone, Copy, Debug)]
enum Who {
    Alice,
    Bob,
    Carol,
    Unauthenticated,
}

enum Input {
    Frame(ClientFrame),
    Bytes(Vec<u8>),
    Text(&'static str),
}

struct Row {
    name: &'static str,
    who: Who,
    input: Input,
    expect: ErrorCode,
}

fn raw(version: u8, kind: u16, request_id: u32, body: &[u8]) -> Vec<u8> {
    let mut bytes = vec![version];
    bytes.extend_from_slice(&kind.to_be_bytes());
    bytes.extend_from_slice(&request_id.to_be_bytes());
    bytes.extend_from_slice(body);
    bytes
}

fn rows(
    group: ConvId,
    other_group: ConvId,
    direct_with_dave: ConvId,
    dave: UserId,
    replayed: frame::Send,
    epoch_now: u64,
) -> Vec<Row> {
    let send = |conv, payload: Vec<u8>| ClientFrame::Send(frame::Send { conv, msg_id: msg_id(), payload });
    let mut oversized = raw(1, 18, 900, &[]);
    oversized.resize(FRAME_BYTES_MAX as usize + 16, 0);
    let mut reused_elsewhere = replayed.clone();
    reused_elsewhere.conv = other_group;
    vec![
        Row {
            name: "truncated header",
            who: Who::Alice,
            input: Input::Bytes(vec![1, 0]),
            expect: ErrorCode::MalformedFrame,
        },
        Row {
            name: "malformed body",
            who: Who::Alice,
            input: Input::Bytes(raw(1, 18, 901, &[0xff, 0xff, 0xff])),
            expect: ErrorCode::MalformedFrame,
        },
        Row {
            name: "text instead of binary",
            who: Who::Alice,
            input: Input::Text("{\"hello\":1}"),
            expect: ErrorCode::MalformedFrame,
        },
        Row {
            name: "unknown frame type",
            who: Who::Alice,
            input: Input::Bytes(raw(1, 999, 902, &[])),
            expect: ErrorCode::UnknownFrameType,
        },
        Row {
            name: "unsupported version",
            who: Who::Alice,
            input: Input::Bytes(raw(7, 18, 903, &[])),
            expect: ErrorCode::UnsupportedVersion,
        },
        Row {
            name: "oversized frame",
            who: Who::Alice,
            input: Input::Bytes(oversized),
            expect: ErrorCode::FrameTooLarge,
        },
        Row {
            name: "oversized payload",
            who: Who::Alice,
            input: Input::Frame(send(group, vec![7; MESSAGE_BYTES_MAX as usize + 1])),
            expect: ErrorCode::PayloadTooLarge,
        },
        Row {
            name: "unknown conversation",
            who: Who::Alice,
            input: Input::Frame(send(ConvId(0xdead_beef), b"x".to_vec())),
            expect: ErrorCode::ConversationNotFound,
        },
        Row {
            name: "another user's conversation: send",
            who: Who::Carol,
            input: Input::Frame(send(group, b"x".to_vec())),
            expect: ErrorCode::ConversationNotFound,
        },
        Row {
            name: "another user's conversation: read",
            who: Who::Carol,
            input: Input::Frame(frame::GetConversation { conv: group }.into()),
            expect: ErrorCode::ConversationNotFound,
        },
        Row {
            name: "another user's conversation: commit",
            who: Who::Carol,
            input: Input::Frame(
                frame::Commit { conv: group, epoch: epoch_now, msg_id: msg_id(), commit: vec![1], welcome: None }
                    .into(),
            ),
            expect: ErrorCode::ConversationNotFound,
        },
        Row {
            name: "another user's conversation: join as admin action",
            who: Who::Carol,
            input: Input::Frame(frame::AddMembers { conv: group, users: vec![] }.into()),
            expect: ErrorCode::ConversationNotFound,
        },
        Row {
            name: "non-admin renames",
            who: Who::Bob,
            input: Input::Frame(frame::RenameGroup { conv: group, name: "mine".into() }.into()),
            expect: ErrorCode::NotAdmin,
        },
        Row {
            name: "non-admin removes the admin",
            who: Who::Bob,
            input: Input::Frame(frame::RemoveMember { conv: group, user: UserId(1) }.into()),
            expect: ErrorCode::NotAdmin,
        },
        Row {
            name: "non-admin creates an invite",
            who: Who::Bob,
            input: Input::Frame(frame::CreateInvite { conv: group, ttl_secs: 60, max_uses: 1 }.into()),
            expect: ErrorCode::NotAdmin,
        },
        Row {
            name: "non-admin promotes themself",
            who: Who::Bob,
            input: Input::Frame(frame::SetAdmin { conv: group, user: UserId(2), admin: true }.into()),
            expect: ErrorCode::NotAdmin,
        },
        Row {
            name: "stale epoch commit",
            who: Who::Alice,
            input: Input::Frame(
                frame::Commit { conv: group, epoch: epoch_now + 5, msg_id: msg_id(), commit: vec![1], welcome: None }
                    .into(),
            ),
            expect: ErrorCode::EpochMismatch,
        },
        Row {
            name: "replayed message id in another conversation",
            who: Who::Alice,
            input: Input::Frame(reused_elsewhere.into()),
            expect: ErrorCode::MessageIdReused,
        },
        Row {
            name: "blocked by the recipient: send",
            who: Who::Alice,
            input: Input::Frame(send(direct_with_dave, b"hi".to_vec())),
            expect: ErrorCode::Blocked,
        },
        Row {
            name: "blocked by the recipient: add to group",
            who: Who::Alice,
            input: Input::Frame(frame::AddMembers { conv: group, users: vec![dave] }.into()),
            expect: ErrorCode::Blocked,
        },
        Row {
            name: "blocked by the recipient: claim key packages",
            who: Who::Alice,
            input: Input::Frame(frame::ClaimKeyPackages { user: dave }.into()),
            expect: ErrorCode::Blocked,
        },
        Row {
            name: "ack beyond what was delivered",
            who: Who::Bob,
            input: Input::Frame(frame::Ack { conv: group, seq: 1_000 }.into()),
            expect: ErrorCode::InvalidArgument,
        },
        Row {
            name: "unknown invite",
            who: Who::Carol,
            input: Input::Frame(frame::JoinInvite { code: "nope".into() }.into()),
            expect: ErrorCode::InviteNotFound,
        },
        Row {
            name: "unknown user",
            who: Who::Alice,
            input: Input::Frame(frame::LookupUser { username: "nobody".into() }.into()),
            expect: ErrorCode::UserNotFound,
        },
        Row {
            name: "revoke someone else's device",
            who: Who::Alice,
            input: Input::Frame(frame::RevokeDevice { device: anytime_proto::DeviceId(42) }.into()),
            expect: ErrorCode::DeviceNotFound,
        },
        Row {
            name: "welcome to a non-member device",
            who: Who::Alice,
            input: Input::Frame(
                frame::Commit {
                    conv: group,
                    epoch: epoch_now,
                    msg_id: msg_id(),
                    commit: vec![1],
                    welcome: Some(frame::WelcomeOut { devices: vec![anytime_proto::DeviceId(42)], payload: vec![1] }),
                }
                .into(),
            ),
            expect: ErrorCode::InvalidArgument,
        },
        Row {
            name: "frame before Hello",
            who: Who::Unauthenticated,
            input: Input::Frame(frame::ListConversations {}.into()),
            expect: ErrorCode::NotAuthenticated,
        },
        Row {
            name: "invalid token",
            who: Who::Unauthenticated,
            input: Input::Frame(frame::Hello { token: "at1.forged".into() }.into()),
            expect: ErrorCode::InvalidToken,
        },
        Row {
            name: "second Hello",
            who: Who::Alice,
            input: Input::Frame(frame::Hello { token: "at1.x".into() }.into()),
            expect: ErrorCode::AlreadyAuthenticated,
        },
    ]
}

/// An error sent as a push (request id 0, when the header was unreadable), skipping the
/// unrelated pushes queued before it (key-package warnings, conversation changes).
async fn next_error(client: &mut RawClient) -> anyhow::Result<ServerFrame> {
    client.wait_for(|push| matches!(push, ServerFrame::Error(_)).then(|| push.clone())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_its_error_code_and_changes_nothing() {
    let h = Harness::start_with(&["--gc-interval-secs", "3600"]);
    let alice = h.register("alice").await;
    let bob = h.register("bob").await;
    let carol = h.register("carol").await;
    let dave = h.register("dave").await;
    let mut a = h.connect(&alice).await;
    let mut b = h.connect(&bob).await;
    let mut c = h.connect(&carol).await;
    let mut d = h.connect(&dave).await;
    let group = create_group(&mut a, "team", &[bob.user_id]).await;
    let direct_with_dave = create_direct(&mut a, dave.user_id).await;
    let other_group = create_group(&mut a, "other", &[]).await;
    expect_ok(&mut d, frame::UploadKeyPackages { packages: vec![b"kp".to_vec()], last_resort: None }.into()).await;
    expect_ok(&mut d, frame::Block { user: alice.user_id }.into()).await;
    let replayed = frame::Send { conv: group, msg_id: msg_id(), payload: b"original".to_vec() };
    let first_seq = match expect_ok(&mut a, replayed.clone().into()).await {
        ServerFrame::Sent(sent) => sent.seq,
        other => panic!("{other:?}"),
    };
    // Let every side effect of the setup (acks of nothing, last-seen) settle.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = h.snapshot();

    // A replay of the same id in the same conversation is not an error: same seq, nothing new.
    match a.request(replayed.clone().into()).await.unwrap() {
        ServerFrame::Sent(sent) => {
            assert!(sent.duplicate);
            assert_eq!(sent.seq, first_seq);
        }
        other => panic!("replay answered {other:?}"),
    }
    assert_eq!(h.snapshot(), before, "replayed send changed the database");

    let mut unauthenticated = RawClient::open(&h.server.ws_url()).await.unwrap();
    for (index, row) in rows(group, other_group, direct_with_dave, dave.user_id, replayed, 0).into_iter().enumerate() {
        let client = match row.who {
            Who::Alice => &mut a,
            Who::Bob => &mut b,
            Who::Carol => &mut c,
            Who::Unauthenticated => &mut unauthenticated,
        };
        let answer = match row.input {
            Input::Frame(frame) => client.request(frame).await,
            Input::Bytes(bytes) => {
                // Request id as written in the raw header, or 0 when the header is unreadable.
                let id =
                    if bytes.len() >= 7 { u32::from_be_bytes([bytes[3], bytes[4], bytes[5], bytes[6]]) } else { 0 };
                client.send_bytes(bytes).await.unwrap();
                if id == 0 {
                    next_error(client).await
                } else {
                    client.answer(id).await
                }
            }
            Input::Text(text) => {
                client.send_text(text).await.unwrap();
                next_error(client).await
            }
        };
        let answer = answer.unwrap_or_else(|e| panic!("row {index} ({}): no answer: {e:#}", row.name));
        match answer {
            ServerFrame::Error(error) => {
                assert_eq!(error.code, row.expect, "row {index} ({}): wrong code", row.name);
                if row.expect == ErrorCode::EpochMismatch {
                    assert_eq!(error.epoch, Some(0), "epoch_mismatch carries the current epoch");
                }
            }
            other => panic!("row {index} ({}): expected {:?}, got {other:?}", row.name, row.expect),
        }
        assert_eq!(h.snapshot(), before, "row {index} ({}) changed the database", row.name);
    }

    // Token problems that need their own sessions: a revoked device's token.
    let second = h.login("carol", "second").await;
    expect_ok(&mut c, frame::RevokeDevice { device: second.device_id }.into()).await;
    let mut fresh = RawClient::open(&h.server.ws_url()).await.unwrap();
    match fresh.request(frame::Hello { token: second.token }.into()).await.unwrap() {
        ServerFrame::Error(error) => assert_eq!(error.code, ErrorCode::InvalidToken),
        other => panic!("{other:?}"),
    }

    // Everyone is still served: a real message still flows from alice to bob.
    let seq = send(&mut a, group, b"still alive").await;
    let got = receive(&mut b, group, 2).await;
    assert_eq!(got[1].seq, seq);
    assert_eq!(got[1].payload, b"still alive");
    let health = reqwest::get(format!("{}/healthz", h.base())).await.unwrap();
    assert!(health.status().is_success());
    // And the frame above the WebSocket cap closes only that socket.
    let mut huge = RawClient::connect(&h.server.ws_url(), &bob.token).await.unwrap();
    let mut bytes = encode_client(1, &frame::ListConversations {}.into());
    bytes.resize(anytime_proto::limits::WS_MESSAGE_BYTES_MAX as usize + 1, 0);
    let _ = huge.send_bytes(bytes).await;
    assert!(huge.closed_within(Duration::from_secs(5)).await);
    send(&mut a, group, b"after the huge frame").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tokens_are_refused_without_changing_anything() {
    // Goal: a token past its lifetime gets token_expired; nothing is written.
    let h = Harness::start_with(&["--session-ttl-secs", "1", "--gc-interval-secs", "3600"]);
    let alice = h.register("alice").await;
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let before = h.snapshot();
    let mut client = RawClient::open(&h.server.ws_url()).await.unwrap();
    match client.request(frame::Hello { token: alice.token }.into()).await.unwrap() {
        ServerFrame::Error(error) => assert_eq!(error.code, ErrorCode::TokenExpired),
        other => panic!("{other:?}"),
    }
    assert_eq!(h.snapshot(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_rejects_bad_requests_with_codes_and_rate_limits_logins() {
    // Goal: JSON errors carry stable codes; repeated logins hit the per-username limit.
    let dir = tempfile::tempdir().unwrap();
    let options =
        anytime_testkit::ServerOptions { extra_args: vec![], log_filter: "info".into(), ..Default::default() };
    let server =
        anytime_testkit::ServerProcess::start(std::path::Path::new(env!("CARGO_BIN_EXE_anytime")), dir.path(), options)
            .unwrap();
    let base = server.base_url();
    let http = reqwest::Client::new();
    let post = |path: &str, body: &str| http.post(format!("{base}{path}")).body(body.to_owned()).send();
    let code = |response: reqwest::Response| async move {
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap();
        (status, body["code"].as_str().unwrap().to_owned())
    };
    assert_eq!(code(post("/v1/register", "not json").await.unwrap()).await, (400, "invalid_argument".into()));
    let huge = "x".repeat(anytime_proto::limits::HTTP_BODY_BYTES_MAX as usize + 1);
    assert_eq!(code(post("/v1/register", &huge).await.unwrap()).await, (413, "payload_too_large".into()));
    let weak = r#"{"username":"zed","password":"short","device_name":"d"}"#;
    assert_eq!(code(post("/v1/register", weak).await.unwrap()).await, (400, "weak_password".into()));
    let bad_name = r#"{"username":"Zed Z","password":"long enough","device_name":"d"}"#;
    assert_eq!(code(post("/v1/register", bad_name).await.unwrap()).await, (400, "invalid_username".into()));
    anytime_testkit::register(&base, "zed").await.unwrap();
    let wrong = r#"{"username":"zed","password":"wrong password","device_name":"d"}"#;
    let mut codes = Vec::new();
    for _ in 0..12 {
        codes.push(code(post("/v1/login", wrong).await.unwrap()).await);
    }
    assert_eq!(codes[0], (401, "invalid_credentials".into()));
    assert_eq!(codes.last().unwrap(), &(429, "rate_limited".into()));
}
