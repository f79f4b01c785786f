//! `anytime-load`: run a load scenario against a server it starts (or one already running).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use anytime_load::{durable, DurableConfig};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "anytime-load", about = "Load generator for Anytime servers")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Durable one-to-one throughput: pairs of users, pipelined sends, all acknowledged on disk.
    Durable {
        /// The `anytime` binary to start (with a fresh data directory). Build it with --release.
        #[arg(long, conflicts_with = "url")]
        binary: Option<PathBuf>,
        /// A running server instead, e.g. http://127.0.0.1:8080 (started with --no-rate-limits).
        #[arg(long)]
        url: Option<String>,
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
        /// Write the report as JSON here too.
        #[arg(long)]
        json: Option<PathBuf>,
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

fn run() -> anyhow::Result<()> {
    let Scenario::Durable { binary, url, pairs, messages, window, payload, json } = Cli::parse().scenario;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let work = tempfile::tempdir()?;
        let (base_url, _server) = match (binary, url) {
            (Some(binary), _) => {
                let server = anytime_testkit::ServerProcess::start(
                    &binary,
                    work.path(),
                    anytime_testkit::ServerOptions {
                        extra_args: vec!["--no-rate-limits".into()],
                        log_filter: "warn".into(),
                    },
                )
                .with_context(|| format!("while starting {}", binary.display()))?;
                (server.base_url(), Some(server))
            }
            (None, Some(url)) => (url.trim_end_matches('/').to_owned(), None),
            (None, None) => anyhow::bail!("pass --binary target/release/anytime or --url of a running server"),
        };
        let ws_url = format!("{}/v1/ws", base_url.replacen("http", "ws", 1));
        let config = DurableConfig { base_url, pairs, messages_per_sender: messages, window, payload_bytes: payload };
        let report = durable(&config, &ws_url).await?;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}", report.summary())?;
        if let Some(path) = json {
            std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
                .with_context(|| format!("while writing {}", path.display()))?;
        }
        Ok(())
    })
}
