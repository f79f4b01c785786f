//! The cases every [`BlobIndex`] and every [`BlobBytes`] must pass (feature `conformance`):
//! memory here; SQLite, PostgreSQL, the filesystem and object stores in their crates. Each case
//! gets a fresh store.

use std::future::Future;
use std::sync::Arc;

use anytime_proto::limits::BLOB_PART_BYTES;
use anytime_proto::{ConvId, DeviceId, UserId};

use crate::blob::BlobRecord;
use crate::store::{BlobBytes, BlobIndex, BlobStoreError};

pub async fn run_index<S: BlobIndex + 'static, F: Future<Output = S>>(mut fresh: impl FnMut() -> F) {
    records_round_trip_and_ids_are_unique(&fresh().await).await;
    the_quota_holds_under_parallel_creations(Arc::new(fresh().await)).await;
    advance_is_compare_and_set_and_completion_names_the_recipients(&fresh().await).await;
    due_blobs_are_the_fetched_the_old_and_the_abandoned(&fresh().await).await;
}

pub async fn run_bytes<S: BlobBytes + 'static, F: Future<Output = S>>(mut fresh: impl FnMut() -> F) {
    bytes_are_written_at_offsets_and_read_in_ranges(&fresh().await).await;
    a_rewrite_at_an_offset_replaces_the_rest(&fresh().await).await;
}

pub fn record(id: u128, owner: u64, size: u64, created_at_ms: u64) -> BlobRecord {
    BlobRecord {
        id,
        owner: UserId(owner),
        owner_device: DeviceId(owner * 10),
        conv: ConvId(7),
        size,
        received: 0,
        created_at_ms,
        completed_at_ms: None,
    }
}

pub async fn records_round_trip_and_ids_are_unique<S: BlobIndex>(index: &S) {
    let id = u128::MAX - 3;
    let blob = record(id, 1, 5_000, 100);
    index.create_blob(&blob, 10_000).await.expect("create");
    assert_eq!(index.blob(id).await.expect("read"), Some(blob.clone()), "every field, the full 128-bit id");
    assert_eq!(index.create_blob(&record(id, 2, 1, 100), 10_000).await, Err(BlobStoreError::Exists));
    assert_eq!(index.blob(7).await.expect("read"), None);
    assert_eq!(index.used_bytes(UserId(1)).await.expect("used"), 5_000);
    assert_eq!(index.used_bytes(UserId(2)).await.expect("used"), 0);
    index.delete_blob(id).await.expect("delete");
    assert_eq!(index.blob(id).await.expect("read"), None);
    assert_eq!(index.used_bytes(UserId(1)).await.expect("used"), 0, "a deleted blob frees its quota");
}

