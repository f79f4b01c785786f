//! The delivery path: appending messages and commits, cursors, welcomes, garbage collection.

use std::collections::BTreeSet;

use anytime_proto::frame::{Message, MessageKind, Seq};
use anytime_proto::limits::{GC_EXPIRED_DEVICES_MAX, GC_ROWS_MAX};
use anytime_proto::{ConvId, DeviceId, ErrorCode};
use anytime_server_core::store::{
    Appended, Collected, CommitAccepted, NewCommit, NewMessage, PendingWelcome, StoreError, StoreResult,
};

use crate::state::{backend, signed, SentId, State, Welcome};

impl State {
    pub(crate) fn append_message(&mut self, message: NewMessage) -> StoreResult<Appended> {
        if let Some(before) = self.sent_ids.get(&(message.sender_device, message.msg_id)) {
            if before.conv != message.conv || before.epoch_after.is_some() {
                return Err(StoreError::Rejected(ErrorCode::MessageIdReused));
            }
            return Ok(Appended { seq: before.seq, duplicate: true });
        }
        let conversation =
            self.conversations.get_mut(&message.conv).ok_or(StoreError::Rejected(ErrorCode::ConversationNotFound))?;
        let seq = conversation.record.last_seq + 1;
        conversation.record.last_seq = seq;
        conversation.messages.insert(
            seq,
            Message {
                conv: message.conv,
                seq,
                sender: message.sender,
                sender_device: message.sender_device,
                msg_id: message.msg_id,
                kind: MessageKind::Application,
                sent_at_ms: message.at_ms,
                payload: message.payload,
            },
        );
        self.sent_ids.insert(
            (message.sender_device, message.msg_id),
            SentId { conv: message.conv, seq, epoch_after: None, at_ms: message.at_ms },
        );
        Ok(Appended { seq, duplicate: false })
    }

    pub(crate) fn append_commit(&mut self, commit: NewCommit) -> StoreResult<CommitAccepted> {
        if let Some(before) = self.sent_ids.get(&(commit.sender_device, commit.msg_id)) {
            return match before.epoch_after {
                Some(epoch) if before.conv == commit.conv => {
                    Ok(CommitAccepted { seq: before.seq, epoch, duplicate: true })
                }
                _ => Err(StoreError::Rejected(ErrorCode::MessageIdReused)),
            };
        }
        let conversation =
            self.conversations.get(&commit.conv).ok_or(StoreError::Rejected(ErrorCode::ConversationNotFound))?;
        let current = conversation.record.epoch;
        if current != commit.epoch {
            return Err(StoreError::EpochMismatch { current });
        }
        if let Some(welcome) = &commit.welcome {
            if self.welcomes.contains_key(&welcome.id) {
                return Err(backend("a welcome with this id exists"));
            }
        }
        // Checked above; nothing fails from here on, so the commit is all or nothing.
        let Some(conversation) = self.conversations.get_mut(&commit.conv) else {
            return Err(StoreError::Rejected(ErrorCode::ConversationNotFound));
        };
        let seq = conversation.record.last_seq + 1;
        let epoch = current + 1;
        conversation.record.last_seq = seq;
        conversation.record.epoch = epoch;
        conversation.messages.insert(
            seq,
            Message {
                conv: commit.conv,
                seq,
                sender: commit.sender,
                sender_device: commit.sender_device,
                msg_id: commit.msg_id,
                kind: MessageKind::Commit { epoch: commit.epoch },
                sent_at_ms: commit.at_ms,
                payload: commit.commit,
            },
        );
        self.sent_ids.insert(
            (commit.sender_device, commit.msg_id),
            SentId { conv: commit.conv, seq, epoch_after: Some(epoch), at_ms: commit.at_ms },
        );
        if let Some(welcome) = commit.welcome {
            // Targets are stored for any device id, as in SQL; duplicates count once.
            let targets: BTreeSet<DeviceId> = welcome.devices.into_iter().collect();
            for device in &targets {
                self.welcome_targets.insert((*device, welcome.id));
            }
            self.welcomes.insert(
                welcome.id,
                Welcome { conv: commit.conv, payload: welcome.payload, created_at_ms: commit.at_ms, targets },
            );
        }
        Ok(CommitAccepted { seq, epoch, duplicate: false })
    }

    pub(crate) fn messages_after(&self, conv: ConvId, after: Seq, limit: u32) -> Vec<Message> {
        let Some(conversation) = self.conversations.get(&conv) else { return Vec::new() };
        let later = match after.checked_add(1) {
            Some(first) => conversation.messages.range(first..),
            None => return Vec::new(),
        };
        later.take(limit as usize).map(|(_, message)| message.clone()).collect()
    }

