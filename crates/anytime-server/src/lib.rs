//! The Anytime server shell: listener, HTTP routes, one task per device WebSocket, periodic
//! garbage collection and graceful shutdown, around `anytime-server-core`.
//!
//! It translates between the network and the core and decides nothing itself: every rule
//! lives in the core, every byte layout in `anytime-proto`.

mod admission;
mod blob_fs;
mod blob_http;
mod http;
mod listener;
mod nats_bus;
mod system;
mod system_env;
mod vapid;
mod wallet_http;
mod web_push;
mod ws;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use anytime_proto::limits::FD_RESERVE;
use anytime_server_core::{Config, Metrics, ServerCore, ServerStore};
use anytime_store_sqlite::SqliteStore;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

pub use system_env::SystemEnv;

/// How often a cluster node lists its online users (well under the 15 s silence limit).
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);

/// PostgreSQL sessions per node.
const POSTGRES_CONNECTIONS: usize = 16;

/// Everything `anytime serve` can be told.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    /// `postgres://…` to share storage with other nodes; `None` for embedded SQLite in `data_dir`.
    pub database: Option<String>,
    /// `nats://…` for cross-node fan-out, with the subject prefix of this cluster.
    pub nats: Option<(String, String)>,
    pub listen: SocketAddr,
    /// Fall back to a free port when `listen`'s port is taken.
    pub fallback_to_free_port: bool,
    pub core: Config,
    /// Simultaneous WebSocket connections this node accepts.
    pub connections_max: u32,
    /// Unauthenticated connections one address may hold (`UNAUTHENTICATED_PER_IP_MAX`; lifted
    /// for benchmarks, which connect thousands of clients from one address).
    pub unauthenticated_per_ip_max: u32,
    pub gc_interval: Duration,
    /// The built web client (`cargo xtask web`) to serve at `/`; `None` serves a status page.
    pub web_dir: Option<PathBuf>,
    /// The VAPID private key for Web Push; `None`: `vapid-private-key` in `data_dir` (made on
    /// first start). Every node of a cluster needs the same one.
    pub vapid_key_file: Option<PathBuf>,
    /// Contact the push services may use (`mailto:…` or `https://…`), sent in every push.
    pub push_contact: String,
    /// Where sealed attachments are kept; `None`: `blobs/` in `data_dir`.
    pub blob_dir: Option<PathBuf>,
    pub blob_limits: anytime_media::BlobLimits,
}

/// A started server: its address, and a handle to stop it.
pub struct Running {
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stops accepting, closes every connection, flushes storage, and waits for all of it.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.task.await.context("server task panicked")?
    }

    /// Runs until the task ends by itself (it does not, unless it fails).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("server task panicked")?
    }

    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// State shared by every request handler.
#[derive(Clone)]
pub(crate) struct AppState {
    pub core: Arc<ServerCore>,
    pub vapid: Arc<vapid::Vapid>,
    pub connections: Arc<Semaphore>,
    pub shutdown: watch::Receiver<bool>,
}

