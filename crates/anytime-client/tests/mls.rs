//! MLS between devices, with the server's ordering simulated: each test decides which commit the
//! delivery service accepts, the way `anytime-server` does with its epoch check.

use anytime_client::e2ee::{DeviceCrypto, DeviceIdentity, Incoming};
use anytime_proto::{ConvId, DeviceId, UserId};

fn device(user: u64, device: u64) -> DeviceCrypto {
    DeviceCrypto::new(DeviceIdentity { user: UserId(user), device: DeviceId(device) }).unwrap()
}

const CONV: ConvId = ConvId(77);

/// Creates the group on `owner` and adds `others` (one key package each); all join.
fn group(owner: &mut DeviceCrypto, others: &mut [&mut DeviceCrypto]) {
    owner.create_group(CONV).unwrap();
    let packages: Vec<Vec<u8>> = others.iter_mut().map(|d| d.key_packages(1).unwrap().remove(0)).collect();
    let commit = owner.add_devices(CONV, &packages).unwrap();
    owner.merge_pending(CONV).unwrap();
    for other in others.iter_mut() {
        other.join(CONV, commit.welcome.as_ref().unwrap()).unwrap();
    }
}

fn decrypt(device: &mut DeviceCrypto, bytes: &[u8]) -> Vec<u8> {
    match device.process(CONV, bytes).unwrap() {
        Incoming::Application { plaintext, .. } => plaintext,
        other => panic!("expected application data, got {other:?}"),
    }
}

#[test]
fn two_devices_exchange_messages_both_ways_with_authenticated_senders() {
    let mut alice = device(1, 10);
    let mut bob = device(2, 20);
    group(&mut alice, &mut [&mut bob]);
    assert_eq!(alice.epoch(CONV), bob.epoch(CONV));
    let to_bob = alice.encrypt(CONV, b"hello bob").unwrap();
    assert!(!to_bob.windows(9).any(|w| w == b"hello bob"), "ciphertext contains the plaintext");
    match bob.process(CONV, &to_bob).unwrap() {
        Incoming::Application { sender, plaintext } => {
            assert_eq!(sender, alice.identity());
            assert_eq!(plaintext, b"hello bob");
        }
        other => panic!("{other:?}"),
    }
    // The server echoes a message to its sender's own device too.
    assert_eq!(alice.process(CONV, &to_bob).unwrap(), Incoming::Own);
    let to_alice = bob.encrypt(CONV, b"hi alice").unwrap();
    assert_eq!(decrypt(&mut alice, &to_alice), b"hi alice");
    // Garbage is an error, not a panic.
    assert!(bob.process(CONV, &[0xff; 40]).is_err());
    assert!(bob.process(CONV, &[]).is_err());
}

#[test]
fn group_of_three_users_with_two_devices_each_and_removal_locks_the_removed_device_out() {
    let mut devices: Vec<DeviceCrypto> = (1..=3).flat_map(|u| [device(u, u * 10), device(u, u * 10 + 1)]).collect();
    let (owner, rest) = devices.split_first_mut().unwrap();
    let mut rest: Vec<&mut DeviceCrypto> = rest.iter_mut().collect();
    group(owner, &mut rest);
    assert_eq!(owner.members(CONV).len(), 6);
    let message = owner.encrypt(CONV, b"to all six").unwrap();
    for other in rest.iter_mut() {
        assert_eq!(decrypt(other, &message), b"to all six");
    }
    // Remove user 3's second device; everyone else applies the commit.
    let removed = rest[4].identity();
    let commit = owner.remove_devices(CONV, &[removed]).unwrap();
    owner.merge_pending(CONV).unwrap();
    for other in rest.iter_mut() {
        match other.process(CONV, &commit.commit).unwrap() {
            Incoming::CommitApplied { removed_self, .. } => assert_eq!(removed_self, other.identity() == removed),
            other => panic!("{other:?}"),
        }
    }
    let after = owner.encrypt(CONV, b"after removal").unwrap();
    for other in rest.iter_mut() {
        if other.identity() == removed {
            assert!(!other.has_group(CONV));
            assert!(other.process(CONV, &after).is_err(), "removed device decrypted a later message");
        } else {
            assert_eq!(decrypt(other, &after), b"after removal");
        }
    }
}

