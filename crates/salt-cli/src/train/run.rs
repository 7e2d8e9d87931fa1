//! The training loop: SAM + adapter, batch Dice + focal loss, AdamW, per-epoch validation with
//! salt-metrics, `metrics.csv`, `curves.png`, atomic checkpoints (last and best) and exact resume.
//!
//! Determinism: every epoch draws its shuffle order, augmentation and dropout from seeds derived
//! from `(seed, epoch)` only, and the learning rate is a function of the step, so a run resumed
//! from the checkpoint written after epoch `e` continues exactly as if it had never stopped.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::module::{ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer};
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use salt_core::{
    apply_trainable, inject, load_adapter_tensors, param_key, save_adapter, AdapterManifest,
    AdapterTensors, BaseIdentity, ParamReport, TrainablePolicy,
};
use salt_data::{dataloader, Preprocess, VesselBatcher, VesselDataset};
use salt_metrics::{Accumulator, MetricOptions};
use salt_sam::{Sam, SamConfig};

use super::model::{
    to_original, with_train_model, ModelFamily, Segmenter, TrainModelTask, TrainSegmenter,
};

use super::config::TrainConfig;
use super::loss::LossConfig;
use super::replicas::{check_batch_split, ReplicaFault, Replicas};
use super::rundir::{clear_run, fault_point, holds_run, publish, recover, staging, RunLock};
use super::schedule::learning_rate;

/// Files of a run directory.
pub const CONFIG_FILE: &str = "config.toml";
/// Per-epoch metrics.
pub const METRICS_FILE: &str = "metrics.csv";
/// Training curves.
pub const CURVES_FILE: &str = "curves.png";
/// Adapter + state after the last finished epoch.
pub const LAST_DIR: &str = "last";
/// Adapter with the best validation Dice.
pub const BEST_DIR: &str = "best";
const STATE_FILE: &str = "train_state.json";
const OPTIM_FILE: &str = "optimizer.bin";
/// What makes a directory a run: `salt train` refuses to start a new run over them without
/// `--overwrite` (which removes exactly these) or `--resume`.
pub const RUN_FILES: [&str; 5] = [CONFIG_FILE, METRICS_FILE, CURVES_FILE, LAST_DIR, BEST_DIR];
/// Training stops when a step's loss exceeds this multiple of its early value (the median of the
/// first [`EARLY_STEPS`] losses of the run): Dice + focal loss starts near 1 and falls, so
/// growing a thousandfold means the weights are blowing up (seen: 1e12 with a finite but absurd
/// learning rate), not a hard batch.
pub const DIVERGENCE_FACTOR: f64 = 1e3;
/// Steps whose losses define the early value of [`DIVERGENCE_FACTOR`].
pub const EARLY_STEPS: usize = 5;
/// Settings that may change on `--resume`: the length of the run, where it runs, where the
/// directory now is, and where the base checkpoint now is (the base itself is checked by its
/// sha256 instead, so a moved checkpoint is accepted and a replaced one is not).
const RESUME_MAY_CHANGE: [&str; 6] = [
    "epochs",
    "device",
    "precision",
    "workers",
    "out",
    "checkpoint",
];

/// The model presets the CLI knows: salt-sam's, plus `small` (the demo's: the paper's changes
/// on a 4-block, 32-d ViT at 128 px).
pub fn model_config(name: &str) -> Result<SamConfig> {
    if name == "small" {
        // The paper's model at the tiny encoder's size: 128 px, a 16×16 grid.
        return Ok(SamConfig::tiny().with_paper_changes(128, None, "small"));
    }
    SamConfig::preset(name).map_err(|e| {
        anyhow::anyhow!(
            "{e}; known models: salt_paper, vit_b, vit_l, vit_h, small, tiny, tiny_salt_paper"
        )
    })
}

/// One row of `metrics.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch.
    pub epoch: usize,
    /// Optimizer steps so far.
    pub step: usize,
    /// Learning rate of the epoch's last step.
    pub lr: f64,
    /// Mean training loss.
    pub train_loss: f64,
    /// Mean training Dice loss term.
    pub train_dice_loss: f64,
    /// Mean training focal loss term.
    pub train_focal_loss: f64,
    /// Mean training BCE loss term (`--loss dice+bce`; 0 otherwise).
    #[serde(default)]
    pub train_bce_loss: f64,
    /// Mean validation Dice (original resolution).
    pub val_dice: Option<f64>,
    /// Mean validation HD95 over images where both masks are non-empty.
    pub val_hd95: Option<f64>,
    /// Validation images with an empty prediction or target (left out of HD95).
    pub val_empty: usize,
    /// Seconds the epoch took.
    pub seconds: f64,
}

/// What a finished (or stopped) run reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainSummary {
    /// Output directory.
    pub out: PathBuf,
    /// Epochs finished.
    pub epochs: usize,
    /// Optimizer steps.
    pub steps: usize,
    /// Best validation Dice and its epoch.
    pub best_dice: Option<f64>,
    /// Epoch of the best validation Dice.
    pub best_epoch: Option<usize>,
    /// Parameter counts.
    pub params: ParamReport,
    /// Layers with an adapter.
    pub adapted_layers: usize,
    /// Every epoch.
    pub history: Vec<EpochRecord>,
    /// Mean Dice on the training split after training (with [`RunOptions::eval_train`]).
    pub train_dice: Option<f64>,
}

/// State saved with the `last` checkpoint for `--resume`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainState {
    epoch: usize,
    step: usize,
    best_dice: Option<f64>,
    best_epoch: Option<usize>,
    /// Parameter key → the burn `ParamId` the optimizer state is keyed by.
    param_ids: BTreeMap<String, u64>,
    history: Vec<EpochRecord>,
    /// The first [`EARLY_STEPS`] losses of the run (the divergence check's reference).
    #[serde(default)]
    early_losses: Vec<f64>,
}

/// Options that are not part of the run's configuration.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Continue the run in `out` from its `last` checkpoint.
    pub resume: bool,
    /// Replace the run in `out` (its files listed in [`RUN_FILES`]) by a new one.
    pub overwrite: bool,
    /// Resume even if the base model differs from the one `last/` was trained on.
    pub allow_base_mismatch: bool,
    /// Stop (as if killed) after this epoch's checkpoint is written; for tests.
    pub stop_after_epoch: Option<usize>,
    /// Show progress bars.
    pub progress: bool,
    /// After training, also evaluate the training split (reported as `train_dice`).
    pub eval_train: bool,
    /// Make one data-parallel replica fail at a step; for tests.
    pub replica_fault: Option<ReplicaFault>,
}

impl RunOptions {
    /// A fresh run with progress bars (the commands' default).
    pub fn with_progress() -> Self {
        Self {
            progress: true,
            ..Self::default()
        }
    }
}

