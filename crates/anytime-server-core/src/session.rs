//! One device connection: authentication, request dispatch and ordered delivery.
//!
//! Delivery model: every conversation is a log ordered by `seq`. The session remembers, per
//! conversation, the last seq it pushed to the device (starting from the device's stored
//! cursor). Live pushes from the hub are hints: a push at `last + 1` is sent, an older one is
//! dropped as a duplicate, and a newer one means something was missed (a lagging queue, a race
//! between two senders' fan-outs) and is filled in from storage first. So the device sees each
//! stored message exactly once and in order, however pushes arrive, and resumes from its cursor
//! after any disconnect or restart.
//!
//! The shell drives a session with `on_bytes` (a WebSocket message), `on_push` (from the hub)
//! and `on_signal` (lag or revocation), writes whatever the session queues on `out`, and calls
//! `on_close` exactly once at the end.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use anytime_proto::frame::{self, Epoch, Seq};
use anytime_proto::limits::{CATCH_UP_PAGE_LEN, KEY_PACKAGES_LOW, SLOW_CONSUMER_TIMEOUT_MS};
use anytime_proto::{decode_client, encode_server, ClientFrame, ConvId, DeviceId, ErrorCode, ServerFrame, UserId};
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::auth::store_code;
use crate::hub::{ConnSignal, Push};
use crate::outbound::Outbound;
use crate::ratelimit::{LimitKey, LimitKind};
use crate::store::StoreError;
use crate::ServerCore;

/// What the shell should do after an event.
pub enum Flow {
    Continue,
    /// A request is in flight: poll this (in order with the others) and hand its output to
    /// `Session::on_completed`.
    Pending(PendingRequest),
    /// The connection authenticated: select on these from now on.
    Live(Live),
    /// Send what is queued, then close the socket.
    Close,
}

pub struct Live {
    pub rx: mpsc::Receiver<Push>,
    pub signal: Arc<ConnSignal>,
}

/// A pipelined request waiting for durable storage.
pub type PendingRequest = std::pin::Pin<Box<dyn std::future::Future<Output = Completed> + Send>>;

/// The result of a pipelined request, to be handed back to `Session::on_completed`.
pub struct Completed {
    pub(crate) request_id: u32,
    pub(crate) outcome: Outcome,
}

pub(crate) enum Outcome {
    Sent {
        route: Arc<crate::hub::Route>,
        message: frame::Message,
        result: Result<crate::store::Appended, StoreError>,
        /// `SendSilent`: wake nobody.
        silent: bool,
    },
}

/// Why a request failed, as answered to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reject {
    pub code: ErrorCode,
    pub epoch: Option<Epoch>,
}

impl From<ErrorCode> for Reject {
    fn from(code: ErrorCode) -> Reject {
        Reject { code, epoch: None }
    }
}

impl From<StoreError> for Reject {
    fn from(error: StoreError) -> Reject {
        match error {
            StoreError::EpochMismatch { current } => Reject { code: ErrorCode::EpochMismatch, epoch: Some(current) },
            other => Reject::from(store_code(other)),
        }
    }
}

/// A handler's answer: a frame, or nothing for fire-and-forget requests (`Ack`, `Typing`).
pub(crate) type Answer = Result<Option<ServerFrame>, Reject>;

pub(crate) struct Authed {
    pub user: UserId,
    pub device: DeviceId,
    pub conn_id: u64,
    /// Last seq pushed to the device, per conversation it is a member of.
    pub delivered: HashMap<ConvId, Seq>,
    /// Set by `Logout` / self-revocation: close after answering.
    pub closing: bool,
    /// The session token the device said Hello with: wallet calls are authenticated with it
    /// again each time, as the HTTP routes are (a revoked or expired session cannot pay).
    pub token: String,
}

