//! How a file is sealed for a chat: a fresh 256-bit key per file, the plaintext cut into chunks
//! of `ATTACHMENT_CHUNK_BYTES`, each sealed with ChaCha20-Poly1305 (RFC 8439) under a nonce that
//! is the chunk's index and a last-chunk flag — the STREAM construction of Hoang, Reyhanitabar,
//! Rogaway and Vizár ("Online authenticated-encryption and its nonce-reuse misuse-resistance",
//! 2015). Chunks cannot be reordered (the index), dropped from the end (the flag) or appended
//! (anything after the last makes it open as a middle chunk, which fails), and every chunk is checked before its plaintext is handed out.
//!
//! Written here rather than taken from the `aead` crate's `stream` module because that module's
//! nonce layout (a 7-byte prefix, 32-bit counter) caps files at 256 GiB of 64 KiB chunks only by
//! accident and it offers no random access: resuming an upload at any byte needs chunk `i`
//! sealed alone, which [`seal_chunk`] does. The key is never reused, so the nonce needs no
//! random part.
//!
//! No I/O: callers feed bytes in and get bytes out.

use anytime_proto::limits::ATTACHMENT_CHUNK_BYTES;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

/// Bytes the AEAD adds to each chunk.
pub const TAG_BYTES: u64 = 16;

/// Plaintext bytes per chunk.
pub const CHUNK_BYTES: u64 = ATTACHMENT_CHUNK_BYTES as u64;

/// Ciphertext bytes of one full chunk.
pub const SEALED_CHUNK_BYTES: u64 = CHUNK_BYTES + TAG_BYTES;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("chunk {0} of the attachment failed authentication: the file was changed or is not for this key")]
    Forged(u64),
    #[error("the attachment ends before its last chunk: the download is incomplete")]
    Truncated,
    #[error("a chunk of {0} bytes is larger than a chunk may be")]
    ChunkTooLarge(usize),
}

/// The number of chunks a file of `plain_len` bytes is sealed in: an empty file is one empty
/// (last) chunk, so even it carries a tag.
pub fn chunk_count(plain_len: u64) -> u64 {
    plain_len.div_ceil(CHUNK_BYTES).max(1)
}

/// The size of the sealed file.
pub fn sealed_len(plain_len: u64) -> u64 {
    plain_len + chunk_count(plain_len) * TAG_BYTES
}

/// The plaintext size of a sealed file of `sealed_len` bytes, if that is a size a sealed file can
/// have.
pub fn plain_len(sealed_len: u64) -> Option<u64> {
    let chunks = sealed_len.div_ceil(SEALED_CHUNK_BYTES).max(1);
    let plain = sealed_len.checked_sub(chunks * TAG_BYTES)?;
    (self::sealed_len(plain) == sealed_len).then_some(plain)
}

fn nonce(index: u64, last: bool) -> Nonce {
    let mut nonce = [0u8; 12];
    nonce[3..11].copy_from_slice(&index.to_be_bytes());
    nonce[11] = u8::from(last);
    Nonce::from(nonce)
}

/// Seals chunk `index` of a file (`plain` at most `CHUNK_BYTES`; only the last may be shorter).
pub fn seal_chunk(key: &[u8; 32], index: u64, plain: &[u8], last: bool) -> Result<Vec<u8>, SealError> {
    if plain.len() as u64 > CHUNK_BYTES {
        return Err(SealError::ChunkTooLarge(plain.len()));
    }
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key));
    // Sealing a slice in memory fails only for inputs past the AEAD's length limit (256 GiB).
    cipher.encrypt(&nonce(index, last), plain).map_err(|_| SealError::ChunkTooLarge(plain.len()))
}

/// Seals a whole file held in memory (small files, tests); large files go chunk by chunk.
pub fn seal(key: &[u8; 32], plain: &[u8]) -> Vec<u8> {
    let chunks = chunk_count(plain.len() as u64);
    let mut out = Vec::with_capacity(sealed_len(plain.len() as u64) as usize);
    for index in 0..chunks {
        let start = (index * CHUNK_BYTES) as usize;
        let end = (start + CHUNK_BYTES as usize).min(plain.len());
        // Chunks are at most CHUNK_BYTES by construction.
        let sealed = seal_chunk(key, index, &plain[start..end], index + 1 == chunks).expect("chunk within size");
        out.extend_from_slice(&sealed);
    }
    out
}

/// Opens a sealed file as it streams in, in constant memory: [`Opener::push`] bytes as they
/// arrive, take the plaintext it returns, then [`Opener::finish`]. A chunk is opened only once
/// the bytes after it show whether it is the last.
pub struct Opener {
    cipher: ChaCha20Poly1305,
    buffer: Vec<u8>,
    index: u64,
}

impl Opener {
    pub fn new(key: &[u8; 32]) -> Opener {
        Opener {
            cipher: ChaCha20Poly1305::new(Key::from_slice(key)),
            buffer: Vec::with_capacity(2 * SEALED_CHUNK_BYTES as usize),
            index: 0,
        }
    }

