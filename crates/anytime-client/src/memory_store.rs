//! A [`ClientStore`] in memory: for tests of the client core (no disk, no browser) and for
//! simulations. Keeps every batch it was given so a test can check what was written, and in
//! which order.

use std::collections::BTreeMap;

use anytime_proto::frame::Seq;
use anytime_proto::ConvId;

use crate::client::{Changes, ClientStore, Event, Queued, StoreError};

#[derive(Debug, Default)]
pub struct MemoryStore {
    pub crypto: Option<Vec<u8>>,
    pub seqs: BTreeMap<ConvId, Seq>,
    pub outbox: Vec<Queued>,
    /// Every recorded event, in order: (conversation, seq or 0 for own sends, event).
    pub records: Vec<(ConvId, Seq, Option<Event>)>,
    /// Batches written.
    pub saves: usize,
}

impl ClientStore for MemoryStore {
    fn last_seq(&self, conv: ConvId) -> Result<Seq, StoreError> {
        Ok(self.seqs.get(&conv).copied().unwrap_or(0))
    }

    fn outbox(&self) -> Result<Vec<Queued>, StoreError> {
        Ok(self.outbox.clone())
    }

    fn save(&mut self, changes: Changes<'_>) -> Result<(), StoreError> {
        self.saves += 1;
        if let Some(state) = changes.crypto {
            self.crypto = Some(state);
        }
        if let Some(record) = changes.record {
            if record.seq > 0 {
                let last = self.seqs.entry(record.conv).or_insert(0);
                *last = (*last).max(record.seq);
            }
            self.records.push((record.conv, record.seq, record.event.cloned()));
        }
        if let Some(entry) = changes.outbox_add {
            if !self.outbox.iter().any(|q| q.msg_id == entry.msg_id) {
                self.outbox.push(Queued {
                    conv: entry.conv,
                    msg_id: entry.msg_id,
                    ciphertext: entry.ciphertext.to_vec(),
                    content: Some(entry.content.clone()),
                });
            }
        }
        if let Some(msg_id) = changes.outbox_remove {
            self.outbox.retain(|q| q.msg_id != msg_id);
        }
        Ok(())
    }
}