pub struct Session {
    pub(crate) core: Arc<ServerCore>,
    out: mpsc::Sender<Bytes>,
    /// Bytes queued for this connection (hub queue + write queue); the writer drains it.
    outbound: Arc<Outbound>,
    /// The reader stayed `OUTBOUND_BYTES_MAX` behind for `SLOW_CONSUMER_TIMEOUT`: close.
    too_slow: bool,
    peer_ip: IpAddr,
    pub(crate) auth: Option<Authed>,
    /// The newest queued cursor move, awaited on close.
    pub(crate) last_ack: Option<crate::store::PendingWrite<()>>,
}

impl Session {
    /// `out` is the connection's write queue; the shell's writer task drains it.
    pub fn new(core: Arc<ServerCore>, out: mpsc::Sender<Bytes>, outbound: Arc<Outbound>, peer_ip: IpAddr) -> Session {
        core.metrics.connections_open.fetch_add(1, Relaxed);
        core.metrics.connections_total.fetch_add(1, Relaxed);
        Session { core, out, outbound, too_slow: false, peer_ip, auth: None, last_ack: None }
    }

    /// The reader fell too far behind for too long; the shell closes the connection (the
    /// device resumes from storage when it reconnects).
    pub fn is_too_slow(&self) -> bool {
        self.too_slow
    }

    /// `Send` is pipelined: queued for storage, answered when durable (`on_completed`).
    async fn pipelined_send(&mut self, request_id: u32, send: frame::Send, silent: bool) -> Flow {
        if !self.allow(LimitKind::SendPerAccount) {
            self.reject(request_id, ErrorCode::RateLimited.into()).await;
            return Flow::Continue;
        }
        match self.submit_send(request_id, send, silent).await {
            Ok(pending) => Flow::Pending(pending),
            Err(reject) => {
                self.reject(request_id, reject).await;
                Flow::Continue
            }
        }
    }

    pub fn is_authenticated(&self) -> bool {
        self.auth.is_some()
    }

    /// One binary WebSocket message from the device.
    pub async fn on_bytes(&mut self, bytes: &[u8]) -> Flow {
        self.core.metrics.frames_in.fetch_add(1, Relaxed);
        let (request_id, frame) = match decode_client(bytes) {
            Ok(decoded) => decoded,
            Err(error) => {
                tracing::debug!(%error, "undecodable frame");
                self.reject(error.request_id(), error.code().into()).await;
                return Flow::Continue;
            }
        };
        if let ClientFrame::Hello(hello) = frame {
            return self.hello(request_id, hello).await;
        }
        if self.auth.is_none() {
            self.reject(request_id, ErrorCode::NotAuthenticated.into()).await;
            return Flow::Continue;
        }
        let frame = match frame {
            ClientFrame::Send(send) => return self.pipelined_send(request_id, send, false).await,
            ClientFrame::SendSilent(send) => return self.pipelined_send(request_id, send.into(), true).await,
            other => other,
        };
        // Guarantee: once a request is answered, every Ack sent before it on this connection is
        // durable (clients use any answered request as a barrier before disconnecting).
        if !matches!(frame, ClientFrame::Ack(_) | ClientFrame::AckWelcome(_) | ClientFrame::Typing(_)) {
            if let Some(pending) = self.last_ack.take() {
                if let Err(error) = pending.await {
                    tracing::warn!(%error, "storing an acknowledgement failed");
                }
            }
        }
        let answer = self.dispatch(frame).await;
        match answer {
            Ok(Some(frame)) => self.send_frame(request_id, &frame).await,
            Ok(None) => {}
            Err(reject) => self.reject(request_id, reject).await,
        }
        match &self.auth {
            Some(auth) if auth.closing => Flow::Close,
            _ => Flow::Continue,
        }
    }

