//! The real clock and the operating system's random number generator, for the core's `Env`.

use std::time::Duration;

use anytime_server_core::env::Sleep;
use anytime_server_core::Env;

pub struct SystemEnv;

impl Env for SystemEnv {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
    }

    fn fill_random(&self, buf: &mut [u8]) {
        // Without an OS RNG no id or token can be made safely; there is no way to continue.
        getrandom::fill(buf).expect("the operating system's random number generator failed");
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(duration))
    }
}
