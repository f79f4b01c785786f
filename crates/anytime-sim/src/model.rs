//! The simulation's oracle: what the server ordered, who was in which conversation when, and from
//! that, which device was entitled to read which message. It is built from the server's storage
//! (read directly, never through a session) and from the commits the links saw leave; it never
//! asks a client, so a client bug cannot hide behind it.
//!
//! Boundaries are seqs: a change recorded "at seq S" happened after message S was ordered and
//! before message S + 1. A device may read seq `s` of a conversation only inside a *window*: its
//! user a member (joined at `a` < `s`, not left, or left at `b` ≥ `s`), the device approved
//! before `s` and not revoked before `s`. It is *entitled* to read it when, in addition, the MLS
//! group had it as a member in the epoch the message was made in (it joined that group, within
//! the window, at that epoch or before), and the message is not older than the epochs a member
//! keeps secrets for.

use std::collections::BTreeMap;

use anytime_proto::frame::{MessageKind, Seq};
use anytime_proto::limits::MLS_PAST_EPOCHS_MAX;
use anytime_proto::{ConvId, DeviceId, MsgId, UserId};
use anytime_server_core::ServerStore;
use anytime_store_memory::MemoryStore;

use crate::link::Tap;

/// Messages read from storage per call while mirroring the log.
const LOG_PAGE: u32 = 1_000;

/// One message of a conversation's log, as the server ordered it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub seq: Seq,
    pub sender: UserId,
    pub sender_device: DeviceId,
    pub msg_id: MsgId,
    /// A commit moving the group from this epoch to the next.
    pub commit: Option<u64>,
    /// The MLS epoch the payload was made in (its header says so in the clear).
    pub made_in: Option<u64>,
    /// The group's epoch (by the server's order) when this message was ordered.
    pub epoch: u64,
}

impl Entry {
    pub fn is_application(&self) -> bool {
        self.commit.is_none()
    }
}

/// A conversation's log and the MLS joins it records.
#[derive(Debug, Default)]
pub struct ConvLog {
    /// `entries[i].seq == i + 1`: seqs are dense from 1.
    pub entries: Vec<Entry>,
    epoch: u64,
    /// Device → (epoch it entered the group at, seq of the commit that brought it in).
    joins: BTreeMap<DeviceId, Vec<(u64, Seq)>>,
}

impl ConvLog {
    pub fn last_seq(&self) -> Seq {
        self.entries.len() as Seq
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn entry(&self, seq: Seq) -> Option<&Entry> {
        let index = usize::try_from(seq).ok()?.checked_sub(1)?;
        self.entries.get(index)
    }
}

/// Whether a device was meant to read a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entitlement {
    /// Outside the device's window: the server must not deliver it at all.
    Outside,
    /// Delivered, but made in an epoch the device's group did not include it (sent before the
    /// device joined, or by a member that had not applied the commit adding it yet).
    NotInGroup,
    /// Made more than `MLS_PAST_EPOCHS_MAX` epochs before the group's epoch when it was
    /// ordered (its sender had not applied recent commits): no member keeps those secrets.
    TooOld,
    Entitled,
}

/// A user's time in a conversation: (joined at, left at).
type Span = (Seq, Option<Seq>);

/// Membership over time, in seq boundaries (see the module docs).
#[derive(Debug, Default)]
pub struct Membership {
    /// (user, conversation) → its spans, oldest first.
    spans: BTreeMap<(UserId, ConvId), Vec<Span>>,
    /// (device, conversation) → seq when the device was approved (its cursor starts there).
    approved: BTreeMap<(DeviceId, ConvId), Seq>,
    /// (device, conversation) → seq when the device was revoked.
    revoked: BTreeMap<(DeviceId, ConvId), Seq>,
}

impl Membership {
    pub fn joined(&mut self, user: UserId, conv: ConvId, at: Seq) {
        self.spans.entry((user, conv)).or_default().push((at, None));
    }

    pub fn left(&mut self, user: UserId, conv: ConvId, at: Seq) {
        if let Some((_, left)) = self.spans.get_mut(&(user, conv)).and_then(|s| s.last_mut()) {
            *left = Some(at);
        }
    }

    pub fn approved(&mut self, device: DeviceId, conv: ConvId, at: Seq) {
        self.approved.insert((device, conv), at);
    }

    pub fn revoked(&mut self, device: DeviceId, conv: ConvId, at: Seq) {
        self.revoked.insert((device, conv), at);
    }

