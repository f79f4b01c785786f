//! A Matrix load client: the same scenarios as for Anytime, against a Matrix homeserver
//! (Synapse), over the client-server API on plain HTTP/1.1 (loopback, no TLS).
//!
//! Users register themselves (`POST /_matrix/client/v3/register` with `m.login.dummy`); each
//! 1:1 pair gets its own room (created by the sender with the receiver invited, then joined by
//! the receiver); messages are `m.room.message` events sent with
//! `PUT /_matrix/client/v3/rooms/{room}/send/m.room.message/{txnId}` whose `body` is the base64
//! of a payload of the same size as Anytime's (the first 12 bytes are the same stamp as in
//! latency.rs and xmpp.rs: message number or intended send time, and the sender). Receivers
//! long-poll `GET /_matrix/client/v3/sync` (`since`, `timeout`, an inline filter that keeps only
//! `m.room.message` timeline events).
//!
//! Semantics: Synapse answers a send (200 with the event id) after the event is persisted in its
//! database, the nearest thing to Anytime's `Sent`; the closed-loop window is therefore the number
//! of unanswered sends per sender, as for Anytime. Concurrent sends into one room may be ordered
//! differently from how they were issued, so receivers check that every message arrives exactly
//! once and from the right sender, not their order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use crate::latency::ClosedLoop;
use crate::latency::{
    latency_histogram, micros_since, sweep_with, CpuMeter, LatencyRun, PeerThroughput, Percentiles, Schedule, Sweep,
    STAMP_BYTES,
};
use crate::FanoutReport;

/// How long a sync long-poll waits on the server for new events.
const SYNC_TIMEOUT_MS: u64 = 30_000;
/// How long any one request may take before the run fails (long-polls get this on top).
const REQUEST_WAIT: Duration = Duration::from_secs(120);
/// A receiver that gets no message for this long fails the run.
const STARVED: Duration = Duration::from_secs(120);
/// Concurrent requests while setting up users and rooms.
const SETUP_CONCURRENCY: usize = 16;

/// Where the homeserver is.
#[derive(Debug, Clone)]
pub struct MatrixServer {
    /// e.g. `http://127.0.0.1:8008`
    pub base_url: String,
    /// Most sends in flight over all senders (each is one HTTP/1.1 connection).
    pub max_in_flight: usize,
    /// The homeserver's process id, for its CPU use.
    pub pid: Option<u32>,
}

/// A logged-in user (one device, one access token).
#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: String,
    token: String,
}

/// The client-server API calls the scenarios use. Cheap to clone (one connection pool).
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    /// Bounds the sends in flight, hence the connections: Synapse listens with a backlog of 50
    /// and a storm of new connections times out.
    sends: Arc<Semaphore>,
}

/// Percent-encodes one path segment (room ids carry `!` and `:`, transaction ids are ours).
pub fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The response body, or an error naming the call, the status and the server's error text.
async fn checked(response: reqwest::Response, what: &str) -> anyhow::Result<Vec<u8>> {
    let status = response.status();
    let body = response.bytes().await.with_context(|| format!("while reading the answer to {what}"))?;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body);
        anyhow::bail!("{what} answered {status}: {}", text.chars().take(300).collect::<String>());
    }
    Ok(body.to_vec())
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> anyhow::Result<T> {
    serde_json::from_slice(body).with_context(|| format!("unexpected answer to {what}"))
}

#[derive(Deserialize)]
struct Registered {
    user_id: String,
    access_token: String,
}

#[derive(Deserialize)]
struct RoomId {
    room_id: String,
}

#[derive(Deserialize)]
struct EventId {
    #[allow(dead_code)]
    event_id: String,
}

/// The parts of a `/sync` answer the load client reads.
#[derive(Debug, Deserialize)]
pub struct SyncResponse {
    pub next_batch: String,
    #[serde(default)]
    pub rooms: SyncRooms,
}

#[derive(Debug, Default, Deserialize)]
pub struct SyncRooms {
    #[serde(default)]
    pub join: HashMap<String, JoinedRoom>,
}

