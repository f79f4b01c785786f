//! The server's rules for blobs (sealed attachments), as pure functions of a [`BlobRecord`] and the
//! request: how big a blob may be, where the next upload request must start and how long it may
//! be, which byte range a download asks for, and when a blob is collected. The server shell checks
//! membership and calls these; the stores only keep records and bytes.

use std::ops::Range;

use anytime_proto::limits::{BLOB_PART_BYTES, BLOB_UPLOAD_BYTES_MAX, BLOB_UPLOAD_TTL_MS};
use anytime_proto::{ConvId, DeviceId, ErrorCode, UserId};

/// A blob id: random, 128 bits, shown as 32 hex digits.
pub type BlobId = u128;

/// A blob as the index keeps it. `received` grows from 0 to `size` as upload requests land.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRecord {
    pub id: BlobId,
    pub owner: UserId,
    pub owner_device: DeviceId,
    /// The conversation it is sent to: its members may fetch it, nobody else.
    pub conv: ConvId,
    pub size: u64,
    pub received: u64,
    pub created_at_ms: u64,
    /// When the last byte arrived; `None` while uploading.
    pub completed_at_ms: Option<u64>,
}

/// Operator limits for blobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLimits {
    pub blob_bytes_max: u64,
    pub quota_bytes: u64,
    /// A complete blob is collected this long after it completed, fetched or not.
    pub retention_ms: u64,
    pub upload_ttl_ms: u64,
}

impl Default for BlobLimits {
    fn default() -> Self {
        BlobLimits {
            blob_bytes_max: anytime_proto::limits::BLOB_BYTES_MAX,
            quota_bytes: anytime_proto::limits::BLOB_QUOTA_BYTES,
            retention_ms: 30 * 24 * 3_600_000,
            upload_ttl_ms: BLOB_UPLOAD_TTL_MS,
        }
    }
}

/// Checks the size of a new blob (the quota is checked by the index, atomically).
pub fn check_new(size: u64, limits: &BlobLimits) -> Result<(), ErrorCode> {
    if size == 0 {
        // A sealed file always has a tag, so a real upload is never empty.
        return Err(ErrorCode::InvalidArgument);
    }
    if size > limits.blob_bytes_max {
        return Err(ErrorCode::PayloadTooLarge);
    }
    Ok(())
}

/// Checks an upload request of `len` bytes at `offset`: it must continue where the blob stands,
/// stay inside it, and be whole parts unless it ends the blob.
pub fn check_upload(blob: &BlobRecord, offset: u64, len: u64) -> Result<(), ErrorCode> {
    if offset != blob.received {
        return Err(ErrorCode::OffsetMismatch);
    }
    if len == 0 || len > BLOB_UPLOAD_BYTES_MAX {
        return Err(ErrorCode::InvalidArgument);
    }
    let end = offset.checked_add(len).ok_or(ErrorCode::InvalidArgument)?;
    if end > blob.size {
        return Err(ErrorCode::PayloadTooLarge);
    }
    if end != blob.size && !len.is_multiple_of(BLOB_PART_BYTES) {
        return Err(ErrorCode::InvalidArgument);
    }
    Ok(())
}

/// The bytes a `Range` header asks for (RFC 9110 §14.1.2: one `bytes=a-b`, `bytes=a-` or
/// `bytes=-n` range). `None`: no header, the whole blob. `Err`: a range the blob cannot satisfy
/// (answered 416) or one this server does not serve (several ranges: answered with the whole).
pub fn range(header: Option<&str>, size: u64) -> Result<Option<Range<u64>>, RangeError> {
    let Some(header) = header else { return Ok(None) };
    let Some(spec) = header.trim().strip_prefix("bytes=") else { return Ok(None) };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.split_once('-') else { return Err(RangeError::Malformed) };
    let (first, last) = (first.trim(), last.trim());
    let parse = |s: &str| s.parse::<u64>().map_err(|_| RangeError::Malformed);
    let range = match (first.is_empty(), last.is_empty()) {
        (true, true) => return Err(RangeError::Malformed),
        // The last n bytes.
        (true, false) => {
            let n = parse(last)?;
            if n == 0 {
                return Err(RangeError::Unsatisfiable);
            }
            size.saturating_sub(n)..size
        }
        (false, true) => parse(first)?..size,
        (false, false) => {
            let (a, b) = (parse(first)?, parse(last)?);
            if b < a {
                return Err(RangeError::Malformed);
            }
            a..b.saturating_add(1).min(size)
        }
    };
    if range.start >= size {
        return Err(RangeError::Unsatisfiable);
    }
    Ok(Some(range))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("the Range header is malformed")]
    Malformed,
    #[error("the range starts past the end of the blob")]
    Unsatisfiable,
}

