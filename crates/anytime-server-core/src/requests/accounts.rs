//! Account handlers: the account's devices (list, approve a new one, revoke, log out), profiles
//! (look up, read, set), blocks, and presence (subscriptions and who may see it).

use anytime_proto::frame;
use anytime_proto::limits::{AVATAR_REF_BYTES_MAX, LINK_CODE_BYTES_MAX, PRESENCE_SUBSCRIPTIONS_MAX};
use anytime_proto::{DeviceId, ErrorCode, ServerFrame, UserId};

use super::{check_len, done};
use crate::auth::validate_name;
use crate::cluster::ClusterEvent;
use crate::session::{Answer, Session};

impl Session {
    // ---- devices

    pub(super) async fn list_devices(&self) -> Answer {
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

    pub(super) async fn revoke_device(&mut self, device: DeviceId) -> Answer {
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

    pub(super) async fn approve_device(&mut self, code: &str) -> Answer {
        if code.len() > LINK_CODE_BYTES_MAX {
            return Err(ErrorCode::LinkCodeInvalid.into());
        }
        let now_ms = self.core.env.now_ms();
        let expires_at_ms = now_ms.saturating_add(self.core.config.session_ttl_ms);
        self.core.store.approve_device(self.user(), code, now_ms, expires_at_ms).await?;
        self.core.cluster(ClusterEvent::InvalidateAllRoutes);
        self.core.announce_devices_changed(self.user()).await;
        done()
    }

    // ---- profiles

    pub(super) async fn profile(&self, user: UserId) -> Answer {
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

    pub(super) async fn lookup_user(&self, username: &str) -> Answer {
        let user = self.core.store.user_by_username(username).await?;
        let user = user.ok_or(ErrorCode::UserNotFound)?;
        self.profile(user.id).await
    }

    pub(super) async fn set_profile(&mut self, request: frame::SetProfile) -> Answer {
        let display_name = validate_name(&request.display_name)?;
        if let Some(avatar) = &request.avatar {
            check_len(avatar.len(), AVATAR_REF_BYTES_MAX)?;
        }
        self.core.store.set_profile(self.user(), display_name, request.avatar).await?;
        done()
    }

    // ---- blocks

    pub(super) async fn block(&mut self, user: UserId) -> Answer {
        if user == self.user() {
            return Err(ErrorCode::InvalidArgument.into());
        }
        self.require_user(user).await?;
        self.core.store.block(self.user(), user).await?;
        self.core.cluster(ClusterEvent::ForgetBlocks(self.user()));
        done()
    }

    pub(super) async fn unblock(&mut self, user: UserId) -> Answer {
        self.core.store.unblock(self.user(), user).await?;
        self.core.cluster(ClusterEvent::ForgetBlocks(self.user()));
        done()
    }

    pub(super) async fn list_blocked(&self) -> Answer {
        let users = self.core.store.blocked_by(self.user()).await?;
        Ok(Some(ServerFrame::BlockedUsers(frame::BlockedUsers { users })))
    }

    // ---- presence

    pub(super) async fn subscribe_presence(&mut self, users: Vec<UserId>) -> Answer {
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

    pub(super) async fn set_presence_privacy(&mut self, privacy: frame::PresencePrivacy) -> Answer {
        self.core.store.set_presence_privacy(self.user(), privacy).await?;
        self.core.cluster(ClusterEvent::SetPrivacy(self.user(), privacy));
        done()
    }
}
