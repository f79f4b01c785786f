//! Failed-login throttling that an attacker cannot turn against the account's owner.
//!
//! Failures are counted per (username, client address): after a few free attempts each further
//! one doubles the wait before that pair may try again. Someone guessing alice's password from
//! one address slows only themselves; alice, logging in from her own address (which has not been
//! failing), is never refused. IPv6 clients are keyed by their /64, which one client controls
//! whole. Guessing from many addresses is bounded by the per-address login rate and by argon2.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use anytime_proto::limits::{LOGIN_DELAY_BASE_MS, LOGIN_DELAY_MAX_MS, LOGIN_FREE_FAILURES};

/// Entries not touched for this long are forgotten (their wait has long run out).
const FORGET_AFTER_MS: u64 = 24 * 3_600_000;
/// Above this many entries, forgotten ones are swept on the next failure.
const SWEEP_ABOVE: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last_ms: u64,
}

#[derive(Default)]
pub struct LoginThrottle {
    failures: Mutex<HashMap<(String, IpAddr), Failures>>,
}

/// The address a client controls whole: itself for IPv4, its /64 for IPv6.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let mut segments = v6.segments();
            segments[4..].fill(0);
            IpAddr::V6(segments.into())
        }
    }
}

/// How long after the last failure the next attempt must wait, after `count` failures.
pub fn delay_ms(count: u32) -> u64 {
    if count < LOGIN_FREE_FAILURES {
        return 0;
    }
    let doublings = (count - LOGIN_FREE_FAILURES).min(32);
    LOGIN_DELAY_BASE_MS.saturating_mul(1u64 << doublings).min(LOGIN_DELAY_MAX_MS)
}

impl LoginThrottle {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, IpAddr), Failures>> {
        // A poisoned lock only means a panic elsewhere mid-update of a counter.
        self.failures.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// `Err(ms)`: this pair must wait that long before its next attempt is even checked.
    pub fn check(&self, username: &str, ip: IpAddr, now_ms: u64) -> Result<(), u64> {
        let Some(failures) = self.lock().get(&(username.to_owned(), client_key(ip))).copied() else {
            return Ok(());
        };
        let ready_at = failures.last_ms.saturating_add(delay_ms(failures.count));
        if now_ms >= ready_at {
            Ok(())
        } else {
            Err(ready_at - now_ms)
        }
    }

    pub fn failed(&self, username: &str, ip: IpAddr, now_ms: u64) {
        let mut failures = self.lock();
        if failures.len() > SWEEP_ABOVE {
            failures.retain(|_, f| now_ms.saturating_sub(f.last_ms) < FORGET_AFTER_MS);
        }
        let entry =
            failures.entry((username.to_owned(), client_key(ip))).or_insert(Failures { count: 0, last_ms: now_ms });
        entry.count = entry.count.saturating_add(1);
        entry.last_ms = now_ms;
    }

    pub fn succeeded(&self, username: &str, ip: IpAddr) {
        self.lock().remove(&(username.to_owned(), client_key(ip)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_slow_only_the_failing_address_and_a_success_clears_them() {
        let throttle = LoginThrottle::default();
        let attacker: IpAddr = "192.0.2.1".parse().unwrap();
        let owner: IpAddr = "198.51.100.7".parse().unwrap();
        for i in 0..LOGIN_FREE_FAILURES {
            assert_eq!(throttle.check("alice", attacker, 1_000 + i as u64), Ok(()), "free attempt {i}");
            throttle.failed("alice", attacker, 1_000 + i as u64);
        }
        let last = 1_000 + LOGIN_FREE_FAILURES as u64 - 1;
        assert_eq!(throttle.check("alice", attacker, last), Err(LOGIN_DELAY_BASE_MS));
        // The owner, elsewhere, is not slowed at all; nor is the attacker on another account.
        assert_eq!(throttle.check("alice", owner, last), Ok(()));
        assert_eq!(throttle.check("bob", attacker, last), Ok(()));
        // Each further failure doubles the wait, up to the cap.
        throttle.failed("alice", attacker, last + LOGIN_DELAY_BASE_MS);
        assert_eq!(throttle.check("alice", attacker, last + LOGIN_DELAY_BASE_MS), Err(2 * LOGIN_DELAY_BASE_MS));
        assert_eq!(delay_ms(LOGIN_FREE_FAILURES + 40), LOGIN_DELAY_MAX_MS);
        throttle.succeeded("alice", attacker);
        assert_eq!(throttle.check("alice", attacker, last), Ok(()));
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let throttle = LoginThrottle::default();
        for i in 0..=LOGIN_FREE_FAILURES {
            let ip: IpAddr = format!("2001:db8:1:2::{i:x}").parse().unwrap();
            throttle.failed("alice", ip, 5);
        }
        assert!(throttle.check("alice", "2001:db8:1:2:ffff::1".parse().unwrap(), 5).is_err());
        assert_eq!(throttle.check("alice", "2001:db8:1:3::1".parse().unwrap(), 5), Ok(()));
    }
}