#[derive(Debug, Default, Deserialize)]
pub struct JoinedRoom {
    #[serde(default)]
    pub timeline: Timeline,
}

#[derive(Debug, Default, Deserialize)]
pub struct Timeline {
    #[serde(default)]
    pub events: Vec<RoomEvent>,
    /// The server left events out (a gap): the run would miss messages.
    #[serde(default)]
    pub limited: bool,
}

#[derive(Debug, Deserialize)]
pub struct RoomEvent {
    #[serde(rename = "type")]
    pub kind: String,
    pub sender: String,
    #[serde(default)]
    pub content: serde_json::Value,
}

impl SyncResponse {
    /// `(sender, body)` of the `m.room.message` events in `room`.
    ///
    /// A `limited` timeline is accepted: Synapse marks a timeline limited whenever it had to read
    /// the events from its database instead of its stream cache, even if it returned all of them.
    /// The filter's limit is larger than all messages a run sends into one room, and receivers
    /// count every message exactly once (a lost one fails the run by starvation), so nothing can
    /// be skipped unnoticed.
    pub fn messages(&self, room: &str) -> anyhow::Result<Vec<(&str, &str)>> {
        let Some(joined) = self.rooms.join.get(room) else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for event in &joined.timeline.events {
            if event.kind != "m.room.message" {
                continue;
            }
            let body = event.content.get("body").and_then(|b| b.as_str()).context("m.room.message without a body")?;
            out.push((event.sender.as_str(), body));
        }
        Ok(out)
    }
}

/// An inline sync filter: only `m.room.message` events of one room, up to `limit` per sync;
/// no state, presence, receipts, typing or account data.
pub fn sync_filter(room: &str, limit: usize) -> String {
    serde_json::json!({
        "room": {
            "rooms": [room],
            "timeline": {"limit": limit, "types": ["m.room.message"]},
            "state": {"types": []},
            "ephemeral": {"types": []},
            "account_data": {"types": []},
        },
        "presence": {"types": []},
        "account_data": {"types": []},
    })
    .to_string()
}

impl Api {
    pub fn new(base_url: &str, max_in_flight: usize) -> anyhow::Result<Api> {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(300))
            .build()
            .context("while building the HTTP client")?;
        Ok(Api {
            http,
            base: format!("{}/_matrix/client/v3", base_url.trim_end_matches('/')),
            sends: Arc::new(Semaphore::new(max_in_flight.max(1))),
        })
    }

    /// Registers `username` (open registration, `m.login.dummy`) and returns its session.
    pub async fn register(&self, username: &str) -> anyhow::Result<Session> {
        let what = format!("registering {username}");
        let body = serde_json::json!({
            "auth": {"type": "m.login.dummy"},
            "username": username,
            "password": format!("password-{username}"),
            "initial_device_display_name": "anytime-load",
        });
        let response = self
            .http
            .post(format!("{}/register", self.base))
            .json(&body)
            .timeout(REQUEST_WAIT)
            .send()
            .await
            .with_context(|| what.clone())?;
        let registered: Registered = parse(&checked(response, &what).await?, &what)?;
        Ok(Session { user_id: registered.user_id, token: registered.access_token })
    }

    async fn post_json(&self, session: &Session, path: &str, body: &serde_json::Value) -> anyhow::Result<Vec<u8>> {
        let what = format!("POST {path}");
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&session.token)
            .json(body)
            .timeout(REQUEST_WAIT)
            .send()
            .await
            .with_context(|| what.clone())?;
        checked(response, &what).await
    }

    /// Creates a room; `invite` are user ids.
    pub async fn create_room(&self, session: &Session, preset: &str, invite: &[String]) -> anyhow::Result<String> {
        let body = serde_json::json!({"preset": preset, "invite": invite, "is_direct": invite.len() == 1});
        let answer = self.post_json(session, "/createRoom", &body).await?;
        let room: RoomId = parse(&answer, "createRoom")?;
        Ok(room.room_id)
    }

    pub async fn join(&self, session: &Session, room: &str) -> anyhow::Result<()> {
        self.post_json(session, &format!("/join/{}", encode_segment(room)), &serde_json::json!({})).await?;
        Ok(())
    }

    /// Sends one `m.room.message` (`m.text`) and waits for the server's answer (the event is
    /// persisted by then).
    pub async fn send_text(&self, session: &Session, room: &str, txn: &str, body: String) -> anyhow::Result<()> {
        let what = "PUT …/send/m.room.message";
        let _permit = self.sends.acquire().await.context("send permits closed")?;
        let response = self
            .http
            .put(format!("{}/rooms/{}/send/m.room.message/{}", self.base, encode_segment(room), encode_segment(txn)))
            .bearer_auth(&session.token)
            .json(&serde_json::json!({"msgtype": "m.text", "body": body}))
            .timeout(REQUEST_WAIT)
            .send()
            .await
            .context(what)?;
        let _: EventId = parse(&checked(response, what).await?, what)?;
        Ok(())
    }

    /// One `/sync`: long-polls up to `timeout_ms` for events after `since`.
    pub async fn sync(
        &self,
        session: &Session,
        since: Option<&str>,
        timeout_ms: u64,
        filter: &str,
    ) -> anyhow::Result<SyncResponse> {
        let what = "GET /sync";
        let timeout = timeout_ms.to_string();
        let mut query = vec![("timeout", timeout.as_str()), ("filter", filter)];
        if let Some(since) = since {
            query.push(("since", since));
        }
        let response = self
            .http
            .get(format!("{}/sync", self.base))
            .bearer_auth(&session.token)
            .query(&query)
            .timeout(REQUEST_WAIT + Duration::from_millis(timeout_ms))
            .send()
            .await
            .context(what)?;
        parse(&checked(response, what).await?, what)
    }
}