pub async fn start(config: ServeConfig) -> anyhow::Result<Running> {
    system::tune_allocator();
    let open_files = system::raise_open_files_limit();
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("while creating the data directory {}", config.data_dir.display()))?;
    let metrics = Arc::new(Metrics::default());
    // The server store, and the wallet's stores (the same database).
    type WalletStores = (Arc<dyn anytime_ledger::LedgerStore>, Arc<dyn anytime_wallet::WalletStore>);
    type Stores = (Arc<dyn ServerStore>, Option<WalletStores>, Arc<dyn anytime_media::BlobIndex>);
    let (store, wallet, blob_index): Stores = match &config.database {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let store = Arc::new(
                anytime_store_postgres::PgStore::open(url, POSTGRES_CONNECTIONS, metrics.clone())
                    .await
                    .context("while opening the PostgreSQL database")?,
            );
            (store.clone(), Some((store.clone(), store.clone())), store)
        }
        Some(other) => anyhow::bail!("--database takes a postgres:// URL, not {other:?}; omit it for embedded SQLite"),
        None => {
            let db_path = anytime_store_sqlite::database_path(&config.data_dir);
            let store = Arc::new(
                SqliteStore::open(&db_path, metrics.clone())
                    .with_context(|| format!("while opening the database in {}", config.data_dir.display()))?,
            );
            (store.clone(), Some((store.clone(), store.clone())), store)
        }
    };
    let blob_dir = config.blob_dir.clone().unwrap_or_else(|| config.data_dir.join("blobs"));
    let blob_bytes = Arc::new(
        blob_fs::FsBlobBytes::open(&blob_dir)
            .with_context(|| format!("while opening the attachment directory {}", blob_dir.display()))?,
    );
    let vapid_path = config.vapid_key_file.clone().unwrap_or_else(|| config.data_dir.join("vapid-private-key"));
    let vapid = Arc::new(vapid::Vapid::load_or_create(&vapid_path, config.push_contact.clone())?);
    let mut core = ServerCore::new(store, Arc::new(SystemEnv), metrics, config.core.clone())
        .with_push(Arc::new(web_push::WebPushSender::new(vapid.clone()).context("while setting up Web Push")?));
    core = core.with_blobs(blob_index, blob_bytes, config.blob_limits);
    if let Some((ledger, wallet)) = wallet {
        core = core.with_wallet(ledger, wallet, Arc::new(anytime_wallet::provider::SandboxProvider));
    }
    let mut slot = None;
    if let Some((url, prefix)) = &config.nats {
        let (bus, core_slot) = nats_bus::connect(url, prefix).await?;
        core = core.with_bus(Arc::new(bus));
        slot = Some(core_slot);
    }
    let core = Arc::new(core);
    if let Some(slot) = slot {
        slot.fill(core.clone());
    }

    let listener = match TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(error) if config.fallback_to_free_port && error.kind() == std::io::ErrorKind::AddrInUse => {
            let free = SocketAddr::new(config.listen.ip(), 0);
            tracing::info!(wanted = %config.listen, "address in use; taking a free port");
            TcpListener::bind(free).await.with_context(|| format!("while binding {free}"))?
        }
        Err(error) => return Err(error).with_context(|| format!("while binding {}", config.listen)),
    };
    let addr = listener.local_addr().context("while reading the bound address")?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let connections = Arc::new(Semaphore::new(config.connections_max as usize));
    let state = AppState { core: core.clone(), vapid, connections: connections.clone(), shutdown: shutdown_rx.clone() };
    let app = http::router(state, config.web_dir.as_deref());
    // Sockets this process can hold: the open-files limit minus what storage and logs need.
    let sockets_max = open_files.map_or(u64::MAX, |limit| limit.saturating_sub(FD_RESERVE).max(1));
    let admission = admission::Admission::new(sockets_max, config.unauthenticated_per_ip_max, core.metrics.clone());

    if config.nats.is_some() {
        let beat_core = core.clone();
        let mut beat_shutdown = shutdown_rx.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(HEARTBEAT_INTERVAL);
            loop {
                tokio::select! {
                    _ = ticker.tick() => beat_core.heartbeat(),
                    _ = beat_shutdown.changed() => return,
                }
            }
        });
    }
    let gc_core = core.clone();
    let mut gc_shutdown = shutdown_rx.clone();
    let gc_interval = config.gc_interval;
    let gc = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(gc_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    match gc_core.collect_garbage().await {
                        Ok(collected) if collected.messages > 0 || !collected.expired_devices.is_empty() => {
                            tracing::debug!(messages = collected.messages, devices = collected.expired_devices.len(), "garbage collected");
                        }
                        Ok(_) => {}
                        Err(code) => tracing::warn!(%code, "garbage collection failed"),
                    }
                    match gc_core.blob_sweep().await {
                        Ok(0) => {}
                        Ok(swept) => tracing::debug!(swept, "attachments collected"),
                        Err(code) => tracing::warn!(%code, "attachment collection failed"),
                    }
                    match gc_core.wallet_sweep().await {
                        Ok(0) => {}
                        Ok(swept) => tracing::debug!(swept, "red envelopes expired"),
                        Err(code) => tracing::warn!(%code, "red envelope sweep failed"),
                    }
                }
                _ = gc_shutdown.changed() => return,
            }
        }
    });

    let connections_max = config.connections_max;
    let serve_shutdown = shutdown_rx;
    let task = tokio::spawn(async move {
        listener::serve(listener, app, admission, core.metrics.clone(), serve_shutdown).await;
        // Upgraded WebSockets outlive the HTTP server: wait until each has closed (they watch
        // the same shutdown signal) so their last acknowledged writes are flushed below.
        let all = tokio::time::timeout(Duration::from_secs(10), connections.acquire_many(connections_max)).await;
        if all.is_err() {
            tracing::warn!("some connections did not close within 10 s");
        }
        gc.abort();
        core.flush().await.map_err(|code| anyhow::anyhow!("flushing storage failed: {code}"))?;
        tracing::info!("shut down cleanly");
        Ok(())
    });
    Ok(Running { addr, shutdown: shutdown_tx, task })
}
