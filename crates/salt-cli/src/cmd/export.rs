//! `salt export-merged`: fold a trained adapter into its base weights and write a plain SAM
//! checkpoint (no adapter code or cost at inference).
//!
//! The file is safetensors with SAM's own key names and PyTorch layouts (salt-sam's
//! `save_checkpoint`): `salt predict --checkpoint` runs it, and for the stock presets
//! (`vit_b`, `vit_l`, `vit_h`, `tiny`) `segment_anything`'s `Sam.load_state_dict` takes it as
//! it is. Models of the paper (`salt_paper`, `small`) keep their extra parameters (the learned
//! prompt token, the pooled `pos_embed`) and load back into the same preset.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use crate::cmd::eval::{run_config, AdapterArgs};
use crate::train::config::TrainConfig;
use crate::train::model::{with_model, ExportReport, ModelTask, Segmenter};
use crate::train::run::load_trained;

/// The checkpoint-header key naming the model preset; `salt predict` reads it.
pub const MODEL_KEY: &str = "salt.model";
/// The checkpoint-header key naming the pre-processing the model was trained with (`paper`:
/// per-image min–max first); `salt predict` reads it.
pub const PREPROCESS_KEY: &str = "salt.preprocess";

/// Arguments of `salt export-merged`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The trained model.
    #[command(flatten)]
    pub trained: AdapterArgs,
    /// Output checkpoint (`.safetensors`).
    #[arg(long)]
    pub out: PathBuf,
}

/// What `salt export-merged` wrote (printed as JSON).
#[derive(Debug, Clone, Serialize)]
pub struct ExportSummary {
    /// The written checkpoint.
    pub out: PathBuf,
    /// Model preset (also in the file's header under `salt.model`).
    pub model: String,
    /// Fine-tuning method of the adapter.
    pub method: String,
    /// The adapter directory.
    pub adapter: PathBuf,
    /// The base checkpoint, `null` for a random base rebuilt from the run's seed.
    pub base_checkpoint: Option<PathBuf>,
    /// Layers whose adapter was folded into the weight.
    pub merged_layers: usize,
    /// Tensors written.
    pub tensors: usize,
    /// Parameters written.
    pub parameters: usize,
    /// File size in bytes.
    pub bytes: usize,
}

/// Runs `salt export-merged`.
pub fn run(args: Args) -> Result<()> {
    let summary = export_merged(
        &args.trained.adapter,
        args.trained.checkpoint,
        args.trained.allow_base_mismatch,
        &args.out,
    )?;
    eprintln!(
        "merged {} layer(s) into {} ({} tensors); run it with `salt predict --checkpoint {}`",
        summary.merged_layers,
        summary.out.display(),
        summary.tensors,
        summary.out.display()
    );
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

/// Loads the base model with the adapter of `adapter`, merges it, and writes `out`.
///
/// Runs on the CPU (ndarray): merging costs one small matrix product per adapted layer.
pub fn export_merged(
    adapter: &Path,
    checkpoint: Option<PathBuf>,
    allow_base_mismatch: bool,
    out: &Path,
) -> Result<ExportSummary> {
    // Refuse a bad output path before loading the model and computing SVDs.
    salt_sam::check_save_path(out)?;
    let cfg = run_config(adapter, checkpoint)?;
    type B = burn::backend::NdArray<f32>;
    let method = clap::ValueEnum::to_possible_value(&cfg.method)
        .map(|v| v.get_name().to_string())
        .unwrap_or_default();
    let mut metadata = BTreeMap::from([
        ("format".to_string(), "pt".to_string()),
        (MODEL_KEY.to_string(), cfg.model.clone()),
        ("salt.method".to_string(), method.clone()),
        ("salt.adapter".to_string(), adapter.display().to_string()),
        // Trained on min–max scaled images: `salt predict` does the same for this file.
        (PREPROCESS_KEY.to_string(), "paper".to_string()),
        (
            "salt.version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
    ]);
    if let Some(base) = &cfg.checkpoint {
        metadata.insert("salt.base_checkpoint".into(), base.display().to_string());
    }
    // The identity the adapter was checked against (sha256, or random preset and seed).
    metadata.insert(
        "salt.base".into(),
        crate::train::run::base_identity(&cfg)?.id,
    );
    struct Export<'a> {
        cfg: &'a TrainConfig,
        adapter: &'a Path,
        allow_base_mismatch: bool,
        out: &'a Path,
        metadata: BTreeMap<String, String>,
    }
    impl ModelTask<B> for Export<'_> {
        type Output = ExportReport;
        fn run<M: Segmenter<B>>(self) -> Result<ExportReport> {
            let model = load_trained::<B, M>(
                self.cfg,
                self.adapter,
                self.allow_base_mismatch,
                &Default::default(),
            )?;
            model.export(self.out, self.adapter, self.metadata)
        }
    }
    let export = Export {
        cfg: &cfg,
        adapter,
        allow_base_mismatch,
        out,
        metadata,
    };
    let report = with_model(&cfg.model, export)?;
    Ok(ExportSummary {
        out: out.to_path_buf(),
        model: cfg.model,
        method,
        adapter: adapter.to_path_buf(),
        base_checkpoint: cfg.checkpoint,
        merged_layers: report.merged_layers,
        tensors: report.tensors,
        parameters: report.parameters,
        bytes: report.bytes,
    })
}