    pub fn is_member(&self, user: UserId, conv: ConvId) -> bool {
        self.spans.get(&(user, conv)).and_then(|s| s.last()).is_some_and(|(_, left)| left.is_none())
    }

    /// How many times `user` joined `conv` and whether it is in now (a send made while it was
    /// in may be refused once this changed).
    pub fn tenure(&self, user: UserId, conv: ConvId) -> (usize, bool) {
        (self.spans.get(&(user, conv)).map_or(0, Vec::len), self.is_member(user, conv))
    }

    /// The start of the window of `device` (of `user`) that holds `seq`, if any.
    pub fn window(&self, user: UserId, device: DeviceId, conv: ConvId, seq: Seq) -> Option<Seq> {
        if self.revoked.get(&(device, conv)).is_some_and(|at| seq > *at) {
            return None;
        }
        let approved = self.approved.get(&(device, conv)).copied().unwrap_or(0);
        let spans = self.spans.get(&(user, conv))?;
        let (joined, _) = spans.iter().find(|(joined, left)| seq > *joined && left.is_none_or(|left| seq <= left))?;
        let start = (*joined).max(approved);
        (seq > start).then_some(start)
    }

    /// The start of the window `device` is in now, if it is in one.
    pub fn current_window(&self, user: UserId, device: DeviceId, conv: ConvId) -> Option<Seq> {
        if self.revoked.contains_key(&(device, conv)) {
            return None;
        }
        let (joined, left) = self.spans.get(&(user, conv))?.last()?;
        if left.is_some() {
            return None;
        }
        let approved = self.approved.get(&(device, conv)).copied().unwrap_or(0);
        Some((*joined).max(approved))
    }
}

/// The server's logs of every conversation the run created, mirrored as they grow.
#[derive(Debug, Default)]
pub struct Logs {
    pub convs: BTreeMap<ConvId, ConvLog>,
}

impl Logs {
    pub fn track(&mut self, conv: ConvId) {
        self.convs.entry(conv).or_default();
    }

    pub fn conv(&self, conv: ConvId) -> Option<&ConvLog> {
        self.convs.get(&conv)
    }

