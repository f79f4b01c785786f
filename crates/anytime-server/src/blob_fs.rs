//! Sealed attachment bytes as files (`anytime_media::BlobBytes`), the default blob store: one file
//! per blob under `<dir>/<first two hex digits>/<id>`, written at offsets and fsynced before an
//! upload request is answered. Works on any filesystem; nothing to install.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anytime_media::blob::{id_to_hex, BlobId};
use anytime_media::{BlobBytes, BlobResult, BlobStoreError};
use async_trait::async_trait;

pub(crate) use anytime_proto::limits::BLOB_READ_BYTES_MAX as READ_BYTES_MAX;

pub struct FsBlobBytes {
    dir: PathBuf,
}

fn io(error: std::io::Error) -> BlobStoreError {
    BlobStoreError::Backend(error.to_string())
}

impl FsBlobBytes {
    pub fn open(dir: &Path) -> std::io::Result<FsBlobBytes> {
        std::fs::create_dir_all(dir)?;
        Ok(FsBlobBytes { dir: dir.to_owned() })
    }

    fn path(&self, id: BlobId) -> PathBuf {
        let hex = id_to_hex(id);
        self.dir.join(&hex[..2]).join(hex)
    }
}

fn write_at(path: &Path, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
    let shard = path.parent().ok_or_else(|| std::io::Error::other("a blob path has a parent"))?;
    let fresh = !path.exists();
    if fresh {
        std::fs::create_dir_all(shard)?;
    }
    let mut file = OpenOptions::new().create(true).write(true).truncate(false).open(path)?;
    // What lay at and after `offset` is replaced (a request sent again after a lost answer).
    file.set_len(offset)?;
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(bytes)?;
    file.sync_data()?;
    if fresh {
        // The new file's directory entry must be durable too.
        File::open(shard)?.sync_all()?;
    }
    Ok(())
}

fn read(path: &Path, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    let size = file.metadata()?.len();
    let start = offset.min(size);
    let len = len.min(size - start).min(READ_BYTES_MAX);
    file.seek(SeekFrom::Start(start))?;
    let mut out = vec![0; len as usize];
    file.read_exact(&mut out)?;
    Ok(out)
}

#[async_trait]
impl BlobBytes for FsBlobBytes {
    async fn write_at(&self, id: BlobId, offset: u64, bytes: &[u8]) -> BlobResult<()> {
        let path = self.path(id);
        let bytes = bytes.to_vec();
        tokio::task::spawn_blocking(move || write_at(&path, offset, &bytes))
            .await
            .map_err(|e| BlobStoreError::Backend(e.to_string()))?
            .map_err(io)
    }

    async fn read(&self, id: BlobId, offset: u64, len: u64) -> BlobResult<Vec<u8>> {
        let path = self.path(id);
        match tokio::task::spawn_blocking(move || read(&path, offset, len)).await {
            Err(e) => Err(BlobStoreError::Backend(e.to_string())),
            Ok(Err(e)) if e.kind() == ErrorKind::NotFound => Err(BlobStoreError::NotFound),
            Ok(result) => result.map_err(io),
        }
    }

    async fn delete(&self, id: BlobId) -> BlobResult<()> {
        let path = self.path(id);
        match tokio::task::spawn_blocking(move || std::fs::remove_file(path)).await {
            Err(e) => Err(BlobStoreError::Backend(e.to_string())),
            Ok(Err(e)) if e.kind() == ErrorKind::NotFound => Ok(()),
            Ok(result) => result.map_err(io),
        }
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_the_blob_bytes_conformance_cases() {
        let dirs = std::sync::Mutex::new(Vec::new());
        anytime_media::conformance::run_bytes(|| {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let store = super::FsBlobBytes::open(dir.path()).expect("open");
            dirs.lock().expect("not poisoned").push(dir);
            async move { store }
        })
        .await;
    }
}
