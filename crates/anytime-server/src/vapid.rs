//! VAPID (RFC 8292): the server's identity towards browsers' push services. A P-256 key made on
//! first start and kept in the data directory; each push carries a short-lived ES256 JWT signed
//! with it. Hand-written over a JWT crate because it is one fixed header and three claims.

use std::path::Path;

use anyhow::Context;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};

/// How long one signed authorisation is valid (RFC 8292 allows up to 24 h).
const TOKEN_TTL_SECS: u64 = 12 * 3600;

pub struct Vapid {
    key: SigningKey,
    /// The uncompressed public point, base64url: the browser's `applicationServerKey`.
    pub public_key: String,
    subject: String,
}

impl Vapid {
    /// Loads the key from `path`, or makes one and writes it there (owner-readable only).
    pub fn load_or_create(path: &Path, subject: String) -> anyhow::Result<Vapid> {
        let key = match std::fs::read(path) {
            Ok(bytes) => SigningKey::from_slice(&bytes).with_context(|| {
                format!("{} is not a P-256 private key; delete it to make a new one", path.display())
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = loop {
                    let mut bytes = [0u8; 32];
                    getrandom::fill(&mut bytes).context("no randomness for the VAPID key")?;
                    // A random scalar is out of range with probability ~2^-32: draw again.
                    if let Ok(key) = SigningKey::from_slice(&bytes) {
                        break key;
                    }
                };
                write_private(path, &key.to_bytes()).with_context(|| format!("while writing {}", path.display()))?;
                key
            }
            Err(e) => return Err(e).with_context(|| format!("while reading {}", path.display())),
        };
        let point = key.verifying_key().to_encoded_point(false);
        Ok(Vapid { public_key: URL_SAFE_NO_PAD.encode(point.as_bytes()), key, subject })
    }

    /// The `Authorization` header value for a push to `endpoint` at `now_secs`.
    pub fn authorization(&self, endpoint: &str, now_secs: u64) -> String {
        // The audience is the push service's origin: scheme://host[:port].
        let origin = endpoint.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = serde_json::json!({"aud": origin, "exp": now_secs + TOKEN_TTL_SECS, "sub": self.subject});
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let input = format!("{header}.{claims}");
        let signature: Signature = self.key.sign(input.as_bytes());
        format!("vapid t={input}.{}, k={}", URL_SAFE_NO_PAD.encode(signature.to_bytes()), self.public_key)
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
