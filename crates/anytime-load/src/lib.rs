//! Load scenarios against a real Anytime server, speaking the real protocol.
//!
//! `durable`: P sender/receiver pairs, each in its own direct chat. Every sender pipelines its
//! sends (a window of W unanswered at a time); a message counts once the server answered
//! `Sent` (it is on disk) and the receiver got it. Reports delivered messages per second and
//! the group-commit batch sizes the server reached (from its `/metrics`).

//!
//! `latency` (latency.rs): the same pairs under open-loop load at a fixed rate; send-to-receive
//! latency percentiles. `xmpp` (xmpp.rs): the equivalent scenarios over XMPP, for ejabberd;
//! `matrix` (matrix.rs): over the Matrix client-server API, for Synapse.

pub mod latency;
pub mod matrix;
mod scenarios;
pub mod xmpp;

pub use latency::{open_loop, sweep, CpuUse, LatencyConfig, LatencyRun, LatencySweep, Percentiles};
use scenarios::expect_sent;
pub use scenarios::{catch_up, connections, fanout, CatchUpReport, ConnectionsReport, FanoutReport};

use std::time::{Duration, Instant};

use anyhow::Context;
use anytime_proto::frame;
use anytime_proto::{ConvId, ServerFrame};
use anytime_testkit::{msg_id, RawClient};
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct DurableConfig {
    pub base_url: String,
    pub pairs: usize,
    pub messages_per_sender: usize,
    pub window: usize,
    pub payload_bytes: usize,
    /// The server's process id, to report its CPU use next to the load tool's.
    pub server_pid: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DurableReport {
    pub pairs: usize,
    pub messages: usize,
    pub payload_bytes: usize,
    pub window: usize,
    pub seconds: f64,
    pub messages_per_second: f64,
    pub store_batches: u64,
    pub mean_batch_size: f64,
    pub mean_commit_ms: f64,
    pub cpu: CpuUse,
}

impl DurableReport {
    pub fn summary(&self) -> String {
        format!(
            "durable: {} msgs ({} B) over {} pairs, window {}: {:.0} msg/s in {:.2} s; {} store commits, mean batch {:.1} ops, mean commit {:.2} ms; {}",
            self.messages,
            self.payload_bytes,
            self.pairs,
            self.window,
            self.messages_per_second,
            self.seconds,
            self.store_batches,
            self.mean_batch_size,
            self.mean_commit_ms,
            latency::cpu_note(self.cpu)
        )
    }
}

/// Histogram totals scraped from `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct StoreTotals {
    batches: u64,
    ops: f64,
    commit_seconds: f64,
}

/// Group commits between two scrapes.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct StoreUse {
    pub batches: u64,
    pub mean_batch_size: f64,
    pub mean_commit_ms: f64,
}

impl StoreTotals {
    pub(crate) fn since(&self, before: &StoreTotals) -> StoreUse {
        let batches = self.batches.saturating_sub(before.batches);
        StoreUse {
            batches,
            mean_batch_size: (self.ops - before.ops) / batches.max(1) as f64,
            mean_commit_ms: (self.commit_seconds - before.commit_seconds) * 1000.0 / batches.max(1) as f64,
        }
    }
}

pub(crate) async fn scrape(base_url: &str) -> anyhow::Result<StoreTotals> {
    let text = reqwest::get(format!("{base_url}/metrics")).await?.text().await?;
    let value = |name: &str| -> f64 {
        text.lines().find_map(|line| line.strip_prefix(name).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0.0)
    };
    Ok(StoreTotals {
        batches: value("anytime_store_commit_batch_size_count ") as u64,
        ops: value("anytime_store_commit_batch_size_sum "),
        commit_seconds: value("anytime_store_fsync_seconds_sum "),
    })
}

