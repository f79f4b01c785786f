//! Catch-up and group fan-out scenarios (durable 1:1 throughput is in lib.rs).

use std::time::{Duration, Instant};

use anyhow::Context;
use anytime_proto::frame;
use anytime_proto::{ConvId, ServerFrame};
use anytime_testkit::{msg_id, RawClient};
use serde::Serialize;

/// Unique per run, so scenarios can share a server.
fn run_tag() -> String {
    msg_id().0[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// Sends `n` messages into `conv` with `window` in flight; returns when all are stored.
async fn send_pipelined(
    client: &mut RawClient,
    conv: ConvId,
    n: usize,
    window: usize,
    payload: impl Fn(usize) -> Vec<u8>,
) -> anyhow::Result<()> {
    let mut in_flight = std::collections::VecDeque::with_capacity(window);
    for i in 0..n {
        if in_flight.len() == window {
            expect_sent(client, in_flight.pop_front()).await?;
        }
        in_flight.push_back(client.send(frame::Send { conv, msg_id: msg_id(), payload: payload(i) }.into()).await?);
    }
    while let Some(id) = in_flight.pop_front() {
        expect_sent(client, Some(id)).await?;
    }
    Ok(())
}

pub(crate) async fn expect_sent(client: &mut RawClient, id: Option<u32>) -> anyhow::Result<()> {
    let Some(id) = id else { return Ok(()) };
    match client.answer(id).await? {
        ServerFrame::Sent(_) => Ok(()),
        other => anyhow::bail!("Send answered {other:?}"),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CatchUpReport {
    pub messages: usize,
    pub payload_bytes: usize,
    pub store_seconds: f64,
    pub catch_up_seconds: f64,
    pub messages_per_second: f64,
}

impl CatchUpReport {
    pub fn summary(&self) -> String {
        format!(
            "catch-up: {} messages ({} B) waiting for an offline device; fully synced in {:.3} s ({:.0} msg/s); storing them took {:.2} s",
            self.messages, self.payload_bytes, self.catch_up_seconds, self.messages_per_second, self.store_seconds
        )
    }
}

/// A device is offline while `messages` arrive for it, then connects: time until it has all.
pub async fn catch_up(
    base_url: &str,
    ws_url: &str,
    messages: usize,
    payload_bytes: usize,
) -> anyhow::Result<CatchUpReport> {
    let tag = run_tag();
    let sender = anytime_testkit::register(base_url, &format!("cs{tag}")).await?;
    let reader = anytime_testkit::register(base_url, &format!("cr{tag}")).await?;
    let mut s = RawClient::connect(ws_url, &sender.token).await?;
    let conv = match s.request(frame::CreateDirect { peer: reader.user_id }.into()).await? {
        ServerFrame::ConversationInfo(info) => info.conv,
        other => anyhow::bail!("CreateDirect answered {other:?}"),
    };
    let started = Instant::now();
    send_pipelined(&mut s, conv, messages, 256, |_| vec![0x42; payload_bytes]).await?;
    let store_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut r = RawClient::connect(ws_url, &reader.token).await?;
    let mut received = 0usize;
    while received < messages {
        match r.next_push_within(Duration::from_secs(60)).await?.context("catch-up stalled")? {
            ServerFrame::Message(m) if m.conv == conv => {
                received += 1;
                anyhow::ensure!(m.seq == received as u64, "expected seq {received}, got {}", m.seq);
                if received.is_multiple_of(512) || received == messages {
                    r.send(frame::Ack { conv, seq: m.seq }.into()).await?;
                }
            }
            _ => {}
        }
    }
    let catch_up_seconds = started.elapsed().as_secs_f64();
    Ok(CatchUpReport {
        messages,
        payload_bytes,
        store_seconds,
        catch_up_seconds,
        messages_per_second: messages as f64 / catch_up_seconds,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct FanoutReport {
    pub members: usize,
    pub messages: usize,
    pub deliveries: usize,
    pub seconds: f64,
    pub deliveries_per_second: f64,
    pub last_delivery_ms_p50: f64,
    pub last_delivery_ms_p99: f64,
}

impl FanoutReport {
    pub fn summary(&self) -> String {
        format!(
            "fan-out: {} messages to a group of {} online devices = {} deliveries in {:.2} s ({:.0} deliveries/s); time to last delivery p50 {:.1} ms, p99 {:.1} ms",
            self.messages, self.members, self.deliveries, self.seconds, self.deliveries_per_second, self.last_delivery_ms_p50, self.last_delivery_ms_p99
        )
    }
}

/// One sender, a group of `members` online devices (the sender included), `messages` sent with a
/// window of 16: deliveries per second and, per message, the time until its last delivery.
/// Payloads are `payload_bytes` long (at least 8: the message number).
pub async fn fanout(
    base_url: &str,
    ws_url: &str,
    members: usize,
    messages: usize,
    payload_bytes: usize,
) -> anyhow::Result<FanoutReport> {
    anyhow::ensure!(members >= 2, "a group needs at least 2 members");
    let tag = run_tag();
    let mut sessions = Vec::with_capacity(members);
    for i in 0..members {
        sessions.push(anytime_testkit::register(base_url, &format!("f{tag}x{i}")).await?);
    }
    let mut owner = RawClient::connect(ws_url, &sessions[0].token).await?;
    let mut conv = None;
    for chunk in sessions[1..].chunks(anytime_proto::limits::USERS_PER_REQUEST_MAX as usize) {
        let users = chunk.iter().map(|s| s.user_id).collect();
        let answer = match conv {
            None => owner.request(frame::CreateGroup { name: "fanout".into(), members: users }.into()).await?,
            Some(conv) => owner.request(frame::AddMembers { conv, users }.into()).await?,
        };
        match answer {
            ServerFrame::ConversationInfo(info) => conv = Some(info.conv),
            other => anyhow::bail!("group setup answered {other:?}"),
        }
    }
    let conv = conv.context("no group")?;
    let epoch = Instant::now();
    let mut readers = Vec::new();
    for session in &sessions {
        let mut client = RawClient::connect(ws_url, &session.token).await?;
        readers.push(tokio::spawn(async move {
            // Receive times (µs since `epoch`) by seq.
            let mut at = vec![0u64; messages];
            let mut got = 0;
            while got < messages {
                match client.next_push_within(Duration::from_secs(60)).await?.context("fan-out stalled")? {
                    ServerFrame::Message(m) if m.conv == conv => {
                        at[(m.seq - 1) as usize] = epoch.elapsed().as_micros() as u64;
                        got += 1;
                        if got.is_multiple_of(64) || got == messages {
                            client.send(frame::Ack { conv, seq: m.seq }.into()).await?;
                        }
                    }
                    _ => {}
                }
            }
            anyhow::Ok(at)
        }));
    }
    let started = Instant::now();
    let mut sent_at = vec![0u64; messages];
    let mut in_flight = std::collections::VecDeque::new();
    for (i, slot) in sent_at.iter_mut().enumerate() {
        if in_flight.len() == 16 {
            expect_sent(&mut owner, in_flight.pop_front()).await?;
        }
        *slot = epoch.elapsed().as_micros() as u64;
        let mut payload = vec![0x66; payload_bytes.max(8)];
        payload[0..8].copy_from_slice(&(i as u64).to_le_bytes());
        in_flight.push_back(owner.send(frame::Send { conv, msg_id: msg_id(), payload }.into()).await?);
    }
    while let Some(id) = in_flight.pop_front() {
        expect_sent(&mut owner, Some(id)).await?;
    }
    let mut last = vec![0u64; messages];
    for reader in readers {
        let at = reader.await.context("reader panicked")??;
        for (l, a) in last.iter_mut().zip(at) {
            *l = (*l).max(a);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut latency_ms: Vec<f64> =
        last.iter().zip(&sent_at).map(|(l, s)| l.saturating_sub(*s) as f64 / 1000.0).collect();
    latency_ms.sort_by(f64::total_cmp);
    let pick = |q: f64| latency_ms[((latency_ms.len() as f64 - 1.0) * q).round() as usize];
    let deliveries = messages * members;
    Ok(FanoutReport {
        members,
        messages,
        deliveries,
        seconds,
        deliveries_per_second: deliveries as f64 / seconds,
        last_delivery_ms_p50: pick(0.50),
        last_delivery_ms_p99: pick(0.99),
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnectionsReport {
    pub connections: usize,
    pub accounts: usize,
    pub connect_seconds: f64,
    pub connects_per_second: f64,
    /// Server resident memory growth per idle authenticated connection (None for --url).
    pub server_rss_bytes_per_connection: Option<f64>,
    /// Kernel TCP buffer memory per connection (both ends of each loopback socket), from sockstat.
    pub kernel_socket_bytes_per_connection: f64,
    /// What the measured per-connection cost implies for 250,000 connections (a projection).
    pub projected_server_gib_at_250k: Option<f64>,
}

impl ConnectionsReport {
    pub fn summary(&self) -> String {
        let rss = self.server_rss_bytes_per_connection.map_or("n/a".into(), |b| format!("{:.0} B", b));
        let projected = self.projected_server_gib_at_250k.map_or("n/a".into(), |g| format!("{g:.2} GiB"));
        format!(
            "connections: {} idle authenticated connections ({} accounts) in {:.2} s ({:.0}/s); server RSS per connection {rss}; kernel socket memory per connection {:.0} B; projected server RSS at 250k: {projected}",
            self.connections, self.accounts, self.connect_seconds, self.connects_per_second, self.kernel_socket_bytes_per_connection
        )
    }
}

fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// Kernel TCP memory in bytes (`mem` pages of /proc/net/sockstat).
fn tcp_kernel_bytes() -> u64 {
    let text = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    let pages = text
        .lines()
        .find(|l| l.starts_with("TCP:"))
        .and_then(|l| l.split_whitespace().skip_while(|w| *w != "mem").nth(1).and_then(|v| v.parse::<u64>().ok()))
        .unwrap_or(0);
    pages * 4096
}

/// `devices` devices (10 per account, each linked and approved) open `per_device` connections
/// each from addresses across 127.0.0.0/8, authenticate and stay idle.
pub async fn connections(
    base_url: &str,
    ws_url: &str,
    server_pid: Option<u32>,
    devices: usize,
    per_device: usize,
) -> anyhow::Result<ConnectionsReport> {
    const DEVICES_PER_ACCOUNT: usize = anytime_proto::limits::DEVICES_PER_USER_MAX as usize;
    let tag = run_tag();
    let accounts = devices.div_ceil(DEVICES_PER_ACCOUNT);
    let mut tokens = Vec::with_capacity(devices);
    for a in 0..accounts {
        let name = format!("c{tag}x{a}");
        let first = anytime_testkit::register(base_url, &name).await?;
        let mut approver = RawClient::connect(ws_url, &first.token).await?;
        tokens.push(first.token.clone());
        for d in 1..DEVICES_PER_ACCOUNT.min(devices - a * DEVICES_PER_ACCOUNT) {
            let linked = anytime_testkit::login(base_url, &name, &format!("d{d}")).await?;
            let code = linked.link_code.context("a linked device gets a link code")?;
            match approver.request(frame::ApproveDevice { code }.into()).await? {
                ServerFrame::Done(_) => tokens.push(linked.token),
                other => anyhow::bail!("approve answered {other:?}"),
            }
        }
        approver.close().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = server_pid.and_then(rss_bytes);
    let kernel_before = tcp_kernel_bytes();
    let started = Instant::now();
    let mut clients = Vec::with_capacity(devices * per_device);
    let mut n = 0usize;
    for chunk in tokens.iter().flat_map(|t| std::iter::repeat_n(t, per_device)).collect::<Vec<_>>().chunks(256) {
        let mut batch = Vec::with_capacity(chunk.len());
        for token in chunk {
            // 127.0.0.2 ..= 127.0.0.251: each source address has its own ephemeral ports.
            let local = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2 + (n % 250) as u8));
            n += 1;
            let (ws_url, token) = (ws_url.to_owned(), (*token).clone());
            batch.push(tokio::spawn(async move { RawClient::connect_from(&ws_url, &token, local).await }));
        }
        for task in batch {
            clients.push(task.await.context("connect task panicked")??);
        }
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let connections = clients.len();
    let rss_after = server_pid.and_then(rss_bytes);
    let kernel_after = tcp_kernel_bytes();
    let per_connection = match (rss_before, rss_after) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before) as f64 / connections as f64),
        _ => None,
    };
    drop(clients);
    Ok(ConnectionsReport {
        connections,
        accounts,
        connect_seconds,
        connects_per_second: connections as f64 / connect_seconds,
        server_rss_bytes_per_connection: per_connection,
        kernel_socket_bytes_per_connection: kernel_after.saturating_sub(kernel_before) as f64 / connections as f64,
        projected_server_gib_at_250k: per_connection.map(|b| b * 250_000.0 / (1u64 << 30) as f64),
    })
}
