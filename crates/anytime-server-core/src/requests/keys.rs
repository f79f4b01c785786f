//! Key package handlers: a device uploads its MLS key packages, a member claims another
//! user's (one per device) to add them to a group, a device asks how many it has left.

use anytime_proto::frame;
use anytime_proto::limits::{
    KEY_PACKAGES_LOW, KEY_PACKAGES_PER_DEVICE_MAX, KEY_PACKAGES_PER_UPLOAD_MAX, KEY_PACKAGE_BYTES_MAX,
};
use anytime_proto::{encode_server, ErrorCode, ServerFrame, UserId};
use bytes::Bytes;

use super::check_len;
use crate::hub::Push;
use crate::ratelimit::{LimitKey, LimitKind};
use crate::session::{Answer, Session};

impl Session {
    pub(super) async fn upload_key_packages(&mut self, request: frame::UploadKeyPackages) -> Answer {
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

    pub(super) async fn claim_key_packages(&mut self, user: UserId) -> Answer {
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

    pub(super) async fn key_package_count(&mut self) -> Answer {
        let (count, has_last_resort) = self.core.store.key_package_count(self.device()).await?;
        Ok(Some(ServerFrame::KeyPackageCount(frame::KeyPackageCount { count, has_last_resort })))
    }
}