    /// A push from the hub.
    pub async fn on_push(&mut self, push: Push) -> Flow {
        match push {
            Push::Message { conv, seq, frame } => self.deliver(conv, seq, frame).await,
            Push::Membership { conv, frame } => match self.reload_membership(conv).await {
                // Tell how things are now, not when the push was queued: a session that handles
                // its queue late (a slow reader's waits for room) must not tell a member that was
                // removed and added back that it was removed.
                Some(member) => {
                    let changed = frame::ConversationChanged { conv, removed: !member };
                    self.send_frame(0, &ServerFrame::ConversationChanged(changed)).await;
                }
                None => self.send(frame).await,
            },
            Push::Frame(frame) => self.send(frame).await,
        }
        Flow::Continue
    }

    /// The hub flagged this connection as lagging or revoked.
    pub async fn on_signal(&mut self, signal: &ConnSignal) -> Flow {
        if signal.revoked.load(std::sync::atomic::Ordering::Acquire) {
            self.send_frame(0, &ServerFrame::SessionRevoked(frame::SessionRevoked {})).await;
            return Flow::Close;
        }
        if signal.lagged.swap(false, std::sync::atomic::Ordering::AcqRel) {
            self.core.metrics.lagged_connections.fetch_add(1, Relaxed);
            // Dropped pushes may have included Welcomes (stored until acknowledged) and messages
            // (stored until acknowledged); both are re-read. Typing and presence are ephemeral.
            if let Some(device) = self.auth.as_ref().map(|a| a.device) {
                self.push_pending_welcomes(device, None).await;
            }
            self.resync().await;
        }
        Flow::Continue
    }

    /// The connection ended (either side). Call once.
    pub async fn on_close(&mut self) {
        self.core.metrics.connections_open.fetch_sub(1, Relaxed);
        if let Some(pending) = self.last_ack.take() {
            if let Err(error) = pending.await {
                tracing::warn!(%error, "storing an acknowledgement failed");
            }
        }
        let Some(auth) = self.auth.take() else { return };
        let now_ms = self.core.env.now_ms();
        let went_offline = self.core.hub.unregister(auth.user, auth.device, auth.conn_id, now_ms);
        if let Err(error) = self.core.store.touch_device(auth.device, now_ms).await {
            tracing::warn!(%error, "could not record last-seen time");
        }
        if went_offline {
            self.core.presence_changed(auth.user, false);
        }
    }

    async fn hello(&mut self, request_id: u32, hello: frame::Hello) -> Flow {
        if self.auth.is_some() {
            self.reject(request_id, ErrorCode::AlreadyAuthenticated.into()).await;
            return Flow::Continue;
        }
        let device = match self.core.authenticate(&hello.token).await {
            Ok(device) => device,
            Err(code) => {
                self.reject(request_id, code.into()).await;
                return Flow::Continue;
            }
        };
        if self.core.hub.connection_count(device.user) >= anytime_proto::limits::CONNECTIONS_PER_ACCOUNT_MAX {
            self.reject(request_id, ErrorCode::TooManyConnections.into()).await;
            return Flow::Close;
        }
        if let Ok(Some(user)) = self.core.store.user(device.user).await {
            self.core.hub.set_privacy(user.id, user.presence_privacy);
        }
        // Register before reading cursors: a message stored from now on is either pushed live
        // or found by the catch-up below, never neither.
        let registered = self.core.hub.register(device.user, device.id, self.outbound.clone());
        let span = tracing::info_span!("session", user = %device.user, device = %device.id);
        let _enter = span.enter();
        tracing::debug!("device connected");
        drop(_enter);
        self.auth = Some(Authed {
            user: device.user,
            device: device.id,
            conn_id: registered.conn_id,
            delivered: HashMap::new(),
            closing: false,
            token: hello.token.clone(),
        });
        let hello_ok = frame::HelloOk { user: device.user, device: device.id, server_time_ms: self.core.env.now_ms() };
        self.send_frame(request_id, &ServerFrame::HelloOk(hello_ok)).await;
        if registered.came_online {
            self.core.presence_changed(device.user, true);
        }
        // Welcomes first: a device joining a group needs its Welcome to read what follows.
        self.push_pending_welcomes(device.id, None).await;
        self.resync().await;
        self.warn_if_key_packages_low(device.id).await;
        self.send_frame(0, &ServerFrame::CaughtUp(frame::CaughtUp {})).await;
        Flow::Live(Live { rx: registered.rx, signal: registered.signal })
    }

