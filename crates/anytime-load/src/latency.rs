//! Open-loop one-to-one latency (issue 7, scenario 2).
//!
//! P sender/receiver pairs, each in its own direct chat. Senders send on a fixed schedule: the
//! whole run offers `rate` messages per second, spread evenly over the pairs and staggered, so
//! the server sees a steady stream. Each payload carries its *intended* send time; the receiver
//! measures latency from that time to arrival. A sender that falls behind its schedule (because
//! the server or the machine is slow) still stamps the time it should have sent at, so a stall
//! shows up in the latency figures instead of silently lowering the offered load (no coordinated
//! omission). Senders read their `Sent` answers between sends; a send that was refused fails the
//! run. Latencies go into an HDR histogram (µs, 3 significant digits).

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::Context;
use anytime_proto::frame;
use anytime_proto::{ConvId, ServerFrame};
use anytime_testkit::{msg_id, RawClient};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::Instant;

use crate::scenarios::expect_sent;

/// Smallest payload: the intended send time (µs since the run's epoch) and the sender index.
pub const STAMP_BYTES: usize = 12;

#[derive(Debug, Clone)]
pub struct LatencyConfig {
    pub base_url: String,
    pub pairs: usize,
    /// Offered load, messages per second over all pairs.
    pub rate: f64,
    /// How long to send for.
    pub seconds: f64,
    /// Messages intended before this many seconds are delivered and counted, not timed.
    pub warmup_seconds: f64,
    pub payload_bytes: usize,
    /// The server's process id, to report its CPU use next to the load tool's.
    pub server_pid: Option<u32>,
}

/// CPU used over a measured window, in cores (1.0 = one core busy the whole time).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CpuUse {
    pub server_cores: Option<f64>,
    pub load_cores: f64,
}

/// User + system CPU ticks of a process from `/proc/<pid>/stat`.
fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at the state, field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Measures the CPU the server and this process use between `start` and `stop`.
pub struct CpuMeter {
    started: Instant,
    server_pid: Option<u32>,
    server: Option<u64>,
    load: Option<u64>,
}

impl CpuMeter {
    pub fn start(server_pid: Option<u32>) -> CpuMeter {
        CpuMeter {
            started: Instant::now(),
            server_pid,
            server: server_pid.and_then(|p| cpu_ticks(&p.to_string())),
            load: cpu_ticks("self"),
        }
    }

    pub fn stop(&self) -> CpuUse {
        // SAFETY: sysconf with a valid name has no preconditions.
        let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let seconds = self.started.elapsed().as_secs_f64().max(1e-9);
        let cores = |before: Option<u64>, after: Option<u64>| match (before, after) {
            (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 / ticks_per_second / seconds),
            _ => None,
        };
        CpuUse {
            server_cores: cores(self.server, self.server_pid.and_then(|p| cpu_ticks(&p.to_string()))),
            load_cores: cores(self.load, cpu_ticks("self")).unwrap_or(0.0),
        }
    }
}

/// Latency percentiles of one open-loop run, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub samples: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn from_histogram(h: &Histogram<u64>) -> Percentiles {
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            samples: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// A histogram of latencies in µs from 1 µs to 10 minutes, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    // Constant, valid bounds: low >= 1, high >= 2 * low, sigfig <= 5.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencyRun {
    pub pairs: usize,
    pub payload_bytes: usize,
    /// Offered load (messages/s).
    pub target_rate: f64,
    /// Messages sent (and delivered: the run fails otherwise).
    pub messages: usize,
    /// From the first intended send to the last receipt.
    pub seconds: f64,
    pub delivered_per_second: f64,
    /// How far behind schedule the slowest send left (ms); large values mean the load tool could
    /// not keep up with the schedule (its lateness is still counted in the latency).
    pub max_send_lag_ms: f64,
    pub latency: Percentiles,
    /// CPU over the run (from the first intended send to the last receipt, roughly).
    pub cpu: CpuUse,
    /// The server's group commits over the run (Anytime only).
    pub store: Option<crate::StoreUse>,
}

