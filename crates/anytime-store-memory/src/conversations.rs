//! Conversations, membership and invite links.

use std::collections::{BTreeMap, BTreeSet};

use anytime_proto::frame::{ConvKind, ConversationSummary};
use anytime_proto::{ConvId, DeviceId, ErrorCode, UserId};
use anytime_server_core::store::{
    ConversationRecord, InviteRecord, MemberRecord, NewConversation, StoreError, StoreResult,
};

use crate::accounts::direct_key;
use crate::state::{backend, count_u32, signed, Conversation, Member, State};

impl State {
    pub(crate) fn create_conversation(&mut self, new: NewConversation) -> StoreResult<ConvId> {
        let key = match (new.kind, new.members.as_slice()) {
            (ConvKind::Direct, [peer]) => Some(direct_key(new.creator, *peer)),
            (ConvKind::Direct, _) => return Err(StoreError::Rejected(ErrorCode::InvalidArgument)),
            (ConvKind::Group, _) => None,
        };
        if let Some(existing) = key.and_then(|key| self.direct_chats.get(&key)) {
            return Ok(*existing);
        }
        if self.conversations.contains_key(&new.id) {
            return Err(backend("a conversation with this id exists"));
        }
        let mut listed = BTreeSet::new();
        if !std::iter::once(new.creator).chain(new.members.iter().copied()).all(|user| listed.insert(user)) {
            return Err(backend("a member is listed twice"));
        }
        self.conversations.insert(
            new.id,
            Conversation {
                record: ConversationRecord {
                    id: new.id,
                    kind: new.kind,
                    name: new.name,
                    epoch: 0,
                    last_seq: 0,
                    created_at_ms: new.created_at_ms,
                },
                direct_key: key,
                members: BTreeMap::new(),
                cursors: BTreeMap::new(),
                messages: BTreeMap::new(),
            },
        );
        if let Some(key) = key {
            self.direct_chats.insert(key, new.id);
        }
        let creator_is_admin = new.kind == ConvKind::Group;
        self.insert_member(new.id, new.creator, creator_is_admin, new.created_at_ms);
        for user in new.members {
            self.insert_member(new.id, user, false, new.created_at_ms);
        }
        Ok(new.id)
    }

    /// Adds the member (to an existing conversation) and starts each of its approved devices at
    /// the conversation's current end.
    fn insert_member(&mut self, conv: ConvId, user: UserId, admin: bool, joined_at_ms: u64) {
        let Some(conversation) = self.conversations.get_mut(&conv) else { return };
        conversation.members.insert(user, Member { admin, joined_at_ms });
        self.memberships.insert((user, conv));
        for device in self.approved_devices_of(user) {
            self.start_cursor(device, conv);
        }
    }

    pub(crate) fn conversation(&self, conv: ConvId) -> Option<ConversationRecord> {
        self.conversations.get(&conv).map(|c| c.record.clone())
    }

    /// Longest-standing first (join time, then id as SQL orders it).
    fn members_in_join_order(conversation: &Conversation) -> Vec<(UserId, Member)> {
        let mut members: Vec<(UserId, Member)> = conversation.members.iter().map(|(u, m)| (*u, *m)).collect();
        members.sort_by_key(|(user, member)| (member.joined_at_ms, signed(user.0)));
        members
    }

    pub(crate) fn members(&self, conv: ConvId) -> Vec<MemberRecord> {
        let Some(conversation) = self.conversations.get(&conv) else { return Vec::new() };
        Self::members_in_join_order(conversation)
            .into_iter()
            .map(|(user, member)| MemberRecord { user, admin: member.admin })
            .collect()
    }

    pub(crate) fn member(&self, conv: ConvId, user: UserId) -> Option<MemberRecord> {
        let member = self.conversations.get(&conv)?.members.get(&user)?;
        Some(MemberRecord { user, admin: member.admin })
    }

    pub(crate) fn member_devices(&self, conv: ConvId) -> Vec<(UserId, DeviceId)> {
        let Some(conversation) = self.conversations.get(&conv) else { return Vec::new() };
        conversation
            .members
            .keys()
            .flat_map(|&user| self.approved_devices_of(user).into_iter().map(move |device| (user, device)))
            .collect()
    }

    /// The user's conversations, oldest first.
    pub(crate) fn conversations_of(&self, user: UserId) -> Vec<ConversationSummary> {
        let mut conversations: Vec<&Conversation> =
            self.conversations_of_user(user).iter().filter_map(|conv| self.conversations.get(conv)).collect();
        conversations.sort_by_key(|c| (c.record.created_at_ms, signed(c.record.id.0)));
        conversations
            .into_iter()
            .map(|c| ConversationSummary {
                conv: c.record.id,
                kind: c.record.kind,
                name: c.record.name.clone(),
                epoch: c.record.epoch,
                last_seq: c.record.last_seq,
                member_count: count_u32(c.members.len()),
            })
            .collect()
    }

    pub(crate) fn rename_conversation(&mut self, conv: ConvId, name: String) {
        if let Some(conversation) = self.conversations.get_mut(&conv) {
            conversation.record.name = name;
        }
    }

