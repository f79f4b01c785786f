//! Attachments as the server offers them over HTTP (docs/protocol.md, "Attachments"): room for a
//! sealed blob in a conversation, resumable uploads, reads for the conversation's members, "I
//! have it" from each recipient device, and collection. The rules are `anytime_media::blob`'s;
//! this module authenticates, checks membership and calls the index and byte stores. The server
//! never sees a key: blobs are ciphertext sealed on the sending device.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use anytime_media::blob::{self, BlobId, BlobLimits, BlobRecord};
use anytime_media::{BlobBytes, BlobIndex, BlobStoreError};
use anytime_proto::blob::{BlobStatus, NewBlob};
use anytime_proto::limits::{BLOB_PART_BYTES, BLOB_SWEEP_LEN_MAX, BLOB_UPLOAD_BYTES_MAX};
use anytime_proto::ErrorCode;

use crate::auth::store_code;
use crate::env::EnvExt;
use crate::store::DeviceRecord;
use crate::ServerCore;

pub(crate) struct Blobs {
    index: Arc<dyn BlobIndex>,
    bytes: Arc<dyn BlobBytes>,
    limits: BlobLimits,
    /// Blobs an upload request is writing to on this node: a second request for one of them
    /// waits its turn (`UploadBusy`) rather than racing the first to the same offset.
    writing: Mutex<HashSet<BlobId>>,
}

fn index_code(error: BlobStoreError) -> ErrorCode {
    match error {
        BlobStoreError::QuotaExceeded => ErrorCode::QuotaExceeded,
        BlobStoreError::NotFound => ErrorCode::BlobNotFound,
        BlobStoreError::Moved(_) => ErrorCode::OffsetMismatch,
        BlobStoreError::Exists => ErrorCode::Internal,
        BlobStoreError::Backend(error) => {
            tracing::error!(%error, "blob storage failed");
            ErrorCode::Internal
        }
    }
}

fn status(blob: &BlobRecord) -> BlobStatus {
    BlobStatus {
        id: blob::id_to_hex(blob.id),
        size: blob.size,
        received: blob.received,
        part_bytes: BLOB_PART_BYTES,
        upload_bytes_max: BLOB_UPLOAD_BYTES_MAX,
    }
}

/// Clears the "writing" mark of a blob when the upload request ends, however it ends.
struct Writing<'a> {
    set: &'a Mutex<HashSet<BlobId>>,
    id: BlobId,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.set.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
    }
}

impl ServerCore {
    /// Gives the node its attachment stores (the server shell always does).
    pub fn with_blobs(
        mut self,
        index: Arc<dyn BlobIndex>,
        bytes: Arc<dyn BlobBytes>,
        limits: BlobLimits,
    ) -> ServerCore {
        self.blobs = Some(Arc::new(Blobs { index, bytes, limits, writing: Mutex::default() }));
        self
    }

    fn blobs(&self) -> Result<&Blobs, ErrorCode> {
        self.blobs.as_deref().ok_or(ErrorCode::InvalidArgument)
    }

    /// The blob `id` if `device`'s account is a member of its conversation; a blob of another
    /// conversation answers exactly as a missing one does.
    async fn visible_blob(&self, device: &DeviceRecord, id: &str) -> Result<BlobRecord, ErrorCode> {
        let blobs = self.blobs()?;
        let id = blob::id_from_hex(id).ok_or(ErrorCode::BlobNotFound)?;
        let Some(record) = blobs.index.blob(id).await.map_err(index_code)? else {
            return Err(ErrorCode::BlobNotFound);
        };
        if self.store.member(record.conv, device.user).await.map_err(store_code)?.is_none() {
            return Err(ErrorCode::BlobNotFound);
        }
        Ok(record)
    }

    /// The blob `id` if `device` is uploading it.
    async fn own_blob(&self, device: &DeviceRecord, id: &str) -> Result<BlobRecord, ErrorCode> {
        let record = self.visible_blob(device, id).await?;
        if record.owner_device != device.id {
            return Err(ErrorCode::BlobNotFound);
        }
        Ok(record)
    }

    /// `POST /v1/blobs`: room for a sealed file to be sent in `conv`, which the caller must be a
    /// member of; counted against the caller's quota from now on.
    pub async fn blob_create(&self, token: &str, request: NewBlob) -> Result<BlobStatus, ErrorCode> {
        let device = self.authenticate(token).await?;
        let blobs = self.blobs()?;
        blob::check_new(request.size, &blobs.limits)?;
        if self.store.member(request.conv, device.user).await.map_err(store_code)?.is_none() {
            return Err(ErrorCode::ConversationNotFound);
        }
        let id = (u128::from(self.env.random_u64()) << 64) | u128::from(self.env.random_u64());
        let record = BlobRecord {
            id,
            owner: device.user,
            owner_device: device.id,
            conv: request.conv,
            size: request.size,
            received: 0,
            created_at_ms: self.env.now_ms(),
            completed_at_ms: None,
        };
        blobs.index.create_blob(&record, blobs.limits.quota_bytes).await.map_err(index_code)?;
        tracing::debug!(blob = %blob::id_to_hex(id), size = request.size, "blob created");
        Ok(status(&record))
    }

