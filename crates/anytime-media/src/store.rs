//! The two storage seams of attachments: [`BlobIndex`] keeps the records (who uploaded what for
//! which conversation, how far, who still has to fetch it) in the server's database, so every
//! node of a cluster sees them; [`BlobBytes`] keeps the sealed bytes (a directory of files by
//! default, an object store for clusters). Each method is atomic on its own and returns once its
//! writes are durable.
//!
//! In-memory implementations of both are here, for tests and the simulator.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use anytime_proto::DeviceId;
use anytime_proto::UserId;
use async_trait::async_trait;

use crate::blob::{BlobId, BlobRecord};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobStoreError {
    /// The owner's blobs would exceed the quota.
    #[error("the account's attachment quota is full")]
    QuotaExceeded,
    /// Another blob has this id.
    #[error("a blob with this id exists")]
    Exists,
    #[error("no such blob")]
    NotFound,
    /// `advance` from an offset the blob is no longer at; carries where it is.
    #[error("the blob is at offset {0}")]
    Moved(u64),
    #[error("blob storage failed: {0}")]
    Backend(String),
}

pub type BlobResult<T> = Result<T, BlobStoreError>;

#[async_trait]
pub trait BlobIndex: Send + Sync {
    /// Records a new blob if the owner's blobs (every size, complete or not) plus this one stay
    /// within `quota_bytes`; checked and written atomically, so parallel uploads cannot overrun.
    async fn create_blob(&self, blob: &BlobRecord, quota_bytes: u64) -> BlobResult<()>;
    async fn blob(&self, id: BlobId) -> BlobResult<Option<BlobRecord>>;
    /// Moves `received` from `from` to `to` (compare and set; `Moved` if it is elsewhere). When
    /// `to` is the size, the blob completes at `now_ms` and `recipients` are the devices that
    /// must fetch it before it goes.
    async fn advance(&self, id: BlobId, from: u64, to: u64, now_ms: u64, recipients: &[DeviceId]) -> BlobResult<()>;
    /// `device` fetched the blob; it no longer waits for it. Unknown pairs are ignored.
    async fn fetched(&self, id: BlobId, device: DeviceId) -> BlobResult<()>;
    /// Devices that still have to fetch the blob.
    async fn recipients_left(&self, id: BlobId) -> BlobResult<u32>;
    /// Bytes the owner's blobs take (their declared sizes).
    async fn used_bytes(&self, owner: UserId) -> BlobResult<u64>;
    /// Blobs that may be due for collection at `now_ms`: fetched by every recipient, complete
    /// before `completed_before_ms`, or incomplete and created before `created_before_ms`. At
    /// most `limit`, any order.
    async fn due(&self, completed_before_ms: u64, created_before_ms: u64, limit: u32) -> BlobResult<Vec<BlobId>>;
    /// Forgets the blob and its recipients.
    async fn delete_blob(&self, id: BlobId) -> BlobResult<()>;
}

#[async_trait]
pub trait BlobBytes: Send + Sync {
    /// Writes `bytes` at `offset` of the blob (creating it), durably. Offsets are multiples of
    /// `BLOB_PART_BYTES`; what lay at and after `offset` is replaced.
    async fn write_at(&self, id: BlobId, offset: u64, bytes: &[u8]) -> BlobResult<()>;
    /// Up to `len` bytes from `offset`: fewer at the end, and a backend may cap one read (1 MiB
    /// for files), so callers read in a loop. `NotFound` if the blob has no bytes.
    async fn read(&self, id: BlobId, offset: u64, len: u64) -> BlobResult<Vec<u8>>;
    /// Removes the bytes; a missing blob is not an error.
    async fn delete(&self, id: BlobId) -> BlobResult<()>;
}

#[derive(Debug, Default)]
pub struct MemoryBlobIndex {
    state: Mutex<IndexState>,
}

#[derive(Debug, Default)]
struct IndexState {
    blobs: BTreeMap<BlobId, BlobRecord>,
    recipients: HashMap<BlobId, HashSet<DeviceId>>,
}

