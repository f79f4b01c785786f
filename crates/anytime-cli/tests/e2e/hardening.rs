//! Hardening against resource exhaustion (issue 16), each against a real server process: slow
//! clients, oversized declarations, parallel password hashing, stuck receivers, key-package
//! draining, lockout abuse and look-alike names.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anytime_proto::frame;
use anytime_proto::limits::{HTTP_BODY_TIMEOUT_MS, HTTP_HEADER_TIMEOUT_MS, LOGIN_FREE_FAILURES};
use anytime_proto::{ErrorCode, ServerFrame};
use anytime_testkit::{RawClient, ServerOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

use crate::support::*;

fn loopback(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// Resident memory of a process, MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib / 1024.0
}

/// Samples a process's RSS until stopped; returns the peak.
fn rss_sampler(pid: u32) -> (Arc<AtomicBool>, std::thread::JoinHandle<f64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let sampler = std::thread::spawn(move || {
        let mut peak: f64 = 0.0;
        while !flag.load(Ordering::Acquire) {
            peak = peak.max(rss_mib(pid));
            std::thread::sleep(Duration::from_millis(10));
        }
        peak
    });
    (stop, sampler)
}

/// One value from `/metrics`.
async fn metric(h: &Harness, name: &str) -> u64 {
    let text = reqwest::get(format!("{}/metrics", h.base())).await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing"))
}

#[derive(Clone, Copy)]
enum Slow {
    /// A request line, then one more header line every second, never the blank line.
    Headers,
    /// Complete headers announcing 1,000 bytes, then one byte a second.
    Body,
}

/// Opens a socket from `from` and trickles a request into it; returns how long the server kept
/// it open and what it answered (empty when it just closed).
async fn trickle(server: SocketAddr, from: IpAddr, slow: Slow) -> (Duration, String) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let started = Instant::now();
    let Ok(mut stream) = socket.connect(server).await else { return (started.elapsed(), String::new()) };
    let head = match slow {
        Slow::Headers => "GET /healthz HTTP/1.1\r\nHost: anytime\r\n".to_owned(),
        Slow::Body => "POST /v1/login HTTP/1.1\r\nHost: anytime\r\nContent-Type: application/json\r\n\
                       Content-Length: 1000\r\n\r\n{"
            .to_owned(),
    };
    let mut answer = Vec::new();
    if stream.write_all(head.as_bytes()).await.is_err() {
        return (started.elapsed(), String::new());
    }
    let mut buf = [0u8; 4096];
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            },
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                let piece: &[u8] = match slow { Slow::Headers => b"X-Slow: 1\r\n", Slow::Body => b" " };
                if stream.write_all(piece).await.is_err() {
                    break;
                }
            }
        }
        if started.elapsed() > Duration::from_secs(40) {
            break;
        }
    }
    (started.elapsed(), String::from_utf8_lossy(&answer).into_owned())
}