    pub(crate) fn add_members(&mut self, conv: ConvId, users: Vec<UserId>, max: u32, at_ms: u64) -> StoreResult<()> {
        let Some(conversation) = self.conversations.get(&conv) else {
            return Err(StoreError::Rejected(ErrorCode::ConversationNotFound));
        };
        let new: Vec<UserId> = users.into_iter().filter(|user| !conversation.members.contains_key(user)).collect();
        if new.is_empty() {
            return Err(StoreError::Rejected(ErrorCode::AlreadyMember));
        }
        if conversation.members.len().saturating_add(new.len()) > max as usize {
            return Err(StoreError::Rejected(ErrorCode::TooManyMembers));
        }
        let mut listed = BTreeSet::new();
        if !new.iter().all(|user| listed.insert(*user)) {
            return Err(backend("a member is listed twice"));
        }
        for user in new {
            self.insert_member(conv, user, false, at_ms);
        }
        Ok(())
    }

    pub(crate) fn remove_member(&mut self, conv: ConvId, user: UserId) -> StoreResult<()> {
        let Some(conversation) = self.conversations.get_mut(&conv) else {
            return Err(StoreError::Rejected(ErrorCode::NotMember));
        };
        if conversation.members.remove(&user).is_none() {
            return Err(StoreError::Rejected(ErrorCode::NotMember));
        }
        self.memberships.remove(&(user, conv));
        for device in self.device_ids_of(user) {
            self.remove_cursor(device, conv);
        }
        let Some(conversation) = self.conversations.get_mut(&conv) else { return Ok(()) };
        if conversation.members.is_empty() {
            self.delete_conversation(conv);
            return Ok(());
        }
        // A group always keeps an admin: promote the longest-standing member if none is left.
        if conversation.record.kind == ConvKind::Group && !conversation.members.values().any(|m| m.admin) {
            let oldest = Self::members_in_join_order(conversation).first().map(|(user, _)| *user);
            if let Some(member) = oldest.and_then(|user| conversation.members.get_mut(&user)) {
                member.admin = true;
            }
        }
        Ok(())
    }

    /// Deletes the conversation with its messages, cursors and invites.
    fn delete_conversation(&mut self, conv: ConvId) {
        let Some(conversation) = self.conversations.remove(&conv) else { return };
        if let Some(key) = conversation.direct_key {
            self.direct_chats.remove(&key);
        }
        for user in conversation.members.keys() {
            self.memberships.remove(&(*user, conv));
        }
        for device in conversation.cursors.keys() {
            self.device_cursors.remove(&(*device, conv));
        }
        self.invites.retain(|_, invite| invite.conv != conv);
    }

    pub(crate) fn set_admin(&mut self, conv: ConvId, user: UserId, admin: bool) -> StoreResult<()> {
        let Some(conversation) = self.conversations.get_mut(&conv) else {
            return Err(StoreError::Rejected(ErrorCode::NotMember));
        };
        if !conversation.members.contains_key(&user) {
            return Err(StoreError::Rejected(ErrorCode::NotMember));
        }
        let admins_after =
            conversation.members.iter().filter(|(u, m)| if **u == user { admin } else { m.admin }).count();
        if admins_after == 0 {
            // Demoting the last admin would orphan the group.
            return Err(StoreError::Rejected(ErrorCode::InvalidArgument));
        }
        if let Some(member) = conversation.members.get_mut(&user) {
            member.admin = admin;
        }
        Ok(())
    }

    /// Stores the invite unused and unrevoked.
    pub(crate) fn create_invite(&mut self, invite: InviteRecord) -> StoreResult<()> {
        if self.invites.contains_key(&invite.code) {
            return Err(backend("an invite with this code exists"));
        }
        self.invites.insert(invite.code.clone(), InviteRecord { uses: 0, revoked: false, ..invite });
        Ok(())
    }

    pub(crate) fn invite(&self, code: &str) -> Option<InviteRecord> {
        self.invites.get(code).cloned()
    }

    pub(crate) fn revoke_invite(&mut self, code: &str) -> StoreResult<()> {
        let invite = self.invites.get_mut(code).ok_or(StoreError::Rejected(ErrorCode::InviteNotFound))?;
        invite.revoked = true;
        Ok(())
    }

    pub(crate) fn join_invite(&mut self, code: &str, user: UserId, now_ms: u64, max: u32) -> StoreResult<ConvId> {
        let invite = self.invites.get(code).ok_or(StoreError::Rejected(ErrorCode::InviteNotFound))?;
        if invite.revoked {
            return Err(StoreError::Rejected(ErrorCode::InviteRevoked));
        }
        if invite.expires_at_ms <= now_ms {
            return Err(StoreError::Rejected(ErrorCode::InviteExpired));
        }
        if invite.uses >= invite.max_uses {
            return Err(StoreError::Rejected(ErrorCode::InviteExhausted));
        }
        let conv = invite.conv;
        self.add_members(conv, vec![user], max, now_ms)?;
        if let Some(invite) = self.invites.get_mut(code) {
            invite.uses = invite.uses.saturating_add(1);
        }
        Ok(conv)
    }
}
