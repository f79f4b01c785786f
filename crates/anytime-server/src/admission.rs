//! Which TCP connections the server keeps: every accepted socket holds a [`Ticket`] until it
//! closes. Unauthenticated sockets (plain HTTP, or a WebSocket before its Hello) are capped per
//! address and in total, and when open files near their limit the oldest of them are shed first:
//! someone trickling bytes into many sockets loses those sockets, while authenticated users and
//! new visitors keep being served. Authenticated WebSockets are never shed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};

use anytime_proto::limits::UNAUTHENTICATED_MAX;
#[cfg(test)]
use anytime_proto::limits::UNAUTHENTICATED_PER_IP_MAX;
use anytime_server_core::Metrics;
use tokio::sync::Notify;

#[derive(Default)]
struct Inner {
    next_id: u64,
    open: u64,
    /// Unauthenticated tickets by age (ids grow with time): the first entry is the oldest.
    unauthenticated: BTreeMap<u64, (IpAddr, Arc<Notify>)>,
    per_ip: HashMap<IpAddr, u32>,
    /// Shed but not closed yet: they are on their way out and make room already.
    shed: HashSet<u64>,
}

pub(crate) struct Admission {
    inner: Mutex<Inner>,
    /// Connections this process can hold: open-files limit minus a reserve for everything else.
    sockets_max: u64,
    per_ip_max: u32,
    metrics: Arc<Metrics>,
}

/// One accepted connection. Dropping the last clone releases its place.
pub(crate) struct Ticket {
    admission: Arc<Admission>,
    id: u64,
    ip: IpAddr,
    /// Notified when the connection is shed: its task closes the socket.
    pub shed: Arc<Notify>,
}

impl Admission {
    pub fn new(sockets_max: u64, per_ip_max: u32, metrics: Arc<Metrics>) -> Arc<Admission> {
        Arc::new(Admission { inner: Mutex::default(), sockets_max, per_ip_max, metrics })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Poisoned only by a panic mid-update of these counters; they are still usable.
        self.inner.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Takes a place for a new connection from `ip`, shedding the oldest unauthenticated ones
    /// if the server is full; `None` if `ip` already has too many unauthenticated connections.
    pub fn admit(self: &Arc<Admission>, ip: IpAddr) -> Option<Ticket> {
        let mut inner = self.lock();
        let from_ip = inner.per_ip.get(&ip).copied().unwrap_or(0);
        if from_ip >= self.per_ip_max {
            drop(inner);
            self.metrics.sockets_refused.fetch_add(1, Relaxed);
            tracing::debug!(%ip, "refused a connection: too many unauthenticated ones from this address");
            return None;
        }
        // Room for this one: under the socket budget and the unauthenticated cap.
        while inner.open - inner.shed.len() as u64 + 1 > self.sockets_max
            || inner.unauthenticated.len() as u64 + 1 > UNAUTHENTICATED_MAX as u64
        {
            if !Self::shed_oldest(&mut inner, &self.metrics) {
                break;
            }
        }
        inner.next_id += 1;
        let id = inner.next_id;
        let shed = Arc::new(Notify::new());
        inner.open += 1;
        inner.unauthenticated.insert(id, (ip, shed.clone()));
        *inner.per_ip.entry(ip).or_default() += 1;
        self.metrics.sockets_open.store(inner.open, Relaxed);
        self.metrics.sockets_unauthenticated.store(inner.unauthenticated.len() as u64, Relaxed);
        Some(Ticket { admission: self.clone(), id, ip, shed })
    }

    /// Closes the oldest unauthenticated connection (after accept failed for lack of files).
    pub fn shed_one(&self) -> bool {
        Self::shed_oldest(&mut self.lock(), &self.metrics)
    }

    fn shed_oldest(inner: &mut Inner, metrics: &Metrics) -> bool {
        let Some((id, (ip, shed))) = inner.unauthenticated.pop_first() else { return false };
        inner.shed.insert(id);
        // It stays open (and counted) until its task closes it; it is no longer a candidate.
        Self::forget_ip(inner, ip);
        shed.notify_one();
        let total = metrics.sockets_shed.fetch_add(1, Relaxed) + 1;
        metrics.sockets_unauthenticated.store(inner.unauthenticated.len() as u64, Relaxed);
        // One line per 100 shed, not per socket: a flood must not become a log flood.
        if total == 1 || total.is_multiple_of(100) {
            tracing::warn!(
                open = inner.open,
                shed_total = total,
                "closing the oldest unauthenticated connections: the server is near its connection limit"
            );
        }
        true
    }

    fn forget_ip(inner: &mut Inner, ip: IpAddr) {
        if let Some(count) = inner.per_ip.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                inner.per_ip.remove(&ip);
            }
        }
    }
}

impl Ticket {
    /// The connection authenticated (Hello accepted): it is no longer capped or shed.
    pub fn authenticated(&self) {
        let mut inner = self.admission.lock();
        if inner.unauthenticated.remove(&self.id).is_some() {
            Admission::forget_ip(&mut inner, self.ip);
            self.admission.metrics.sockets_unauthenticated.store(inner.unauthenticated.len() as u64, Relaxed);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut inner = self.admission.lock();
        if inner.unauthenticated.remove(&self.id).is_some() {
            Admission::forget_ip(&mut inner, self.ip);
        }
        inner.shed.remove(&self.id);
        inner.open -= 1;
        self.admission.metrics.sockets_open.store(inner.open, Relaxed);
        self.admission.metrics.sockets_unauthenticated.store(inner.unauthenticated.len() as u64, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn one_address_is_capped_and_a_full_server_sheds_its_oldest_unauthenticated_socket() {
        let admission = Admission::new(3, UNAUTHENTICATED_PER_IP_MAX, Arc::new(Metrics::default()));
        let first = admission.admit(ip(2)).unwrap();
        let second = admission.admit(ip(2)).unwrap();
        second.authenticated();
        let third = admission.admit(ip(3)).unwrap();
        // Full (3 of 3): the next one sheds the oldest unauthenticated (first), not the
        // authenticated second.
        let _fourth = admission.admit(ip(4)).unwrap();
        assert!(futures_ready(first.shed.notified()));
        assert!(!futures_ready(second.shed.notified()));
        assert!(!futures_ready(third.shed.notified()));
        assert_eq!(admission.metrics.sockets_shed.load(Relaxed), 1);
        drop(first);
        assert_eq!(admission.lock().open, 3);

        let many = Admission::new(10_000, UNAUTHENTICATED_PER_IP_MAX, Arc::new(Metrics::default()));
        let held: Vec<Ticket> = (0..UNAUTHENTICATED_PER_IP_MAX).map(|_| many.admit(ip(9)).unwrap()).collect();
        assert!(many.admit(ip(9)).is_none(), "the address is at its cap");
        assert!(many.admit(ip(10)).is_some(), "others are not");
        held[0].authenticated();
        assert!(many.admit(ip(9)).is_some(), "an authenticated one frees a place");
    }

    /// Whether a `Notified` future is ready at once (a stored permit).
    fn futures_ready(notified: tokio::sync::futures::Notified<'_>) -> bool {
        let mut notified = std::pin::pin!(notified);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        std::future::Future::poll(notified.as_mut(), &mut cx).is_ready()
    }
}
