//! `anytime send-file` and `anytime download`: files in chats. The file is sealed here with a
//! fresh key (`anytime_media::seal`), uploaded as an opaque blob in resumable requests, and
//! announced in an MLS message that carries the key and the sealed file's SHA-256; a download
//! fetches the blob (resuming with a range request), checks the digest, then opens it.
//!
//! An upload in progress is remembered in the profile (`upload:<file fingerprint>`), so running
//! the same command again after a crash or a cut connection continues where the server stopped.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use anytime_client::content::{self, Content};
use anytime_media::seal::{self, CHUNK_BYTES};
use anytime_proto::blob::{BlobStatus, NewBlob};
use anytime_proto::limits::{BLOB_PART_BYTES, BLOB_UPLOAD_BYTES_MAX};
use anytime_proto::{ConvId, ErrorCode, MsgId};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::wallet::{Api, Failure};
use super::{hex, Session};
use crate::profile::human_size;

/// Parts per upload request: 4 MiB, well inside `BLOB_UPLOAD_BYTES_MAX`, large enough that
/// per-request costs vanish and small enough that a cut connection loses little.
const PARTS_PER_REQUEST: u64 = 4;
const _: () = assert!(PARTS_PER_REQUEST * BLOB_PART_BYTES <= BLOB_UPLOAD_BYTES_MAX);

/// A download may stall this long between bytes before it is given up (and can be resumed).
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// An upload this profile started, kept until its message is sent.
#[derive(Serialize, Deserialize)]
struct PendingUpload {
    blob: String,
    key: String,
    conv: ConvId,
    size: u64,
}

fn progress(len: u64, verb: &str, name: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let template = format!("{verb} {{msg}} [{{bar:30}}] {{bytes}}/{{total_bytes}} {{bytes_per_sec}} eta {{eta}}");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(name.to_owned());
    bar
}

fn hex_key(key: &[u8; 32]) -> String {
    hex(key)
}

fn key_of_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(key)
}

/// A fresh 256-bit key from the operating system's generator.
fn fresh_key() -> [u8; 32] {
    let (a, b) = (anytime_client_tokio::msg_id(), anytime_client_tokio::msg_id());
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(&a.0);
    key[16..].copy_from_slice(&b.0);
    key
}

/// The MIME type people expect for a file name (the common ones; anything else is a file).
fn guess_mime(path: &Path) -> &'static str {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default().to_ascii_lowercase();
    match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "mp4" | "m4v" => "video/mp4",
        "mov" => "video/quicktime",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        "m4a" => "audio/mp4",
        "ogg" | "oga" | "opus" => "audio/ogg",
        "wav" => "audio/wav",
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

/// Plaintext chunk `index` of `file` (`plain_len` bytes).
fn read_chunk(file: &mut File, plain_len: u64, index: u64) -> std::io::Result<Vec<u8>> {
    let start = index * CHUNK_BYTES;
    let len = CHUNK_BYTES.min(plain_len.saturating_sub(start));
    file.seek(SeekFrom::Start(start))?;
    let mut chunk = vec![0; len as usize];
    file.read_exact(&mut chunk)?;
    Ok(chunk)
}

/// SHA-256 of the sealed file, sealing it chunk by chunk (constant memory).
fn sealed_digest(path: &Path, key: &[u8; 32], plain_len: u64) -> anyhow::Result<[u8; 32]> {
    let mut file = File::open(path).with_context(|| format!("while opening {}", path.display()))?;
    let mut hash = Sha256::new();
    let chunks = seal::chunk_count(plain_len);
    for index in 0..chunks {
        let plain =
            read_chunk(&mut file, plain_len, index).with_context(|| format!("while reading {}", path.display()))?;
        hash.update(seal::seal_chunk(key, index, &plain, index + 1 == chunks)?);
    }
    Ok(hash.finalize().into())
}

/// The profile key remembering an upload of this file (path, size and modification time), so
/// a changed file starts over.
/// `how` names what is done to the file before it is sent (filter, sliders), so another choice
/// starts over.
fn upload_key(path: &Path, meta: &std::fs::Metadata, conv: ConvId, how: &str) -> String {
    let modified = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
    let mut hash = Sha256::new();
    hash.update(path.to_string_lossy().as_bytes());
    hash.update(meta.len().to_be_bytes());
    hash.update(modified.map_or(0, |d| d.as_nanos()).to_be_bytes());
    hash.update(conv.0.to_be_bytes());
    hash.update(how.as_bytes());
    format!("upload:{}", hex(&hash.finalize()[..16]))
}

