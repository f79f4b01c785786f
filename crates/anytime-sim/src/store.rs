//! A device's "disk" in the simulation: the client core's in-memory store, which survives a
//! device crash (the `Client` is rebuilt from it), plus switches that break a rule on purpose so
//! a run can show that the checks catch it.

use anytime_client::{Changes, ClientStore, Event, MemoryStore, Queued, StoreError};
use anytime_proto::frame::Seq;
use anytime_proto::ConvId;

/// A rule broken on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A send's ratchet step is not persisted with its outbox entry (what two processes on one
    /// profile amounted to): after a crash the device reuses a message key.
    ForgetRatchet,
    /// Outbox entries are not persisted: a message whose request was lost is gone after a crash.
    ForgetOutbox,
}

pub struct SimStore {
    inner: MemoryStore,
    fault: Option<Fault>,
}

impl SimStore {
    pub fn new(fault: Option<Fault>) -> SimStore {
        SimStore { inner: MemoryStore::default(), fault }
    }

    /// The MLS state as last persisted (what a restarted device loads).
    pub fn persisted_crypto(&self) -> Option<Vec<u8>> {
        self.inner.crypto.clone()
    }

    /// Every recorded event in order: (conversation, seq or 0 for own sends, event).
    pub fn records(&self) -> &[(ConvId, Seq, Option<Event>)] {
        &self.inner.records
    }

    pub fn outbox_is_empty(&self) -> bool {
        self.inner.outbox.is_empty()
    }
}

impl ClientStore for SimStore {
    fn last_seq(&self, conv: ConvId) -> Result<Seq, StoreError> {
        self.inner.last_seq(conv)
    }

    fn outbox(&self) -> Result<Vec<Queued>, StoreError> {
        self.inner.outbox()
    }

    fn save(&mut self, mut changes: Changes<'_>) -> Result<(), StoreError> {
        match self.fault {
            Some(Fault::ForgetRatchet) if changes.outbox_add.is_some() => changes.crypto = None,
            Some(Fault::ForgetOutbox) => changes.outbox_add = None,
            _ => {}
        }
        self.inner.save(changes)
    }

    fn history(&self, conv: ConvId, limit: usize) -> Result<Vec<anytime_client::timeline::Entry>, StoreError> {
        self.inner.history(conv, limit)
    }

    fn starred(&self) -> Result<Vec<(ConvId, anytime_client::timeline::Entry)>, StoreError> {
        self.inner.starred()
    }
}