pub(crate) fn seed_for(seed: u64, epoch: usize, stream: u64) -> u64 {
    // splitmix64 of (seed, epoch, stream): independent streams per epoch.
    let mut z = seed
        ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct IdCollector {
    path: Vec<String>,
    ids: BTreeMap<String, u64>,
}

impl<B: Backend> ModuleVisitor<B> for IdCollector {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.into());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.ids.insert(param_key(&self.path), param.id.val());
    }
}

struct IdSetter<'a> {
    path: Vec<String>,
    ids: &'a BTreeMap<String, u64>,
}

impl<B: Backend> ModuleMapper<B> for IdSetter<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.into());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        match self.ids.get(&param_key(&self.path)) {
            Some(&id) => {
                let (_, value, _) = param.consume();
                Param::initialized(ParamId::from(id), value)
            }
            None => param,
        }
    }
}

/// Builds the model of `cfg`: preset, base checkpoint, adapter, trainable policy.
///
/// Random base weights (no checkpoint) come from the backend's generator, seeded here from
/// `cfg.seed`, so a resumed run or an evaluation rebuilds the same frozen weights.
pub fn build_model<B: Backend>(
    cfg: &TrainConfig,
    device: &B::Device,
) -> Result<(Sam<B>, TrainablePolicy, usize)> {
    B::seed(device, seed_for(cfg.seed, 0, 0));
    let sam_config = model_config(&cfg.model)?;
    let mut sam = sam_config.init::<B>(device).context("building the model")?;
    if let Some(ckpt) = &cfg.checkpoint {
        let report = salt_sam::load_checkpoint(&mut sam, ckpt)
            .with_context(|| format!("loading base checkpoint {}", ckpt.display()))?;
        salt_core::check_finite::<B, _>(&sam, ckpt).context("checking the base checkpoint")?;
        tracing::info!(
            applied = report.applied,
            skipped = report.skipped_by_design.len(),
            "loaded base checkpoint"
        );
    }
    let adapted = match cfg.adapter() {
        Some(a) => inject(&mut sam, &a).context("attaching the adapter")?.len(),
        None => 0,
    };
    let has_token = sam.prompt_encoder.prompt_token.is_some();
    let has_pos = sam.image_encoder.pos_embed.is_some();
    let policy = cfg.policy(has_token, has_pos);
    let sam = apply_trainable(sam, &policy).context("choosing the trainable parameters")?;
    Ok((sam, policy, adapted))
}

/// The identity of the base model of `cfg`: the checkpoint's sha256, or the preset and seed of
/// random weights.
pub fn base_identity(cfg: &TrainConfig) -> Result<BaseIdentity> {
    match &cfg.checkpoint {
        Some(p) => BaseIdentity::of_file(p)
            .with_context(|| format!("identifying base checkpoint {}", p.display())),
        None => Ok(BaseIdentity::random(&cfg.model, cfg.seed)),
    }
}

/// Rebuilds the model of `cfg` and loads the trained tensors saved in the adapter directory
/// `dir` (e.g. a run's `best/`), after checking that `cfg`'s base is the one the adapter was
/// trained on (`allow_base_mismatch`: warn instead).
pub fn load_trained<B: Backend, M: Segmenter<B>>(
    cfg: &TrainConfig,
    dir: &Path,
    allow_base_mismatch: bool,
    device: &B::Device,
) -> Result<M> {
    let manifest = AdapterManifest::read(dir)?;
    manifest.check_base(dir, &base_identity(cfg)?, allow_base_mismatch)?;
    let (sam, policy, _) = M::build(cfg, device)?;
    let tensors = AdapterTensors::read(dir)?;
    load_adapter_tensors::<B, _>(sam, &policy, &tensors)
        .with_context(|| format!("loading adapter {}", dir.display()))
}

/// Validation: Dice/HD95 at the original resolution through salt-metrics.
pub fn validate<B: Backend, M: Segmenter<B>>(
    model: &M,
    data: &VesselDataset,
    batch_size: usize,
    device: &B::Device,
) -> Result<Accumulator> {
    let pre = Preprocess {
        size: model.input_size(),
        ..Default::default()
    };
    let targets: HashMap<String, salt_metrics::Mask> = data
        .items()
        .iter()
        .map(|it| {
            let m = salt_metrics::Mask::new(
                it.mask.width,
                it.mask.height,
                it.mask.data.iter().map(|&v| v > 0).collect(),
            );
            m.map(|m| (it.id.clone(), m))
        })
        .collect::<std::result::Result<_, _>>()
        .context("validation masks")?;
    let loader = dataloader::<B>(
        data.clone(),
        VesselBatcher::eval(pre),
        batch_size,
        None,
        0,
        device.clone(),
    );
    let mut acc = Accumulator::new();
    for batch in loader.iter() {
        let out = model.logits(batch.images)?; // [n, 1, S, S]
        for (i, id) in batch.ids.iter().enumerate() {
            let [n, m, h, w] = out.dims();
            debug_assert!(i < n && m == 1);
            let one = out.clone().slice([i..i + 1, 0..1, 0..h, 0..w]);
            let (oh, ow) = batch.original_sizes[i];
            let logits = to_original(one, batch.resized_sizes[i], (oh, ow));
            let v: Vec<f32> = logits
                .into_data()
                .convert::<f32>()
                .into_vec()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            // p ≥ 0.5 ⇔ logit ≥ 0.
            let pred = salt_metrics::Mask::new(ow, oh, v.iter().map(|&z| z >= 0.0).collect())?;
            let target = &targets[id];
            acc.push(
                id.clone(),
                salt_metrics::evaluate(&pred, target, &MetricOptions::default())?,
            );
        }
    }
    Ok(acc)
}

fn write_metrics_csv(path: &Path, history: &[EpochRecord]) -> Result<()> {
    let f = |v: Option<f64>| v.map(|v| format!("{v:.6}")).unwrap_or_default();
    let mut s = String::from("epoch,step,lr,train_loss,train_dice_loss,train_focal_loss,train_bce_loss,val_dice,val_hd95,val_empty,seconds\n");
    for r in history {
        s.push_str(&format!(
            "{},{},{:e},{:.6},{:.6},{:.6},{:.6},{},{},{},{:.2}\n",
            r.epoch,
            r.step,
            r.lr,
            r.train_loss,
            r.train_dice_loss,
            r.train_focal_loss,
            r.train_bce_loss,
            f(r.val_dice),
            f(r.val_hd95),
            r.val_empty,
            r.seconds
        ));
    }
    salt_core::write_atomic(path, s.as_bytes())?;
    Ok(())
}

