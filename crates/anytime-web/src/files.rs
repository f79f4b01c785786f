//! Files in the browser: the page reads a picked file in chunks and this seals each one
//! ([`FileSealer`]), or feeds a download's bytes to [`FileOpener`], which opens them and checks
//! the sealed file's digest. The cryptography is `anytime_media::seal`, the same as the CLI's;
//! the page only moves bytes (fetch) and shows progress.

use anytime_client::content::Attachment;
use anytime_media::seal::{self, Opener, SealError};
use sha2::{Digest, Sha256};
use wasm_bindgen::prelude::*;

use crate::js_err;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Seals a file of a known size chunk by chunk, in order, under a fresh key.
#[wasm_bindgen]
pub struct FileSealer {
    key: [u8; 32],
    size: u64,
    index: u64,
    hash: Sha256,
}

#[wasm_bindgen]
impl FileSealer {
    /// A sealer for a file of `size` bytes, with a fresh key from the browser's generator.
    #[wasm_bindgen(constructor)]
    pub fn new(size: f64) -> Result<FileSealer, JsValue> {
        FileSealer::new_checked(size).map_err(js_err)
    }

    /// Plaintext bytes per chunk: give [`FileSealer::seal_next`] exactly this many (less only
    /// for the last chunk).
    #[wasm_bindgen(js_name = chunkBytes)]
    pub fn chunk_bytes() -> u32 {
        seal::CHUNK_BYTES as u32
    }

    #[wasm_bindgen(js_name = sealedSize)]
    pub fn sealed_size(&self) -> f64 {
        seal::sealed_len(self.size) as f64
    }

    /// Seals the next chunk of the file.
    #[wasm_bindgen(js_name = sealNext)]
    pub fn seal_next(&mut self, plain: &[u8]) -> Result<Vec<u8>, JsValue> {
        self.seal_next_checked(plain).map_err(js_err)
    }

    /// Whether every chunk is sealed.
    pub fn done(&self) -> bool {
        self.index == seal::chunk_count(self.size)
    }

    /// The key, 64 hex digits, for the chat message.
    #[wasm_bindgen(js_name = keyHex)]
    pub fn key_hex(&self) -> String {
        hex(&self.key)
    }

    /// SHA-256 of everything sealed so far, 64 hex digits: the digest once `done()`.
    #[wasm_bindgen(js_name = digestHex)]
    pub fn digest_hex(&self) -> String {
        hex(&self.hash.clone().finalize())
    }
}

/// Opens a downloading sealed file and checks it is the one the message names.
#[wasm_bindgen]
pub struct FileOpener {
    opener: Option<Opener>,
    attachment: Attachment,
    hash: Sha256,
    received: u64,
}

impl FileOpener {
    pub(crate) fn new(attachment: Attachment) -> FileOpener {
        FileOpener { opener: Some(Opener::new(&attachment.key)), attachment, hash: Sha256::new(), received: 0 }
    }
}

fn open_error(error: SealError) -> String {
    format!("the file cannot be opened: {error}")
}

#[wasm_bindgen]
impl FileOpener {
    pub fn blob(&self) -> String {
        self.attachment.blob.clone()
    }

    pub fn name(&self) -> String {
        self.attachment.name.clone()
    }

    pub fn mime(&self) -> String {
        self.attachment.mime.clone()
    }

    #[wasm_bindgen(js_name = sealedSize)]
    pub fn sealed_size(&self) -> f64 {
        self.attachment.sealed_size() as f64
    }

    /// The plaintext the downloaded `bytes` complete.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<u8>, JsValue> {
        self.push_checked(bytes).map_err(js_err)
    }

    /// The rest of the plaintext, once the whole sealed file arrived and its digest matches.
    pub fn finish(&mut self) -> Result<Vec<u8>, JsValue> {
        self.finish_checked().map_err(js_err)
    }
}

// The rules, with plain errors (a `JsValue` exists only in a browser, so tests run these).
impl FileSealer {
    fn new_checked(size: f64) -> Result<FileSealer, String> {
        if !(size.is_finite() && (0.0..=2f64.powi(53)).contains(&size)) {
            return Err("not a file size".into());
        }
        let mut key = [0u8; 32];
        getrandom_02::getrandom(&mut key).map_err(|e| e.to_string())?;
        Ok(FileSealer { key, size: size as u64, index: 0, hash: Sha256::new() })
    }

