//! Conversation handlers: create direct and group conversations, members, admins, rename,
//! leave, listing and info, and invite links; every membership change is announced to the
//! devices concerned.

use anytime_proto::frame::{self, ConvKind};
use anytime_proto::limits::{GROUP_MEMBERS_MAX, INVITE_TTL_SECS_MAX, INVITE_USES_MAX};
use anytime_proto::{encode_server, ConvId, ErrorCode, ServerFrame, UserId};
use base64::Engine;
use bytes::Bytes;

use super::{done, is_group};
use crate::auth::validate_name;
use crate::cluster::ClusterEvent;
use crate::env::EnvExt;
use crate::hub::Push;
use crate::session::{Answer, Reject, Session};
use crate::store::{InviteRecord, NewConversation};

impl Session {
    pub(super) async fn create_direct(&mut self, peer: UserId) -> Answer {
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

    pub(super) async fn create_group(&mut self, request: frame::CreateGroup) -> Answer {
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

    pub(super) async fn rename_group(&mut self, request: frame::RenameGroup) -> Answer {
        let name = validate_name(&request.name)?;
        self.require_group_admin(request.conv).await?;
        self.core.store.rename_conversation(request.conv, name).await?;
        let members: Vec<UserId> = self.core.store.members(request.conv).await?.into_iter().map(|m| m.user).collect();
        self.announce_membership(request.conv, &members, false).await?;
        done()
    }

    pub(super) async fn add_members(&mut self, request: frame::AddMembers) -> Answer {
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
    pub(super) async fn remove_member(&mut self, conv: ConvId, user: UserId) -> Answer {
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

    pub(super) async fn set_admin(&mut self, request: frame::SetAdmin) -> Answer {
        self.require_group_admin(request.conv).await?;
        self.core.store.set_admin(request.conv, request.user, request.admin).await?;
        let members: Vec<UserId> = self.core.store.members(request.conv).await?.into_iter().map(|m| m.user).collect();
        self.announce_membership(request.conv, &members, false).await?;
        done()
    }

    pub(super) async fn list_conversations(&self) -> Answer {
        let conversations = self.core.store.conversations_of(self.user()).await?;
        Ok(Some(ServerFrame::Conversations(frame::Conversations { conversations })))
    }

    pub(super) async fn get_conversation(&self, conv: ConvId) -> Answer {
        self.require_member(conv).await?;
        self.conversation_info(conv).await
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

    pub(super) async fn create_invite(&mut self, request: frame::CreateInvite) -> Answer {
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

    pub(super) async fn revoke_invite(&mut self, code: String) -> Answer {
        let invite = self.core.store.invite(&code).await?.ok_or(ErrorCode::InviteNotFound)?;
        if self.core.store.member(invite.conv, self.user()).await?.is_none() {
            return Err(ErrorCode::InviteNotFound.into());
        }
        self.require_group_admin(invite.conv).await?;
        self.core.store.revoke_invite(&code).await?;
        done()
    }

    pub(super) async fn join_invite(&mut self, code: String) -> Answer {
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
}
