//! PostgreSQL implementation of [`ServerStore`], for several `anytime serve` nodes sharing one
//! database. Every method is one transaction. Ordering and exclusivity across nodes come from
//! PostgreSQL itself, never from node memory:
//! - seq and epoch are assigned by `UPDATE conversations … RETURNING`, whose row lock holds until
//!   commit, so seqs stay dense and in commit order even with many writers;
//! - a commit is accepted by `UPDATE … WHERE epoch = $expected`, so exactly one racer wins;
//! - a key package is claimed by `DELETE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED)`;
//! - an invite use is a conditional `UPDATE … RETURNING`.
//!
//! A write returns after PostgreSQL committed it (durable with the server's default
//! `synchronous_commit = on`). Sends and acks are group-committed (`batch.rs`).

mod accounts;
mod batch;
mod blobs;
mod conversations;
mod delivery;
mod keys;
mod ledger;
mod pg;
mod wallet;

use anytime_proto::frame::{ClaimedKeyPackage, ConversationSummary, Message, PresencePrivacy, Seq};
use anytime_proto::{ConvId, DeviceId, UserId};
use anytime_server_core::store::*;
use anytime_server_core::Metrics;
use async_trait::async_trait;
use std::sync::Arc;

pub use pg::OpenError;

pub struct PgStore {
    pool: deadpool_postgres::Pool,
    batcher: batch::Batcher,
}

impl PgStore {
    /// Connects (a pool of `connections` sessions) and migrates the schema if needed.
    pub async fn open(url: &str, connections: usize, metrics: Arc<Metrics>) -> Result<PgStore, OpenError> {
        let pool = pg::pool(url, connections)?;
        pg::migrate(&pool).await?;
        let batcher = batch::Batcher::start(pool.clone(), metrics);
        Ok(PgStore { pool, batcher })
    }
}

#[async_trait]
impl ServerStore for PgStore {
    async fn create_user(&self, user: UserRecord, device: DeviceRecord) -> StoreResult<()> {
        accounts::create_user(&self.pool, user, device).await
    }
    async fn user_by_username(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        accounts::user_where(&self.pool, "username = $1", &username).await
    }
    async fn user(&self, user: UserId) -> StoreResult<Option<UserRecord>> {
        accounts::user_where(&self.pool, "id = $1", &pg::id(user.0)).await
    }
    async fn create_device(&self, device: DeviceRecord, devices_max: u32) -> StoreResult<()> {
        accounts::create_device(&self.pool, device, devices_max).await
    }
    async fn approve_device(&self, user: UserId, code: &str, now_ms: u64, expires_at_ms: u64) -> StoreResult<DeviceId> {
        accounts::approve_device(&self.pool, user, code, now_ms, expires_at_ms).await
    }
    async fn device_by_token_hash(&self, token_hash: [u8; 32]) -> StoreResult<Option<DeviceRecord>> {
        Ok(accounts::devices_where(&self.pool, "token_hash = $1", &&token_hash[..]).await?.pop())
    }
    async fn devices(&self, user: UserId) -> StoreResult<Vec<DeviceRecord>> {
        accounts::devices_where(&self.pool, "user_id = $1", &pg::id(user.0)).await
    }
    async fn revoke_device(&self, user: UserId, device: DeviceId) -> StoreResult<()> {
        accounts::revoke_device(&self.pool, user, device).await
    }
    async fn touch_device(&self, device: DeviceId, at_ms: u64) -> StoreResult<()> {
        pg::execute(
            &self.pool,
            "UPDATE devices SET last_seen_ms = $1 WHERE id = $2",
            &[&pg::id(at_ms), &pg::id(device.0)],
        )
        .await
    }
    async fn set_profile(&self, user: UserId, display_name: String, avatar: Option<String>) -> StoreResult<()> {
        pg::execute(
            &self.pool,
            "UPDATE users SET display_name = $1, avatar = $2 WHERE id = $3",
            &[&display_name, &avatar, &pg::id(user.0)],
        )
        .await
    }
    async fn set_push_endpoint(&self, device: DeviceId, endpoint: Option<String>) -> StoreResult<()> {
        match endpoint {
            Some(endpoint) => {
                pg::execute(
                    &self.pool,
                    "INSERT INTO push_endpoints (device_id, endpoint) SELECT id, $2 FROM devices WHERE id = $1
                     ON CONFLICT (device_id) DO UPDATE SET endpoint = excluded.endpoint",
                    &[&pg::id(device.0), &endpoint],
                )
                .await
            }
            None => {
                pg::execute(&self.pool, "DELETE FROM push_endpoints WHERE device_id = $1", &[&pg::id(device.0)]).await
            }
        }
    }

