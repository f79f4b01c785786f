//! `anytime-sim`: runs the deterministic simulation for one seed or a range of seeds.
//!
//! ```sh
//! cargo run -p anytime-sim --release -- --seeds 1..201 --steps 500
//! cargo run -p anytime-sim -- --seed 16 --break forget-ratchet   # a broken rule, caught
//! cargo run -p anytime-sim -- --seed 10 --trace                  # every step and frame
//! ```

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

use anytime_sim::{run, Config, Fault, Report};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Deterministic simulation of Anytime: one seed replays one run exactly")]
struct Args {
    /// One seed to run.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// A range of seeds, `FIRST..END` (END excluded).
    #[arg(long, default_value = "1..21")]
    seeds: String,
    #[arg(long, default_value_t = 300)]
    steps: usize,
    #[arg(long, default_value_t = 4)]
    users: usize,
    /// Chance in percent that a request or its answer is lost.
    #[arg(long, default_value_t = 3)]
    faults: u64,
    /// Break a rule on purpose: `forget-ratchet` or `forget-outbox`.
    #[arg(long = "break")]
    broken: Option<String>,
    /// Print every step to stderr.
    #[arg(long)]
    trace: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let fault = match args.broken.as_deref() {
        None => None,
        Some("forget-ratchet") => Some(Fault::ForgetRatchet),
        Some("forget-outbox") => Some(Fault::ForgetOutbox),
        Some(other) => {
            eprintln!("anytime-sim: unknown --break {other:?}; use forget-ratchet or forget-outbox");
            return ExitCode::from(2);
        }
    };
    let seeds: Vec<u64> = match args.seed {
        Some(seed) => vec![seed],
        None => {
            let Some((first, end)) =
                args.seeds.split_once("..").and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
            else {
                eprintln!("anytime-sim: --seeds takes FIRST..END, e.g. 1..100");
                return ExitCode::from(2);
            };
            (first..end).collect()
        }
    };
    let started = Instant::now();
    let mut total = Report::default();
    let mut failures: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for seed in &seeds {
        let config = Config {
            seed: *seed,
            users: args.users,
            steps: args.steps,
            network_faults: args.faults,
            fault,
            trace: args.trace,
        };
        match run(config) {
            Ok(report) => {
                println!("seed {seed}: ok {report:?}");
                add(&mut total, &report);
            }
            Err(violation) => {
                println!("FAILED {violation}");
                failures.entry(kind(&violation.what)).or_default().push(*seed);
            }
        }
    }
    let failed: usize = failures.values().map(Vec::len).sum();
    println!("{} seeds, {failed} failed, {:.1} s", seeds.len(), started.elapsed().as_secs_f64());
    println!("passed seeds in total: {total:?}");
    for (kind, seeds) in &failures {
        println!("{} failed with \"{kind}\": seeds {seeds:?}", seeds.len());
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn add(total: &mut Report, report: &Report) {
    total.sends += report.sends;
    total.deliveries += report.deliveries;
    total.lost_requests += report.lost_requests;
    total.reconnects += report.reconnects;
    total.device_crashes += report.device_crashes;
    total.server_crashes += report.server_crashes;
    total.links += report.links;
    total.revocations += report.revocations;
    total.membership_changes += report.membership_changes;
    total.not_in_group += report.not_in_group;
    total.refused_for_now += report.refused_for_now;
}

/// A violation without its ids and numbers, to count failures of one kind together.
fn kind(what: &str) -> String {
    let mut kind = String::with_capacity(what.len());
    for word in what.split(' ') {
        let digits = word.trim_matches(|c: char| !c.is_ascii_alphanumeric());
        let id = digits.len() >= 16 && digits.chars().all(|c| c.is_ascii_hexdigit());
        let number = !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit());
        if !kind.is_empty() {
            kind.push(' ');
        }
        kind.push_str(if id || number { "…" } else { word });
    }
    kind
}
