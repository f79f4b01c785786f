//! The server core's outside world in the simulation: a clock that moves only when the
//! simulation says, and randomness from the seed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anytime_server_core::env::Sleep;
use anytime_server_core::Env;

use crate::rng::Rng;

pub struct SimEnv {
    now_ms: AtomicU64,
    rng: Mutex<Rng>,
}

impl SimEnv {
    pub fn new(seed: u64) -> SimEnv {
        SimEnv { now_ms: AtomicU64::new(1_700_000_000_000), rng: Mutex::new(Rng::new(seed ^ 0x005e_4ee4)) }
    }

    pub fn advance(&self, ms: u64) {
        self.now_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Env for SimEnv {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }

    fn fill_random(&self, buf: &mut [u8]) {
        self.rng.lock().unwrap_or_else(|poison| poison.into_inner()).fill(buf);
    }

    /// The simulation drains every connection's queue after each request, so nothing waits for
    /// room; a timer that never fires keeps that assumption visible (a wait would hang the run).
    fn sleep(&self, _duration: Duration) -> Sleep {
        Box::pin(std::future::pending())
    }
}
