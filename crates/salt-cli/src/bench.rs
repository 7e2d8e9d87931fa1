//! `cargo xtask bench-train`: times training steps of a model, the peer of
//! `scripts/torch_train_bench.py` (same model, loss, optimizer and trainable sets).
//!
//! Random base weights, fixed N(0, 1) images and random 0/1 masks (about 10 % foreground): no
//! dataset on disk is needed, and only the shapes matter for the time. Each step is what
//! `salt train` does per batch: forward to logits at the input size, Dice + focal loss,
//! backward, AdamW; the backend is synchronised after each step before the clock stops.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, ElementConversion, Tensor};
use serde::{Deserialize, Serialize};

use salt_core::{apply_trainable, ParamReport, TrainablePolicy};

use crate::backend::{dispatch_devices_in, DeviceList, MultiTask};
use crate::train::config::{paper_trainable, MethodName, TrainConfig};
use crate::train::loss::LossConfig;
use crate::train::model::{with_train_model, ModelFamily, TrainModelTask, TrainSegmenter};
use crate::train::replicas::{check_batch_split, Replicas};
use crate::train::run::model_config;
use salt_data::HostBatch;

/// What to time (also `cargo xtask bench-train`'s flags).
#[derive(Debug, Clone, Serialize, Deserialize, clap::Args)]
pub struct BenchTrainOptions {
    /// Model preset (`salt_paper`, `vit_b`, `small`, `tiny_salt_paper`, …).
    #[arg(long, default_value = "salt_paper")]
    pub model: String,
    /// `salt`, `lora`, `ssam`, `full` or `frozen` (only the paper's norms, `pos_embed` and the
    /// prompt token train).
    #[arg(long, default_value = "salt")]
    pub method: String,
    /// SALT: adapted singular values r.
    #[arg(long, default_value_t = 48)]
    pub svd_rank: usize,
    /// SALT: rank q of X·Y; LoRA: rank.
    #[arg(long, default_value_t = 256)]
    pub rank: usize,
    /// Images per step.
    #[arg(long, default_value_t = 2)]
    pub batch: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    /// Untimed steps before (first-use allocation, JIT, autotune).
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// `cpu`, `flex`, `wgpu[:N]`, `cuda[:N]` (build with the matching feature); a list
    /// (`cuda:0,cuda:1`, `cuda:all`) times data-parallel steps of the global batch `--batch`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Seed of the weights, images and masks.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Compute precision of matmuls and attention: f32, bf16 or f16 (mixed precision; bf16 and
    /// f16 need a GPU backend or flex).
    #[arg(long, default_value = "f32", value_parser = crate::backend::parse_precision)]
    #[serde(default)]
    pub precision: salt_core::Precision,
}

impl Default for BenchTrainOptions {
    fn default() -> Self {
        Self {
            model: "salt_paper".into(),
            method: "salt".into(),
            svd_rank: 48,
            rank: 256,
            batch: 2,
            steps: 3,
            warmup: 1,
            device: "cpu".into(),
            seed: 0,
            precision: salt_core::Precision::F32,
        }
    }
}

/// The measurement, one JSON object (docs/formats.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchTrainResult {
    /// Always `salt`.
    pub r#impl: String,
    /// The options measured.
    pub options: BenchTrainOptions,
    /// The backend's name as burn reports it.
    pub backend: String,
    /// Seconds of each timed step.
    pub step_s: Vec<f64>,
    /// Median seconds per step.
    pub median_s: f64,
    /// Fastest step.
    pub min_s: f64,
    /// `batch / median_s`.
    pub images_per_s: f64,
    /// CPU backends: the process's peak resident set over the timed steps (reset before them
    /// where Linux allows it); `None` elsewhere (the GPU script samples the driver).
    pub peak_rss_bytes: Option<u64>,
    /// Trainable and total parameter counts.
    pub params: ParamReport,
    /// Loss of the last step.
    pub last_loss: f64,
    /// Data-parallel replicas (devices) the batch was split across.
    #[serde(default = "one")]
    pub replicas: usize,
}

fn one() -> usize {
    1
}

