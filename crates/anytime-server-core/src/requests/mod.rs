//! Request handlers of an authenticated session: each checks limits and rights, calls the
//! store, fans out what changed and returns the answer frame. Rights are checked on every
//! request; a conversation the caller is not in answers exactly like one that does not exist.
//!
//! This module is the dispatcher (the per-request rate limit, then one handler per frame kind)
//! and holds the checks shared by the handlers; the handlers live in one file per domain.

mod accounts;
mod conversations;
mod delivery;
mod keys;

use std::collections::HashSet;

use anytime_proto::frame::{self, ConvKind};
use anytime_proto::limits::USERS_PER_REQUEST_MAX;
use anytime_proto::{ConvId, DeviceId, ErrorCode, ServerFrame, UserId};

use crate::ratelimit::LimitKind;
use crate::session::{Answer, Reject, Session};

fn done() -> Answer {
    Ok(Some(ServerFrame::Done(frame::Done {})))
}

fn check_len(bytes: usize, max: u32) -> Result<(), Reject> {
    if bytes > max as usize {
        return Err(ErrorCode::PayloadTooLarge.into());
    }
    Ok(())
}

fn is_group(kind: ConvKind) -> bool {
    kind == ConvKind::Group
}

impl Session {
    pub(crate) async fn dispatch(&mut self, frame: anytime_proto::ClientFrame) -> Answer {
        use anytime_proto::ClientFrame as F;
        let kind = match &frame {
            F::Send(_) | F::SendSilent(_) | F::Commit(_) => LimitKind::SendPerAccount,
            F::Ack(_) | F::AckWelcome(_) => LimitKind::SendPerAccount,
            _ => LimitKind::RequestPerAccount,
        };
        if !self.allow(kind) {
            return Err(ErrorCode::RateLimited.into());
        }
        match frame {
            F::Hello(_) => Err(ErrorCode::AlreadyAuthenticated.into()),
            F::CreateDirect(r) => self.create_direct(r.peer).await,
            F::CreateGroup(r) => self.create_group(r).await,
            F::RenameGroup(r) => self.rename_group(r).await,
            F::AddMembers(r) => self.add_members(r).await,
            F::RemoveMember(r) => self.remove_member(r.conv, r.user).await,
            F::SetAdmin(r) => self.set_admin(r).await,
            F::Leave(r) => self.remove_member(r.conv, self.user()).await,
            F::ListConversations(_) => self.list_conversations().await,
            F::GetConversation(r) => self.get_conversation(r.conv).await,
            F::CreateInvite(r) => self.create_invite(r).await,
            F::RevokeInvite(r) => self.revoke_invite(r.code).await,
            F::JoinInvite(r) => self.join_invite(r.code).await,
            F::UploadKeyPackages(r) => self.upload_key_packages(r).await,
            F::ClaimKeyPackages(r) => self.claim_key_packages(r.user).await,
            F::GetKeyPackageCount(_) => self.key_package_count().await,
            F::Commit(r) => self.commit(r).await,
            // Sends are pipelined: `Session::on_bytes` routes them to `submit_send`.
            F::Send(_) | F::SendSilent(_) => Err(ErrorCode::Internal.into()),
            F::Ack(r) => self.ack(r.conv, r.seq).await,
            F::AckWelcome(r) => self.ack_welcome(r.welcome).await,
            F::Typing(r) => self.typing(r.conv).await,
            F::SubscribePresence(r) => self.subscribe_presence(r.users).await,
            F::SetPresencePrivacy(r) => self.set_presence_privacy(r.privacy).await,
            F::ListDevices(_) => self.list_devices().await,
            F::RevokeDevice(r) => self.revoke_device(r.device).await,
            F::LookupUser(r) => self.lookup_user(&r.username).await,
            F::GetProfile(r) => self.profile(r.user).await,
            F::SetProfile(r) => self.set_profile(r).await,
            F::Block(r) => self.block(r.user).await,
            F::Unblock(r) => self.unblock(r.user).await,
            F::ListBlocked(_) => self.list_blocked().await,
            F::Logout(_) => self.revoke_device(self.device()).await,
            F::ApproveDevice(r) => self.approve_device(&r.code).await,
            F::WalletCall(r) => self.wallet_call(r.op).await,
        }
    }

    async fn wallet_call(&self, op: anytime_proto::wallet::WalletOp) -> Answer {
        let token = self.auth.as_ref().map(|a| a.token.as_str()).unwrap_or_default();
        let reply = self.core.wallet_call(token, op).await?;
        Ok(Some(ServerFrame::WalletResult(frame::WalletResult { reply })))
    }

    fn user(&self) -> UserId {
        // Dispatch runs only after Hello succeeded.
        self.auth.as_ref().map(|a| a.user).expect("dispatch requires an authenticated session")
    }

    fn device(&self) -> DeviceId {
        // As above.
        self.auth.as_ref().map(|a| a.device).expect("dispatch requires an authenticated session")
    }

    // ---- checks

    async fn require_user(&self, user: UserId) -> Result<(), Reject> {
        match self.core.store.user(user).await? {
            Some(_) => Ok(()),
            None => Err(ErrorCode::UserNotFound.into()),
        }
    }

    /// The caller's membership; a non-member gets the same answer as for a missing conversation.
    async fn require_member(&self, conv: ConvId) -> Result<crate::store::MemberRecord, Reject> {
        match self.core.store.member(conv, self.user()).await? {
            Some(member) => Ok(member),
            None => Err(ErrorCode::ConversationNotFound.into()),
        }
    }

    async fn require_group_admin(&self, conv: ConvId) -> Result<(), Reject> {
        let member = self.require_member(conv).await?;
        let conversation = self.core.store.conversation(conv).await?.ok_or(ErrorCode::ConversationNotFound)?;
        if !is_group(conversation.kind) {
            return Err(ErrorCode::NotAGroup.into());
        }
        if !member.admin {
            return Err(ErrorCode::NotAdmin.into());
        }
        Ok(())
    }

    /// Users that may be put into a conversation by the caller: they exist, are not the caller,
    /// and have not blocked the caller.
    async fn check_invitees(&self, users: &[UserId]) -> Result<Vec<UserId>, Reject> {
        if users.len() > USERS_PER_REQUEST_MAX as usize {
            return Err(ErrorCode::TooManyMembers.into());
        }
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(users.len());
        for &user in users {
            if user == self.user() || !seen.insert(user) {
                continue;
            }
            self.require_user(user).await?;
            if self.core.is_blocked(user, self.user()).await? {
                return Err(ErrorCode::Blocked.into());
            }
            out.push(user);
        }
        Ok(out)
    }
}
