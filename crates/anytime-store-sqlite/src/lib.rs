//! Embedded SQLite implementation of [`ServerStore`]: the default storage of an Anytime node.
//!
//! One database file in the data directory, WAL mode, `synchronous=FULL`, versioned
//! migrations (`migrate`). Writes go through group commit (`engine`): a write returns once the
//! transaction holding it has been fsynced, and concurrent writes share that fsync.

mod accounts;
mod blobs;
mod conversations;
mod delivery;
mod engine;
mod keys;
mod ledger;
pub mod migrate;
mod sql;
mod wallet;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anytime_proto::frame::{ClaimedKeyPackage, ConversationSummary, Message, PresencePrivacy, Seq};
use anytime_proto::{ConvId, DeviceId, UserId};
use anytime_server_core::store::*;
use anytime_server_core::Metrics;
use async_trait::async_trait;

use crate::engine::Engine;

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("could not open the database {path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error(transparent)]
    Migrate(#[from] migrate::MigrateError),
    #[error("could not start the database writer thread: {0}")]
    Thread(std::io::Error),
}

pub struct SqliteStore {
    engine: Engine,
}

/// The database file inside a data directory.
pub fn database_path(data_dir: &Path) -> PathBuf {
    data_dir.join("anytime.sqlite3")
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database at `path`.
    pub fn open(path: &Path, metrics: Arc<Metrics>) -> Result<SqliteStore, OpenError> {
        Ok(SqliteStore { engine: Engine::open(path, metrics)? })
    }
}

#[async_trait]
impl ServerStore for SqliteStore {
    async fn create_user(&self, user: UserRecord, device: DeviceRecord) -> StoreResult<()> {
        self.engine.write(move |c| accounts::create_user(c, user, device)).await
    }

    async fn user_by_username(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        let username = username.to_owned();
        self.engine.read(move |c| accounts::user_by_username(c, &username)).await
    }

    async fn user(&self, user: UserId) -> StoreResult<Option<UserRecord>> {
        self.engine.read(move |c| accounts::user(c, user)).await
    }

    async fn create_device(&self, device: DeviceRecord, devices_max: u32) -> StoreResult<()> {
        self.engine.write(move |c| accounts::create_device(c, device, devices_max)).await
    }

    async fn approve_device(&self, user: UserId, code: &str, now_ms: u64, expires_at_ms: u64) -> StoreResult<DeviceId> {
        let code = code.to_owned();
        self.engine.write(move |c| accounts::approve_device(c, user, &code, now_ms, expires_at_ms)).await
    }

    async fn device_by_token_hash(&self, token_hash: [u8; 32]) -> StoreResult<Option<DeviceRecord>> {
        self.engine.read(move |c| accounts::device_by_token_hash(c, token_hash)).await
    }

    async fn devices(&self, user: UserId) -> StoreResult<Vec<DeviceRecord>> {
        self.engine.read(move |c| accounts::devices(c, user)).await
    }

    async fn revoke_device(&self, user: UserId, device: DeviceId) -> StoreResult<()> {
        self.engine.write(move |c| accounts::revoke_device(c, user, device)).await
    }

    async fn touch_device(&self, device: DeviceId, at_ms: u64) -> StoreResult<()> {
        self.engine.write(move |c| accounts::touch_device(c, device, at_ms)).await
    }

    async fn set_profile(&self, user: UserId, display_name: String, avatar: Option<String>) -> StoreResult<()> {
        self.engine.write(move |c| accounts::set_profile(c, user, display_name, avatar)).await
    }

    async fn set_push_endpoint(&self, device: DeviceId, endpoint: Option<String>) -> StoreResult<()> {
        self.engine.write(move |c| accounts::set_push_endpoint(c, device, endpoint)).await
    }

    async fn push_endpoints(&self, devices: Vec<DeviceId>) -> StoreResult<Vec<(DeviceId, String)>> {
        self.engine.read(move |c| accounts::push_endpoints(c, &devices)).await
    }

    async fn set_presence_privacy(&self, user: UserId, privacy: PresencePrivacy) -> StoreResult<()> {
        self.engine.write(move |c| accounts::set_presence_privacy(c, user, privacy)).await
    }

    async fn block(&self, blocker: UserId, blocked: UserId) -> StoreResult<()> {
        self.engine.write(move |c| accounts::block(c, blocker, blocked)).await
    }

    async fn unblock(&self, blocker: UserId, blocked: UserId) -> StoreResult<()> {
        self.engine.write(move |c| accounts::unblock(c, blocker, blocked)).await
    }

    async fn blocked_by(&self, blocker: UserId) -> StoreResult<Vec<UserId>> {
        self.engine.read(move |c| accounts::blocked_by(c, blocker)).await
    }

    async fn is_blocked(&self, blocker: UserId, blocked: UserId) -> StoreResult<bool> {
        self.engine.read(move |c| accounts::is_blocked(c, blocker, blocked)).await
    }

    async fn are_contacts(&self, a: UserId, b: UserId) -> StoreResult<bool> {
        self.engine.read(move |c| accounts::are_contacts(c, a, b)).await
    }

    async fn share_conversation(&self, a: UserId, b: UserId) -> StoreResult<bool> {
        self.engine.read(move |c| accounts::share_conversation(c, a, b)).await
    }

    async fn create_conversation(&self, conversation: NewConversation) -> StoreResult<ConvId> {
        self.engine.write(move |c| conversations::create_conversation(c, conversation)).await
    }

    async fn conversation(&self, conv: ConvId) -> StoreResult<Option<ConversationRecord>> {
        self.engine.read(move |c| conversations::conversation(c, conv)).await
    }

    async fn members(&self, conv: ConvId) -> StoreResult<Vec<MemberRecord>> {
        self.engine.read(move |c| conversations::members(c, conv)).await
    }

    async fn member(&self, conv: ConvId, user: UserId) -> StoreResult<Option<MemberRecord>> {
        self.engine.read(move |c| conversations::member(c, conv, user)).await
    }

    async fn member_devices(&self, conv: ConvId) -> StoreResult<Vec<(UserId, DeviceId)>> {
        self.engine.read(move |c| conversations::member_devices(c, conv)).await
    }

    async fn conversations_of(&self, user: UserId) -> StoreResult<Vec<ConversationSummary>> {
        self.engine.read(move |c| conversations::conversations_of(c, user)).await
    }

    async fn rename_conversation(&self, conv: ConvId, name: String) -> StoreResult<()> {
        self.engine.write(move |c| conversations::rename(c, conv, name)).await
    }

    async fn add_members(&self, conv: ConvId, users: Vec<UserId>, members_max: u32, at_ms: u64) -> StoreResult<()> {
        self.engine.write(move |c| conversations::add_members(c, conv, users, members_max, at_ms)).await
    }

    async fn remove_member(&self, conv: ConvId, user: UserId) -> StoreResult<()> {
        self.engine.write(move |c| conversations::remove_member(c, conv, user)).await
    }

    async fn set_admin(&self, conv: ConvId, user: UserId, admin: bool) -> StoreResult<()> {
        self.engine.write(move |c| conversations::set_admin(c, conv, user, admin)).await
    }

    async fn create_invite(&self, invite: InviteRecord) -> StoreResult<()> {
        self.engine.write(move |c| conversations::create_invite(c, invite)).await
    }

    async fn invite(&self, code: &str) -> StoreResult<Option<InviteRecord>> {
        let code = code.to_owned();
        self.engine.read(move |c| conversations::invite(c, &code)).await
    }

    async fn revoke_invite(&self, code: &str) -> StoreResult<()> {
        let code = code.to_owned();
        self.engine.write(move |c| conversations::revoke_invite(c, &code)).await
    }

    async fn join_invite(&self, code: &str, user: UserId, now_ms: u64, members_max: u32) -> StoreResult<ConvId> {
        let code = code.to_owned();
        self.engine.write(move |c| conversations::join_invite(c, &code, user, now_ms, members_max)).await
    }

    async fn upload_key_packages(
        &self,
        device: DeviceId,
        packages: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
        per_device_max: u32,
    ) -> StoreResult<u32> {
        self.engine.write(move |c| keys::upload(c, device, packages, last_resort, per_device_max)).await
    }

    async fn claim_key_packages(&self, user: UserId) -> StoreResult<Vec<ClaimedKeyPackage>> {
        self.engine.write(move |c| keys::claim(c, user)).await
    }

    async fn key_package_count(&self, device: DeviceId) -> StoreResult<(u32, bool)> {
        self.engine.read(move |c| keys::count(c, device)).await
    }

    async fn submit_message(&self, message: NewMessage) -> StoreResult<PendingWrite<Appended>> {
        self.engine.submit(move |c| delivery::append_message(c, message)).await
    }

    async fn append_commit(&self, commit: NewCommit) -> StoreResult<CommitAccepted> {
        self.engine.write(move |c| delivery::append_commit(c, commit)).await
    }

    async fn messages_after(&self, conv: ConvId, after: Seq, limit: u32) -> StoreResult<Vec<Message>> {
        self.engine.read(move |c| delivery::messages_after(c, conv, after, limit)).await
    }

    async fn cursors(&self, device: DeviceId) -> StoreResult<Vec<(ConvId, Seq)>> {
        self.engine.read(move |c| delivery::cursors(c, device)).await
    }

    async fn submit_ack(&self, device: DeviceId, conv: ConvId, seq: Seq) -> StoreResult<PendingWrite<()>> {
        self.engine.submit(move |c| delivery::ack(c, device, conv, seq)).await
    }

    async fn pending_welcomes(&self, device: DeviceId) -> StoreResult<Vec<PendingWelcome>> {
        self.engine.read(move |c| delivery::pending_welcomes(c, device)).await
    }

    async fn ack_welcome(&self, device: DeviceId, welcome: u64) -> StoreResult<()> {
        self.engine.write(move |c| delivery::ack_welcome(c, device, welcome)).await
    }

    async fn collect_garbage(&self, now_ms: u64, retention_ms: u64) -> StoreResult<Collected> {
        let collected = self.engine.write(move |c| delivery::collect_garbage(c, now_ms, retention_ms)).await?;
        if collected.messages > 0 {
            self.engine.request_wal_truncate();
            // The truncation runs after the batch this no-op lands in.
            self.engine.write(|_| Ok(())).await?;
        }
        Ok(collected)
    }

    async fn flush(&self) -> StoreResult<()> {
        // A no-op job: it completes only after every job queued before it has committed.
        self.engine.write(|_| Ok(())).await
    }
}
