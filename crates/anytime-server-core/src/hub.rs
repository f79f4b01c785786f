//! The hub: which device connections are open on this node, and the in-process fan-out to them.
//!
//! Also caches what the hot path would otherwise read per message: a conversation's recipient
//! devices and its kind, and each account's block list. Every cache is invalidated by the code
//! path that changes the underlying rows; a generation counter keeps a slow loader from
//! re-inserting a stale entry after an invalidation.
//!
//! Fan-out never blocks: a connection whose queue is full is marked lagging and resyncs from
//! storage by itself (`crate::session`), so one slow reader cannot stall a sender.
//! Scale-out (several nodes) puts a bus between `publish_*` and the remote nodes' hubs.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use anytime_proto::frame::{ConvKind, PresenceEvent, PresencePrivacy, Seq};
use anytime_proto::limits::{NODE_SILENCE_MAX_MS, SEND_QUEUE_LEN_MAX};
use anytime_proto::{encode_server, ConvId, DeviceId, ServerFrame, UserId};
use bytes::Bytes;
use tokio::sync::{mpsc, Notify};

use crate::outbound::Outbound;

/// What the hub hands to a connection.
#[derive(Debug, Clone)]
pub enum Push {
    /// Stored message `seq` of `conv`, already encoded as a `Message` frame (encoded once,
    /// shared by every recipient).
    Message { conv: ConvId, seq: Seq, frame: Bytes },
    /// Membership or metadata of `conv` changed for this account; the frame tells the client.
    Membership { conv: ConvId, frame: Bytes },
    /// Any other frame, sent as is (typing, presence, welcome, key-package warnings).
    Frame(Bytes),
}

impl Push {
    /// Bytes this push puts on the wire.
    pub fn wire_bytes(&self) -> u64 {
        match self {
            Push::Message { frame, .. } | Push::Membership { frame, .. } | Push::Frame(frame) => frame.len() as u64,
        }
    }
}

/// Out-of-band signals for one connection, checked even when its queue is full.
#[derive(Debug, Default)]
pub struct ConnSignal {
    pub lagged: AtomicBool,
    pub revoked: AtomicBool,
    pub notify: Notify,
}

struct Conn {
    id: u64,
    tx: mpsc::Sender<Push>,
    signal: Arc<ConnSignal>,
    outbound: Arc<Outbound>,
}

/// A conversation's cached routing facts.
#[derive(Debug)]
pub struct Route {
    pub kind: ConvKind,
    /// Every (member, device) pair.
    pub recipients: Vec<(UserId, DeviceId)>,
}

impl Route {
    pub fn has_member(&self, user: UserId) -> bool {
        self.recipients.iter().any(|(u, _)| *u == user)
    }
}

#[derive(Default)]
struct UserPresence {
    connections: u32,
    last_seen_ms: Option<u64>,
}

/// What this node knows of another node's online users.
struct RemoteNode {
    heard_at_ms: u64,
    online: HashSet<UserId>,
    last_seen_ms: HashMap<UserId, u64>,
}

/// A connection subscribed to presence: (device, connection id).
type WatcherKey = (DeviceId, u64);

#[derive(Default)]
pub struct Hub {
    next_conn_id: AtomicU64,
    conns: RwLock<HashMap<DeviceId, Vec<Conn>>>,
    presence: Mutex<HashMap<UserId, UserPresence>>,
    /// Watched user -> watching connection -> whether the watcher is a contact.
    watchers: Mutex<HashMap<UserId, HashMap<WatcherKey, bool>>>,
    privacy: RwLock<HashMap<UserId, PresencePrivacy>>,
    routes: RwLock<HashMap<ConvId, Arc<Route>>>,
    /// Presence on other nodes of a cluster: node id -> (last heard, users online there).
    remote_presence: Mutex<HashMap<u64, RemoteNode>>,
    blocks: RwLock<HashMap<UserId, Arc<HashSet<UserId>>>>,
    cache_generation: AtomicU64,
}

/// Read a lock even if a panicking thread poisoned it: the maps stay structurally valid.
macro_rules! read {
    ($lock:expr) => {
        $lock.read().unwrap_or_else(|poison| poison.into_inner())
    };
}
macro_rules! write {
    ($lock:expr) => {
        $lock.write().unwrap_or_else(|poison| poison.into_inner())
    };
}
macro_rules! lock {
    ($lock:expr) => {
        $lock.lock().unwrap_or_else(|poison| poison.into_inner())
    };
}

pub struct Registered {
    pub conn_id: u64,
    pub rx: mpsc::Receiver<Push>,
    pub signal: Arc<ConnSignal>,
    /// This is the account's first open connection.
    pub came_online: bool,
}

