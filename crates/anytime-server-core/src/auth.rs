//! Accounts and sessions: registration, login, token checks. Passwords are hashed with
//! argon2id (default parameters of the `argon2` crate, OWASP's recommendation); session tokens
//! are 256-bit random strings of which the server stores only the SHA-256.

use std::net::IpAddr;

use anytime_proto::http::{LoginRequest, RegisterRequest, SessionResponse};
use anytime_proto::limits::{
    DEVICES_PER_USER_MAX, NAME_BYTES_MAX, PASSWORD_BYTES_MAX, PASSWORD_BYTES_MIN, USERNAME_BYTES_MAX,
    USERNAME_BYTES_MIN,
};
use anytime_proto::{frame::PresencePrivacy, DeviceId, ErrorCode, UserId};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::env::EnvExt;
use crate::ratelimit::{LimitKey, LimitKind};
use crate::store::{DeviceRecord, StoreError, UserRecord};
use crate::ServerCore;

const TOKEN_PREFIX: &str = "at1.";

impl ServerCore {
    pub async fn register(&self, ip: IpAddr, request: RegisterRequest) -> Result<SessionResponse, ErrorCode> {
        let now_ms = self.env.now_ms();
        if !self.limiter.check(LimitKind::RegisterPerIp, LimitKey::Ip(ip), now_ms) {
            return Err(ErrorCode::RateLimited);
        }
        validate_username(&request.username)?;
        validate_password(&request.password)?;
        let device_name = validate_name(&request.device_name)?;
        if self.store.user_by_username(&request.username).await.map_err(store_code)?.is_some() {
            return Err(ErrorCode::UsernameTaken);
        }
        let salt: [u8; 16] = self.env.random_array();
        let password_hash = {
            let _slot = self.password_gate.enter().await.inspect_err(|_| {
                self.metrics.password_hashes_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            })?;
            hash_password(request.password, salt, self.config.argon2_cost).await?
        };
        let user = UserRecord {
            id: UserId(self.env.random_u64()),
            username: request.username.clone(),
            password_hash,
            display_name: request.username,
            avatar: None,
            presence_privacy: PresencePrivacy::Contacts,
            created_at_ms: now_ms,
        };
        let (device, token) = self.new_device(user.id, device_name, now_ms);
        let response = session_response(&device, token);
        self.store.create_user(user, device).await.map_err(store_code)?;
        Ok(response)
    }

    pub async fn login(&self, ip: IpAddr, request: LoginRequest) -> Result<SessionResponse, ErrorCode> {
        let now_ms = self.env.now_ms();
        if !self.limiter.check(LimitKind::LoginPerIp, LimitKey::Ip(ip), now_ms)
            || self.login_throttle.check(&request.username, ip, now_ms).is_err()
        {
            return Err(ErrorCode::RateLimited);
        }
        let device_name = validate_name(&request.device_name)?;
        // No account has a longer name, and the throttle must not keep arbitrary strings.
        if request.password.len() > PASSWORD_BYTES_MAX as usize || request.username.len() > USERNAME_BYTES_MAX as usize
        {
            return Err(ErrorCode::InvalidCredentials);
        }
        let user = self.store.user_by_username(&request.username).await.map_err(store_code)?;
        // Verify against a fixed hash when the user does not exist, so the answer takes as long
        // either way and does not reveal which usernames exist.
        let stored_hash = user.as_ref().map(|u| u.password_hash.clone()).unwrap_or_else(|| DUMMY_HASH.to_owned());
        let verified = {
            let _slot = self.password_gate.enter().await.inspect_err(|_| {
                self.metrics.password_hashes_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            })?;
            verify_password(request.password, stored_hash).await?
        };
        let Some(user) = user.filter(|_| verified) else {
            self.login_throttle.failed(&request.username, ip, now_ms);
            return Err(ErrorCode::InvalidCredentials);
        };
        self.login_throttle.succeeded(&request.username, ip);
        let (mut device, token) = self.new_device(user.id, device_name, now_ms);
        // A new device of an account that already has one must be approved from it: pending
        // devices cannot connect, receive nothing and are not added to any group.
        // Only an approved device can approve; pending ones do not count.
        let has_devices = self.store.devices(user.id).await.map_err(store_code)?.iter().any(|d| d.approved);
        if has_devices {
            let code = u32::from_le_bytes(self.env.random_array()) % 1_000_000;
            device.approved = false;
            device.link_code = Some(format!("{code:06}"));
            device.expires_at_ms = now_ms + anytime_proto::limits::LINK_CODE_TTL_MS;
        }
        let response = session_response(&device, token);
        self.store.create_device(device, DEVICES_PER_USER_MAX).await.map_err(store_code)?;
        if !has_devices {
            self.cluster(crate::cluster::ClusterEvent::InvalidateAllRoutes);
            self.announce_devices_changed(user.id).await;
        }
        Ok(response)
    }