    /// Reloads cursors from storage and pushes everything after them, in every conversation.
    async fn resync(&mut self) {
        let Some(auth) = &self.auth else { return };
        let cursors = match self.core.store.cursors(auth.device).await {
            Ok(cursors) => cursors,
            Err(error) => {
                tracing::error!(%error, "could not load cursors");
                return;
            }
        };
        let mut convs = Vec::with_capacity(cursors.len());
        if let Some(auth) = &mut self.auth {
            let mut delivered = HashMap::with_capacity(cursors.len());
            for (conv, acked) in cursors {
                // Keep what this connection already pushed: it may be ahead of the stored ack.
                let last = auth.delivered.get(&conv).copied().unwrap_or(0).max(acked);
                delivered.insert(conv, last);
                convs.push(conv);
            }
            auth.delivered = delivered;
        }
        for conv in convs {
            self.catch_up(conv).await;
        }
    }

    /// Reloads the device's cursor of `conv` after a membership change and catches up; returns
    /// whether the device is in `conv` now (`None` when storage cannot say).
    async fn reload_membership(&mut self, conv: ConvId) -> Option<bool> {
        let auth = self.auth.as_ref()?;
        let cursor = match self.core.store.cursors(auth.device).await {
            Ok(cursors) => cursors.into_iter().find(|(c, _)| *c == conv),
            Err(error) => {
                tracing::error!(%error, "could not load cursors");
                return None;
            }
        };
        let auth = self.auth.as_mut()?;
        match cursor {
            None => {
                auth.delivered.remove(&conv);
                Some(false)
            }
            Some((_, acked)) => {
                let device = auth.device;
                let last = auth.delivered.get(&conv).copied().unwrap_or(0).max(acked);
                auth.delivered.insert(conv, last);
                // Welcomes first, as at Hello: a Welcome adding the device to the group may be
                // queued behind this push, and the catch-up below may hold commits made after
                // it, which the device can only apply once it joined. (A device ignores a
                // Welcome it already used.)
                self.push_pending_welcomes(device, Some(conv)).await;
                self.catch_up(conv).await;
                Some(true)
            }
        }
    }

    /// Sends a live message in order, filling any gap from storage first.
    async fn deliver(&mut self, conv: ConvId, seq: Seq, frame: Bytes) {
        let Some(last) = self.auth.as_ref().and_then(|a| a.delivered.get(&conv).copied()) else {
            // Not (yet) a member on this connection; a membership push will catch up.
            return;
        };
        if seq <= last {
            return;
        }
        // An empty frame is a hint from another node whose frame was too large for the bus:
        // read the message from storage like any gap.
        if seq > last + 1 || frame.is_empty() {
            self.catch_up(conv).await;
            let caught_up = self.auth.as_ref().and_then(|a| a.delivered.get(&conv).copied()).unwrap_or(0);
            if seq <= caught_up {
                return;
            }
        }
        self.send(frame).await;
        self.core.metrics.messages_out.fetch_add(1, Relaxed);
        if let Some(auth) = &mut self.auth {
            auth.delivered.insert(conv, seq);
        }
    }