impl Hub {
    pub fn connection_count(&self, user: UserId) -> u32 {
        lock!(self.presence).get(&user).map_or(0, |p| p.connections)
    }

    /// `outbound` counts the connection's queued bytes: a push that would take it past the
    /// bound is not queued (the connection is marked lagging instead).
    pub fn register(&self, user: UserId, device: DeviceId, outbound: Arc<Outbound>) -> Registered {
        let conn_id = self.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(SEND_QUEUE_LEN_MAX as usize);
        let signal = Arc::new(ConnSignal::default());
        write!(self.conns).entry(device).or_default().push(Conn { id: conn_id, tx, signal: signal.clone(), outbound });
        let came_online = {
            let mut presence = lock!(self.presence);
            let entry = presence.entry(user).or_default();
            entry.connections += 1;
            entry.connections == 1
        };
        Registered { conn_id, rx, signal, came_online }
    }

    /// Returns whether the account has no open connection left.
    pub fn unregister(&self, user: UserId, device: DeviceId, conn_id: u64, now_ms: u64) -> bool {
        {
            let mut conns = write!(self.conns);
            if let Some(list) = conns.get_mut(&device) {
                list.retain(|c| c.id != conn_id);
                if list.is_empty() {
                    conns.remove(&device);
                }
            }
        }
        {
            let mut watchers = lock!(self.watchers);
            watchers.retain(|_, by| {
                by.remove(&(device, conn_id));
                !by.is_empty()
            });
        }
        let mut presence = lock!(self.presence);
        let entry = presence.entry(user).or_default();
        entry.connections = entry.connections.saturating_sub(1);
        if entry.connections == 0 {
            entry.last_seen_ms = Some(now_ms);
            return true;
        }
        false
    }

    /// Whether the device has an open connection on this node.
    pub fn device_connected(&self, device: DeviceId) -> bool {
        read!(self.conns).get(&device).is_some_and(|list| !list.is_empty())
    }

