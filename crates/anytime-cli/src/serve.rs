//! `anytime serve`: run a server node.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use anytime_server::ServeConfig;
use anytime_server_core::{Config, RateLimits};
use clap::Args;

use crate::dir_lock::{Acquire, DirLock};

#[derive(Args)]
pub struct ServeArgs {
    /// Data directory (database). Default: the user's data directory + /anytime.
    #[arg(long, env = "ANYTIME_DATA")]
    data: Option<PathBuf>,
    /// Shared PostgreSQL database for running several nodes (postgres://user@host/db). Default:
    /// embedded SQLite in the data directory.
    #[arg(long, env = "ANYTIME_DATABASE")]
    database: Option<String>,
    /// NATS server for fan-out between nodes (nats://host:4222); needs --database.
    #[arg(long, env = "ANYTIME_NATS", requires = "database")]
    nats: Option<String>,
    /// NATS subject prefix: nodes of one cluster share it.
    #[arg(long, env = "ANYTIME_NATS_PREFIX", default_value = "anytime")]
    nats_prefix: String,
    /// Address to listen on. If its port is taken and --listen was not given, a free port is used.
    #[arg(long, env = "ANYTIME_LISTEN")]
    listen: Option<SocketAddr>,
    /// Lifetime of a session token after login, seconds.
    #[arg(long, default_value_t = 90 * 24 * 3600)]
    session_ttl_secs: u64,
    /// How long undelivered messages are kept for devices that never come back, seconds.
    #[arg(long, default_value_t = 30 * 24 * 3600)]
    retention_secs: u64,
    /// Seconds between garbage-collection passes.
    #[arg(long, default_value_t = 10)]
    gc_interval_secs: u64,
    /// Simultaneous device connections this node accepts.
    #[arg(long, default_value_t = 100_000)]
    connections_max: u32,
    /// argon2id memory cost in KiB for new passwords. Lowering it weakens stored password hashes:
    /// for load tests only.
    #[arg(long, default_value_t = anytime_server_core::ARGON2_COST_DEFAULT.0)]
    argon2_memory_kib: u32,
    /// argon2id iterations for new passwords (load tests only: see --argon2-memory-kib).
    #[arg(long, default_value_t = anytime_server_core::ARGON2_COST_DEFAULT.1)]
    argon2_iterations: u32,
    /// How long a red envelope stays open before the rest goes back to its sender (tests only;
    /// the product says 24 hours).
    #[arg(long, default_value_t = anytime_proto::limits::ENVELOPE_TTL_MS / 1000, hide = true)]
    red_envelope_ttl_secs: u64,
    /// How long a payout's money stays held while the payment provider has not answered (tests
    /// only; the product says 24 hours).
    #[arg(long, default_value_t = anytime_proto::limits::PAYOUT_HOLD_TTL_MS / 1000, hide = true)]
    payout_hold_ttl_secs: u64,
    /// Turn off rate limits (benchmarks and load tests only).
    #[arg(long)]
    no_rate_limits: bool,
    /// The built web client to serve at `/` (`cargo xtask web` builds it into target/web/dist).
    /// Default: `web/` beside the executable, or `../web/dist` from it (the build tree).
    #[arg(long, env = "ANYTIME_WEB_DIR")]
    web_dir: Option<PathBuf>,
    /// VAPID private key for Web Push (made on first start). Default: `vapid-private-key` in the
    /// data directory; give every node of a cluster the same file.
    #[arg(long, env = "ANYTIME_VAPID_KEY_FILE")]
    vapid_key_file: Option<PathBuf>,
    /// Contact for the browsers' push services (`mailto:…` or `https://…`).
    #[arg(long, default_value = "mailto:admin@localhost")]
    push_contact: String,
    /// Also accept push endpoints under this URL prefix (a self-hosted push service; tests).
    /// Without it only the browsers' own push services (Google, Mozilla, Apple, Microsoft) are.
    #[arg(long = "push-endpoint-prefix")]
    push_endpoint_prefixes: Vec<String>,
    /// Where sealed attachments are kept. Default: `blobs/` in the data directory.
    #[arg(long, env = "ANYTIME_BLOB_DIR")]
    blob_dir: Option<PathBuf>,
    /// Largest attachment accepted, bytes (of the sealed file).
    #[arg(long, default_value_t = anytime_proto::limits::BLOB_BYTES_MAX)]
    blob_bytes_max: u64,
    /// Attachment storage per account, bytes; it frees up as recipients fetch their files.
    #[arg(long, default_value_t = anytime_proto::limits::BLOB_QUOTA_BYTES)]
    blob_quota_bytes: u64,
    /// How long an unfinished upload is kept (tests only; the product says 24 hours).
    #[arg(long, default_value_t = anytime_proto::limits::BLOB_UPLOAD_TTL_MS / 1000, hide = true)]
    blob_upload_ttl_secs: u64,
}

