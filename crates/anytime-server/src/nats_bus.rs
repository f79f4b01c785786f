//! Cross-node fan-out over NATS: the cluster `Bus` of `anytime-server-core`.
//!
//! Every node publishes its cluster events to one subject, `<prefix>.events`, and subscribes to
//! it, applying every event (its own included) to its local hub. No node needs to know which
//! node holds which device: each delivers to its own connections. Core NATS (not JetStream) is
//! enough because nothing durable travels here — messages are in PostgreSQL before they are
//! announced, and a session that misses an event fills the gap from storage.

use std::sync::Arc;

use anyhow::Context;
use anytime_proto::limits::NATS_PUBLISH_QUEUE_LEN_MAX;
use anytime_server_core::cluster::{Bus, ClusterEvent, PushKind};
use anytime_server_core::ServerCore;
use futures_util::StreamExt;
use tokio::sync::mpsc;

/// Room kept under the server's max_payload for the event's own fields.
const PAYLOAD_HEADROOM_BYTES: usize = 4_096;

pub struct NatsBus {
    queue: mpsc::Sender<Vec<u8>>,
    max_payload: usize,
}

impl Bus for NatsBus {
    fn publish(&self, event: &ClusterEvent) {
        let mut bytes = event.encode();
        if bytes.len() + PAYLOAD_HEADROOM_BYTES > self.max_payload {
            match event {
                // Too large for NATS: announce the seq only; sessions read the message from storage.
                ClusterEvent::Push { devices, kind: kind @ PushKind::Message { .. }, .. } => {
                    bytes =
                        ClusterEvent::Push { devices: devices.clone(), kind: kind.clone(), frame: Vec::new() }.encode();
                }
                // A large Welcome waits in storage and is pushed when the device next connects.
                _ => {
                    tracing::warn!(bytes = bytes.len(), "cluster event too large for NATS; left to storage");
                    return;
                }
            }
        }
        if self.queue.try_send(bytes).is_err() {
            tracing::warn!("cluster publish queue full; receivers will resync from storage");
        }
    }
}

/// Connects to NATS, starts the publisher and the subscriber, and returns the bus plus a setter
/// for the core that the subscriber applies events to (the core is built with the bus first).
pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<(NatsBus, CoreSlot)> {
    let client = async_nats::connect(url).await.with_context(|| format!("while connecting to NATS at {url}"))?;
    let subject = format!("{prefix}.events");
    let max_payload = client.server_info().max_payload;
    let mut subscription =
        client.subscribe(subject.clone()).await.context("while subscribing to the cluster subject")?;
    let (queue, mut rx) = mpsc::channel::<Vec<u8>>(NATS_PUBLISH_QUEUE_LEN_MAX);
    let publisher = client.clone();
    let publish_subject = subject.clone();
    tokio::spawn(async move {
        // One task publishes, so this node's events keep their order.
        while let Some(bytes) = rx.recv().await {
            if let Err(error) = publisher.publish(publish_subject.clone(), bytes.into()).await {
                tracing::warn!(%error, "NATS publish failed; receivers will resync from storage");
            }
        }
    });
    let (slot_tx, slot_rx) = tokio::sync::oneshot::channel::<Arc<ServerCore>>();
    tokio::spawn(async move {
        let Ok(core) = slot_rx.await else { return };
        // Runs for the life of the process; async-nats reconnects by itself.
        while let Some(message) = subscription.next().await {
            match ClusterEvent::decode(&message.payload) {
                Some(event) => core.apply_cluster_event(event),
                None => tracing::warn!(
                    version = message.payload.first().copied(),
                    "cluster event ignored: undecodable, or from a node of another version"
                ),
            }
        }
    });
    Ok((NatsBus { queue, max_payload }, CoreSlot(slot_tx)))
}

/// Hands the finished core to the subscriber task.
pub struct CoreSlot(tokio::sync::oneshot::Sender<Arc<ServerCore>>);

impl CoreSlot {
    pub fn fill(self, core: Arc<ServerCore>) {
        let _ = self.0.send(core);
    }
}
