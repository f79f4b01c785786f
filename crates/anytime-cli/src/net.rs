//! The client core's `Transport` over the native WebSocket connection, with reconnect backoff.

use std::time::Duration;

use anyhow::Context;
use anytime_client::{ClientError, Transport};
use anytime_client_tokio::{HelloRefused, RawClient};
use anytime_proto::{ClientFrame, ErrorCode, ServerFrame};
use async_trait::async_trait;

pub struct Net(pub RawClient);

fn transport(error: anyhow::Error) -> ClientError {
    ClientError::Transport(format!("{error:#}"))
}

#[async_trait(?Send)]
impl Transport for Net {
    async fn request(&mut self, frame: ClientFrame) -> Result<ServerFrame, ClientError> {
        self.0.request(frame).await.map_err(transport)
    }

    async fn notify(&mut self, frame: ClientFrame) -> Result<(), ClientError> {
        self.0.send(frame).await.map(|_| ()).map_err(transport)
    }

    async fn next_push(&mut self, wait_ms: u64) -> Result<Option<ServerFrame>, ClientError> {
        self.0.next_push_within(Duration::from_millis(wait_ms)).await.map_err(transport)
    }
}

/// Connects and authenticates, retrying with exponential backoff (0.2 s doubling to 10 s) while
/// the server is unreachable, for at most `attempts` tries.
pub async fn connect(server: &str, token: &str, attempts: u32) -> anyhow::Result<Net> {
    let ws_url = format!("{}/v1/ws", server.trim_end_matches('/').replacen("http", "ws", 1));
    let mut delay = Duration::from_millis(200);
    let mut last = None;
    for _ in 0..attempts.max(1) {
        match RawClient::connect(&ws_url, token).await {
            Ok(client) => return Ok(Net(client)),
            Err(error) => {
                // A refused session will not get better by retrying.
                match error.downcast_ref::<HelloRefused>().map(|refused| refused.0) {
                    Some(ErrorCode::InvalidToken | ErrorCode::TokenExpired | ErrorCode::LinkCodeInvalid) => {
                        return Err(error)
                            .context("the server rejected this device's session; log in again with `anytime login`");
                    }
                    Some(ErrorCode::DeviceNotApproved) => {
                        return Err(error).context(
                            "this device waits for approval: run `anytime approve CODE` on a device already linked to the account",
                        );
                    }
                    _ => last = Some(error),
                }
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt made")))
        .with_context(|| format!("could not reach the server at {server}; is it running?"))
}
