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
        server_pid: Some(h.server.pid()),
    };
    let durable = anytime_load::durable(&config, &ws(&h)).await.expect("durable scenario");
    assert_eq!(durable.messages, 800);
    assert!(durable.store_batches > 0);
    let catch_up = anytime_load::catch_up(&h.base(), &ws(&h), 2_000, 200).await.expect("catch-up scenario");
    assert_eq!(catch_up.messages, 2_000);
    let fanout = anytime_load::fanout(&h.base(), &ws(&h), 8, 50, 200).await.expect("fan-out scenario");
    assert_eq!(fanout.deliveries, 400);
    assert!(fanout.last_delivery_ms_p99 >= fanout.last_delivery_ms_p50);
    let pid = h.server.pid();
    let connections =
        anytime_load::connections(&h.base(), &ws(&h), Some(pid), 20, 2).await.expect("connections scenario");
    assert_eq!(connections.connections, 40);
    assert!(connections.server_rss_bytes_per_connection.is_some());
}

/// Open-loop latency (scenario 2): the closed-loop maximum first, then a fixed-rate schedule at a
/// fraction of it; every scheduled message arrives, in order, and is timed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_latency_smoke() {
    let h = Harness::start();
    let config = anytime_load::LatencyConfig {
        base_url: h.base(),
        pairs: 4,
        rate: 400.0,
        seconds: 1.0,
        warmup_seconds: 0.0,
        payload_bytes: 200,
        server_pid: Some(h.server.pid()),
    };
    let run = anytime_load::open_loop(&config, &ws(&h)).await.expect("open-loop run");
    assert_eq!(run.messages, 400);
    assert_eq!(run.latency.samples, 400, "every message timed");
    assert!(run.latency.p50_ms > 0.0 && run.latency.p99_ms >= run.latency.p50_ms);
    assert!(run.latency.p999_ms >= run.latency.p99_ms && run.latency.max_ms >= run.latency.p999_ms);
    assert!(run.cpu.server_cores.is_some_and(|c| c > 0.0), "server CPU measured");
    let max = anytime_load::DurableConfig {
        base_url: h.base(),
        pairs: 4,
        messages_per_sender: 100,
        window: 16,
        payload_bytes: 200,
        server_pid: Some(h.server.pid()),
    };
    let config = anytime_load::LatencyConfig { warmup_seconds: 0.2, ..config };
    let sweep = anytime_load::sweep(&config, &ws(&h), Some(max), &[0.1]).await.expect("latency sweep");
    let max = sweep.max.expect("the maximum was measured");
    assert_eq!(max.messages, 400);
    let (fraction, run) = &sweep.runs[0];
    assert_eq!(*fraction, 0.1);
    assert!((run.target_rate - max.messages_per_second * 0.1).abs() < 1e-6);
    assert_eq!(run.messages % 4, 0);
    assert!(run.latency.samples > 0 && run.latency.samples <= run.messages as u64);
}