    /// Hands `push` to every open connection of each device; never waits.
    pub fn push_to_devices<'a>(&self, devices: impl IntoIterator<Item = &'a DeviceId>, push: &Push) -> u64 {
        let conns = read!(self.conns);
        let mut delivered = 0;
        for device in devices {
            let Some(list) = conns.get(device) else { continue };
            for conn in list {
                // The connection takes it out of the count when it dequeues it.
                if !conn.outbound.try_add(push.wire_bytes()) {
                    conn.signal.lagged.store(true, Ordering::Release);
                    conn.signal.notify.notify_one();
                    continue;
                }
                match conn.tx.try_send(push.clone()) {
                    Ok(()) => delivered += 1,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        conn.outbound.remove(push.wire_bytes());
                        conn.signal.lagged.store(true, Ordering::Release);
                        conn.signal.notify.notify_one();
                    }
                    // The connection is closing; it resumes from its cursor next time.
                    Err(mpsc::error::TrySendError::Closed(_)) => conn.outbound.remove(push.wire_bytes()),
                }
            }
        }
        delivered
    }

    /// Closes every connection of a revoked device.
    pub fn revoke_device(&self, device: DeviceId) {
        if let Some(list) = read!(self.conns).get(&device) {
            for conn in list {
                conn.signal.revoked.store(true, Ordering::Release);
                conn.signal.notify.notify_one();
            }
        }
    }

    // ---- routes cache

    pub fn route(&self, conv: ConvId) -> Option<Arc<Route>> {
        read!(self.routes).get(&conv).cloned()
    }

    /// Generation to pass to `insert_route`, read before loading from storage.
    pub fn cache_generation(&self) -> u64 {
        self.cache_generation.load(Ordering::Acquire)
    }

    pub fn insert_route(&self, conv: ConvId, route: Arc<Route>, generation: u64) {
        let mut routes = write!(self.routes);
        // Checked under the write lock, so an invalidation that happened during the load wins.
        if self.cache_generation.load(Ordering::Acquire) == generation {
            routes.insert(conv, route);
        }
    }

    pub fn invalidate_route(&self, conv: ConvId) {
        let mut routes = write!(self.routes);
        self.cache_generation.fetch_add(1, Ordering::AcqRel);
        routes.remove(&conv);
    }

    /// After a device was added or revoked: every conversation of that account changed.
    pub fn invalidate_all_recipients(&self) {
        let mut routes = write!(self.routes);
        self.cache_generation.fetch_add(1, Ordering::AcqRel);
        routes.clear();
    }

    // ---- blocks cache

    pub fn blocked_by(&self, blocker: UserId) -> Option<Arc<HashSet<UserId>>> {
        read!(self.blocks).get(&blocker).cloned()
    }

    pub fn set_blocked_by(&self, blocker: UserId, blocked: HashSet<UserId>) {
        write!(self.blocks).insert(blocker, Arc::new(blocked));
    }

    pub fn forget_blocks(&self, blocker: UserId) {
        write!(self.blocks).remove(&blocker);
    }

    // ---- presence

    pub fn set_privacy(&self, user: UserId, privacy: PresencePrivacy) {
        write!(self.privacy).insert(user, privacy);
    }

    pub fn privacy(&self, user: UserId) -> Option<PresencePrivacy> {
        read!(self.privacy).get(&user).copied()
    }

    /// Online if any node (this one, or a live one of the cluster) has a connection of `user`.
    pub fn presence_of(&self, user: UserId) -> PresenceEvent {
        let (local_online, mut last_seen) = match lock!(self.presence).get(&user) {
            Some(p) => (p.connections > 0, p.last_seen_ms),
            None => (false, None),
        };
        let remote = lock!(self.remote_presence);
        let remote_online = remote.values().any(|node| node.online.contains(&user));
        for node in remote.values() {
            if let Some(seen) = node.last_seen_ms.get(&user) {
                last_seen = Some(last_seen.map_or(*seen, |l| l.max(*seen)));
            }
        }
        if local_online || remote_online {
            return PresenceEvent { user, online: true, last_seen_ms: None };
        }
        PresenceEvent { user, online: false, last_seen_ms: last_seen }
    }

    /// Users with a connection on this node (for cluster heartbeats).
    pub fn local_online_users(&self) -> Vec<UserId> {
        lock!(self.presence).iter().filter(|(_, p)| p.connections > 0).map(|(u, _)| *u).collect()
    }

    /// Another node says `user` came online or went offline there.
    pub fn remote_presence_changed(&self, node: u64, user: UserId, online: bool, now_ms: u64) {
        let mut remote = lock!(self.remote_presence);
        let entry = remote.entry(node).or_insert_with(|| RemoteNode {
            heard_at_ms: now_ms,
            online: HashSet::new(),
            last_seen_ms: HashMap::new(),
        });
        entry.heard_at_ms = now_ms;
        if online {
            entry.online.insert(user);
        } else {
            entry.online.remove(&user);
            entry.last_seen_ms.insert(user, now_ms);
        }
    }

    /// Another node's full list of online users; forgets nodes silent for too long. Returns the
    /// users whose presence changed (to announce).
    pub fn remote_heartbeat(&self, node: u64, users: Vec<UserId>, now_ms: u64) -> Vec<UserId> {
        let mut remote = lock!(self.remote_presence);
        let mut changed = Vec::new();
        let users: HashSet<UserId> = users.into_iter().collect();
        let entry = remote.entry(node).or_insert_with(|| RemoteNode {
            heard_at_ms: now_ms,
            online: HashSet::new(),
            last_seen_ms: HashMap::new(),
        });
        entry.heard_at_ms = now_ms;
        changed.extend(users.symmetric_difference(&entry.online).copied());
        entry.online = users;
        remote.retain(|_, node| {
            let alive = now_ms.saturating_sub(node.heard_at_ms) <= NODE_SILENCE_MAX_MS;
            if !alive {
                changed.extend(node.online.iter().copied());
            }
            alive
        });
        changed
    }

    /// Replaces the watcher's subscriptions: `(watched user, watcher is a contact)`.
    pub fn watch(&self, watcher: WatcherKey, users: &[(UserId, bool)]) {
        let mut watchers = lock!(self.watchers);
        watchers.retain(|_, by| {
            by.remove(&watcher);
            !by.is_empty()
        });
        for (user, contact) in users {
            watchers.entry(*user).or_default().insert(watcher, *contact);
        }
    }

    /// Tells the allowed watchers of `user` that it came online or went offline.
    pub fn announce_presence(&self, user: UserId) {
        let privacy = self.privacy(user).unwrap_or(PresencePrivacy::Contacts);
        if privacy == PresencePrivacy::Nobody {
            return;
        }
        let targets: Vec<DeviceId> = match lock!(self.watchers).get(&user) {
            Some(by) => by
                .iter()
                .filter(|(_, contact)| privacy == PresencePrivacy::Everyone || **contact)
                .map(|((device, _), _)| *device)
                .collect(),
            None => return,
        };
        let frame = Bytes::from(encode_server(0, &ServerFrame::PresenceEvent(self.presence_of(user))));
        self.push_to_devices(&targets, &Push::Frame(frame));
    }
}