/// Why a blob is collected now, if it is: every recipient device fetched it, it outlived
/// retention, or its upload was abandoned.
pub fn collectable(blob: &BlobRecord, recipients_left: u32, now_ms: u64, limits: &BlobLimits) -> Option<Collect> {
    match blob.completed_at_ms {
        None if now_ms.saturating_sub(blob.created_at_ms) >= limits.upload_ttl_ms => Some(Collect::Abandoned),
        None => None,
        Some(_) if recipients_left == 0 => Some(Collect::Fetched),
        Some(done) if now_ms.saturating_sub(done) >= limits.retention_ms => Some(Collect::Expired),
        Some(_) => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collect {
    Fetched,
    Expired,
    Abandoned,
}

/// 32 lowercase hex digits.
pub fn id_to_hex(id: BlobId) -> String {
    format!("{id:032x}")
}

pub fn id_from_hex(s: &str) -> Option<BlobId> {
    if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(size: u64, received: u64) -> BlobRecord {
        BlobRecord {
            id: 1,
            owner: UserId(1),
            owner_device: DeviceId(1),
            conv: ConvId(1),
            size,
            received,
            created_at_ms: 1_000,
            completed_at_ms: None,
        }
    }

    #[test]
    fn uploads_continue_where_the_blob_stands_in_whole_parts_and_stay_inside_it() {
        let part = BLOB_PART_BYTES;
        let b = blob(3 * part + 10, part);
        assert_eq!(check_upload(&b, part, 2 * part), Ok(()));
        assert_eq!(check_upload(&b, part, 2 * part + 10), Ok(()), "the last request may be short");
        assert_eq!(check_upload(&b, 0, part), Err(ErrorCode::OffsetMismatch));
        assert_eq!(check_upload(&b, part, part + 1), Err(ErrorCode::InvalidArgument), "not whole parts");
        assert_eq!(check_upload(&b, part, 2 * part + 11), Err(ErrorCode::PayloadTooLarge));
        assert_eq!(check_upload(&b, part, 0), Err(ErrorCode::InvalidArgument));
        assert_eq!(check_upload(&blob(u64::MAX, u64::MAX - 1), u64::MAX - 1, part), Err(ErrorCode::InvalidArgument));
        let limits = BlobLimits { blob_bytes_max: 100, ..BlobLimits::default() };
        assert_eq!(check_new(100, &limits), Ok(()));
        assert_eq!(check_new(101, &limits), Err(ErrorCode::PayloadTooLarge));
        assert_eq!(check_new(0, &limits), Err(ErrorCode::InvalidArgument));
    }

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(range(None, 100), Ok(None));
        assert_eq!(range(Some("bytes=0-9"), 100), Ok(Some(0..10)));
        assert_eq!(range(Some("bytes=90-"), 100), Ok(Some(90..100)));
        assert_eq!(range(Some("bytes=-10"), 100), Ok(Some(90..100)));
        assert_eq!(range(Some("bytes=-1000"), 100), Ok(Some(0..100)));
        assert_eq!(range(Some("bytes=50-1000"), 100), Ok(Some(50..100)));
        assert_eq!(range(Some("bytes=100-"), 100), Err(RangeError::Unsatisfiable));
        assert_eq!(range(Some("bytes=-0"), 100), Err(RangeError::Unsatisfiable));
        assert_eq!(range(Some("bytes=9-2"), 100), Err(RangeError::Malformed));
        assert_eq!(range(Some("bytes=a-b"), 100), Err(RangeError::Malformed));
        assert_eq!(range(Some("bytes=0-1,5-6"), 100), Ok(None), "several ranges: the whole blob");
        assert_eq!(range(Some("items=0-1"), 100), Ok(None));
    }

    #[test]
    fn a_blob_goes_once_fetched_by_all_past_retention_or_abandoned() {
        let limits = BlobLimits { retention_ms: 10_000, upload_ttl_ms: 5_000, ..BlobLimits::default() };
        let uploading = blob(10, 5);
        assert_eq!(collectable(&uploading, 0, 5_999, &limits), None);
        assert_eq!(collectable(&uploading, 0, 6_000, &limits), Some(Collect::Abandoned));
        let done = BlobRecord { received: 10, completed_at_ms: Some(2_000), ..uploading };
        assert_eq!(collectable(&done, 2, 11_999, &limits), None);
        assert_eq!(collectable(&done, 0, 2_001, &limits), Some(Collect::Fetched));
        assert_eq!(collectable(&done, 2, 12_000, &limits), Some(Collect::Expired));
        assert_eq!(id_from_hex(&id_to_hex(0xabc)), Some(0xabc));
        assert_eq!(id_from_hex("xyz"), None);
        assert_eq!(id_from_hex(&"g".repeat(32)), None);
    }
}