fn write_curves(path: &Path, history: &[EpochRecord]) -> Result<()> {
    use crate::plot::{render, Panel, Series, PALETTE};
    let series = |label: &str, f: &dyn Fn(&EpochRecord) -> Option<f64>, c: usize| Series {
        label: label.into(),
        points: history
            .iter()
            .map(|r| (r.epoch as f64, f(r).unwrap_or(f64::NAN)))
            .collect(),
        color: PALETTE[c],
    };
    let panels = [
        Panel {
            title: "training loss".into(),
            x_label: "epoch".into(),
            series: vec![
                series("total", &|r| Some(r.train_loss), 0),
                series("dice", &|r| Some(r.train_dice_loss), 1),
                series("focal", &|r| Some(r.train_focal_loss), 2),
            ],
        },
        Panel {
            title: "validation Dice".into(),
            x_label: "epoch".into(),
            series: vec![series("dice", &|r| r.val_dice, 3)],
        },
        Panel {
            title: "validation HD95 (px)".into(),
            x_label: "epoch".into(),
            series: vec![series("hd95", &|r| r.val_hd95, 4)],
        },
    ];
    let img = render(&panels, 420, 300);
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )?;
    salt_core::write_atomic(path, &bytes)?;
    Ok(())
}

/// Refuses a `--resume` whose configuration differs from the run's in anything but
/// [`RESUME_MAY_CHANGE`], naming every differing key with both values.
fn check_resume_config(saved: &TrainConfig, now: &TrainConfig, file: &Path) -> Result<()> {
    let table = |c: &TrainConfig| -> Result<toml::Table> {
        toml::Table::try_from(c).context("serialising the config")
    };
    let (a, b) = (table(saved)?, table(now)?);
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let show = |v: Option<&toml::Value>| v.map_or("(unset)".to_string(), |v| v.to_string());
    let diffs: Vec<String> = keys
        .into_iter()
        .filter(|k| !RESUME_MAY_CHANGE.contains(&k.as_str()))
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            format!(
                "{k} = {} in the run, {} now",
                show(a.get(k)),
                show(b.get(k))
            )
        })
        .collect();
    if !diffs.is_empty() {
        bail!(
            "--resume: the configuration differs from the run's {}: {}; resume with the run's \
             settings (only {} may change)",
            file.display(),
            diffs.join("; "),
            RESUME_MAY_CHANGE.join(", ")
        );
    }
    Ok(())
}

/// What the run directory `out` offers after a failure: its last finished checkpoint, if any.
fn last_good(out: &Path) -> String {
    let state = out.join(LAST_DIR).join(STATE_FILE);
    let epoch = std::fs::read(&state)
        .ok()
        .and_then(|b| serde_json::from_slice::<TrainState>(&b).ok())
        .map(|s| s.epoch);
    match epoch {
        Some(e) => format!(
            "the last good checkpoint is {} (epoch {e}, complete); resuming it would repeat the \
             same steps, so lower --lr and start a new run (another --out, or --overwrite)",
            out.join(LAST_DIR).display()
        ),
        None => "no checkpoint was written yet; lower --lr and start again with --overwrite".into(),
    }
}

/// Stops the run on a loss that is not finite, or that exceeds [`DIVERGENCE_FACTOR`] times the
/// median of the run's first [`EARLY_STEPS`] losses (collected in `early`).
fn check_loss(
    loss: f64,
    early: &mut Vec<f64>,
    step: usize,
    epoch: usize,
    out: &Path,
) -> Result<()> {
    if !loss.is_finite() {
        bail!(
            "the loss became {loss} at step {step} (epoch {epoch}); {}",
            last_good(out)
        );
    }
    if !early.is_empty() {
        let mut sorted = early.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        if median > 0.0 && loss > DIVERGENCE_FACTOR * median {
            bail!(
                "the loss became {loss:e} at step {step} (epoch {epoch}), more than \
                 {DIVERGENCE_FACTOR:e} times its early value {median:.4} (median of the first {} \
                 steps): training diverged; {}",
                sorted.len(),
                last_good(out)
            );
        }
    }
    if early.len() < EARLY_STEPS {
        early.push(loss);
    }
    Ok(())
}

/// Steps whose losses are read back from the device together: one host sync per window (and
/// one at the end of the epoch) instead of three per step. Non-finite or diverging losses are
/// still found at the step they happened, at most this many steps later; nothing is written
/// before the epoch's window is checked.
pub const LOSS_WINDOW: usize = 8;

/// Trains `cfg` on backend `B`: on `devices[0]`, or data-parallel with one replica per device
/// when there are several (train/replicas.rs; `cfg.batch_size` is the global batch).
pub fn train<B: AutodiffBackend>(
    cfg: &TrainConfig,
    opts: &RunOptions,
    devices: &[B::Device],
) -> Result<TrainSummary> {
    struct Train<'a, B: AutodiffBackend>(&'a TrainConfig, &'a RunOptions, &'a [B::Device]);
    impl<B: AutodiffBackend> TrainModelTask<B> for Train<'_, B> {
        type Output = TrainSummary;
        fn run<M: TrainSegmenter<B>>(self) -> Result<TrainSummary> {
            train_model::<B, M>(self.0, self.1, self.2)
        }
    }
    if devices.is_empty() {
        bail!("no device to train on");
    }
    with_train_model(&cfg.model, Train::<B>(cfg, opts, devices))
}

/// The names of `devices` for messages: `cfg.device`'s list when it names them one by one.
fn device_names(cfg: &TrainConfig, n: usize) -> Vec<String> {
    match cfg.device.parse::<crate::backend::DeviceList>() {
        Ok(crate::backend::DeviceList::Listed(v)) if v.len() == n => {
            v.iter().map(ToString::to_string).collect()
        }
        _ => (0..n).map(|k| format!("{} #{k}", cfg.device)).collect(),
    }
}

