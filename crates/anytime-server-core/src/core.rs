//! `ServerCore`, the shared state of one server node, and its operator `Config`: construction,
//! joining a cluster, hub effects across nodes, routing and block-list caches, and GC.

use std::sync::Arc;

use anytime_proto::{ConvId, ErrorCode};

use crate::auth::store_code;
use crate::cluster::ApplyToHub;
use crate::hub::{Hub, Route};
use crate::ratelimit::{RateLimiter, RateLimits};
use crate::{cluster, hub, login_throttle, password_gate, store, web_push, Env, Metrics, ServerStore};

/// Operator settings the core needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long a session token is valid after login.
    pub session_ttl_ms: u64,
    /// How long a message is kept for a device that never acknowledges it.
    pub retention_ms: u64,
    pub rate_limits: RateLimits,
    /// argon2id cost for new password hashes: (memory KiB, iterations). Existing hashes keep the
    /// cost they were made with.
    pub argon2_cost: (u32, u32),
    /// Password hashes computed at once (each ~19 MiB); the number of cores by default.
    pub password_hashes_max: usize,
    /// Push endpoints allowed besides the browsers' push services (tests, self-hosted services).
    pub push_endpoint_prefixes: Vec<String>,
    /// How long a red envelope stays open (`ENVELOPE_TTL_MS`; shorter in tests).
    pub envelope_ttl_ms: u64,
    /// How long a payout's money stays held unanswered (`PAYOUT_HOLD_TTL_MS`; shorter in tests).
    pub payout_hold_ttl_ms: u64,
}

/// OWASP's recommended argon2id setting (19 MiB, 2 iterations), the `argon2` crate's default.
pub const ARGON2_COST_DEFAULT: (u32, u32) = (19_456, 2);

impl Default for Config {
    fn default() -> Self {
        Config {
            argon2_cost: ARGON2_COST_DEFAULT,
            password_hashes_max: std::thread::available_parallelism().map_or(2, |n| n.get()),
            session_ttl_ms: 90 * 24 * 3_600_000,
            retention_ms: 30 * 24 * 3_600_000,
            rate_limits: RateLimits::default(),
            push_endpoint_prefixes: Vec::new(),
            envelope_ttl_ms: anytime_proto::limits::ENVELOPE_TTL_MS,
            payout_hold_ttl_ms: anytime_proto::limits::PAYOUT_HOLD_TTL_MS,
        }
    }
}

/// Shared state of one server node.
pub struct ServerCore {
    pub(crate) bus: Option<Arc<dyn cluster::Bus>>,
    pub(crate) pusher: Option<web_push::Pusher>,
    /// Random id of this node in a cluster.
    pub(crate) node: u64,
    pub(crate) store: Arc<dyn ServerStore>,
    pub(crate) env: Arc<dyn Env>,
    pub(crate) hub: Hub,
    pub(crate) limiter: RateLimiter,
    pub(crate) login_throttle: login_throttle::LoginThrottle,
    pub(crate) password_gate: password_gate::PasswordGate,
    pub(crate) config: Config,
    pub metrics: Arc<Metrics>,
    /// Set by [`ServerCore::with_wallet`].
    pub(crate) wallet: Option<Arc<crate::wallet::Wallet>>,
    /// Set by [`ServerCore::with_blobs`].
    pub(crate) blobs: Option<Arc<crate::blobs::Blobs>>,
}

impl ServerCore {
    pub fn new(store: Arc<dyn ServerStore>, env: Arc<dyn Env>, metrics: Arc<Metrics>, config: Config) -> ServerCore {
        let node = {
            use crate::env::EnvExt;
            env.random_u64()
        };
        ServerCore {
            bus: None,
            pusher: None,
            node,
            store,
            env,
            hub: Hub::default(),
            limiter: RateLimiter::new(config.rate_limits.clone()),
            login_throttle: login_throttle::LoginThrottle::default(),
            password_gate: password_gate::PasswordGate::new(config.password_hashes_max),
            config,
            metrics,
            wallet: None,
            blobs: None,
        }
    }

    /// Joins a cluster: from now on hub effects go through `bus`, and the shell must hand every
    /// event it receives from the bus to [`ServerCore::apply_cluster_event`].
    pub fn with_bus(mut self, bus: Arc<dyn cluster::Bus>) -> ServerCore {
        self.bus = Some(bus);
        self
    }

    /// An event from the cluster bus (published by any node, this one included).
    pub fn apply_cluster_event(&self, event: cluster::ClusterEvent) {
        event.apply(&self.hub, self.node, self.env.now_ms());
    }

