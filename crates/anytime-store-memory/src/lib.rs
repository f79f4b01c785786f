//! [`ServerStore`] in memory, deterministic: for unit tests of the server core and for
//! simulation, without disks.
//!
//! Semantics are those of `anytime-store-sqlite` (and it passes the same
//! `anytime-store-conformance` cases). All state sits in ordered maps behind one mutex; each
//! method takes the lock once and does its whole operation under it, so a method is atomic like
//! a transaction, and a rejected one changes nothing (every check runs before the first
//! change). There is no clock, no randomness and no thread: results depend only on the
//! sequence of calls.
//!
//! Writes are applied at submit time, in submission order; "durable" means "in the map", so
//! the futures of `submit_message` and `submit_ack` are resolved when returned and `flush` has
//! nothing to do.

mod accounts;
mod conversations;
mod delivery;
mod keys;
mod state;

use std::sync::{Mutex, PoisonError};

use anytime_proto::frame::{ClaimedKeyPackage, ConversationSummary, Message, PresencePrivacy, Seq};
use anytime_proto::{ConvId, DeviceId, UserId};
use anytime_server_core::store::*;
use async_trait::async_trait;

use crate::state::State;

/// The in-memory store. Cheap to create; start each test with a fresh one.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Runs `operation` under the lock. The lock is held only by these operations, which check
    /// before they change anything and do not panic on any input; should one panic anyway, the
    /// maps stay usable, so a poisoned lock is recovered rather than propagated.
    fn with<T>(&self, operation: impl FnOnce(&mut State) -> T) -> T {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        operation(&mut state)
    }
}

/// A write that is already applied, as a resolved [`PendingWrite`].
fn done<T: Send + Sync + 'static>(result: StoreResult<T>) -> PendingWrite<T> {
    Box::pin(std::future::ready(result))
}

#[async_trait]
impl ServerStore for MemoryStore {
    async fn create_user(&self, user: UserRecord, device: DeviceRecord) -> StoreResult<()> {
        self.with(|s| s.create_user(user, device))
    }

    async fn user_by_username(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        Ok(self.with(|s| s.usernames.get(username).and_then(|id| s.users.get(id)).cloned()))
    }

    async fn user(&self, user: UserId) -> StoreResult<Option<UserRecord>> {
        Ok(self.with(|s| s.users.get(&user).cloned()))
    }

    async fn create_device(&self, device: DeviceRecord, devices_max: u32) -> StoreResult<()> {
        self.with(|s| s.create_device(device, devices_max))
    }

    async fn approve_device(&self, user: UserId, code: &str, now_ms: u64, expires_at_ms: u64) -> StoreResult<DeviceId> {
        self.with(|s| s.approve_device(user, code, now_ms, expires_at_ms))
    }

    async fn device_by_token_hash(&self, token_hash: [u8; 32]) -> StoreResult<Option<DeviceRecord>> {
        Ok(self.with(|s| s.device_by_token_hash(token_hash)))
    }

    async fn devices(&self, user: UserId) -> StoreResult<Vec<DeviceRecord>> {
        Ok(self.with(|s| s.devices(user)))
    }

    async fn revoke_device(&self, user: UserId, device: DeviceId) -> StoreResult<()> {
        self.with(|s| s.revoke_device(user, device))
    }

    async fn touch_device(&self, device: DeviceId, at_ms: u64) -> StoreResult<()> {
        self.with(|s| s.touch_device(device, at_ms));
        Ok(())
    }

    async fn set_profile(&self, user: UserId, display_name: String, avatar: Option<String>) -> StoreResult<()> {
        self.with(|s| s.set_profile(user, display_name, avatar));
        Ok(())
    }

    async fn set_presence_privacy(&self, user: UserId, privacy: PresencePrivacy) -> StoreResult<()> {
        self.with(|s| s.set_presence_privacy(user, privacy));
        Ok(())
    }

    async fn block(&self, blocker: UserId, blocked: UserId) -> StoreResult<()> {
        self.with(|s| s.blocks.insert((blocker, blocked)));
        Ok(())
    }

    async fn unblock(&self, blocker: UserId, blocked: UserId) -> StoreResult<()> {
        self.with(|s| s.blocks.remove(&(blocker, blocked)));
        Ok(())
    }

    async fn blocked_by(&self, blocker: UserId) -> StoreResult<Vec<UserId>> {
        Ok(self.with(|s| s.blocked_by(blocker)))
    }

    async fn is_blocked(&self, blocker: UserId, blocked: UserId) -> StoreResult<bool> {
        Ok(self.with(|s| s.blocks.contains(&(blocker, blocked))))
    }

    async fn are_contacts(&self, a: UserId, b: UserId) -> StoreResult<bool> {
        Ok(self.with(|s| s.are_contacts(a, b)))
    }

    async fn share_conversation(&self, a: UserId, b: UserId) -> StoreResult<bool> {
        Ok(self.with(|s| s.share_conversation(a, b)))
    }

    async fn create_conversation(&self, conversation: NewConversation) -> StoreResult<ConvId> {
        self.with(|s| s.create_conversation(conversation))
    }

    async fn conversation(&self, conv: ConvId) -> StoreResult<Option<ConversationRecord>> {
        Ok(self.with(|s| s.conversation(conv)))
    }

