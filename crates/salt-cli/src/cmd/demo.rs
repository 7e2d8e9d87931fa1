//! `salt demo`: the main job on an embedded default. Generates a synthetic X-ray angiography
//! dataset, fine-tunes a small SAM with SALT on the CPU, evaluates it, and writes a report
//! (table, curves, qualitative figure) in a few minutes.
//!
//! No pretrained SAM can be shipped or downloaded here, so the demo's base model is a random
//! small SAM (the `small` preset: the paper's 512-variant changes on a 4-block, 32-d ViT at
//! 128 px); its mask decoder therefore trains too, besides SALT and the paper's norms,
//! `pos_embed` and prompt token. With a real checkpoint, `salt train` follows the paper's recipe.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use salt_data::synth::{write_dataset_sized, SynthLayout};
use salt_data::{Split, Style, VesselDataset};
use salt_metrics::MetricOptions;

use crate::backend::{dispatch, DeviceSpec, Task};
use crate::cmd::eval::{evaluate, Protocol};
use crate::train::config::{paper_trainable, MethodName, TrainConfig};
use crate::train::qualitative::{figure, png_bytes};
use crate::train::run::{
    load_trained, train, RunOptions, TrainSummary, BEST_DIR, CURVES_FILE, METRICS_FILE,
};

/// Arguments of `salt demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output directory (dataset, run, report).
    #[arg(long, default_value = "salt-demo")]
    pub out: PathBuf,
    /// Device: cpu, flex, wgpu[:N], cuda[:N].
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Synthetic images (70 % train, 30 % validation).
    #[arg(long, default_value_t = 40)]
    pub images: usize,
    /// Epochs.
    #[arg(long, default_value_t = 12)]
    pub epochs: usize,
    /// Seed of the data and the run.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// The demo's training configuration.
pub fn demo_config(args: &Args) -> TrainConfig {
    let mut trainable = paper_trainable(true, true);
    trainable.push("mask_decoder.**".into());
    TrainConfig {
        data: args.out.join("data"),
        model: "small".into(),
        method: MethodName::Salt,
        svd_rank: 8,
        rank: 8,
        trainable,
        epochs: args.epochs,
        // 4, or the whole training split when it is smaller.
        batch_size: salt_data::synth::train_count(args.images).clamp(1, 4),
        lr: 3e-3,
        seed: args.seed,
        device: args.device.clone(),
        out: args.out.join("run"),
        workers: 0,
        ..Default::default()
    }
}

struct Demo(TrainConfig);

/// What the demo measured.
#[derive(Debug, serde::Serialize)]
pub struct DemoReport {
    /// The training run.
    pub train: TrainSummary,
    /// Validation metrics of the best adapter at the original resolution.
    pub validation: salt_metrics::Summary,
}

impl Task for Demo {
    type Output = DemoReport;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<DemoReport> {
        let cfg = self.0;
        // The demo's run is the demo's own: a rerun replaces it.
        let opts = RunOptions {
            overwrite: true,
            ..RunOptions::with_progress()
        };
        let summary = train::<B>(&cfg, &opts, std::slice::from_ref(&device))?;
        // Evaluate the best adapter on the validation split, at the original resolution.
        let sam =
            load_trained::<B, salt_sam::Sam<B>>(&cfg, &cfg.out.join(BEST_DIR), false, &device)?
                .valid();
        let val = VesselDataset::open(&cfg.data, Split::Val)?;
        let (acc, rows) = evaluate(
            &sam,
            val.items(),
            Protocol::Original,
            &MetricOptions::default(),
            None,
            4,
            &device,
        )?;
        let fig = figure(&rows);
        salt_core::write_atomic(&cfg.out.join("qualitative.png"), &png_bytes(&fig)?)?;
        Ok(DemoReport {
            train: summary,
            validation: acc.summary(),
        })
    }
}

/// What the demo's dataset was made from, stored beside it (`data/salt-demo.json`): a rerun
/// reuses the folder only when this matches what it would generate.
const DATA_STAMP: &str = "salt-demo.json";
const DATA_SIZE: usize = 128;

