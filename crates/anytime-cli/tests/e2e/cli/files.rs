//! Files in chats, end to end: real `anytime` processes and a real server. A file sent from one
//! terminal arrives in another byte for byte while the server holds only ciphertext; an upload
//! killed halfway resumes; the server collects a blob once its recipients fetched it; someone
//! outside the chat cannot tell a blob from a missing one.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{contains, Device};
use crate::support::Harness;

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// `len` bytes no compressor shrinks, with `marker` written every 64 KiB.
fn file_with_marker(len: usize, marker: &str) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut bytes: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    for at in (0..len.saturating_sub(marker.len())).step_by(64 * 1024) {
        bytes[at..at + marker.len()].copy_from_slice(marker.as_bytes());
    }
    bytes
}

/// Every file under `dir`, recursively.
pub(super) fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return found };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

fn blob_dir(h: &Harness) -> PathBuf {
    h.path().join("data").join("blobs")
}

fn message_of(events: &[Value]) -> Value {
    events.iter().find(|e| e["type"] == "message" && e["kind"] == "attachment").cloned().unwrap_or_else(|| {
        panic!("no attachment message in {events:?}");
    })
}

#[test]
fn a_file_sent_from_the_cli_arrives_byte_for_byte_and_the_server_keeps_only_ciphertext_until_fetched() {
    let h = Harness::start_with(&["--gc-interval-secs", "1"]);
    let alice = Device::new(&h, "alice", "laptop", true);
    let bob = Device::new(&h, "bob", "phone", true);
    let conv = alice.conv(&["direct", "bob"]);
    let marker = format!("MARKER-{}", sha256_hex(h.path().to_string_lossy().as_bytes()));
    // Three AEAD chunks and a part boundary are crossed; the last chunk is short.
    let plain = file_with_marker(3 * 1024 * 1024 + 123, &marker);
    let path = h.path().join("report.pdf");
    std::fs::write(&path, &plain).expect("write the file");

    let sent = alice.run(&["send-file", &conv, path.to_str().expect("utf-8"), "--caption", "the report"]);
    let sent = sent.last().expect("output");
    assert_eq!((sent["name"].as_str(), sent["mime"].as_str()), (Some("report.pdf"), Some("application/pdf")));
    assert_eq!(sent["size"], plain.len());
    let msg_id = sent["msg_id"].as_str().expect("msg id").to_owned();

    // The server's copy is the sealed file: 16 bytes of tag per 64 KiB chunk, no plaintext.
    let blobs = files_under(&blob_dir(&h));
    assert_eq!(blobs.len(), 1, "{blobs:?}");
    let stored = std::fs::read(&blobs[0]).expect("read the blob");
    assert_eq!(stored.len(), plain.len() + 49 * 16);
    assert!(!contains(&stored, marker.as_bytes()), "the blob store holds plaintext");
    let db = std::fs::read(h.path().join("data").join("anytime.sqlite3")).unwrap_or_default();
    assert!(!contains(&db, marker.as_bytes()), "the database holds plaintext");

    let got = message_of(&bob.run(&["sync"]));
    assert_eq!(got["attachment"]["name"], "report.pdf");
    assert_eq!(got["attachment"]["size"], plain.len());
    assert!(got["text"].as_str().expect("text").contains("the report"), "{got}");
    let history = bob.run(&["history", &conv]);
    let entry = history.iter().find(|e| e["msg_id"] == msg_id.as_str()).expect("in bob's history");
    assert_eq!(entry["kind"], "attachment");
    assert_eq!(entry["text"], "the report");

    let out = h.path().join("bob-got.pdf");
    let saved = bob.run(&["download", &conv, &msg_id, "--output", out.to_str().expect("utf-8")]);
    assert_eq!(saved.last().expect("output")["sha256"], sha256_hex(&plain));
    assert_eq!(std::fs::read(&out).expect("the saved file"), plain, "byte for byte");
    assert!(!PathBuf::from(format!("{}.anytime-part", out.display())).exists(), "no leftovers");

    // Bob's device was its only recipient: once it said so, the server deletes the blob.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !files_under(&blob_dir(&h)).is_empty() {
        assert!(Instant::now() < deadline, "the fetched blob was never collected");
        std::thread::sleep(Duration::from_millis(200));
    }
    let second = h.path().join("bob-again.pdf");
    let again =
        super::anytime(&bob.profile, &["download", &conv, &msg_id, "--output", second.to_str().expect("utf-8")]);
    let error = again.expect_err("nothing left to fetch");
    assert!(error.contains("no longer has this file"), "{error}");
}

