//! A [`ClientStore`] in memory: for tests of the client core (no disk, no browser) and for
//! simulations. Keeps every batch it was given so a test can check what was written, and in
//! which order. Its clock is a field: history entries stamped "now" get `now_ms`.

use std::collections::BTreeMap;

use anytime_proto::frame::Seq;
use anytime_proto::ConvId;

use crate::client::{Changes, ClientStore, Event, Queued, StoreError};
use crate::timeline::{Entry, Timeline};

#[derive(Debug, Default)]
pub struct MemoryStore {
    pub crypto: Option<Vec<u8>>,
    pub seqs: BTreeMap<ConvId, Seq>,
    pub outbox: Vec<Queued>,
    /// Every recorded event, in order: (conversation, seq or 0 for own sends, event).
    pub records: Vec<(ConvId, Seq, Option<Event>)>,
    /// Batches written.
    pub saves: usize,
    pub timelines: BTreeMap<ConvId, Timeline>,
    /// What "now" is for entries the store stamps (own messages, notices).
    pub now_ms: u64,
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
            if let Some(event) = record.event {
                let timeline = self.timelines.entry(record.conv).or_insert_with(|| Timeline::new(record.conv));
                timeline.apply(event, self.now_ms);
            }
            self.records.push((record.conv, record.seq, record.event.cloned()));
        }
        if let Some(entry) = changes.outbox_add {
            let queued = Queued {
                conv: entry.conv,
                msg_id: entry.msg_id,
                ciphertext: entry.ciphertext.to_vec(),
                content: Some(entry.content.clone()),
            };
            match self.outbox.iter_mut().find(|q| q.msg_id == entry.msg_id) {
                Some(old) => *old = queued,
                None => self.outbox.push(queued),
            }
        }
        if let Some(msg_id) = changes.outbox_remove {
            self.outbox.retain(|q| q.msg_id != msg_id);
        }
        if let Some((conv, effect)) = changes.local {
            self.timelines.entry(conv).or_insert_with(|| Timeline::new(conv)).apply_local(effect);
        }
        Ok(())
    }

    fn history(&self, conv: ConvId, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let entries = self.timelines.get(&conv).map(|t| t.entries.as_slice()).unwrap_or_default();
        Ok(entries[entries.len().saturating_sub(limit)..].to_vec())
    }

    fn starred(&self) -> Result<Vec<(ConvId, Entry)>, StoreError> {
        Ok(crate::timeline::starred(self.timelines.values()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store_conformance;

    #[test]
    fn passes_the_client_store_conformance_cases() {
        store_conformance::run_all(|| MemoryStore { now_ms: store_conformance::NOW_MS, ..MemoryStore::default() });
    }
}
