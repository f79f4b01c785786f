//! The shared store conformance cases, each on a fresh, empty `MemoryStore`.

use std::sync::Arc;

use anytime_store_memory::MemoryStore;

#[tokio::test]
async fn memory_store_passes_every_conformance_case() {
    for case in anytime_store_conformance::CASES {
        let store = MemoryStore::new();
        eprintln!("case {}", case.name);
        (case.run)(Arc::new(store)).await;
    }
}
