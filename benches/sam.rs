//! SAM image-encoder forward on the CPU (ndarray, random weights): stock ViT-B at 1024 (windowed
//! attention with relative positions) and the SALT paper's ViT-B at 512 (global attention).
//!
//! Run: `cargo bench -p salt-benches --bench sam` (about 8 minutes on 2 cores: criterion's
//! minimum of 10 samples, one forward each). PyTorch on the same input:
//! `python3 scripts/sam_torch_bench.py`. Results: docs/benchmarks.md.

use std::time::Duration;

use burn::backend::NdArray;
use burn::tensor::{Distribution, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use salt_sam::SamConfig;

type B = NdArray<f32>;

fn encoder(c: &mut Criterion, name: &str, config: SamConfig) {
    let device = Default::default();
    let sam = config.init::<B>(&device).expect("valid preset");
    let s = sam.img_size();
    let input = Tensor::<B, 4>::random([1, 3, s, s], Distribution::Normal(0.0, 1.0), &device);
    let mut group = c.benchmark_group("sam_encoder");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1));
    group.bench_function(name, |b| {
        b.iter(|| {
            let out = sam.image_embeddings(input.clone());
            // Force the computation (backends may be lazy) and keep the result alive.
            out.into_data()
        })
    });
    group.finish();
}

fn bench(c: &mut Criterion) {
    // What the salt binary does for inference (`eval`, `predict`; docs/decisions.md, "Allocator").
    salt_core::alloc::keep_freed_memory();
    encoder(c, "salt_paper_512", SamConfig::salt_paper());
    encoder(c, "vit_b_1024", SamConfig::vit_b());
}

criterion_group!(benches, bench);
criterion_main!(benches);
