//! The photo pipeline (feature `photo`), one implementation for the CLI and the web client: a
//! picked photo is checked, decoded within limits, turned upright by its EXIF orientation,
//! scaled down to a sending size and encoded again — which drops every piece of metadata the
//! camera wrote (EXIF, GPS location above all, XMP, maker notes) — with a small thumbnail and a
//! blurhash placeholder for the chat message. Pure: bytes in, bytes out.
//!
//! Hostile input is refused before it costs memory: the format is recognised by its magic
//! bytes, the header's dimensions are checked against `PHOTO_PIXELS_MAX` before any pixel is
//! allocated, and the decoders run under an allocation limit.

use std::io::Cursor;

use anytime_proto::limits::{
    ATTACHMENT_THUMBNAIL_BYTES_MAX, PHOTO_ALLOC_BYTES_MAX, PHOTO_PIXELS_MAX, PHOTO_SIDE_MAX, PHOTO_THUMBNAIL_SIDE,
};
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageEncoder, ImageFormat, ImageReader, Limits};

use crate::filter::{Adjust, Filter};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhotoError {
    #[error("this is not a photo Anytime can read (JPEG, PNG, WebP or GIF)")]
    UnknownFormat,
    #[error("the photo is {width} x {height} pixels; photos up to {} megapixels are accepted", PHOTO_PIXELS_MAX / 1_000_000)]
    TooLarge { width: u32, height: u32 },
    #[error("the photo is damaged or incomplete ({0})")]
    Malformed(String),
}

/// A photo ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The photo as it is sent: JPEG for JPEG and WebP input, PNG for PNG (lossless stays
    /// lossless), the original bytes for GIF (animation kept; GIF has no EXIF).
    pub bytes: Vec<u8>,
    pub mime: &'static str,
    pub width: u32,
    pub height: u32,
    /// A JPEG of at most `PHOTO_THUMBNAIL_SIDE` pixels a side and `ATTACHMENT_THUMBNAIL_BYTES_MAX`.
    pub thumbnail: Vec<u8>,
    /// A blurhash (4 × 3 components) drawn while the photo loads.
    pub placeholder: String,
}

/// The image in `bytes`, decoded within the limits and upright.
pub fn decode(bytes: &[u8]) -> Result<(DynamicImage, ImageFormat), PhotoError> {
    let format = image::guess_format(bytes).map_err(|_| PhotoError::UnknownFormat)?;
    if !matches!(format, ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP | ImageFormat::Gif) {
        return Err(PhotoError::UnknownFormat);
    }
    let malformed = |e: image::ImageError| PhotoError::Malformed(e.to_string());
    let reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut decoder = reader.into_decoder().map_err(malformed)?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(PhotoError::Malformed("it has no pixels".into()));
    }
    if u64::from(width) * u64::from(height) > PHOTO_PIXELS_MAX {
        return Err(PhotoError::TooLarge { width, height });
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    limits.max_alloc = Some(PHOTO_ALLOC_BYTES_MAX);
    decoder.set_limits(limits).map_err(malformed)?;
    // A missing or unreadable orientation leaves the pixels as they are stored.
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(malformed)?;
    image.apply_orientation(orientation);
    Ok((image, format))
}

/// Prepares the photo in `bytes` for sending (see the module documentation).
pub fn prepare(bytes: &[u8]) -> Result<Prepared, PhotoError> {
    prepare_filtered(bytes, Filter::Original, Adjust::default())
}