/// A receiver's view of one room: long-polls `/sync` from where it left off.
pub struct RoomReceiver {
    api: Api,
    session: Session,
    room: String,
    filter: String,
    since: String,
}

impl RoomReceiver {
    /// Does the first sync (whatever is in the room already is skipped).
    pub async fn start(api: Api, session: Session, room: String, limit: usize) -> anyhow::Result<RoomReceiver> {
        let filter = sync_filter(&room, limit);
        let first = api.sync(&session, None, 0, &filter).await.context("first sync")?;
        first.messages(&room)?;
        Ok(RoomReceiver { api, session, room, filter, since: first.next_batch })
    }

    /// Waits for the next batch of messages: `(sender, body)` with the time they arrived. Fails
    /// if none came for `STARVED` (a lost message would leave its receiver waiting).
    pub async fn next(&mut self) -> anyhow::Result<(Vec<(String, String)>, Instant)> {
        let deadline = Instant::now() + STARVED;
        loop {
            anyhow::ensure!(Instant::now() < deadline, "receiver starved: no message in {} s", STARVED.as_secs());
            let response = self.api.sync(&self.session, Some(&self.since), SYNC_TIMEOUT_MS, &self.filter).await?;
            let at = Instant::now();
            let messages: Vec<(String, String)> =
                response.messages(&self.room)?.into_iter().map(|(s, b)| (s.to_owned(), b.to_owned())).collect();
            self.since = response.next_batch;
            if !messages.is_empty() {
                return Ok((messages, at));
            }
        }
    }
}

/// Payload of `size` bytes with the stamp (`value` and `sender`) in front, base64-encoded.
pub fn stamped_body(size: usize, value: u64, sender: u32) -> String {
    let mut payload = vec![0x5a; size.max(STAMP_BYTES)];
    payload[0..8].copy_from_slice(&value.to_le_bytes());
    payload[8..12].copy_from_slice(&sender.to_le_bytes());
    base64::engine::general_purpose::STANDARD.encode(payload)
}

/// The stamp from a received body.
pub fn read_stamp(body: &str) -> anyhow::Result<(u64, u32)> {
    let payload =
        base64::engine::general_purpose::STANDARD.decode(body.trim()).context("message body is not base64")?;
    anyhow::ensure!(payload.len() >= STAMP_BYTES, "message body too short for a stamp");
    let value = u64::from_le_bytes(payload[0..8].try_into().context("stamp")?);
    let sender = u32::from_le_bytes(payload[8..12].try_into().context("stamp")?);
    Ok((value, sender))
}

