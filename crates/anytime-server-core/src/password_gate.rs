//! A global bound on password hashing. Each argon2id hash holds ~19 MiB and a core for tens of
//! milliseconds; without a bound, parallel logins (even wrong ones, within every rate limit)
//! multiply both. At most one hash per core runs; a short queue waits; beyond it the caller
//! gets `server_busy` (HTTP 503 with Retry-After) at once instead of piling up memory.

use std::sync::atomic::{AtomicUsize, Ordering};

use anytime_proto::limits::PASSWORD_HASH_QUEUE_MAX;
use anytime_proto::ErrorCode;
use tokio::sync::{Semaphore, SemaphorePermit};

pub struct PasswordGate {
    running: Semaphore,
    waiting: AtomicUsize,
}

impl PasswordGate {
    /// `slots` hashes at once (the number of cores, by default).
    pub fn new(slots: usize) -> PasswordGate {
        PasswordGate { running: Semaphore::new(slots.max(1)), waiting: AtomicUsize::new(0) }
    }

    /// A slot to hash in, or `server_busy` when the queue is full.
    pub async fn enter(&self) -> Result<SemaphorePermit<'_>, ErrorCode> {
        if let Ok(permit) = self.running.try_acquire() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= PASSWORD_HASH_QUEUE_MAX {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(ErrorCode::ServerBusy);
        }
        let waited = self.running.acquire().await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        // The semaphore is never closed; if it were, the caller is told to come back.
        waited.map_err(|_| ErrorCode::ServerBusy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn beyond_the_slots_and_the_queue_callers_are_told_busy_at_once() {
        let gate = PasswordGate::new(1);
        let held = gate.enter().await.unwrap();
        // Fill the queue with waiters.
        let waiters: Vec<_> = (0..PASSWORD_HASH_QUEUE_MAX).map(|_| Box::pin(gate.enter())).collect();
        let mut waiters: Vec<_> = waiters.into_iter().map(futures_poll_once).collect();
        assert_eq!(gate.waiting.load(Ordering::Acquire), PASSWORD_HASH_QUEUE_MAX);
        assert_eq!(gate.enter().await.err(), Some(ErrorCode::ServerBusy));
        drop(held);
        // The first waiter gets the slot.
        let first = waiters.remove(0).await;
        assert!(first.is_ok());
    }

    /// Polls a future once (registering it as a waiter) and hands it back.
    fn futures_poll_once<F: std::future::Future + Unpin>(mut future: F) -> F {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let _ = std::pin::Pin::new(&mut future).poll(&mut cx);
        future
    }
}
