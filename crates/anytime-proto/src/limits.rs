//! Every bound of the protocol, with its unit and why it is what it is. Server and clients read
//! these; nothing else in the workspace hard-codes a limit.

/// Largest WebSocket message the server decodes into a frame, bytes. Large enough for an MLS
/// Commit + Welcome that adds a few hundred members (ratchet tree included); attachments never
/// travel in frames.
pub const FRAME_BYTES_MAX: u32 = 4 * 1024 * 1024;

/// Hard cap at the WebSocket layer, bytes. Between `FRAME_BYTES_MAX` and this the server still
/// reads the message and answers `frame_too_large` (connection stays up); above it the socket is
/// closed, because buffering without bound would let one peer exhaust memory.
pub const WS_MESSAGE_BYTES_MAX: u32 = 2 * FRAME_BYTES_MAX;

/// Largest application message ciphertext, bytes. Text, reactions and receipts are tiny; media
/// travel as encrypted blobs referenced from a message.
pub const MESSAGE_BYTES_MAX: u32 = 128 * 1024;

/// Largest MLS handshake message (Commit) or Welcome, bytes.
pub const HANDSHAKE_BYTES_MAX: u32 = 3 * 1024 * 1024;

/// Members (accounts) of one group.
pub const GROUP_MEMBERS_MAX: u32 = 5_000;

/// Accounts added in one `AddMembers` or `CreateGroup` request.
pub const USERS_PER_REQUEST_MAX: u32 = 512;

/// Devices (logins) per account. Every device is an MLS leaf in every group of its account,
/// so this bounds the group size in leaves as well.
pub const DEVICES_PER_USER_MAX: u32 = 10;

/// Simultaneous WebSocket connections per account (a device reconnecting may briefly hold two).
pub const CONNECTIONS_PER_ACCOUNT_MAX: u32 = 2 * DEVICES_PER_USER_MAX;

/// One-time key packages stored per device.
pub const KEY_PACKAGES_PER_DEVICE_MAX: u32 = 200;

/// Key packages in one upload.
pub const KEY_PACKAGES_PER_UPLOAD_MAX: u32 = 100;

/// One key package, bytes.
pub const KEY_PACKAGE_BYTES_MAX: u32 = 16 * 1024;

/// Below this many one-time key packages the server tells the device to upload more.
pub const KEY_PACKAGES_LOW: u32 = 10;

/// Username length in bytes; usernames are ASCII `[a-z0-9_.]`.
pub const USERNAME_BYTES_MIN: u32 = 3;
pub const USERNAME_BYTES_MAX: u32 = 32;

/// Password length in bytes. The upper bound keeps argon2 input (and request bodies) small.
pub const PASSWORD_BYTES_MIN: u32 = 8;
pub const PASSWORD_BYTES_MAX: u32 = 1024;

/// Display names, group names and device names, bytes of UTF-8.
pub const NAME_BYTES_MAX: u32 = 128;

/// An avatar reference (an opaque blob id or URL chosen by the client), bytes.
pub const AVATAR_REF_BYTES_MAX: u32 = 512;

/// How long a newly logged-in device may wait for approval, milliseconds (10 minutes).
pub const LINK_CODE_TTL_MS: u64 = 10 * 60 * 1000;

/// Lifetime of an invite link, seconds (30 days).
pub const INVITE_TTL_SECS_MAX: u32 = 30 * 24 * 3600;

/// Uses of one invite link.
pub const INVITE_USES_MAX: u32 = 100_000;

/// Users in one `SubscribePresence`.
pub const PRESENCE_SUBSCRIPTIONS_MAX: u32 = 1_000;

/// Messages the server pushes per page when a device catches up from its cursor.
pub const CATCH_UP_PAGE_LEN: u32 = 512;

/// Frames queued for one connection before it is declared lagging and resynced from storage.
pub const SEND_QUEUE_LEN_MAX: u32 = 4_096;

/// HTTP request bodies (register, login), bytes.
pub const HTTP_BODY_BYTES_MAX: u32 = 16 * 1024;

const _: () = assert!(MESSAGE_BYTES_MAX < FRAME_BYTES_MAX);
const _: () = assert!(HANDSHAKE_BYTES_MAX < FRAME_BYTES_MAX);
const _: () = assert!(FRAME_BYTES_MAX < WS_MESSAGE_BYTES_MAX);
const _: () = assert!(USERS_PER_REQUEST_MAX <= GROUP_MEMBERS_MAX);
const _: () = assert!(KEY_PACKAGES_PER_UPLOAD_MAX <= KEY_PACKAGES_PER_DEVICE_MAX);