    /// The device's cursors, in conversation id order (as SQL orders them).
    pub(crate) fn cursors(&self, device: DeviceId) -> Vec<(ConvId, Seq)> {
        let mut cursors: Vec<(ConvId, Seq)> = self
            .device_cursors
            .range((device, ConvId(0))..=(device, ConvId(u64::MAX)))
            .filter_map(|&(_, conv)| {
                let seq = self.conversations.get(&conv)?.cursors.get(&device)?;
                Some((conv, *seq))
            })
            .collect();
        cursors.sort_by_key(|(conv, _)| signed(conv.0));
        cursors
    }

    /// Moves the cursor forward (never back). `ConversationNotFound` if the device has no
    /// cursor in `conv`.
    pub(crate) fn ack(&mut self, device: DeviceId, conv: ConvId, seq: Seq) -> StoreResult<()> {
        let cursor = self
            .conversations
            .get_mut(&conv)
            .and_then(|c| c.cursors.get_mut(&device))
            .ok_or(StoreError::Rejected(ErrorCode::ConversationNotFound))?;
        *cursor = (*cursor).max(seq);
        Ok(())
    }

    /// Oldest first.
    pub(crate) fn pending_welcomes(&self, device: DeviceId) -> Vec<PendingWelcome> {
        let mut welcomes: Vec<(u64, u64, &Welcome)> = self
            .welcome_targets
            .range((device, 0)..=(device, u64::MAX))
            .filter_map(|&(_, id)| self.welcomes.get(&id).map(|w| (id, w.created_at_ms, w)))
            .collect();
        welcomes.sort_by_key(|&(id, created_at_ms, _)| (created_at_ms, signed(id)));
        welcomes.into_iter().map(|(id, _, w)| PendingWelcome { id, conv: w.conv, payload: w.payload.clone() }).collect()
    }

    /// Removes the device's target; the welcome goes with its last target.
    pub(crate) fn ack_welcome(&mut self, device: DeviceId, welcome: u64) -> StoreResult<()> {
        if !self.remove_welcome_target(device, welcome) {
            return Err(StoreError::Rejected(ErrorCode::UnknownWelcome));
        }
        if self.welcomes.get(&welcome).is_some_and(|w| w.targets.is_empty()) {
            self.welcomes.remove(&welcome);
        }
        Ok(())
    }

    pub(crate) fn collect_garbage(&mut self, now_ms: u64, retention_ms: u64) -> Collected {
        let cutoff = now_ms.saturating_sub(retention_ms);
        let rows_max = usize::try_from(GC_ROWS_MAX).unwrap_or(usize::MAX);
        let mut collected = Collected::default();
        // Every device of every member acknowledged these (conversations with no device at all
        // have nobody left to deliver to). At most `GC_ROWS_MAX` per step, as in SQLite.
        let mut budget = rows_max;
        for conversation in self.conversations.values_mut() {
            let low = conversation.cursors.values().min().copied();
            let acked: Vec<Seq> = conversation
                .messages
                .keys()
                .copied()
                .take_while(|seq| low.is_none_or(|low| *seq <= low))
                .take(budget)
                .collect();
            budget -= acked.len();
            for seq in &acked {
                conversation.messages.remove(seq);
            }
            collected.messages += acked.len() as u64;
        }
        // Past retention, acknowledged or not.
        let mut budget = rows_max;
        for conversation in self.conversations.values_mut() {
            let expired: Vec<Seq> =
                conversation.messages.values().filter(|m| m.sent_at_ms < cutoff).map(|m| m.seq).take(budget).collect();
            budget -= expired.len();
            for seq in &expired {
                conversation.messages.remove(seq);
            }
            collected.messages += expired.len() as u64;
        }
        self.sent_ids.retain(|_, sent| sent.at_ms >= cutoff);
        let old_welcomes: Vec<u64> =
            self.welcomes.iter().filter(|(_, w)| w.created_at_ms < cutoff).map(|(id, _)| *id).collect();
        for id in old_welcomes {
            if let Some(welcome) = self.welcomes.remove(&id) {
                for device in welcome.targets {
                    self.welcome_targets.remove(&(device, id));
                }
            }
        }
        let mut expired: Vec<DeviceId> =
            self.devices.values().filter(|d| d.expires_at_ms <= now_ms).map(|d| d.id).collect();
        expired.sort_by_key(|d| signed(d.0));
        expired.truncate(GC_EXPIRED_DEVICES_MAX as usize);
        for device in &expired {
            self.delete_device(*device);
        }
        collected.expired_devices = expired;
        collected
    }
}
