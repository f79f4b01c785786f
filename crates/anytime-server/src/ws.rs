//! One task per device WebSocket: reads frames into the session, forwards hub pushes and
//! signals, and writes the session's output through a separate writer task so a slow socket
//! never blocks the reader. Every channel is bounded.

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use anytime_proto::limits::{HELLO_TIMEOUT_MS, WS_IN_FLIGHT_MAX, WS_WRITE_QUEUE_LEN_MAX};
use anytime_server_core::hub::{ConnSignal, Push};
use anytime_server_core::outbound::Outbound;
use anytime_server_core::session::Live;
use anytime_server_core::Completed;
use anytime_server_core::{Flow, ServerCore, Session};
use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket};
use bytes::Bytes;
use futures_util::stream::FuturesOrdered;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};

use crate::admission::Ticket;

/// How long the writer may take to send what is queued once the connection ends.
const WRITER_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything the connection loop reacts to.
enum LoopEvent {
    Socket(Option<Result<Message, axum::Error>>),
    Push(Option<Push>),
    Completed(Completed),
    Signal,
    HelloTimeout,
    Shed,
    Shutdown,
}

pub(crate) async fn run(
    socket: WebSocket,
    core: Arc<ServerCore>,
    ip: IpAddr,
    ticket: Arc<Ticket>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (mut sink, mut stream) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(WS_WRITE_QUEUE_LEN_MAX);
    let outbound = Arc::new(Outbound::default());
    let written = outbound.clone();
    let (close_tx, close_rx) = tokio::sync::oneshot::channel::<CloseFrame>();
    let mut writer = tokio::spawn(async move {
        while let Some(bytes) = out_rx.recv().await {
            let len = bytes.len() as u64;
            if sink.send(Message::Binary(bytes)).await.is_err() {
                return;
            }
            written.remove(len);
        }
        let _ = sink.send(Message::Close(close_rx.await.ok())).await;
    });

    let mut session = Session::new(core.clone(), out_tx, outbound.clone(), ip);
    let mut close_reason = None;
    let mut pushes: Option<mpsc::Receiver<Push>> = None;
    let mut signal: Option<Arc<ConnSignal>> = None;
    let mut in_flight = FuturesOrdered::new();
    let hello_deadline = tokio::time::sleep(Duration::from_millis(HELLO_TIMEOUT_MS));
    tokio::pin!(hello_deadline);

    // Runs until the socket closes, the session ends or the server shuts down.
    loop {
        let authenticated = session.is_authenticated();
        let event = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => LoopEvent::Shutdown,
            _ = notified(&signal) => LoopEvent::Signal,
            Some(completed) = in_flight.next(), if !in_flight.is_empty() => LoopEvent::Completed(completed),
            message = stream.next(), if in_flight.len() < WS_IN_FLIGHT_MAX => LoopEvent::Socket(message),
            push = recv(&mut pushes) => LoopEvent::Push(push),
            _ = &mut hello_deadline, if !authenticated => LoopEvent::HelloTimeout,
            _ = ticket.shed.notified(), if !authenticated => LoopEvent::Shed,
        };
        let flow = match event {
            LoopEvent::Socket(Some(Ok(Message::Binary(bytes)))) => session.on_bytes(&bytes).await,
            LoopEvent::Socket(Some(Ok(Message::Text(_)))) => {
                // The protocol is binary; a text message is a malformed frame.
                session.on_bytes(&[]).await
            }
            LoopEvent::Socket(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => Flow::Continue,
            LoopEvent::Socket(Some(Ok(Message::Close(_))) | Some(Err(_)) | None) => Flow::Close,
            LoopEvent::Push(Some(push)) => {
                // Out of the hub queue; `on_push` counts it again into the write queue.
                outbound.remove(push.wire_bytes());
                session.on_push(push).await
            }
            LoopEvent::Completed(completed) => session.on_completed(completed).await,
            LoopEvent::Push(None) => Flow::Close,
            LoopEvent::Signal => match &signal {
                Some(signal) => session.on_signal(&signal.clone()).await,
                None => Flow::Continue,
            },
            LoopEvent::HelloTimeout => {
                core.metrics.sockets_timed_out.fetch_add(1, Relaxed);
                close_reason = Some((close_code::POLICY, "no Hello within the time limit"));
                Flow::Close
            }
            LoopEvent::Shed => {
                close_reason = Some((close_code::AGAIN, "server busy: connect again"));
                Flow::Close
            }
            LoopEvent::Shutdown => {
                close_reason = Some((close_code::AWAY, "server shutting down"));
                Flow::Close
            }
        };
        if session.is_too_slow() {
            close_reason = Some((close_code::AGAIN, "too far behind: connect again to resume"));
            break;
        }
        match flow {
            Flow::Continue => {}
            Flow::Pending(pending) => in_flight.push_back(pending),
            Flow::Live(Live { rx, signal: live_signal }) => {
                ticket.authenticated();
                pushes = Some(rx);
                signal = Some(live_signal);
            }
            Flow::Close => break,
        }
    }
    // Requests already queued for storage are answered if the socket can still take it.
    while let Some(completed) = in_flight.next().await {
        session.on_completed(completed).await;
    }
    session.on_close().await;
    let too_slow = session.is_too_slow();
    // Dropping the session closes the write queue; the writer sends what is queued, then Close.
    drop(session);
    // The writer sends Close with this reason (or none) once the queue is written; it waits for
    // this message, so it must always be sent or dropped here.
    match close_reason {
        Some((code, reason)) => {
            let _ = close_tx.send(CloseFrame { code, reason: reason.into() });
        }
        None => drop(close_tx),
    }
    // A reader that is too slow would hold the writer (and the socket) forever: drop it now.
    if too_slow || tokio::time::timeout(WRITER_DRAIN_TIMEOUT, &mut writer).await.is_err() {
        writer.abort();
    }
}

async fn recv(pushes: &mut Option<mpsc::Receiver<Push>>) -> Option<Push> {
    match pushes {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn notified(signal: &Option<Arc<ConnSignal>>) {
    match signal {
        Some(signal) => signal.notify.notified().await,
        None => std::future::pending().await,
    }
}
