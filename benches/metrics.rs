//! salt-metrics on DRIVE-sized (565x584) synthetic vessel masks, and a scaling series 256² … 2048²
//! (the same tree resampled by nearest neighbour) to show cost linear in the pixel count.
//!
//! Run: `cargo bench -p salt-benches --bench metrics`. The Python counterpart (medpy, scipy,
//! skimage on the same masks) is `python3 scripts/metrics_timing.py`. Results:
//! docs/benchmarks.md.

use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use salt_metrics::{
    distance_transform, evaluate, read_mask, skeletonize, DistanceDefinition, Mask, MetricOptions,
};

fn fixture(name: &str) -> Mask {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/salt-metrics/tests/fixtures/masks")
        .join(name);
    read_mask(&path, 0.0).unwrap_or_else(|e| panic!("{e}"))
}

/// Nearest-neighbour resampling: source index `⌊i · src / n⌋` (scripts/metrics_timing.py uses
/// the same rule, so both sides time identical masks).
fn resample(m: &Mask, n: usize) -> Mask {
    Mask::from_fn(n, n, |x, y| m.get(x * m.width() / n, y * m.height() / n))
}

fn opts(definition: DistanceDefinition, cldice: bool) -> MetricOptions {
    MetricOptions {
        definition,
        cldice,
        ..MetricOptions::default()
    }
}

fn bench(c: &mut Criterion) {
    let target = fixture("tree-identical-pred.png");
    let preds = [
        ("broken", fixture("tree-broken-pred.png")),
        ("eroded", fixture("tree-eroded-pred.png")),
    ];

    let mut g = c.benchmark_group("vessel_565x584");
    g.throughput(Throughput::Elements(
        (target.width() * target.height()) as u64,
    ));
    for (name, pred) in &preds {
        for d in DistanceDefinition::ALL {
            g.bench_function(BenchmarkId::new(format!("hd95_{d}"), name), |b| {
                b.iter(|| evaluate(pred, &target, &opts(d, false)).unwrap())
            });
        }
        g.bench_function(BenchmarkId::new("all_with_cldice", name), |b| {
            b.iter(|| evaluate(pred, &target, &opts(DistanceDefinition::Monai, true)).unwrap())
        });
    }
    g.bench_function("distance_transform", |b| {
        b.iter(|| distance_transform(&target, [1.0, 1.0]))
    });
    g.bench_function("skeletonize", |b| b.iter(|| skeletonize(&target)));
    g.finish();

    let mut g = c.benchmark_group("scaling_hd95_monai");
    for n in [256usize, 512, 1024, 2048] {
        let t = resample(&target, n);
        let p = resample(&preds[1].1, n);
        g.throughput(Throughput::Elements((n * n) as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &(p, t), |b, (p, t)| {
            b.iter(|| evaluate(p, t, &opts(DistanceDefinition::Monai, false)).unwrap())
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
