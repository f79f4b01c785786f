//! The attachment endpoints' HTTP/JSON bodies (docs/protocol.md, "Attachments"). The bytes of an
//! attachment are ciphertext the server cannot read; these bodies only say where it goes and how
//! far an upload got.

use serde::{Deserialize, Serialize};

use crate::ConvId;

/// `POST /v1/blobs`: room for `size` bytes of ciphertext, to be sent in `conv`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewBlob {
    pub conv: ConvId,
    pub size: u64,
}

/// Where an upload stands (`POST /v1/blobs`, `PUT` and `GET /v1/blobs/{id}/status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobStatus {
    /// 32 hex digits.
    pub id: String,
    pub size: u64,
    /// Bytes stored so far, from the start; the next upload request starts here.
    pub received: u64,
    /// Every upload request but the last carries a multiple of this many bytes.
    pub part_bytes: u64,
    /// The most one upload request may carry.
    pub upload_bytes_max: u64,
}

impl BlobStatus {
    pub fn complete(&self) -> bool {
        self.received == self.size
    }
}
