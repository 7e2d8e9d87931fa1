//! `salt eval`: evaluate an adapter (or a trained run) on a dataset split: per-image CSV,
//! summary JSON, predicted masks and a qualitative figure.
//!
//! Protocols: `original` (default) maps predictions back to each image's original size and
//! compares them with the original masks; `salt-paper` evaluates as the paper's code did, in the
//! padded model space (512 × 512 for `salt_paper`), with the resized (bilinear, ≥ 0.5) masks,
//! Dice smoothed by 1 and the paper's HD95 definition.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use burn::tensor::backend::{AutodiffBackend, Backend};
use salt_core::AdapterManifest;
use salt_data::{Preprocess, Split, VesselBatcher, VesselDataset};
use salt_metrics::{Accumulator, DistanceDefinition, MetricOptions};

use crate::backend::{dispatch_in, DeviceSpec, Task};
use crate::train::config::TrainConfig;
use crate::train::model::{with_model, ModelTask, Segmenter};
use crate::train::qualitative::{figure, png_bytes, predict_item};
use crate::train::run::load_trained;

/// Evaluation protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Protocol {
    /// Metrics at each image's original resolution.
    Original,
    /// The paper's: model space with padding, resized masks, smoothed Dice, its HD95.
    SaltPaper,
}

/// A trained model on the command line: its adapter directory, and the base checkpoint when it
/// is not the run's (`salt eval`, `salt export-merged`).
#[derive(Debug, clap::Args)]
pub struct AdapterArgs {
    /// Adapter directory (`adapter.safetensors` + `adapter_config.json`), e.g. `runs/x/best`.
    #[arg(long)]
    pub adapter: PathBuf,
    /// Base checkpoint; default: the one of the training run (its `config.toml` beside the
    /// adapter directory).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Use the adapter even if the base differs from (or is not recorded with) the one it was
    /// trained on.
    #[arg(long)]
    pub allow_base_mismatch: bool,
}

/// Arguments of `salt eval`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The trained model.
    #[command(flatten)]
    pub trained: AdapterArgs,
    /// Dataset root.
    #[arg(long)]
    pub data: PathBuf,
    /// Split to evaluate: train, val or test.
    #[arg(long, default_value = "val")]
    pub split: String,
    /// Evaluation protocol.
    #[arg(long, value_enum, default_value = "original")]
    pub protocol: Protocol,
    /// HD95 definition: monai, medpy or salt-paper (the salt-paper protocol forces salt-paper).
    #[arg(long, default_value = "monai")]
    pub hd95: String,
    /// Output directory (metrics.csv, summary.json, masks/, qualitative.png).
    #[arg(long, default_value = "eval")]
    pub out: PathBuf,
    /// Device: cpu, flex, wgpu[:N], cuda[:N].
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Compute precision of matmuls and attention: f32, bf16 or f16 (mixed precision; bf16 and
    /// f16 need a GPU backend or flex).
    #[arg(long, default_value = "f32", value_parser = crate::backend::parse_precision)]
    pub precision: salt_core::Precision,
    /// Rows of the qualitative figure.
    #[arg(long, default_value_t = 4)]
    pub figure_rows: usize,
}

/// The run configuration an adapter belongs to: the run's `config.toml` next to the adapter
/// directory when present, else rebuilt from the manifest, whose recorded base says which base
/// model to build (a random base from its preset and seed; a checkpoint from its recorded path).
/// `checkpoint` (`--checkpoint`) replaces the base; [`load_trained`] then checks it against the
/// recorded identity. An adapter whose base is neither recorded, nor given, nor in a run config
/// is an error: it is never run on a random model.
pub fn run_config(adapter: &std::path::Path, checkpoint: Option<PathBuf>) -> Result<TrainConfig> {
    let manifest = AdapterManifest::read(adapter)?;
    let run_cfg = adapter
        .parent()
        .map(|p| p.join(crate::train::run::CONFIG_FILE));
    let mut cfg = match run_cfg.filter(|p| p.is_file()) {
        Some(p) => TrainConfig::read(&p)?,
        None => {
            let Some(a) = &manifest.adapter else {
                bail!(
                    "{}: no adapter in adapter_config.json and no run config.toml beside it",
                    adapter.display()
                );
            };
            let mut c = TrainConfig {
                model: manifest.model.clone(),
                targets: a.targets.clone(),
                seed: a.seed,
                ..Default::default()
            };
            c.trainable = manifest.trainable.patterns.clone();
            match &a.method {
                salt_core::Method::Salt {
                    svd_rank,
                    lora_rank,
                    init,
                } => {
                    c.method = crate::train::config::MethodName::Salt;
                    c.svd_rank = *svd_rank;
                    c.rank = *lora_rank;
                    c.salt_init = *init;
                }
                salt_core::Method::Svd => c.method = crate::train::config::MethodName::Ssam,
                salt_core::Method::Lora { rank, dropout, .. } => {
                    c.method = crate::train::config::MethodName::Lora;
                    c.rank = *rank;
                    c.lora_dropout = *dropout;
                }
            }
            match (&manifest.base, &checkpoint) {
                (_, Some(_)) => {}
                (Some(base), None) if base.is_random() => c.checkpoint = None,
                (Some(base), None) if std::path::Path::new(&base.file).is_file() => {
                    c.checkpoint = Some(PathBuf::from(&base.file));
                }
                (Some(base), None) => bail!(
                    "{}: no run config.toml beside the adapter, and its base checkpoint {} is not \
                     there; give the base with --checkpoint",
                    adapter.display(),
                    base.describe()
                ),
                (None, None) => bail!(
                    "{}: the base model is unknown (no run config.toml beside the adapter, no base \
                     recorded in its adapter_config.json); give the base checkpoint with \
                     --checkpoint (and --allow-base-mismatch, as nothing can confirm it)",
                    adapter.display()
                ),
            }
            c
        }
    };
    if checkpoint.is_some() {
        cfg.checkpoint = checkpoint;
    }
    Ok(cfg)
}

