//! One task per device WebSocket: reads frames into the session, forwards hub pushes and
//! signals, and writes the session's output through a separate writer task so a slow socket
//! never blocks the reader. Every channel is bounded.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anytime_server_core::hub::{ConnSignal, Push};
use anytime_server_core::session::Live;
use anytime_server_core::Completed;
use anytime_server_core::{Flow, ServerCore, Session};
use axum::extract::ws::{Message, WebSocket};
use bytes::Bytes;
use futures_util::stream::FuturesOrdered;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};

/// Frames queued for the socket writer. Pushes beyond this wait in the hub queue instead.
const WRITE_QUEUE_LEN_MAX: usize = 256;
/// Requests of one connection waiting for durable storage at once; beyond this the socket is
/// not read until some complete (backpressure on a pipelining client).
const IN_FLIGHT_MAX: usize = 256;
/// How long a new connection may take to authenticate.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything the connection loop reacts to.
enum LoopEvent {
    Socket(Option<Result<Message, axum::Error>>),
    Push(Option<Push>),
    Completed(Completed),
    Signal,
    HelloTimeout,
    Shutdown,
}

pub(crate) async fn run(socket: WebSocket, core: Arc<ServerCore>, ip: IpAddr, mut shutdown: watch::Receiver<bool>) {
    let (mut sink, mut stream) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(WRITE_QUEUE_LEN_MAX);
    let writer = tokio::spawn(async move {
        while let Some(bytes) = out_rx.recv().await {
            if sink.send(Message::Binary(bytes)).await.is_err() {
                return;
            }
        }
        let _ = sink.send(Message::Close(None)).await;
    });

    let mut session = Session::new(core, out_tx, ip);
    let mut pushes: Option<mpsc::Receiver<Push>> = None;
    let mut signal: Option<Arc<ConnSignal>> = None;
    let mut in_flight = FuturesOrdered::new();
    let hello_deadline = tokio::time::sleep(HELLO_TIMEOUT);
    tokio::pin!(hello_deadline);

    // Runs until the socket closes, the session ends or the server shuts down.
    loop {
        let authenticated = session.is_authenticated();
        let event = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => LoopEvent::Shutdown,
            _ = notified(&signal) => LoopEvent::Signal,
            Some(completed) = in_flight.next(), if !in_flight.is_empty() => LoopEvent::Completed(completed),
            message = stream.next(), if in_flight.len() < IN_FLIGHT_MAX => LoopEvent::Socket(message),
            push = recv(&mut pushes) => LoopEvent::Push(push),
            _ = &mut hello_deadline, if !authenticated => LoopEvent::HelloTimeout,
        };
        let flow = match event {
            LoopEvent::Socket(Some(Ok(Message::Binary(bytes)))) => session.on_bytes(&bytes).await,
            LoopEvent::Socket(Some(Ok(Message::Text(_)))) => {
                // The protocol is binary; a text message is a malformed frame.
                session.on_bytes(&[]).await
            }
            LoopEvent::Socket(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => Flow::Continue,
            LoopEvent::Socket(Some(Ok(Message::Close(_))) | Some(Err(_)) | None) => Flow::Close,
            LoopEvent::Push(Some(push)) => session.on_push(push).await,
            LoopEvent::Completed(completed) => session.on_completed(completed).await,
            LoopEvent::Push(None) => Flow::Close,
            LoopEvent::Signal => match &signal {
                Some(signal) => session.on_signal(&signal.clone()).await,
                None => Flow::Continue,
            },
            LoopEvent::HelloTimeout | LoopEvent::Shutdown => Flow::Close,
        };
        match flow {
            Flow::Continue => {}
            Flow::Pending(pending) => in_flight.push_back(pending),
            Flow::Live(Live { rx, signal: live_signal }) => {
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
    // Dropping the session closes the write queue; the writer sends what is queued, then Close.
    drop(session);
    let _ = writer.await;
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
