//! Request handlers of an authenticated session: each checks limits and rights, calls the
//! store, fans out what changed and returns the answer frame. Rights are checked on every
//! request; a conversation the caller is not in answers exactly like one that does not exist.

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;

use anytime_proto::frame::{self, ConvKind, MessageKind};
use anytime_proto::limits::*;
use anytime_proto::{encode_server, ConvId, DeviceId, ErrorCode, ServerFrame, UserId};
use base64::Engine;
use bytes::Bytes;

use crate::auth::validate_name;
use crate::cluster::ClusterEvent;
use crate::env::EnvExt;
use crate::hub::Push;
use crate::is_group;
use crate::ratelimit::{LimitKey, LimitKind};
use crate::session::{Answer, Completed, Outcome, PendingRequest, Reject, Session};
use crate::store::{InviteRecord, NewCommit, NewConversation, NewMessage, NewWelcome};

fn done() -> Answer {
    Ok(Some(ServerFrame::Done(frame::Done {})))
}

fn check_len(bytes: usize, max: u32) -> Result<(), Reject> {
    if bytes > max as usize {
        return Err(ErrorCode::PayloadTooLarge.into());
    }
    Ok(())
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
            F::GetConversation(r) => {
                self.require_member(r.conv).await?;
                self.conversation_info(r.conv).await
            }
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
            F::AckWelcome(r) => {
                self.core.store.ack_welcome(self.device(), r.welcome).await?;
                Ok(None)
            }
            F::Typing(r) => self.typing(r.conv).await,
            F::SubscribePresence(r) => self.subscribe_presence(r.users).await,
            F::SetPresencePrivacy(r) => {
                self.core.store.set_presence_privacy(self.user(), r.privacy).await?;
                self.core.cluster(ClusterEvent::SetPrivacy(self.user(), r.privacy));
                done()
            }
            F::ListDevices(_) => self.list_devices().await,
            F::RevokeDevice(r) => self.revoke_device(r.device).await,
            F::LookupUser(r) => {
                let user = self.core.store.user_by_username(&r.username).await?;
                let user = user.ok_or(ErrorCode::UserNotFound)?;
                self.profile(user.id).await
            }
            F::GetProfile(r) => self.profile(r.user).await,
            F::SetProfile(r) => {
                let display_name = validate_name(&r.display_name)?;
                if let Some(avatar) = &r.avatar {
                    check_len(avatar.len(), AVATAR_REF_BYTES_MAX)?;
                }
                self.core.store.set_profile(self.user(), display_name, r.avatar).await?;
                done()
            }
            F::Block(r) => {
                if r.user == self.user() {
                    return Err(ErrorCode::InvalidArgument.into());
                }
                self.require_user(r.user).await?;
                self.core.store.block(self.user(), r.user).await?;
                self.core.cluster(ClusterEvent::ForgetBlocks(self.user()));
                done()
            }
            F::Unblock(r) => {
                self.core.store.unblock(self.user(), r.user).await?;
                self.core.cluster(ClusterEvent::ForgetBlocks(self.user()));
                done()
            }
            F::ListBlocked(_) => {
                let users = self.core.store.blocked_by(self.user()).await?;
                Ok(Some(ServerFrame::BlockedUsers(frame::BlockedUsers { users })))
            }
            F::Logout(_) => self.revoke_device(self.device()).await,
            F::ApproveDevice(r) => {
                if r.code.len() > LINK_CODE_BYTES_MAX {
                    return Err(ErrorCode::LinkCodeInvalid.into());
                }
                let now_ms = self.core.env.now_ms();
                let expires_at_ms = now_ms.saturating_add(self.core.config.session_ttl_ms);
                self.core.store.approve_device(self.user(), &r.code, now_ms, expires_at_ms).await?;
                self.core.cluster(ClusterEvent::InvalidateAllRoutes);
                self.core.announce_devices_changed(self.user()).await;
                done()
            }
        }
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

    // ---- conversations

    async fn create_direct(&mut self, peer: UserId) -> Answer {
        if peer == self.user() {
            return Err(ErrorCode::InvalidArgument.into());
        }
        let peers = self.check_invitees(&[peer]).await?;
        let conversation = NewConversation {
            id: ConvId(self.core.env.random_u64()),
            kind: ConvKind::Direct,
            name: String::new(),
            creator: self.user(),
            members: peers,
            created_at_ms: self.core.env.now_ms(),
        };
        let conv = self.core.store.create_conversation(conversation).await?;
        self.announce_membership(conv, &[self.user(), peer], false).await?;
        self.conversation_info(conv).await
    }

    async fn create_group(&mut self, request: frame::CreateGroup) -> Answer {
        let name = validate_name(&request.name)?;
        let members = self.check_invitees(&request.members).await?;
        let conversation = NewConversation {
            id: ConvId(self.core.env.random_u64()),
            kind: ConvKind::Group,
            name,
            creator: self.user(),
            members: members.clone(),
            created_at_ms: self.core.env.now_ms(),
        };
        let conv = self.core.store.create_conversation(conversation).await?;
        let mut everyone = members;
        everyone.push(self.user());
        self.announce_membership(conv, &everyone, false).await?;
        self.conversation_info(conv).await
    }

    async fn rename_group(&mut self, request: frame::RenameGroup) -> Answer {
        let name = validate_name(&request.name)?;
        self.require_group_admin(request.conv).await?;
        self.core.store.rename_conversation(request.conv, name).await?;
        let members: Vec<UserId> = self.core.store.members(request.conv).await?.into_iter().map(|m| m.user).collect();
        self.announce_membership(request.conv, &members, false).await?;
        done()
    }

    async fn add_members(&mut self, request: frame::AddMembers) -> Answer {
        self.require_group_admin(request.conv).await?;
        let users = self.check_invitees(&request.users).await?;
        if users.is_empty() {
            return Err(ErrorCode::AlreadyMember.into());
        }
        let now_ms = self.core.env.now_ms();
        self.core.store.add_members(request.conv, users, GROUP_MEMBERS_MAX, now_ms).await?;
        let members: Vec<UserId> = self.core.store.members(request.conv).await?.into_iter().map(|m| m.user).collect();
        self.announce_membership(request.conv, &members, false).await?;
        self.conversation_info(request.conv).await
    }

    /// Removal by an admin, or by the member themself (leave).
    async fn remove_member(&mut self, conv: ConvId, user: UserId) -> Answer {
        if user == self.user() {
            self.require_member(conv).await?;
            let conversation = self.core.store.conversation(conv).await?.ok_or(ErrorCode::ConversationNotFound)?;
            if !is_group(conversation.kind) {
                return Err(ErrorCode::NotAGroup.into());
            }
        } else {
            self.require_group_admin(conv).await?;
        }
        self.core.store.remove_member(conv, user).await?;
        self.announce_membership(conv, &[user], true).await?;
        let rest: Vec<UserId> = self.core.store.members(conv).await?.into_iter().map(|m| m.user).collect();
        self.announce_membership(conv, &rest, false).await?;
        done()
    }

    async fn set_admin(&mut self, request: frame::SetAdmin) -> Answer {
        self.require_group_admin(request.conv).await?;
        self.core.store.set_admin(request.conv, request.user, request.admin).await?;
        let members: Vec<UserId> = self.core.store.members(request.conv).await?.into_iter().map(|m| m.user).collect();
        self.announce_membership(request.conv, &members, false).await?;
        done()
    }

    async fn list_conversations(&self) -> Answer {
        let conversations = self.core.store.conversations_of(self.user()).await?;
        Ok(Some(ServerFrame::Conversations(frame::Conversations { conversations })))
    }

    async fn conversation_info(&self, conv: ConvId) -> Answer {
        let conversation = self.core.store.conversation(conv).await?.ok_or(ErrorCode::ConversationNotFound)?;
        let members = self.core.store.members(conv).await?;
        let devices = self.core.store.member_devices(conv).await?;
        let members = members
            .into_iter()
            .map(|m| frame::Member {
                user: m.user,
                admin: m.admin,
                devices: devices.iter().filter(|(u, _)| *u == m.user).map(|(_, d)| *d).collect(),
            })
            .collect();
        Ok(Some(ServerFrame::ConversationInfo(frame::ConversationInfo {
            conv,
            kind: conversation.kind,
            name: conversation.name,
            epoch: conversation.epoch,
            last_seq: conversation.last_seq,
            members,
        })))
    }

    /// Drops cached routing for `conv` and tells every device of `users` that it changed.
    async fn announce_membership(&mut self, conv: ConvId, users: &[UserId], removed: bool) -> Result<(), Reject> {
        self.core.cluster(ClusterEvent::InvalidateRoute(conv));
        let frame = Bytes::from(encode_server(
            0,
            &ServerFrame::ConversationChanged(frame::ConversationChanged { conv, removed }),
        ));
        let mut devices = Vec::new();
        for &user in users {
            devices.extend(self.core.store.devices(user).await?.into_iter().filter(|d| d.approved).map(|d| d.id));
        }
        self.core.push(&devices, &Push::Membership { conv, frame });
        Ok(())
    }

    // ---- invites

    async fn create_invite(&mut self, request: frame::CreateInvite) -> Answer {
        self.require_group_admin(request.conv).await?;
        if !(1..=INVITE_TTL_SECS_MAX).contains(&request.ttl_secs) || !(1..=INVITE_USES_MAX).contains(&request.max_uses)
        {
            return Err(ErrorCode::InvalidArgument.into());
        }
        let secret: [u8; 16] = self.core.env.random_array();
        let code = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
        let expires_at_ms = self.core.env.now_ms() + u64::from(request.ttl_secs) * 1000;
        let invite = InviteRecord {
            code: code.clone(),
            conv: request.conv,
            created_by: self.user(),
            expires_at_ms,
            max_uses: request.max_uses,
            uses: 0,
            revoked: false,
        };
        self.core.store.create_invite(invite).await?;
        Ok(Some(ServerFrame::Invite(frame::Invite {
            code,
            conv: request.conv,
            expires_at_ms,
            max_uses: request.max_uses,
        })))
    }

    async fn revoke_invite(&mut self, code: String) -> Answer {
        let invite = self.core.store.invite(&code).await?.ok_or(ErrorCode::InviteNotFound)?;
        if self.core.store.member(invite.conv, self.user()).await?.is_none() {
            return Err(ErrorCode::InviteNotFound.into());
        }
        self.require_group_admin(invite.conv).await?;
        self.core.store.revoke_invite(&code).await?;
        done()
    }

    async fn join_invite(&mut self, code: String) -> Answer {
        if code.len() > 64 {
            return Err(ErrorCode::InviteNotFound.into());
        }
        let invite = self.core.store.invite(&code).await?.ok_or(ErrorCode::InviteNotFound)?;
        if self.core.is_blocked(invite.created_by, self.user()).await? {
            return Err(ErrorCode::Blocked.into());
        }
        let now_ms = self.core.env.now_ms();
        let conv = self.core.store.join_invite(&code, self.user(), now_ms, GROUP_MEMBERS_MAX).await?;
        let members: Vec<UserId> = self.core.store.members(conv).await?.into_iter().map(|m| m.user).collect();
        self.announce_membership(conv, &members, false).await?;
        self.conversation_info(conv).await
    }

    // ---- key packages

    async fn upload_key_packages(&mut self, request: frame::UploadKeyPackages) -> Answer {
        if request.packages.len() > KEY_PACKAGES_PER_UPLOAD_MAX as usize {
            return Err(ErrorCode::TooManyKeyPackages.into());
        }
        for package in request.packages.iter().chain(request.last_resort.iter()) {
            check_len(package.len(), KEY_PACKAGE_BYTES_MAX)?;
            if package.is_empty() {
                return Err(ErrorCode::InvalidArgument.into());
            }
        }
        let before = self.core.store.key_package_count(self.device()).await?;
        let count = self
            .core
            .store
            .upload_key_packages(self.device(), request.packages, request.last_resort, KEY_PACKAGES_PER_DEVICE_MAX)
            .await?;
        let (_, has_last_resort) = self.core.store.key_package_count(self.device()).await?;
        if before == (0, false) {
            // A device's first keys: members can add it to the groups now.
            self.core.announce_devices_changed(self.user()).await;
        }
        Ok(Some(ServerFrame::KeyPackageCount(frame::KeyPackageCount { count, has_last_resort })))
    }

    async fn claim_key_packages(&mut self, user: UserId) -> Answer {
        self.require_user(user).await?;
        let me = self.user();
        if user != me {
            if self.core.is_blocked(user, me).await? {
                return Err(ErrorCode::Blocked.into());
            }
            // Key packages serve one purpose: adding that user's devices to a conversation the
            // claimer is in with them (the server records membership before the MLS add). A
            // stranger has no conversation with the user and gets nothing, so cannot drain them.
            if !self.core.store.share_conversation(me, user).await? {
                return Err(ErrorCode::NotMember.into());
            }
            let now_ms = self.core.env.now_ms();
            let limiter = &self.core.limiter;
            if !limiter.check(LimitKind::KeyPackageClaimPerAccount, LimitKey::Account(me), now_ms)
                || !limiter.check(LimitKind::KeyPackageClaimPerPair, LimitKey::Pair(me, user), now_ms)
                || !limiter.check(LimitKind::KeyPackageClaimPerTarget, LimitKey::Account(user), now_ms)
            {
                return Err(ErrorCode::RateLimited.into());
            }
        }
        let packages = self.core.store.claim_key_packages(user).await?;
        for package in &packages {
            let (count, _) = self.core.store.key_package_count(package.device).await?;
            if count < KEY_PACKAGES_LOW {
                let frame = encode_server(0, &ServerFrame::KeyPackagesLow(frame::KeyPackagesLow { count }));
                self.core.push(&[package.device], &Push::Frame(Bytes::from(frame)));
            }
        }
        Ok(Some(ServerFrame::KeyPackages(frame::KeyPackages { packages })))
    }

    async fn key_package_count(&mut self) -> Answer {
        let (count, has_last_resort) = self.core.store.key_package_count(self.device()).await?;
        Ok(Some(ServerFrame::KeyPackageCount(frame::KeyPackageCount { count, has_last_resort })))
    }

    // ---- delivery

    async fn commit(&mut self, request: frame::Commit) -> Answer {
        check_len(request.commit.len(), HANDSHAKE_BYTES_MAX)?;
        let route = self.core.route(request.conv).await?.ok_or(ErrorCode::ConversationNotFound)?;
        if !route.has_member(self.user()) {
            return Err(ErrorCode::ConversationNotFound.into());
        }
        let welcome = match request.welcome {
            None => None,
            Some(welcome) => {
                check_len(welcome.payload.len(), HANDSHAKE_BYTES_MAX)?;
                let members: HashSet<DeviceId> = route.recipients.iter().map(|(_, d)| *d).collect();
                if welcome.devices.is_empty() || welcome.devices.iter().any(|d| !members.contains(d)) {
                    // A Welcome goes only to devices of members (added to the group first).
                    return Err(ErrorCode::InvalidArgument.into());
                }
                Some(NewWelcome { id: self.core.env.random_u64(), devices: welcome.devices, payload: welcome.payload })
            }
        };
        let at_ms = self.core.env.now_ms();
        let commit = NewCommit {
            conv: request.conv,
            epoch: request.epoch,
            sender: self.user(),
            sender_device: self.device(),
            msg_id: request.msg_id,
            commit: request.commit.clone(),
            welcome: welcome.clone(),
            at_ms,
        };
        let accepted = self.core.store.append_commit(commit).await?;
        if !accepted.duplicate {
            self.core.metrics.commits_in.fetch_add(1, Relaxed);
            let message = frame::Message {
                conv: request.conv,
                seq: accepted.seq,
                sender: self.user(),
                sender_device: self.device(),
                msg_id: request.msg_id,
                kind: MessageKind::Commit { epoch: request.epoch },
                sent_at_ms: at_ms,
                payload: request.commit,
            };
            self.publish(&route.recipients, message);
            if let Some(welcome) = welcome {
                let frame = frame::Welcome { welcome: welcome.id, conv: request.conv, payload: welcome.payload };
                let bytes = Bytes::from(encode_server(0, &ServerFrame::Welcome(frame)));
                self.core.push(&welcome.devices, &Push::Frame(bytes));
            }
        }
        Ok(Some(ServerFrame::Committed(frame::Committed {
            seq: accepted.seq,
            epoch: accepted.epoch,
            duplicate: accepted.duplicate,
        })))
    }

    /// The route of a conversation the caller may deliver into: a member, and in a direct chat
    /// not blocked by the peer. (In a group the members' clients hide a blocked sender: the MLS
    /// group still needs every message in order.)
    async fn deliverable_route(&self, conv: ConvId) -> Result<std::sync::Arc<crate::hub::Route>, Reject> {
        let route = self.core.route(conv).await?.ok_or(ErrorCode::ConversationNotFound)?;
        if !route.has_member(self.user()) {
            return Err(ErrorCode::ConversationNotFound.into());
        }
        if route.kind == ConvKind::Direct {
            let peer = route.recipients.iter().map(|(u, _)| *u).find(|u| *u != self.user());
            if let Some(peer) = peer {
                if self.core.is_blocked(peer, self.user()).await? {
                    return Err(ErrorCode::Blocked.into());
                }
            }
        }
        Ok(route)
    }

    /// Validates a send and queues it for storage; the returned future completes once it is
    /// durable, and `Session::on_completed` then publishes it and answers.
    pub(crate) async fn submit_send(
        &mut self,
        request_id: u32,
        request: frame::Send,
        silent: bool,
    ) -> Result<PendingRequest, Reject> {
        let frame::Send { conv, msg_id, payload } = request;
        check_len(payload.len(), MESSAGE_BYTES_MAX)?;
        let route = self.deliverable_route(conv).await?;
        let at_ms = self.core.env.now_ms();
        let stored = NewMessage {
            conv,
            sender: self.user(),
            sender_device: self.device(),
            msg_id,
            payload: payload.clone(),
            at_ms,
        };
        let pending = self.core.store.submit_message(stored).await?;
        let message = frame::Message {
            conv,
            seq: 0, // Known once stored.
            sender: self.user(),
            sender_device: self.device(),
            msg_id,
            kind: MessageKind::Application,
            sent_at_ms: at_ms,
            payload,
        };
        Ok(Box::pin(async move {
            let result = pending.await;
            Completed { request_id, outcome: Outcome::Sent { route, message, result, silent } }
        }))
    }

    /// A pipelined request finished: publish and answer.
    pub async fn on_completed(&mut self, completed: Completed) -> crate::Flow {
        let Completed { request_id, outcome } = completed;
        match outcome {
            Outcome::Sent { route, mut message, result, silent } => match result {
                Ok(appended) => {
                    let sender_device = message.sender_device;
                    if !appended.duplicate {
                        self.core.metrics.messages_in.fetch_add(1, Relaxed);
                        message.seq = appended.seq;
                        self.publish(&route.recipients, message);
                    }
                    let sent = frame::Sent { seq: appended.seq, duplicate: appended.duplicate };
                    self.send_frame(request_id, &ServerFrame::Sent(sent)).await;
                    if !appended.duplicate && !silent {
                        self.core.wake_offline(&route.recipients, sender_device).await;
                    }
                }
                Err(error) => self.reject(request_id, error.into()).await,
            },
        }
        crate::Flow::Continue
    }

    /// Encodes the message once and hands it to every recipient device's connections.
    fn publish(&self, recipients: &[(UserId, DeviceId)], message: frame::Message) {
        let (conv, seq) = (message.conv, message.seq);
        let frame = Bytes::from(encode_server(0, &ServerFrame::Message(message)));
        let push = Push::Message { conv, seq, frame };
        self.core.push(recipients.iter().map(|(_, d)| d), &push);
    }

    async fn ack(&mut self, conv: ConvId, seq: u64) -> Answer {
        let delivered = self.auth.as_ref().and_then(|a| a.delivered.get(&conv).copied());
        match delivered {
            None => Err(ErrorCode::ConversationNotFound.into()),
            Some(last) if seq > last => Err(ErrorCode::InvalidArgument.into()),
            Some(_) => {
                // Acks need no answer: queue them in order and move on. The latest is awaited
                // when the connection closes, so a quick reconnect sees it.
                let pending = self.core.store.submit_ack(self.device(), conv, seq).await?;
                self.last_ack = Some(pending);
                Ok(None)
            }
        }
    }

    async fn typing(&mut self, conv: ConvId) -> Answer {
        let route = self.deliverable_route(conv).await?;
        let event = frame::TypingEvent { conv, user: self.user(), device: self.device() };
        let bytes = Bytes::from(encode_server(0, &ServerFrame::TypingEvent(event)));
        let me = self.device();
        let targets = route.recipients.iter().map(|(_, d)| d).filter(|d| **d != me);
        self.core.push(targets, &Push::Frame(bytes));
        Ok(None)
    }

    async fn subscribe_presence(&mut self, users: Vec<UserId>) -> Answer {
        if users.len() > PRESENCE_SUBSCRIPTIONS_MAX as usize {
            return Err(ErrorCode::InvalidArgument.into());
        }
        let mut watched = Vec::with_capacity(users.len());
        let mut presence = Vec::new();
        for user in users {
            let Some(record) = self.core.store.user(user).await? else { continue };
            self.core.hub.set_privacy(user, record.presence_privacy);
            let contact = self.core.store.are_contacts(self.user(), user).await?;
            watched.push((user, contact));
            let visible = match record.presence_privacy {
                frame::PresencePrivacy::Everyone => true,
                frame::PresencePrivacy::Contacts => contact,
                frame::PresencePrivacy::Nobody => false,
            };
            if visible {
                presence.push(self.core.hub.presence_of(user));
            }
        }
        let key = (self.device(), self.auth.as_ref().map_or(0, |a| a.conn_id));
        self.core.hub.watch(key, &watched);
        Ok(Some(ServerFrame::PresenceList(frame::PresenceList { presence })))
    }

    // ---- devices and profiles

    async fn list_devices(&self) -> Answer {
        let me = self.device();
        let devices = self
            .core
            .store
            .devices(self.user())
            .await?
            .into_iter()
            .map(|d| frame::DeviceInfo {
                device: d.id,
                name: d.name,
                created_at_ms: d.created_at_ms,
                last_seen_ms: d.last_seen_ms,
                current: d.id == me,
                approved: d.approved,
            })
            .collect();
        Ok(Some(ServerFrame::Devices(frame::Devices { devices })))
    }

    async fn revoke_device(&mut self, device: DeviceId) -> Answer {
        self.core.store.revoke_device(self.user(), device).await?;
        self.core.cluster(ClusterEvent::InvalidateAllRoutes);
        if device == self.device() {
            // Answer first, then close this connection; other connections of the device close
            // through the hub signal.
            if let Some(auth) = &mut self.auth {
                auth.closing = true;
            }
        }
        self.core.cluster(ClusterEvent::RevokeDevice(device));
        self.core.announce_devices_changed(self.user()).await;
        done()
    }

    async fn profile(&self, user: UserId) -> Answer {
        let record = self.core.store.user(user).await?.ok_or(ErrorCode::UserNotFound)?;
        let devices = self.core.store.devices(user).await?.into_iter().filter(|d| d.approved).map(|d| d.id).collect();
        Ok(Some(ServerFrame::Profile(frame::Profile {
            user,
            username: record.username,
            display_name: record.display_name,
            avatar: record.avatar,
            devices,
        })))
    }
}