/// Where the web client is when `--web-dir` is not given: installed beside the binary, or in the
/// build tree (target/release/anytime → target/web/dist).
fn default_web_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [dir.join("web"), dir.join("../web/dist")].into_iter().find(|d| d.join("index.html").is_file())
}

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let data_dir = match args.data {
        Some(dir) => dir,
        None => {
            dirs::data_dir().context("no user data directory is known on this system; pass --data DIR")?.join("anytime")
        }
    };
    let mut lock = lock_data_dir(&data_dir)?;
    let fallback_to_free_port = args.listen.is_none();
    let listen = match args.listen {
        Some(listen) => listen,
        // A constant that always parses.
        None => DEFAULT_LISTEN.parse().expect("default listen address parses"),
    };
    let rate_limits = if args.no_rate_limits { RateLimits::unlimited() } else { RateLimits::default() };
    let config = ServeConfig {
        data_dir: data_dir.clone(),
        database: args.database,
        nats: args.nats.map(|url| (url, args.nats_prefix)),
        listen,
        fallback_to_free_port,
        core: Config {
            session_ttl_ms: args.session_ttl_secs.saturating_mul(1000),
            retention_ms: args.retention_secs.saturating_mul(1000),
            rate_limits,
            argon2_cost: (args.argon2_memory_kib, args.argon2_iterations),
            push_endpoint_prefixes: args.push_endpoint_prefixes,
            envelope_ttl_ms: args.red_envelope_ttl_secs.saturating_mul(1000),
            payout_hold_ttl_ms: args.payout_hold_ttl_secs.saturating_mul(1000),
            ..Config::default()
        },
        connections_max: args.connections_max,
        unauthenticated_per_ip_max: if args.no_rate_limits {
            u32::MAX
        } else {
            anytime_proto::limits::UNAUTHENTICATED_PER_IP_MAX
        },
        gc_interval: Duration::from_secs(args.gc_interval_secs.max(1)),
        web_dir: args.web_dir.or_else(default_web_dir),
        vapid_key_file: args.vapid_key_file,
        push_contact: args.push_contact,
        blob_dir: args.blob_dir,
        blob_limits: anytime_media::BlobLimits {
            blob_bytes_max: args.blob_bytes_max,
            quota_bytes: args.blob_quota_bytes,
            retention_ms: args.retention_secs.saturating_mul(1000),
            upload_ttl_ms: args.blob_upload_ttl_secs.saturating_mul(1000),
        },
    };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("while starting the async runtime")?;
    runtime.block_on(async move {
        let running = anytime_server::start(config).await?;
        tracing::info!(addr = %running.addr, data = %data_dir.display(), "anytime server started");
        let url = format!("http://{}/", running.addr);
        if let Err(error) = lock.set_url(&url) {
            tracing::warn!(%error, "could not note the address in the data directory's lock file");
        }
        // The user-facing output: where to point a browser or client. A closed or broken
        // stdout must not stop a running server, so write errors are ignored.
        let banner =
            format!("Anytime is running at http://{}/\nData directory: {}\n", running.addr, data_dir.display());
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(banner.as_bytes()).and_then(|()| stdout.flush());
        drop(stdout);
        let stop = running.shutdown_handle();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            let _ = stop.send(true);
        });
        let result = running.wait().await;
        drop(lock);
        result
    })
}

/// The lock file in a data directory: one server per directory.
pub const DATA_LOCK_FILE: &str = "anytime.lock";

/// Two servers on one data directory would each deliver only to their own connections (and two
/// SQLite writers would take turns at the database): the second one refuses to start.
fn lock_data_dir(data_dir: &Path) -> anyhow::Result<DirLock> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("while creating the data directory {}", data_dir.display()))?;
    let outcome = DirLock::try_acquire(data_dir, DATA_LOCK_FILE, "anytime serve")
        .with_context(|| format!("while locking the data directory {}", data_dir.display()))?;
    match outcome {
        Acquire::Acquired(lock) => {
            if let Some(stale) = &lock.stale {
                tracing::info!(
                    pid = stale.pid,
                    "the previous server on this data directory did not stop cleanly; its lock note is cleared"
                );
            }
            Ok(lock)
        }
        Acquire::Held(holder) => {
            let who = holder.as_ref().map(|h| format!(" ({})", h.describe())).unwrap_or_default();
            let at = holder.and_then(|h| h.url).map(|url| format!("; it is running at {url}")).unwrap_or_default();
            bail!(
                "another Anytime server{who} is already using the data directory {}{at}. Use that one, stop it first, or pass --data with another directory",
                data_dir.display()
            )
        }
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