    /// `GET /v1/blobs/{id}/status`: how far the caller's upload got (where to resume).
    pub async fn blob_status(&self, token: &str, id: &str) -> Result<BlobStatus, ErrorCode> {
        let device = self.authenticate(token).await?;
        Ok(status(&self.own_blob(&device, id).await?))
    }

    /// `PUT /v1/blobs/{id}?offset=N`: `bytes` at `offset`, durable before the answer. On the
    /// last byte the blob completes: the conversation's other devices now are the ones it waits
    /// for.
    pub async fn blob_upload(&self, token: &str, id: &str, offset: u64, bytes: &[u8]) -> Result<BlobStatus, ErrorCode> {
        let device = self.authenticate(token).await?;
        let blobs = self.blobs()?;
        let record = self.own_blob(&device, id).await?;
        if record.received == record.size {
            // The answer to the last request was lost and it came again: nothing to do.
            return match offset.checked_add(bytes.len() as u64) {
                Some(end) if end == record.size => Ok(status(&record)),
                _ => Err(ErrorCode::OffsetMismatch),
            };
        }
        blob::check_upload(&record, offset, bytes.len() as u64)?;
        if !blobs.writing.lock().unwrap_or_else(|e| e.into_inner()).insert(record.id) {
            return Err(ErrorCode::UploadBusy);
        }
        let _writing = Writing { set: &blobs.writing, id: record.id };
        blobs.bytes.write_at(record.id, offset, bytes).await.map_err(index_code)?;
        let to = offset + bytes.len() as u64;
        let recipients = if to == record.size {
            let devices = self.store.member_devices(record.conv).await.map_err(store_code)?;
            devices.into_iter().map(|(_, d)| d).filter(|d| *d != device.id).collect()
        } else {
            Vec::new()
        };
        let now_ms = self.env.now_ms();
        blobs.index.advance(record.id, offset, to, now_ms, &recipients).await.map_err(index_code)?;
        let completed_at_ms = (to == record.size).then_some(now_ms);
        Ok(status(&BlobRecord { received: to, completed_at_ms, ..record }))
    }

    /// A download's first step: the complete blob `id` the caller may read, for the shell to
    /// stream with [`ServerCore::blob_read`].
    pub async fn blob_open(&self, token: &str, id: &str) -> Result<BlobRecord, ErrorCode> {
        let device = self.authenticate(token).await?;
        let record = self.visible_blob(&device, id).await?;
        if record.completed_at_ms.is_none() {
            return Err(ErrorCode::BlobIncomplete);
        }
        Ok(record)
    }

    /// Up to `len` bytes of an opened blob from `offset`.
    pub async fn blob_read(&self, id: BlobId, offset: u64, len: u64) -> Result<Vec<u8>, ErrorCode> {
        self.blobs()?.bytes.read(id, offset, len).await.map_err(index_code)
    }

    /// `POST /v1/blobs/{id}/fetched`: the calling device has the blob; once every recipient
    /// device said so, it is collected.
    pub async fn blob_fetched(&self, token: &str, id: &str) -> Result<(), ErrorCode> {
        let device = self.authenticate(token).await?;
        let record = self.visible_blob(&device, id).await?;
        self.blobs()?.index.fetched(record.id, device.id).await.map_err(index_code)
    }

    /// Collects blobs fetched by all, past retention, or abandoned mid-upload: bytes first, then
    /// the record, so a crash between leaves a record the next sweep finishes.
    pub async fn blob_sweep(&self) -> Result<u32, ErrorCode> {
        let Ok(blobs) = self.blobs() else { return Ok(0) };
        let now_ms = self.env.now_ms();
        let completed_before = now_ms.saturating_sub(blobs.limits.retention_ms);
        let created_before = now_ms.saturating_sub(blobs.limits.upload_ttl_ms);
        let due = blobs.index.due(completed_before, created_before, BLOB_SWEEP_LEN_MAX).await.map_err(index_code)?;
        let mut collected = 0;
        for id in due {
            let Some(record) = blobs.index.blob(id).await.map_err(index_code)? else { continue };
            let left = blobs.index.recipients_left(id).await.map_err(index_code)?;
            if blob::collectable(&record, left, now_ms, &blobs.limits).is_none() {
                continue;
            }
            if blobs.writing.lock().unwrap_or_else(|e| e.into_inner()).contains(&id) {
                continue;
            }
            blobs.bytes.delete(id).await.map_err(index_code)?;
            blobs.index.delete_blob(id).await.map_err(index_code)?;
            collected += 1;
        }
        Ok(collected)
    }
}
