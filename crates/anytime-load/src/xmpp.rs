//! An XMPP load client: the same scenarios as for Anytime, against an XMPP server (ejabberd), so
//! both can be measured side by side in one run.
//!
//! Raw XMPP over a TCP connection without TLS: stream header, in-band registration (XEP-0077),
//! SASL PLAIN, resource binding, session, initial presence; then `<message>` stanzas whose body is
//! the base64 of a payload of the same size as Anytime's. As with Anytime, the first 12 payload
//! bytes carry a stamp (intended send time or message number, and the sender), so receivers check
//! order and time deliveries without trusting anything the server adds. Stanzas are parsed with
//! quick-xml, one stream per connection.
//!
//! Semantics differ from Anytime's and the report says so: XMPP has no per-message
//! acknowledgement, so the closed-loop window is end to end (a sender may have `window` messages
//! not yet *received*), and an online message is routed in memory — nothing is written to disk.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use quick_xml::events::{BytesStart, Event};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;

pub use crate::latency::ClosedLoop;
use crate::latency::{
    latency_histogram, micros_since, sweep_with, CpuMeter, LatencyRun, PeerThroughput, Percentiles, Schedule, Sweep,
    STAMP_BYTES,
};
use crate::{ConnectionsReport, FanoutReport};

/// How long any single wait for a stanza may take before the run fails.
const STANZA_WAIT: Duration = Duration::from_secs(60);

/// Where the XMPP server is.
#[derive(Debug, Clone)]
pub struct XmppServer {
    pub addr: SocketAddr,
    /// The XMPP domain (virtual host), e.g. `localhost`.
    pub domain: String,
    /// The MUC service, e.g. `conference.localhost`.
    pub muc_domain: String,
    /// The server's process id (beam.smp), for its CPU and memory use.
    pub pid: Option<u32>,
}

/// The parts of a top-level stanza (or stream element) the load client looks at.
#[derive(Debug, Default, Clone)]
pub struct Stanza {
    /// Local name: `message`, `presence`, `iq`, `features`, `success`, `failure`, `error`, …
    pub name: String,
    pub id: Option<String>,
    pub kind: Option<String>,
    pub from: Option<String>,
    /// Text of a direct `<body>` child.
    pub body: Option<String>,
    /// Local names of all descendants, in document order.
    pub children: Vec<String>,
    /// `code` attributes of `<status>` descendants (MUC).
    pub status_codes: Vec<String>,
}

impl Stanza {
    fn from_start(start: &BytesStart<'_>) -> Stanza {
        let mut stanza = Stanza { name: local_name(start), ..Stanza::default() };
        for attribute in start.attributes().flatten() {
            let value = Some(attribute.value.to_string());
            match attribute.key.local_name().as_ref() {
                "id" => stanza.id = value,
                "type" => stanza.kind = value,
                "from" => stanza.from = value,
                _ => {}
            }
        }
        stanza
    }

    fn is_error(&self) -> bool {
        self.kind.as_deref() == Some("error")
    }

    fn has_child(&self, name: &str) -> bool {
        self.children.iter().any(|c| c == name)
    }
}

fn local_name(start: &BytesStart<'_>) -> String {
    start.local_name().as_ref().to_owned()
}

/// Reads top-level stanzas from one XMPP stream. Not cancel-safe: a stanza read halfway is lost,
/// so callers never race `next` against anything else.
pub struct StanzaReader {
    reader: quick_xml::Reader<BufReader<OwnedReadHalf>>,
    buf: Vec<u8>,
}

impl StanzaReader {
    fn new(read: OwnedReadHalf) -> StanzaReader {
        let mut reader = quick_xml::Reader::from_reader(BufReader::with_capacity(64 * 1024, read));
        // A stream restart (after SASL) opens a second <stream:stream> inside the first.
        reader.config_mut().check_end_names = false;
        StanzaReader { reader, buf: Vec::with_capacity(4096) }
    }

