//! Sealing and opening attachments (`anytime_media::seal`): MB/s of plaintext for a 16 MiB file,
//! in memory, one core. Run: `cargo bench -p anytime-media --bench seal`.

use anytime_media::seal;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const FILE_BYTES: usize = 16 * 1024 * 1024;

fn bench(c: &mut Criterion) {
    let key = [7u8; 32];
    let plain: Vec<u8> = (0..FILE_BYTES).map(|i| (i * 31 % 251) as u8).collect();
    let sealed = seal::seal(&key, &plain);
    let mut group = c.benchmark_group("attachment 16 MiB");
    group.throughput(Throughput::Bytes(FILE_BYTES as u64));
    group.sample_size(20);
    group.bench_function(BenchmarkId::new("seal", "chacha20poly1305"), |b| b.iter(|| seal::seal(&key, &plain)));
    group.bench_function(BenchmarkId::new("open", "chacha20poly1305"), |b| {
        b.iter(|| {
            let mut opener = seal::Opener::new(&key);
            let mut n = 0;
            for piece in sealed.chunks(256 * 1024) {
                n += opener.push(piece).expect("opens").len();
            }
            n + opener.finish().expect("finishes").len()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