impl LatencyRun {
    pub fn summary(&self, label: &str) -> String {
        format!(
            "{label}: offered {:.0} msg/s over {} pairs ({} B): delivered {} at {:.0} msg/s; latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.1} ms ({} samples); max send lag {:.1} ms; {}{}",
            self.target_rate,
            self.pairs,
            self.payload_bytes,
            self.messages,
            self.delivered_per_second,
            self.latency.p50_ms,
            self.latency.p99_ms,
            self.latency.p999_ms,
            self.latency.max_ms,
            self.latency.samples,
            self.max_send_lag_ms,
            cpu_note(self.cpu),
            self.store.map_or(String::new(), |s| format!(
                "; {} store commits, mean batch {:.1} ops, mean commit {:.2} ms",
                s.batches, s.mean_batch_size, s.mean_commit_ms
            ))
        )
    }
}

/// The send schedule of one sender: message `k` of sender `index` is intended at
/// `start + (index + k * pairs) / rate` — all senders together send at `rate`, evenly spaced.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub start: Instant,
    pub pairs: usize,
    pub rate: f64,
}

impl Schedule {
    pub fn messages_per_sender(&self, seconds: f64) -> usize {
        ((self.rate * seconds) / self.pairs as f64).ceil().max(1.0) as usize
    }

    pub fn intended(&self, index: usize, k: usize) -> Instant {
        self.start + Duration::from_secs_f64((index + k * self.pairs) as f64 / self.rate)
    }
}

/// Microseconds from `epoch` to `at` (0 if before).
pub fn micros_since(epoch: Instant, at: Instant) -> u64 {
    at.saturating_duration_since(epoch).as_micros() as u64
}

pub async fn open_loop(config: &LatencyConfig, ws_url: &str) -> anyhow::Result<LatencyRun> {
    anyhow::ensure!(config.pairs > 0, "pairs must be at least 1");
    anyhow::ensure!(config.rate > 0.0 && config.seconds > 0.0, "rate and seconds must be positive");
    anyhow::ensure!(config.payload_bytes >= STAMP_BYTES, "payload must be at least {STAMP_BYTES} bytes");
    let pairs = crate::setup_pairs(&config.base_url, ws_url, config.pairs).await?;
    let epoch = Instant::now();
    // Give every task time to start before the first intended send.
    let schedule = Schedule { start: epoch + Duration::from_millis(200), pairs: config.pairs, rate: config.rate };
    let n = schedule.messages_per_sender(config.seconds);
    let timed_from = micros_since(epoch, schedule.start) + (config.warmup_seconds * 1e6) as u64;
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for (index, (sender, receiver, conv)) in pairs.into_iter().enumerate() {
        let size = config.payload_bytes;
        senders
            .push(tokio::spawn(async move { send_on_schedule(sender, conv, schedule, index, n, size, epoch).await }));
        receivers.push(tokio::spawn(async move { receive_timed(receiver, conv, n, epoch, timed_from).await }));
    }
    tokio::time::sleep_until(schedule.start).await;
    let meter = CpuMeter::start(config.server_pid);
    let store_before = crate::scrape(&config.base_url).await?;
    let mut max_lag = Duration::ZERO;
    for task in senders {
        max_lag = max_lag.max(task.await.context("sender panicked")??);
    }
    let mut histogram = latency_histogram();
    let mut last = epoch;
    for task in receivers {
        let (h, at) = task.await.context("receiver panicked")??;
        histogram.add(&h).context("while merging histograms")?;
        last = last.max(at);
    }
    let cpu = meter.stop();
    let store = crate::scrape(&config.base_url).await?.since(&store_before);
    let messages = n * config.pairs;
    let seconds = last.saturating_duration_since(schedule.start).as_secs_f64();
    Ok(LatencyRun {
        pairs: config.pairs,
        payload_bytes: config.payload_bytes,
        target_rate: config.rate,
        messages,
        seconds,
        delivered_per_second: messages as f64 / seconds,
        max_send_lag_ms: max_lag.as_secs_f64() * 1000.0,
        latency: Percentiles::from_histogram(&histogram),
        cpu,
        store: Some(store),
    })
}

