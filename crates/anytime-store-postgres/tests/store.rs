//! The shared store conformance cases, on PostgreSQL: each case gets its own fresh database,
//! created on the server named by `ANYTIME_TEST_PG_URL` (CI sets it) and dropped afterwards.

use std::sync::Arc;

use anytime_store_postgres::PgStore;

async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, connection) =
        tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect to PostgreSQL");
    tokio::spawn(connection);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: ANYTIME_TEST_PG_URL, then -- --ignored (cargo xtask test does both when it is set)"]
async fn postgres_store_passes_every_conformance_case() {
    let Ok(base) = std::env::var("ANYTIME_TEST_PG_URL") else {
        panic!("set ANYTIME_TEST_PG_URL (e.g. postgres://postgres@127.0.0.1:5432/postgres) to run this test");
    };
    let admin = admin(&base).await;
    let run = std::process::id();
    for (i, case) in anytime_store_conformance::CASES.iter().enumerate() {
        let db = format!("anytime_conformance_{run}_{i}");
        // One statement per call: multi-statement strings run as one transaction block.
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {db}")).await.unwrap();
        admin.batch_execute(&format!("CREATE DATABASE {db}")).await.unwrap();
        let url = format!("{}/{db}", base.rsplit_once('/').map(|(head, _)| head).unwrap_or(&base));
        let store =
            PgStore::open(&url, 8, Arc::new(anytime_server_core::Metrics::default())).await.expect("open PgStore");
        eprintln!("case {}", case.name);
        (case.run)(Arc::new(store)).await;
        admin.batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)")).await.unwrap();
    }
}
