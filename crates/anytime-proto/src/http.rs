//! JSON bodies of the HTTP API (`POST /v1/register`, `POST /v1/login`). Everything after login
//! travels over the device's WebSocket as binary frames.

use serde::{Deserialize, Serialize};

use crate::{DeviceId, ErrorCode, UserId};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterRequest {
    pub username: String,
    pub password: String,
    /// Shown in the account's device list ("laptop", "terminal").
    pub device_name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
    pub device_name: String,
}

/// Answer to a successful register or login: a new device and its session token. The token is
/// shown once; the server keeps only its hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionResponse {
    pub user_id: UserId,
    pub device_id: DeviceId,
    pub token: String,
    /// Unix milliseconds.
    pub expires_at_ms: u64,
    /// Set when the account already has devices: this new device is pending until an existing
    /// device approves this code (`ApproveDevice`); until then it cannot connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_code: Option<String>,
}

/// Every non-2xx answer of the HTTP API.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}