/// An item with its predicted mask, for [`figure`].
pub type FigureRow<'a> = (&'a salt_data::VesselItem, Vec<bool>);

/// Evaluates `model` on `items` under `protocol`; writes each predicted mask (original size) to
/// `masks_dir` as `<id>_mask.png` when given, and returns the accumulated metrics and the first
/// `figure_rows` predictions for a figure.
pub fn evaluate<'a, B: burn::tensor::backend::Backend, M: Segmenter<B>>(
    model: &M,
    items: &'a [salt_data::VesselItem],
    protocol: Protocol,
    opts: &MetricOptions,
    masks_dir: Option<&std::path::Path>,
    figure_rows: usize,
    device: &B::Device,
) -> Result<(Accumulator, Vec<FigureRow<'a>>)> {
    let mut acc = Accumulator::new();
    let mut rows = Vec::new();
    let pre = Preprocess {
        size: model.input_size(),
        ..Default::default()
    };
    for (i, item) in items.iter().enumerate() {
        let pred = predict_item(model, item, device)?;
        let (h, w) = item.original_size;
        if let Some(dir) = masks_dir {
            let pm = salt_data::Mask {
                width: w,
                height: h,
                data: pred.iter().map(|&b| b as u8).collect(),
            };
            salt_data::image_io::write_mask(&dir.join(format!("{}_mask.png", item.id)), &pm)?;
        }
        let result = match protocol {
            Protocol::Original => {
                let p = salt_metrics::Mask::new(w, h, pred.clone())?;
                let t =
                    salt_metrics::Mask::new(w, h, item.mask.data.iter().map(|&v| v > 0).collect())?;
                salt_metrics::evaluate(&p, &t, opts)?
            }
            Protocol::SaltPaper => {
                use burn::data::dataloader::batcher::Batcher;
                let batch: salt_data::VesselBatch<B> =
                    VesselBatcher::eval(pre).batch(vec![item.clone()], device);
                let s = model.input_size();
                let logits = model.logits(batch.images)?;
                let z: Vec<f32> = logits
                    .into_data()
                    .convert::<f32>()
                    .into_vec()
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                let y: Vec<f32> = batch
                    .masks
                    .into_data()
                    .convert::<f32>()
                    .into_vec()
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                let p = salt_metrics::Mask::new(s, s, z.iter().map(|&v| v >= 0.0).collect())?;
                let t = salt_metrics::Mask::new(s, s, y.iter().map(|&v| v >= 0.5).collect())?;
                let mut r = salt_metrics::evaluate(&p, &t, opts)?;
                // The paper's Dice: (2|y∧p| + 1) / (|y| + |p| + 1).
                let inter = z
                    .iter()
                    .zip(&y)
                    .filter(|(a, b)| **a >= 0.0 && **b >= 0.5)
                    .count() as f64;
                let (ny, np) = (t.count() as f64, p.count() as f64);
                r.dice = (2.0 * inter + 1.0) / (ny + np + 1.0);
                r
            }
        };
        acc.push(item.id.clone(), result);
        if i < figure_rows {
            rows.push((item, pred));
        }
    }
    Ok((acc, rows))
}

struct Eval(Args, TrainConfig, Split, MetricOptions);

