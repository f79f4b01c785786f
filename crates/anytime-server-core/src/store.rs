//! The storage seam of the server: everything durable goes through [`ServerStore`].
//!
//! Methods are domain operations, each atomic on its own (one database transaction), so every
//! backend can keep the invariants that need atomicity: a key package is claimed once, a commit
//! is accepted only at the group's current epoch, an invite is used at most `max_uses` times,
//! a message id is stored once per sending device. Authorisation (is the caller a member, an
//! admin) is checked by the caller, `crate::session`, before it calls the store.
//!
//! Implementations: `anytime-store-sqlite` (embedded, default) and, later, PostgreSQL.
//! A method returns only after its writes are durable on disk.

use anytime_proto::frame::{ClaimedKeyPackage, ConvKind, ConversationSummary, Epoch, Message, PresencePrivacy, Seq};
use anytime_proto::{ConvId, DeviceId, ErrorCode, MsgId, UserId};
use async_trait::async_trait;
use std::future::Future;
use std::pin::Pin;

/// A store failure: either the request broke a rule the store enforces atomically (answered to
/// the client with the code), or the backend failed (answered as `internal`, logged).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("rejected: {0}")]
    Rejected(ErrorCode),
    #[error("rejected: epoch mismatch, group is at epoch {current}")]
    EpochMismatch { current: Epoch },
    #[error("storage backend failed: {0}")]
    Backend(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A write whose place in the write order is fixed but which is not durable yet; awaiting it
/// returns once it is. Lets one connection pipeline many sends without giving up their order.
pub type PendingWrite<T> = Pin<Box<dyn Future<Output = StoreResult<T>> + Send + Sync + 'static>>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: UserId,
    pub username: String,
    pub password_hash: String,
    pub display_name: String,
    pub avatar: Option<String>,
    pub presence_privacy: PresencePrivacy,
    pub created_at_ms: u64,
}