    /// How long `username` must wait before logging in again from `ip`, seconds (rounded up).
    pub fn login_retry_after_secs(&self, username: &str, ip: IpAddr) -> u64 {
        match self.login_throttle.check(username, ip, self.env.now_ms()) {
            Ok(()) => 1,
            Err(ms) => ms.div_ceil(1000).max(1),
        }
    }

    /// The device a session token belongs to, if the token is valid now.
    pub async fn authenticate(&self, token: &str) -> Result<DeviceRecord, ErrorCode> {
        if !token.starts_with(TOKEN_PREFIX) || token.len() > 128 {
            return Err(ErrorCode::InvalidToken);
        }
        let device = self.store.device_by_token_hash(token_hash(token)).await.map_err(store_code)?;
        let Some(device) = device else {
            return Err(ErrorCode::InvalidToken);
        };
        if device.expires_at_ms <= self.env.now_ms() {
            return Err(if device.approved { ErrorCode::TokenExpired } else { ErrorCode::LinkCodeInvalid });
        }
        if !device.approved {
            return Err(ErrorCode::DeviceNotApproved);
        }
        Ok(device)
    }

    fn new_device(&self, user: UserId, name: String, now_ms: u64) -> (DeviceRecord, String) {
        let secret: [u8; 32] = self.env.random_array();
        let token = format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret));
        let device = DeviceRecord {
            id: DeviceId(self.env.random_u64()),
            user,
            name,
            token_hash: token_hash(&token),
            created_at_ms: now_ms,
            expires_at_ms: now_ms.saturating_add(self.config.session_ttl_ms),
            last_seen_ms: now_ms,
            approved: true,
            link_code: None,
        };
        (device, token)
    }
}

fn session_response(device: &DeviceRecord, token: String) -> SessionResponse {
    SessionResponse {
        user_id: device.user,
        device_id: device.id,
        token,
        expires_at_ms: device.expires_at_ms,
        link_code: device.link_code.clone(),
    }
}

pub(crate) fn store_code(error: StoreError) -> ErrorCode {
    match error {
        StoreError::Rejected(code) => code,
        StoreError::EpochMismatch { .. } => ErrorCode::EpochMismatch,
        StoreError::Backend(detail) => {
            tracing::error!(%detail, "storage failed");
            ErrorCode::Internal
        }
    }
}

pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

pub fn validate_username(username: &str) -> Result<(), ErrorCode> {
    let len_ok = (USERNAME_BYTES_MIN as usize..=USERNAME_BYTES_MAX as usize).contains(&username.len());
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let chars_ok = username.bytes().all(|b| alnum(&b) || b == b'_' || b == b'.');
    // A letter or digit first, and no run of punctuation: `...`, `___` and `.alice` are refused.
    let shape_ok = username.as_bytes().first().is_some_and(alnum)
        && username.as_bytes().windows(2).all(|pair| alnum(&pair[0]) || alnum(&pair[1]));
    if len_ok && chars_ok && shape_ok {
        Ok(())
    } else {
        Err(ErrorCode::InvalidUsername)
    }
}