impl Task for Eval {
    type Output = salt_metrics::Report;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<salt_metrics::Report> {
        let Eval(args, cfg, split, opts) = self;
        let data = VesselDataset::open(&args.data, split).with_context(|| {
            format!(
                "opening the {} split of {}",
                split.name(),
                args.data.display()
            )
        })?;
        let masks_dir = args.out.join("masks");
        // Inference only: the model on the inner backend, no autodiff graph.
        struct Run<'a, B: Backend> {
            args: &'a Args,
            cfg: &'a TrainConfig,
            items: &'a [salt_data::VesselItem],
            opts: &'a MetricOptions,
            masks_dir: &'a std::path::Path,
            device: &'a B::Device,
        }
        impl<'a, B: Backend> ModelTask<B> for Run<'a, B> {
            type Output = (Accumulator, Vec<FigureRow<'a>>);
            fn run<M: Segmenter<B>>(self) -> Result<Self::Output> {
                let model = load_trained::<B, M>(
                    self.cfg,
                    &self.args.trained.adapter,
                    self.args.trained.allow_base_mismatch,
                    self.device,
                )?;
                evaluate(
                    &model,
                    self.items,
                    self.args.protocol,
                    self.opts,
                    Some(self.masks_dir),
                    self.args.figure_rows,
                    self.device,
                )
            }
        }
        let run = Run::<B::InnerBackend> {
            args: &args,
            cfg: &cfg,
            items: data.items(),
            opts: &opts,
            masks_dir: &masks_dir,
            device: &device,
        };
        let (acc, rows) = with_model(&cfg.model, run)?;
        salt_core::write_atomic(
            &args.out.join("qualitative.png"),
            &png_bytes(&figure(&rows))?,
        )?;
        Ok(acc.report())
    }
}

/// Evaluates and writes `metrics.csv`, `summary.json`, `masks/` and `qualitative.png`.
pub fn run(args: Args) -> Result<()> {
    let split = Split::parse(&args.split)
        .with_context(|| format!("--split {}: expected train, val or test", args.split))?;
    let definition: DistanceDefinition = match args.protocol {
        Protocol::SaltPaper => DistanceDefinition::SaltPaper,
        Protocol::Original => args
            .hd95
            .parse()
            .map_err(|e| anyhow::anyhow!("--hd95 {}: {e}", args.hd95))?,
    };
    let opts = MetricOptions {
        definition,
        ..Default::default()
    };
    let spec: DeviceSpec = args.device.parse().map_err(anyhow::Error::msg)?;
    let cfg = run_config(&args.trained.adapter, args.trained.checkpoint.clone())?;
    let (parent, name) = output_dir(&args.out)?;
    // Everything is written into a temporary folder beside --out and published by renames at
    // the end (an earlier evaluation there is replaced); a failure leaves --out as it was.
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let out = crate::train::rundir::staging(&parent, &name)?;
    let result = write_eval(args, cfg, split, opts, spec, &out)
        .and_then(|()| crate::train::rundir::publish(&out, &parent, &name));
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&out);
    }
    result
}

/// The parent and name of `--out`, refusing a folder that holds something other than an
/// earlier evaluation (it would be replaced).
fn output_dir(out: &std::path::Path) -> Result<(PathBuf, String)> {
    let Some(name) = out.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        bail!("--out {}: give a folder name", out.display());
    };
    if out.exists() {
        let empty = std::fs::read_dir(out)
            .with_context(|| format!("reading {}", out.display()))?
            .next()
            .is_none();
        if !empty && !out.join("summary.json").is_file() {
            bail!(
                "--out {} exists and is not an evaluation (no summary.json); it would be \
                 replaced: give a new folder",
                out.display()
            );
        }
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."))
        .to_path_buf();
    Ok((parent, name))
}

fn write_eval(
    mut args: Args,
    cfg: TrainConfig,
    split: Split,
    opts: MetricOptions,
    spec: DeviceSpec,
    out: &std::path::Path,
) -> Result<()> {
    args.out = out.to_path_buf();
    let out = args.out.clone();
    let protocol = args.protocol;
    let precision = args.precision;
    let report = dispatch_in(spec, precision, Eval(args, cfg, split, opts))?;
    let mut csv =
        String::from("id,dice,iou,precision,recall,specificity,hd,hd95,assd,cldice,empty\n");
    let f = |v: Option<f64>| v.map(|v| format!("{v:.6}")).unwrap_or_default();
    for img in &report.images {
        let m = &img.metrics;
        csv.push_str(&format!(
            "{},{:.6},{:.6},{},{},{},{},{},{},{},{}\n",
            img.name,
            m.dice,
            m.iou,
            f(m.precision),
            f(m.recall),
            f(m.specificity),
            f(m.hd),
            f(m.hd95),
            f(m.assd),
            f(m.cldice),
            m.empty
                .map(|e| format!("{e:?}").to_lowercase())
                .unwrap_or_default()
        ));
    }
    salt_core::write_atomic(&out.join("metrics.csv"), csv.as_bytes())?;
    let summary = serde_json::json!({ "protocol": protocol, "report": report.summary, "definition": report.definition });
    salt_core::write_atomic(
        &out.join("summary.json"),
        &serde_json::to_vec_pretty(&summary)?,
    )?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
