//! The accept loop and one task per TCP connection, with the deadlines `axum::serve` does not
//! have: complete headers within `HTTP_HEADER_TIMEOUT_MS` (hyper's timer), a plain HTTP
//! connection closed after `HTTP_CONNECTION_MAX_AGE_MS`, and shedding (see `admission`). Bodies
//! are timed by the handlers that read them (`http::read_json`), the WebSocket Hello by `ws`.
//! HTTP/1.1 only: browsers reach the server over HTTP/1.1 (TLS, where used, ends at a proxy).

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use anytime_proto::limits::{HTTP_CONNECTION_MAX_AGE_MS, HTTP_HEADER_TIMEOUT_MS};
use anytime_server_core::Metrics;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::admission::{Admission, Ticket};

/// After the age limit or a shutdown, how long an in-flight request may still take.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Pause after an accept error (out of file descriptors, most likely) before the next accept.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(10);

/// Accepts until `shutdown`, then waits (bounded) for open HTTP exchanges to finish.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    admission: Arc<Admission>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE/ENFILE: no descriptor for the new socket. Make room and retry; the
                // pending connection stays in the kernel's backlog meanwhile.
                if admission.shed_one() {
                    tracing::debug!(%error, "accept failed; shed an unauthenticated connection");
                } else {
                    tracing::warn!(%error, "accept failed");
                }
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let Some(ticket) = admission.admit(peer.ip()) else { continue };
        let _ = stream.set_nodelay(true);
        connections.spawn(serve_connection(
            stream,
            peer,
            Arc::new(ticket),
            app.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
    }
    drop(listener);
    let drained =
        tokio::time::timeout(CLOSE_GRACE * 2, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!("some HTTP connections did not finish before shutdown");
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    ticket: Arc<Ticket>,
    app: Router,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let shed = ticket.shed.clone();
    let service = tower::ServiceExt::map_request(app, move |mut request: axum::http::Request<Incoming>| {
        // What the handlers read: the peer address, and the ticket a WebSocket takes along.
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(ticket.clone());
        request
    });
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(Duration::from_millis(HTTP_HEADER_TIMEOUT_MS));
    let connection = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service)).with_upgrades();
    tokio::pin!(connection);
    let deadline = tokio::time::sleep(Duration::from_millis(HTTP_CONNECTION_MAX_AGE_MS));
    tokio::pin!(deadline);
    let mut closing = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    if error.is_timeout() {
                        metrics.sockets_timed_out.fetch_add(1, Relaxed);
                    }
                    tracing::debug!(%peer, %error, "HTTP connection ended");
                }
                return;
            }
            _ = shed.notified() => return,
            _ = &mut deadline => {
                if closing {
                    // The grace ran out too: drop the socket mid-request.
                    metrics.sockets_timed_out.fetch_add(1, Relaxed);
                    return;
                }
                closing = true;
                connection.as_mut().graceful_shutdown();
                deadline.as_mut().reset(tokio::time::Instant::now() + CLOSE_GRACE);
            }
            _ = shutdown.wait_for(|stop| *stop), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
                deadline.as_mut().reset(tokio::time::Instant::now() + CLOSE_GRACE);
            }
        }
    }
}
