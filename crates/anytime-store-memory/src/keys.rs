//! MLS key packages: upload, claim (each one-time package exactly once), count.

use anytime_proto::frame::ClaimedKeyPackage;
use anytime_proto::{DeviceId, ErrorCode, UserId};
use anytime_server_core::store::{StoreError, StoreResult};

use crate::state::{count_u32, signed, State};

impl State {
    /// Packages are stored for any device id, as in SQL (no foreign key); deleting a device
    /// deletes its packages.
    pub(crate) fn upload_key_packages(
        &mut self,
        device: DeviceId,
        packages: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
        per_device_max: u32,
    ) -> StoreResult<u32> {
        let stored = self.key_packages.get(&device).map_or(0, |k| k.one_time.len());
        if stored.saturating_add(packages.len()) > per_device_max as usize {
            return Err(StoreError::Rejected(ErrorCode::TooManyKeyPackages));
        }
        let entry = self.key_packages.entry(device).or_default();
        entry.one_time.extend(packages);
        if let Some(package) = last_resort {
            entry.last_resort = Some(package);
        }
        Ok(count_u32(entry.one_time.len()))
    }

    pub(crate) fn claim_key_packages(&mut self, user: UserId) -> StoreResult<Vec<ClaimedKeyPackage>> {
        let mut devices: Vec<(u64, DeviceId)> = self
            .approved_devices_of(user)
            .into_iter()
            .filter_map(|id| self.devices.get(&id).map(|d| (d.created_at_ms, id)))
            .collect();
        devices.sort_by_key(|&(created_at_ms, id)| (created_at_ms, signed(id.0)));
        let mut claimed = Vec::with_capacity(devices.len());
        for (_, device) in devices {
            // A device that never uploaded (just linked, not yet online) is skipped: it is added
            // to the group once it has uploaded, when members reconcile.
            let Some(packages) = self.key_packages.get_mut(&device) else { continue };
            if let Some(package) = packages.one_time.pop_front() {
                claimed.push(ClaimedKeyPackage { device, package, last_resort: false });
            } else if let Some(package) = &packages.last_resort {
                claimed.push(ClaimedKeyPackage { device, package: package.clone(), last_resort: true });
            }
        }
        // Nothing was taken if nothing was claimed, so a refusal changes nothing.
        if claimed.is_empty() {
            return Err(StoreError::Rejected(ErrorCode::NoKeyPackage));
        }
        Ok(claimed)
    }

    pub(crate) fn key_package_count(&self, device: DeviceId) -> (u32, bool) {
        match self.key_packages.get(&device) {
            Some(packages) => (count_u32(packages.one_time.len()), packages.last_resort.is_some()),
            None => (0, false),
        }
    }
}
