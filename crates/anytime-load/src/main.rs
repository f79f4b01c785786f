//! `anytime-load`: run a load scenario against a server it starts (or one already running).
//! Each scenario prints a one-line summary and can write JSON (`--json FILE`).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use anytime_load::matrix::{self, MatrixServer};
use anytime_load::xmpp::{self, XmppServer};
use anytime_load::{catch_up, connections, durable, fanout, DurableConfig, LatencyConfig};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "anytime-load", about = "Load generator for Anytime servers")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

/// Which server to load.
#[derive(Args)]
struct Target {
    /// The `anytime` binary to start (fresh data directory, rate limits off). Build it with --release.
    #[arg(long, conflicts_with = "url")]
    binary: Option<PathBuf>,
    /// A running server instead, e.g. http://127.0.0.1:8080 (started with --no-rate-limits).
    #[arg(long)]
    url: Option<String>,
    /// Write the report as JSON here too.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Scenario {
    /// Durable one-to-one throughput: pairs of users, pipelined sends, all acknowledged on disk.
    Durable {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 100)]
        pairs: usize,
        #[arg(long, default_value_t = 200)]
        messages: usize,
        /// Unanswered sends per sender at once.
        #[arg(long, default_value_t = 64)]
        window: usize,
        /// Payload bytes (a short MLS application message is ~200).
        #[arg(long, default_value_t = 200)]
        payload: usize,
    },
    /// Catch-up: a device offline while messages arrive, then connects; time until fully synced.
    CatchUp {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 100_000)]
        messages: usize,
        #[arg(long, default_value_t = 200)]
        payload: usize,
    },
    /// Idle connections: devices connect from many 127.0.0.x addresses, authenticate, stay idle.
    Connections {
        #[command(flatten)]
        target: Target,
        /// Devices (10 per account, linked and approved).
        #[arg(long, default_value_t = 1_000)]
        devices: usize,
        /// Connections per device (at most 2 are allowed per device).
        #[arg(long, default_value_t = 2)]
        per_device: usize,
    },
    /// Group fan-out: messages to a group of online devices; deliveries/s and time to last delivery.
    Fanout {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 100)]
        members: usize,
        #[arg(long, default_value_t = 200)]
        messages: usize,
        #[arg(long, default_value_t = 200)]
        payload: usize,
    },
    /// Open-loop one-to-one latency: first the maximum durable rate (closed loop, as `durable`),
    /// then a fixed-rate schedule at fractions of it; latency from intended send to receipt.
    Latency {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        open_loop: OpenLoop,
    },
    /// The same scenarios over XMPP against a running XMPP server (ejabberd), for comparison.
    Xmpp {
        #[command(subcommand)]
        scenario: XmppScenario,
    },
    /// The same scenarios over the Matrix client-server API against a running homeserver (Synapse).
    Matrix {
        #[command(subcommand)]
        scenario: MatrixScenario,
    },
}

/// Settings of the open-loop latency runs (and of the closed-loop run that finds the maximum).
#[derive(Args)]
struct OpenLoop {
    #[arg(long, default_value_t = 100)]
    pairs: usize,
    /// Offered load in messages/s; skips the search for the maximum (then `--fractions` scale it).
    #[arg(long)]
    rate: Option<f64>,
    /// Fractions of the maximum rate to run at.
    #[arg(long, value_delimiter = ',', default_value = "0.5,0.9")]
    fractions: Vec<f64>,
    /// Seconds of sending per open-loop run.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Seconds at the start of each run whose messages are delivered but not timed.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    #[arg(long, default_value_t = 200)]
    payload: usize,
    /// Messages per sender of the closed-loop run that finds the maximum.
    #[arg(long, default_value_t = 1000)]
    max_messages: usize,
    /// Window of the closed-loop run that finds the maximum.
    #[arg(long, default_value_t = 64)]
    window: usize,
}