/// Registers `count` sender/receiver pairs, connects both and opens a direct chat for each.
pub(crate) async fn setup_pairs(
    base_url: &str,
    ws_url: &str,
    count: usize,
) -> anyhow::Result<Vec<(RawClient, RawClient, ConvId)>> {
    let run_id = msg_id().0[0..4].iter().map(|b| format!("{b:02x}")).collect::<String>();
    let mut pairs = Vec::with_capacity(count);
    for i in 0..count {
        let sender = anytime_testkit::register(base_url, &format!("s{run_id}x{i}")).await?;
        let receiver = anytime_testkit::register(base_url, &format!("r{run_id}x{i}")).await?;
        let mut s = RawClient::connect(ws_url, &sender.token).await?;
        let r = RawClient::connect(ws_url, &receiver.token).await?;
        let conv = match s.request(frame::CreateDirect { peer: receiver.user_id }.into()).await? {
            ServerFrame::ConversationInfo(info) => info.conv,
            other => anyhow::bail!("CreateDirect answered {other:?}"),
        };
        pairs.push((s, r, conv));
    }
    Ok(pairs)
}

pub async fn durable(config: &DurableConfig, ws_url: &str) -> anyhow::Result<DurableReport> {
    anyhow::ensure!(config.pairs > 0 && config.window > 0, "pairs and window must be at least 1");
    let pairs = setup_pairs(&config.base_url, ws_url, config.pairs).await?;
    let before = scrape(&config.base_url).await?;
    let started = Instant::now();
    let meter = latency::CpuMeter::start(config.server_pid);
    let mut tasks = Vec::new();
    for (sender, receiver, conv) in pairs {
        let (n, window, size) = (config.messages_per_sender, config.window, config.payload_bytes);
        tasks.push(tokio::spawn(async move { run_sender(sender, conv, n, window, size).await }));
        tasks.push(tokio::spawn(async move { run_receiver(receiver, conv, n).await }));
    }
    for task in tasks {
        task.await.context("load task panicked")??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = meter.stop();
    let after = scrape(&config.base_url).await?;
    let messages = config.pairs * config.messages_per_sender;
    let batches = after.batches.saturating_sub(before.batches);
    Ok(DurableReport {
        pairs: config.pairs,
        messages,
        payload_bytes: config.payload_bytes,
        window: config.window,
        seconds,
        messages_per_second: messages as f64 / seconds,
        store_batches: batches,
        mean_batch_size: (after.ops - before.ops) / batches.max(1) as f64,
        mean_commit_ms: (after.commit_seconds - before.commit_seconds) * 1000.0 / batches.max(1) as f64,
        cpu,
    })
}

async fn run_sender(mut client: RawClient, conv: ConvId, n: usize, window: usize, size: usize) -> anyhow::Result<()> {
    let mut in_flight = std::collections::VecDeque::with_capacity(window);
    let payload = vec![0x5a; size];
    for _ in 0..n {
        if in_flight.len() == window {
            expect_sent(&mut client, in_flight.pop_front()).await?;
        }
        let request = frame::Send { conv, msg_id: msg_id(), payload: payload.clone() };
        in_flight.push_back(client.send(request.into()).await?);
    }
    while let Some(id) = in_flight.pop_front() {
        expect_sent(&mut client, Some(id)).await?;
    }
    Ok(())
}

async fn run_receiver(mut client: RawClient, conv: ConvId, n: usize) -> anyhow::Result<()> {
    let mut next_seq = 1;
    while next_seq <= n as u64 {
        let push = client.next_push_within(Duration::from_secs(60)).await?.context("receiver starved")?;
        if let ServerFrame::Message(message) = push {
            anyhow::ensure!(message.conv == conv, "message for another conversation");
            anyhow::ensure!(message.seq == next_seq, "expected seq {next_seq}, got {}", message.seq);
            // Cumulative acks, every 64 messages and at the end, as a client would batch them.
            if message.seq % 64 == 0 || message.seq == n as u64 {
                client.send(frame::Ack { conv, seq: message.seq }.into()).await?;
            }
            next_seq += 1;
        }
    }
    Ok(())
}
