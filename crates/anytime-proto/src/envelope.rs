//! The envelope inside every encrypted application message: `(version, kind, body)`, postcard.
//! The server never sees it (it is inside the MLS ciphertext); the client core's `content`
//! module gives the kinds and their bodies meaning. Kept here with every other byte layout.
//!
//! A reader refuses an envelope of a newer layout version and reads an unknown *kind* as
//! unsupported, so old clients keep working as the content schema grows.

use serde::{Deserialize, Serialize};

/// Version of the envelope layout itself (not of the kinds inside).
pub const ENVELOPE_VERSION: u16 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u16,
    pub kind: u16,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("the message is not an Anytime content envelope")]
    NotAnEnvelope,
    #[error("content envelope version {0} is newer than this client understands")]
    Newer(u16),
}

impl Envelope {
    /// An envelope of this build's layout version.
    pub fn new(kind: u16, body: Vec<u8>) -> Envelope {
        Envelope { version: ENVELOPE_VERSION, kind, body }
    }

    pub fn encode(&self) -> Vec<u8> {
        // Plain data into a Vec cannot fail.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        let envelope: Envelope = postcard::from_bytes(bytes).map_err(|_| EnvelopeError::NotAnEnvelope)?;
        if envelope.version > ENVELOPE_VERSION {
            return Err(EnvelopeError::Newer(envelope.version));
        }
        Ok(envelope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_newer_layouts_and_garbage() {
        let envelope = Envelope::new(900, vec![1, 2, 3]);
        assert_eq!(Envelope::decode(&envelope.encode()), Ok(envelope));
        let newer = Envelope { version: ENVELOPE_VERSION + 1, kind: 1, body: vec![] }.encode();
        assert_eq!(Envelope::decode(&newer), Err(EnvelopeError::Newer(ENVELOPE_VERSION + 1)));
        assert_eq!(Envelope::decode(&[0xff; 3]), Err(EnvelopeError::NotAnEnvelope));
        for cut in 0..3 {
            assert!(Envelope::decode(&Envelope::new(1, vec![7; 40]).encode()[..cut]).is_err());
        }
    }
}
