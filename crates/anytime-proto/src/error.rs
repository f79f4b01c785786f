//! Stable error codes. A code never changes meaning once shipped: clients branch on it, and
//! docs/protocol.md lists each with what the client should do. Binary frames carry the number,
//! JSON bodies the snake_case name.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! error_codes {
    ($($variant:ident = $num:literal, $name:literal, $doc:literal;)*) => {
        /// Why a request failed. `#[non_exhaustive]`: new codes may be added; an unknown number
        /// decodes as [`ErrorCode::Unknown`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $(#[doc = $doc] $variant,)*
            /// A code this build does not know (sent by a newer server).
            Unknown(u16),
        }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            pub fn as_u16(self) -> u16 {
                match self {
                    $(ErrorCode::$variant => $num,)*
                    ErrorCode::Unknown(n) => n,
                }
            }

            pub fn from_u16(n: u16) -> ErrorCode {
                match n {
                    $($num => ErrorCode::$variant,)*
                    other => ErrorCode::Unknown(other),
                }
            }

            /// The stable snake_case name used in JSON and docs.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $name,)*
                    ErrorCode::Unknown(_) => "unknown",
                }
            }

            pub fn from_name(name: &str) -> ErrorCode {
                match name {
                    $($name => ErrorCode::$variant,)*
                    _ => ErrorCode::Unknown(0),
                }
            }

            /// One sentence for humans: what went wrong.
            pub fn description(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $doc,)*
                    ErrorCode::Unknown(_) => "an error this client does not know",
                }
            }
        }
    };
}

error_codes! {
    MalformedFrame = 1, "malformed_frame", "the frame could not be decoded";
    UnsupportedVersion = 2, "unsupported_version", "the frame's protocol version is not supported";
    UnknownFrameType = 3, "unknown_frame_type", "the frame type is not known to this server";
    FrameTooLarge = 4, "frame_too_large", "the frame is larger than the frame limit";
    PayloadTooLarge = 5, "payload_too_large", "a field of the frame is larger than its limit";
    InvalidArgument = 6, "invalid_argument", "a field has a value the request does not accept";
    RequestTimeout = 7, "request_timeout", "the request did not arrive in time; send it again";
    NotAuthenticated = 10, "not_authenticated", "the connection must send Hello with a session token first";
    InvalidToken = 11, "invalid_token", "the session token is unknown or was revoked";
    TokenExpired = 12, "token_expired", "the session token has expired; log in again";
    AlreadyAuthenticated = 13, "already_authenticated", "this connection is already authenticated";
    InvalidCredentials = 14, "invalid_credentials", "wrong username or password";
    UsernameTaken = 15, "username_taken", "that username is taken";
    InvalidUsername = 16, "invalid_username", "usernames are 3 to 32 characters of a-z, 0-9, '_' and '.', starting with a letter or digit, with no two '_' or '.' in a row";
    WeakPassword = 17, "weak_password", "passwords are 8 to 1024 bytes long";
    RateLimited = 20, "rate_limited", "too many requests; wait and retry";
    TooManyConnections = 21, "too_many_connections", "this account has too many open connections";
    TooManyDevices = 22, "too_many_devices", "this account has the maximum number of devices; revoke one first";
    DeviceNotApproved = 23, "device_not_approved", "this device waits for approval: run `anytime approve CODE` on a device already linked to the account";
    LinkCodeInvalid = 24, "link_code_invalid", "no device of this account waits with that link code (codes expire after 10 minutes)";
    ConversationNotFound = 30, "conversation_not_found", "no such conversation, or you are not a member";
    UserNotFound = 31, "user_not_found", "no such user";
    DeviceNotFound = 32, "device_not_found", "no such device on this account";
    NotAdmin = 33, "not_admin", "only an admin of the group may do this";
    NotAGroup = 34, "not_a_group", "direct chats have exactly two members and no admins";
    AlreadyMember = 35, "already_member", "the user is already a member";
    NotMember = 36, "not_member", "the user is not a member of the conversation";
    TooManyMembers = 37, "too_many_members", "the group would exceed its member limit";
    Blocked = 38, "blocked", "the recipient has blocked you";
    InviteNotFound = 40, "invite_not_found", "no such invite link";
    InviteExpired = 41, "invite_expired", "the invite link has expired";
    InviteRevoked = 42, "invite_revoked", "the invite link was revoked";
    InviteExhausted = 43, "invite_exhausted", "the invite link has been used its maximum number of times";
    EpochMismatch = 50, "epoch_mismatch", "the group is at another epoch; apply the pending commits and retry";
    MessageIdReused = 51, "message_id_reused", "this message id was already used for a different conversation";
    NoKeyPackage = 52, "no_key_package", "a device of that user has no key package available";
    TooManyKeyPackages = 53, "too_many_key_packages", "the device already stores the maximum number of key packages";
    UnknownWelcome = 54, "unknown_welcome", "no such pending welcome for this device";
    InsufficientFunds = 60, "insufficient_funds", "not enough money in the wallet";
    LimitExceeded = 61, "limit_exceeded", "over a per-transfer or daily limit";
    PinLocked = 62, "pin_locked", "too many wrong PINs; payments are locked for a while";
    PinWrong = 63, "pin_wrong", "the payment PIN is wrong";
    Duplicate = 64, "duplicate", "a different request already used this idempotency key";
    Expired = 65, "expired", "it has expired";
    UnknownCurrency = 66, "unknown_currency", "not a currency this server knows";
    InvalidAmount = 67, "invalid_amount", "amounts are positive whole minor units within the limit";
    LedgerConflict = 68, "ledger_conflict", "the ledger changed meanwhile; retry";
    BlobNotFound = 70, "blob_not_found", "no such attachment, or it was not sent to a conversation you are a member of";
    QuotaExceeded = 71, "quota_exceeded", "your account's attachment storage is full; it frees up as recipients fetch earlier files";
    OffsetMismatch = 72, "offset_mismatch", "the upload is at another offset; ask for its status and continue from there";
    BlobIncomplete = 73, "blob_incomplete", "the upload of this attachment has not finished yet";
    UploadBusy = 74, "upload_busy", "another request is writing to this upload; retry when it finished";
    Internal = 90, "internal", "the server failed; retry later";
    ShuttingDown = 91, "shutting_down", "the server is shutting down; reconnect shortly";
    ServerBusy = 92, "server_busy", "the server is busy; retry in a moment";
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(self.as_str())
        } else {
            serializer.serialize_u16(self.as_u16())
        }
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let name = String::deserialize(deserializer)?;
            Ok(ErrorCode::from_name(&name))
        } else {
            u16::deserialize(deserializer).map(ErrorCode::from_u16)
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for &code in ErrorCode::ALL {
            assert!(seen.insert(code.as_u16()), "duplicate number {code}");
            assert_eq!(ErrorCode::from_u16(code.as_u16()), code);
            assert_eq!(ErrorCode::from_name(code.as_str()), code);
        }
        assert_eq!(ErrorCode::from_u16(9999), ErrorCode::Unknown(9999));
    }
}