    async fn members(&self, conv: ConvId) -> StoreResult<Vec<MemberRecord>> {
        Ok(self.with(|s| s.members(conv)))
    }

    async fn member(&self, conv: ConvId, user: UserId) -> StoreResult<Option<MemberRecord>> {
        Ok(self.with(|s| s.member(conv, user)))
    }

    async fn member_devices(&self, conv: ConvId) -> StoreResult<Vec<(UserId, DeviceId)>> {
        Ok(self.with(|s| s.member_devices(conv)))
    }

    async fn conversations_of(&self, user: UserId) -> StoreResult<Vec<ConversationSummary>> {
        Ok(self.with(|s| s.conversations_of(user)))
    }

    async fn rename_conversation(&self, conv: ConvId, name: String) -> StoreResult<()> {
        self.with(|s| s.rename_conversation(conv, name));
        Ok(())
    }

    async fn add_members(&self, conv: ConvId, users: Vec<UserId>, members_max: u32, at_ms: u64) -> StoreResult<()> {
        self.with(|s| s.add_members(conv, users, members_max, at_ms))
    }

    async fn remove_member(&self, conv: ConvId, user: UserId) -> StoreResult<()> {
        self.with(|s| s.remove_member(conv, user))
    }

    async fn set_admin(&self, conv: ConvId, user: UserId, admin: bool) -> StoreResult<()> {
        self.with(|s| s.set_admin(conv, user, admin))
    }

    async fn create_invite(&self, invite: InviteRecord) -> StoreResult<()> {
        self.with(|s| s.create_invite(invite))
    }

    async fn invite(&self, code: &str) -> StoreResult<Option<InviteRecord>> {
        Ok(self.with(|s| s.invite(code)))
    }

    async fn revoke_invite(&self, code: &str) -> StoreResult<()> {
        self.with(|s| s.revoke_invite(code))
    }

    async fn join_invite(&self, code: &str, user: UserId, now_ms: u64, members_max: u32) -> StoreResult<ConvId> {
        self.with(|s| s.join_invite(code, user, now_ms, members_max))
    }

    async fn upload_key_packages(
        &self,
        device: DeviceId,
        packages: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
        per_device_max: u32,
    ) -> StoreResult<u32> {
        self.with(|s| s.upload_key_packages(device, packages, last_resort, per_device_max))
    }

    async fn claim_key_packages(&self, user: UserId) -> StoreResult<Vec<ClaimedKeyPackage>> {
        self.with(|s| s.claim_key_packages(user))
    }

    async fn key_package_count(&self, device: DeviceId) -> StoreResult<(u32, bool)> {
        Ok(self.with(|s| s.key_package_count(device)))
    }

    /// Applied now; a rejection (`MessageIdReused`, `ConversationNotFound`) comes out of the
    /// returned future, as from SQLite.
    async fn submit_message(&self, message: NewMessage) -> StoreResult<PendingWrite<Appended>> {
        Ok(done(self.with(|s| s.append_message(message))))
    }

    async fn append_commit(&self, commit: NewCommit) -> StoreResult<CommitAccepted> {
        self.with(|s| s.append_commit(commit))
    }

    async fn messages_after(&self, conv: ConvId, after: Seq, limit: u32) -> StoreResult<Vec<Message>> {
        Ok(self.with(|s| s.messages_after(conv, after, limit)))
    }

    async fn cursors(&self, device: DeviceId) -> StoreResult<Vec<(ConvId, Seq)>> {
        Ok(self.with(|s| s.cursors(device)))
    }

    /// Applied now; `ConversationNotFound` (no cursor there) comes out of the returned future.
    async fn submit_ack(&self, device: DeviceId, conv: ConvId, seq: Seq) -> StoreResult<PendingWrite<()>> {
        Ok(done(self.with(|s| s.ack(device, conv, seq))))
    }

    async fn pending_welcomes(&self, device: DeviceId) -> StoreResult<Vec<PendingWelcome>> {
        Ok(self.with(|s| s.pending_welcomes(device)))
    }

    async fn ack_welcome(&self, device: DeviceId, welcome: u64) -> StoreResult<()> {
        self.with(|s| s.ack_welcome(device, welcome))
    }

    async fn collect_garbage(&self, now_ms: u64, retention_ms: u64) -> StoreResult<Collected> {
        Ok(self.with(|s| s.collect_garbage(now_ms, retention_ms)))
    }

    async fn set_push_endpoint(&self, device: DeviceId, endpoint: Option<String>) -> StoreResult<()> {
        self.with(|s| s.set_push_endpoint(device, endpoint));
        Ok(())
    }

    async fn push_endpoints(&self, devices: Vec<DeviceId>) -> StoreResult<Vec<(DeviceId, String)>> {
        Ok(self.with(|s| s.push_endpoints(&devices)))
    }

    /// Every write is in the map when its call returns: nothing to flush. Writes stay accepted
    /// afterwards, as in SQLite.
    async fn flush(&self) -> StoreResult<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_leaves_the_store_usable() {
        let store = MemoryStore::new();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            store.with(|_| panic!("a panic while the lock is held"));
        }));
        assert!(panicked.is_err());
        assert!(store.state.is_poisoned());
        assert!(store.with(|s| s.users.is_empty()));
    }
}
