//! `salt train`: fine-tune SAM with SALT, LoRA, S-SAM, full fine-tuning or the decoder only.

use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::tensor::backend::AutodiffBackend;

use crate::backend::{dispatch_devices_in, DeviceList, MultiTask};
use crate::train::config::{MethodName, Schedule, TrainConfig};
use crate::train::run::{train, RunOptions, TrainSummary};

/// Arguments of `salt train`. Every field of the config file is also a flag; flags win.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A TOML file with any of the fields below (snake_case keys, e.g. `batch_size = 2`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Continue the run in --out from its last checkpoint (same settings; --epochs may grow).
    #[arg(long, conflicts_with = "overwrite")]
    pub resume: bool,
    /// Replace the run already in --out (its config.toml, metrics.csv, curves.png, last/, best/).
    #[arg(long)]
    pub overwrite: bool,
    /// With --resume: continue even if the base checkpoint differs from the one the run started
    /// with.
    #[arg(long, requires = "resume")]
    pub allow_base_mismatch: bool,
    /// Dataset root (paper layout, DRIVE or ARCADE; see docs/formats.md).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Model preset: salt_paper (default), vit_b, vit_l, vit_h, small, tiny, tiny_salt_paper.
    #[arg(long)]
    pub model: Option<String>,
    /// Base checkpoint (.pth or .safetensors); random weights when absent.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Method.
    #[arg(long, value_enum)]
    pub method: Option<MethodName>,
    /// SALT: top singular values with a trainable scale/shift (r, default 48).
    #[arg(long)]
    pub svd_rank: Option<usize>,
    /// SALT: rank q of X·Y; LoRA: rank (default 256).
    #[arg(long)]
    pub rank: Option<usize>,
    /// SALT initialisation of X, Y: reference or zero.
    #[arg(long)]
    pub salt_init: Option<String>,
    /// LoRA dropout (default 0.1).
    #[arg(long)]
    pub lora_dropout: Option<f64>,
    /// Layer path patterns to adapt (repeatable); default: the method's.
    #[arg(long = "target")]
    pub targets: Vec<String>,
    /// Extra trainable parameter patterns (repeatable); default: the paper's.
    #[arg(long = "trainable")]
    pub trainable: Vec<String>,
    /// Epochs (default 200).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Batch size (default 2).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Learning rate (default 1e-4).
    #[arg(long)]
    pub lr: Option<f64>,
    /// AdamW weight decay (default 0.01).
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Learning-rate schedule.
    #[arg(long, value_enum)]
    pub schedule: Option<Schedule>,
    /// Warm-up epochs of the cosine schedule.
    #[arg(long)]
    pub warmup_epochs: Option<usize>,
    /// Seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Device: cpu, flex, wgpu[:N], cuda[:N]. Several devices of one backend train
    /// data-parallel, one replica each, the batch split across them: `cuda:0,cuda:1`,
    /// `wgpu:0,wgpu:1`, `cuda:all`, `wgpu:all`, `all` (`--devices` is the same flag).
    #[arg(long, visible_alias = "devices")]
    pub device: Option<String>,
    /// Compute precision of matmuls and attention: f32, bf16 or f16 (mixed precision; bf16 and
    /// f16 need a GPU backend or flex).
    #[arg(long, value_parser = crate::backend::parse_precision)]
    pub precision: Option<salt_core::Precision>,
    /// Output directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Training loss: dice+focal (the paper's, used by every Table 1 row), dice, or dice+bce.
    #[arg(long, value_enum)]
    pub loss: Option<crate::train::loss::LossKind>,
    /// Baselines: pre-trained encoder weights (torchvision ResNet-101 for deeplabv3plus, MiT-b3
    /// for segformer).
    #[arg(long)]
    pub encoder_weights: Option<PathBuf>,
    /// Turn off train-time augmentation.
    #[arg(long)]
    pub no_augment: bool,
    /// Stop after this many optimizer steps (smoke runs).
    #[arg(long)]
    pub max_steps: Option<usize>,
}

