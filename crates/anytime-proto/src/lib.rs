//! Anytime wire protocol: the one place that knows how bytes on the wire look.
//!
//! Owns ids, limits, error codes, the WebSocket frame schema and its codec, and the JSON bodies
//! of the small HTTP API. It does no I/O and never reads the clock: server, clients and tools
//! all encode and decode through this crate, so there is exactly one definition of the format.
//! The format is documented for humans in `docs/protocol.md`.

pub mod blob;
pub mod cluster;
pub mod codec;
pub mod envelope;
pub mod error;
pub mod frame;
pub mod http;
pub mod ids;
pub mod limits;
pub mod wallet;

pub use codec::{decode_client, decode_server, encode_client, encode_server, DecodeError};
pub use error::ErrorCode;
pub use frame::*;
pub use ids::{ConvId, DeviceId, MsgId, UserId};
