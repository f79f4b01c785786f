//! The simulation in `cargo test`: a fixed set of seeds must pass, and each deliberately broken
//! rule must be caught (with the seed that shows it).

use anytime_sim::{run, Config, Fault};

#[test]
fn a_fixed_set_of_seeds_keeps_every_invariant() {
    for seed in 1..=12 {
        if let Err(violation) = run(Config::new(seed)) {
            panic!("{violation}\nreplay: cargo run -p anytime-sim -- --seed {seed}");
        }
    }
}

#[test]
fn a_ratchet_step_not_persisted_with_its_send_is_caught() {
    let caught = (1..=12).find_map(|seed| run(Config { fault: Some(Fault::ForgetRatchet), ..Config::new(seed) }).err());
    let violation = caught.expect("some seed catches a reused message key");
    assert!(violation.what.contains("cannot decrypt"), "{violation}");
}

#[test]
fn an_outbox_entry_not_persisted_is_caught() {
    let caught = (1..=12).find_map(|seed| run(Config { fault: Some(Fault::ForgetOutbox), ..Config::new(seed) }).err());
    let violation = caught.expect("some seed loses a message");
    assert!(violation.what.contains("never reached"), "{violation}");
}

#[test]
fn a_seed_replays_the_same_run() {
    assert_eq!(run(Config::new(5)), run(Config::new(5)));
    // A failure replays too: the same step, the same words (ids come from the seed as well).
    let broken = || run(Config { fault: Some(Fault::ForgetRatchet), ..Config::new(9) });
    let first = broken().expect_err("seed 9 catches the broken rule");
    assert_eq!(broken().expect_err("again"), first);
}