    /// Pushes every stored message of `conv` after what was delivered, page by page.
    async fn catch_up(&mut self, conv: ConvId) {
        loop {
            let Some(last) = self.auth.as_ref().and_then(|a| a.delivered.get(&conv).copied()) else { return };
            let page = match self.core.store.messages_after(conv, last, CATCH_UP_PAGE_LEN).await {
                Ok(page) => page,
                Err(error) => {
                    tracing::error!(%error, "could not read messages to catch up");
                    return;
                }
            };
            let Some(first) = page.first() else { return };
            if first.seq > last + 1 {
                // Retention deleted what this device never fetched: say so instead of hiding it.
                let expired = frame::MessagesExpired { conv, up_to_seq: first.seq - 1 };
                self.send_frame(0, &ServerFrame::MessagesExpired(expired)).await;
            }
            let full = page.len() as u32 == CATCH_UP_PAGE_LEN;
            let mut newest = last;
            for message in page {
                newest = message.seq;
                self.send_frame(0, &ServerFrame::Message(message)).await;
                self.core.metrics.messages_out.fetch_add(1, Relaxed);
            }
            if let Some(auth) = &mut self.auth {
                auth.delivered.insert(conv, newest);
            }
            if !full {
                return;
            }
        }
    }

    /// Pushes the device's Welcomes not yet acknowledged (of one conversation, or all).
    async fn push_pending_welcomes(&mut self, device: DeviceId, only: Option<ConvId>) {
        match self.core.store.pending_welcomes(device).await {
            Ok(welcomes) => {
                for welcome in welcomes.into_iter().filter(|w| only.is_none_or(|conv| w.conv == conv)) {
                    let frame = frame::Welcome { welcome: welcome.id, conv: welcome.conv, payload: welcome.payload };
                    self.send_frame(0, &ServerFrame::Welcome(frame)).await;
                }
            }
            Err(error) => tracing::error!(%error, "could not read pending welcomes"),
        }
    }

    pub(crate) async fn warn_if_key_packages_low(&mut self, device: DeviceId) {
        if let Ok((count, _)) = self.core.store.key_package_count(device).await {
            if count < KEY_PACKAGES_LOW {
                self.send_frame(0, &ServerFrame::KeyPackagesLow(frame::KeyPackagesLow { count })).await;
            }
        }
    }

    /// Rate limit check for an authenticated request of this kind; sends are limited per
    /// account and per IP address.
    pub(crate) fn allow(&self, kind: LimitKind) -> bool {
        let Some(auth) = &self.auth else { return false };
        let now_ms = self.core.env.now_ms();
        if !self.core.limiter.check(kind, LimitKey::Account(auth.user), now_ms) {
            return false;
        }
        kind != LimitKind::SendPerAccount
            || self.core.limiter.check(LimitKind::SendPerIp, LimitKey::Ip(self.peer_ip), now_ms)
    }

    pub(crate) async fn send_frame(&mut self, request_id: u32, frame: &ServerFrame) {
        self.send(Bytes::from(encode_server(request_id, frame))).await;
    }

    pub(crate) async fn reject(&mut self, request_id: u32, reject: Reject) {
        self.core.metrics.frame_errors.fetch_add(1, Relaxed);
        let error =
            frame::Error { code: reject.code, message: reject.code.description().to_owned(), epoch: reject.epoch };
        self.send_frame(request_id, &ServerFrame::Error(error)).await;
    }

    async fn send(&mut self, bytes: Bytes) {
        if self.too_slow {
            return;
        }
        let len = bytes.len() as u64;
        // The common case takes no timer: only a full queue waits (with a deadline).
        let room = self.outbound.try_add(len) || {
            let deadline = self.core.env.sleep(std::time::Duration::from_millis(SLOW_CONSUMER_TIMEOUT_MS));
            self.outbound.add_when_room(len, deadline).await
        };
        if !room {
            self.too_slow = true;
            self.core.metrics.slow_consumers.fetch_add(1, Relaxed);
            tracing::info!(
                queued_bytes = self.outbound.queued(),
                "disconnecting a receiver that stopped reading; it resumes from storage when it reconnects"
            );
            return;
        }
        self.core.metrics.frames_out.fetch_add(1, Relaxed);
        // A closed queue means the socket is gone; the device resumes from its cursor.
        if self.out.send(bytes).await.is_err() {
            self.outbound.remove(len);
        }
    }
}
