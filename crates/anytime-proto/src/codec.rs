//! Frame codec. Layout of every frame (all integers big-endian):
//!
//! ```text
//! offset 0  u8   protocol version (1)
//! offset 1  u16  frame kind (see `frame.rs`)
//! offset 3  u32  request id (0 for server pushes and for requests that want no answer)
//! offset 7  ..   postcard-encoded body of that kind
//! ```
//!
//! Trailing bytes after a body are ignored, so a later version may append optional fields.
//! Decoding never panics on untrusted bytes; it checks the size before anything else.

use crate::frame::{ClientFrame, ServerFrame};
use crate::limits::FRAME_BYTES_MAX;

pub const PROTOCOL_VERSION: u8 = 1;
pub const HEADER_LEN: usize = 7;

/// Why bytes did not decode into a frame. `request_id` is set when the header was readable, so
/// the error answer can still be matched to its request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: u32, request_id: u32 },
    #[error("frame is shorter than its {HEADER_LEN}-byte header")]
    Truncated,
    #[error("protocol version {version} is not supported (this build speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion { version: u8, request_id: u32 },
    #[error("frame kind {kind} is not known")]
    UnknownKind { kind: u16, request_id: u32 },
    #[error("body of frame kind {kind} is malformed")]
    Malformed { kind: u16, request_id: u32 },
}

impl DecodeError {
    pub fn request_id(&self) -> u32 {
        match self {
            DecodeError::Truncated => 0,
            DecodeError::TooLarge { request_id, .. }
            | DecodeError::UnsupportedVersion { request_id, .. }
            | DecodeError::UnknownKind { request_id, .. }
            | DecodeError::Malformed { request_id, .. } => *request_id,
        }
    }

    pub fn code(&self) -> crate::ErrorCode {
        use crate::ErrorCode;
        match self {
            DecodeError::TooLarge { .. } => ErrorCode::FrameTooLarge,
            DecodeError::Truncated | DecodeError::Malformed { .. } => ErrorCode::MalformedFrame,
            DecodeError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            DecodeError::UnknownKind { .. } => ErrorCode::UnknownFrameType,
        }
    }
}

pub fn encode_client(request_id: u32, frame: &ClientFrame) -> Vec<u8> {
    let out = header(frame.kind(), request_id);
    // postcard serialisation into a Vec cannot fail for these plain data types.
    frame.encode_body(out).expect("frame bodies always serialise")
}

pub fn encode_server(request_id: u32, frame: &ServerFrame) -> Vec<u8> {
    let out = header(frame.kind(), request_id);
    // As above: plain data into a Vec cannot fail.
    frame.encode_body(out).expect("frame bodies always serialise")
}

pub fn decode_client(bytes: &[u8]) -> Result<(u32, ClientFrame), DecodeError> {
    decode(bytes, ClientFrame::decode_body)
}

pub fn decode_server(bytes: &[u8]) -> Result<(u32, ServerFrame), DecodeError> {
    decode(bytes, ServerFrame::decode_body)
}

fn header(kind: u16, request_id: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(PROTOCOL_VERSION);
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&request_id.to_be_bytes());
    out
}

/// Decodes the body of one frame kind; `None` when the kind is unknown.
type BodyDecoder<F> = fn(u16, &[u8]) -> Option<Result<F, postcard::Error>>;

fn decode<F>(bytes: &[u8], decode_body: BodyDecoder<F>) -> Result<(u32, F), DecodeError> {
    if bytes.len() < HEADER_LEN {
        return Err(DecodeError::Truncated);
    }
    let version = bytes[0];
    let kind = u16::from_be_bytes([bytes[1], bytes[2]]);
    let request_id = u32::from_be_bytes([bytes[3], bytes[4], bytes[5], bytes[6]]);
    if bytes.len() > FRAME_BYTES_MAX as usize {
        return Err(DecodeError::TooLarge { len: bytes.len(), max: FRAME_BYTES_MAX, request_id });
    }
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion { version, request_id });
    }
    match decode_body(kind, &bytes[HEADER_LEN..]) {
        None => Err(DecodeError::UnknownKind { kind, request_id }),
        Some(Err(_)) => Err(DecodeError::Malformed { kind, request_id }),
        Some(Ok(frame)) => Ok((request_id, frame)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::*;
    use crate::{ConvId, ErrorCode, MsgId};

    #[test]
    fn frames_round_trip() {
        let frame =
            ClientFrame::Send(Send { conv: ConvId(7), msg_id: MsgId([9; 16]), payload: b"ciphertext".to_vec() });
        let bytes = encode_client(42, &frame);
        assert_eq!(&bytes[..3], &[1, 0, 18]);
        assert_eq!(decode_client(&bytes), Ok((42, frame)));

        let frame = ServerFrame::Error(Error { code: ErrorCode::EpochMismatch, message: "x".into(), epoch: Some(3) });
        assert_eq!(decode_server(&encode_server(5, &frame)), Ok((5, frame)));
    }

    #[test]
    fn bad_bytes_are_typed_errors_not_panics() {
        assert_eq!(decode_client(&[1, 0]), Err(DecodeError::Truncated));
        assert_eq!(
            decode_client(&[2, 0, 1, 0, 0, 0, 9]),
            Err(DecodeError::UnsupportedVersion { version: 2, request_id: 9 })
        );
        assert_eq!(
            decode_client(&[1, 0x7f, 0, 0, 0, 0, 1]),
            Err(DecodeError::UnknownKind { kind: 0x7f00, request_id: 1 })
        );
        // A Send body that ends in the middle of its fields.
        assert_eq!(decode_client(&[1, 0, 18, 0, 0, 0, 3, 7]), Err(DecodeError::Malformed { kind: 18, request_id: 3 }));
        let big = vec![1u8; FRAME_BYTES_MAX as usize + 1];
        assert!(matches!(decode_client(&big), Err(DecodeError::TooLarge { .. })));
        // Every prefix of a valid frame and a byte-flipped copy decode without panicking.
        let bytes = encode_client(
            1,
            &ClientFrame::Commit(Commit {
                conv: ConvId(1),
                epoch: 2,
                msg_id: MsgId([1; 16]),
                commit: vec![5; 40],
                welcome: Some(WelcomeOut { devices: vec![], payload: vec![1, 2] }),
            }),
        );
        for end in 0..bytes.len() {
            let _ = decode_client(&bytes[..end]);
            let mut flipped = bytes.clone();
            flipped[end] ^= 0xff;
            let _ = decode_client(&flipped);
        }
    }
}
