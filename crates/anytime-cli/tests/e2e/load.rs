//! Smoke versions of the load scenarios (seconds, correctness only): every message delivered,
//! counts match. The full runs are in BENCHMARKS.md.

use crate::support::Harness;

fn ws(h: &Harness) -> String {
    h.server.ws_url()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_scenarios_smoke() {
    let h = Harness::start();
    let config = anytime_load::DurableConfig {
        base_url: h.base(),
        pairs: 4,
        messages_per_sender: 200,
        window: 16,
        payload_bytes: 200,
    };
    let durable = anytime_load::durable(&config, &ws(&h)).await.expect("durable scenario");
    assert_eq!(durable.messages, 800);
    assert!(durable.store_batches > 0);
    let catch_up = anytime_load::catch_up(&h.base(), &ws(&h), 2_000, 200).await.expect("catch-up scenario");
    assert_eq!(catch_up.messages, 2_000);
    let fanout = anytime_load::fanout(&h.base(), &ws(&h), 8, 50).await.expect("fan-out scenario");
    assert_eq!(fanout.deliveries, 400);
    assert!(fanout.last_delivery_ms_p99 >= fanout.last_delivery_ms_p50);
    let pid = h.server.pid();
    let connections =
        anytime_load::connections(&h.base(), &ws(&h), Some(pid), 20, 2).await.expect("connections scenario");
    assert_eq!(connections.connections, 40);
    assert!(connections.server_rss_bytes_per_connection.is_some());
}