    /// Plaintext of the chunks `bytes` completed.
    pub fn push(&mut self, mut bytes: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut out = Vec::new();
        let full = SEALED_CHUNK_BYTES as usize;
        while !bytes.is_empty() {
            // A full chunk followed by at least one byte is not the last.
            if self.buffer.len() == full {
                out.extend_from_slice(&self.open_buffered(false)?);
            }
            let take = (full - self.buffer.len()).min(bytes.len());
            self.buffer.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
        Ok(out)
    }

    /// The plaintext of the last chunk; fails if the file ended early.
    pub fn finish(mut self) -> Result<Vec<u8>, SealError> {
        if self.buffer.len() < TAG_BYTES as usize {
            return Err(SealError::Truncated);
        }
        self.open_buffered(true).map_err(|e| match e {
            // A chunk that fails as the last one was most likely cut short.
            SealError::Forged(_) => SealError::Truncated,
            other => other,
        })
    }

    fn open_buffered(&mut self, last: bool) -> Result<Vec<u8>, SealError> {
        let plain = self
            .cipher
            .decrypt(&nonce(self.index, last), self.buffer.as_slice())
            .map_err(|_| SealError::Forged(self.index))?;
        self.buffer.clear();
        self.index += 1;
        Ok(plain)
    }
}

/// Opens a whole sealed file held in memory.
pub fn open(key: &[u8; 32], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
    let mut opener = Opener::new(key);
    let mut plain = opener.push(sealed)?;
    plain.extend_from_slice(&opener.finish()?);
    Ok(plain)
}

/// The sealed bytes `[offset, offset + len)` of a file, produced from its plaintext chunks: what
/// an upload that resumes at `offset` sends next. `chunk(i)` returns plaintext chunk `i`.
pub fn sealed_range(
    key: &[u8; 32],
    plain_len: u64,
    offset: u64,
    len: u64,
    mut chunk: impl FnMut(u64) -> std::io::Result<Vec<u8>>,
) -> std::io::Result<Vec<u8>> {
    let total = sealed_len(plain_len);
    let end = offset.saturating_add(len).min(total);
    let chunks = chunk_count(plain_len);
    let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
    let mut index = offset / SEALED_CHUNK_BYTES;
    while index < chunks && index * SEALED_CHUNK_BYTES < end {
        let plain = chunk(index)?;
        let sealed = seal_chunk(key, index, &plain, index + 1 == chunks)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let chunk_start = index * SEALED_CHUNK_BYTES;
        let from = offset.saturating_sub(chunk_start) as usize;
        let to = ((end - chunk_start) as usize).min(sealed.len());
        out.extend_from_slice(&sealed[from.min(to)..to]);
        index += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    fn file(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn files_of_every_awkward_size_round_trip_through_any_split_of_the_stream() {
        let c = CHUNK_BYTES as usize;
        for len in [0, 1, c - 1, c, c + 1, 3 * c, 3 * c + 17] {
            let plain = file(len);
            let sealed = seal(&KEY, &plain);
            assert_eq!(sealed.len() as u64, sealed_len(len as u64), "len {len}");
            assert_eq!(plain_len(sealed.len() as u64), Some(len as u64));
            assert_eq!(open(&KEY, &sealed), Ok(plain.clone()), "len {len}");
            for step in [1usize, 1000, c + 16, c + 17] {
                let mut opener = Opener::new(&KEY);
                let mut out = Vec::new();
                for piece in sealed.chunks(step) {
                    out.extend(opener.push(piece).expect("push"));
                }
                out.extend(opener.finish().expect("finish"));
                assert_eq!(out, plain, "len {len} step {step}");
            }
        }
    }

    #[test]
    fn a_cut_reordered_extended_or_flipped_file_does_not_open() {
        let plain = file(3 * CHUNK_BYTES as usize + 5);
        let sealed = seal(&KEY, &plain);
        let full = SEALED_CHUNK_BYTES as usize;
        // Cut at a chunk boundary: the now-last chunk was not sealed as last.
        assert_eq!(open(&KEY, &sealed[..2 * full]), Err(SealError::Truncated));
        assert_eq!(open(&KEY, &sealed[..10]), Err(SealError::Truncated));
        let mut swapped = sealed.clone();
        swapped[..full].copy_from_slice(&sealed[full..2 * full]);
        swapped[full..2 * full].copy_from_slice(&sealed[..full]);
        assert_eq!(open(&KEY, &swapped), Err(SealError::Forged(0)));
        let mut longer = sealed.clone();
        longer.push(0);
        assert!(open(&KEY, &longer).is_err(), "a byte appended makes the last chunk fail");
        let mut after_full = seal(&KEY, &file(CHUNK_BYTES as usize));
        after_full.extend_from_slice(&[0; 16]);
        assert_eq!(
            open(&KEY, &after_full),
            Err(SealError::Forged(0)),
            "the full last chunk was not sealed as one followed by more"
        );
        let mut flipped = sealed.clone();
        flipped[full + 3] ^= 1;
        assert_eq!(open(&KEY, &flipped), Err(SealError::Forged(1)));
        assert_eq!(open(&[8; 32], &sealed), Err(SealError::Forged(0)), "another key");
        assert_eq!(plain_len(SEALED_CHUNK_BYTES + 3), None, "no sealed file has that size");
    }

    #[test]
    fn any_range_of_the_sealed_file_is_the_same_bytes_sealing_it_whole_gives() {
        let plain = file(2 * CHUNK_BYTES as usize + 100);
        let sealed = seal(&KEY, &plain);
        let chunk = |i: u64| {
            let start = (i * CHUNK_BYTES) as usize;
            Ok(plain[start..(start + CHUNK_BYTES as usize).min(plain.len())].to_vec())
        };
        let total = sealed.len() as u64;
        for (offset, len) in [(0, total), (1, 10), (SEALED_CHUNK_BYTES - 1, 2), (total - 5, 100), (total, 10)] {
            let got = sealed_range(&KEY, plain.len() as u64, offset, len, chunk).expect("range");
            let end = (offset + len).min(total) as usize;
            assert_eq!(got, sealed[offset as usize..end], "offset {offset} len {len}");
        }
    }
}