    /// Tells the cluster which users are online on this node; the shell calls it periodically.
    pub fn heartbeat(&self) {
        if self.bus.is_some() {
            self.cluster(cluster::ClusterEvent::Heartbeat { node: self.node, users: self.hub.local_online_users() });
        }
    }

    pub(crate) fn presence_changed(&self, user: anytime_proto::UserId, online: bool) {
        self.cluster(cluster::ClusterEvent::Presence { node: self.node, user, online });
    }

    /// Applies a hub effect on every node: directly when alone, through the bus in a cluster.
    pub(crate) fn cluster(&self, event: cluster::ClusterEvent) {
        match &self.bus {
            Some(bus) => bus.publish(&event),
            None => event.apply(&self.hub, self.node, self.env.now_ms()),
        }
    }

    /// Hands `push` to these devices' connections on whichever node holds them.
    pub(crate) fn push<'a>(&self, devices: impl IntoIterator<Item = &'a anytime_proto::DeviceId>, push: &hub::Push) {
        match &self.bus {
            None => {
                self.hub.push_to_devices(devices, push);
            }
            Some(bus) => bus.publish(&cluster::push_event(devices.into_iter().copied().collect(), push)),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.env.now_ms()
    }

    /// One garbage-collection pass; the shell runs it periodically.
    pub async fn collect_garbage(&self) -> Result<store::Collected, ErrorCode> {
        let collected =
            self.store.collect_garbage(self.env.now_ms(), self.config.retention_ms).await.map_err(store_code)?;
        self.metrics.gc_deleted_messages.fetch_add(collected.messages, std::sync::atomic::Ordering::Relaxed);
        // An expired session ends now, not at its next reconnect.
        for device in &collected.expired_devices {
            self.cluster(cluster::ClusterEvent::RevokeDevice(*device));
        }
        if !collected.expired_devices.is_empty() {
            self.cluster(cluster::ClusterEvent::InvalidateAllRoutes);
        }
        Ok(collected)
    }

    /// Makes all acknowledged writes durable; call on shutdown after connections closed.
    pub async fn flush(&self) -> Result<(), ErrorCode> {
        self.store.flush().await.map_err(store_code)
    }

    /// Routing facts of a conversation, from the cache or loaded from storage.
    pub(crate) async fn route(&self, conv: ConvId) -> Result<Option<Arc<Route>>, ErrorCode> {
        if let Some(route) = self.hub.route(conv) {
            return Ok(Some(route));
        }
        let generation = self.hub.cache_generation();
        let Some(conversation) = self.store.conversation(conv).await.map_err(store_code)? else {
            return Ok(None);
        };
        let recipients = self.store.member_devices(conv).await.map_err(store_code)?;
        let route = Arc::new(Route { kind: conversation.kind, recipients });
        self.hub.insert_route(conv, route.clone(), generation);
        Ok(Some(route))
    }

    /// An account gained or lost a device: tell every member device of each of its
    /// conversations, so their clients add or remove it in the MLS group.
    pub(crate) async fn announce_devices_changed(&self, user: anytime_proto::UserId) {
        let conversations = match self.store.conversations_of(user).await {
            Ok(conversations) => conversations,
            Err(error) => {
                tracing::warn!(%error, "could not announce a device change");
                return;
            }
        };
        for summary in conversations {
            let conv = summary.conv;
            self.cluster(cluster::ClusterEvent::InvalidateRoute(conv));
            let Ok(devices) = self.store.member_devices(conv).await else { continue };
            let changed = anytime_proto::frame::ConversationChanged { conv, removed: false };
            let frame = bytes::Bytes::from(anytime_proto::encode_server(
                0,
                &anytime_proto::ServerFrame::ConversationChanged(changed),
            ));
            self.push(devices.iter().map(|(_, d)| d), &hub::Push::Membership { conv, frame });
        }
    }

    /// Whether `blocker` has blocked `blocked`, from the cache or storage.
    pub(crate) async fn is_blocked(
        &self,
        blocker: anytime_proto::UserId,
        blocked: anytime_proto::UserId,
    ) -> Result<bool, ErrorCode> {
        if let Some(set) = self.hub.blocked_by(blocker) {
            return Ok(set.contains(&blocked));
        }
        let list = self.store.blocked_by(blocker).await.map_err(store_code)?;
        let set: std::collections::HashSet<_> = list.into_iter().collect();
        let answer = set.contains(&blocked);
        self.hub.set_blocked_by(blocker, set);
        Ok(answer)
    }
}