/// Sends `n` messages on the schedule, reading `Sent` answers while waiting for the next slot.
/// Returns the largest lag behind schedule.
async fn send_on_schedule(
    mut client: RawClient,
    conv: ConvId,
    schedule: Schedule,
    index: usize,
    n: usize,
    size: usize,
    epoch: Instant,
) -> anyhow::Result<Duration> {
    let mut in_flight: VecDeque<u32> = VecDeque::new();
    let mut payload = vec![0x5a; size];
    payload[8..12].copy_from_slice(&(index as u32).to_le_bytes());
    let mut max_lag = Duration::ZERO;
    for k in 0..n {
        let intended = schedule.intended(index, k);
        // Until the slot: take answers (cancel-safe: a frame is either read whole or not at all).
        while Instant::now() < intended {
            match in_flight.front() {
                Some(&id) => match tokio::time::timeout_at(intended, client.answer(id)).await {
                    Ok(answer) => {
                        expect_answer_sent(answer?)?;
                        in_flight.pop_front();
                    }
                    Err(_) => break,
                },
                None => tokio::time::sleep_until(intended).await,
            }
        }
        max_lag = max_lag.max(Instant::now().saturating_duration_since(intended));
        payload[0..8].copy_from_slice(&micros_since(epoch, intended).to_le_bytes());
        in_flight
            .push_back(client.send(frame::Send { conv, msg_id: msg_id(), payload: payload.clone() }.into()).await?);
        // The sender's own device gets its messages pushed too: drop them as they come.
        while client.next_push_within(Duration::ZERO).await?.is_some() {}
    }
    while let Some(id) = in_flight.pop_front() {
        expect_sent(&mut client, Some(id)).await?;
    }
    Ok(max_lag)
}

fn expect_answer_sent(answer: ServerFrame) -> anyhow::Result<()> {
    match answer {
        ServerFrame::Sent(_) => Ok(()),
        other => anyhow::bail!("Send answered {other:?}"),
    }
}

/// Receives `n` messages in order, timing each from its intended send time. Returns the
/// histogram and the time of the last receipt.
async fn receive_timed(
    mut client: RawClient,
    conv: ConvId,
    n: usize,
    epoch: Instant,
    timed_from_us: u64,
) -> anyhow::Result<(Histogram<u64>, Instant)> {
    let mut histogram = latency_histogram();
    let mut next_seq = 1;
    let mut last = Instant::now();
    while next_seq <= n as u64 {
        let push = client.next_push_within(Duration::from_secs(60)).await?.context("receiver starved")?;
        if let ServerFrame::Message(message) = push {
            last = Instant::now();
            anyhow::ensure!(message.conv == conv, "message for another conversation");
            anyhow::ensure!(message.seq == next_seq, "expected seq {next_seq}, got {}", message.seq);
            let stamp: [u8; 8] = message
                .payload
                .get(0..8)
                .and_then(|b| b.try_into().ok())
                .context("payload too short for a send-time stamp")?;
            let intended_us = u64::from_le_bytes(stamp);
            if intended_us >= timed_from_us {
                histogram.saturating_record(micros_since(epoch, last).saturating_sub(intended_us).max(1));
            }
            if message.seq % 64 == 0 || message.seq == n as u64 {
                client.send(frame::Ack { conv, seq: message.seq }.into()).await?;
            }
            next_seq += 1;
        }
    }
    Ok((histogram, last))
}

/// What a closed-loop run that measured the maximum rate says about itself.
pub trait MaxRun {
    fn summary(&self) -> String;
    fn messages_per_second(&self) -> f64;
}

impl MaxRun for crate::DurableReport {
    fn summary(&self) -> String {
        crate::DurableReport::summary(self)
    }
    fn messages_per_second(&self) -> f64 {
        self.messages_per_second
    }
}

/// A closed-loop maximum (absent when a rate was given) and open-loop runs at fractions of it.
#[derive(Debug, Clone, Serialize)]
pub struct Sweep<M> {
    pub max: Option<M>,
    pub runs: Vec<(f64, LatencyRun)>,
    /// "latency", "xmpp latency", …: the start of each summary line.
    #[serde(skip)]
    pub label: &'static str,
}

pub type LatencySweep = Sweep<crate::DurableReport>;

