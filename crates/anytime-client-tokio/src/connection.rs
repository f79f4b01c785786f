//! One WebSocket connection: frames in and out, answers matched by request id and pushes kept
//! in arrival order.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::Context;
use anytime_proto::frame::{self, HelloOk};
use anytime_proto::{decode_server, encode_client, ClientFrame, MsgId, ServerFrame};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long any single wait for a frame may take before the test fails.
const FRAME_WAIT: Duration = Duration::from_secs(20);

pub struct RawClient {
    socket: Socket,
    next_request_id: u32,
    pushes: VecDeque<ServerFrame>,
    /// Answers that arrived while waiting for something else.
    answers: VecDeque<(u32, ServerFrame)>,
    pub hello: Option<HelloOk>,
}

/// A fresh random message id.
pub fn msg_id() -> MsgId {
    MsgId(rand::random())
}

/// The server answered `Hello` with an error (the session token is not, or not yet, good).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloRefused(pub anytime_proto::ErrorCode);

impl std::fmt::Display for HelloRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the server refused Hello: {:?} ({})", self.0, self.0.description())
    }
}

impl std::error::Error for HelloRefused {}

impl RawClient {
    /// Authenticates; a refusal is a [`HelloRefused`] (downcast the error to tell why).
    async fn hello(&mut self, token: &str) -> anyhow::Result<()> {
        match self.request(frame::Hello { token: token.to_owned() }.into()).await? {
            ServerFrame::HelloOk(hello) => self.hello = Some(hello),
            ServerFrame::Error(error) => return Err(HelloRefused(error.code).into()),
            other => anyhow::bail!("Hello answered {other:?}"),
        }
        Ok(())
    }

    /// Opens the WebSocket without authenticating.
    pub async fn open(ws_url: &str) -> anyhow::Result<RawClient> {
        let (socket, _) = tokio_tungstenite::connect_async(ws_url).await.context("while opening the WebSocket")?;
        Ok(RawClient { socket, next_request_id: 1, pushes: VecDeque::new(), answers: VecDeque::new(), hello: None })
    }

    /// Opens the WebSocket from a chosen local address (load tests spread connections over
    /// 127.0.0.0/8 to pass the per-address port limit).
    pub async fn open_from(ws_url: &str, local: std::net::IpAddr) -> anyhow::Result<RawClient> {
        let authority = ws_url.trim_start_matches("ws://").split('/').next().context("ws:// URL without a host")?;
        let remote: std::net::SocketAddr = authority.parse().context("the load client needs an IP:port URL")?;
        let socket = if local.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        socket.bind(std::net::SocketAddr::new(local, 0)).context("while binding the local address")?;
        let stream = socket.connect(remote).await.context("while connecting")?;
        let (socket, _) = tokio_tungstenite::client_async(ws_url, MaybeTlsStream::Plain(stream))
            .await
            .context("while opening the WebSocket")?;
        Ok(RawClient { socket, next_request_id: 1, pushes: VecDeque::new(), answers: VecDeque::new(), hello: None })
    }

    /// Opens from `local` and authenticates.
    pub async fn connect_from(ws_url: &str, token: &str, local: std::net::IpAddr) -> anyhow::Result<RawClient> {
        let mut client = RawClient::open_from(ws_url, local).await?;
        client.hello(token).await?;
        Ok(client)
    }

    /// Opens and authenticates; pushes sent during catch-up stay queued for `next_push`.
    pub async fn connect(ws_url: &str, token: &str) -> anyhow::Result<RawClient> {
        let mut client = RawClient::open(ws_url).await?;
        client.hello(token).await?;
        Ok(client)
    }

    /// Sends a request and waits for its answer.
    pub async fn request(&mut self, frame: ClientFrame) -> anyhow::Result<ServerFrame> {
        let id = self.send(frame).await?;
        self.answer(id).await
    }

    /// Sends a request without waiting; returns its request id.
    pub async fn send(&mut self, frame: ClientFrame) -> anyhow::Result<u32> {
        let id = self.next_request_id;
        self.next_request_id += 1;
        self.send_bytes(encode_client(id, &frame)).await?;
        Ok(id)
    }

    pub async fn send_bytes(&mut self, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.socket.send(WsMessage::Binary(bytes.into())).await.context("while sending a frame")
    }

    pub async fn send_text(&mut self, text: &str) -> anyhow::Result<()> {
        self.socket.send(WsMessage::Text(text.into())).await.context("while sending text")
    }

    /// Waits for the answer to request `id`, queueing pushes and other answers.
    pub async fn answer(&mut self, id: u32) -> anyhow::Result<ServerFrame> {
        if let Some(pos) = self.answers.iter().position(|(i, _)| *i == id) {
            // The position was just found.
            return Ok(self.answers.remove(pos).expect("position is valid").1);
        }
        loop {
            let (request_id, frame) =
                self.read().await?.with_context(|| format!("socket closed awaiting answer {id}"))?;
            if request_id == id {
                return Ok(frame);
            }
            if request_id == 0 {
                self.pushes.push_back(frame);
            } else {
                self.answers.push_back((request_id, frame));
            }
        }
    }

    /// The next push (request id 0), waiting up to `wait`. `None` on timeout.
    pub async fn next_push_within(&mut self, wait: Duration) -> anyhow::Result<Option<ServerFrame>> {
        if let Some(push) = self.pushes.pop_front() {
            return Ok(Some(push));
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let read = match tokio::time::timeout(remaining, self.read()).await {
                Err(_) => return Ok(None),
                Ok(read) => read?,
            };
            let Some((request_id, frame)) = read else {
                anyhow::bail!("socket closed awaiting a push");
            };
            if request_id == 0 {
                return Ok(Some(frame));
            }
            self.answers.push_back((request_id, frame));
        }
    }

    pub async fn next_push(&mut self) -> anyhow::Result<ServerFrame> {
        self.next_push_within(FRAME_WAIT).await?.context("no push arrived in time")
    }

    /// Skips pushes until one matches `pick`; returns what `pick` extracted.
    pub async fn wait_for<T>(&mut self, mut pick: impl FnMut(&ServerFrame) -> Option<T>) -> anyhow::Result<T> {
        loop {
            let push = self.next_push().await?;
            if let Some(found) = pick(&push) {
                return Ok(found);
            }
        }
    }

    /// Whether the server closed the socket (within `wait`).
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(remaining, self.read()).await {
                Err(_) => return false,
                Ok(Ok(None)) | Ok(Err(_)) => return true,
                Ok(Ok(Some((0, frame)))) => self.pushes.push_back(frame),
                Ok(Ok(Some(answer))) => self.answers.push_back(answer),
            }
        }
    }

    /// Reads one frame; `None` when the socket closed.
    async fn read(&mut self) -> anyhow::Result<Option<(u32, ServerFrame)>> {
        loop {
            let message =
                tokio::time::timeout(FRAME_WAIT, self.socket.next()).await.context("no frame arrived in time")?;
            match message {
                None | Some(Ok(WsMessage::Close(_))) => return Ok(None),
                Some(Err(error)) => return Err(error).context("while reading the socket"),
                Some(Ok(WsMessage::Binary(bytes))) => match decode_server(&bytes) {
                    Ok(frame) => return Ok(Some(frame)),
                    // A newer server's frame kind: skip it, as the protocol asks of clients.
                    Err(anytime_proto::DecodeError::UnknownKind { .. }) => continue,
                    Err(error) => return Err(error).context("the server sent an undecodable frame"),
                },
                Some(Ok(_)) => continue,
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}