/// Writes (or reuses) the demo's synthetic dataset `<out>/data`. It is generated into a
/// temporary folder and renamed at the end; a folder made for other settings, or not by the
/// demo, is an error rather than silently trained on.
fn demo_dataset(args: &Args) -> Result<()> {
    let data = args.out.join("data");
    let stamp = serde_json::json!({
        "style": Style::XrayAngio.name(),
        "images": args.images,
        "seed": args.seed,
        "size": DATA_SIZE,
    });
    if data.exists() {
        let found: Option<serde_json::Value> = std::fs::read(data.join(DATA_STAMP))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        match found {
            Some(f) if f == stamp => return Ok(()),
            Some(f) => bail!(
                "{} holds the demo dataset of other settings ({f}, this run needs {stamp}); \
                 give another --out or delete that folder",
                data.display()
            ),
            None => bail!(
                "{} exists but was not written by `salt demo` (no {DATA_STAMP}); give another \
                 --out or delete that folder",
                data.display()
            ),
        }
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let tmp = args.out.join(format!("data.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    tracing::info!(dir = %data.display(), images = args.images, "writing a synthetic X-ray angiography dataset");
    let written = write_dataset_sized(
        &tmp,
        Style::XrayAngio,
        args.images,
        args.seed,
        SynthLayout::Paper,
        DATA_SIZE,
    )
    .context("writing the synthetic dataset")
    .and_then(|_| {
        salt_core::write_atomic(&tmp.join(DATA_STAMP), &serde_json::to_vec_pretty(&stamp)?)?;
        std::fs::rename(&tmp, &data).with_context(|| format!("renaming to {}", data.display()))
    });
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    written
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map(|v| format!("{v:.digits$}"))
        .unwrap_or_else(|| "–".into())
}

/// Runs the demo and prints where everything is.
pub fn run(args: Args) -> Result<()> {
    let spec: DeviceSpec = args.device.parse().map_err(anyhow::Error::msg)?;
    // Checked before anything is written.
    if args.images < 2 {
        bail!(
            "--images {}: the demo needs at least 2 (one to train on, one to validate)",
            args.images
        );
    }
    if args.epochs == 0 {
        bail!("--epochs 0: expected at least 1");
    }
    demo_dataset(&args)?;
    let cfg = demo_config(&args);
    let report = dispatch(spec, Demo(cfg.clone()))?;
    let t = &report.train;
    let v = &report.validation;
    let md = format!(
        "# salt demo\n\nSALT (r = {r}, q = {q}) on a random `small` SAM, {n} synthetic X-ray angiograms \
         (128 px), {e} epochs on `{d}`.\n\n\
         | trainable | total | % | adapted layers | best epoch | val Dice | val HD95 (px) | val clDice |\n\
         |---|---|---|---|---|---|---|---|\n\
         | {tr} | {to} | {pct:.2} | {al} | {be} | {dice} | {hd} | {cl} |\n\n\
         Validation images: {vi} ({emp} with an empty mask, left out of HD95).\n\n\
         - curves: `{curves}`\n- metrics per epoch: `{csv}`\n- qualitative (image | truth | prediction, \
         misses red, false alarms yellow): `{qual}`\n- adapter: `{best}`\n",
        r = cfg.svd_rank,
        q = cfg.rank,
        n = args.images,
        e = t.epochs,
        d = cfg.device,
        tr = t.params.trainable,
        to = t.params.total,
        pct = t.params.trainable_percent,
        al = t.adapted_layers,
        be = t.best_epoch.map(|e| e.to_string()).unwrap_or_else(|| "–".into()),
        dice = fmt(v.dice.mean, 3),
        hd = fmt(v.hd95.mean, 2),
        cl = fmt(v.cldice.mean, 3),
        vi = v.images,
        emp = v.empty.pred + v.empty.target + v.empty.both,
        curves = cfg.out.join(CURVES_FILE).display(),
        csv = cfg.out.join(METRICS_FILE).display(),
        qual = cfg.out.join("qualitative.png").display(),
        best = cfg.out.join(BEST_DIR).display(),
    );
    let report_md = args.out.join("report.md");
    salt_core::write_atomic(&report_md, md.as_bytes())?;
    salt_core::write_atomic(
        &args.out.join("report.json"),
        &serde_json::to_vec_pretty(&report)?,
    )?;
    println!("{md}");
    println!("report: {}", report_md.display());
    Ok(())
}