    /// Reads what the server ordered since the last call. `tap` names each commit's Welcome
    /// targets: those devices entered the group at the epoch after it.
    pub async fn refresh(&mut self, store: &MemoryStore, tap: &Tap) -> Result<(), String> {
        for (conv, log) in &mut self.convs {
            loop {
                let after = log.last_seq();
                let page = store.messages_after(*conv, after, LOG_PAGE).await.map_err(|e| e.to_string())?;
                if page.is_empty() {
                    break;
                }
                for message in page {
                    if message.seq != log.last_seq() + 1 {
                        return Err(format!("the log of {conv} jumps from seq {} to {}", log.last_seq(), message.seq));
                    }
                    let commit = match message.kind {
                        MessageKind::Commit { epoch } => Some(epoch),
                        MessageKind::Application => None,
                    };
                    if let Some(epoch) = commit {
                        if epoch != log.epoch {
                            return Err(format!(
                                "{conv} seq {}: a commit from epoch {epoch} at {}",
                                message.seq, log.epoch
                            ));
                        }
                        if epoch == 0 {
                            // The group's creator is in it from epoch 0.
                            log.joins.entry(message.sender_device).or_default().push((0, message.seq));
                        }
                        for device in tap.borrow().get(&(*conv, message.msg_id)).into_iter().flatten() {
                            log.joins.entry(*device).or_default().push((epoch + 1, message.seq));
                        }
                    }
                    log.entries.push(Entry {
                        seq: message.seq,
                        sender: message.sender,
                        sender_device: message.sender_device,
                        msg_id: message.msg_id,
                        commit,
                        made_in: commit.or_else(|| made_in_epoch(&message.payload)),
                        epoch: log.epoch,
                    });
                    if commit.is_some() {
                        log.epoch += 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether `device` (of `user`) was meant to read seq `seq` of `conv`.
    pub fn entitlement(
        &self,
        membership: &Membership,
        user: UserId,
        device: DeviceId,
        conv: ConvId,
        seq: Seq,
    ) -> Entitlement {
        let Some(start) = membership.window(user, device, conv, seq) else { return Entitlement::Outside };
        let Some(log) = self.convs.get(&conv) else { return Entitlement::Outside };
        let Some(entry) = log.entry(seq) else { return Entitlement::Outside };
        let Some(made_in) = entry.made_in else { return Entitlement::NotInGroup };
        let joins = log.joins.get(&device).map(Vec::as_slice).unwrap_or_default();
        if !joins.iter().any(|(epoch, at)| *epoch <= made_in && *at > start) {
            return Entitlement::NotInGroup;
        }
        if entry.is_application() && entry.epoch.saturating_sub(made_in) > MLS_PAST_EPOCHS_MAX as u64 {
            return Entitlement::TooOld;
        }
        Entitlement::Entitled
    }
}

/// The epoch an MLS message was made in: RFC 9420 §6 puts the protocol version and wire format
/// first, then, for both public and private messages, the group id and the epoch. `None` for
/// anything else.
pub fn made_in_epoch(bytes: &[u8]) -> Option<u64> {
    let wire_format = u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?);
    // 1: PublicMessage, 2: PrivateMessage.
    if !matches!(wire_format, 1 | 2) {
        return None;
    }
    let (group_id_len, prefix) = varint(bytes.get(4..)?)?;
    let at = 4usize.checked_add(prefix)?.checked_add(group_id_len)?;
    Some(u64::from_be_bytes(bytes.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

/// An MLS variable-length integer (RFC 9420 §2.1.2): (value, bytes it took).
fn varint(bytes: &[u8]) -> Option<(usize, usize)> {
    let first = *bytes.first()?;
    let width = 1usize << (first >> 6);
    if width > 4 {
        return None;
    }
    let mut value = u64::from(first & 0x3f);
    for byte in bytes.get(1..width)? {
        value = (value << 8) | u64::from(*byte);
    }
    Some((usize::try_from(value).ok()?, width))
}

#[cfg(test)]
mod tests {
    use super::*;
    use anytime_client::e2ee::{DeviceCrypto, DeviceIdentity};

    fn device(n: u64) -> DeviceCrypto {
        DeviceCrypto::new(DeviceIdentity { user: UserId(n), device: DeviceId(n) }).unwrap()
    }

    #[test]
    fn the_epoch_of_a_message_is_read_from_its_header() {
        let conv = ConvId(7);
        let mut alice = device(1);
        let mut bob = device(2);
        alice.create_group(conv).unwrap();
        assert_eq!(made_in_epoch(&alice.encrypt(conv, b"hello").unwrap()), Some(0));
        let package = bob.key_packages(1).unwrap().remove(0);
        let commit = alice.add_devices(conv, &[package]).unwrap();
        assert_eq!(made_in_epoch(&commit.commit), Some(0));
        alice.merge_pending(conv).unwrap();
        assert_eq!(made_in_epoch(&alice.encrypt(conv, b"again").unwrap()), Some(1));
        assert_eq!(made_in_epoch(&commit.welcome.unwrap()), None);
        assert_eq!(made_in_epoch(&[0, 1, 0, 2, 0x48]), None);
    }

    #[test]
    fn varints_take_one_two_or_four_bytes() {
        assert_eq!(varint(&[0x08]), Some((8, 1)));
        assert_eq!(varint(&[0x40, 0x25]), Some((0x25, 2)));
        assert_eq!(varint(&[0x80, 0, 1, 0]), Some((256, 4)));
        assert_eq!(varint(&[0xc0, 0, 0, 0, 0, 0, 0, 1]), None);
        assert_eq!(varint(&[0x40]), None);
    }

    #[test]
    fn a_window_ends_at_removal_and_revocation_and_starts_at_approval() {
        let (user, device, conv) = (UserId(1), DeviceId(10), ConvId(5));
        let mut membership = Membership::default();
        membership.joined(user, conv, 0);
        membership.left(user, conv, 8);
        membership.joined(user, conv, 12);
        assert_eq!(membership.window(user, device, conv, 3), Some(0));
        assert_eq!(membership.window(user, device, conv, 8), Some(0));
        assert_eq!(membership.window(user, device, conv, 9), None);
        assert_eq!(membership.window(user, device, conv, 13), Some(12));
        membership.approved(device, conv, 20);
        assert_eq!(membership.window(user, device, conv, 20), None);
        assert_eq!(membership.window(user, device, conv, 21), Some(20));
        membership.revoked(device, conv, 30);
        assert_eq!(membership.window(user, device, conv, 30), Some(20));
        assert_eq!(membership.window(user, device, conv, 31), None);
        assert_eq!(membership.current_window(user, device, conv), None);
        assert_eq!(membership.current_window(user, DeviceId(11), conv), Some(12));
    }
}
