//! A throwaway PostgreSQL database per test server, for running the same end-to-end suite
//! against the scale-out storage. Usable from sync and async tests alike: every operation runs on
//! its own thread with its own small runtime.

use anyhow::Context;

pub struct TestDatabase {
    /// URL of the fresh database, for `anytime serve --database`.
    pub url: String,
    admin_url: String,
    name: String,
}

fn block_on<T: Send + 'static>(
    work: impl std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
) -> anyhow::Result<T> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(work)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("database helper thread panicked"))?
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) =
        tokio_postgres::connect(url, tokio_postgres::NoTls).await.with_context(|| format!("connecting to {url}"))?;
    tokio::spawn(connection);
    Ok(client)
}

impl TestDatabase {
    /// `admin_url` names a server and a database to connect to for CREATE/DROP DATABASE.
    pub fn create(admin_url: &str) -> anyhow::Result<TestDatabase> {
        let unique: u64 = rand::random();
        let name = format!("anytime_e2e_{}_{unique:016x}", std::process::id());
        let head =
            admin_url.rsplit_once('/').map(|(head, _)| head.to_owned()).context("a postgres URL ends in /database")?;
        let (admin, db) = (admin_url.to_owned(), name.clone());
        block_on(async move {
            connect(&admin).await?.batch_execute(&format!("CREATE DATABASE {db}")).await?;
            Ok(())
        })?;
        Ok(TestDatabase { url: format!("{head}/{name}"), admin_url: admin_url.to_owned(), name })
    }

    /// Every row of every table, as text, sorted per table.
    pub fn snapshot(&self) -> anyhow::Result<std::collections::BTreeMap<String, Vec<String>>> {
        let url = self.url.clone();
        block_on(async move {
            let client = connect(&url).await?;
            let tables = client
                .query(
                    "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
                    &[],
                )
                .await?;
            let mut out = std::collections::BTreeMap::new();
            for table in tables {
                let table: String = table.get(0);
                let rows = client.query(&format!("SELECT t::text FROM \"{table}\" t"), &[]).await?;
                let mut rows: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
                rows.sort();
                out.insert(table, rows);
            }
            Ok(out)
        })
    }

    /// Whether any stored message payload contains `needle`.
    pub fn any_payload_contains(&self, needle: &[u8]) -> anyhow::Result<bool> {
        let (url, needle) = (self.url.clone(), needle.to_vec());
        block_on(async move {
            let client = connect(&url).await?;
            let row = client
                .query_one("SELECT COUNT(*) FROM messages WHERE position($1::bytea in payload) > 0", &[&needle])
                .await?;
            Ok(row.get::<_, i64>(0) > 0)
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin, db) = (self.admin_url.clone(), self.name.clone());
        let _ = block_on(async move {
            connect(&admin).await?.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await?;
            Ok(())
        });
    }
}