impl MemoryBlobIndex {
    fn state(&self) -> std::sync::MutexGuard<'_, IndexState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl BlobIndex for MemoryBlobIndex {
    async fn create_blob(&self, blob: &BlobRecord, quota_bytes: u64) -> BlobResult<()> {
        let mut state = self.state();
        if state.blobs.contains_key(&blob.id) {
            return Err(BlobStoreError::Exists);
        }
        let used: u64 = state.blobs.values().filter(|b| b.owner == blob.owner).map(|b| b.size).sum();
        if used.saturating_add(blob.size) > quota_bytes {
            return Err(BlobStoreError::QuotaExceeded);
        }
        state.blobs.insert(blob.id, blob.clone());
        Ok(())
    }

    async fn blob(&self, id: BlobId) -> BlobResult<Option<BlobRecord>> {
        Ok(self.state().blobs.get(&id).cloned())
    }

    async fn advance(&self, id: BlobId, from: u64, to: u64, now_ms: u64, recipients: &[DeviceId]) -> BlobResult<()> {
        let mut state = self.state();
        let blob = state.blobs.get_mut(&id).ok_or(BlobStoreError::NotFound)?;
        if blob.received != from {
            return Err(BlobStoreError::Moved(blob.received));
        }
        blob.received = to;
        if to == blob.size {
            blob.completed_at_ms = Some(now_ms);
            state.recipients.insert(id, recipients.iter().copied().collect());
        }
        Ok(())
    }

    async fn fetched(&self, id: BlobId, device: DeviceId) -> BlobResult<()> {
        if let Some(set) = self.state().recipients.get_mut(&id) {
            set.remove(&device);
        }
        Ok(())
    }

    async fn recipients_left(&self, id: BlobId) -> BlobResult<u32> {
        Ok(self.state().recipients.get(&id).map_or(0, |set| set.len() as u32))
    }

    async fn used_bytes(&self, owner: UserId) -> BlobResult<u64> {
        Ok(self.state().blobs.values().filter(|b| b.owner == owner).map(|b| b.size).sum())
    }

    async fn due(&self, completed_before_ms: u64, created_before_ms: u64, limit: u32) -> BlobResult<Vec<BlobId>> {
        let state = self.state();
        let due = state.blobs.values().filter(|b| match b.completed_at_ms {
            None => b.created_at_ms < created_before_ms,
            Some(done) => done < completed_before_ms || state.recipients.get(&b.id).is_none_or(|set| set.is_empty()),
        });
        Ok(due.map(|b| b.id).take(limit as usize).collect())
    }

    async fn delete_blob(&self, id: BlobId) -> BlobResult<()> {
        let mut state = self.state();
        state.blobs.remove(&id);
        state.recipients.remove(&id);
        Ok(())
    }
}

#[derive(Debug, Default)]
pub struct MemoryBlobBytes {
    blobs: Mutex<HashMap<BlobId, Vec<u8>>>,
}

impl MemoryBlobBytes {
    /// Every stored byte, for tests that look for plaintext.
    pub fn all_bytes(&self) -> Vec<u8> {
        self.blobs.lock().unwrap_or_else(|e| e.into_inner()).values().flatten().copied().collect()
    }
}

#[async_trait]
impl BlobBytes for MemoryBlobBytes {
    async fn write_at(&self, id: BlobId, offset: u64, bytes: &[u8]) -> BlobResult<()> {
        let mut blobs = self.blobs.lock().unwrap_or_else(|e| e.into_inner());
        let blob = blobs.entry(id).or_default();
        let offset = usize::try_from(offset).map_err(|_| BlobStoreError::Backend("offset too large".into()))?;
        blob.resize(offset, 0);
        blob.extend_from_slice(bytes);
        Ok(())
    }

    async fn read(&self, id: BlobId, offset: u64, len: u64) -> BlobResult<Vec<u8>> {
        let blobs = self.blobs.lock().unwrap_or_else(|e| e.into_inner());
        let blob = blobs.get(&id).ok_or(BlobStoreError::NotFound)?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(blob.len());
        let end = start.saturating_add(usize::try_from(len).unwrap_or(usize::MAX)).min(blob.len());
        Ok(blob[start..end].to_vec())
    }

    async fn delete(&self, id: BlobId) -> BlobResult<()> {
        self.blobs.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        Ok(())
    }
}
