//! The simulation in `cargo test`: a fixed set of seeds must pass, each deliberately broken
//! rule must be caught (with the seed that shows it), a fixed bug stays fixed, and the known bug
//! below stays pinned.

use anytime_sim::{run, Config, Fault, Report};

/// Seeds that keep every invariant at 300 steps (1..=1000 at 300 steps: 994 pass; the six
/// that fail are the known bug below and rarer ones listed in docs/simulation.md).
const SEEDS: [u64; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

#[test]
fn a_fixed_set_of_seeds_keeps_every_invariant() {
    let mut total = Report::default();
    for seed in SEEDS {
        match run(Config::new(seed)) {
            Ok(report) => {
                total.links += report.links;
                total.revocations += report.revocations;
                total.membership_changes += report.membership_changes;
                total.deliveries += report.deliveries;
            }
            Err(violation) => panic!("{violation}\nreplay: cargo run -p anytime-sim -- --seed {seed} --trace"),
        }
    }
    // The seeds exercise what the run is for, not only plain sends.
    assert!(total.links > 0 && total.revocations > 0 && total.membership_changes > 0, "{total:?}");
    assert!(total.deliveries > 0, "{total:?}");
}

#[test]
fn a_ratchet_step_not_persisted_with_its_send_is_caught() {
    let caught =
        SEEDS.iter().find_map(|&seed| run(Config { fault: Some(Fault::ForgetRatchet), ..Config::new(seed) }).err());
    let violation = caught.expect("some seed catches a reused message key");
    assert!(violation.what.contains("cannot decrypt"), "{violation}");
}

#[test]
fn an_outbox_entry_not_persisted_is_caught() {
    let caught =
        SEEDS.iter().find_map(|&seed| run(Config { fault: Some(Fault::ForgetOutbox), ..Config::new(seed) }).err());
    let violation = caught.expect("some seed loses a message");
    assert!(violation.what.contains("never reached"), "{violation}");
}

#[test]
fn a_seed_replays_the_same_run() {
    assert_eq!(run(Config::new(5)), run(Config::new(5)));
    // A failure replays too: the same step, the same words (ids come from the seed as well).
    let broken = || run(Config { fault: Some(Fault::ForgetRatchet), ..Config::new(19) });
    let first = broken().expect_err("seed 19 catches the broken rule");
    assert_eq!(broken().expect_err("again"), first);
}

/// Was a bug (client core, `Client::commit`), found by this simulation: a Commit whose request
/// or answer is lost left the MLS group with a pending commit that nothing resolved. Lost after
/// the server ordered it (seed 21), the device's own commit came back and was never merged, so it
/// read nothing of that group from the next epoch on; lost before (seed 42), every later change
/// of the group failed with "a pending commit exists". Now an own commit coming back merges the
/// pending one, and a pending one the server never ordered is dropped (`resolve_pending_commit`).
#[test]
fn a_commit_whose_answer_is_lost_is_applied_or_dropped_not_left_pending() {
    for seed in [21, 42] {
        if let Err(violation) = run(Config::new(seed)) {
            panic!("{violation}\nreplay: cargo run -p anytime-sim -- --seed {seed} --trace");
        }
    }
}

/// FIXME (client core, `Client::reconcile`): a device whose user was removed from a group while
/// it missed the push (membership pushes are ephemeral) asks the server on reconnect, hears it
/// is no member, and keeps its MLS group anyway. Once the user is added back, it uses that stale
/// state. Seed 573: device 1's user was removed at seq 6 and added back at seq 14; at step 94 the
/// device sent from epoch 1 into a group at epoch 11, which nobody can read (caught at step 96).
/// Seed 776: such a device tries to repair the group from its old epoch and gives up after ten
/// attempts (step 155; seeds 304 and 431 likewise). Today's output is asserted.
#[test]
fn fixme_a_device_removed_unawares_keeps_its_group() {
    let violation = run(Config::new(573)).expect_err("seed 573 sends from a stale group");
    assert_eq!(violation.step, 96, "{violation}");
    assert!(violation.what.contains("made in an epoch too long before it was ordered"), "{violation}");
    let violation = run(Config::new(776)).expect_err("seed 776 repairs from a stale group");
    assert_eq!(violation.step, 155, "{violation}");
    assert!(violation.what.contains("gave up after 10 attempts"), "{violation}");
}

/// FIXME (client core): a device drops its MLS group as soon as it hears "removed", but the group
/// drops the device only with a removal commit. Seed 421: the admin's removal commit was lost and
/// the user was added back (both at seq 13) before any member committed the removal, so the
/// device's leaf is still in everyone's group, no member adds it again, and it waits for a
/// Welcome that never comes: out of the conversation for good, found after catching up. Today's
/// output is asserted.
#[test]
fn fixme_a_device_that_dropped_its_group_for_an_uncommitted_removal_stays_out() {
    let violation = run(Config::new(421)).expect_err("seed 421 leaves a device out");
    assert_eq!(violation.step, 301, "{violation}");
    assert!(violation.what.contains("device 6 is at epoch None"), "{violation}");
}