    fn seal_next_checked(&mut self, plain: &[u8]) -> Result<Vec<u8>, String> {
        let chunks = seal::chunk_count(self.size);
        if self.index >= chunks {
            return Err("the whole file is sealed already".into());
        }
        let last = self.index + 1 == chunks;
        let expected = if last { self.size - self.index * seal::CHUNK_BYTES } else { seal::CHUNK_BYTES };
        if plain.len() as u64 != expected {
            return Err(format!("chunk {} has {} bytes, not {expected}", self.index, plain.len()));
        }
        let sealed = seal::seal_chunk(&self.key, self.index, plain, last).map_err(|e| e.to_string())?;
        self.hash.update(&sealed);
        self.index += 1;
        Ok(sealed)
    }
}

impl FileOpener {
    fn push_checked(&mut self, bytes: &[u8]) -> Result<Vec<u8>, String> {
        let opener = self.opener.as_mut().ok_or("the download is finished")?;
        self.received += bytes.len() as u64;
        if self.received > self.attachment.sealed_size() {
            return Err("the server sent more than the file holds".into());
        }
        self.hash.update(bytes);
        opener.push(bytes).map_err(open_error)
    }

    fn finish_checked(&mut self) -> Result<Vec<u8>, String> {
        let opener = self.opener.take().ok_or("the download is finished")?;
        if <[u8; 32]>::from(self.hash.clone().finalize()) != self.attachment.digest {
            return Err("the downloaded file is not what was sent (its SHA-256 differs)".into());
        }
        opener.finish().map_err(open_error)
    }
}

/// The attachment a page names by its parts (`sendAttachment`), checked as a receiver would.
pub(crate) fn attachment(fields: AttachmentFields) -> Result<Attachment, String> {
    let bytes32 = |text: &str| -> Result<[u8; 32], String> {
        let mut out = [0u8; 32];
        if text.len() != 64 || !text.is_ascii() {
            return Err("a key or digest is 64 hex digits".into());
        }
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| "not hex".to_owned())?;
        }
        Ok(out)
    };
    let attachment = Attachment {
        blob: fields.blob,
        key: bytes32(&fields.key)?,
        digest: bytes32(&fields.digest)?,
        size: fields.size,
        name: fields.name,
        mime: fields.mime,
        caption: fields.caption,
        width: 0,
        height: 0,
        duration_ms: 0,
        thumbnail: Vec::new(),
        placeholder: String::new(),
    };
    if !attachment.acceptable() {
        return Err("the file's name, type or size is out of bounds".into());
    }
    Ok(attachment)
}

/// What the page tells about a sealed, uploaded file.
#[derive(Debug, Clone, serde::Deserialize)]
pub(crate) struct AttachmentFields {
    pub blob: String,
    pub key: String,
    pub digest: String,
    pub size: u64,
    pub name: String,
    pub mime: String,
    #[serde(default)]
    pub caption: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_sealer_makes_the_opener_opens_and_a_wrong_digest_is_refused() {
        let plain: Vec<u8> = (0..(seal::CHUNK_BYTES as usize * 2 + 7)).map(|i| i as u8).collect();
        let mut sealer = FileSealer::new_checked(plain.len() as f64).expect("sealer");
        let mut sealed = Vec::new();
        for chunk in plain.chunks(seal::CHUNK_BYTES as usize) {
            sealed.extend(sealer.seal_next_checked(chunk).expect("seal"));
        }
        assert!(sealer.seal_next_checked(&[1]).is_err(), "nothing after the last chunk");
        assert!(sealer.done());
        assert_eq!(sealed.len() as f64, sealer.sealed_size());
        let fields = |digest: String| AttachmentFields {
            blob: "ab".repeat(16),
            key: sealer.key_hex(),
            digest,
            size: plain.len() as u64,
            name: "a.bin".into(),
            mime: "application/octet-stream".into(),
            caption: String::new(),
        };
        let mut opener = FileOpener::new(attachment(fields(sealer.digest_hex())).expect("fields"));
        let mut out = Vec::new();
        for piece in sealed.chunks(10_000) {
            out.extend(opener.push_checked(piece).expect("push"));
        }
        out.extend(opener.finish_checked().expect("finish"));
        assert_eq!(out, plain);
        let mut wrong = FileOpener::new(attachment(fields("00".repeat(32))).expect("fields"));
        wrong.push_checked(&sealed).expect("push");
        assert!(wrong.finish_checked().is_err(), "a digest that does not match");
        assert!(attachment(fields("zz".repeat(32))).is_err());
    }
}