/// [`prepare`], with a filter and the sliders applied after scaling (a filtered GIF is sent as
/// a still JPEG).
pub fn prepare_filtered(bytes: &[u8], filter: Filter, adjust: Adjust) -> Result<Prepared, PhotoError> {
    let (image, format) = decode(bytes)?;
    let image = if image.width().max(image.height()) > PHOTO_SIDE_MAX {
        image.resize(PHOTO_SIDE_MAX, PHOTO_SIDE_MAX, FilterType::Triangle)
    } else {
        image
    };
    let unfiltered = filter == Filter::Original && adjust == Adjust::default();
    let image = if unfiltered {
        image
    } else {
        let mut rgba = image.to_rgba8();
        let (width, height) = rgba.dimensions();
        // The buffer is width x height RGBA by construction.
        crate::filter::apply(&mut rgba, width, height, filter, adjust).expect("an RGBA buffer of its own size");
        DynamicImage::ImageRgba8(rgba)
    };
    let (bytes, mime) = match format {
        ImageFormat::Gif if unfiltered => (bytes.to_vec(), "image/gif"),
        ImageFormat::Png => (encode_png(&image)?, "image/png"),
        _ => (encode_jpeg(&image, 85)?, "image/jpeg"),
    };
    Ok(Prepared {
        bytes,
        mime,
        width: image.width(),
        height: image.height(),
        thumbnail: thumbnail(&image)?,
        placeholder: placeholder(&image),
    })
}

fn encode_jpeg(image: &DynamicImage, quality: u8) -> Result<Vec<u8>, PhotoError> {
    let rgb = image.to_rgb8();
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(&rgb)
        .map_err(|e| PhotoError::Malformed(e.to_string()))?;
    Ok(out)
}

fn encode_png(image: &DynamicImage) -> Result<Vec<u8>, PhotoError> {
    let rgba = image.to_rgba8();
    let mut out = Vec::new();
    PngEncoder::new(&mut out)
        .write_image(rgba.as_raw(), rgba.width(), rgba.height(), image::ExtendedColorType::Rgba8)
        .map_err(|e| PhotoError::Malformed(e.to_string()))?;
    Ok(out)
}

/// A small JPEG within `ATTACHMENT_THUMBNAIL_BYTES_MAX`: lower quality, then smaller, until it fits.
fn thumbnail(image: &DynamicImage) -> Result<Vec<u8>, PhotoError> {
    let mut side = PHOTO_THUMBNAIL_SIDE;
    loop {
        let small = image.thumbnail(side, side);
        for quality in [70, 50, 30] {
            let jpeg = encode_jpeg(&small, quality)?;
            if jpeg.len() <= ATTACHMENT_THUMBNAIL_BYTES_MAX as usize {
                return Ok(jpeg);
            }
        }
        side /= 2;
        if side < 16 {
            return Ok(Vec::new());
        }
    }
}