/// Times `opts.steps` training steps on the device of `opts.device`.
pub fn bench_train(opts: &BenchTrainOptions) -> Result<BenchTrainResult> {
    if opts.batch == 0 || opts.steps == 0 {
        bail!(
            "batch = {}, steps = {}: both must be at least 1",
            opts.batch,
            opts.steps
        );
    }
    let devices: DeviceList = opts.device.parse().map_err(anyhow::Error::msg)?;
    dispatch_devices_in(&devices, opts.precision, BenchTask(opts.clone()))
}

struct BenchTask(BenchTrainOptions);

impl MultiTask for BenchTask {
    type Output = BenchTrainResult;

    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Result<BenchTrainResult> {
        struct Run<B: AutodiffBackend>(BenchTrainOptions, Vec<B::Device>);
        impl<B: AutodiffBackend> TrainModelTask<B> for Run<B> {
            type Output = BenchTrainResult;
            fn run<M: TrainSegmenter<B>>(self) -> Result<BenchTrainResult> {
                run_bench::<B, M>(self.0, &self.1)
            }
        }
        let model = self.0.model.clone();
        with_train_model(&model, Run::<B>(self.0, devices))
    }
}

fn train_config(opts: &BenchTrainOptions) -> Result<TrainConfig> {
    let method = match opts.method.as_str() {
        "salt" => MethodName::Salt,
        "lora" => MethodName::Lora,
        "ssam" | "svd" => MethodName::Ssam,
        "full" => MethodName::Full,
        // Built below without an adapter.
        "frozen" => MethodName::Salt,
        other => bail!("unknown method `{other}`: expected salt, lora, ssam, full or frozen"),
    };
    Ok(TrainConfig {
        model: opts.model.clone(),
        method,
        svd_rank: opts.svd_rank,
        rank: opts.rank,
        seed: opts.seed,
        device: opts.device.clone(),
        ..TrainConfig::default()
    })
}

/// The model of the bench: `M::build`, except `frozen` (SAM without an adapter, only the
/// paper's extra parameters training).
fn bench_model<B: AutodiffBackend, M: TrainSegmenter<B>>(
    opts: &BenchTrainOptions,
    cfg: &TrainConfig,
    device: &B::Device,
) -> Result<(M, TrainablePolicy)> {
    if opts.method != "frozen" {
        let (model, policy, _) = M::build(cfg, device)?;
        return Ok((model, policy));
    }
    let ModelFamily::Sam = ModelFamily::of(&cfg.model)? else {
        bail!("--method frozen is SAM's (no adapter, the paper's extra parameters only)");
    };
    B::seed(device, opts.seed);
    let sam = model_config(&cfg.model)?
        .init::<B>(device)
        .context("building the model")?;
    let policy = TrainablePolicy::with_patterns(paper_trainable(
        sam.prompt_encoder.prompt_token.is_some(),
        sam.image_encoder.pos_embed.is_some(),
    ));
    let sam = apply_trainable(sam, &policy)?;
    // `M` is `Sam<B>` here (the family was checked): moved across as `Any`.
    let any: Box<dyn std::any::Any> = Box::new(sam);
    let model = *any
        .downcast::<M>()
        .map_err(|_| anyhow::anyhow!("--method frozen needs a SAM model"))?;
    Ok((model, policy))
}

