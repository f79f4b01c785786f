//! A device's connection to the simulated server: the client core's `Transport`, carried by a
//! real server `Session` in the same process. Frames are encoded and decoded exactly as on a
//! socket. The link fails the way a WebSocket does: a request may be lost before the server sees
//! it, or its answer lost after the server acted on it; either way the connection is gone and
//! the device has to reconnect (a TCP stream neither reorders nor duplicates, so those faults
//! appear as resends after a reconnect, which the protocol must absorb).
//!
//! Every link also writes the Welcome targets of the commits its device sends into a shared
//! [`Tap`]: with the server's log it tells the checks which device entered which group at which
//! epoch (the MLS bytes themselves say nothing readable about it).

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;
use std::sync::Arc;

use anytime_client::{ClientError, Transport};
use anytime_proto::{decode_server, encode_client, frame, ClientFrame, ConvId, DeviceId, MsgId, ServerFrame};
use anytime_server_core::outbound::Outbound;
use anytime_server_core::session::Live;
use anytime_server_core::{Flow, ServerCore, Session};
use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::rng::Rng;

const IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Frames a connection's write queue holds; the link drains it after every request.
const OUT_QUEUE: usize = 65_536;

/// Commits as their devices sent them: (conversation, commit id) → devices their Welcome names.
pub type Tap = Rc<RefCell<BTreeMap<(ConvId, MsgId), Vec<DeviceId>>>>;

struct Conn {
    session: Session,
    out: mpsc::Receiver<Bytes>,
    outbound: Arc<Outbound>,
    live: Option<Live>,
}

pub struct Link {
    conn: Option<Conn>,
    pushes: VecDeque<ServerFrame>,
    next_id: u32,
    rng: Rc<RefCell<Rng>>,
    tap: Tap,
    /// When set, every frame is printed to stderr with this device number.
    pub trace: Option<usize>,
    /// Chance in percent that a request is lost before, or its answer after, the server.
    pub fault_percent: u64,
}

fn lost() -> ClientError {
    ClientError::Transport("connection lost (simulated)".into())
}

impl Link {
    pub fn new(rng: Rc<RefCell<Rng>>, tap: Tap) -> Link {
        Link { conn: None, pushes: VecDeque::new(), next_id: 0, rng, tap, trace: None, fault_percent: 0 }
    }

    pub fn connected(&self) -> bool {
        self.conn.is_some()
    }

    /// Opens a session on `core` and authenticates.
    pub async fn connect(&mut self, core: &Arc<ServerCore>, token: &str) -> Result<(), ClientError> {
        self.disconnect().await;
        let (tx, out) = mpsc::channel(OUT_QUEUE);
        let outbound = Arc::new(Outbound::default());
        let session = Session::new(core.clone(), tx, outbound.clone(), IP);
        self.conn = Some(Conn { session, out, outbound, live: None });
        match self.exchange(frame::Hello { token: token.to_owned() }.into(), false).await? {
            Some(ServerFrame::HelloOk(_)) => Ok(()),
            Some(ServerFrame::Error(error)) => {
                self.disconnect().await;
                Err(ClientError::Server { code: error.code })
            }
            other => Err(ClientError::Protocol(format!("Hello answered {other:?}"))),
        }
    }