/// A running XMPP server.
#[derive(Args)]
struct XmppTarget {
    /// Its client-to-server listener.
    #[arg(long, default_value = "127.0.0.1:5222")]
    addr: std::net::SocketAddr,
    #[arg(long, default_value = "localhost")]
    domain: String,
    #[arg(long, default_value = "conference.localhost")]
    muc_domain: String,
    /// Write the report as JSON here too.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The server's process id, to report its CPU and memory use.
    #[arg(long)]
    server_pid: Option<u32>,
}

#[derive(Subcommand)]
enum XmppScenario {
    /// Closed-loop one-to-one throughput (window = messages not yet received).
    Throughput {
        #[command(flatten)]
        target: XmppTarget,
        #[arg(long, default_value_t = 100)]
        pairs: usize,
        #[arg(long, default_value_t = 200)]
        messages: usize,
        #[arg(long, default_value_t = 64)]
        window: usize,
        #[arg(long, default_value_t = 200)]
        payload: usize,
    },
    /// Open-loop one-to-one latency at fractions of the closed-loop maximum.
    Latency {
        #[command(flatten)]
        target: XmppTarget,
        #[command(flatten)]
        open_loop: OpenLoop,
    },
    /// Group fan-out through a MUC room.
    Fanout {
        #[command(flatten)]
        target: XmppTarget,
        #[arg(long, default_value_t = 100)]
        members: usize,
        #[arg(long, default_value_t = 200)]
        messages: usize,
        #[arg(long, default_value_t = 200)]
        payload: usize,
    },
    /// Idle authenticated connections (one user each), from many 127.0.0.x addresses.
    Connections {
        #[command(flatten)]
        target: XmppTarget,
        #[arg(long, default_value_t = 1_000)]
        connections: usize,
    },
}

/// A running Matrix homeserver.
#[derive(Args)]
struct MatrixTarget {
    /// Its client-server API (plain HTTP).
    #[arg(long, default_value = "http://127.0.0.1:8008")]
    url: String,
    /// Write the report as JSON here too.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The homeserver's process id, to report its CPU use.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Most sends in flight over all senders at once (one HTTP/1.1 connection each).
    #[arg(long, default_value_t = 256)]
    max_in_flight: usize,
}