fn run_bench<B: AutodiffBackend, M: TrainSegmenter<B>>(
    opts: BenchTrainOptions,
    devices: &[B::Device],
) -> Result<BenchTrainResult> {
    let device = &devices[0];
    check_batch_split("batch", opts.batch, devices.len(), &opts.device)?;
    let cfg = train_config(&opts)?;
    let (mut sam, policy) = bench_model::<B, M>(&opts, &cfg, device)?;
    let params = sam.param_report(&policy);
    let s = sam.input_size();
    B::seed(device, opts.seed.wrapping_add(1));
    let images = Tensor::<B, 4>::random(
        [opts.batch, 3, s, s],
        Distribution::Normal(0.0, 1.0),
        device,
    );
    let masks = Tensor::<B, 4>::random([opts.batch, 1, s, s], Distribution::Default, device)
        .lower_elem(0.1)
        .float();
    let mut optim = AdamWConfig::new()
        .with_weight_decay(cfg.weight_decay as f32)
        .init::<B, M>();
    let loss_cfg = LossConfig::default();
    // Several devices: the host batch is split and uploaded every step, as `salt train` does.
    let mut replicas = None;
    let mut host = None;
    if devices.len() > 1 {
        let names: Vec<String> = (0..devices.len()).map(|k| format!("#{k}")).collect();
        replicas = Some(Replicas::<B, M>::start(
            &sam, &optim, devices, &names, loss_cfg, None,
        )?);
        let floats = |t: Tensor<B, 4>| -> Result<Vec<f32>> {
            t.into_data()
                .convert::<f32>()
                .into_vec()
                .map_err(|e| anyhow::anyhow!("reading the bench batch: {e:?}"))
        };
        host = Some(HostBatch {
            images: floats(images.clone())?,
            masks: floats(masks.clone())?,
            size: s,
            ids: (0..opts.batch).map(|i| format!("bench{i}")).collect(),
            original_sizes: vec![(s, s); opts.batch],
            resized_sizes: vec![(s, s); opts.batch],
        });
    }
    let mut times = Vec::with_capacity(opts.steps);
    let mut last_loss = f64::NAN;
    for i in 0..opts.warmup + opts.steps {
        if i == opts.warmup {
            reset_peak_rss();
        }
        let t0 = Instant::now();
        if let (Some(replicas), Some(host)) = (&mut replicas, &host) {
            let row = replicas.step(&mut sam, &mut optim, host.clone(), cfg.lr, i + 1, device)?;
            last_loss = row.narrow(0, 0, 1).into_scalar().elem();
        } else {
            let logits = sam.logits(images.clone())?;
            let terms = loss_cfg.forward(logits, masks.clone());
            last_loss = terms.total.clone().into_scalar().elem();
            let grads = GradientsParams::from_grads(terms.total.backward(), &sam);
            sam = optim.step(cfg.lr, sam, grads);
        }
        for d in devices {
            B::sync(d).map_err(|e| anyhow::anyhow!("synchronising the device: {e:?}"))?;
        }
        let dt = t0.elapsed().as_secs_f64();
        tracing::info!(
            step = i + 1,
            warmup = i < opts.warmup,
            seconds = dt,
            loss = last_loss
        );
        if i >= opts.warmup {
            times.push(dt);
        }
    }
    let cpu = opts.device.parse::<DeviceList>().is_ok_and(|l| l.is_cpu());
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = if sorted.len() % 2 == 1 {
        sorted[sorted.len() / 2]
    } else {
        0.5 * (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2])
    };
    Ok(BenchTrainResult {
        r#impl: "salt".into(),
        backend: <B as Backend>::name(device),
        options: opts.clone(),
        median_s: median,
        min_s: sorted[0],
        images_per_s: opts.batch as f64 / median,
        peak_rss_bytes: if cpu { peak_rss_bytes() } else { None },
        step_s: times,
        params,
        last_loss,
        replicas: devices.len(),
    })
}

/// Resets the kernel's peak-RSS counter of this process (Linux ≥ 4.0; a no-op elsewhere).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// `VmHWM` of this process, in bytes (Linux).
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_step_of_the_tiny_model_is_timed_and_reported() {
        let _rng = crate::train::run::tests::BACKEND_RNG
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let opts = BenchTrainOptions {
            model: "tiny_salt_paper".into(),
            svd_rank: 2,
            rank: 2,
            steps: 2,
            warmup: 1,
            ..Default::default()
        };
        let r = bench_train(&opts).unwrap();
        assert_eq!(r.step_s.len(), 2);
        assert!(r.median_s > 0.0 && r.min_s <= r.median_s);
        assert!(r.last_loss.is_finite());
        assert!(r.params.trainable > 0 && r.params.trainable < r.params.total);
        for method in ["frozen", "full", "lora", "ssam"] {
            let r = bench_train(&BenchTrainOptions {
                method: method.into(),
                steps: 1,
                warmup: 0,
                ..opts.clone()
            })
            .unwrap();
            assert!(r.last_loss.is_finite(), "{method}");
        }
        let r = bench_train(&BenchTrainOptions {
            device: "cpu,cpu".into(),
            steps: 1,
            warmup: 1,
            ..opts.clone()
        })
        .unwrap();
        assert_eq!(r.replicas, 2);
        assert!(r.last_loss.is_finite());
        let err = bench_train(&BenchTrainOptions {
            method: "qlora".into(),
            ..opts
        })
        .unwrap_err();
        assert!(format!("{err}").contains("qlora"), "{err}");
    }
}
