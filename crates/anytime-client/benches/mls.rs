//! MLS costs on one device: encrypt + decrypt of 1 KiB messages, adding 1/10/100 members in one
//! commit, processing a commit in groups of 10/100/1000 members, and a 1,000-member group's
//! own costs (creating it, adding a member to it, a message in it).
//! Run: `cargo bench -p anytime-client --bench mls`.

use anytime_client::e2ee::{DeviceCrypto, DeviceIdentity};
use anytime_proto::{ConvId, DeviceId, UserId};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

const CONV: ConvId = ConvId(1);

fn device(n: u64) -> DeviceCrypto {
    DeviceCrypto::new(DeviceIdentity { user: UserId(n), device: DeviceId(n) }).unwrap()
}

/// A group of `size` members: the owner, one observer that processes commits, and key-package-
/// only others (their own state is not needed to measure the owner and the observer).
fn group(size: usize) -> (DeviceCrypto, DeviceCrypto) {
    let mut owner = device(1);
    let mut observer = device(2);
    owner.create_group(CONV).unwrap();
    let mut packages = vec![observer.key_packages(1).unwrap().remove(0)];
    for n in 3..=size as u64 {
        packages.push(device(n).key_packages(1).unwrap().remove(0));
    }
    let commit = owner.add_devices(CONV, &packages).unwrap();
    owner.merge_pending(CONV).unwrap();
    observer.join(CONV, commit.welcome.as_ref().unwrap()).unwrap();
    (owner, observer)
}

fn encrypt_decrypt(c: &mut Criterion) {
    let (mut alice, mut bob) = group(2);
    let message = vec![0x42u8; 1024];
    c.bench_function("encrypt+decrypt 1 KiB", |b| {
        b.iter(|| {
            let ciphertext = alice.encrypt(CONV, &message).unwrap();
            bob.process(CONV, &ciphertext).unwrap()
        })
    });
}

fn add_members(c: &mut Criterion) {
    let mut bench = c.benchmark_group("add members in one commit");
    bench.sample_size(10);
    for n in [1usize, 10, 100] {
        bench.bench_function(format!("{n}"), |b| {
            b.iter_batched(
                || {
                    let mut owner = device(1);
                    owner.create_group(CONV).unwrap();
                    let packages: Vec<Vec<u8>> =
                        (0..n).map(|i| device(10 + i as u64).key_packages(1).unwrap().remove(0)).collect();
                    (owner, packages)
                },
                |(mut owner, packages)| {
                    owner.add_devices(CONV, &packages).unwrap();
                    owner.merge_pending(CONV).unwrap();
                },
                BatchSize::PerIteration,
            )
        });
    }
    bench.finish();
}

fn process_commit(c: &mut Criterion) {
    let mut bench = c.benchmark_group("process a commit (add 1) in a group of");
    bench.sample_size(10);
    for size in [10usize, 100, 1000] {
        let (mut owner, mut observer) = group(size);
        let mut next = 100_000u64;
        bench.bench_function(format!("{size}"), |b| {
            b.iter_batched(
                || {
                    next += 1;
                    let package = device(next).key_packages(1).unwrap().remove(0);
                    let commit = owner.add_devices(CONV, &[package]).unwrap();
                    owner.merge_pending(CONV).unwrap();
                    commit.commit
                },
                |commit| observer.process(CONV, &commit).unwrap(),
                BatchSize::PerIteration,
            )
        });
    }
    bench.finish();
}

fn thousand_members(c: &mut Criterion) {
    let mut bench = c.benchmark_group("group of 1,000");
    bench.sample_size(10);
    bench.bench_function("create it: add 999 members in one commit", |b| {
        b.iter_batched(
            || {
                let mut owner = device(1);
                owner.create_group(CONV).unwrap();
                let packages: Vec<Vec<u8>> =
                    (0..999).map(|i| device(10 + i as u64).key_packages(1).unwrap().remove(0)).collect();
                (owner, packages)
            },
            |(mut owner, packages)| {
                owner.add_devices(CONV, &packages).unwrap();
                owner.merge_pending(CONV).unwrap();
            },
            BatchSize::PerIteration,
        )
    });
    let (mut owner, _) = group(1000);
    let mut next = 200_000u64;
    bench.bench_function("add 1 member (committer side, incl. merge)", |b| {
        b.iter_batched(
            || {
                next += 1;
                device(next).key_packages(1).unwrap().remove(0)
            },
            |package| {
                let commit = owner.add_devices(CONV, &[package]).unwrap();
                owner.merge_pending(CONV).unwrap();
                commit
            },
            BatchSize::PerIteration,
        )
    });
    // A fresh group: the observer has not followed the commits above.
    let (mut owner, mut observer) = group(1000);
    let message = vec![0x42u8; 1024];
    bench.bench_function("encrypt + decrypt 1 KiB (sender and one member)", |b| {
        b.iter(|| {
            let ciphertext = owner.encrypt(CONV, &message).unwrap();
            observer.process(CONV, &ciphertext).unwrap()
        })
    });
    bench.finish();
}

criterion_group!(benches, encrypt_decrypt, add_members, process_commit, thousand_members);
criterion_main!(benches);
