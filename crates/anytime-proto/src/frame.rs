//! The frames of the device WebSocket, version 1. Each frame is one binary WebSocket message:
//! a 7-byte header (version, kind, request id; see `codec`) and a postcard-encoded body.
//!
//! Client frames are requests; the server answers each with a response frame carrying the same
//! request id, except `Ack`, `AckWelcome` and `Typing`, which are answered only when they fail.
//! Server frames with request id 0 are pushes (messages, welcomes, typing, presence, ...).

use serde::{Deserialize, Serialize};

use crate::{ConvId, DeviceId, ErrorCode, MsgId, UserId};

/// Per-conversation sequence number of a stored message; dense, starting at 1.
pub type Seq = u64;
/// MLS epoch of a group as the delivery service orders it.
pub type Epoch = u64;

// ---------------------------------------------------------------- client → server

/// First frame of every connection: authenticate with a session token from register/login.
/// The server answers `HelloOk`, then pushes everything pending since the device's cursor,
/// then `CaughtUp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub token: String,
}

/// Open (or return the existing) direct chat with `peer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateDirect {
    pub peer: UserId,
}

/// Create a group; the creator is its first admin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateGroup {
    pub name: String,
    pub members: Vec<UserId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenameGroup {
    pub conv: ConvId,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddMembers {
    pub conv: ConvId,
    pub users: Vec<UserId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveMember {
    pub conv: ConvId,
    pub user: UserId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetAdmin {
    pub conv: ConvId,
    pub user: UserId,
    pub admin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leave {
    pub conv: ConvId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListConversations {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetConversation {
    pub conv: ConvId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateInvite {
    pub conv: ConvId,
    pub ttl_secs: u32,
    pub max_uses: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeInvite {
    pub code: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinInvite {
    pub code: String,
}

/// Add one-time key packages for this device, and optionally replace its last-resort package
/// (handed out, and kept, only when no one-time package is left).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadKeyPackages {
    pub packages: Vec<Vec<u8>>,
    pub last_resort: Option<Vec<u8>>,
}

/// Claim one key package for every device of `user`, to add them to a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimKeyPackages {
    pub user: UserId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetKeyPackageCount {}

/// An MLS Commit for the group at `epoch`. Accepted only while the group is at `epoch`; then the
/// group moves to `epoch + 1`, the commit is ordered into the conversation like a message, and
/// the optional Welcome is delivered to the listed (new) devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    pub conv: ConvId,
    pub epoch: Epoch,
    pub msg_id: MsgId,
    pub commit: Vec<u8>,
    pub welcome: Option<WelcomeOut>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WelcomeOut {
    pub devices: Vec<DeviceId>,
    pub payload: Vec<u8>,
}

/// An MLS application message (ciphertext) for the conversation. Idempotent by `msg_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Send {
    pub conv: ConvId,
    pub msg_id: MsgId,
    pub payload: Vec<u8>,
}

/// `Send` for content nobody needs to be woken for (receipts, edits, deletions): stored and
/// delivered exactly like `Send`, answered with `Sent`, but never triggers a Web Push. The
/// server cannot read the content, so the client says so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendSilent {
    pub conv: ConvId,
    pub msg_id: MsgId,
    pub payload: Vec<u8>,
}

impl From<SendSilent> for Send {
    fn from(silent: SendSilent) -> Send {
        Send { conv: silent.conv, msg_id: silent.msg_id, payload: silent.payload }
    }
}

/// Cumulative: this device has durably processed every message of `conv` up to `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub conv: ConvId,
    pub seq: Seq,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckWelcome {
    pub welcome: u64,
}

/// Ephemeral: "I am typing" in `conv`; never stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Typing {
    pub conv: ConvId,
}

/// Replace this connection's presence subscriptions. The answer is the current presence of each
/// user whose privacy setting allows it; later changes arrive as `PresenceEvent` pushes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribePresence {
    pub users: Vec<UserId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PresencePrivacy {
    Everyone,
    /// Only users who share a direct chat with you.
    Contacts,
    Nobody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetPresencePrivacy {
    pub privacy: PresencePrivacy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListDevices {}

/// Revoke one of this account's devices: its session ends and its sockets close at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeDevice {
    pub device: DeviceId,
}

/// Look a user up by exact username. There is no way to list users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupUser {
    pub username: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetProfile {
    pub user: UserId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetProfile {
    pub display_name: String,
    pub avatar: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub user: UserId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unblock {
    pub user: UserId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListBlocked {}

/// Approve a pending device of this account by the link code it was given at login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApproveDevice {
    pub code: String,
}

/// A wallet operation (`crate::wallet::WalletOp`), answered by `WalletResult` or `Error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletCall {
    pub op: crate::wallet::WalletOp,
}

/// End this device's session (the device is revoked) and close the connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logout {}

// ---------------------------------------------------------------- server → client

/// Success without data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
    /// With `epoch_mismatch`: the group's current epoch.
    pub epoch: Option<Epoch>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloOk {
    pub user: UserId,
    pub device: DeviceId,
    pub server_time_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConvKind {
    Direct,
    Group,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub user: UserId,
    pub admin: bool,
    pub devices: Vec<DeviceId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationInfo {
    pub conv: ConvId,
    pub kind: ConvKind,
    pub name: String,
    pub epoch: Epoch,
    pub last_seq: Seq,
    pub members: Vec<Member>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationSummary {
    pub conv: ConvId,
    pub kind: ConvKind,
    pub name: String,
    pub epoch: Epoch,
    pub last_seq: Seq,
    pub member_count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversations {
    pub conversations: Vec<ConversationSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    pub code: String,
    pub conv: ConvId,
    pub expires_at_ms: u64,
    pub max_uses: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimedKeyPackage {
    pub device: DeviceId,
    pub package: Vec<u8>,
    pub last_resort: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPackages {
    pub packages: Vec<ClaimedKeyPackage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPackageCount {
    pub count: u32,
    pub has_last_resort: bool,
}

/// The commit was accepted (or, with `duplicate`, had been accepted before): it is stored at
/// `seq` and the group is now at `epoch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    pub seq: Seq,
    pub epoch: Epoch,
    pub duplicate: bool,
}

/// The message is durably stored at `seq` (on disk before this frame is sent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    pub seq: Seq,
    pub duplicate: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub device: DeviceId,
    pub name: String,
    pub created_at_ms: u64,
    pub last_seen_ms: u64,
    /// The device this connection belongs to.
    pub current: bool,
    /// False while the device waits for approval.
    pub approved: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Devices {
    pub devices: Vec<DeviceInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub user: UserId,
    pub username: String,
    pub display_name: String,
    pub avatar: Option<String>,
    /// The account's current devices, for key verification and adding to groups.
    pub devices: Vec<DeviceId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedUsers {
    pub users: Vec<UserId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageKind {
    /// An MLS application message.
    Application,
    /// An MLS Commit that moved the group from `epoch` to `epoch + 1`.
    Commit { epoch: Epoch },
}

/// A stored message, pushed to every device of every member (the sender's own devices too),
/// in `seq` order per conversation, until the device acknowledges it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub conv: ConvId,
    pub seq: Seq,
    pub sender: UserId,
    pub sender_device: DeviceId,
    pub msg_id: MsgId,
    pub kind: MessageKind,
    pub sent_at_ms: u64,
    pub payload: Vec<u8>,
}

/// An MLS Welcome for this device; acknowledge with `AckWelcome`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub welcome: u64,
    pub conv: ConvId,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypingEvent {
    pub conv: ConvId,
    pub user: UserId,
    pub device: DeviceId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceEvent {
    pub user: UserId,
    pub online: bool,
    /// Unix milliseconds of the last disconnect, when offline.
    pub last_seen_ms: Option<u64>,
}

/// The answer to a `WalletCall`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletResult {
    pub reply: crate::wallet::WalletReply,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceList {
    pub presence: Vec<PresenceEvent>,
}

/// Membership or name of `conv` changed; `removed` tells this account it is no longer a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationChanged {
    pub conv: ConvId,
    pub removed: bool,
}

/// Messages of `conv` up to `up_to_seq` were dropped by the retention limit before this device
/// fetched them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessagesExpired {
    pub conv: ConvId,
    pub up_to_seq: Seq,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPackagesLow {
    pub count: u32,
}

/// Everything pending at connect time has been pushed; from now on pushes are live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaughtUp {}

/// This device's session was revoked; the server closes the socket after this frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRevoked {}

macro_rules! frame_enum {
    ($(#[$doc:meta])* $name:ident { $($kind:literal => $variant:ident,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum $name {
            $($variant($variant),)*
        }

        impl $name {
            /// The frame's kind number on the wire.
            pub fn kind(&self) -> u16 {
                match self {
                    $($name::$variant(_) => $kind,)*
                }
            }

            /// The frame's name, for logs and metrics (never its content).
            pub fn name(&self) -> &'static str {
                match self {
                    $($name::$variant(_) => stringify!($variant),)*
                }
            }

            pub(crate) fn encode_body(&self, out: Vec<u8>) -> Result<Vec<u8>, postcard::Error> {
                match self {
                    $($name::$variant(body) => postcard::to_extend(body, out),)*
                }
            }

            /// `None` when the kind is unknown.
            pub(crate) fn decode_body(kind: u16, body: &[u8]) -> Option<Result<Self, postcard::Error>> {
                match kind {
                    $($kind => Some(postcard::from_bytes(body).map($name::$variant)),)*
                    _ => None,
                }
            }
        }

        $(impl From<$variant> for $name {
            fn from(body: $variant) -> Self {
                $name::$variant(body)
            }
        })*
    };
}

frame_enum! {
    /// Every frame a client may send.
    ClientFrame {
        1 => Hello,
        2 => CreateDirect,
        3 => CreateGroup,
        4 => RenameGroup,
        5 => AddMembers,
        6 => RemoveMember,
        7 => SetAdmin,
        8 => Leave,
        9 => ListConversations,
        10 => GetConversation,
        11 => CreateInvite,
        12 => RevokeInvite,
        13 => JoinInvite,
        14 => UploadKeyPackages,
        15 => ClaimKeyPackages,
        16 => GetKeyPackageCount,
        17 => Commit,
        18 => Send,
        19 => Ack,
        20 => AckWelcome,
        21 => Typing,
        22 => SubscribePresence,
        23 => SetPresencePrivacy,
        24 => ListDevices,
        25 => RevokeDevice,
        26 => LookupUser,
        27 => GetProfile,
        28 => SetProfile,
        29 => Block,
        30 => Unblock,
        31 => ListBlocked,
        32 => Logout,
        33 => ApproveDevice,
        34 => SendSilent,
        35 => WalletCall,
    }
}

frame_enum! {
    /// Every frame the server may send.
    ServerFrame {
        100 => Done,
        101 => Error,
        102 => HelloOk,
        103 => ConversationInfo,
        104 => Conversations,
        105 => Invite,
        106 => KeyPackages,
        107 => KeyPackageCount,
        108 => Committed,
        109 => Sent,
        110 => Devices,
        111 => Profile,
        112 => BlockedUsers,
        113 => PresenceList,
        114 => WalletResult,
        200 => Message,
        201 => Welcome,
        202 => TypingEvent,
        203 => PresenceEvent,
        204 => ConversationChanged,
        205 => MessagesExpired,
        206 => KeyPackagesLow,
        207 => CaughtUp,
        208 => SessionRevoked,
    }
}

impl ServerFrame {
    pub fn error(code: ErrorCode) -> ServerFrame {
        ServerFrame::Error(Error { code, message: code.description().to_owned(), epoch: None })
    }
}
