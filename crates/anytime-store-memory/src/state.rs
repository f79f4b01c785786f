//! The tables, as ordered maps, and the helpers that keep their indexes consistent.
//!
//! Every map is a `BTreeMap`/`BTreeSet`, so iteration order — and with it every result — depends
//! only on the operations applied, never on hashing. Where the SQL stores order rows with an
//! explicit `ORDER BY` on an id, ids compare as SQL's signed 64-bit integers ([`signed`]), so
//! results come back in the same order as from SQLite and PostgreSQL.

use std::collections::{BTreeMap, BTreeSet};

use anytime_proto::frame::{Message, Seq};
use anytime_proto::{ConvId, DeviceId, MsgId, UserId};
use anytime_server_core::store::{ConversationRecord, DeviceRecord, InviteRecord, StoreError, UserRecord};

/// An id as the SQL backends order it: the same 64 bits read as a signed integer.
pub(crate) fn signed(id: u64) -> i64 {
    id as i64
}

/// A failure of this store's own bookkeeping (a uniqueness constraint in the SQL backends),
/// reported like a backend failure.
pub(crate) fn backend(what: &str) -> StoreError {
    StoreError::Backend(format!("memory store: {what}"))
}

pub(crate) fn count_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Member {
    pub(crate) admin: bool,
    pub(crate) joined_at_ms: u64,
}

#[derive(Debug)]
pub(crate) struct Conversation {
    pub(crate) record: ConversationRecord,
    /// The pair of users of a direct chat (smaller id first), unique across conversations.
    pub(crate) direct_key: Option<(UserId, UserId)>,
    pub(crate) members: BTreeMap<UserId, Member>,
    /// Per recipient device: the last seq it acknowledged. Indexed by `State::device_cursors`.
    pub(crate) cursors: BTreeMap<DeviceId, Seq>,
    /// Stored messages by seq, until every recipient acknowledged them or retention ran out.
    pub(crate) messages: BTreeMap<Seq, Message>,
}

/// The idempotency key of a send or commit: where it was stored.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SentId {
    pub(crate) conv: ConvId,
    pub(crate) seq: Seq,
    /// The epoch after the commit, for commits; `None` for application messages.
    pub(crate) epoch_after: Option<u64>,
    pub(crate) at_ms: u64,
}

#[derive(Debug, Default)]
pub(crate) struct KeyPackages {
    /// One-time packages in upload order: claimed from the front.
    pub(crate) one_time: std::collections::VecDeque<Vec<u8>>,
    pub(crate) last_resort: Option<Vec<u8>>,
}

#[derive(Debug)]
pub(crate) struct Welcome {
    pub(crate) conv: ConvId,
    pub(crate) payload: Vec<u8>,
    pub(crate) created_at_ms: u64,
    /// Devices that have not acknowledged it yet. Indexed by `State::welcome_targets`.
    pub(crate) targets: BTreeSet<DeviceId>,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) users: BTreeMap<UserId, UserRecord>,
    pub(crate) usernames: BTreeMap<String, UserId>,
    pub(crate) devices: BTreeMap<DeviceId, DeviceRecord>,
    pub(crate) devices_by_user: BTreeSet<(UserId, DeviceId)>,
    pub(crate) token_hashes: BTreeMap<[u8; 32], DeviceId>,
    /// (blocker, blocked).
    pub(crate) blocks: BTreeSet<(UserId, UserId)>,
    pub(crate) conversations: BTreeMap<ConvId, Conversation>,
    pub(crate) direct_chats: BTreeMap<(UserId, UserId), ConvId>,
    /// (member, conversation): the conversations of a user.
    pub(crate) memberships: BTreeSet<(UserId, ConvId)>,
    /// (device, conversation) for every cursor held in `Conversation::cursors`.
    pub(crate) device_cursors: BTreeSet<(DeviceId, ConvId)>,
    pub(crate) sent_ids: BTreeMap<(DeviceId, MsgId), SentId>,
    pub(crate) key_packages: BTreeMap<DeviceId, KeyPackages>,
    pub(crate) welcomes: BTreeMap<u64, Welcome>,
    /// (device, welcome) for every target held in `Welcome::targets`.
    pub(crate) welcome_targets: BTreeSet<(DeviceId, u64)>,
    pub(crate) invites: BTreeMap<String, InviteRecord>,
    pub(crate) push_endpoints: BTreeMap<DeviceId, String>,
}

impl State {
    /// The devices of `user`, pending ones included, in id order.
    pub(crate) fn device_ids_of(&self, user: UserId) -> Vec<DeviceId> {
        self.devices_by_user.range((user, DeviceId(0))..=(user, DeviceId(u64::MAX))).map(|&(_, d)| d).collect()
    }

    /// The approved devices of `user`, in id order.
    pub(crate) fn approved_devices_of(&self, user: UserId) -> Vec<DeviceId> {
        self.device_ids_of(user)
            .into_iter()
            .filter(|d| self.devices.get(d).is_some_and(|record| record.approved))
            .collect()
    }

    /// The conversations `user` is a member of, in id order.
    pub(crate) fn conversations_of_user(&self, user: UserId) -> Vec<ConvId> {
        self.memberships.range((user, ConvId(0))..=(user, ConvId(u64::MAX))).map(|&(_, c)| c).collect()
    }

    /// Starts (if it has none there yet) the device's cursor in `conv` at the conversation's end.
    pub(crate) fn start_cursor(&mut self, device: DeviceId, conv: ConvId) {
        if let Some(conversation) = self.conversations.get_mut(&conv) {
            let end = conversation.record.last_seq;
            conversation.cursors.entry(device).or_insert(end);
            self.device_cursors.insert((device, conv));
        }
    }

    pub(crate) fn remove_cursor(&mut self, device: DeviceId, conv: ConvId) {
        if let Some(conversation) = self.conversations.get_mut(&conv) {
            conversation.cursors.remove(&device);
        }
        self.device_cursors.remove(&(device, conv));
    }

    /// Removes the target; deletes nothing else (an unacknowledged-by-nobody welcome stays
    /// until garbage collection, as in the SQL backends).
    pub(crate) fn remove_welcome_target(&mut self, device: DeviceId, welcome: u64) -> bool {
        if let Some(stored) = self.welcomes.get_mut(&welcome) {
            stored.targets.remove(&device);
        }
        self.welcome_targets.remove(&(device, welcome))
    }

    /// Deletes the device and everything that exists only for it: its session, cursors, key
    /// packages, welcome targets and push endpoint.
    pub(crate) fn delete_device(&mut self, device: DeviceId) {
        if let Some(record) = self.devices.remove(&device) {
            self.devices_by_user.remove(&(record.user, device));
            if self.token_hashes.get(&record.token_hash) == Some(&device) {
                self.token_hashes.remove(&record.token_hash);
            }
        }
        let convs: Vec<ConvId> =
            self.device_cursors.range((device, ConvId(0))..=(device, ConvId(u64::MAX))).map(|&(_, c)| c).collect();
        for conv in convs {
            self.remove_cursor(device, conv);
        }
        self.key_packages.remove(&device);
        let welcomes: Vec<u64> =
            self.welcome_targets.range((device, 0)..=(device, u64::MAX)).map(|&(_, w)| w).collect();
        for welcome in welcomes {
            self.remove_welcome_target(device, welcome);
        }
        self.push_endpoints.remove(&device);
    }
}