    /// The socket closes: the server's session ends as it would on a closed socket.
    pub async fn disconnect(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            conn.session.on_close().await;
        }
        self.pushes.clear();
    }

    /// The server process died: its sessions vanish without running their close path.
    pub fn sever(&mut self) {
        self.conn = None;
        self.pushes.clear();
    }

    fn fault(&mut self) -> bool {
        self.fault_percent > 0 && self.rng.borrow_mut().chance(self.fault_percent)
    }

    /// Whether the hub revoked this device: then the session closes, as the shell's select loop
    /// does as soon as the signal fires (before the next frame from the socket is read).
    async fn closed_by_revocation(&mut self) -> bool {
        let Some(conn) = self.conn.as_mut() else { return false };
        let Some(live) = conn.live.as_ref() else { return false };
        if !live.signal.revoked.load(std::sync::atomic::Ordering::Acquire) {
            return false;
        }
        let signal = live.signal.clone();
        conn.session.on_signal(&signal).await;
        self.drain();
        self.disconnect().await;
        true
    }

    /// Sends one frame through the session; returns the answer to it, if any.
    async fn exchange(&mut self, frame: ClientFrame, faulty: bool) -> Result<Option<ServerFrame>, ClientError> {
        if let Some(device) = self.trace {
            eprintln!("  device {device} -> {}", describe_client(&frame));
        }
        let result = self.exchange_traced(frame, faulty).await;
        if let Some(device) = self.trace {
            match &result {
                Ok(Some(answer)) => eprintln!("  device {device} <- {}", describe_server(answer)),
                Ok(None) => {}
                Err(error) => eprintln!("  device {device} xx {error}"),
            }
        }
        result
    }

    async fn exchange_traced(&mut self, frame: ClientFrame, faulty: bool) -> Result<Option<ServerFrame>, ClientError> {
        if self.closed_by_revocation().await {
            return Err(lost());
        }
        if faulty && self.fault() {
            self.disconnect().await;
            return Err(lost());
        }
        self.next_id += 1;
        let id = self.next_id;
        let conn = self.conn.as_mut().ok_or_else(lost)?;
        let mut close = false;
        match conn.session.on_bytes(&encode_client(id, &frame)).await {
            Flow::Pending(pending) => {
                let completed = pending.await;
                if let Flow::Close = conn.session.on_completed(completed).await {
                    close = true;
                }
            }
            Flow::Live(live) => conn.live = Some(live),
            Flow::Close => close = true,
            Flow::Continue => {}
        }
        let mut answers = self.drain();
        let answer = answers.remove(&id);
        if close {
            self.disconnect().await;
        }
        if faulty && self.fault() {
            // The server acted; the answer is lost with the connection.
            self.disconnect().await;
            return Err(lost());
        }
        Ok(answer)
    }

    /// Everything the server queued for this connection: pushes kept, answers returned.
    fn drain(&mut self) -> BTreeMap<u32, ServerFrame> {
        let mut answers = BTreeMap::new();
        let Some(conn) = self.conn.as_mut() else { return answers };
        while let Ok(bytes) = conn.out.try_recv() {
            conn.outbound.remove(bytes.len() as u64);
            // The server only sends frames it can encode; a decode failure is a real bug.
            let (id, frame) = decode_server(&bytes).expect("the server's frames decode");
            if id == 0 {
                self.pushes.push_back(frame);
            } else {
                answers.insert(id, frame);
            }
        }
        answers
    }

    /// Hands the hub's pushes for this connection to its session (the shell's select loop).
    async fn pump(&mut self) {
        let Some(conn) = self.conn.as_mut() else { return };
        let mut close = false;
        if let Some(live) = conn.live.as_mut() {
            while let Ok(push) = live.rx.try_recv() {
                conn.outbound.remove(push.wire_bytes());
                if let Flow::Close = conn.session.on_push(push).await {
                    close = true;
                    break;
                }
            }
            let signalled = live.signal.lagged.load(std::sync::atomic::Ordering::Acquire)
                || live.signal.revoked.load(std::sync::atomic::Ordering::Acquire);
            if !close && signalled {
                let signal = live.signal.clone();
                if let Flow::Close = conn.session.on_signal(&signal).await {
                    close = true;
                }
            }
        }
        self.drain();
        if close {
            self.disconnect().await;
        }
    }
}

#[async_trait(?Send)]
impl Transport for Link {
    async fn request(&mut self, frame: ClientFrame) -> Result<ServerFrame, ClientError> {
        if let ClientFrame::Commit(commit) = &frame {
            let devices = commit.welcome.as_ref().map(|w| w.devices.clone()).unwrap_or_default();
            self.tap.borrow_mut().insert((commit.conv, commit.msg_id), devices);
        }
        match self.exchange(frame, true).await? {
            Some(answer) => Ok(answer),
            None => Err(ClientError::Protocol("no answer".into())),
        }
    }

    async fn notify(&mut self, frame: ClientFrame) -> Result<(), ClientError> {
        self.exchange(frame, true).await.map(|_| ())
    }

    async fn next_push(&mut self, _wait_ms: u64) -> Result<Option<ServerFrame>, ClientError> {
        if self.conn.is_none() {
            return Err(lost());
        }
        self.pump().await;
        let push = self.pushes.pop_front();
        if let (Some(device), Some(push)) = (self.trace, push.as_ref()) {
            eprintln!("  device {device} <= {}", describe_server(push));
        }
        Ok(push)
    }
}

/// A frame in one line, without payloads (for `--trace`).
fn describe_client(frame: &ClientFrame) -> String {
    match frame {
        ClientFrame::Commit(c) => {
            let welcome = c.welcome.as_ref().map(|w| w.devices.clone());
            format!("Commit {} epoch {} welcome {welcome:?}", c.conv, c.epoch)
        }
        ClientFrame::Send(s) => format!("Send {} {}", s.conv, s.msg_id),
        ClientFrame::UploadKeyPackages(u) => format!("UploadKeyPackages {}", u.packages.len()),
        other => short(format!("{other:?}")),
    }
}

fn describe_server(frame: &ServerFrame) -> String {
    match frame {
        ServerFrame::Message(m) => format!("Message {} seq {} {:?} from {}", m.conv, m.seq, m.kind, m.sender_device),
        ServerFrame::Welcome(w) => format!("Welcome {} id {}", w.conv, w.welcome),
        ServerFrame::KeyPackages(k) => {
            format!("KeyPackages {:?}", k.packages.iter().map(|p| p.device).collect::<Vec<_>>())
        }
        ServerFrame::ConversationInfo(i) => {
            format!("ConversationInfo {} epoch {} last {}", i.conv, i.epoch, i.last_seq)
        }
        other => short(format!("{other:?}")),
    }
}

fn short(mut text: String) -> String {
    if let Some((cut, _)) = text.char_indices().nth(120) {
        text.truncate(cut);
    }
    text
}
