//! Test and load harness for Anytime: start a real server process, register accounts over HTTP,
//! and speak the raw binary protocol over a WebSocket, frame by frame.
//!
//! Deliberately below the client core: tests use it to send exactly the bytes they mean,
//! including malformed ones, and to assert on exactly what the server sends back.

mod database;
mod server;

pub use database::TestDatabase;

pub use anytime_client_tokio::{msg_id, RawClient};
pub use server::{ServerOptions, ServerProcess};

use anyhow::Context;
use anytime_proto::http::{ErrorBody, LoginRequest, RegisterRequest, SessionResponse};

/// Registers `username` (password "password-<username>") and returns its first session.
pub async fn register(base: &str, username: &str) -> anyhow::Result<SessionResponse> {
    let request = RegisterRequest {
        username: username.to_owned(),
        password: format!("password-{username}"),
        device_name: "device-1".to_owned(),
    };
    post_json(base, "/v1/register", &request).await
}

/// Logs `username` in again: a new device with its own session.
pub async fn login(base: &str, username: &str, device_name: &str) -> anyhow::Result<SessionResponse> {
    let request = LoginRequest {
        username: username.to_owned(),
        password: format!("password-{username}"),
        device_name: device_name.to_owned(),
    };
    post_json(base, "/v1/login", &request).await
}

async fn post_json<T: serde::Serialize>(base: &str, path: &str, body: &T) -> anyhow::Result<SessionResponse> {
    let response = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(body)
        .send()
        .await
        .with_context(|| format!("while calling {path}"))?;
    if !response.status().is_success() {
        let status = response.status();
        let error: ErrorBody = response.json().await.with_context(|| format!("{path} answered {status}"))?;
        anyhow::bail!("{path} answered {status}: {}", error.code);
    }
    response.json().await.with_context(|| format!("while reading the answer of {path}"))
}
