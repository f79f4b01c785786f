//! `anytime-sim`: runs the deterministic simulation for one seed or a range of seeds.
//!
//! ```sh
//! cargo run -p anytime-sim --release -- --seeds 1..200 --steps 500
//! cargo run -p anytime-sim -- --seed 7 --break forget-ratchet   # a broken rule, caught
//! ```

use std::process::ExitCode;
use std::time::Instant;

use anytime_sim::{run, Config, Fault};
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
    let mut failed = 0;
    for seed in &seeds {
        let config = Config { seed: *seed, users: args.users, steps: args.steps, network_faults: args.faults, fault };
        match run(config) {
            Ok(report) => println!("seed {seed}: ok {report:?}"),
            Err(violation) => {
                failed += 1;
                println!("FAILED {violation}");
            }
        }
    }
    println!("{} seeds, {failed} failed, {:.1} s", seeds.len(), started.elapsed().as_secs_f64());
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
