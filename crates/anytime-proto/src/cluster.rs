//! Events between the server nodes of a cluster (published on NATS by `anytime-server`, applied
//! by each node's hub in `anytime-server-core`): pushes to connections, revocations, cache
//! invalidations, presence. Their byte layout lives here with every other wire format; the
//! first byte is [`CLUSTER_EVENT_VERSION`].

use serde::{Deserialize, Serialize};

use crate::frame::{PresencePrivacy, Seq};
use crate::{ConvId, DeviceId, UserId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PushKind {
    Message { conv: ConvId, seq: Seq },
    Membership { conv: ConvId },
    Frame,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClusterEvent {
    /// Hand an encoded server frame to these devices' connections, wherever they are.
    Push {
        devices: Vec<DeviceId>,
        kind: PushKind,
        frame: Vec<u8>,
    },
    /// Close every connection of a revoked device.
    RevokeDevice(DeviceId),
    InvalidateRoute(ConvId),
    InvalidateAllRoutes,
    ForgetBlocks(UserId),
    SetPrivacy(UserId, PresencePrivacy),
    /// `user` got its first, or closed its last, connection on `node`.
    Presence {
        node: u64,
        user: UserId,
        online: bool,
    },
    /// Every few seconds: the users online on `node`. A node not heard from for
    /// `limits::NODE_SILENCE_MAX_MS` is presumed dead and its users offline.
    Heartbeat {
        node: u64,
        users: Vec<UserId>,
    },
}

/// The first byte of every encoded event. Bumped when `ClusterEvent` changes shape: a node then
/// drops events of another version instead of misreading them (during a rolling upgrade the
/// sessions fill what they miss from storage, and caches reload on their next miss).
pub const CLUSTER_EVENT_VERSION: u8 = 1;

impl ClusterEvent {
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = vec![CLUSTER_EVENT_VERSION];
        // Plain data into a Vec cannot fail.
        bytes.extend(postcard::to_allocvec(self).expect("cluster events serialise"));
        bytes
    }

    /// `None` for garbage and for events of another version.
    pub fn decode(bytes: &[u8]) -> Option<ClusterEvent> {
        match bytes.split_first() {
            Some((&CLUSTER_EVENT_VERSION, rest)) => postcard::from_bytes(rest).ok(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_garbage_is_rejected() {
        let event = ClusterEvent::Push {
            devices: vec![DeviceId(1), DeviceId(2)],
            kind: PushKind::Message { conv: ConvId(3), seq: 4 },
            frame: vec![1, 2, 3],
        };
        let bytes = event.encode();
        assert_eq!(bytes[0], CLUSTER_EVENT_VERSION);
        assert_eq!(ClusterEvent::decode(&bytes), Some(event));
        assert_eq!(ClusterEvent::decode(&[0xff, 0xff, 0xff]), None);
        assert_eq!(ClusterEvent::decode(&[]), None);
        // The same body under another version is dropped, not misread.
        let mut other_version = bytes.clone();
        other_version[0] = CLUSTER_EVENT_VERSION + 1;
        assert_eq!(ClusterEvent::decode(&other_version), None);
    }
}
