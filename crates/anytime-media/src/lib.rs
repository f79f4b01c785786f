//! Attachments without I/O (docs/protocol.md "Attachments"; ARCHITECTURE.md "anytime-media").
//!
//! - [`seal`]: how a device seals a file for a chat before it leaves the device, and opens it.
//! - [`blob`]: the server's rules for the sealed blobs it keeps without reading them.
//! - [`filter`]: photo and video-frame filters and sliders, on RGBA frames.
//! - [`store`]: the index and byte store traits, with in-memory implementations.
//! - `photo` (feature `photo`): the photo pipeline of the sending device.
//!
//! Nothing here reads a clock, draws randomness or touches a file: keys, ids, times and bytes
//! are inputs, so the CLI, the web client (wasm) and the server share one implementation.

pub mod blob;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod filter;
#[cfg(feature = "photo")]
pub mod photo;
pub mod seal;
pub mod store;

pub use blob::{BlobId, BlobLimits, BlobRecord};
pub use store::{BlobBytes, BlobIndex, BlobResult, BlobStoreError, MemoryBlobBytes, MemoryBlobIndex};

#[cfg(test)]
mod tests {
    use crate::conformance;
    use crate::store::{MemoryBlobBytes, MemoryBlobIndex};

    #[tokio::test]
    async fn the_memory_stores_pass_the_conformance_cases() {
        conformance::run_index(|| async { MemoryBlobIndex::default() }).await;
        conformance::run_bytes(|| async { MemoryBlobBytes::default() }).await;
    }
}