#[test]
fn an_upload_killed_halfway_resumes_where_the_server_stopped() {
    let h = Harness::start();
    let alice = Device::new(&h, "alice", "laptop", true);
    let bob = Device::new(&h, "bob", "phone", true);
    let conv = alice.conv(&["direct", "bob"]);
    let plain = file_with_marker(8 * 1024 * 1024, "RESUME");
    let path = h.path().join("clip.mp4");
    std::fs::write(&path, &plain).expect("write the file");
    let args = ["send-file", &conv, path.to_str().expect("utf-8"), "--limit-rate", "1048576"];
    // Every way out of the loop below kills and reaps it; the lint does not follow the loop.
    #[allow(clippy::zombie_processes)]
    let mut child = Command::new(env!("CARGO_BIN_EXE_anytime"))
        .arg("--profile")
        .arg(&alice.profile)
        .arg("--json")
        .args(args)
        .env("ANYTIME_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the upload");
    // Kill it once a few parts are on the server's disk.
    let deadline = Instant::now() + Duration::from_secs(30);
    let stopped_at = loop {
        let size = files_under(&blob_dir(&h)).first().and_then(|p| std::fs::metadata(p).ok()).map_or(0, |m| m.len());
        if size >= 2 * 1024 * 1024 {
            // SIGKILL: no chance to tidy up.
            let _ = child.kill();
            child.wait().expect("reap it");
            break size;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the upload did not get going");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(stopped_at < plain.len() as u64, "killed before the end");

    let output = Command::new(env!("CARGO_BIN_EXE_anytime"))
        .arg("--profile")
        .arg(&alice.profile)
        .arg("--json")
        .args(["send-file", &conv, path.to_str().expect("utf-8")])
        .env("ANYTIME_LOG", "warn")
        .output()
        .expect("run the upload again");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("resuming the upload of clip.mp4 at"), "{stderr}");
    assert_eq!(files_under(&blob_dir(&h)).len(), 1, "the same blob, continued");

    let got = message_of(&bob.run(&["sync"]));
    let out = h.path().join("clip-bob.mp4");
    let msg_id = got["msg_id"].as_str().expect("msg id");
    let saved = bob.run(&["download", &conv, msg_id, "--output", out.to_str().expect("utf-8")]);
    assert_eq!(saved.last().expect("output")["sha256"], sha256_hex(&plain));
}

/// A JPEG as a phone camera writes it: EXIF orientation 6 ("rotate 90° to view") and `marker`
/// where the GPS position would be.
fn camera_jpeg(width: u32, height: u32, marker: &[u8]) -> Vec<u8> {
    use image::ImageEncoder;
    let mut exif = b"II\x2a\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0\x06\0\0\0\0\0\0\0".to_vec();
    exif.extend_from_slice(marker);
    let pixels: Vec<u8> = (0..width * height).flat_map(|i| [(i % 251) as u8, (i / width) as u8, 90]).collect();
    let mut out = Vec::new();
    let mut encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90);
    encoder.set_exif_metadata(exif).expect("exif");
    encoder.write_image(&pixels, width, height, image::ExtendedColorType::Rgb8).expect("encode");
    out
}

#[test]
fn a_photo_arrives_upright_without_its_location_and_as_file_keeps_the_bytes() {
    let h = Harness::start();
    let alice = Device::new(&h, "alice", "laptop", true);
    let bob = Device::new(&h, "bob", "phone", true);
    let conv = alice.conv(&["direct", "bob"]);
    let marker = b"GPS-48.8584N-2.2945E-MARKER";
    let original = camera_jpeg(640, 480, marker);
    let path = h.path().join("IMG_0001.JPG");
    std::fs::write(&path, &original).expect("write the photo");

    let sent = alice.run(&["send-file", &conv, path.to_str().expect("utf-8")]);
    let sent = sent.last().expect("output");
    assert_eq!((sent["width"].as_u64(), sent["height"].as_u64()), (Some(480), Some(640)), "upright");
    assert_eq!(sent["mime"], "image/jpeg");
    let got = message_of(&bob.run(&["sync"]));
    let out = h.path().join("bob-photo.jpg");
    bob.run(&["download", &conv, got["msg_id"].as_str().expect("id"), "--output", out.to_str().expect("utf-8")]);
    let received = std::fs::read(&out).expect("the photo");
    assert!(received.starts_with(&[0xff, 0xd8]), "a JPEG");
    assert!(!contains(&received, marker), "the location did not travel");
    assert!(!contains(&received, b"Exif"), "no EXIF at all");
    let history = bob.run(&["history", &conv]);
    let entry = history.iter().find(|e| e["kind"] == "attachment").expect("in history");
    assert_eq!((entry["attachment"]["width"].as_u64(), entry["attachment"]["height"].as_u64()), (Some(480), Some(640)));

    // A filter is applied on the sending device: mono arrives grey.
    alice.run(&["send-file", &conv, path.to_str().expect("utf-8"), "--filter", "mono", "--contrast", "-20"]);
    let got = message_of(&bob.run(&["sync"]));
    let out = h.path().join("bob-mono.jpg");
    bob.run(&["download", &conv, got["msg_id"].as_str().expect("id"), "--output", out.to_str().expect("utf-8")]);
    let mono = image::load_from_memory(&std::fs::read(&out).expect("the photo")).expect("decodes").to_rgb8();
    assert_eq!(mono.dimensions(), (480, 640));
    let colourful =
        mono.pixels().filter(|p| p.0.iter().max().unwrap_or(&0) - p.0.iter().min().unwrap_or(&0) > 6).count();
    assert_eq!(colourful, 0, "every pixel grey (JPEG rounding aside)");
    let error =
        super::anytime(&alice.profile, &["send-file", &conv, path.to_str().expect("utf-8"), "--filter", "lomo"])
            .expect_err("unknown filter");
    assert!(error.contains("there is no filter \"lomo\"") && error.contains("sepia"), "{error}");

    // --as-file: the bytes exactly as they are, metadata and all (the user asked for it).
    alice.run(&["send-file", &conv, path.to_str().expect("utf-8"), "--as-file"]);
    let got = message_of(&bob.run(&["sync"]));
    let out = h.path().join("bob-original.jpg");
    bob.run(&["download", &conv, got["msg_id"].as_str().expect("id"), "--output", out.to_str().expect("utf-8")]);
    assert_eq!(std::fs::read(&out).expect("the file"), original);

    // Not a photo at all, though named like one: refused with what to do.
    let fake = h.path().join("fake.png");
    std::fs::write(&fake, b"this is not a PNG").expect("write");
    let error =
        super::anytime(&alice.profile, &["send-file", &conv, fake.to_str().expect("utf-8")]).expect_err("refused");
    assert!(error.contains("cannot be sent as a photo") && error.contains("--as-file"), "{error}");
}