    /// The next top-level element; `None` when the server closed the stream.
    pub async fn next(&mut self) -> anyhow::Result<Option<Stanza>> {
        let mut current: Option<Stanza> = None;
        let mut depth = 0usize;
        let mut in_body = false;
        loop {
            self.buf.clear();
            let event =
                self.reader.read_event_into_async(&mut self.buf).await.context("malformed XML from the server")?;
            match event {
                Event::Start(start) => match current.as_mut() {
                    None if start.local_name().as_ref() == "stream" => {}
                    None => {
                        current = Some(Stanza::from_start(&start));
                        depth = 1;
                    }
                    Some(stanza) => {
                        depth += 1;
                        let name = local_name(&start);
                        in_body = depth == 2 && name == "body";
                        if in_body {
                            stanza.body = Some(String::new());
                        }
                        stanza.children.push(name);
                    }
                },
                Event::Empty(start) => match current.as_mut() {
                    None => return Ok(Some(Stanza::from_start(&start))),
                    Some(stanza) => {
                        let name = local_name(&start);
                        if name == "status" {
                            if let Some(code) = start.attributes().flatten().find(|a| a.key.as_ref() == "code") {
                                stanza.status_codes.push(code.value.to_string());
                            }
                        }
                        stanza.children.push(name);
                    }
                },
                Event::Text(text) if in_body => {
                    if let Some(body) = current.as_mut().and_then(|s| s.body.as_mut()) {
                        body.push_str(&text.xml10_content());
                    }
                }
                Event::End(_) => match current.as_mut() {
                    // </stream:stream>
                    None => return Ok(None),
                    Some(_) => {
                        in_body = false;
                        depth -= 1;
                        if depth == 0 {
                            return Ok(current.take());
                        }
                    }
                },
                Event::Eof => return Ok(None),
                _ => {}
            }
        }
    }

    /// The next stanza within `STANZA_WAIT`; fails if the stream closed.
    async fn expect(&mut self, what: &str) -> anyhow::Result<Stanza> {
        tokio::time::timeout(STANZA_WAIT, self.next())
            .await
            .with_context(|| format!("no answer in time while waiting for {what}"))??
            .with_context(|| format!("the server closed the stream while we waited for {what}"))
    }

    /// Skips stanzas until one matches.
    async fn wait_for(&mut self, what: &str, mut pick: impl FnMut(&Stanza) -> bool) -> anyhow::Result<Stanza> {
        loop {
            let stanza = self.expect(what).await?;
            if stanza.name == "error" {
                anyhow::bail!("stream error while waiting for {what}: {:?}", stanza.children);
            }
            if pick(&stanza) {
                return Ok(stanza);
            }
        }
    }
}

/// One logged-in XMPP connection.
pub struct XmppClient {
    pub reader: StanzaReader,
    pub writer: OwnedWriteHalf,
    /// Full JID (user@domain/resource).
    pub jid: String,
}

fn stream_header(domain: &str) -> String {
    format!("<?xml version='1.0'?><stream:stream to='{domain}' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>")
}

