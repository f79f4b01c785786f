//! Accounts, devices, profiles, blocks and push endpoints.

use anytime_proto::frame::PresencePrivacy;
use anytime_proto::{DeviceId, ErrorCode, UserId};
use anytime_server_core::store::{DeviceRecord, StoreError, StoreResult, UserRecord};

use crate::state::{backend, signed, State};

/// The key of the direct chat between two users: the pair, smaller id first.
pub(crate) fn direct_key(a: UserId, b: UserId) -> (UserId, UserId) {
    if a.0 <= b.0 {
        (a, b)
    } else {
        (b, a)
    }
}

impl State {
    pub(crate) fn create_user(&mut self, user: UserRecord, device: DeviceRecord) -> StoreResult<()> {
        // As in SQL, where the insert skips any conflict (name or id) and reports the name.
        if self.usernames.contains_key(&user.username) || self.users.contains_key(&user.id) {
            return Err(StoreError::Rejected(ErrorCode::UsernameTaken));
        }
        self.check_new_device(&device)?;
        self.usernames.insert(user.username.clone(), user.id);
        self.users.insert(user.id, user);
        self.insert_device(device);
        Ok(())
    }

    /// The uniqueness constraints of a device row (id, token hash).
    fn check_new_device(&self, device: &DeviceRecord) -> StoreResult<()> {
        if self.devices.contains_key(&device.id) {
            return Err(backend("a device with this id exists"));
        }
        if self.token_hashes.contains_key(&device.token_hash) {
            return Err(backend("a device with this token hash exists"));
        }
        Ok(())
    }

    /// Inserts a device that passed `check_new_device`.
    fn insert_device(&mut self, device: DeviceRecord) {
        let (id, user, approved) = (device.id, device.user, device.approved);
        self.devices_by_user.insert((user, id));
        self.token_hashes.insert(device.token_hash, id);
        self.devices.insert(id, device);
        if approved {
            self.start_cursors(id, user);
        }
    }

    /// An approved device reads each conversation of its account from the current end: it
    /// cannot decrypt anything older anyway, since it joins the MLS groups from now on.
    fn start_cursors(&mut self, device: DeviceId, user: UserId) {
        for conv in self.conversations_of_user(user) {
            self.start_cursor(device, conv);
        }
    }

    pub(crate) fn create_device(&mut self, device: DeviceRecord, devices_max: u32) -> StoreResult<()> {
        if self.device_ids_of(device.user).len() >= devices_max as usize {
            return Err(StoreError::Rejected(ErrorCode::TooManyDevices));
        }
        self.check_new_device(&device)?;
        self.insert_device(device);
        Ok(())
    }

    pub(crate) fn approve_device(
        &mut self,
        user: UserId,
        code: &str,
        now_ms: u64,
        expires_at_ms: u64,
    ) -> StoreResult<DeviceId> {
        let pending = self.device_ids_of(user).into_iter().find(|id| {
            self.devices
                .get(id)
                .is_some_and(|d| !d.approved && d.link_code.as_deref() == Some(code) && d.expires_at_ms > now_ms)
        });
        let Some(id) = pending else {
            return Err(StoreError::Rejected(ErrorCode::LinkCodeInvalid));
        };
        if let Some(device) = self.devices.get_mut(&id) {
            device.approved = true;
            device.link_code = None;
            device.expires_at_ms = expires_at_ms;
        }
        self.start_cursors(id, user);
        Ok(id)
    }

    pub(crate) fn device_by_token_hash(&self, token_hash: [u8; 32]) -> Option<DeviceRecord> {
        self.token_hashes.get(&token_hash).and_then(|id| self.devices.get(id)).cloned()
    }

    /// The devices of `user`, oldest first.
    pub(crate) fn devices(&self, user: UserId) -> Vec<DeviceRecord> {
        let mut devices: Vec<DeviceRecord> =
            self.device_ids_of(user).iter().filter_map(|id| self.devices.get(id)).cloned().collect();
        devices.sort_by_key(|d| (d.created_at_ms, signed(d.id.0)));
        devices
    }

    pub(crate) fn revoke_device(&mut self, user: UserId, device: DeviceId) -> StoreResult<()> {
        if self.devices.get(&device).map(|d| d.user) != Some(user) {
            return Err(StoreError::Rejected(ErrorCode::DeviceNotFound));
        }
        self.delete_device(device);
        Ok(())
    }

    pub(crate) fn touch_device(&mut self, device: DeviceId, at_ms: u64) {
        if let Some(device) = self.devices.get_mut(&device) {
            device.last_seen_ms = at_ms;
        }
    }

    pub(crate) fn set_profile(&mut self, user: UserId, display_name: String, avatar: Option<String>) {
        if let Some(user) = self.users.get_mut(&user) {
            user.display_name = display_name;
            user.avatar = avatar;
        }
    }

    pub(crate) fn set_presence_privacy(&mut self, user: UserId, privacy: PresencePrivacy) {
        if let Some(user) = self.users.get_mut(&user) {
            user.presence_privacy = privacy;
        }
    }

    /// The users `blocker` blocked, in id order.
    pub(crate) fn blocked_by(&self, blocker: UserId) -> Vec<UserId> {
        let mut blocked: Vec<UserId> =
            self.blocks.range((blocker, UserId(0))..=(blocker, UserId(u64::MAX))).map(|&(_, b)| b).collect();
        blocked.sort_by_key(|b| signed(b.0));
        blocked
    }

    pub(crate) fn are_contacts(&self, a: UserId, b: UserId) -> bool {
        self.direct_chats.contains_key(&direct_key(a, b))
    }

    pub(crate) fn share_conversation(&self, a: UserId, b: UserId) -> bool {
        self.conversations_of_user(a).into_iter().any(|conv| self.memberships.contains(&(b, conv)))
    }

    /// Stores the endpoint only for a device that exists; `None` clears it.
    pub(crate) fn set_push_endpoint(&mut self, device: DeviceId, endpoint: Option<String>) {
        match endpoint {
            Some(endpoint) if self.devices.contains_key(&device) => {
                self.push_endpoints.insert(device, endpoint);
            }
            Some(_) => {}
            None => {
                self.push_endpoints.remove(&device);
            }
        }
    }

    /// In the order asked, those that have an endpoint and still exist.
    pub(crate) fn push_endpoints(&self, devices: &[DeviceId]) -> Vec<(DeviceId, String)> {
        devices
            .iter()
            .filter(|d| self.devices.contains_key(d))
            .filter_map(|d| self.push_endpoints.get(d).map(|endpoint| (*d, endpoint.clone())))
            .collect()
    }
}
