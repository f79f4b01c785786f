//! The shared store conformance cases, on SQLite files in a temporary directory.

use std::sync::Arc;

use anytime_server_core::Metrics;
use anytime_store_sqlite::SqliteStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_passes_every_conformance_case() {
    for case in anytime_store_conformance::CASES {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db"), Arc::new(Metrics::default())).unwrap();
        eprintln!("case {}", case.name);
        (case.run)(Arc::new(store)).await;
    }
}