/// The blurhash of the photo, computed on a 32-pixel copy (the hash keeps only the lowest
/// frequencies, so more pixels change nothing visible and cost time).
fn placeholder(image: &DynamicImage) -> String {
    let small = image.thumbnail(32, 32).to_rgba8();
    blurhash::encode(4, 3, small.width(), small.height(), small.as_raw()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage};

    fn gradient(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, 128]))
    }

    /// A JPEG whose EXIF says "rotate 90° clockwise to view" (orientation 6) and carries `marker`
    /// where a camera keeps its GPS position.
    fn camera_jpeg(width: u32, height: u32, marker: &[u8]) -> Vec<u8> {
        let mut exif = b"II\x2a\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0\x06\0\0\0\0\0\0\0".to_vec();
        exif.extend_from_slice(marker);
        let mut out = Vec::new();
        let mut encoder = JpegEncoder::new_with_quality(&mut out, 90);
        encoder.set_exif_metadata(exif).expect("exif");
        encoder.encode_image(&gradient(width, height)).expect("encode");
        out
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn a_camera_photo_is_sent_upright_without_its_metadata_with_a_thumbnail_and_a_placeholder() {
        let marker = b"GPS-48.8584N-2.2945E";
        let original = camera_jpeg(400, 300, marker);
        assert!(contains(&original, marker), "the fixture carries the location");
        let prepared = prepare(&original).expect("prepare");
        assert_eq!(prepared.mime, "image/jpeg");
        assert_eq!((prepared.width, prepared.height), (300, 400), "turned upright");
        assert!(!contains(&prepared.bytes, marker), "the location is gone");
        assert!(!contains(&prepared.bytes, b"Exif"), "no EXIF at all");
        let (again, _) = decode(&prepared.bytes).expect("the sent photo decodes");
        assert_eq!((again.width(), again.height()), (300, 400));
        assert!(!prepared.thumbnail.is_empty() && prepared.thumbnail.len() <= ATTACHMENT_THUMBNAIL_BYTES_MAX as usize);
        let (thumb, _) = decode(&prepared.thumbnail).expect("the thumbnail decodes");
        assert!(thumb.width().max(thumb.height()) <= PHOTO_THUMBNAIL_SIDE);
        assert_eq!(prepared.placeholder.len(), 4 + 2 * 4 * 3, "a 4 x 3 blurhash");
    }

    #[test]
    fn large_photos_are_scaled_to_the_sending_size_and_png_stays_png() {
        let mut png = Vec::new();
        PngEncoder::new(&mut png)
            .write_image(gradient(3000, 1500).as_raw(), 3000, 1500, image::ExtendedColorType::Rgb8)
            .expect("encode");
        let prepared = prepare(&png).expect("prepare");
        assert_eq!(prepared.mime, "image/png");
        assert_eq!((prepared.width, prepared.height), (PHOTO_SIDE_MAX, PHOTO_SIDE_MAX / 2));
    }

    #[test]
    fn hostile_and_broken_images_are_refused_with_a_reason_and_no_allocation() {
        assert_eq!(prepare(b"definitely not a picture"), Err(PhotoError::UnknownFormat), "wrong magic");
        assert_eq!(prepare(b"%PDF-1.7 something"), Err(PhotoError::UnknownFormat));
        assert_eq!(prepare(b""), Err(PhotoError::UnknownFormat));
        let jpeg = camera_jpeg(64, 64, b"");
        assert!(matches!(prepare(&jpeg[..100]), Err(PhotoError::Malformed(_))), "cut in its headers");
        // Cut in the middle of its pixels: the decoder keeps what arrived (as browsers do) or
        // refuses; either way no crash and nothing larger than the header said.
        match prepare(&jpeg[..jpeg.len() / 2]) {
            Ok(half) => assert_eq!((half.width, half.height), (64, 64)),
            Err(error) => assert!(matches!(error, PhotoError::Malformed(_)), "{error:?}"),
        }
        // A PNG header claiming 100,000 x 100,000 pixels (40 GB decoded), with valid checksums.
        assert_eq!(
            prepare(&png_header(100_000, 100_000)),
            Err(PhotoError::TooLarge { width: 100_000, height: 100_000 })
        );
        // A decompression bomb: 8,000 x 8,000 of one colour is a small file but 64 megapixels.
        let mut bomb = Vec::new();
        PngEncoder::new(&mut bomb)
            .write_image(&vec![0u8; 8_000 * 8_000], 8_000, 8_000, image::ExtendedColorType::L8)
            .expect("encode");
        assert!(bomb.len() < 1_000_000, "{} bytes", bomb.len());
        assert_eq!(prepare(&bomb), Err(PhotoError::TooLarge { width: 8_000, height: 8_000 }));
    }

    /// The signature, an IHDR chunk for `width` x `height` 8-bit RGB, the start of its pixels
    /// and the end: what a decoder reads before it allocates.
    fn png_header(width: u32, height: u32) -> Vec<u8> {
        let mut ihdr = width.to_be_bytes().to_vec();
        ihdr.extend_from_slice(&height.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        for (kind, data) in [(&b"IHDR"[..], &ihdr[..]), (b"IDAT", &[0x78, 0x9c, 0x03, 0x00][..]), (b"IEND", &[][..])] {
            let mut chunk = kind.to_vec();
            chunk.extend_from_slice(data);
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            out.extend_from_slice(&chunk);
            out.extend_from_slice(&crc32(&chunk).to_be_bytes());
        }
        out
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &byte in bytes {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }
}