/// [`train`] of the model type `M`.
fn train_model<B: AutodiffBackend, M: TrainSegmenter<B>>(
    cfg: &TrainConfig,
    opts: &RunOptions,
    devices: &[B::Device],
) -> Result<TrainSummary> {
    let out = cfg.out.clone();
    let device = &devices[0];
    let replicas = devices.len();
    check_batch_split("batch_size", cfg.batch_size, replicas, &cfg.device)?;
    // Held until this function returns: one training per directory.
    let _lock = open_run_dir(cfg, opts)?;
    let (train_set, val_set) = open_data(cfg)?;
    if ModelFamily::of(&cfg.model)? == ModelFamily::Sam {
        // CPU replicas share the machine's memory; GPU replicas each hold their part.
        let cpu = cfg
            .device
            .parse::<crate::backend::DeviceList>()
            .is_ok_and(|l| l.is_cpu());
        let per_device = if cpu {
            cfg.batch_size
        } else {
            cfg.batch_size.div_ceil(replicas)
        };
        // check_batch reads the memory of the CPU devices only.
        let kind = if cpu { "cpu" } else { cfg.device.as_str() };
        super::memory::check_batch(&model_config(&cfg.model)?, per_device, kind)?;
    }
    let base = base_identity(cfg)?;
    let mut run = Run::<B, M>::build(cfg, device)?;
    if opts.resume {
        run.resume(cfg, &base, opts.allow_base_mismatch, device)?;
    }
    if replicas > 1 {
        run.replicas = Some(Replicas::start(
            &run.model,
            &run.optim,
            devices,
            &device_names(cfg, replicas),
            cfg.loss.into(),
            opts.replica_fault,
        )?);
    }
    // Everything is loaded and checked: only now does the directory change.
    if opts.overwrite && holds_run(&out, &RUN_FILES).is_some() {
        tracing::warn!(out = %out.display(), "--overwrite: removing the previous run");
        clear_run(&out, &RUN_FILES)?;
    }
    let cfg_text = toml::to_string_pretty(cfg).context("serialising the config")?;
    salt_core::write_atomic(&out.join(CONFIG_FILE), cfg_text.as_bytes())?;

    for epoch in run.state.epoch + 1..=cfg.epochs {
        let t0 = Instant::now();
        let losses = run.train_epoch(cfg, opts, &train_set, epoch, device)?;
        let acc = validate(&run.model.valid(), &val_set, cfg.batch_size, device)?;
        let record = losses.record(epoch, run.state.step, &acc, t0.elapsed().as_secs_f64());
        tracing::info!(
            epoch,
            loss = format!("{:.4}", record.train_loss),
            val_dice = record.val_dice.map(|v| format!("{v:.4}")),
            val_hd95 = record.val_hd95.map(|v| format!("{v:.2}")),
            "epoch done"
        );
        run.state.history.push(record.clone());
        run.state.epoch = epoch;
        run.checkpoint(cfg, &base, &record)?;
        if opts.stop_after_epoch == Some(epoch)
            || (cfg.max_steps > 0 && run.state.step >= cfg.max_steps)
        {
            break;
        }
    }
    let train_dice = if opts.eval_train {
        validate(&run.model.valid(), &train_set, cfg.batch_size, device)?
            .summary()
            .dice
            .mean
    } else {
        None
    };
    Ok(TrainSummary {
        train_dice,
        out,
        epochs: run.state.epoch,
        steps: run.state.step,
        best_dice: run.state.best_dice,
        best_epoch: run.state.best_epoch,
        params: run.params,
        adapted_layers: run.adapted,
        history: run.state.history,
    })
}

/// Checks the flags against the run directory (`--resume` needs a finished checkpoint, a new
/// run refuses to replace one without `--overwrite`), takes its lock and repairs what a kill
/// left behind. Nothing is removed yet.
fn open_run_dir(cfg: &TrainConfig, opts: &RunOptions) -> Result<RunLock> {
    cfg.validate()?;
    if opts.resume && opts.overwrite {
        bail!("--resume and --overwrite exclude each other: continue the run, or replace it");
    }
    let out = &cfg.out;
    let lock = RunLock::acquire(out)?;
    recover(out, LAST_DIR)?;
    recover(out, BEST_DIR)?;
    super::rundir::remove_stale_file_temporaries(out, &[CONFIG_FILE, METRICS_FILE, CURVES_FILE])?;
    if opts.resume {
        let saved = TrainConfig::read(&out.join(CONFIG_FILE))
            .context("--resume needs the run's config.toml")?;
        check_resume_config(&saved, cfg, &out.join(CONFIG_FILE))?;
        if !out.join(LAST_DIR).join(STATE_FILE).is_file() {
            bail!(
                "--resume: {} holds no finished checkpoint (no {}), so there is nothing to resume; \
                 start the run again with --overwrite",
                out.display(),
                Path::new(LAST_DIR).join(STATE_FILE).display()
            );
        }
    } else if let Some(found) = holds_run(out, &RUN_FILES) {
        if !opts.overwrite {
            bail!(
                "{} already holds a training run ({} exists): give --resume to continue it, \
                 --overwrite to replace it, or another --out",
                out.display(),
                found.display()
            );
        }
    }
    Ok(lock)
}

/// The training and validation splits, refused (empty, smaller than a batch) before any model
/// is built.
fn open_data(cfg: &TrainConfig) -> Result<(VesselDataset, VesselDataset)> {
    let train_set = VesselDataset::open(&cfg.data, salt_data::Split::Train)
        .with_context(|| format!("opening the training split of {}", cfg.data.display()))?;
    let val_set = VesselDataset::open(&cfg.data, salt_data::Split::Val)
        .with_context(|| format!("opening the validation split of {}", cfg.data.display()))?;
    let n = train_set.items().len();
    if n == 0 {
        bail!("the training split of {} is empty", cfg.data.display());
    }
    if cfg.batch_size > n {
        bail!(
            "batch_size = {}: larger than the training split of {} ({n} images); expected 1 to {n}",
            cfg.batch_size,
            cfg.data.display(),
        );
    }
    Ok((train_set, val_set))
}

/// A training run in memory: the model, its optimizer and the state saved with `last/`.
struct Run<B: AutodiffBackend, M: TrainSegmenter<B>> {
    model: M,
    optim: OptimizerAdaptor<AdamW, M, B>,
    policy: TrainablePolicy,
    params: ParamReport,
    adapted: usize,
    state: TrainState,
    /// The other replicas of a data-parallel run.
    replicas: Option<Replicas<B, M>>,
}

impl<B: AutodiffBackend, M: TrainSegmenter<B>> Run<B, M> {
    /// The model of `cfg` (see [`build_model`]) with a fresh AdamW and an empty history.
    fn build(cfg: &TrainConfig, device: &B::Device) -> Result<Self> {
        let (model, policy, adapted) = M::build(cfg, device)?;
        let params = model.param_report(&policy);
        tracing::info!(
            trainable = params.trainable,
            total = params.total,
            percent = format!("{:.3}", params.trainable_percent),
            adapted_layers = adapted,
            "model ready"
        );
        let optim = AdamWConfig::new()
            .with_weight_decay(cfg.weight_decay as f32)
            .init::<B, M>();
        let state = TrainState {
            epoch: 0,
            step: 0,
            best_dice: None,
            best_epoch: None,
            param_ids: BTreeMap::new(),
            history: Vec::new(),
            early_losses: Vec::new(),
        };
        Ok(Self {
            model,
            optim,
            policy,
            params,
            adapted,
            state,
            replicas: None,
        })
    }