    async fn push_endpoints(&self, devices: Vec<DeviceId>) -> StoreResult<Vec<(DeviceId, String)>> {
        accounts::push_endpoints(&self.pool, &devices).await
    }

    async fn set_presence_privacy(&self, user: UserId, privacy: PresencePrivacy) -> StoreResult<()> {
        pg::execute(
            &self.pool,
            "UPDATE users SET presence_privacy = $1 WHERE id = $2",
            &[&pg::privacy_to_i16(privacy), &pg::id(user.0)],
        )
        .await
    }
    async fn block(&self, blocker: UserId, blocked: UserId) -> StoreResult<()> {
        pg::execute(
            &self.pool,
            "INSERT INTO blocks (blocker, blocked) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&pg::id(blocker.0), &pg::id(blocked.0)],
        )
        .await
    }
    async fn unblock(&self, blocker: UserId, blocked: UserId) -> StoreResult<()> {
        pg::execute(
            &self.pool,
            "DELETE FROM blocks WHERE blocker = $1 AND blocked = $2",
            &[&pg::id(blocker.0), &pg::id(blocked.0)],
        )
        .await
    }
    async fn blocked_by(&self, blocker: UserId) -> StoreResult<Vec<UserId>> {
        accounts::blocked_by(&self.pool, blocker).await
    }
    async fn is_blocked(&self, blocker: UserId, blocked: UserId) -> StoreResult<bool> {
        pg::exists(
            &self.pool,
            "SELECT 1 FROM blocks WHERE blocker = $1 AND blocked = $2",
            &[&pg::id(blocker.0), &pg::id(blocked.0)],
        )
        .await
    }
    async fn are_contacts(&self, a: UserId, b: UserId) -> StoreResult<bool> {
        pg::exists(&self.pool, "SELECT 1 FROM conversations WHERE direct_key = $1", &[&pg::direct_key(a, b)]).await
    }
    async fn share_conversation(&self, a: UserId, b: UserId) -> StoreResult<bool> {
        pg::exists(
            &self.pool,
            "SELECT 1 FROM members m1 JOIN members m2 ON m2.conv_id = m1.conv_id AND m2.user_id = $2 WHERE m1.user_id = $1 LIMIT 1",
            &[&pg::id(a.0), &pg::id(b.0)],
        )
        .await
    }
    async fn create_conversation(&self, conversation: NewConversation) -> StoreResult<ConvId> {
        conversations::create_conversation(&self.pool, conversation).await
    }
    async fn conversation(&self, conv: ConvId) -> StoreResult<Option<ConversationRecord>> {
        conversations::conversation(&self.pool, conv).await
    }
    async fn members(&self, conv: ConvId) -> StoreResult<Vec<MemberRecord>> {
        conversations::members(&self.pool, conv).await
    }
    async fn member(&self, conv: ConvId, user: UserId) -> StoreResult<Option<MemberRecord>> {
        Ok(conversations::members(&self.pool, conv).await?.into_iter().find(|m| m.user == user))
    }
    async fn member_devices(&self, conv: ConvId) -> StoreResult<Vec<(UserId, DeviceId)>> {
        conversations::member_devices(&self.pool, conv).await
    }
    async fn conversations_of(&self, user: UserId) -> StoreResult<Vec<ConversationSummary>> {
        conversations::conversations_of(&self.pool, user).await
    }
    async fn rename_conversation(&self, conv: ConvId, name: String) -> StoreResult<()> {
        pg::execute(&self.pool, "UPDATE conversations SET name = $1 WHERE id = $2", &[&name, &pg::id(conv.0)]).await
    }
    async fn add_members(&self, conv: ConvId, users: Vec<UserId>, members_max: u32, at_ms: u64) -> StoreResult<()> {
        conversations::add_members(&self.pool, conv, users, members_max, at_ms).await
    }
    async fn remove_member(&self, conv: ConvId, user: UserId) -> StoreResult<()> {
        conversations::remove_member(&self.pool, conv, user).await
    }
    async fn set_admin(&self, conv: ConvId, user: UserId, admin: bool) -> StoreResult<()> {
        conversations::set_admin(&self.pool, conv, user, admin).await
    }
    async fn create_invite(&self, invite: InviteRecord) -> StoreResult<()> {
        conversations::create_invite(&self.pool, invite).await
    }
    async fn invite(&self, code: &str) -> StoreResult<Option<InviteRecord>> {
        conversations::invite(&self.pool, code).await
    }
    async fn revoke_invite(&self, code: &str) -> StoreResult<()> {
        conversations::revoke_invite(&self.pool, code).await
    }
    async fn join_invite(&self, code: &str, user: UserId, now_ms: u64, members_max: u32) -> StoreResult<ConvId> {
        conversations::join_invite(&self.pool, code, user, now_ms, members_max).await
    }
    async fn upload_key_packages(
        &self,
        device: DeviceId,
        packages: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
        per_device_max: u32,
    ) -> StoreResult<u32> {
        keys::upload_key_packages(&self.pool, device, packages, last_resort, per_device_max).await
    }
    async fn claim_key_packages(&self, user: UserId) -> StoreResult<Vec<ClaimedKeyPackage>> {
        keys::claim_key_packages(&self.pool, user).await
    }
    async fn key_package_count(&self, device: DeviceId) -> StoreResult<(u32, bool)> {
        keys::key_package_count(&self.pool, device).await
    }
    async fn submit_message(&self, message: NewMessage) -> StoreResult<PendingWrite<Appended>> {
        self.batcher.message(message).await
    }
    async fn append_commit(&self, commit: NewCommit) -> StoreResult<CommitAccepted> {
        delivery::append_commit(&self.pool, commit).await
    }
    async fn messages_after(&self, conv: ConvId, after: Seq, limit: u32) -> StoreResult<Vec<Message>> {
        delivery::messages_after(&self.pool, conv, after, limit).await
    }
    async fn cursors(&self, device: DeviceId) -> StoreResult<Vec<(ConvId, Seq)>> {
        delivery::cursors(&self.pool, device).await
    }
    async fn submit_ack(&self, device: DeviceId, conv: ConvId, seq: Seq) -> StoreResult<PendingWrite<()>> {
        self.batcher.ack(device, conv, seq).await
    }
    async fn pending_welcomes(&self, device: DeviceId) -> StoreResult<Vec<PendingWelcome>> {
        delivery::pending_welcomes(&self.pool, device).await
    }
    async fn ack_welcome(&self, device: DeviceId, welcome: u64) -> StoreResult<()> {
        delivery::ack_welcome(&self.pool, device, welcome).await
    }
    async fn collect_garbage(&self, now_ms: u64, retention_ms: u64) -> StoreResult<Collected> {
        delivery::collect_garbage(&self.pool, now_ms, retention_ms).await
    }
    async fn flush(&self) -> StoreResult<()> {
        // Every method commits before returning: nothing is pending.
        Ok(())
    }
}