/// A normal user, meanwhile: health checks every 200 ms, a registration and a WebSocket each
/// second; counts what failed or took longer than 3 s.
async fn normal_user(h: &Harness, until: Instant) -> (u32, u32) {
    let (mut served, mut failed) = (0, 0);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(3)).build().unwrap();
    let mut round = 0;
    while Instant::now() < until {
        round += 1;
        let health = client.get(format!("{}/healthz", h.base())).send().await;
        if health.is_ok_and(|r| r.status().is_success()) {
            served += 1
        } else {
            failed += 1
        }
        if round % 5 == 0 {
            let connected = tokio::time::timeout(Duration::from_secs(3), async {
                let session = h.register(&format!("normal{round}")).await;
                let mut ws = h.connect(&session).await;
                matches!(ws.request(frame::ListConversations {}.into()).await, Ok(ServerFrame::Conversations(_)))
            })
            .await;
            if connected == Ok(true) {
                served += 1
            } else {
                failed += 1
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (served, failed)
}

/// `per_ip` slow sockets of each kind from each of `ips`, while a normal user is served.
async fn slow_clients_against(h: &Harness, ips: &[IpAddr], per_ip: usize) -> Vec<(Duration, String)> {
    let server = h.server.addr;
    let mut slow = Vec::new();
    for &ip in ips {
        for i in 0..per_ip {
            let kind = if i % 2 == 0 { Slow::Headers } else { Slow::Body };
            slow.push(tokio::spawn(trickle(server, ip, kind)));
        }
    }
    let deadline = Duration::from_millis(HTTP_HEADER_TIMEOUT_MS.max(HTTP_BODY_TIMEOUT_MS));
    let (served, failed) = normal_user(h, Instant::now() + deadline + Duration::from_secs(3)).await;
    assert_eq!(failed, 0, "the normal user was refused or kept waiting ({served} served)");
    assert!(served > 20, "{served}");
    let mut results = Vec::new();
    for task in slow {
        results.push(task.await.unwrap());
    }
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn issue_16_slow_headers_and_bodies_are_cut_off_by_their_deadlines_while_a_normal_user_is_served() {
    let h = Harness::start();
    let ips: Vec<IpAddr> = (2..6).map(loopback).collect();
    let results = slow_clients_against(&h, &ips, 50).await;
    let limit = Duration::from_millis(HTTP_HEADER_TIMEOUT_MS.max(HTTP_BODY_TIMEOUT_MS)) + Duration::from_secs(3);
    for (i, (open, answer)) in results.iter().enumerate() {
        assert!(*open < limit, "slow socket {i} stayed open {open:?}");
        if i % 2 == 1 {
            assert!(answer.starts_with("HTTP/1.1 408"), "a slow body is answered 408: {answer:?}");
        }
    }
    assert!(metric(&h, "anytime_sockets_timed_out_total").await >= 100, "the header deadlines are counted");
    let log = std::fs::read_to_string(h.server.log_path()).unwrap();
    assert!(log.contains("open-files limit"), "the server logs its open-files limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn issue_16_near_a_low_open_files_limit_the_oldest_unauthenticated_sockets_are_shed_first() {
    let options = ServerOptions { open_files_limit: Some(256), ..ServerOptions::default() };
    let h = Harness::start_with_options(options);
    // 300 slow sockets from five addresses: more than the 256 files the server may open.
    let ips: Vec<IpAddr> = (2..7).map(loopback).collect();
    let results = slow_clients_against(&h, &ips, 60).await;
    let limit = Duration::from_millis(HTTP_HEADER_TIMEOUT_MS.max(HTTP_BODY_TIMEOUT_MS)) + Duration::from_secs(3);
    assert!(results.iter().all(|(open, _)| *open < limit), "every slow socket was closed in time");
    assert!(metric(&h, "anytime_sockets_shed_total").await > 0, "sockets were shed");
    let log = std::fs::read_to_string(h.server.log_path()).unwrap();
    assert!(log.contains("closing the oldest unauthenticated connections"), "shedding is logged");
    assert!(log.contains("now=256"), "the limit in force is logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_one_address_cannot_hold_thousands_of_unauthenticated_sockets() {
    let h = limited();
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..300 {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(loopback(9), 0)).unwrap();
        let mut stream = socket.connect(h.server.addr).await.unwrap();
        // Refused sockets are closed by the server at once: a read sees the end.
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(50), stream.read(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => refused += 1,
            _ => held.push(stream),
        }
    }
    assert_eq!(held.len() as u32, anytime_proto::limits::UNAUTHENTICATED_PER_IP_MAX);
    assert_eq!(refused, 300 - held.len());
    assert!(metric(&h, "anytime_sockets_refused_total").await >= refused as u64);
    // Other addresses are served meanwhile.
    let health = reqwest::get(format!("{}/healthz", h.base())).await.unwrap();
    assert!(health.status().is_success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_a_lying_content_length_is_answered_413_at_once() {
    let h = Harness::start();
    let mut stream = tokio::net::TcpStream::connect(h.server.addr).await.unwrap();
    let request = "POST /v1/login HTTP/1.1\r\nHost: anytime\r\nContent-Type: application/json\r\n\
                   Content-Length: 1000000000000\r\n\r\n{\"a\":1}";
    stream.write_all(request.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut answer = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut answer))
        .await
        .expect("an answer within 2 s")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn issue_16_a_hundred_parallel_wrong_logins_keep_memory_bounded_and_return_it() {
    let h = Harness::start();
    let pid = h.server.pid();
    let client = reqwest::Client::new();
    let login = |username: String| {
        let (client, base) = (client.clone(), h.base());
        async move {
            let body = serde_json::json!({"username": username, "password": "wrong password", "device_name": "d"});
            let response = client.post(format!("{base}/v1/login")).json(&body).send().await.unwrap();
            (response.status().as_u16(), response.headers().contains_key("retry-after"))
        }
    };
    // Warm up (first hash, thread pool), then measure from there.
    for i in 0..3 {
        login(format!("warmup{i}")).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_mib(pid);
    let (stop, sampler) = rss_sampler(pid);
    // 100 different usernames: each (username, address) is fresh, so every one is hashed.
    let tasks: Vec<_> = (0..100).map(|i| tokio::spawn(login(format!("nobody{i}")))).collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    stop.store(true, Ordering::Release);
    let peak = sampler.join().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_mib(pid);
    let unauthorized = answers.iter().filter(|(status, _)| *status == 401).count();
    let busy = answers.iter().filter(|(status, retry)| *status == 503 && *retry).count();
    assert_eq!(unauthorized + busy, 100, "every login is answered 401, or 503 with Retry-After: {answers:?}");
    assert!(unauthorized > 0);
    // One ~19 MiB hash per core at a time, plus slack for buffers and threads.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as f64;
    let bound = cores * 19.0 + 64.0;
    eprintln!("100 wrong logins: RSS {before:.0} MiB before, {peak:.0} peak, {after:.0} 2 s after; {busy} busy");
    assert!(peak - before < bound, "peak grew {:.0} MiB (bound {bound:.0})", peak - before);
    assert!(after - before < 32.0, "memory was not returned: {before:.0} -> {after:.0} MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn issue_16_a_stuck_receiver_of_large_messages_bounds_server_memory_and_later_gets_everything() {
    const MESSAGES: usize = 800;
    const BYTES: usize = anytime_proto::limits::MESSAGE_BYTES_MAX as usize;
    let h = Harness::start();
    let pid = h.server.pid();
    let alice = h.register("alice").await;
    let bob = h.register("bob").await;
    let mut a = h.connect(&alice).await;
    let conv = create_direct(&mut a, bob.user_id).await;
    // bob connects, then never reads again.
    let stuck = h.connect(&bob).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_mib(pid);
    let (stop, sampler) = rss_sampler(pid);
    let payload = vec![7u8; BYTES];
    for _ in 0..MESSAGES {
        send(&mut a, conv, &payload).await;
    }
    // The server gives up on bob's connection with a reason, instead of holding ~94 MiB for it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&h, "anytime_slow_consumers_total").await == 0 {
        assert!(Instant::now() < deadline, "the stuck receiver was not disconnected");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop.store(true, Ordering::Release);
    let peak = sampler.join().unwrap();
    eprintln!("{MESSAGES} x {BYTES} B to a stuck receiver: RSS {before:.0} MiB before, peak {peak:.0}");
    assert!(peak - before < 48.0, "server grew {:.0} MiB for one stuck receiver", peak - before);
    drop(stuck);
    // bob reconnects and gets every message from storage.
    let mut b = h.connect(&bob).await;
    let received = receive(&mut b, conv, MESSAGES).await;
    assert_eq!(received.len(), MESSAGES);
    assert!(received.iter().all(|m| m.payload.len() == BYTES));
    let seqs: Vec<u64> = received.iter().map(|m| m.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order, once each");
}

/// A server with its rate limits on (the harness turns them off by default).
fn limited() -> Harness {
    Harness::start_with_options(ServerOptions { extra_args: vec![], ..ServerOptions::default() })
}

async fn key_package_count(client: &mut RawClient) -> u32 {
    match expect_ok(client, frame::GetKeyPackageCount {}.into()).await {
        ServerFrame::KeyPackageCount(count) => count.count,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_a_stranger_cannot_drain_key_packages() {
    let h = limited();
    let bob = h.register("bob").await;
    let mallory = h.register("mallory").await;
    let mut b = h.connect(&bob).await;
    let mut m = h.connect(&mallory).await;
    let packages: Vec<Vec<u8>> = (0..20u32).map(|i| format!("kp-{i}").into_bytes()).collect();
    expect_ok(&mut b, frame::UploadKeyPackages { packages, last_resort: Some(b"last".to_vec()) }.into()).await;
    // No conversation with bob: nothing to add him to, so nothing is handed out.
    for _ in 0..20 {
        match m.request(frame::ClaimKeyPackages { user: bob.user_id }.into()).await.unwrap() {
            ServerFrame::Error(error) => assert_eq!(error.code, ErrorCode::NotMember),
            other => panic!("a stranger got {other:?}"),
        }
    }
    assert_eq!(key_package_count(&mut b).await, 20);
    // With a chat of their own, claims are for adding bob to it: a few, then rate-limited.
    create_direct(&mut m, bob.user_id).await;
    let mut granted = 0;
    for _ in 0..20 {
        match m.request(frame::ClaimKeyPackages { user: bob.user_id }.into()).await.unwrap() {
            ServerFrame::KeyPackages(_) => granted += 1,
            ServerFrame::Error(error) => assert_eq!(error.code, ErrorCode::RateLimited),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(granted, 10, "the per-pair burst");
    assert_eq!(key_package_count(&mut b).await, 10, "half of bob's packages are left");
}

async fn login_from(h: &Harness, from: IpAddr, username: &str, password: &str) -> (u16, Option<u64>) {
    let client = reqwest::Client::builder().local_address(from).build().unwrap();
    let body = serde_json::json!({"username": username, "password": password, "device_name": "d"});
    let response = client.post(format!("{}/v1/login", h.base())).json(&body).send().await.unwrap();
    let retry = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    (response.status().as_u16(), retry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_the_right_password_works_during_someone_elses_brute_force() {
    let h = limited();
    h.register("alice").await;
    let attacker = loopback(2);
    let mut statuses = Vec::new();
    for i in 0..30 {
        statuses.push(login_from(&h, attacker, "alice", &format!("guess {i}")).await);
    }
    let failures = LOGIN_FREE_FAILURES as usize;
    assert!(statuses[..failures].iter().all(|(s, _)| *s == 401), "{statuses:?}");
    assert!(statuses[failures..].iter().all(|(s, r)| *s == 429 && r.is_some_and(|r| r >= 1)), "{statuses:?}");
    // The attacker's address stays slowed even with the right password…
    assert_eq!(login_from(&h, attacker, "alice", "password-alice").await.0, 429);
    // …while alice, from her own address, logs in at once.
    assert_eq!(login_from(&h, loopback(1), "alice", "password-alice").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_look_alike_usernames_are_refused_and_display_names_cleaned() {
    let h = limited();
    let client = reqwest::Client::new();
    for bad in ["...", "___", ".alice", "_bob", "al..ice", "a._b"] {
        let body = serde_json::json!({"username": bad, "password": "long enough password", "device_name": "d"});
        let response = client.post(format!("{}/v1/register", h.base())).json(&body).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 400, "{bad}");
        let error: serde_json::Value = response.json().await.unwrap();
        assert_eq!(error["code"], "invalid_username", "{bad}");
    }
    let carol = h.register("carol.b_2").await;
    let mut c = h.connect(&carol).await;
    let spoof = "car\u{202E}lo\u{200B}c\u{2028}";
    expect_ok(&mut c, frame::SetProfile { display_name: spoof.into(), avatar: None }.into()).await;
    match expect_ok(&mut c, frame::LookupUser { username: "carol.b_2".into() }.into()).await {
        ServerFrame::Profile(profile) => assert_eq!(profile.display_name, "carloc"),
        other => panic!("{other:?}"),
    }
    // A name of invisible characters only is no name.
    match c.request(frame::SetProfile { display_name: "\u{200B}\u{202E}".into(), avatar: None }.into()).await.unwrap() {
        ServerFrame::Error(error) => assert_eq!(error.code, ErrorCode::InvalidArgument),
        other => panic!("{other:?}"),
    }
}
