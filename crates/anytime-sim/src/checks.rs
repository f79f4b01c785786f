//! The invariants. After every step (on what is new since the last check): the server ordered
//! nothing from a device outside the conversation; each device processed each conversation in
//! order, got no message twice, was delivered nothing outside its window (so a removed member or
//! a revoked device reads nothing ordered after its removal), and failed to decrypt only what it
//! was not entitled to. At the end, after everyone caught up: every message a user sent reached
//! the server (unless its user left the conversation meanwhile) at the seq it was acknowledged
//! with, every device was delivered all of its window and read every message it was entitled to
//! exactly once and as sent, no outbox holds anything, and every member device is in its
//! conversation's MLS group at the server's epoch with exactly the members' devices.

use std::collections::{BTreeMap, BTreeSet};

use anytime_client::e2ee::DeviceCrypto;
use anytime_client::{Content, Event};
use anytime_proto::frame::Seq;
use anytime_proto::{ConvId, DeviceId, MsgId, UserId};

use crate::model::{Entitlement, Logs, Membership};
use crate::{Device, DeviceState, Violation, World};

/// What one device's new records showed.
#[derive(Default)]
struct Seen {
    not_in_group: usize,
}

/// Checks the records `device` (number `i`) added since the last check.
fn check_records(logs: &Logs, membership: &Membership, device: &mut Device, i: usize) -> Result<Seen, String> {
    let mut seen = Seen::default();
    let Some(client) = device.client.as_ref() else { return Ok(seen) };
    let records = client.store().records();
    for (conv, seq, event) in records.get(device.checked..).unwrap_or_default() {
        if *seq > 0 {
            let last = device.last_seq.entry(*conv).or_insert(0);
            if *seq <= *last {
                return Err(format!("device {i} processed seq {seq} of {conv} after {last}"));
            }
            *last = *seq;
            if membership.window(device.user, device.id, *conv, *seq).is_none() {
                return Err(format!(
                    "device {i} ({:?}) was delivered seq {seq} of {conv}, ordered when its user was not a member \
                     or it was not approved or already revoked",
                    device.state
                ));
            }
        }
        match event {
            Some(Event::Message { msg_id, own: false, content, .. }) => {
                let body = match content {
                    Content::Text(text) => text.body.clone(),
                    other => format!("{other:?}"),
                };
                if device.read.insert(*msg_id, (*conv, *seq, body)).is_some() {
                    return Err(format!("device {i} got message {msg_id} twice"));
                }
            }
            Some(Event::Undecryptable { reason, .. }) => {
                match logs.entitlement(membership, device.user, device.id, *conv, *seq) {
                    Entitlement::NotInGroup => seen.not_in_group += 1,
                    Entitlement::Entitled => {
                        return Err(format!("device {i} cannot decrypt seq {seq} of {conv}: {reason}"));
                    }
                    Entitlement::TooOld => {
                        let made_in = logs.conv(*conv).and_then(|l| l.entry(*seq)).map(|e| (e.made_in, e.epoch));
                        return Err(format!(
                            "device {i} cannot decrypt seq {seq} of {conv}, made in an epoch too long before it was \
                             ordered (made in, ordered in: {made_in:?}): {reason}"
                        ));
                    }
                    Entitlement::Outside => {
                        return Err(format!("device {i} was delivered seq {seq} of {conv} outside its window"));
                    }
                }
            }
            _ => {}
        }
    }
    device.checked = records.len();
    Ok(seen)
}

impl World {
    /// Everything new since the last step.
    pub(crate) fn check_step(&mut self) -> Result<(), Violation> {
        self.check_senders()?;
        for i in 0..self.devices.len() {
            let seen = check_records(&self.logs, &self.membership, &mut self.devices[i], i);
            match seen {
                Ok(seen) => self.report.not_in_group += seen.not_in_group,
                Err(what) => return Err(self.violation(what)),
            }
        }
        Ok(())
    }

    /// The server ordered messages and commits only from devices in the conversation then.
    fn check_senders(&mut self) -> Result<(), Violation> {
        for (conv, log) in &self.logs.convs {
            let from = self.senders_checked.get(conv).copied().unwrap_or(0);
            for entry in log.entries.iter().skip(usize::try_from(from).unwrap_or(usize::MAX)) {
                if self.membership.window(entry.sender, entry.sender_device, *conv, entry.seq).is_none() {
                    let device = self.devices.iter().position(|d| d.id == entry.sender_device);
                    return Err(self.violation(format!(
                        "the server ordered seq {} of {conv} from device {device:?}, not in the conversation then",
                        entry.seq
                    )));
                }
            }
            self.senders_checked.insert(*conv, log.last_seq());
        }
        Ok(())
    }

    /// After everyone caught up.
    pub(crate) async fn check_end(&mut self) -> Result<(), Violation> {
        self.check_step()?;
        self.check_sent()?;
        let mut members: BTreeMap<ConvId, BTreeSet<UserId>> = BTreeMap::new();
        for conv in self.convs.clone() {
            let now = self.members(conv).await?;
            for user in self.users.iter().map(|u| u.id) {
                if now.contains(&user) != self.membership.is_member(user, conv) {
                    return Err(self.violation(format!("the run lost track of whether {user} is in {conv}")));
                }
            }
            members.insert(conv, now);
        }
        for i in 0..self.devices.len() {
            if self.devices[i].is_active() {
                self.check_delivered(i, &members)?;
                self.check_group(i, &members)?;
            }
        }
        Ok(())
    }