fn validate_password(password: &str) -> Result<(), ErrorCode> {
    if (PASSWORD_BYTES_MIN as usize..=PASSWORD_BYTES_MAX as usize).contains(&password.len()) {
        Ok(())
    } else {
        Err(ErrorCode::WeakPassword)
    }
}

/// Characters that change how the text around them is shown without being visible: bidi
/// overrides, embeddings and isolates (U+202E turns "alice" into "ecila"), zero-width characters
/// and line or paragraph separators. In a name they only serve impersonation.
fn is_invisible_formatting(c: char) -> bool {
    matches!(c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        | '\u{200B}'..='\u{200D}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}' | '\u{180E}'
        | '\u{2028}' | '\u{2029}')
}

/// Display, group and device names: invisible formatting characters removed, trimmed, then
/// 1..=NAME_BYTES_MAX bytes with no control characters.
pub fn validate_name(name: &str) -> Result<String, ErrorCode> {
    let cleaned: String = name.chars().filter(|c| !is_invisible_formatting(*c)).collect();
    let name = cleaned.trim();
    if name.is_empty() || name.len() > NAME_BYTES_MAX as usize || name.chars().any(char::is_control) {
        return Err(ErrorCode::InvalidArgument);
    }
    Ok(name.to_owned())
}

/// A valid argon2id hash of a random password nobody knows, for constant-time misses.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$5sGdvRkbdhdBIHdpdmOHaH6Pl6Ws0NMCBjDWy/y8WDk";

pub(crate) async fn hash_password(
    password: String,
    salt: [u8; 16],
    (memory_kib, iterations): (u32, u32),
) -> Result<String, ErrorCode> {
    // argon2 takes tens of milliseconds of CPU on purpose: keep it off the async workers.
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::encode_b64(&salt).map_err(|_| ErrorCode::Internal)?;
        let params = argon2::Params::new(memory_kib, iterations, 1, None).map_err(|_| ErrorCode::Internal)?;
        Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|_| ErrorCode::Internal)
    })
    .await
    .map_err(|_| ErrorCode::Internal)?
}

pub(crate) async fn verify_password(password: String, hash: String) -> Result<bool, ErrorCode> {
    tokio::task::spawn_blocking(move || {
        let parsed = PasswordHash::new(&hash).map_err(|_| ErrorCode::Internal)?;
        Ok(Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
    })
    .await
    .map_err(|_| ErrorCode::Internal)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_and_names_are_validated() {
        assert_eq!(validate_username("alice_1.x"), Ok(()));
        assert_eq!(validate_username("1alice_"), Ok(()));
        for bad in
            ["al", "Alice", "al ice", "ålice", &"a".repeat(33), "...", "___", ".alice", "_bob", "al..ice", "a._b"]
        {
            assert_eq!(validate_username(bad), Err(ErrorCode::InvalidUsername), "{bad}");
        }
        assert_eq!(validate_name("  laptop "), Ok("laptop".to_owned()));
        assert_eq!(validate_name(""), Err(ErrorCode::InvalidArgument));
        assert_eq!(validate_name("a\u{7}b"), Err(ErrorCode::InvalidArgument));
        // Bidi overrides, zero-width characters and separators are removed, not kept.
        assert_eq!(validate_name("ali\u{202E}ecila"), Ok("aliecila".to_owned()));
        assert_eq!(validate_name("a\u{200B}l\u{200D}i\u{FEFF}ce"), Ok("alice".to_owned()));
        assert_eq!(validate_name("alice\u{2028}admin"), Ok("aliceadmin".to_owned()));
        assert_eq!(validate_name("\u{200B}\u{202E}"), Err(ErrorCode::InvalidArgument));
    }

    #[test]
    fn dummy_hash_parses() {
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }
}