    /// Loads `last/` of the run: trained tensors, optimizer state (keyed by the saved
    /// `ParamId`s), history; after checking it was trained on `base`.
    fn resume(
        &mut self,
        cfg: &TrainConfig,
        base: &BaseIdentity,
        allow_base_mismatch: bool,
        device: &B::Device,
    ) -> Result<()> {
        let last = cfg.out.join(LAST_DIR);
        AdapterManifest::read(&last)?.check_base(&last, base, allow_base_mismatch)?;
        let text = std::fs::read_to_string(last.join(STATE_FILE))
            .with_context(|| format!("reading {}", last.join(STATE_FILE).display()))?;
        self.state = serde_json::from_str(&text)
            .with_context(|| format!("parsing {}", last.join(STATE_FILE).display()))?;
        let tensors = AdapterTensors::read(&last)?;
        let model = load_adapter_tensors::<B, _>(self.model.clone(), &self.policy, &tensors)?;
        self.model = model.map(&mut IdSetter {
            path: Vec::new(),
            ids: &self.state.param_ids,
        });
        let bytes = std::fs::read(last.join(OPTIM_FILE))
            .with_context(|| format!("reading {}", last.join(OPTIM_FILE).display()))?;
        let record = BinBytesRecorder::<FullPrecisionSettings>::default()
            .load(bytes, device)
            .with_context(|| format!("decoding {}", last.join(OPTIM_FILE).display()))?;
        self.optim = self.optim.clone().load_record(record);
        tracing::info!(epoch = self.state.epoch, step = self.state.step, "resumed");
        // A crash after publishing `last/` may have left metrics.csv one epoch behind.
        write_metrics_csv(&cfg.out.join(METRICS_FILE), &self.state.history)
    }

    /// One pass over the training split: batches prepared ahead on a background thread
    /// (`cfg.workers` of them), one optimizer step each, losses read back per [`LOSS_WINDOW`].
    fn train_epoch(
        &mut self,
        cfg: &TrainConfig,
        opts: &RunOptions,
        train_set: &VesselDataset,
        epoch: usize,
        device: &B::Device,
    ) -> Result<EpochLosses> {
        B::seed(device, seed_for(cfg.seed, epoch, 1));
        let pre = Preprocess {
            size: self.model.input_size(),
            ..Default::default()
        };
        let batcher = if cfg.augment {
            VesselBatcher::train(pre, seed_for(cfg.seed, epoch, 2))
        } else {
            VesselBatcher::eval(pre)
        };
        let order = salt_data::epoch_batches(
            train_set.items().len(),
            cfg.batch_size,
            Some(seed_for(cfg.seed, epoch, 3)),
        );
        let steps_per_epoch = order.len();
        let total_steps = steps_per_epoch * cfg.epochs;
        let bar = epoch_bar(opts.progress, steps_per_epoch, epoch, cfg.epochs);
        let t0 = Instant::now();
        let mut losses = EpochLosses::default();
        let mut window = Vec::with_capacity(LOSS_WINDOW);
        let loss_cfg = LossConfig::from(cfg.loss);
        salt_data::with_prefetch(train_set, &batcher, &order, cfg.workers, |batches| {
            for host in batches {
                losses.lr = learning_rate(
                    cfg.schedule,
                    cfg.lr,
                    self.state.step,
                    total_steps,
                    cfg.warmup_epochs * steps_per_epoch,
                );
                losses.images += host.len();
                match &mut self.replicas {
                    Some(replicas) => {
                        let step = self.state.step + 1;
                        let row = replicas.step(
                            &mut self.model,
                            &mut self.optim,
                            host,
                            losses.lr,
                            step,
                            device,
                        )?;
                        self.state.step = step;
                        window.push((step, row));
                    }
                    None => {
                        let batch = host.to_device::<B>(device);
                        window.push(self.step(&loss_cfg, batch, losses.lr)?);
                    }
                }
                if window.len() == LOSS_WINDOW {
                    losses.check_window(&mut window, &mut self.state, epoch, &cfg.out)?;
                }
                let rate = losses.images as f64 / t0.elapsed().as_secs_f64().max(1e-9);
                bar.set_message(format!("loss {:.4} {rate:.1} img/s", losses.mean_total()));
                bar.inc(1);
                if cfg.max_steps > 0 && self.state.step >= cfg.max_steps {
                    break;
                }
            }
            losses.check_window(&mut window, &mut self.state, epoch, &cfg.out)
        })??;
        bar.finish_and_clear();
        Ok(losses)
    }

    /// Forward, loss, backward and AdamW on one batch. Returns the step number and the detached
    /// `[total, dice, focal, bce]` loss terms, still on the device.
    fn step(
        &mut self,
        loss_cfg: &LossConfig,
        batch: salt_data::VesselBatch<B>,
        lr: f64,
    ) -> Result<(usize, Tensor<B, 1>)> {
        let logits = self.model.logits(batch.images)?;
        let terms = loss_cfg.forward(logits, batch.masks);
        let row = Tensor::cat(
            vec![
                terms.total.clone().detach().reshape([1]),
                terms.dice.detach().reshape([1]),
                terms.focal.detach().reshape([1]),
                terms.bce.detach().reshape([1]),
            ],
            0,
        );
        let grads = GradientsParams::from_grads(terms.total.backward(), &self.model);
        self.model = self.optim.step(lr, self.model.clone(), grads);
        self.state.step += 1;
        Ok((self.state.step, row))
    }

    /// Writes the checkpoint of the epoch just recorded: adapter + optimizer + state into a
    /// fresh `last/`, the adapter into `best/` when validation Dice improved, each staged in a
    /// temporary directory and published by renames (rundir.rs); then metrics.csv and
    /// curves.png.
    fn checkpoint(
        &mut self,
        cfg: &TrainConfig,
        base: &BaseIdentity,
        record: &EpochRecord,
    ) -> Result<()> {
        let (out, epoch) = (&cfg.out, record.epoch);
        let mut manifest = AdapterManifest::new(
            cfg.adapter(),
            self.policy.clone(),
            &cfg.model,
            Some(base.clone()),
        );
        manifest.metadata.insert("epoch".into(), epoch.to_string());
        if let Some(d) = record.val_dice {
            manifest
                .metadata
                .insert("val_dice".into(), format!("{d:.6}"));
        }
        let not_finite = || {
            format!(
                "saving the checkpoint of epoch {epoch}: the trained weights are not finite; {}",
                last_good(out)
            )
        };
        let last = staging(out, LAST_DIR)?;
        save_adapter::<B, _>(&self.model, &manifest, &last).with_context(not_finite)?;
        fault_point();
        let mut ids = IdCollector {
            path: Vec::new(),
            ids: BTreeMap::new(),
        };
        self.model.visit(&mut ids);
        self.state.param_ids = ids.ids;
        let optim_bytes = BinBytesRecorder::<FullPrecisionSettings>::default()
            .record(self.optim.to_record(), ())
            .context("serialising the optimizer state")?;
        salt_core::write_atomic(&last.join(OPTIM_FILE), &optim_bytes)?;
        fault_point();
        let better = match (record.val_dice, self.state.best_dice) {
            (Some(d), Some(b)) => d > b,
            (Some(_), None) => true,
            _ => false,
        };
        if better {
            self.state.best_dice = record.val_dice;
            self.state.best_epoch = Some(epoch);
        }
        // The state file is written last: a `last/` without it is never taken for a checkpoint.
        salt_core::write_atomic(
            &last.join(STATE_FILE),
            &serde_json::to_vec_pretty(&self.state)?,
        )?;
        fault_point();
        if better {
            let best = staging(out, BEST_DIR)?;
            save_adapter::<B, _>(&self.model, &manifest, &best)?;
            fault_point();
            publish(&best, out, BEST_DIR)?;
        }
        publish(&last, out, LAST_DIR)?;
        write_metrics_csv(&out.join(METRICS_FILE), &self.state.history)?;
        fault_point();
        write_curves(&out.join(CURVES_FILE), &self.state.history)?;
        fault_point();
        Ok(())
    }
}