#[test]
fn concurrent_commits_one_wins_the_loser_discards_applies_and_retries() {
    let mut alice = device(1, 10);
    let mut bob = device(2, 20);
    let mut carol = device(3, 30);
    let mut dave = device(4, 40);
    group(&mut alice, &mut [&mut bob]);
    let epoch = alice.epoch(CONV).unwrap();
    // Both commit at the same epoch; the server accepts alice's (adds carol).
    let alice_commit = alice.add_devices(CONV, &[carol.key_packages(1).unwrap().remove(0)]).unwrap();
    let dave_package = dave.key_packages(1).unwrap().remove(0);
    let _bob_commit = bob.add_devices(CONV, std::slice::from_ref(&dave_package)).unwrap();
    alice.merge_pending(CONV).unwrap();
    carol.join(CONV, alice_commit.welcome.as_ref().unwrap()).unwrap();
    // Bob hears epoch_mismatch: drops his pending commit, applies alice's, retries.
    bob.discard_pending(CONV).unwrap();
    assert!(matches!(bob.process(CONV, &alice_commit.commit).unwrap(), Incoming::CommitApplied { .. }));
    let retry = bob.add_devices(CONV, &[dave_package]).unwrap();
    bob.merge_pending(CONV).unwrap();
    for other in [&mut alice, &mut carol] {
        assert!(matches!(other.process(CONV, &retry.commit).unwrap(), Incoming::CommitApplied { .. }));
    }
    dave.join(CONV, retry.welcome.as_ref().unwrap()).unwrap();
    for d in [&alice, &bob, &carol, &dave] {
        assert_eq!(d.epoch(CONV), Some(epoch + 2));
    }
    let message = bob.encrypt(CONV, b"all four").unwrap();
    for d in [&mut alice, &mut carol, &mut dave] {
        assert_eq!(decrypt(d, &message), b"all four");
    }
    // A member's stale commit echo (the one that added a device) is recognised as stale.
    assert_eq!(dave.process(CONV, &retry.commit).unwrap(), Incoming::Stale);
}

#[test]
fn exported_state_restores_a_device_that_still_decrypts() {
    let mut alice = device(1, 10);
    let mut bob = device(2, 20);
    group(&mut alice, &mut [&mut bob]);
    let saved = bob.export();
    drop(bob);
    let mut bob = DeviceCrypto::import(&saved).unwrap();
    assert!(bob.has_group(CONV));
    let message = alice.encrypt(CONV, b"after restart").unwrap();
    assert_eq!(decrypt(&mut bob, &message), b"after restart");
    let reply = bob.encrypt(CONV, b"still me").unwrap();
    match alice.process(CONV, &reply).unwrap() {
        Incoming::Application { sender, .. } => assert_eq!(sender, bob.identity()),
        other => panic!("{other:?}"),
    }
    assert!(DeviceCrypto::import(&[1, 2, 3]).is_err());
}

#[test]
fn safety_numbers_from_group_keys_match_on_both_sides_and_change_with_devices() {
    use anytime_client::safety::safety_number;
    let mut alice = device(1, 10);
    let mut bob = device(2, 20);
    group(&mut alice, &mut [&mut bob]);
    let keys_of = |d: &DeviceCrypto, user: u64| -> Vec<Vec<u8>> {
        d.member_keys(CONV).into_iter().filter(|(id, _)| id.user == UserId(user)).map(|(_, k)| k).collect()
    };
    let at_alice = safety_number((UserId(1), &keys_of(&alice, 1)), (UserId(2), &keys_of(&alice, 2)));
    let at_bob = safety_number((UserId(2), &keys_of(&bob, 2)), (UserId(1), &keys_of(&bob, 1)));
    assert_eq!(at_alice, at_bob);
    // Bob links a second device: the number changes.
    let mut bob2 = device(2, 21);
    alice.add_devices(CONV, &[bob2.key_packages(1).unwrap().remove(0)]).unwrap();
    alice.merge_pending(CONV).unwrap();
    let changed = safety_number((UserId(1), &keys_of(&alice, 1)), (UserId(2), &keys_of(&alice, 2)));
    assert_ne!(changed, at_alice);
    let _ = &mut bob2;
}

#[test]
fn a_message_sent_before_its_sender_was_removed_opens_after_the_removal_was_merged() {
    let (mut alice, mut bob, mut carol) = (device(1, 10), device(2, 20), device(3, 30));
    group(&mut alice, &mut [&mut bob, &mut carol]);
    let from_bob = bob.encrypt(CONV, b"before my removal").unwrap();
    // Alice removes bob before she has read his message; the server orders the message first.
    alice.remove_devices(CONV, &[bob.identity()]).unwrap();
    alice.merge_pending(CONV).unwrap();
    assert_eq!(decrypt(&mut carol, &from_bob), b"before my removal");
    // Also after a restart: the past epoch's secrets are part of the saved state.
    let mut alice = DeviceCrypto::import(&alice.export()).unwrap();
    assert_eq!(decrypt(&mut alice, &from_bob), b"before my removal");
}

#[test]
fn a_message_from_a_re_added_device_opens_after_its_next_removal_was_merged() {
    let (mut alice, mut bob, mut carol) = (device(1, 10), device(2, 20), device(3, 30));
    group(&mut alice, &mut [&mut bob, &mut carol]);
    let removal = alice.remove_devices(CONV, &[bob.identity()]).unwrap();
    alice.merge_pending(CONV).unwrap();
    carol.process(CONV, &removal.commit).unwrap();
    let package = bob.key_packages(1).unwrap().remove(0);
    let add = alice.add_devices(CONV, &[package]).unwrap();
    alice.merge_pending(CONV).unwrap();
    carol.process(CONV, &add.commit).unwrap();
    bob.join(CONV, add.welcome.as_ref().unwrap()).unwrap();
    let from_bob = bob.encrypt(CONV, b"back again").unwrap();
    alice.remove_devices(CONV, &[bob.identity()]).unwrap();
    alice.merge_pending(CONV).unwrap();
    assert_eq!(decrypt(&mut carol, &from_bob), b"back again");
    assert_eq!(decrypt(&mut alice, &from_bob), b"back again");
}