    /// Every message sent reached the server at the seq acknowledged, unless the sender's user
    /// left the conversation (the server refuses it for good then) or the device was revoked.
    fn check_sent(&self) -> Result<(), Violation> {
        let mut stored: BTreeMap<(DeviceId, MsgId), (ConvId, Seq)> = BTreeMap::new();
        for (conv, log) in &self.logs.convs {
            for entry in log.entries.iter().filter(|e| e.is_application()) {
                stored.insert((entry.sender_device, entry.msg_id), (*conv, entry.seq));
            }
        }
        for sent in &self.sent {
            let Some(device) = self.devices.iter().find(|d| d.id == sent.device) else { continue };
            match stored.get(&(sent.device, sent.msg_id)) {
                Some((conv, seq)) if *conv == sent.conv && sent.seq.is_none_or(|s| s == *seq) => {}
                Some(other) => {
                    return Err(self.violation(format!(
                        "message {} acknowledged at {:?} of {} is stored as {other:?}",
                        sent.msg_id, sent.seq, sent.conv
                    )));
                }
                None if sent.seq.is_some() => {
                    return Err(
                        self.violation(format!("acknowledged message {} ({:?}) was lost", sent.msg_id, sent.body))
                    );
                }
                None => {
                    let refusable = !sent.tenure.1
                        || self.membership.tenure(device.user, sent.conv) != sent.tenure
                        || device.state == DeviceState::Revoked;
                    if !refusable {
                        return Err(self.violation(format!(
                            "message {} ({:?}) from {} never reached the server",
                            sent.msg_id, sent.body, device.user
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// Device `i` processed all of its window in every conversation of its user, and read
    /// every message it was entitled to exactly once, as sent; its outbox is empty.
    fn check_delivered(&mut self, i: usize, members: &BTreeMap<ConvId, BTreeSet<UserId>>) -> Result<(), Violation> {
        let bodies: BTreeMap<MsgId, &str> = self.sent.iter().map(|s| (s.msg_id, s.body.as_str())).collect();
        let device = &self.devices[i];
        let Some(client) = device.client.as_ref() else { return Ok(()) };
        if !client.store().outbox_is_empty() {
            return Err(self.violation(format!("device {i} still has unsent messages after catching up")));
        }
        let mut deliveries = 0;
        for (conv, users) in members.iter().filter(|(_, users)| users.contains(&device.user)) {
            let Some(start) = self.membership.current_window(device.user, device.id, *conv) else {
                return Err(self.violation(format!("device {i} has no window in {conv}, where its user is a member")));
            };
            let Some(log) = self.logs.conv(*conv) else { continue };
            let processed: BTreeSet<Seq> = client
                .store()
                .records()
                .iter()
                .filter(|(c, s, _)| c == conv && *s > start)
                .map(|(_, s, _)| *s)
                .collect();
            if processed.len() as u64 != log.last_seq().saturating_sub(start) {
                return Err(self.violation(format!(
                    "device {i} processed {} of the {} messages of {conv} after seq {start} ({} members)",
                    processed.len(),
                    log.last_seq().saturating_sub(start),
                    users.len()
                )));
            }
            let later = log.entries.iter().skip(usize::try_from(start).unwrap_or(usize::MAX));
            for entry in later.filter(|e| e.is_application() && e.sender_device != device.id) {
                let entitled = self.logs.entitlement(&self.membership, device.user, device.id, *conv, entry.seq);
                if entitled != Entitlement::Entitled {
                    continue;
                }
                match device.read.get(&entry.msg_id) {
                    Some((c, s, body))
                        if c == conv && *s == entry.seq && bodies.get(&entry.msg_id) == Some(&body.as_str()) =>
                    {
                        deliveries += 1;
                    }
                    Some(other) => {
                        return Err(self.violation(format!("device {i} read {} as {other:?}", entry.msg_id)));
                    }
                    None => {
                        return Err(self.violation(format!(
                            "message {} (seq {} of {conv}) from {} never reached device {i}",
                            entry.msg_id, entry.seq, entry.sender
                        )));
                    }
                }
            }
        }
        self.report.deliveries += deliveries;
        Ok(())
    }

    /// Device `i` is in the MLS group of every conversation of its user, at the server's epoch,
    /// and the group holds exactly the active devices of the members.
    fn check_group(&self, i: usize, members: &BTreeMap<ConvId, BTreeSet<UserId>>) -> Result<(), Violation> {
        let device = &self.devices[i];
        let Some(client) = device.client.as_ref() else { return Ok(()) };
        let Some(state) = client.store().persisted_crypto() else {
            return Err(self.violation(format!("device {i} persisted no encryption state")));
        };
        let crypto = DeviceCrypto::import(&state).map_err(|e| self.violation(format!("device {i}: {e}")))?;
        for (conv, users) in members.iter().filter(|(_, users)| users.contains(&device.user)) {
            let Some(log) = self.logs.conv(*conv) else { continue };
            if !client.has_group(*conv) || crypto.epoch(*conv) != Some(log.epoch()) {
                return Err(self.violation(format!(
                    "device {i} is at epoch {:?} of {conv} (in the group: {}), the server at {}",
                    crypto.epoch(*conv),
                    client.has_group(*conv),
                    log.epoch()
                )));
            }
            let expected: BTreeSet<DeviceId> =
                self.devices.iter().filter(|d| d.is_active() && users.contains(&d.user)).map(|d| d.id).collect();
            let group: BTreeSet<DeviceId> = crypto.members(*conv).into_iter().map(|m| m.device).collect();
            if group != expected {
                let name = |id: &DeviceId| self.devices.iter().position(|d| d.id == *id);
                let extra: Vec<_> = group.difference(&expected).map(name).collect();
                let missing: Vec<_> = expected.difference(&group).map(name).collect();
                return Err(self.violation(format!(
                    "the group of {conv} as device {i} has it holds devices {extra:?} that should not be there and \
                     lacks {missing:?}"
                )));
            }
        }
        Ok(())
    }
}
