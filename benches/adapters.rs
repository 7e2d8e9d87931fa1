//! Forward + backward of one adapted layer at ViT-B shapes (1024 tokens; 768→2304 is `qkv`,
//! 768→768 is `proj`) on the CPU: plain, LoRA 4 and 256, S-SAM, SALT r=48 q=4 and q=256.
//!
//! Run: `cargo bench -p salt-benches --bench adapters`. Results: docs/benchmarks.md.

use burn::backend::{Autodiff, NdArray};
use burn::tensor::{Distribution, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use salt_core::{inject, AdaptableLinear, AdaptableLinearConfig, AdapterConfig, Method, SaltInit};

type B = Autodiff<NdArray<f32>>;
const TOKENS: usize = 1024;

fn layer(d_in: usize, d_out: usize, method: Option<Method>) -> AdaptableLinear<B> {
    let device = Default::default();
    let mut l = AdaptableLinearConfig::new(d_in, d_out).init::<B>(&device);
    if let Some(method) = method {
        inject(
            &mut l,
            &AdapterConfig {
                method,
                targets: vec!["**".into()],
                seed: 0,
            },
        )
        .unwrap();
    }
    l
}

fn bench(c: &mut Criterion) {
    let device = Default::default();
    let methods: Vec<(&str, Option<Method>)> = vec![
        ("plain", None),
        (
            "lora4",
            Some(Method::Lora {
                rank: 4,
                scale: 1.0,
                dropout: 0.0,
            }),
        ),
        (
            "lora256",
            Some(Method::Lora {
                rank: 256,
                scale: 1.0,
                dropout: 0.0,
            }),
        ),
        ("ssam", Some(Method::Svd)),
        (
            "salt48x4",
            Some(Method::Salt {
                svd_rank: 48,
                lora_rank: 4,
                init: SaltInit::Reference,
            }),
        ),
        (
            "salt48x256",
            Some(Method::Salt {
                svd_rank: 48,
                lora_rank: 256,
                init: SaltInit::Reference,
            }),
        ),
    ];
    for (d_in, d_out) in [(768, 2304), (768, 768)] {
        let mut group = c.benchmark_group(format!("fwd_bwd_{d_in}x{d_out}"));
        group.sample_size(10);
        for (name, method) in &methods {
            let l = layer(d_in, d_out, method.clone());
            // The base weight is frozen as in fine-tuning; plain trains its weight (full FT).
            let l = if method.is_some() {
                salt_core::apply_trainable(l, &salt_core::TrainablePolicy::adapters_only()).unwrap()
            } else {
                l
            };
            let x = Tensor::<B, 2>::random([TOKENS, d_in], Distribution::Normal(0.0, 1.0), &device);
            group.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter(|| {
                    let y = l.forward(x.clone());
                    let grads = y.powi_scalar(2).mean().backward();
                    std::hint::black_box(grads);
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