#[derive(Subcommand)]
enum MatrixScenario {
    /// Closed-loop one-to-one throughput (window = unanswered sends per sender).
    Throughput {
        #[command(flatten)]
        target: MatrixTarget,
        #[arg(long, default_value_t = 100)]
        pairs: usize,
        #[arg(long, default_value_t = 200)]
        messages: usize,
        #[arg(long, default_value_t = 64)]
        window: usize,
        #[arg(long, default_value_t = 200)]
        payload: usize,
    },
    /// Open-loop one-to-one latency at fractions of the closed-loop maximum (or at `--rate`).
    Latency {
        #[command(flatten)]
        target: MatrixTarget,
        #[command(flatten)]
        open_loop: OpenLoop,
    },
    /// Group fan-out in one room, every member long-polling /sync.
    Fanout {
        #[command(flatten)]
        target: MatrixTarget,
        #[arg(long, default_value_t = 100)]
        members: usize,
        #[arg(long, default_value_t = 200)]
        messages: usize,
        #[arg(long, default_value_t = 200)]
        payload: usize,
    },
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let _ = writeln!(std::io::stderr(), "anytime-load: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// Raises this process's open-file limit to the hard limit (connections are files); the server
/// started from here inherits it.
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit with a valid resource and a pointer to a local struct.
    unsafe {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn run() -> anyhow::Result<()> {
    let scenario = Cli::parse().scenario;
    raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let scenario = match scenario {
        Scenario::Xmpp { scenario } => return runtime.block_on(run_xmpp(scenario)),
        Scenario::Matrix { scenario } => return runtime.block_on(run_matrix(scenario)),
        other => other,
    };
    runtime.block_on(async move {
        let work = tempfile::tempdir()?;
        let target = match &scenario {
            Scenario::Durable { target, .. }
            | Scenario::CatchUp { target, .. }
            | Scenario::Fanout { target, .. }
            | Scenario::Connections { target, .. }
            | Scenario::Latency { target, .. } => target,
            Scenario::Xmpp { .. } | Scenario::Matrix { .. } => unreachable!("handled above"),
        };
        let (base_url, _server) = match (&target.binary, &target.url) {
            (Some(binary), _) => {
                // Cheap password hashing: setting up thousands of accounts must not dominate the
                // run. Never use these values in production (see `anytime serve --help`).
                let extra_args = ["--no-rate-limits", "--argon2-memory-kib", "64", "--argon2-iterations", "1"];
                let options = anytime_testkit::ServerOptions {
                    extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
                    log_filter: "warn".into(),
                    ..Default::default()
                };
                let server = anytime_testkit::ServerProcess::start(binary, work.path(), options)
                    .with_context(|| format!("while starting {}", binary.display()))?;
                (server.base_url(), Some(server))
            }
            (None, Some(url)) => (url.trim_end_matches('/').to_owned(), None),
            (None, None) => anyhow::bail!("pass --binary target/release/anytime or --url of a running server"),
        };
        let ws_url = format!("{}/v1/ws", base_url.replacen("http", "ws", 1));
        let (summary, json) = match &scenario {
            Scenario::Durable { pairs, messages, window, payload, .. } => {
                let config = DurableConfig {
                    base_url: base_url.clone(),
                    pairs: *pairs,
                    messages_per_sender: *messages,
                    window: *window,
                    payload_bytes: *payload,
                    server_pid: _server.as_ref().map(|s| s.pid()),
                };
                let report = durable(&config, &ws_url).await?;
                (report.summary(), serde_json::to_vec_pretty(&report)?)
            }
            Scenario::CatchUp { messages, payload, .. } => {
                let report = catch_up(&base_url, &ws_url, *messages, *payload).await?;
                (report.summary(), serde_json::to_vec_pretty(&report)?)
            }
            Scenario::Connections { devices, per_device, .. } => {
                let pid = _server.as_ref().map(|s| s.pid());
                let report = connections(&base_url, &ws_url, pid, *devices, *per_device).await?;
                (report.summary(), serde_json::to_vec_pretty(&report)?)
            }
            Scenario::Fanout { members, messages, payload, .. } => {
                let report = fanout(&base_url, &ws_url, *members, *messages, *payload).await?;
                (report.summary(), serde_json::to_vec_pretty(&report)?)
            }
            Scenario::Latency { open_loop, .. } => {
                let config = LatencyConfig {
                    base_url: base_url.clone(),
                    pairs: open_loop.pairs,
                    rate: open_loop.rate.unwrap_or(1.0),
                    seconds: open_loop.seconds,
                    warmup_seconds: open_loop.warmup,
                    payload_bytes: open_loop.payload,
                    server_pid: _server.as_ref().map(|s| s.pid()),
                };
                let max = open_loop.rate.is_none().then(|| DurableConfig {
                    base_url: base_url.clone(),
                    pairs: open_loop.pairs,
                    messages_per_sender: open_loop.max_messages,
                    window: open_loop.window,
                    payload_bytes: open_loop.payload,
                    server_pid: _server.as_ref().map(|s| s.pid()),
                });
                let report = anytime_load::sweep(&config, &ws_url, max, &open_loop.fractions).await?;
                (report.summary(), serde_json::to_vec_pretty(&report)?)
            }
            Scenario::Xmpp { .. } | Scenario::Matrix { .. } => unreachable!("handled above"),
        };
        writeln!(std::io::stdout().lock(), "{summary}")?;
        if let Some(path) = &target.json {
            std::fs::write(path, json).with_context(|| format!("while writing {}", path.display()))?;
        }
        Ok(())
    })
}

async fn run_xmpp(scenario: XmppScenario) -> anyhow::Result<()> {
    let target = match &scenario {
        XmppScenario::Throughput { target, .. }
        | XmppScenario::Latency { target, .. }
        | XmppScenario::Fanout { target, .. }
        | XmppScenario::Connections { target, .. } => target,
    };
    let server = XmppServer {
        addr: target.addr,
        domain: target.domain.clone(),
        muc_domain: target.muc_domain.clone(),
        pid: target.server_pid,
    };
    let (summary, json) = match &scenario {
        XmppScenario::Throughput { pairs, messages, window, payload, .. } => {
            let report = xmpp::throughput(&server, *pairs, *messages, *window, *payload).await?;
            (report.summary(), serde_json::to_vec_pretty(&report)?)
        }
        XmppScenario::Latency { open_loop: o, .. } => {
            let max = o.rate.is_none().then_some(xmpp::ClosedLoop {
                pairs: o.pairs,
                messages_per_sender: o.max_messages,
                window: o.window,
            });
            let report =
                xmpp::sweep(&server, max, o.rate.unwrap_or(1.0), &o.fractions, o.pairs, o.seconds, o.warmup, o.payload)
                    .await?;
            (report.summary(), serde_json::to_vec_pretty(&report)?)
        }
        XmppScenario::Fanout { members, messages, payload, .. } => {
            let report = xmpp::muc_fanout(&server, *members, *messages, *payload).await?;
            (report.summary().replacen("fan-out", "xmpp fan-out (MUC)", 1), serde_json::to_vec_pretty(&report)?)
        }
        XmppScenario::Connections { connections, .. } => {
            let report = xmpp::idle_connections(&server, *connections).await?;
            (report.summary().replacen("connections", "xmpp connections", 1), serde_json::to_vec_pretty(&report)?)
        }
    };
    writeln!(std::io::stdout().lock(), "{summary}")?;
    if let Some(path) = &target.json {
        std::fs::write(path, json).with_context(|| format!("while writing {}", path.display()))?;
    }
    Ok(())
}

async fn run_matrix(scenario: MatrixScenario) -> anyhow::Result<()> {
    let target = match &scenario {
        MatrixScenario::Throughput { target, .. }
        | MatrixScenario::Latency { target, .. }
        | MatrixScenario::Fanout { target, .. } => target,
    };
    let server = MatrixServer {
        base_url: target.url.trim_end_matches('/').to_owned(),
        max_in_flight: target.max_in_flight,
        pid: target.server_pid,
    };
    let (summary, json) = match &scenario {
        MatrixScenario::Throughput { pairs, messages, window, payload, .. } => {
            let report = matrix::throughput(&server, *pairs, *messages, *window, *payload).await?;
            (report.summary(), serde_json::to_vec_pretty(&report)?)
        }
        MatrixScenario::Latency { open_loop: o, .. } => {
            let max = o.rate.is_none().then_some(matrix::ClosedLoop {
                pairs: o.pairs,
                messages_per_sender: o.max_messages,
                window: o.window,
            });
            let report = matrix::sweep(
                &server,
                max,
                o.rate.unwrap_or(1.0),
                &o.fractions,
                o.pairs,
                o.seconds,
                o.warmup,
                o.payload,
            )
            .await?;
            (report.summary(), serde_json::to_vec_pretty(&report)?)
        }
        MatrixScenario::Fanout { members, messages, payload, .. } => {
            let report = matrix::fanout(&server, *members, *messages, *payload).await?;
            (report.summary().replacen("fan-out", "matrix fan-out (one room)", 1), serde_json::to_vec_pretty(&report)?)
        }
    };
    writeln!(std::io::stdout().lock(), "{summary}")?;
    if let Some(path) = &target.json {
        std::fs::write(path, json).with_context(|| format!("while writing {}", path.display()))?;
    }
    Ok(())
}