/// `anytime send-file CHAT PATH`.
/// What `anytime send-file` was told besides the chat and the file.
pub(super) struct SendOptions {
    pub(super) caption: String,
    pub(super) mime: Option<String>,
    pub(super) limit_rate: Option<u64>,
    /// Send a photo's bytes as they are (metadata included).
    pub(super) as_file: bool,
    pub(super) filter: anytime_media::filter::Filter,
    pub(super) adjust: anytime_media::filter::Adjust,
}

/// A photo larger than this is sent as a file: it is read whole to be decoded. Bytes.
const PHOTO_FILE_BYTES_MAX: u64 = 200 * 1024 * 1024;

/// What a photo becomes before it is sent: the prepared file (upright, scaled, no metadata),
/// with its dimensions, thumbnail and placeholder.
struct PhotoFile {
    path: PathBuf,
    width: u32,
    height: u32,
    thumbnail: Vec<u8>,
    placeholder: String,
}

impl Drop for PhotoFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Runs the photo pipeline on `path` into a file of its own (same name for the same source,
/// so a resumed upload seals the same bytes).
fn prepare_photo(
    path: &Path,
    remembered: &str,
    filter: anytime_media::filter::Filter,
    adjust: anytime_media::filter::Adjust,
) -> anyhow::Result<(PhotoFile, &'static str)> {
    let bytes = std::fs::read(path).with_context(|| format!("while reading {}", path.display()))?;
    let prepared = anytime_media::photo::prepare_filtered(&bytes, filter, adjust).map_err(|error| {
        anyhow::anyhow!(
            "{} cannot be sent as a photo: {error}; send it with --as-file to send its bytes as they are",
            path.display()
        )
    })?;
    let out = std::env::temp_dir().join(format!("anytime-{}.photo", remembered.replace(':', "-")));
    std::fs::write(&out, &prepared.bytes).with_context(|| format!("while writing {}", out.display()))?;
    let photo = PhotoFile {
        path: out,
        width: prepared.width,
        height: prepared.height,
        thumbnail: prepared.thumbnail,
        placeholder: prepared.placeholder,
    };
    Ok((photo, prepared.mime))
}

/// `name` with the extension `mime` is written with (a WebP sent as JPEG is `x.jpg`).
fn renamed(name: &str, mime: &str) -> String {
    let ext = match mime {
        "image/jpeg" => "jpg",
        "image/png" => "png",
        "image/gif" => "gif",
        _ => return name.to_owned(),
    };
    let stem = name.rsplit_once('.').map_or(name, |(stem, _)| stem);
    format!("{stem}.{ext}")
}

pub(super) async fn send_file(s: &mut Session, conv: ConvId, path: &Path, options: SendOptions) -> anyhow::Result<()> {
    let SendOptions { caption, mime, limit_rate, as_file, filter, adjust } = options;
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !meta.is_file() {
        bail!("{} is not a file", path.display());
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "file".into());
    let name: String = name.chars().take(anytime_proto::limits::ATTACHMENT_NAME_BYTES_MAX as usize / 4).collect();
    let mut mime = mime.unwrap_or_else(|| guess_mime(path).to_owned());
    let remembered = upload_key(path, &meta, conv, &format!("{as_file} {filter:?} {adjust:?}"));
    let is_photo = matches!(mime.as_str(), "image/jpeg" | "image/png" | "image/webp" | "image/gif");
    let photo = match is_photo && !as_file {
        true if meta.len() <= PHOTO_FILE_BYTES_MAX => {
            let (photo, sent_as) = prepare_photo(path, &remembered, filter, adjust)?;
            mime = sent_as.to_owned();
            Some(photo)
        }
        true => {
            s.out.note(&format!("{name} is too large to prepare as a photo; it is sent as a file"));
            None
        }
        false => None,
    };
    let name = if photo.is_some() { renamed(&name, &mime) } else { name };
    let source = photo.as_ref().map_or(path, |p| p.path.as_path());
    let plain_len = std::fs::metadata(source).with_context(|| format!("cannot read {}", source.display()))?.len();
    let api = Api::of(s)?;
    let store = s.client.store();
    let pending: Option<PendingUpload> = store.get_text(&remembered)?.and_then(|text| serde_json::from_str(&text).ok());
    let mut resumed = None;
    if let Some(p) = pending.filter(|p| p.conv == conv && p.size == plain_len) {
        match Api::json::<BlobStatus>(api.request(Method::GET, &format!("/v1/blobs/{}/status", p.blob))).await {
            Ok(status) => resumed = key_of_hex(&p.key).map(|key| (key, status)),
            // Collected (abandoned too long) or from another account: start over.
            Err(f) if f.code() == Some(ErrorCode::BlobNotFound) => {}
            Err(f) => return Err(f.explain("asking how far the earlier upload got")),
        }
    }
    let (key, mut status) = match resumed {
        Some((key, status)) => {
            s.out.note(&format!(
                "resuming the upload of {name} at {} of {}",
                human_size(status.received),
                human_size(status.size)
            ));
            (key, status)
        }
        None => {
            let key = fresh_key();
            let body = NewBlob { conv, size: seal::sealed_len(plain_len) };
            let status: BlobStatus = match Api::json(api.request(Method::POST, "/v1/blobs").json(&body)).await {
                Ok(status) => status,
                Err(f) if f.code() == Some(ErrorCode::PayloadTooLarge) => bail!(
                    "{} ({}) is larger than this server accepts for one file; send a smaller one or split it",
                    path.display(),
                    human_size(plain_len)
                ),
                Err(f) if f.code() == Some(ErrorCode::ConversationNotFound) => {
                    bail!("there is no chat {conv} you are a member of; `anytime chats` lists yours")
                }
                Err(f) => return Err(f.explain("making room for the file")),
            };
            let record = PendingUpload { blob: status.id.clone(), key: hex_key(&key), conv, size: plain_len };
            store.set(&remembered, serde_json::to_string(&record)?.as_bytes())?;
            (key, status)
        }
    };
    let digest = sealed_digest(source, &key, plain_len)?;
    upload(&api, source, &key, plain_len, &mut status, limit_rate, &name).await?;
    let attachment = content::Attachment {
        blob: status.id.clone(),
        key,
        digest,
        size: plain_len,
        name: name.clone(),
        mime: mime.clone(),
        caption,
        width: photo.as_ref().map_or(0, |p| p.width),
        height: photo.as_ref().map_or(0, |p| p.height),
        duration_ms: 0,
        thumbnail: photo.as_ref().map(|p| p.thumbnail.clone()).unwrap_or_default(),
        placeholder: photo.as_ref().map(|p| p.placeholder.clone()).unwrap_or_default(),
    };
    let (msg_id, seq) = s.send_quietly(conv, Content::Attachment(Box::new(attachment))).await.with_context(|| {
        format!(
            "{name} is uploaded, but its message could not be sent to {conv}; run the same command again to send it"
        )
    })?;
    s.client.store().remove(&remembered)?;
    s.out.print(
        format!("sent {name} ({}) as {} (#{seq})", human_size(plain_len), hex(&msg_id.0)),
        json!({"msg_id": hex(&msg_id.0), "seq": seq, "conv": conv, "blob": status.id, "name": name,
            "mime": mime, "size": plain_len, "width": photo.as_ref().map(|p| p.width),
            "height": photo.as_ref().map(|p| p.height)}),
    )
}

/// Sends the sealed file from `status.received` on, in whole parts, at most `limit_rate` bytes a
/// second.
async fn upload(
    api: &Api,
    path: &Path,
    key: &[u8; 32],
    plain_len: u64,
    status: &mut BlobStatus,
    limit_rate: Option<u64>,
    name: &str,
) -> anyhow::Result<()> {
    let mut file = File::open(path).with_context(|| format!("while opening {}", path.display()))?;
    let bar = progress(status.size, "uploading", name);
    bar.set_position(status.received);
    let started = Instant::now();
    let first = status.received;
    let per_request = match limit_rate {
        // A slow link sends one part at a time, so the rate holds within a part.
        Some(_) => status.part_bytes.max(1),
        None => PARTS_PER_REQUEST * status.part_bytes.max(1),
    }
    .min(status.upload_bytes_max);
    while !status.complete() {
        let offset = status.received;
        let len = per_request.min(status.size - offset);
        let body = seal::sealed_range(key, plain_len, offset, len, |i| read_chunk(&mut file, plain_len, i))
            .with_context(|| format!("while reading {}", path.display()))?;
        let request = api.request(Method::PUT, &format!("/v1/blobs/{}?offset={offset}", status.id)).body(body);
        match Api::json::<BlobStatus>(request).await {
            Ok(next) => *status = next,
            Err(f) if f.code() == Some(ErrorCode::OffsetMismatch) => {
                // An earlier request landed after all: continue from where the server is.
                let asked = api.request(Method::GET, &format!("/v1/blobs/{}/status", status.id));
                *status = Api::json(asked).await.map_err(|f| f.explain("asking how far the upload got"))?;
            }
            Err(Failure::Network(error)) => {
                bar.abandon();
                bail!(
                    "the upload stopped at {} of {} ({error}); run the same command again to continue from there",
                    human_size(status.received),
                    human_size(status.size)
                );
            }
            Err(f) if f.code() == Some(ErrorCode::QuotaExceeded) => return Err(f.explain("uploading")),
            Err(f) => {
                bar.abandon();
                return Err(f.explain("uploading").context("run the same command again to continue"));
            }
        }
        bar.set_position(status.received);
        if let Some(rate) = limit_rate.filter(|r| *r > 0) {
            let due = Duration::from_secs_f64((status.received - first) as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
    bar.finish_and_clear();
    Ok(())
}

/// A file name from a message made safe to create here: its last component, without leading
/// dots, never empty.
fn safe_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = last.chars().filter(|c| !c.is_control()).collect();
    let cleaned = cleaned.trim_start_matches('.').trim();
    if cleaned.is_empty() {
        "file".into()
    } else {
        cleaned.to_owned()
    }
}

/// `name` in `dir`, or `name (1)`, `name (2)`… when taken.
fn free_path(dir: &Path, name: &str) -> PathBuf {
    let candidate = dir.join(name);
    if !candidate.exists() {
        return candidate;
    }
    let (stem, ext) = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => (stem.to_owned(), format!(".{ext}")),
        _ => (name.to_owned(), String::new()),
    };
    (1..).map(|n| dir.join(format!("{stem} ({n}){ext}"))).find(|p| !p.exists()).unwrap_or(candidate)
}

/// `anytime download CHAT MESSAGE`.
pub(super) async fn download(
    s: &mut Session,
    conv: ConvId,
    msg_id: MsgId,
    output: Option<PathBuf>,
    cwd: &Path,
) -> anyhow::Result<()> {
    let entry = s.client.store().entry(conv, msg_id)?.with_context(|| {
        format!("no message {msg_id} in chat {conv} on this device; `anytime history {conv}` lists them")
    })?;
    let Some(attachment) = entry.attachment else {
        bail!("message {msg_id} has no file (it is a {} message)", entry.kind.name());
    };
    let output = output.unwrap_or_else(|| free_path(cwd, &safe_name(&attachment.name)));
    let part = PathBuf::from(format!("{}.anytime-part", output.display()));
    let api = Api::of(s)?;
    fetch_sealed(&api, &attachment, &part).await?;
    open_sealed(&attachment, &part, &output)?;
    std::fs::remove_file(&part).with_context(|| format!("while removing {}", part.display()))?;
    let plain_sha256 = {
        let mut file = File::open(&output)?;
        let mut hash = Sha256::new();
        std::io::copy(&mut file, &mut hash)?;
        hex(&hash.finalize())
    };
    // Tell the server this device has it; once every recipient did, the server deletes it.
    let told = api.request(Method::POST, &format!("/v1/blobs/{}/fetched", attachment.blob));
    if let Err(f) = Api::send(told).await {
        tracing::info!(error = %f.explain("saying the file was fetched"), "the server keeps the blob until its retention ends");
    }
    s.out.print(
        format!("saved {} ({}, sha256 {plain_sha256})", output.display(), human_size(attachment.size)),
        json!({"path": output, "name": attachment.name, "mime": attachment.mime, "size": attachment.size,
            "sha256": plain_sha256, "msg_id": hex(&msg_id.0)}),
    )
}

/// Appends the sealed blob to `part` from where an earlier download stopped.
async fn fetch_sealed(api: &Api, attachment: &content::Attachment, part: &Path) -> anyhow::Result<()> {
    let total = attachment.sealed_size();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(part)
        .with_context(|| format!("while creating {}", part.display()))?;
    let mut have = file.metadata()?.len();
    if have > total {
        file.set_len(0)?;
        have = 0;
    }
    if have == total {
        return Ok(());
    }
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(READ_TIMEOUT)
        .build()
        .context("while setting up HTTP")?;
    let mut request = http.get(format!("{}/v1/blobs/{}", api.base, attachment.blob)).bearer_auth(&api.token);
    if have > 0 {
        request = request.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    let mut response = Api::send(request).await.map_err(|f| match f.code() {
        Some(ErrorCode::BlobNotFound) => anyhow::anyhow!(
            "the server no longer has this file (blob_not_found): it keeps files until every recipient fetched them or retention ended; ask the sender to send it again"
        ),
        _ => f.explain("downloading the file"),
    })?;
    if have > 0 && response.status() != reqwest::StatusCode::PARTIAL_CONTENT {
        // The server sent the whole file after all.
        file.set_len(0)?;
        have = 0;
    }
    let bar = progress(total, "downloading", &attachment.name);
    bar.set_position(have);
    loop {
        match response.chunk().await {
            Ok(Some(bytes)) => {
                file.write_all(&bytes).with_context(|| format!("while writing {}", part.display()))?;
                have += bytes.len() as u64;
                bar.set_position(have);
            }
            Ok(None) => break,
            Err(error) => {
                bar.abandon();
                bail!(
                    "the download stopped at {} of {} ({error}); run the same command again to continue",
                    human_size(have),
                    human_size(total)
                );
            }
        }
    }
    file.sync_all()?;
    bar.finish_and_clear();
    if have != total {
        bail!("the server sent {have} of {total} bytes; run the same command again to continue");
    }
    Ok(())
}

/// Checks the sealed file's digest, then opens it into `output` (through a temporary file, so a
/// failure leaves no half-written output).
fn open_sealed(attachment: &content::Attachment, part: &Path, output: &Path) -> anyhow::Result<()> {
    let mut hash = Sha256::new();
    std::io::copy(&mut File::open(part)?, &mut hash)?;
    if <[u8; 32]>::from(hash.finalize()) != attachment.digest {
        std::fs::remove_file(part)?;
        bail!("the downloaded file is not what was sent (its SHA-256 differs); it was deleted — run the command again");
    }
    let tmp = PathBuf::from(format!("{}.anytime-open", output.display()));
    let result = (|| -> anyhow::Result<()> {
        let mut sealed = File::open(part)?;
        let mut out = File::create(&tmp).with_context(|| format!("while creating {}", tmp.display()))?;
        let mut opener = seal::Opener::new(&attachment.key);
        let mut buffer = vec![0u8; 256 * 1024];
        loop {
            let n = sealed.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            out.write_all(&opener.push(&buffer[..n])?)?;
        }
        out.write_all(&opener.finish()?)?;
        out.sync_all()?;
        Ok(())
    })();
    if let Err(error) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(error.context("while opening the downloaded file"));
    }
    std::fs::rename(&tmp, output).with_context(|| format!("while saving {}", output.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_a_message_cannot_leave_the_directory() {
        assert_eq!(safe_name("../../etc/passwd"), "passwd");
        assert_eq!(safe_name("..\\boot.ini"), "boot.ini");
        assert_eq!(safe_name(".bashrc"), "bashrc");
        assert_eq!(safe_name(".."), "file");
        assert_eq!(safe_name("a\u{7}b.txt"), "ab.txt");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a.txt"), b"x").expect("write");
        std::fs::write(dir.path().join("a (1).txt"), b"x").expect("write");
        assert_eq!(free_path(dir.path(), "a.txt"), dir.path().join("a (2).txt"));
        assert_eq!(free_path(dir.path(), "b"), dir.path().join("b"));
        assert_eq!(key_of_hex(&hex_key(&[9; 32])), Some([9; 32]));
    }
}
