//! Token-bucket rate limits keyed by account or IP address. In memory per node: a limit is a
//! guard against abuse, not an accounting record, so losing it on restart is fine.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use anytime_proto::UserId;

/// What is limited; each kind has its own [`Rate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    RegisterPerIp,
    LoginPerIp,
    KeyPackageClaimPerAccount,
    KeyPackageClaimPerTarget,
    KeyPackageClaimPerPair,
    SendPerAccount,
    SendPerIp,
    RequestPerAccount,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_second: f64,
    /// Bucket size: how many may come at once.
    pub burst: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RateLimits {
    pub register_per_ip: Rate,
    pub login_per_ip: Rate,
    /// Key-package claims by one account: a group of thousands is built in one burst.
    pub key_package_claims_per_account: Rate,
    /// Claims of one account's key packages by everyone: what a stranger could drain.
    pub key_package_claims_per_target: Rate,
    /// Claims of one account's packages by one other account: a few per conversation change.
    pub key_package_claims_per_pair: Rate,
    pub send_per_account: Rate,
    /// Generous: many accounts may share one address (NAT), this only stops floods.
    pub send_per_ip: Rate,
    pub request_per_account: Rate,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            register_per_ip: Rate { per_second: 10.0 / 60.0, burst: 20.0 },
            login_per_ip: Rate { per_second: 1.0, burst: 30.0 },
            key_package_claims_per_account: Rate { per_second: 5.0, burst: 2_000.0 },
            key_package_claims_per_target: Rate { per_second: 1.0, burst: 120.0 },
            key_package_claims_per_pair: Rate { per_second: 1.0 / 60.0, burst: 10.0 },
            send_per_account: Rate { per_second: 500.0, burst: 5_000.0 },
            send_per_ip: Rate { per_second: 5_000.0, burst: 50_000.0 },
            request_per_account: Rate { per_second: 50.0, burst: 500.0 },
        }
    }
}

impl RateLimits {
    /// Limits so high they never trigger (benchmarks, load tests).
    pub fn unlimited() -> RateLimits {
        let rate = Rate { per_second: 1e12, burst: 1e12 };
        RateLimits {
            register_per_ip: rate,
            login_per_ip: rate,
            key_package_claims_per_account: rate,
            key_package_claims_per_target: rate,
            key_package_claims_per_pair: rate,
            send_per_account: rate,
            send_per_ip: rate,
            request_per_account: rate,
        }
    }

    fn rate(&self, kind: LimitKind) -> Rate {
        match kind {
            LimitKind::RegisterPerIp => self.register_per_ip,
            LimitKind::LoginPerIp => self.login_per_ip,
            LimitKind::KeyPackageClaimPerAccount => self.key_package_claims_per_account,
            LimitKind::KeyPackageClaimPerTarget => self.key_package_claims_per_target,
            LimitKind::KeyPackageClaimPerPair => self.key_package_claims_per_pair,
            LimitKind::SendPerAccount => self.send_per_account,
            LimitKind::SendPerIp => self.send_per_ip,
            LimitKind::RequestPerAccount => self.request_per_account,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitKey {
    Ip(IpAddr),
    Account(UserId),
    /// (claimer, target) and similar ordered pairs of accounts.
    Pair(UserId, UserId),
}

struct Bucket {
    tokens: f64,
    updated_ms: u64,
}

/// Buckets are sharded by key hash so unrelated accounts do not contend on one lock.
pub struct RateLimiter {
    limits: RateLimits,
    shards: Vec<Mutex<HashMap<(LimitKind, LimitKey), Bucket>>>,
}

const SHARDS: usize = 16;
/// Buckets idle this long are full again and can be forgotten.
const IDLE_FORGET_MS: u64 = 3_600_000;

impl RateLimiter {
    pub fn new(limits: RateLimits) -> RateLimiter {
        RateLimiter { limits, shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect() }
    }

    /// Takes one token; `false` means the caller is over its limit.
    pub fn check(&self, kind: LimitKind, key: LimitKey, now_ms: u64) -> bool {
        let rate = self.limits.rate(kind);
        let shard = &self.shards[shard_of(&kind, &key)];
        // A poisoned lock only means another thread panicked mid-update of a counter; the
        // map is still usable.
        let mut buckets = shard.lock().unwrap_or_else(|poison| poison.into_inner());
        if buckets.len() > 100_000 {
            buckets.retain(|_, b| now_ms.saturating_sub(b.updated_ms) < IDLE_FORGET_MS);
        }
        let bucket = buckets.entry((kind, key)).or_insert(Bucket { tokens: rate.burst, updated_ms: now_ms });
        let elapsed_s = now_ms.saturating_sub(bucket.updated_ms) as f64 / 1000.0;
        bucket.tokens = (bucket.tokens + elapsed_s * rate.per_second).min(rate.burst);
        bucket.updated_ms = now_ms;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn shard_of(kind: &LimitKind, key: &LimitKey) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    kind.hash(&mut hasher);
    key.hash(&mut hasher);
    (hasher.finish() as usize) % SHARDS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_refills_with_time() {
        let limits = RateLimits { login_per_ip: Rate { per_second: 1.0, burst: 3.0 }, ..RateLimits::default() };
        let limiter = RateLimiter::new(limits);
        let ip = LimitKey::Ip("127.0.0.1".parse().unwrap());
        for _ in 0..3 {
            assert!(limiter.check(LimitKind::LoginPerIp, ip.clone(), 1_000));
        }
        assert!(!limiter.check(LimitKind::LoginPerIp, ip.clone(), 1_000));
        // Another key and another kind are independent.
        assert!(limiter.check(LimitKind::LoginPerIp, LimitKey::Ip("127.0.0.2".parse().unwrap()), 1_000));
        assert!(limiter.check(LimitKind::RegisterPerIp, ip.clone(), 1_000));
        // One second later exactly one more token is there.
        assert!(limiter.check(LimitKind::LoginPerIp, ip.clone(), 2_000));
        assert!(!limiter.check(LimitKind::LoginPerIp, ip, 2_000));
    }
}