/// A device with its session. The token itself is never stored, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    pub id: DeviceId,
    pub user: UserId,
    pub name: String,
    pub token_hash: [u8; 32],
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    pub last_seen_ms: u64,
    /// False while a newly linked device waits for approval by an existing one.
    pub approved: bool,
    /// The code that approves it (pending devices only).
    pub link_code: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationRecord {
    pub id: ConvId,
    pub kind: ConvKind,
    pub name: String,
    pub epoch: Epoch,
    pub last_seq: Seq,
    pub created_at_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberRecord {
    pub user: UserId,
    pub admin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewConversation {
    pub id: ConvId,
    pub kind: ConvKind,
    pub name: String,
    pub creator: UserId,
    /// Members other than the creator.
    pub members: Vec<UserId>,
    pub created_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteRecord {
    pub code: String,
    pub conv: ConvId,
    pub created_by: UserId,
    pub expires_at_ms: u64,
    pub max_uses: u32,
    pub uses: u32,
    pub revoked: bool,
}

/// An application message to append at the end of its conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub conv: ConvId,
    pub sender: UserId,
    pub sender_device: DeviceId,
    pub msg_id: MsgId,
    pub payload: Vec<u8>,
    pub at_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub seq: Seq,
    /// The message id had been stored before; nothing new was written.
    pub duplicate: bool,
}

/// An MLS commit to order into its conversation, with the Welcome for the devices it adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCommit {
    pub conv: ConvId,
    pub epoch: Epoch,
    pub sender: UserId,
    pub sender_device: DeviceId,
    pub msg_id: MsgId,
    pub commit: Vec<u8>,
    pub welcome: Option<NewWelcome>,
    pub at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWelcome {
    pub id: u64,
    pub devices: Vec<DeviceId>,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitAccepted {
    pub seq: Seq,
    /// The group's epoch after this commit.
    pub epoch: Epoch,
    pub duplicate: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingWelcome {
    pub id: u64,
    pub conv: ConvId,
    pub payload: Vec<u8>,
}

/// What a garbage-collection pass removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collected {
    pub messages: u64,
    /// Devices whose session expired (deleted); their live connections must close.
    pub expired_devices: Vec<DeviceId>,
}

#[async_trait]
pub trait ServerStore: Send + Sync + 'static {
    // ---- accounts and devices
    /// Creates the account and its first device. `UsernameTaken` if the name exists.
    async fn create_user(&self, user: UserRecord, device: DeviceRecord) -> StoreResult<()>;
    async fn user_by_username(&self, username: &str) -> StoreResult<Option<UserRecord>>;
    async fn user(&self, user: UserId) -> StoreResult<Option<UserRecord>>;
    /// Adds a device; `TooManyDevices` past `devices_max`. The device starts reading every
    /// conversation of its account from the conversation's current end.
    async fn create_device(&self, device: DeviceRecord, devices_max: u32) -> StoreResult<()>;
    /// Approves the pending device of `user` with this link code: it becomes a recipient of the
    /// account's conversations (from their current end) and its session gets `expires_at_ms`.
    /// `LinkCodeInvalid` if no pending device of `user` has the code.
    /// A code whose device expired (`now_ms` past its 10-minute window) is `LinkCodeInvalid`.
    async fn approve_device(&self, user: UserId, code: &str, now_ms: u64, expires_at_ms: u64) -> StoreResult<DeviceId>;
    async fn device_by_token_hash(&self, token_hash: [u8; 32]) -> StoreResult<Option<DeviceRecord>>;
    async fn devices(&self, user: UserId) -> StoreResult<Vec<DeviceRecord>>;
    /// Deletes the device with its session, cursors, key packages and welcomes.
    /// `DeviceNotFound` unless it belongs to `user`.
    async fn revoke_device(&self, user: UserId, device: DeviceId) -> StoreResult<()>;
    async fn touch_device(&self, device: DeviceId, at_ms: u64) -> StoreResult<()>;
    async fn set_profile(&self, user: UserId, display_name: String, avatar: Option<String>) -> StoreResult<()>;
    async fn set_presence_privacy(&self, user: UserId, privacy: PresencePrivacy) -> StoreResult<()>;
    async fn block(&self, blocker: UserId, blocked: UserId) -> StoreResult<()>;
    async fn unblock(&self, blocker: UserId, blocked: UserId) -> StoreResult<()>;
    async fn blocked_by(&self, blocker: UserId) -> StoreResult<Vec<UserId>>;
    async fn is_blocked(&self, blocker: UserId, blocked: UserId) -> StoreResult<bool>;
    /// Whether the two users share a direct chat ("contacts" for presence privacy).
    async fn are_contacts(&self, a: UserId, b: UserId) -> StoreResult<bool>;
    /// Whether the two users are members of at least one common conversation.
    async fn share_conversation(&self, a: UserId, b: UserId) -> StoreResult<bool>;

    // ---- conversations
    /// Creates the conversation. For a direct chat that already exists between the two users,
    /// returns the existing id instead.
    async fn create_conversation(&self, conversation: NewConversation) -> StoreResult<ConvId>;
    async fn conversation(&self, conv: ConvId) -> StoreResult<Option<ConversationRecord>>;
    async fn members(&self, conv: ConvId) -> StoreResult<Vec<MemberRecord>>;
    async fn member(&self, conv: ConvId, user: UserId) -> StoreResult<Option<MemberRecord>>;
    /// Every device of every member: the recipients of the conversation's messages.
    async fn member_devices(&self, conv: ConvId) -> StoreResult<Vec<(UserId, DeviceId)>>;
    async fn conversations_of(&self, user: UserId) -> StoreResult<Vec<ConversationSummary>>;
    async fn rename_conversation(&self, conv: ConvId, name: String) -> StoreResult<()>;
    /// Adds the users; `AlreadyMember` if all already are, `TooManyMembers` past `members_max`.
    async fn add_members(&self, conv: ConvId, users: Vec<UserId>, members_max: u32, at_ms: u64) -> StoreResult<()>;
    /// `NotMember` if the user is not a member. A group left without admins gets its oldest
    /// remaining member as admin; a group left without members is deleted.
    async fn remove_member(&self, conv: ConvId, user: UserId) -> StoreResult<()>;
    async fn set_admin(&self, conv: ConvId, user: UserId, admin: bool) -> StoreResult<()>;
    async fn create_invite(&self, invite: InviteRecord) -> StoreResult<()>;
    async fn invite(&self, code: &str) -> StoreResult<Option<InviteRecord>>;
    async fn revoke_invite(&self, code: &str) -> StoreResult<()>;
    /// Uses the invite: checks expiry, revocation and uses, adds the user, counts the use.
    async fn join_invite(&self, code: &str, user: UserId, now_ms: u64, members_max: u32) -> StoreResult<ConvId>;

    // ---- MLS key packages
    /// Stores one-time packages (and replaces the last-resort one); returns the one-time count.
    async fn upload_key_packages(
        &self,
        device: DeviceId,
        packages: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
        per_device_max: u32,
    ) -> StoreResult<u32>;
    /// One package per approved device of `user`, each one-time package handed out exactly
    /// once; a device with none left yields its last-resort package; a device that never
    /// uploaded is skipped. `NoKeyPackage` if no device yields anything.
    async fn claim_key_packages(&self, user: UserId) -> StoreResult<Vec<ClaimedKeyPackage>>;
    /// One-time packages left, and whether a last-resort package is stored.
    async fn key_package_count(&self, device: DeviceId) -> StoreResult<(u32, bool)>;

    // ---- delivery
    /// Queues the message behind every write submitted before it; the returned future
    /// resolves once it is durable.
    async fn submit_message(&self, message: NewMessage) -> StoreResult<PendingWrite<Appended>>;
    /// Accepts the commit only if the group is at `commit.epoch` (`EpochMismatch` otherwise).
    async fn append_commit(&self, commit: NewCommit) -> StoreResult<CommitAccepted>;
    /// Stored messages of `conv` with `seq > after`, in order, at most `limit`.
    async fn messages_after(&self, conv: ConvId, after: Seq, limit: u32) -> StoreResult<Vec<Message>>;
    /// The device's cursor (last acknowledged seq) in each of its conversations.
    async fn cursors(&self, device: DeviceId) -> StoreResult<Vec<(ConvId, Seq)>>;
    /// Queues a cursor move (forward only, never back); resolves once durable.
    async fn submit_ack(&self, device: DeviceId, conv: ConvId, seq: Seq) -> StoreResult<PendingWrite<()>>;
    async fn pending_welcomes(&self, device: DeviceId) -> StoreResult<Vec<PendingWelcome>>;
    /// `UnknownWelcome` if the device has no such welcome.
    async fn ack_welcome(&self, device: DeviceId, welcome: u64) -> StoreResult<()>;
    /// Deletes messages every recipient device acknowledged, messages older than the retention
    /// limit, and expired sessions.
    async fn collect_garbage(&self, now_ms: u64, retention_ms: u64) -> StoreResult<Collected>;

    // ---- Web Push
    /// Sets (or with `None` clears) the Web Push endpoint of a device; one per device.
    async fn set_push_endpoint(&self, device: DeviceId, endpoint: Option<String>) -> StoreResult<()>;
    /// The push endpoints of those of `devices` that have one and still exist.
    async fn push_endpoints(&self, devices: Vec<DeviceId>) -> StoreResult<Vec<(DeviceId, String)>>;

    /// Makes every acknowledged write durable and stops accepting writes (graceful shutdown).
    async fn flush(&self) -> StoreResult<()>;
}