fn run_tag() -> String {
    let id = anytime_testkit::msg_id();
    id.0[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// One sender and one receiver in their own room, the receiver already synced once.
struct Pair {
    sender: Session,
    receiver: RoomReceiver,
    room: String,
}

/// Registers `count` pairs (`s<tag>x<i>`, `r<tag>x<i>`), a room each (the sender creates it with
/// the receiver invited, the receiver joins) and the receivers' first sync; `limit` is the most
/// messages one sync may return.
async fn setup_pairs(api: &Api, count: usize, limit: usize) -> anyhow::Result<Vec<Pair>> {
    let tag = run_tag();
    let mut pairs: Vec<(usize, Pair)> = futures_util::stream::iter(0..count)
        .map(|i| {
            let (api, tag) = (api.clone(), tag.clone());
            async move {
                let sender = api.register(&format!("s{tag}x{i}")).await?;
                let receiver = api.register(&format!("r{tag}x{i}")).await?;
                let room = api
                    .create_room(&sender, "trusted_private_chat", std::slice::from_ref(&receiver.user_id))
                    .await
                    .with_context(|| format!("while creating the room of pair {i}"))?;
                api.join(&receiver, &room).await.with_context(|| format!("while joining the room of pair {i}"))?;
                let receiver = RoomReceiver::start(api, receiver, room.clone(), limit).await?;
                anyhow::Ok((i, Pair { sender, receiver, room }))
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    pairs.sort_by_key(|(i, _)| *i);
    Ok(pairs.into_iter().map(|(_, p)| p).collect())
}

/// Checks one received message of a 1:1 pair and returns its stamp value.
fn check_message(sender: &str, body: &str, expected_sender: &str, index: usize) -> anyhow::Result<u64> {
    anyhow::ensure!(sender == expected_sender, "receiver {index} got a message from {sender}");
    let (value, from) = read_stamp(body)?;
    anyhow::ensure!(from as usize == index, "message from sender {from} reached receiver {index}");
    Ok(value)
}

pub type ThroughputReport = PeerThroughput;

/// Closed-loop one-to-one throughput: each sender keeps `window` sends unanswered; a message
/// counts when its receiver got it through `/sync`.
pub async fn throughput(
    server: &MatrixServer,
    pairs: usize,
    messages_per_sender: usize,
    window: usize,
    payload_bytes: usize,
) -> anyhow::Result<ThroughputReport> {
    anyhow::ensure!(
        pairs > 0 && window > 0 && messages_per_sender > 0,
        "pairs, window and messages must be at least 1"
    );
    let api = Api::new(&server.base_url, server.max_in_flight)?;
    let clients = setup_pairs(&api, pairs, messages_per_sender + 16).await?;
    let tag = run_tag();
    let started = Instant::now();
    let meter = CpuMeter::start(server.pid);
    let mut tasks = JoinSet::new();
    for (index, pair) in clients.into_iter().enumerate() {
        let Pair { sender, mut receiver, room } = pair;
        let expected_sender = sender.user_id.clone();
        let (api, tag) = (api.clone(), tag.clone());
        tasks.spawn(async move {
            let mut in_flight = FuturesUnordered::new();
            for k in 0..messages_per_sender {
                if in_flight.len() == window {
                    in_flight.next().await.context("no send in flight")??;
                }
                let (api, sender, room) = (api.clone(), sender.clone(), room.clone());
                let txn = format!("{tag}-{k}");
                let body = stamped_body(payload_bytes, k as u64, index as u32);
                in_flight.push(async move { api.send_text(&sender, &room, &txn, body).await });
            }
            while let Some(result) = in_flight.next().await {
                result?;
            }
            anyhow::Ok(())
        });
        tasks.spawn(async move {
            let mut seen = vec![false; messages_per_sender];
            let mut received = 0;
            while received < messages_per_sender {
                let (messages, _) = receiver.next().await?;
                for (from, body) in &messages {
                    let k = check_message(from, body, &expected_sender, index)?;
                    let slot = seen.get_mut(k as usize).context("message number out of range")?;
                    anyhow::ensure!(!*slot, "receiver {index} got message {k} twice");
                    *slot = true;
                    received += 1;
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.context("load task panicked")??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = meter.stop();
    let messages = pairs * messages_per_sender;
    Ok(ThroughputReport {
        pairs,
        messages,
        payload_bytes,
        window,
        seconds,
        messages_per_second: messages as f64 / seconds,
        cpu,
        label: "matrix 1:1",
        window_counts: "unanswered sends",
    })
}

/// Open-loop one-to-one latency at `rate` messages/s over all pairs (latency.rs's schedule;
/// latency from the intended send time, carried in the body, to the receiver's `/sync` answer).
/// Sends are issued on schedule whatever the answers to earlier sends (each its own request).
pub async fn open_loop(
    server: &MatrixServer,
    pairs: usize,
    rate: f64,
    seconds: f64,
    warmup_seconds: f64,
    payload_bytes: usize,
) -> anyhow::Result<LatencyRun> {
    anyhow::ensure!(pairs > 0 && rate > 0.0 && seconds > 0.0, "pairs, rate and seconds must be positive");
    let api = Api::new(&server.base_url, server.max_in_flight)?;
    let schedule_probe = Schedule { start: Instant::now(), pairs, rate };
    let n = schedule_probe.messages_per_sender(seconds);
    let clients = setup_pairs(&api, pairs, n + 16).await?;
    let tag = run_tag();
    let epoch = Instant::now();
    let schedule = Schedule { start: epoch + Duration::from_millis(200), pairs, rate };
    let timed_from = micros_since(epoch, schedule.start) + (warmup_seconds * 1e6) as u64;
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for (index, pair) in clients.into_iter().enumerate() {
        let Pair { sender, mut receiver, room } = pair;
        let expected_sender = sender.user_id.clone();
        let (api, tag) = (api.clone(), tag.clone());
        senders.push(tokio::spawn(async move {
            let mut max_lag = Duration::ZERO;
            let mut sends = JoinSet::new();
            for k in 0..n {
                let intended = schedule.intended(index, k);
                tokio::time::sleep_until(intended).await;
                max_lag = max_lag.max(Instant::now().saturating_duration_since(intended));
                let body = stamped_body(payload_bytes, micros_since(epoch, intended), index as u32);
                let (api, sender, room, txn) = (api.clone(), sender.clone(), room.clone(), format!("{tag}-{k}"));
                sends.spawn(async move { api.send_text(&sender, &room, &txn, body).await });
                while let Some(done) = sends.try_join_next() {
                    done.context("send task panicked")??;
                }
            }
            while let Some(done) = sends.join_next().await {
                done.context("send task panicked")??;
            }
            anyhow::Ok(max_lag)
        }));
        receivers.push(tokio::spawn(async move {
            let mut histogram = latency_histogram();
            let mut last = Instant::now();
            let mut received = 0;
            while received < n {
                let (messages, at) = receiver.next().await?;
                last = at;
                for (from, body) in &messages {
                    let intended_us = check_message(from, body, &expected_sender, index)?;
                    if intended_us >= timed_from {
                        histogram.saturating_record(micros_since(epoch, at).saturating_sub(intended_us).max(1));
                    }
                    received += 1;
                }
            }
            anyhow::ensure!(received == n, "receiver {index} got {received} messages, {n} were sent");
            anyhow::Ok((histogram, last))
        }));
    }
    tokio::time::sleep_until(schedule.start).await;
    let meter = CpuMeter::start(server.pid);
    let mut histogram = latency_histogram();
    let mut last = epoch;
    for task in receivers {
        let (h, at) = task.await.context("receiver panicked")??;
        histogram.add(&h).context("while merging histograms")?;
        last = last.max(at);
    }
    let mut max_lag = Duration::ZERO;
    for task in senders {
        max_lag = max_lag.max(task.await.context("sender panicked")??);
    }
    let cpu = meter.stop();
    let messages = n * pairs;
    let seconds = last.saturating_duration_since(schedule.start).as_secs_f64();
    Ok(LatencyRun {
        pairs,
        payload_bytes,
        target_rate: rate,
        messages,
        seconds,
        delivered_per_second: messages as f64 / seconds,
        max_send_lag_ms: max_lag.as_secs_f64() * 1000.0,
        latency: Percentiles::from_histogram(&histogram),
        cpu,
        store: None,
    })
}

pub type MatrixLatencySweep = Sweep<PeerThroughput>;

/// Finds the maximum rate closed loop (unless `max` is absent: then `rate` is the maximum),
/// then runs open loop at each fraction of it.
#[allow(clippy::too_many_arguments)]
pub async fn sweep(
    server: &MatrixServer,
    max: Option<ClosedLoop>,
    rate: f64,
    fractions: &[f64],
    pairs: usize,
    seconds: f64,
    warmup_seconds: f64,
    payload_bytes: usize,
) -> anyhow::Result<MatrixLatencySweep> {
    let max = max.map(|c| throughput(server, c.pairs, c.messages_per_sender, c.window, payload_bytes));
    sweep_with("matrix latency", max, rate, fractions, |rate| {
        open_loop(server, pairs, rate, seconds, warmup_seconds, payload_bytes)
    })
    .await
}

/// Group fan-out in one room: `members` users (the sender included) joined to a public room,
/// all long-polling `/sync`; one sender keeps 16 sends unanswered (an answered send is persisted,
/// as Anytime's `Sent`); deliveries/s and the time from send to the last member's receipt.
pub async fn fanout(
    server: &MatrixServer,
    members: usize,
    messages: usize,
    payload_bytes: usize,
) -> anyhow::Result<FanoutReport> {
    anyhow::ensure!(members >= 2 && messages > 0, "a group needs at least 2 members and 1 message");
    const WINDOW: usize = 16;
    let api = Api::new(&server.base_url, server.max_in_flight)?;
    let tag = run_tag();
    let owner = api.register(&format!("g{tag}x0")).await?;
    let room = api.create_room(&owner, "public_chat", &[]).await.context("while creating the group room")?;
    let mut joined: Vec<(usize, Session)> = futures_util::stream::iter(1..members)
        .map(|i| {
            let (api, tag, room) = (api.clone(), tag.clone(), room.clone());
            async move {
                let member = api.register(&format!("g{tag}x{i}")).await?;
                api.join(&member, &room).await.with_context(|| format!("while member {i} joined the group room"))?;
                anyhow::Ok((i, member))
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    joined.sort_by_key(|(i, _)| *i);
    let sessions: Vec<Session> = std::iter::once(owner.clone()).chain(joined.into_iter().map(|(_, s)| s)).collect();
    let receivers: Vec<RoomReceiver> = futures_util::stream::iter(sessions)
        .map(|session| RoomReceiver::start(api.clone(), session, room.clone(), messages + WINDOW))
        .buffered(SETUP_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let epoch = Instant::now();
    let mut readers = Vec::with_capacity(members);
    for mut receiver in receivers {
        let owner_id = owner.user_id.clone();
        readers.push(tokio::spawn(async move {
            // Receive times (µs since `epoch`) by message number.
            let mut at = vec![0u64; messages];
            let mut got = 0;
            while got < messages {
                let (batch, when) = receiver.next().await?;
                for (from, body) in &batch {
                    anyhow::ensure!(*from == owner_id, "group message from {from}");
                    let (k, _) = read_stamp(body)?;
                    let slot = at.get_mut(k as usize).context("message number out of range")?;
                    anyhow::ensure!(*slot == 0, "message {k} delivered twice");
                    *slot = micros_since(epoch, when).max(1);
                    got += 1;
                }
            }
            anyhow::Ok(at)
        }));
    }
    let started = Instant::now();
    let mut sent_at = vec![0u64; messages];
    let mut in_flight = FuturesUnordered::new();
    for (k, slot) in sent_at.iter_mut().enumerate() {
        if in_flight.len() == WINDOW {
            in_flight.next().await.context("no send in flight")??;
        }
        *slot = micros_since(epoch, Instant::now());
        let (api, owner, room) = (api.clone(), owner.clone(), room.clone());
        let (txn, body) = (format!("{tag}-{k}"), stamped_body(payload_bytes, k as u64, 0));
        in_flight.push(async move { api.send_text(&owner, &room, &txn, body).await });
    }
    while let Some(result) = in_flight.next().await {
        result?;
    }
    let mut last = vec![0u64; messages];
    for reader in readers {
        let at = reader.await.context("reader panicked")??;
        for (l, a) in last.iter_mut().zip(at) {
            *l = (*l).max(a);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut histogram = latency_histogram();
    for (l, s) in last.iter().zip(&sent_at) {
        histogram.saturating_record(l.saturating_sub(*s).max(1));
    }
    let deliveries = messages * members;
    Ok(FanoutReport {
        members,
        messages,
        deliveries,
        seconds,
        deliveries_per_second: deliveries as f64 / seconds,
        last_delivery_ms_p50: histogram.value_at_quantile(0.50) as f64 / 1000.0,
        last_delivery_ms_p99: histogram.value_at_quantile(0.99) as f64 / 1000.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_path_segments() {
        assert_eq!(encode_segment("!AbC123:localhost"), "%21AbC123%3Alocalhost");
        assert_eq!(encode_segment("0a1b-17"), "0a1b-17");
        assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn reads_messages_from_a_sync_answer() -> anyhow::Result<()> {
        let body = stamped_body(200, 42, 3);
        assert_eq!(body.len(), 268);
        let answer = serde_json::json!({
            "next_batch": "s72595_4483_1934",
            "account_data": {"events": []},
            "rooms": {"join": {
                "!room:localhost": {"timeline": {"events": [
                    {"type": "m.room.member", "sender": "@a:localhost", "content": {"membership": "join"}, "state_key": "@a:localhost"},
                    {"type": "m.room.message", "sender": "@a:localhost", "event_id": "$1", "origin_server_ts": 1,
                     "content": {"msgtype": "m.text", "body": body}}
                ], "limited": false, "prev_batch": "t1"}},
                "!other:localhost": {"timeline": {"events": [
                    {"type": "m.room.message", "sender": "@b:localhost", "content": {"msgtype": "m.text", "body": "x"}}
                ]}}
            }}
        })
        .to_string();
        let sync: SyncResponse = serde_json::from_str(&answer)?;
        assert_eq!(sync.next_batch, "s72595_4483_1934");
        let messages = sync.messages("!room:localhost")?;
        assert_eq!(messages.len(), 1);
        assert_eq!(check_message(messages[0].0, messages[0].1, "@a:localhost", 3)?, 42);
        assert!(check_message(messages[0].0, messages[0].1, "@b:localhost", 3).is_err());
        assert!(check_message(messages[0].0, messages[0].1, "@a:localhost", 4).is_err());
        assert!(sync.messages("!none:localhost")?.is_empty());
        // An empty answer (long-poll timed out) has no rooms at all.
        let empty: SyncResponse = serde_json::from_str(r#"{"next_batch":"s2"}"#)?;
        assert!(empty.messages("!room:localhost")?.is_empty());
        Ok(())
    }

    #[test]
    fn a_message_without_a_body_is_an_error() -> anyhow::Result<()> {
        let answer = r#"{"next_batch":"s3","rooms":{"join":{"!r:l":{"timeline":{"events":[
            {"type":"m.room.message","sender":"@a:l","content":{"msgtype":"m.text"}}],"limited":true}}}}}"#;
        let sync: SyncResponse = serde_json::from_str(answer)?;
        assert!(sync.messages("!r:l").is_err());
        Ok(())
    }

    #[test]
    fn the_filter_keeps_only_messages_of_one_room() -> anyhow::Result<()> {
        let filter: serde_json::Value = serde_json::from_str(&sync_filter("!r:l", 80))?;
        assert_eq!(filter["room"]["rooms"][0], "!r:l");
        assert_eq!(filter["room"]["timeline"]["limit"], 80);
        assert_eq!(filter["room"]["timeline"]["types"][0], "m.room.message");
        Ok(())
    }
}