pub async fn the_quota_holds_under_parallel_creations<S: BlobIndex + 'static>(index: Arc<S>) {
    let tasks: Vec<_> = (0..10u128)
        .map(|i| {
            let index = index.clone();
            tokio::spawn(async move { index.create_blob(&record(i + 1, 1, 300, 100), 1_000).await })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(()) => created += 1,
            Err(BlobStoreError::QuotaExceeded) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(created, 3, "300 bytes each in a 1,000-byte quota");
    assert_eq!(index.used_bytes(UserId(1)).await.expect("used"), 900);
    index.create_blob(&record(100, 2, 1_000, 100), 1_000).await.expect("another account has its own quota");
}

pub async fn advance_is_compare_and_set_and_completion_names_the_recipients<S: BlobIndex>(index: &S) {
    let size = 2 * BLOB_PART_BYTES + 5;
    index.create_blob(&record(1, 1, size, 100), u64::MAX).await.expect("create");
    let devices = [DeviceId(21), DeviceId(22)];
    index.advance(1, 0, BLOB_PART_BYTES, 200, &devices).await.expect("first part");
    assert_eq!(index.advance(1, 0, BLOB_PART_BYTES, 200, &devices).await, Err(BlobStoreError::Moved(BLOB_PART_BYTES)));
    let blob = index.blob(1).await.expect("read").expect("there");
    assert_eq!((blob.received, blob.completed_at_ms), (BLOB_PART_BYTES, None));
    assert_eq!(index.recipients_left(1).await.expect("left"), 0, "no recipients before completion");
    index.advance(1, BLOB_PART_BYTES, size, 300, &devices).await.expect("the rest");
    let blob = index.blob(1).await.expect("read").expect("there");
    assert_eq!((blob.received, blob.completed_at_ms), (size, Some(300)));
    assert_eq!(index.recipients_left(1).await.expect("left"), 2);
    index.fetched(1, DeviceId(21)).await.expect("fetched");
    index.fetched(1, DeviceId(21)).await.expect("twice is fine");
    index.fetched(1, DeviceId(99)).await.expect("a device that was never a recipient");
    assert_eq!(index.recipients_left(1).await.expect("left"), 1);
    assert_eq!(index.advance(5, 0, 1, 300, &[]).await, Err(BlobStoreError::NotFound));
}

pub async fn due_blobs_are_the_fetched_the_old_and_the_abandoned<S: BlobIndex>(index: &S) {
    // 1: complete, fetched by all. 2: complete, waiting, recent. 3: complete, waiting, old.
    // 4: uploading, recent. 5: uploading, abandoned.
    for (id, created) in [(1, 1_000), (2, 1_000), (3, 1_000), (4, 9_000), (5, 1_000)] {
        index.create_blob(&record(id, 1, 10, created), u64::MAX).await.expect("create");
    }
    index.advance(1, 0, 10, 5_000, &[DeviceId(1)]).await.expect("complete");
    index.fetched(1, DeviceId(1)).await.expect("fetched");
    index.advance(2, 0, 10, 8_000, &[DeviceId(1)]).await.expect("complete");
    index.advance(3, 0, 10, 2_000, &[DeviceId(1)]).await.expect("complete");
    let mut due = index.due(3_000, 5_000, 100).await.expect("due");
    due.sort_unstable();
    assert_eq!(due, vec![1, 3, 5]);
    assert_eq!(index.due(3_000, 5_000, 2).await.expect("due").len(), 2, "at most limit");
}

pub async fn bytes_are_written_at_offsets_and_read_in_ranges<S: BlobBytes>(bytes: &S) {
    let part = BLOB_PART_BYTES as usize;
    let first: Vec<u8> = (0..part).map(|i| (i % 251) as u8).collect();
    let second = vec![9u8; 100];
    assert_eq!(bytes.read(1, 0, 10).await, Err(BlobStoreError::NotFound));
    bytes.write_at(1, 0, &first).await.expect("first part");
    bytes.write_at(1, part as u64, &second).await.expect("second");
    assert_eq!(bytes.read(1, 0, 10).await.expect("head"), first[..10]);
    let across = bytes.read(1, part as u64 - 5, 10).await.expect("across the parts");
    assert_eq!(across[..5], first[part - 5..]);
    assert_eq!(across[5..], second[..5]);
    assert_eq!(bytes.read(1, part as u64 + 90, 1_000).await.expect("tail"), vec![9u8; 10], "fewer at the end");
    assert!(bytes.read(1, part as u64 + 100, 10).await.expect("past the end").is_empty());
    bytes.delete(1).await.expect("delete");
    assert_eq!(bytes.read(1, 0, 10).await, Err(BlobStoreError::NotFound));
    bytes.delete(1).await.expect("deleting twice is fine");
}

pub async fn a_rewrite_at_an_offset_replaces_the_rest<S: BlobBytes>(bytes: &S) {
    // An upload request whose answer was lost is sent again: the same part lands again.
    let part = BLOB_PART_BYTES as usize;
    bytes.write_at(2, 0, &vec![1u8; part]).await.expect("first");
    bytes.write_at(2, part as u64, &[2u8; 50]).await.expect("second");
    bytes.write_at(2, part as u64, &[3u8; 20]).await.expect("again, shorter");
    assert_eq!(bytes.read(2, part as u64, 100).await.expect("read"), vec![3u8; 20]);
}
