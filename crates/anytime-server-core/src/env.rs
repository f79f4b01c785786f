//! Time and randomness come in through [`Env`], so the core never reads the clock or an RNG
//! itself and a test or simulator can drive it deterministically.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A timer from the shell: completes after the duration (in the shell's notion of time).
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The outside world as the core sees it.
pub trait Env: Send + Sync + 'static {
    /// Unix time in milliseconds.
    fn now_ms(&self) -> u64;
    /// Fills `buf` with cryptographically secure random bytes.
    fn fill_random(&self, buf: &mut [u8]);
    /// A timer, so the core waits without reading a clock or depending on a runtime's timers.
    fn sleep(&self, duration: Duration) -> Sleep;
}

pub(crate) trait EnvExt {
    fn random_u64(&self) -> u64;
    fn random_array<const N: usize>(&self) -> [u8; N];
}

impl<E: Env + ?Sized> EnvExt for E {
    /// A random non-zero id (0 is reserved as "none" in the protocol).
    fn random_u64(&self) -> u64 {
        loop {
            let n = u64::from_le_bytes(self.random_array());
            if n != 0 {
                return n;
            }
        }
    }

    fn random_array<const N: usize>(&self) -> [u8; N] {
        let mut buf = [0u8; N];
        self.fill_random(&mut buf);
        buf
    }
}