impl Args {
    /// The configuration: defaults, then the file, then the flags.
    pub fn resolve(&self) -> Result<TrainConfig> {
        let mut c = match &self.config {
            Some(p) => TrainConfig::read(p)?,
            None => TrainConfig::default(),
        };
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = &self.$f { c.$f = v.clone(); } )* };
        }
        set!(
            data,
            model,
            method,
            svd_rank,
            rank,
            lora_dropout,
            epochs,
            batch_size,
            lr,
            weight_decay,
            schedule,
            warmup_epochs,
            seed,
            device,
            precision,
            loss,
            out,
            max_steps
        );
        if let Some(w) = &self.encoder_weights {
            c.encoder_weights = Some(w.clone());
        }
        if let Some(ckpt) = &self.checkpoint {
            c.checkpoint = Some(ckpt.clone());
        }
        if let Some(init) = &self.salt_init {
            c.salt_init = match init.as_str() {
                "reference" => salt_core::SaltInit::Reference,
                "zero" => salt_core::SaltInit::Zero,
                other => anyhow::bail!("--salt-init {other}: expected `reference` or `zero`"),
            };
        }
        if !self.targets.is_empty() {
            c.targets = self.targets.clone();
        }
        if !self.trainable.is_empty() {
            c.trainable = self.trainable.clone();
        }
        if self.no_augment {
            c.augment = false;
        }
        Ok(c)
    }
}

struct TrainTask(TrainConfig, RunOptions);

impl MultiTask for TrainTask {
    type Output = TrainSummary;
    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Result<TrainSummary> {
        train::<B>(&self.0, &self.1, &devices)
    }
}

/// Trains on the chosen device(s) and prints a JSON summary.
pub fn run(args: Args) -> Result<()> {
    let cfg = args.resolve()?;
    cfg.validate()?;
    let devices: DeviceList = cfg.device.parse().map_err(anyhow::Error::msg)?;
    let opts = RunOptions {
        resume: args.resume,
        overwrite: args.overwrite,
        allow_base_mismatch: args.allow_base_mismatch,
        progress: true,
        ..Default::default()
    };
    let precision = cfg.precision;
    let summary =
        dispatch_devices_in(&devices, precision, TrainTask(cfg, opts)).context("training")?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn flags_override_the_file_and_unknown_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("run.toml");
        std::fs::write(&file, "epochs = 7\nlr = 0.001\nmethod = \"lora\"\n").unwrap();
        let cli = Cli::parse_from([
            "x",
            "--config",
            file.to_str().unwrap(),
            "--lr",
            "0.01",
            "--target",
            "attn.qkv",
        ]);
        let c = cli.args.resolve().unwrap();
        assert_eq!((c.epochs, c.lr, c.method), (7, 0.01, MethodName::Lora));
        assert_eq!(c.targets, vec!["attn.qkv".to_string()]);
        std::fs::write(&file, "epochz = 7\n").unwrap();
        let cli = Cli::parse_from(["x", "--config", file.to_str().unwrap()]);
        let err = format!("{:#}", cli.args.resolve().unwrap_err());
        assert!(err.contains("epochz"), "{err}");
        let cli = Cli::parse_from(["x", "--salt-init", "random"]);
        assert!(cli
            .args
            .resolve()
            .unwrap_err()
            .to_string()
            .contains("random"));
        assert!(Cli::try_parse_from(["x", "--method", "dora"]).is_err());
        // S-SAM answers to both names (`svd` is what its adapter tensors are called).
        for name in ["ssam", "svd"] {
            let cli = Cli::parse_from(["x", "--method", name]);
            assert_eq!(cli.args.resolve().unwrap().method, MethodName::Ssam);
        }
        let c: TrainConfig = toml::from_str("method = \"svd\"\n").unwrap();
        assert_eq!(c.method, MethodName::Ssam);
    }
}
