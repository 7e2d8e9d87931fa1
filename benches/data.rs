//! salt-data throughput: synthetic generation, pre-processing (+ augmentation) and full batches
//! through burn's DataLoader on the CPU (ndarray). Run: `cargo bench -p salt-benches --bench data`.

use burn::data::dataloader::batcher::Batcher;
use burn_ndarray::NdArray;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use salt_data::synth::{generate, generate_one, items, Style};
use salt_data::{dataloader, resize_rgb8, Preprocess, VesselBatcher, VesselDataset};

type B = NdArray<f32>;

fn synth(c: &mut Criterion) {
    let mut g = c.benchmark_group("synth");
    g.throughput(Throughput::Elements(1));
    for style in [Style::Arcade, Style::Drive, Style::Rose] {
        g.bench_function(format!("{}_512", style.name()), |b| {
            let mut i = 0;
            b.iter(|| {
                i += 1;
                generate_one(style, 1, i, 512)
            })
        });
    }
    g.finish();
}

fn resize(c: &mut Criterion) {
    let (img, _) = generate(Style::Drive, 1, 0, 584).remove(0);
    let mut g = c.benchmark_group("resize");
    g.throughput(Throughput::Elements(1));
    g.bench_function("pillow_bilinear_rgb_584_to_512", |b| {
        b.iter(|| resize_rgb8(&img.data, 584, 584, 3, 512, 512))
    });
    g.bench_function("pillow_bilinear_rgb_584_to_1024", |b| {
        b.iter(|| resize_rgb8(&img.data, 584, 584, 3, 1024, 1024))
    });
    g.finish();
}

fn batches(c: &mut Criterion) {
    let pre = Preprocess::default(); // 512, bilinear-soft masks
    let data = items(generate(Style::Arcade, 16, 0, 512));
    let mut g = c.benchmark_group("batch");
    g.sample_size(10);
    g.throughput(Throughput::Elements(8));
    let batcher = VesselBatcher::train(pre, 0);
    g.bench_function("train_batch8_512", |b| {
        b.iter_batched(
            || data[..8].to_vec(),
            |items| Batcher::<B, _, _>::batch(&batcher, items, &Default::default()),
            BatchSize::LargeInput,
        )
    });
    g.throughput(Throughput::Elements(16));
    for workers in [0, 2] {
        let dl = dataloader::<B>(
            VesselDataset::from_items(data.clone()),
            VesselBatcher::train(pre, 0),
            8,
            Some(1),
            workers,
            Default::default(),
        );
        g.bench_function(format!("dataloader_epoch16_512_workers{workers}"), |b| {
            b.iter(|| dl.iter().count())
        });
    }
    g.finish();
}

criterion_group!(benches, synth, resize, batches);
criterion_main!(benches);
