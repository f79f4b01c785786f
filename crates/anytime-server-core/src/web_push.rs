//! Web Push: wakes a device whose app is closed when a message waits for it. The core decides
//! whom to wake (recipient devices with no open connection that registered an endpoint, at most
//! once per [`PUSH_COOLDOWN_MS`]); the shell's [`PushSender`] makes the HTTP request. Pushes
//! carry no payload: the server cannot read the message, so the device shows "New message" and
//! fetches the ciphertext itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anytime_proto::limits::PUSH_ENDPOINT_BYTES_MAX;
use anytime_proto::{DeviceId, ErrorCode, UserId};

use crate::auth::store_code;
use crate::ServerCore;

/// At most one wake-up per device in this window: a burst of messages is one notification.
pub const PUSH_COOLDOWN_MS: u64 = 30_000;

/// Push services of the browsers in use; an endpoint must be on one of them (or on a prefix the
/// operator allowed), so clients cannot make the server send requests anywhere (SSRF).
const PUSH_SERVICE_HOSTS: &[&str] =
    &["fcm.googleapis.com", "push.services.mozilla.com", "push.apple.com", "notify.windows.com"];

/// Sends one content-free push to an endpoint; must not block (spawn the request).
pub trait PushSender: Send + Sync {
    fn send(&self, device: DeviceId, endpoint: String);
}

pub(crate) struct Pusher {
    pub sender: Arc<dyn PushSender>,
    last: Mutex<HashMap<DeviceId, u64>>,
}

impl Pusher {
    pub fn new(sender: Arc<dyn PushSender>) -> Pusher {
        Pusher { sender, last: Mutex::default() }
    }
}

/// Whether `endpoint` may be registered: https on a known push service, or under an allowed prefix.
pub fn endpoint_allowed(endpoint: &str, extra_prefixes: &[String]) -> bool {
    if endpoint.len() > PUSH_ENDPOINT_BYTES_MAX || endpoint.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    if extra_prefixes.iter().any(|p| !p.is_empty() && endpoint.starts_with(p.as_str())) {
        return true;
    }
    let Some(rest) = endpoint.strip_prefix("https://") else { return false };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.contains(['@', ':']) {
        // No credentials or explicit ports: push services use the default one.
        return false;
    }
    PUSH_SERVICE_HOSTS.iter().any(|h| host == *h || host.ends_with(&format!(".{h}")))
}

impl ServerCore {
    /// Sends content-free pushes through `sender` from now on.
    pub fn with_push(mut self, sender: Arc<dyn PushSender>) -> ServerCore {
        self.pusher = Some(Pusher::new(sender));
        self
    }

    /// Registers (or with `None` removes) the push endpoint of the device holding `token`.
    pub async fn set_push_endpoint(&self, token: &str, endpoint: Option<String>) -> Result<(), ErrorCode> {
        let device = self.authenticate(token).await?;
        if let Some(endpoint) = &endpoint {
            if !endpoint_allowed(endpoint, &self.config.push_endpoint_prefixes) {
                return Err(ErrorCode::InvalidArgument);
            }
        }
        self.store.set_push_endpoint(device.id, endpoint).await.map_err(store_code)
    }

    /// After a message was stored: wakes the recipients' devices that are not connected.
    pub(crate) async fn wake_offline(&self, recipients: &[(UserId, DeviceId)], sender_device: DeviceId) {
        let Some(pusher) = &self.pusher else { return };
        let now = self.env.now_ms();
        let offline: Vec<DeviceId> = {
            let last = pusher.last.lock().unwrap_or_else(|e| e.into_inner());
            recipients
                .iter()
                .filter(|(_, device)| *device != sender_device && !self.hub.device_connected(*device))
                // In a cluster the device may be connected to another node: presence says so per user.
                .filter(|(user, _)| self.bus.is_none() || !self.hub.presence_of(*user).online)
                .filter(|(_, device)| last.get(device).is_none_or(|at| now.saturating_sub(*at) >= PUSH_COOLDOWN_MS))
                .map(|(_, device)| *device)
                .collect()
        };
        if offline.is_empty() {
            return;
        }
        let endpoints = match self.store.push_endpoints(offline.clone()).await {
            Ok(endpoints) => endpoints,
            Err(error) => {
                tracing::warn!(%error, "could not read push endpoints");
                return;
            }
        };
        let mut last = pusher.last.lock().unwrap_or_else(|e| e.into_inner());
        // Forget old entries so the map stays as small as the set of recently checked devices.
        last.retain(|_, at| now.saturating_sub(*at) < PUSH_COOLDOWN_MS);
        // Devices without an endpoint count as checked too: storage is asked about an offline
        // device at most once per cooldown, however busy its conversations are.
        for device in offline {
            last.insert(device, now);
        }
        for (device, endpoint) in endpoints {
            pusher.sender.send(device, endpoint);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::endpoint_allowed;

    #[test]
    fn only_push_services_or_allowed_prefixes() {
        assert!(endpoint_allowed("https://fcm.googleapis.com/fcm/send/abc", &[]));
        assert!(endpoint_allowed("https://updates.push.services.mozilla.com/wpush/v2/x", &[]));
        assert!(endpoint_allowed("https://web.push.apple.com/Q", &[]));
        assert!(!endpoint_allowed("http://fcm.googleapis.com/fcm/send/abc", &[]), "not https");
        assert!(!endpoint_allowed("https://evil.example/fcm.googleapis.com", &[]));
        assert!(!endpoint_allowed("https://fcm.googleapis.com.evil.example/", &[]));
        assert!(!endpoint_allowed("https://user@fcm.googleapis.com/", &[]));
        assert!(!endpoint_allowed("https://fcm.googleapis.com:8443/", &[]));
        assert!(!endpoint_allowed("https://127.0.0.1/", &[]));
        let local = vec!["http://127.0.0.1:9000/".to_owned()];
        assert!(endpoint_allowed("http://127.0.0.1:9000/push/1", &local));
        assert!(!endpoint_allowed("http://127.0.0.1:9001/push/1", &local));
        assert!(!endpoint_allowed(&format!("https://fcm.googleapis.com/{}", "a".repeat(1100)), &[]));
    }
}
