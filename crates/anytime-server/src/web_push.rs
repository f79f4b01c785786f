//! Sends the content-free Web Push requests the core asks for (`PushSender`): an empty POST with
//! a VAPID authorisation, over HTTPS (rustls) to the browser's push service.

use std::sync::Arc;
use std::time::Duration;

use anytime_proto::DeviceId;
use anytime_server_core::web_push::PushSender;

use crate::vapid::Vapid;

/// How long a push waits at the push service when the device is offline.
const TTL_SECS: &str = "86400";

pub struct WebPushSender {
    client: reqwest::Client,
    vapid: Arc<Vapid>,
}

impl WebPushSender {
    pub fn new(vapid: Arc<Vapid>) -> anyhow::Result<WebPushSender> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(WebPushSender { client, vapid })
    }
}

impl PushSender for WebPushSender {
    fn send(&self, device: DeviceId, endpoint: String) {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let request = self
            .client
            .post(&endpoint)
            .header("Authorization", self.vapid.authorization(&endpoint, now))
            .header("TTL", TTL_SECS)
            .header("Urgency", "high")
            .header("Content-Length", "0");
        tokio::spawn(async move {
            match request.send().await {
                Ok(response) if response.status().is_success() => tracing::debug!(%device, "push sent"),
                Ok(response) => tracing::info!(%device, status = %response.status(), "push service refused"),
                Err(error) => tracing::info!(%device, %error, "push failed"),
            }
        });
    }
}