/// Opens a TCP connection to the server, optionally from a chosen local address.
async fn open_tcp(addr: SocketAddr, local: Option<IpAddr>) -> anyhow::Result<TcpStream> {
    let stream = match local {
        None => TcpStream::connect(addr).await,
        Some(local) => {
            let socket =
                if local.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
            socket.bind(SocketAddr::new(local, 0)).context("while binding the local address")?;
            socket.connect(addr).await
        }
    };
    let stream = stream.with_context(|| format!("while connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Usernames in XMPP are case-insensitive and restricted; ours are lowercase ASCII and digits.
fn password_for(user: &str) -> String {
    format!("password-{user}")
}

impl XmppClient {
    async fn write(&mut self, text: &str) -> anyhow::Result<()> {
        self.writer.write_all(text.as_bytes()).await.context("while writing to the XMPP stream")
    }

    /// Connects and logs in as `user` (registering it first if `register`), binds a resource,
    /// starts a session and sends initial presence, waiting for the server's echo of it so that
    /// messages sent to the user from now on are delivered to this connection.
    pub async fn login(
        server: &XmppServer,
        user: &str,
        register: bool,
        local: Option<IpAddr>,
    ) -> anyhow::Result<XmppClient> {
        let stream = open_tcp(server.addr, local).await?;
        let (read, writer) = stream.into_split();
        let mut client = XmppClient { reader: StanzaReader::new(read), writer, jid: String::new() };
        let password = password_for(user);
        client.write(&stream_header(&server.domain)).await?;
        client.reader.wait_for("stream features", |s| s.name == "features").await?;
        if register {
            client
                .write(&format!(
                    "<iq type='set' id='reg'><query xmlns='jabber:iq:register'><username>{user}</username><password>{password}</password></query></iq>"
                ))
                .await?;
            let answer = client.reader.wait_for("registration", |s| s.id.as_deref() == Some("reg")).await?;
            anyhow::ensure!(
                !answer.is_error() || answer.has_child("conflict"),
                "in-band registration of {user} refused: {:?}",
                answer.children
            );
        }
        let credentials = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        client
            .write(&format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{credentials}</auth>"))
            .await?;
        let answer = client.reader.wait_for("SASL", |s| s.name == "success" || s.name == "failure").await?;
        anyhow::ensure!(answer.name == "success", "SASL PLAIN failed for {user}: {:?}", answer.children);
        client.write(&stream_header(&server.domain)).await?;
        client.reader.wait_for("stream features after SASL", |s| s.name == "features").await?;
        client
            .write("<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>load</resource></bind></iq>")
            .await?;
        let bound = client.reader.wait_for("resource binding", |s| s.id.as_deref() == Some("bind")).await?;
        anyhow::ensure!(!bound.is_error(), "resource binding failed: {:?}", bound.children);
        client.jid = format!("{user}@{}/load", server.domain);
        client.write("<iq type='set' id='sess'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>").await?;
        client.reader.wait_for("session", |s| s.id.as_deref() == Some("sess")).await?;
        client.write("<presence/>").await?;
        let bare = format!("{user}@{}", server.domain);
        client
            .reader
            .wait_for("own presence", |s| {
                s.name == "presence" && s.from.as_deref().is_some_and(|f| f.starts_with(&bare))
            })
            .await?;
        Ok(client)
    }

    /// Ends the stream politely.
    pub async fn close(mut self) {
        let _ = self.write("</stream:stream>").await;
        let _ = self.writer.shutdown().await;
    }
}

/// Payload of `size` bytes with the stamp (`value` and `sender`) in front, base64-encoded.
fn stamped_body(size: usize, value: u64, sender: u32) -> String {
    let mut payload = vec![0x5a; size.max(STAMP_BYTES)];
    payload[0..8].copy_from_slice(&value.to_le_bytes());
    payload[8..12].copy_from_slice(&sender.to_le_bytes());
    base64::engine::general_purpose::STANDARD.encode(payload)
}

/// The stamp from a received body.
fn read_stamp(body: &str) -> anyhow::Result<(u64, u32)> {
    let payload =
        base64::engine::general_purpose::STANDARD.decode(body.trim()).context("message body is not base64")?;
    anyhow::ensure!(payload.len() >= STAMP_BYTES, "message body too short for a stamp");
    let value = u64::from_le_bytes(payload[0..8].try_into().context("stamp")?);
    let sender = u32::from_le_bytes(payload[8..12].try_into().context("stamp")?);
    Ok((value, sender))
}

/// Reads until the stream ends, failing on any error stanza (a bounced message, a stream error).
async fn drain(mut reader: StanzaReader) -> anyhow::Result<()> {
    while let Some(stanza) = reader.next().await? {
        anyhow::ensure!(stanza.name != "error" && !stanza.is_error(), "the server sent an error: {stanza:?}");
    }
    Ok(())
}

fn run_tag() -> String {
    let id = anytime_testkit::msg_id();
    id.0[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// Registers and logs in `count` sender/receiver pairs (`s<tag>x<i>` → `r<tag>x<i>`).
async fn setup_pairs(server: &XmppServer, count: usize) -> anyhow::Result<Vec<(XmppClient, XmppClient)>> {
    let tag = run_tag();
    let mut pairs = Vec::with_capacity(count);
    for i in 0..count {
        let sender = XmppClient::login(server, &format!("s{tag}x{i}"), true, None).await?;
        let receiver = XmppClient::login(server, &format!("r{tag}x{i}"), true, None).await?;
        pairs.push((sender, receiver));
    }
    Ok(pairs)
}

fn bare(jid: &str) -> &str {
    jid.split('/').next().unwrap_or(jid)
}

pub type ThroughputReport = PeerThroughput;

/// Closed-loop one-to-one throughput: each sender keeps at most `window` messages not yet
/// received by its receiver.
pub async fn throughput(
    server: &XmppServer,
    pairs: usize,
    messages_per_sender: usize,
    window: usize,
    payload_bytes: usize,
) -> anyhow::Result<ThroughputReport> {
    anyhow::ensure!(pairs > 0 && window > 0, "pairs and window must be at least 1");
    let clients = setup_pairs(server, pairs).await?;
    let started = Instant::now();
    let meter = CpuMeter::start(server.pid);
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    let mut drains = Vec::new();
    for (index, (sender, receiver)) in clients.into_iter().enumerate() {
        let credit = Arc::new(Semaphore::new(window));
        let to = bare(&receiver.jid).to_owned();
        let XmppClient { reader, mut writer, .. } = sender;
        drains.push(tokio::spawn(drain(reader)));
        let sender_credit = credit.clone();
        senders.push(tokio::spawn(async move {
            for k in 0..messages_per_sender {
                sender_credit.acquire().await.context("credit closed")?.forget();
                let body = stamped_body(payload_bytes, k as u64, index as u32);
                let stanza = format!("<message to='{to}' type='chat' id='m{k}'><body>{body}</body></message>");
                writer.write_all(stanza.as_bytes()).await.context("while sending a message")?;
            }
            anyhow::Ok(writer)
        }));
        receivers.push(tokio::spawn(async move {
            let XmppClient { mut reader, writer, .. } = receiver;
            let mut next = 0u64;
            while next < messages_per_sender as u64 {
                let stanza = reader.expect("a message").await?;
                anyhow::ensure!(!stanza.is_error() && stanza.name != "error", "the server sent an error: {stanza:?}");
                let Some(body) = stanza.body.filter(|_| stanza.name == "message") else { continue };
                let (k, from) = read_stamp(&body)?;
                anyhow::ensure!(from as usize == index, "message from sender {from} reached receiver {index}");
                anyhow::ensure!(k == next, "receiver {index} expected message {next}, got {k}");
                next += 1;
                credit.add_permits(1);
            }
            anyhow::Ok((reader, writer))
        }));
    }
    let mut open = Vec::new();
    for task in receivers {
        open.push(task.await.context("receiver panicked")??);
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = meter.stop();
    // Writers stay open until the drains are checked: closing one ends that sender's stream.
    let mut writers = Vec::new();
    for task in senders {
        writers.push(task.await.context("sender panicked")??);
    }
    for task in drains {
        if task.is_finished() {
            task.await.context("drain panicked")?.context("a sender's stream")?;
            anyhow::bail!("a sender's stream ended early");
        }
        task.abort();
    }
    drop(open);
    let messages = pairs * messages_per_sender;
    Ok(ThroughputReport {
        pairs,
        messages,
        payload_bytes,
        window,
        seconds,
        messages_per_second: messages as f64 / seconds,
        cpu,
        label: "xmpp 1:1",
        window_counts: "end to end",
    })
}

/// Open-loop one-to-one latency at `rate` messages/s over all pairs (see latency.rs: the same
/// schedule, latency from the intended send time).
pub async fn open_loop(
    server: &XmppServer,
    pairs: usize,
    rate: f64,
    seconds: f64,
    warmup_seconds: f64,
    payload_bytes: usize,
) -> anyhow::Result<LatencyRun> {
    anyhow::ensure!(pairs > 0 && rate > 0.0 && seconds > 0.0, "pairs, rate and seconds must be positive");
    let clients = setup_pairs(server, pairs).await?;
    let epoch = Instant::now();
    let schedule = Schedule { start: epoch + Duration::from_millis(200), pairs, rate };
    let n = schedule.messages_per_sender(seconds);
    let timed_from = micros_since(epoch, schedule.start) + (warmup_seconds * 1e6) as u64;
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    let mut drains = Vec::new();
    for (index, (sender, receiver)) in clients.into_iter().enumerate() {
        let to = bare(&receiver.jid).to_owned();
        let XmppClient { reader, mut writer, .. } = sender;
        drains.push(tokio::spawn(drain(reader)));
        senders.push(tokio::spawn(async move {
            let mut max_lag = Duration::ZERO;
            for k in 0..n {
                let intended = schedule.intended(index, k);
                tokio::time::sleep_until(intended).await;
                max_lag = max_lag.max(Instant::now().saturating_duration_since(intended));
                let body = stamped_body(payload_bytes, micros_since(epoch, intended), index as u32);
                let stanza = format!("<message to='{to}' type='chat' id='m{k}'><body>{body}</body></message>");
                writer.write_all(stanza.as_bytes()).await.context("while sending a message")?;
            }
            anyhow::Ok((writer, max_lag))
        }));
        receivers.push(tokio::spawn(async move {
            let XmppClient { mut reader, writer, .. } = receiver;
            let mut histogram = latency_histogram();
            let mut last = Instant::now();
            let mut received = 0;
            let mut previous = 0u64;
            while received < n {
                let stanza = reader.expect("a message").await?;
                anyhow::ensure!(!stanza.is_error() && stanza.name != "error", "the server sent an error: {stanza:?}");
                let Some(body) = stanza.body.filter(|_| stanza.name == "message") else { continue };
                last = Instant::now();
                let (intended_us, from) = read_stamp(&body)?;
                anyhow::ensure!(from as usize == index, "message from sender {from} reached receiver {index}");
                anyhow::ensure!(intended_us >= previous, "receiver {index}: messages out of order");
                previous = intended_us;
                if intended_us >= timed_from {
                    histogram.saturating_record(micros_since(epoch, last).saturating_sub(intended_us).max(1));
                }
                received += 1;
            }
            anyhow::Ok((histogram, last, reader, writer))
        }));
    }
    tokio::time::sleep_until(schedule.start).await;
    let meter = CpuMeter::start(server.pid);
    let mut histogram = latency_histogram();
    let mut last = epoch;
    let mut open = Vec::new();
    for task in receivers {
        let (h, at, reader, writer) = task.await.context("receiver panicked")??;
        histogram.add(&h).context("while merging histograms")?;
        last = last.max(at);
        open.push((reader, writer));
    }
    let mut max_lag = Duration::ZERO;
    let mut writers = Vec::new();
    for task in senders {
        let (writer, lag) = task.await.context("sender panicked")??;
        writers.push(writer);
        max_lag = max_lag.max(lag);
    }
    let cpu = meter.stop();
    for task in drains {
        if task.is_finished() {
            task.await.context("drain panicked")?.context("a sender's stream")?;
            anyhow::bail!("a sender's stream ended early");
        }
        task.abort();
    }
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

pub type XmppLatencySweep = Sweep<PeerThroughput>;

/// Finds the maximum rate closed loop (unless `max` is absent: then `rate` is the maximum),
/// then runs open loop at each fraction of it.
#[allow(clippy::too_many_arguments)]
pub async fn sweep(
    server: &XmppServer,
    max: Option<ClosedLoop>,
    rate: f64,
    fractions: &[f64],
    pairs: usize,
    seconds: f64,
    warmup_seconds: f64,
    payload_bytes: usize,
) -> anyhow::Result<XmppLatencySweep> {
    let max = max.map(|c| throughput(server, c.pairs, c.messages_per_sender, c.window, payload_bytes));
    sweep_with("xmpp latency", max, rate, fractions, |rate| {
        open_loop(server, pairs, rate, seconds, warmup_seconds, payload_bytes)
    })
    .await
}

/// Group fan-out through a MUC room: one sender, `members` occupants (the sender included), a
/// window of 16 messages not yet reflected back to the sender (the room's echo is XMPP's closest
/// thing to Anytime's `Sent`); deliveries/s and the time from send to the last occupant.
pub async fn muc_fanout(
    server: &XmppServer,
    members: usize,
    messages: usize,
    payload_bytes: usize,
) -> anyhow::Result<FanoutReport> {
    anyhow::ensure!(members >= 2, "a group needs at least 2 members");
    const WINDOW: usize = 16;
    let tag = run_tag();
    let room = format!("fanout{tag}@{}", server.muc_domain);
    let epoch = Instant::now();
    let credit = Arc::new(Semaphore::new(WINDOW));
    let mut readers = Vec::with_capacity(members);
    // Every occupant's write half stays open: dropping one would end that occupant's stream.
    let mut writers = Vec::with_capacity(members);
    for i in 0..members {
        let mut client = XmppClient::login(server, &format!("g{tag}x{i}"), true, None).await?;
        let nick = format!("n{i}");
        let me = format!("{room}/{nick}");
        client
            .write(&format!(
                "<presence to='{me}'><x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='0'/></x></presence>"
            ))
            .await?;
        let joined = client
            .reader
            .wait_for("joining the room", |s| s.name == "presence" && s.from.as_deref() == Some(me.as_str()))
            .await?;
        anyhow::ensure!(!joined.is_error(), "joining {room} failed: {:?}", joined.children);
        if i == 0 && joined.status_codes.iter().any(|c| c == "201") {
            // A new room stays locked until its owner accepts the default configuration.
            client
                .write(&format!(
                    "<iq type='set' to='{room}' id='cfg'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'/></query></iq>"
                ))
                .await?;
            let configured = client.reader.wait_for("room configuration", |s| s.id.as_deref() == Some("cfg")).await?;
            anyhow::ensure!(!configured.is_error(), "configuring {room} failed: {:?}", configured.children);
        }
        let XmppClient { mut reader, writer, .. } = client;
        let echo = (i == 0).then(|| credit.clone());
        writers.push(writer);
        let room = room.clone();
        readers.push(tokio::spawn(async move {
            // Receive times (µs since `epoch`) by message number.
            let mut at = vec![0u64; messages];
            let mut got = 0;
            while got < messages {
                let stanza = reader.expect("a group message").await?;
                anyhow::ensure!(!stanza.is_error() && stanza.name != "error", "the server sent an error: {stanza:?}");
                if stanza.name != "message" || stanza.kind.as_deref() != Some("groupchat") {
                    continue;
                }
                let Some(body) = stanza.body.as_deref() else { continue };
                anyhow::ensure!(
                    stanza.from.as_deref().is_some_and(|f| bare(f) == room),
                    "group message from elsewhere"
                );
                let (k, _) = read_stamp(body)?;
                let slot = at.get_mut(k as usize).context("message number out of range")?;
                anyhow::ensure!(*slot == 0, "message {k} delivered twice");
                *slot = micros_since(epoch, Instant::now()).max(1);
                got += 1;
                if let Some(credit) = &echo {
                    credit.add_permits(1);
                }
            }
            anyhow::Ok(at)
        }));
    }
    let writer = writers.first_mut().context("no owner")?;
    let started = Instant::now();
    let mut sent_at = vec![0u64; messages];
    for (k, slot) in sent_at.iter_mut().enumerate() {
        credit.acquire().await.context("credit closed")?.forget();
        *slot = micros_since(epoch, Instant::now());
        let body = stamped_body(payload_bytes, k as u64, 0);
        let stanza = format!("<message to='{room}' type='groupchat' id='g{k}'><body>{body}</body></message>");
        writer.write_all(stanza.as_bytes()).await.context("while sending a group message")?;
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

fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

fn tcp_kernel_bytes() -> u64 {
    let text = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    let pages = text
        .lines()
        .find(|l| l.starts_with("TCP:"))
        .and_then(|l| l.split_whitespace().skip_while(|w| *w != "mem").nth(1).and_then(|v| v.parse::<u64>().ok()))
        .unwrap_or(0);
    pages * 4096
}

/// Idle authenticated connections: `connections` users are registered first (so their accounts
/// are not counted), then each logs in once — from addresses across 127.0.0.0/8 — sends initial
/// presence and stays idle. Server memory growth is read from `/proc/<server_pid>/status`.
pub async fn idle_connections(server: &XmppServer, connections: usize) -> anyhow::Result<ConnectionsReport> {
    let server_pid = server.pid;
    let tag = run_tag();
    let users: Vec<String> = (0..connections).map(|i| format!("c{tag}x{i}")).collect();
    let local = |n: usize| Some(IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2 + (n % 250) as u8)));
    for (c, chunk) in users.chunks(64).enumerate() {
        let mut batch = Vec::new();
        for (j, user) in chunk.iter().enumerate() {
            let (server, user, from) = (server.clone(), user.clone(), local(c * 64 + j));
            batch.push(tokio::spawn(async move {
                XmppClient::login(&server, &user, true, from).await?.close().await;
                anyhow::Ok(())
            }));
        }
        for task in batch {
            task.await.context("registration task panicked")??;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_before = server_pid.and_then(rss_bytes);
    let kernel_before = tcp_kernel_bytes();
    let started = Instant::now();
    let mut clients = VecDeque::with_capacity(connections);
    for (c, chunk) in users.chunks(256).enumerate() {
        let mut batch = Vec::new();
        for (j, user) in chunk.iter().enumerate() {
            let (server, user, from) = (server.clone(), user.clone(), local(c * 256 + j));
            batch.push(tokio::spawn(async move { XmppClient::login(&server, &user, false, from).await }));
        }
        for task in batch {
            clients.push_back(task.await.context("connect task panicked")??);
        }
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = server_pid.and_then(rss_bytes);
    let kernel_after = tcp_kernel_bytes();
    let connections = clients.len();
    let per_connection = match (rss_before, rss_after) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before) as f64 / connections as f64),
        _ => None,
    };
    for client in clients {
        client.close().await;
    }
    Ok(ConnectionsReport {
        connections,
        accounts: connections,
        connect_seconds,
        connects_per_second: connections as f64 / connect_seconds,
        server_rss_bytes_per_connection: per_connection,
        kernel_socket_bytes_per_connection: kernel_after.saturating_sub(kernel_before) as f64 / connections as f64,
        projected_server_gib_at_250k: per_connection.map(|b| b * 250_000.0 / (1u64 << 30) as f64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a canned server stream through a real socket pair.
    #[tokio::test]
    async fn parses_stanzas_across_a_stream_restart() -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await?;
            let text = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='1' version='1.0'>\
                <stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>\
                <success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>\
                <?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='2' version='1.0'>\
                <message from='a@localhost/r' type='chat' id='m1'><body>AAAA</body><x xmlns='y'><status code='110'/></x></message> \
                </stream:stream>";
            socket.write_all(text.as_bytes()).await?;
            anyhow::Ok(())
        });
        let (read, _write) = TcpStream::connect(addr).await?.into_split();
        let mut reader = StanzaReader::new(read);
        let features = reader.expect("features").await?;
        assert_eq!(features.name, "features");
        assert!(features.has_child("mechanism"));
        assert_eq!(reader.expect("success").await?.name, "success");
        let message = reader.expect("message").await?;
        assert_eq!(message.name, "message");
        assert_eq!(message.from.as_deref(), Some("a@localhost/r"));
        assert_eq!(message.kind.as_deref(), Some("chat"));
        assert_eq!(message.body.as_deref(), Some("AAAA"));
        assert_eq!(message.status_codes, vec!["110".to_owned()]);
        assert!(reader.next().await?.is_none());
        server.await??;
        Ok(())
    }

    #[test]
    fn stamps_round_trip() -> anyhow::Result<()> {
        let body = stamped_body(200, 123_456_789, 7);
        assert_eq!(body.len(), 268);
        assert_eq!(read_stamp(&body)?, (123_456_789, 7));
        Ok(())
    }
}
