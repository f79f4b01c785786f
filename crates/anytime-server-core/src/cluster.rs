//! The seam between one node's hub and the other nodes of a cluster.
//!
//! Everything a node does to connections (push a frame, close a revoked device) or to the hot-path
//! caches (routes, block lists, presence privacy) is a [`ClusterEvent`]. Without a bus (one node)
//! the event is applied to the local hub at once. With a bus (NATS in `anytime-server`), the
//! event is published and every node — the sender included — applies it when it arrives, so a
//! device connected to any node gets what was stored on any other, and no node keeps a stale
//! cache. Order: events from one node arrive in publication order; sessions fill any gap across
//! nodes from storage (see `session.rs`), so delivery stays exactly-once and in order.

pub use anytime_proto::cluster::{ClusterEvent, PushKind};
use anytime_proto::DeviceId;
use bytes::Bytes;

use crate::hub::{Hub, Push};

/// Carries events to every node of the cluster.
pub trait Bus: Send + Sync + 'static {
    /// Never blocks; a bus that cannot keep up drops the event and relies on storage resync
    /// (sessions catch up from their cursors; caches are reloaded on their next miss).
    fn publish(&self, event: &ClusterEvent);
}

/// Applies cluster events to this node's hub.
pub(crate) trait ApplyToHub {
    /// Applies the event to this node's hub. `local_node` identifies this node; `now_ms` is
    /// this node's clock.
    fn apply(self, hub: &Hub, local_node: u64, now_ms: u64);
}

impl ApplyToHub for ClusterEvent {
    fn apply(self, hub: &Hub, local_node: u64, now_ms: u64) {
        match self {
            ClusterEvent::Push { devices, kind, frame } => {
                let frame = Bytes::from(frame);
                let push = match kind {
                    PushKind::Message { conv, seq } => Push::Message { conv, seq, frame },
                    PushKind::Membership { conv } => Push::Membership { conv, frame },
                    PushKind::Frame => Push::Frame(frame),
                };
                hub.push_to_devices(&devices, &push);
            }
            ClusterEvent::RevokeDevice(device) => hub.revoke_device(device),
            ClusterEvent::InvalidateRoute(conv) => hub.invalidate_route(conv),
            ClusterEvent::InvalidateAllRoutes => hub.invalidate_all_recipients(),
            ClusterEvent::ForgetBlocks(user) => hub.forget_blocks(user),
            ClusterEvent::SetPrivacy(user, privacy) => hub.set_privacy(user, privacy),
            ClusterEvent::Presence { node, user, online } => {
                if node != local_node {
                    hub.remote_presence_changed(node, user, online, now_ms);
                }
                hub.announce_presence(user);
            }
            ClusterEvent::Heartbeat { node, users } => {
                if node != local_node {
                    for user in hub.remote_heartbeat(node, users, now_ms) {
                        hub.announce_presence(user);
                    }
                }
            }
        }
    }
}

/// Splits a hub push into its wire form.
pub(crate) fn push_event(devices: Vec<DeviceId>, push: &Push) -> ClusterEvent {
    let (kind, frame) = match push {
        Push::Message { conv, seq, frame } => (PushKind::Message { conv: *conv, seq: *seq }, frame),
        Push::Membership { conv, frame } => (PushKind::Membership { conv: *conv }, frame),
        Push::Frame(frame) => (PushKind::Frame, frame),
    };
    ClusterEvent::Push { devices, kind, frame: frame.to_vec() }
}

#[cfg(test)]
mod tests {
    use anytime_proto::UserId;

    use super::*;

    #[test]
    fn remote_presence_counts_until_its_node_falls_silent() {
        let hub = Hub::default();
        let user = UserId(7);
        ClusterEvent::Presence { node: 2, user, online: true }.apply(&hub, 1, 1_000);
        assert!(hub.presence_of(user).online);
        // This node's own events do not create remote state.
        ClusterEvent::Presence { node: 1, user: UserId(8), online: true }.apply(&hub, 1, 1_000);
        assert!(!hub.presence_of(UserId(8)).online);
        // Node 3's heartbeat 20 s later: node 2 has been silent too long, its user is offline.
        ClusterEvent::Heartbeat { node: 3, users: vec![] }.apply(
            &hub,
            1,
            1_000 + anytime_proto::limits::NODE_SILENCE_MAX_MS + 5_000,
        );
        assert!(!hub.presence_of(user).online);
    }
}
