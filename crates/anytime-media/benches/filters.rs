//! Each filter on a 12-megapixel photo (4000 x 3000 RGBA), one core; the goal is colour filters
//! under 50 ms native. Run: `cargo bench -p anytime-media --bench filters`.

use anytime_media::filter::{apply, Adjust, Filter};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

const WIDTH: u32 = 4000;
const HEIGHT: u32 = 3000;

fn bench(c: &mut Criterion) {
    let photo: Vec<u8> = (0..WIDTH * HEIGHT)
        .flat_map(|i| [(i * 7 % 256) as u8, (i * 13 % 256) as u8, (i * 29 % 256) as u8, 255])
        .collect();
    let mut frame = photo.clone();
    let mut group = c.benchmark_group("filter 12 MP");
    group.sample_size(10);
    for filter in Filter::ALL {
        group.bench_function(BenchmarkId::from_parameter(filter.name()), |b| {
            b.iter(|| {
                frame.copy_from_slice(&photo);
                apply(&mut frame, WIDTH, HEIGHT, filter, Adjust::default()).expect("a frame of the right size");
            })
        });
    }
    group.bench_function(BenchmarkId::from_parameter("sliders"), |b| {
        b.iter(|| {
            frame.copy_from_slice(&photo);
            let adjust = Adjust { brightness: 10, contrast: 20, saturation: -30 };
            apply(&mut frame, WIDTH, HEIGHT, Filter::Original, adjust).expect("a frame of the right size");
        })
    });
    group.bench_function(BenchmarkId::from_parameter("copy only (baseline)"), |b| {
        b.iter(|| frame.copy_from_slice(&photo))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
