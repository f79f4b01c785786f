//! Web Push: a device without an open connection is woken through its registered push endpoint
//! with an empty, VAPID-signed POST (the server cannot read the message, so it sends nothing of
//! it); an online device is not; a burst wakes once; bad endpoints and tokens are refused.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use anytime_proto::{frame, ServerFrame};

use crate::support::{create_direct, send, Harness};

/// One request as the fake push service saw it.
#[derive(Debug)]
struct Seen {
    path: String,
    headers: Vec<(String, String)>,
    body_len: usize,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 push service on loopback: answers 201 and reports each request.
async fn fake_push_service() -> (u16, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buffer.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&buffer).into_owned();
                let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
                let mut lines = head.lines();
                let path = lines.next().and_then(|l| l.split_whitespace().nth(1)).unwrap_or_default().to_owned();
                let headers = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                    .collect();
                let _ = socket.write_all(b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n").await;
                let _ = tx.send(Seen { path, headers, body_len: body.len() });
            });
        }
    });
    (port, rx)
}

async fn set_endpoint(base: &str, token: &str, endpoint: Option<&str>) -> reqwest::StatusCode {
    reqwest::Client::new()
        .post(format!("{base}/v1/push/endpoint"))
        .bearer_auth(token)
        .json(&serde_json::json!({ "endpoint": endpoint }))
        .send()
        .await
        .expect("request")
        .status()
}

#[tokio::test]
async fn an_offline_device_is_woken_once_without_content_and_an_online_one_not_at_all() {
    let (port, mut pushes) = fake_push_service().await;
    let service = format!("http://127.0.0.1:{port}");
    let h = Harness::start_with(&["--push-endpoint-prefix", &format!("{service}/")]);
    let alice = h.register("alice").await;
    let bob = h.register("bob").await;

    let key: serde_json::Value =
        reqwest::get(format!("{}/v1/push/key", h.base())).await.expect("key").json().await.expect("json");
    let key = URL_SAFE_NO_PAD.decode(key["public_key"].as_str().expect("public_key")).expect("base64url");
    let verifying = VerifyingKey::from_sec1_bytes(&key).expect("an uncompressed P-256 point");

    // Endpoints off the push services, and unknown tokens, are refused.
    let endpoint = format!("{service}/push/bob");
    assert_eq!(set_endpoint(&h.base(), &bob.token, Some("https://evil.example/x")).await, 400);
    assert_eq!(set_endpoint(&h.base(), "not-a-token", Some(&endpoint)).await, 401);
    assert_eq!(set_endpoint(&h.base(), &bob.token, Some(&endpoint)).await, 204);

    let mut a = h.connect(&alice).await;
    let b = h.connect(&bob).await;
    let conv = create_direct(&mut a, bob.user_id).await;

    // Bob online: no push.
    send(&mut a, conv, b"while bob is here").await;
    assert!(tokio::time::timeout(Duration::from_millis(800), pushes.recv()).await.is_err(), "online: no push");

    // Bob offline: a silent send (a receipt, an edit) wakes nobody…
    b.close().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let silent = frame::SendSilent { conv, msg_id: anytime_client_tokio::msg_id(), payload: b"a receipt".to_vec() };
    match a.request(silent.into()).await.expect("answer") {
        ServerFrame::Sent(sent) => assert!(!sent.duplicate),
        other => panic!("SendSilent answered {other:?}"),
    }
    assert!(tokio::time::timeout(Duration::from_millis(800), pushes.recv()).await.is_err(), "silent: no push");
    // …a message wakes with one push, empty, VAPID-signed for the push service's origin.
    send(&mut a, conv, b"while bob is away").await;
    let seen = tokio::time::timeout(Duration::from_secs(10), pushes.recv()).await.expect("a push").expect("open");
    assert_eq!(seen.path, "/push/bob");
    assert_eq!(seen.body_len, 0, "no content in a push");
    assert_eq!(seen.header("ttl"), Some("86400"));
    let auth = seen.header("authorization").expect("authorization");
    let (jwt, k) = auth.strip_prefix("vapid t=").and_then(|r| r.split_once(", k=")).expect("vapid t=…, k=…");
    assert_eq!(URL_SAFE_NO_PAD.decode(k).expect("k"), key);
    let (signed, signature) = jwt.rsplit_once('.').expect("jwt");
    let signature = Signature::from_slice(&URL_SAFE_NO_PAD.decode(signature).expect("sig")).expect("64 bytes");
    verifying.verify(signed.as_bytes(), &signature).expect("signed with the server's VAPID key");
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(signed.split('.').nth(1).expect("claims")).expect("base64url"))
            .expect("json");
    assert_eq!(claims["aud"], service.as_str());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let exp = claims["exp"].as_u64().expect("exp");
    assert!(exp > now && exp <= now + 24 * 3600, "exp within 24 h (RFC 8292)");

    // A burst wakes once.
    send(&mut a, conv, b"and again").await;
    send(&mut a, conv, b"and again, again").await;
    assert!(tokio::time::timeout(Duration::from_millis(800), pushes.recv()).await.is_err(), "one push per burst");

    // The device can stop pushes.
    assert_eq!(set_endpoint(&h.base(), &bob.token, None).await, 204);
}