/// The progress bar of one epoch (hidden without `progress`).
fn epoch_bar(progress: bool, steps: usize, epoch: usize, epochs: usize) -> indicatif::ProgressBar {
    if !progress {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(steps as u64);
    b.set_style(
        indicatif::ProgressStyle::with_template(
            "epoch {prefix} [{bar:30}] {pos}/{len} {msg} eta {eta}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    b.set_prefix(format!("{epoch}/{epochs}"));
    b
}

/// The loss sums of an epoch, from the windows read back so far.
#[derive(Debug, Default)]
struct EpochLosses {
    total: f64,
    dice: f64,
    focal: f64,
    bce: f64,
    steps: usize,
    images: usize,
    /// Learning rate of the latest step.
    lr: f64,
}

impl EpochLosses {
    /// Reads the window's loss terms back in one transfer, checks each step's loss in order
    /// ([`check_loss`], naming its step), adds them up and empties the window.
    fn check_window<B: Backend>(
        &mut self,
        window: &mut Vec<(usize, Tensor<B, 1>)>,
        state: &mut TrainState,
        epoch: usize,
        out: &Path,
    ) -> Result<()> {
        if window.is_empty() {
            return Ok(());
        }
        let (steps, rows): (Vec<usize>, Vec<Tensor<B, 1>>) = window.drain(..).unzip();
        let values: Vec<f64> = Tensor::cat(rows, 0)
            .into_data()
            .convert::<f64>()
            .into_vec()
            .map_err(|e| anyhow::anyhow!("reading the losses back: {e:?}"))?;
        for (step, terms) in steps.into_iter().zip(values.chunks_exact(4)) {
            check_loss(terms[0], &mut state.early_losses, step, epoch, out)?;
            self.total += terms[0];
            self.dice += terms[1];
            self.focal += terms[2];
            self.bce += terms[3];
            self.steps += 1;
        }
        Ok(())
    }

    fn mean_total(&self) -> f64 {
        self.total / self.steps.max(1) as f64
    }

    /// The epoch's row of `metrics.csv`.
    fn record(&self, epoch: usize, step: usize, acc: &Accumulator, seconds: f64) -> EpochRecord {
        let summary = acc.summary();
        let n = self.steps.max(1) as f64;
        EpochRecord {
            epoch,
            step,
            lr: self.lr,
            train_loss: self.total / n,
            train_dice_loss: self.dice / n,
            train_focal_loss: self.focal / n,
            train_bce_loss: self.bce / n,
            val_dice: summary.dice.mean,
            val_hd95: summary.hd95.mean,
            val_empty: summary.empty.pred + summary.empty.target + summary.empty.both,
            seconds,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use salt_data::synth::{write_dataset_sized, SynthLayout};
    use salt_data::Style;

    type TestAutodiffBackend = Autodiff<NdArray<f32>>;

    /// burn's ndarray generator is process-wide: runs that must be reproducible, and every
    /// test that seeds it (another crate-module's too), take turns.
    pub(crate) static BACKEND_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn dataset(dir: &Path, n: usize) -> PathBuf {
        let root = dir.join("data");
        write_dataset_sized(&root, Style::XrayAngio, n, 3, SynthLayout::Paper, 64).unwrap();
        root
    }

    fn config(data: &Path, out: &Path) -> TrainConfig {
        TrainConfig {
            data: data.to_path_buf(),
            model: "tiny_salt_paper".into(),
            method: super::super::config::MethodName::Salt,
            svd_rank: 4,
            rank: 4,
            epochs: 3,
            batch_size: 2,
            lr: 3e-3,
            out: out.to_path_buf(),
            workers: 0,
            augment: false,
            ..Default::default()
        }
    }

    #[test]
    fn tiny_run_learns_and_writes_its_outputs() {
        let _rng = BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner());
        /// Full fine-tuning of the random tiny model on 6 synthetic angiograms for 25 epochs
        /// must bring the training-set Dice above this (it starts near 0.1, the vessel share).
        const MIN_TRAIN_DICE: f64 = 0.5;
        let dir = tempfile::tempdir().unwrap();
        let data = dataset(dir.path(), 8);
        let mut cfg = config(&data, &dir.path().join("run"));
        cfg.method = super::super::config::MethodName::Full;
        cfg.epochs = 25;
        let opts = RunOptions {
            eval_train: true,
            ..Default::default()
        };
        let s = train::<TestAutodiffBackend>(&cfg, &opts, &[Default::default()]).unwrap();
        let first = s.history.first().unwrap().train_loss;
        let last = s.history.last().unwrap().train_loss;
        assert!(last < 0.7 * first, "loss did not fall: {first} -> {last}");
        let dice = s.train_dice.unwrap();
        assert!(
            dice > MIN_TRAIN_DICE,
            "training Dice {dice} <= {MIN_TRAIN_DICE}"
        );
        for f in [CONFIG_FILE, METRICS_FILE, CURVES_FILE] {
            assert!(s.out.join(f).is_file(), "{f} missing");
        }
        assert!(s
            .out
            .join(LAST_DIR)
            .join(salt_core::ADAPTER_WEIGHTS)
            .is_file());
        assert!(s
            .out
            .join(BEST_DIR)
            .join(salt_core::ADAPTER_CONFIG)
            .is_file());
        let csv = std::fs::read_to_string(s.out.join(METRICS_FILE)).unwrap();
        assert_eq!(csv.lines().count(), 26);
    }

    #[test]
    fn resumed_run_equals_uninterrupted_run() {
        let _rng = BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let data = dataset(dir.path(), 6);
        let device = Default::default();
        let mut cfg_a = config(&data, &dir.path().join("a"));
        cfg_a.augment = true;
        cfg_a.method = super::super::config::MethodName::Lora;
        cfg_a.lora_dropout = 0.1;
        // burn-ndarray sums in parallel with rayon, whose work splitting (and so float rounding)
        // varies from run to run: one thread makes the comparison bitwise.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let run = |cfg: &TrainConfig, opts: &RunOptions| {
            pool.install(|| train::<TestAutodiffBackend>(cfg, opts, std::slice::from_ref(&device)))
                .unwrap()
        };
        let a = run(&cfg_a, &RunOptions::default());

        let cfg_b = TrainConfig {
            out: dir.path().join("b"),
            ..cfg_a.clone()
        };
        let stop = RunOptions {
            stop_after_epoch: Some(1),
            ..Default::default()
        };
        let b1 = run(&cfg_b, &stop);
        assert_eq!(b1.epochs, 1);
        let resume = RunOptions {
            resume: true,
            ..Default::default()
        };
        let b = run(&cfg_b, &resume);
        assert_eq!(b.epochs, 3);
        assert_eq!(a.history.len(), b.history.len());
        for (x, y) in a.history.iter().zip(&b.history) {
            assert_eq!(x.train_loss, y.train_loss, "epoch {}", x.epoch);
            assert_eq!(x.val_dice, y.val_dice, "epoch {}", x.epoch);
        }
        let ta = AdapterTensors::read(&a.out.join(LAST_DIR)).unwrap();
        let tb = AdapterTensors::read(&b.out.join(LAST_DIR)).unwrap();
        let keys: Vec<&str> = ta.keys().collect();
        assert_eq!(keys, tb.keys().collect::<Vec<_>>());
        assert!(!keys.is_empty());
        /// Reloaded tensors are fresh contiguous buffers; burn-ndarray's SIMD kernels may then
        /// round the next update differently in the last bit (seen: ≤ 1.2e-7 on values ≤ 1).
        const RESUME_TOL: f32 = 1e-6;
        let mut bad = Vec::new();
        for k in keys {
            let (a, b) = (ta.get(k).unwrap().1, tb.get(k).unwrap().1);
            let d = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max);
            if d > RESUME_TOL {
                bad.push(format!("{k}: {d:e}"));
            }
        }
        assert!(bad.is_empty(), "final tensors differ after resume: {bad:?}");
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let _rng = BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(&dir.path().join("missing"), &dir.path().join("run"));
        let err = train::<TestAutodiffBackend>(&cfg, &RunOptions::default(), &[Default::default()])
            .unwrap_err();
        assert!(format!("{err:#}").contains("does not exist"), "{err:#}");
        let data = dataset(dir.path(), 4);
        cfg.data = data;
        cfg.svd_rank = 1000;
        let err = train::<TestAutodiffBackend>(&cfg, &RunOptions::default(), &[Default::default()])
            .unwrap_err();
        assert!(format!("{err:#}").contains("svd_rank = 1000"), "{err:#}");
        cfg.svd_rank = 4;
        cfg.model = "vit_z".into();
        let err = train::<TestAutodiffBackend>(&cfg, &RunOptions::default(), &[Default::default()])
            .unwrap_err();
        assert!(format!("{err:#}").contains("vit_z"), "{err:#}");
    }

    #[test]
    fn a_diverging_loss_stops_the_run_naming_the_step_and_writes_no_checkpoint() {
        let _rng = BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let data = dataset(dir.path(), 6);
        let mut cfg = config(&data, &dir.path().join("diverge"));
        // An absurd learning rate blows the weights up after the first step: the next loss is
        // not finite, within the first epoch.
        cfg.lr = 1e30;
        cfg.method = super::super::config::MethodName::Full;
        let device = Default::default();
        let err = format!(
            "{:#}",
            train::<TestAutodiffBackend>(
                &cfg,
                &RunOptions::default(),
                std::slice::from_ref(&device)
            )
            .unwrap_err()
        );
        assert!(
            err.contains("at step 2 (epoch 1)") && err.contains("no checkpoint was written yet"),
            "{err}"
        );
        // The failed epoch wrote nothing: no checkpoint state, no metrics row.
        assert!(!cfg.out.join(LAST_DIR).join(STATE_FILE).exists());
        assert!(!cfg.out.join(METRICS_FILE).exists());
    }

    #[test]
    fn a_loss_far_above_its_early_value_stops_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let mut early = Vec::new();
        for (i, l) in [1.0, 0.9, 1.1, 0.8, 1.0, 0.7].iter().enumerate() {
            check_loss(*l, &mut early, i + 1, 1, dir.path()).unwrap();
        }
        assert_eq!(early.len(), EARLY_STEPS);
        // Median of the first five: 1.0; just under the factor passes, above it stops.
        check_loss(0.99 * DIVERGENCE_FACTOR, &mut early, 7, 2, dir.path()).unwrap();
        let err = format!(
            "{:#}",
            check_loss(1e12, &mut early, 8, 2, dir.path()).unwrap_err()
        );
        assert!(
            err.contains("at step 8 (epoch 2)") && err.contains("no checkpoint was written yet"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            check_loss(f64::NAN, &mut early, 9, 2, dir.path()).unwrap_err()
        );
        assert!(err.contains("NaN at step 9"), "{err}");
        // With a finished checkpoint, the message names it and its epoch.
        let state = TrainState {
            epoch: 3,
            step: 30,
            best_dice: None,
            best_epoch: None,
            param_ids: BTreeMap::new(),
            history: Vec::new(),
            early_losses: early.clone(),
        };
        let last = dir.path().join(LAST_DIR);
        std::fs::create_dir_all(&last).unwrap();
        std::fs::write(last.join(STATE_FILE), serde_json::to_vec(&state).unwrap()).unwrap();
        let err = format!(
            "{:#}",
            check_loss(1e12, &mut early, 31, 4, dir.path()).unwrap_err()
        );
        assert!(
            err.contains(&format!("{} (epoch 3, complete)", last.display()))
                && err.contains("lower --lr and start a new run"),
            "{err}"
        );
    }

    #[test]
    fn eval_numbers_equal_salt_metrics_on_the_written_masks() {
        let _rng = BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let data = dataset(dir.path(), 6);
        let mut cfg = config(&data, &dir.path().join("run"));
        cfg.epochs = 2;
        train::<TestAutodiffBackend>(&cfg, &RunOptions::default(), &[Default::default()]).unwrap();
        let out = dir.path().join("eval");
        crate::cmd::eval::run(crate::cmd::eval::Args {
            trained: crate::cmd::eval::AdapterArgs {
                adapter: cfg.out.join(BEST_DIR),
                checkpoint: None,
                allow_base_mismatch: false,
            },
            data: data.clone(),
            split: "val".into(),
            protocol: crate::cmd::eval::Protocol::Original,
            hd95: "monai".into(),
            out: out.clone(),
            device: "cpu".into(),
            figure_rows: 2,
            precision: salt_core::Precision::F32,
        })
        .unwrap();
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
        let val = VesselDataset::open(&data, salt_data::Split::Val).unwrap();
        let mut acc = Accumulator::new();
        for item in val.items() {
            let pred = salt_metrics::read_mask(
                out.join("masks").join(format!("{}_mask.png", item.id)),
                0.0,
            )
            .unwrap();
            let (h, w) = item.original_size;
            let t = salt_metrics::Mask::new(w, h, item.mask.data.iter().map(|&v| v > 0).collect())
                .unwrap();
            acc.push(
                item.id.clone(),
                salt_metrics::evaluate(&pred, &t, &MetricOptions::default()).unwrap(),
            );
        }
        let s = acc.summary();
        assert_eq!(summary["report"]["dice"]["mean"].as_f64(), s.dice.mean);
        assert_eq!(summary["report"]["hd95"]["mean"].as_f64(), s.hd95.mean);
        assert!(out.join("qualitative.png").is_file());
    }

    /// The largest absolute difference between the trained tensors of two adapter directories,
    /// and its key.
    fn max_tensor_diff(a: &Path, b: &Path) -> (f32, String) {
        let (ta, tb) = (
            AdapterTensors::read(a).unwrap(),
            AdapterTensors::read(b).unwrap(),
        );
        let keys: Vec<&str> = ta.keys().collect();
        assert_eq!(keys, tb.keys().collect::<Vec<_>>());
        assert!(!keys.is_empty());
        let mut worst = (0.0f32, String::new());
        for k in keys {
            let (x, y) = (ta.get(k).unwrap().1, tb.get(k).unwrap().1);
            let d = x
                .iter()
                .zip(y)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0f32, f32::max);
            if d > worst.0 {
                worst = (d, k.to_string());
            }
        }
        worst
    }

    /// Data-parallel replicas sum their gradients in another order than one device's batch
    /// (and burn-ndarray's own sums vary with rayon's splitting): after 6 AdamW steps at lr 3e-3
    /// on weights of order 1, the replicas' tensors stay this close to one device's (measured:
    /// at most 4.8e-7 for SALT and LoRA, 2 and 3 replicas; docs/benchmarks.md).
    const DATA_PARALLEL_TOL: f32 = 1e-5;

    #[test]
    fn data_parallel_replicas_train_like_one_device_with_the_same_global_batch() {
        let _rng = BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        // 5 training images, batch 4: a full batch and a batch of 1 per epoch; with 3 replicas
        // the full batch splits 2 + 1 + 1 and the short one leaves two replicas a stand-in.
        let data = dataset(dir.path(), 8);
        let device = Default::default();
        for (method, name) in [
            (super::super::config::MethodName::Salt, "salt"),
            (super::super::config::MethodName::Lora, "lora"),
        ] {
            let mut cfg = config(&data, &dir.path().join(format!("{name}-1")));
            cfg.method = method;
            cfg.lora_dropout = 0.0;
            cfg.batch_size = 4;
            cfg.augment = true;
            let one =
                train::<TestAutodiffBackend>(&cfg, &RunOptions::default(), &[device]).unwrap();
            for n in [2, 3] {
                let cfg_n = TrainConfig {
                    out: dir.path().join(format!("{name}-{n}")),
                    device: vec!["cpu"; n].join(","),
                    ..cfg.clone()
                };
                let many =
                    train::<TestAutodiffBackend>(&cfg_n, &RunOptions::default(), &vec![device; n])
                        .unwrap();
                assert_eq!((many.epochs, many.steps), (one.epochs, one.steps));
                for (x, y) in one.history.iter().zip(&many.history) {
                    let d = (x.train_loss - y.train_loss).abs();
                    assert!(
                        d < 1e-5,
                        "{name}, {n} replicas, epoch {}: loss differs by {d}",
                        x.epoch
                    );
                }
                let (d, key) = max_tensor_diff(&one.out.join(LAST_DIR), &many.out.join(LAST_DIR));
                eprintln!("{name}: {n} replicas vs one device: max |Δ| {d:e} ({key})");
                assert!(
                    d < DATA_PARALLEL_TOL,
                    "{name}, {n} replicas: {key} differs by {d:e} from one device"
                );
            }
            if method == super::super::config::MethodName::Salt {
                // The comparison can fail: two replicas with another global batch (2) are far
                // outside the tolerance.
                let cfg_b2 = TrainConfig {
                    out: dir.path().join("salt-batch2"),
                    device: "cpu,cpu".into(),
                    batch_size: 2,
                    ..cfg.clone()
                };
                let b2 =
                    train::<TestAutodiffBackend>(&cfg_b2, &RunOptions::default(), &[device; 2])
                        .unwrap();
                let (d, _) = max_tensor_diff(&one.out.join(LAST_DIR), &b2.out.join(LAST_DIR));
                assert!(
                    d > 100.0 * DATA_PARALLEL_TOL,
                    "batch 2 vs batch 4: only {d:e}"
                );
                // Stopped after epoch 1 and resumed, on 2 replicas: as the uninterrupted run.
                let cfg_r = TrainConfig {
                    out: dir.path().join("salt-resumed"),
                    device: "cpu,cpu".into(),
                    ..cfg.clone()
                };
                let stop = RunOptions {
                    stop_after_epoch: Some(1),
                    ..Default::default()
                };
                train::<TestAutodiffBackend>(&cfg_r, &stop, &[device; 2]).unwrap();
                let resume = RunOptions {
                    resume: true,
                    ..Default::default()
                };
                let r = train::<TestAutodiffBackend>(&cfg_r, &resume, &[device; 2]).unwrap();
                assert_eq!(r.epochs, 3);
                let (d, key) = max_tensor_diff(&one.out.join(LAST_DIR), &r.out.join(LAST_DIR));
                eprintln!(
                    "salt: 2 replicas stopped and resumed vs one device: max |Δ| {d:e} ({key})"
                );
                assert!(
                    d < DATA_PARALLEL_TOL,
                    "resumed replicas: {key} differs by {d:e}"
                );
            }
        }
    }

    /// Runs `f` on a thread and fails if it does not finish within `secs` (a hang).
    fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(std::time::Duration::from_secs(secs))
            .expect("the run hung (or panicked) instead of returning")
    }

    #[test]
    fn a_failing_replica_stops_the_run_with_its_error() {
        let _rng = BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let data = dataset(dir.path(), 8);
        for (k, (replica, step, panic, expected)) in [
            (1, 2, false, "replica 1: injected failure at step 2"),
            (0, 3, false, "replica 0: injected failure at step 3"),
            (2, 1, true, "injected panic of replica 2 at step 1"),
        ]
        .into_iter()
        .enumerate()
        {
            let mut cfg = config(&data, &dir.path().join(format!("fail-{k}")));
            cfg.batch_size = 4;
            cfg.device = "cpu,cpu,cpu".into();
            let opts = RunOptions {
                replica_fault: Some(ReplicaFault {
                    replica,
                    step,
                    panic,
                }),
                ..Default::default()
            };
            let err = within(120, move || {
                train::<TestAutodiffBackend>(&cfg, &opts, &[Default::default(); 3])
                    .map_err(|e| format!("{e:#}"))
            })
            .unwrap_err();
            assert!(err.contains(expected), "{err}");
        }
        // A batch smaller than the device count is refused before anything runs.
        let mut cfg = config(&data, &dir.path().join("small-batch"));
        cfg.batch_size = 2;
        cfg.device = "cpu,cpu,cpu".into();
        let err =
            train::<TestAutodiffBackend>(&cfg, &RunOptions::default(), &[Default::default(); 3])
                .unwrap_err();
        assert!(
            format!("{err}").contains("smaller than the 3 devices"),
            "{err}"
        );
    }
}
