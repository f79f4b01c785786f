//! Shared helpers of the PostgreSQL store: the pool and schema migration, query helpers, conversions, error mapping.

use anytime_proto::frame::PresencePrivacy;
use anytime_proto::{ErrorCode, UserId};
use anytime_server_core::store::{StoreError, StoreResult};
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

/// Step `i` upgrades from version `i` to `i + 1`.
const STEPS: &[&str] = &[
    include_str!("migrations/v0_to_v1.sql"),
    include_str!("migrations/v1_to_v2.sql"),
    include_str!("migrations/v2_to_v3.sql"),
    include_str!("migrations/v3_to_v4.sql"),
    include_str!("migrations/v4_to_v5.sql"),
    include_str!("migrations/v5_to_v6.sql"),
];
/// Serialises schema migrations between nodes starting at once.
const MIGRATION_LOCK: i64 = 0x616e_7974_696d_6501;

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("the database URL is not valid: {0}")]
    Url(String),
    #[error("could not create the connection pool: {0}")]
    Pool(String),
    #[error("could not migrate the database schema: {0}")]
    Migrate(String),
    #[error("the database has schema version {0}, newer than this build's; run a newer anytime")]
    TooNew(i32),
}

pub(crate) fn pool(url: &str, connections: usize) -> Result<Pool, OpenError> {
    let config: tokio_postgres::Config =
        url.parse().map_err(|e: tokio_postgres::Error| OpenError::Url(e.to_string()))?;
    let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager).max_size(connections.max(1)).build().map_err(|e| OpenError::Pool(e.to_string()))
}

fn migrate_error<E: std::fmt::Display>(error: E) -> OpenError {
    OpenError::Migrate(error.to_string())
}

pub(crate) async fn migrate(pool: &Pool) -> Result<(), OpenError> {
    let mut client = pool.get().await.map_err(|e| OpenError::Migrate(e.to_string()))?;
    let tx = client.transaction().await.map_err(migrate_error)?;
    exec(&tx, "SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(migrate_error)?;
    exec(&tx, "CREATE TABLE IF NOT EXISTS anytime_schema (version INTEGER NOT NULL)", &[])
        .await
        .map_err(migrate_error)?;
    let found: i32 = match query_opt(&tx, "SELECT version FROM anytime_schema", &[]).await.map_err(migrate_error)? {
        Some(row) => row.get(0),
        None => {
            exec(&tx, "INSERT INTO anytime_schema (version) VALUES (0)", &[]).await.map_err(migrate_error)?;
            0
        }
    };
    if found as usize > STEPS.len() {
        return Err(OpenError::TooNew(found));
    }
    for (from, sql) in STEPS.iter().enumerate().skip(found as usize) {
        tx.batch_execute(sql).await.map_err(migrate_error)?;
        exec(&tx, "UPDATE anytime_schema SET version = $1", &[&(from as i32 + 1)]).await.map_err(migrate_error)?;
        tracing::info!(version = from + 1, "database schema migrated");
    }
    tx.commit().await.map_err(migrate_error)
}

pub(crate) fn id(n: u64) -> i64 {
    n as i64
}

pub(crate) fn uid(n: i64) -> u64 {
    n as u64
}

pub(crate) fn backend<E: std::fmt::Display>(error: E) -> StoreError {
    StoreError::Backend(error.to_string())
}

pub(crate) fn rejected(code: ErrorCode) -> StoreError {
    StoreError::Rejected(code)
}

pub(crate) async fn client(pool: &Pool) -> StoreResult<deadpool_postgres::Object> {
    pool.get().await.map_err(backend)
}

// Every statement goes through the connection's prepared-statement cache: parsed and planned
// once per pooled connection, then only bound and executed.
pub(crate) async fn query<C: GenericClient>(c: &C, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<Vec<Row>> {
    let statement = c.prepare_cached(sql).await.map_err(backend)?;
    c.query(&statement, params).await.map_err(backend)
}

pub(crate) async fn query_opt<C: GenericClient>(
    c: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> StoreResult<Option<Row>> {
    let statement = c.prepare_cached(sql).await.map_err(backend)?;
    c.query_opt(&statement, params).await.map_err(backend)
}

pub(crate) async fn query_one<C: GenericClient>(c: &C, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<Row> {
    let statement = c.prepare_cached(sql).await.map_err(backend)?;
    c.query_one(&statement, params).await.map_err(backend)
}

pub(crate) async fn exec<C: GenericClient>(c: &C, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<u64> {
    let statement = c.prepare_cached(sql).await.map_err(backend)?;
    c.execute(&statement, params).await.map_err(backend)
}

pub(crate) async fn execute(pool: &Pool, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<()> {
    exec(&client(pool).await?, sql, params).await?;
    Ok(())
}

pub(crate) async fn exists(pool: &Pool, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<bool> {
    Ok(query_opt(&client(pool).await?, sql, params).await?.is_some())
}

pub(crate) fn privacy_to_i16(privacy: PresencePrivacy) -> i16 {
    match privacy {
        PresencePrivacy::Everyone => 0,
        PresencePrivacy::Contacts => 1,
        PresencePrivacy::Nobody => 2,
    }
}

pub(crate) fn privacy_from_i16(n: i16) -> PresencePrivacy {
    match n {
        0 => PresencePrivacy::Everyone,
        2 => PresencePrivacy::Nobody,
        _ => PresencePrivacy::Contacts,
    }
}

pub(crate) fn direct_key(a: UserId, b: UserId) -> String {
    let (low, high) = if a.0 <= b.0 { (a, b) } else { (b, a) };
    format!("{low}:{high}")
}

pub(crate) async fn client_for_batch(pool: &Pool) -> StoreResult<deadpool_postgres::Object> {
    client(pool).await
}

pub(crate) fn to_backend<E: std::fmt::Display>(error: E) -> StoreError {
    backend(error)
}
