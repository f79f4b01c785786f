//! Bytes on their way to one connection's socket: queued in the hub for it, or in its write
//! queue. Counted in bytes, not frames, because frames range from 20 bytes to 128 KiB: a count
//! bound let one stuck reader of large messages pin half a gigabyte. The hub stops queueing past
//! `OUTBOUND_BYTES_MAX` (the connection resyncs from storage instead); the session waits for
//! room, and a reader that makes none within `SLOW_CONSUMER_TIMEOUT` is disconnected. Nothing is
//! lost either way: delivery is from storage, and the device resumes from its cursor.

use std::sync::atomic::{AtomicU64, Ordering};

use anytime_proto::limits::OUTBOUND_BYTES_MAX;
use tokio::sync::Notify;

use crate::env::Sleep;

#[derive(Debug, Default)]
pub struct Outbound {
    queued: AtomicU64,
    /// Senders waiting for room: the writer wakes them only when there are any (the hot path
    /// stays two atomic operations per frame).
    waiting: AtomicU64,
    drained: Notify,
}

impl Outbound {
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Acquire)
    }

    /// Counts `bytes` in if they fit under the bound; `false` (nothing counted) if not.
    pub fn try_add(&self, bytes: u64) -> bool {
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                // One frame always fits into an empty queue, however large.
                (queued == 0 || queued + bytes <= OUTBOUND_BYTES_MAX).then_some(queued + bytes)
            })
            .is_ok()
    }

    /// `bytes` left the queue (written to the socket, or taken from the hub queue).
    pub fn remove(&self, bytes: u64) {
        let _ =
            self.queued.fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| Some(queued.saturating_sub(bytes)));
        if self.waiting.load(Ordering::Acquire) > 0 {
            self.drained.notify_waiters();
        }
    }

    /// Counts `bytes` in once they fit, waiting for the writer until `deadline` fires; `false`
    /// if the reader made no room by then.
    pub async fn add_when_room(&self, bytes: u64, deadline: Sleep) -> bool {
        let mut deadline = deadline;
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let added = loop {
            // Created before the check: `notify_waiters` wakes every `Notified` that exists when
            // it is called, so a drain between the check and the wait is not missed.
            let drained = self.drained.notified();
            if self.try_add(bytes) {
                break true;
            }
            tokio::select! {
                _ = drained => {}
                _ = &mut deadline => break false,
            }
        };
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        added
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_bound_holds_and_a_writer_that_drains_makes_room() {
        let outbound = std::sync::Arc::new(Outbound::default());
        assert!(outbound.try_add(OUTBOUND_BYTES_MAX - 10));
        assert!(!outbound.try_add(11));
        assert!(outbound.try_add(10));
        // A deadline that has fired: no room, no wait.
        assert!(!outbound.add_when_room(1, Box::pin(std::future::ready(()))).await, "nothing drains");
        // The writer drains while we wait (the deadline never fires).
        let writer = outbound.clone();
        let waiting = outbound.add_when_room(1_000, Box::pin(std::future::pending()));
        let drain = async move {
            tokio::task::yield_now().await;
            writer.remove(OUTBOUND_BYTES_MAX);
        };
        let (added, ()) = tokio::join!(waiting, drain);
        assert!(added);
        assert_eq!(outbound.queued(), 1_000);
        // A frame larger than the bound still goes out alone.
        outbound.remove(1_000);
        assert!(outbound.try_add(OUTBOUND_BYTES_MAX * 2));
    }
}