impl<M: MaxRun> Sweep<M> {
    pub fn summary(&self) -> String {
        let mut lines = Vec::new();
        if let Some(max) = &self.max {
            lines.push(format!("max (closed loop) {}", max.summary()));
        }
        for (fraction, run) in &self.runs {
            let label = match self.max {
                Some(_) => format!("{} at {:.0}% of max", self.label, fraction * 100.0),
                None => format!("{} at {:.0} msg/s", self.label, run.target_rate),
            };
            lines.push(run.summary(&label));
        }
        lines.join("\n")
    }
}

/// Runs `max` (the closed-loop run) if given and takes its rate as the maximum (else `rate`),
/// then `run_at(rate)` open loop at each fraction of it. Shared by every protocol.
pub async fn sweep_with<M, FM, FO>(
    label: &'static str,
    max: Option<FM>,
    rate: f64,
    fractions: &[f64],
    mut run_at: impl FnMut(f64) -> FO,
) -> anyhow::Result<Sweep<M>>
where
    M: MaxRun,
    FM: std::future::Future<Output = anyhow::Result<M>>,
    FO: std::future::Future<Output = anyhow::Result<LatencyRun>>,
{
    let (max, max_rate) = match max {
        Some(run) => {
            let report = run.await.context("while measuring the maximum rate")?;
            let rate = report.messages_per_second();
            (Some(report), rate)
        }
        None => (None, rate),
    };
    let mut runs = Vec::new();
    for &fraction in fractions {
        let run = run_at(max_rate * fraction).await.with_context(|| format!("while running at {fraction} of max"))?;
        runs.push((fraction, run));
    }
    Ok(Sweep { max, runs, label })
}

/// Finds the maximum durable rate with the closed-loop scenario (unless `max` is absent: then
/// `config.rate` is the maximum), then runs open loop at each fraction of it.
pub async fn sweep(
    config: &LatencyConfig,
    ws_url: &str,
    max: Option<crate::DurableConfig>,
    fractions: &[f64],
) -> anyhow::Result<LatencySweep> {
    let max = max.map(|durable| async move { crate::durable(&durable, ws_url).await });
    sweep_with("latency", max, config.rate, fractions, |rate| {
        let run_config = LatencyConfig { rate, ..config.clone() };
        async move { open_loop(&run_config, ws_url).await }
    })
    .await
}

/// Settings of a peer's closed-loop run that finds the maximum rate.
#[derive(Debug, Clone, Copy)]
pub struct ClosedLoop {
    pub pairs: usize,
    pub messages_per_sender: usize,
    pub window: usize,
}

/// Closed-loop one-to-one throughput against a peer server (XMPP, Matrix).
#[derive(Debug, Clone, Serialize)]
pub struct PeerThroughput {
    pub pairs: usize,
    pub messages: usize,
    pub payload_bytes: usize,
    pub window: usize,
    pub seconds: f64,
    pub messages_per_second: f64,
    pub cpu: CpuUse,
    /// "xmpp 1:1", "matrix 1:1": the start of the summary line.
    #[serde(skip)]
    pub label: &'static str,
    /// What the window counts ("end to end", "unanswered sends").
    #[serde(skip)]
    pub window_counts: &'static str,
}

impl PeerThroughput {
    pub fn summary(&self) -> String {
        format!(
            "{}: {} msgs ({} B payload, base64 body) over {} pairs, window {} ({}): {:.0} msg/s in {:.2} s; {}",
            self.label,
            self.messages,
            self.payload_bytes,
            self.pairs,
            self.window,
            self.window_counts,
            self.messages_per_second,
            self.seconds,
            cpu_note(self.cpu)
        )
    }
}

impl MaxRun for PeerThroughput {
    fn summary(&self) -> String {
        PeerThroughput::summary(self)
    }
    fn messages_per_second(&self) -> f64 {
        self.messages_per_second
    }
}

/// "CPU server x cores, load tool y" for a summary line.
pub fn cpu_note(cpu: CpuUse) -> String {
    format!(
        "CPU server {} cores, load tool {:.2}",
        cpu.server_cores.map_or("n/a".into(), |c| format!("{c:.2}")),
        cpu.load_cores
    )
}
