//! `salt train` configuration: a TOML file (`--config run.toml`), every field also a flag; the
//! resolved configuration is saved as `config.toml` in the output directory.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use salt_core::{AdapterConfig, Method, SaltInit, TrainablePolicy};

/// What trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum MethodName {
    /// SALT on the targets (default `attn.qkv`, `attn.proj`), plus the paper's norms/pos_embed/token.
    Salt,
    /// LoRA on the targets (default qkv, proj, lin1, lin2).
    Lora,
    /// S-SAM: scale/shift of all singular values (default qkv, proj, lin1, lin2). `svd` (the
    /// name of its tensors in adapter files) is accepted too.
    #[serde(alias = "svd")]
    #[value(alias = "svd")]
    Ssam,
    /// Full fine-tuning: every parameter.
    Full,
    /// Only the mask decoder (and the learned prompt token) train.
    DecoderOnly,
}

/// Learning-rate schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// The paper: constant.
    #[default]
    Constant,
    /// Linear warm-up then cosine decay to 0.
    Cosine,
}

/// Every setting of a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Dataset root.
    pub data: PathBuf,
    /// Model preset: `salt_paper`, `vit_b`, `vit_l`, `vit_h`, `small`, `tiny`, `tiny_salt_paper`.
    pub model: String,
    /// Base checkpoint (`.pth` or `.safetensors`); random weights when absent. For a baseline:
    /// its reference's state_dict (MONAI / smp keys).
    pub checkpoint: Option<PathBuf>,
    /// Baselines: pre-trained encoder weights (a torchvision ResNet-101 for deeplabv3plus, a
    /// MiT-b3 for segformer), checked key by key and shape by shape.
    pub encoder_weights: Option<PathBuf>,
    /// Method.
    pub method: MethodName,
    /// SALT: number of top singular values with a trainable scale/shift (r).
    pub svd_rank: usize,
    /// SALT: rank q of X·Y; LoRA: rank r.
    pub rank: usize,
    /// SALT init of X, Y.
    pub salt_init: SaltInit,
    /// LoRA dropout.
    pub lora_dropout: f64,
    /// Layer path patterns; empty = the method's default.
    pub targets: Vec<String>,
    /// Extra trainable parameter patterns; empty = the paper's (norms, pos_embed, prompt token).
    pub trainable: Vec<String>,
    /// Epochs.
    pub epochs: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Schedule.
    pub schedule: Schedule,
    /// Warm-up epochs (cosine schedule).
    pub warmup_epochs: usize,
    /// Seed of everything random (adapter init, shuffling, augmentation, dropout).
    pub seed: u64,
    /// Device: `cpu`, `flex`, `wgpu[:N]`, `cuda[:N]`; or several of one backend for
    /// data-parallel training (`cuda:0,cuda:1`, `cuda:all`, `wgpu:all`, `all`), `batch_size`
    /// being the global batch split across them.
    pub device: String,
    /// Compute precision of matmuls and attention: `f32`, `bf16` or `f16` (mixed precision:
    /// f32 weights, optimizer state, norms, softmax and loss).
    pub precision: salt_core::Precision,
    /// Output directory.
    pub out: PathBuf,
    /// Training batches prepared ahead (augmented, pre-processed) on a background thread while
    /// the device trains; 0 = prepared in the training thread. The batches do not depend on it.
    pub workers: usize,
    /// Training loss: `dice+focal` (the paper's), `dice` or `dice+bce`.
    pub loss: super::loss::LossKind,
    /// Train-time augmentation (the paper's flip / rotation / brightness).
    pub augment: bool,
    /// Stop after this many optimizer steps in total (0 = no limit); for smoke runs.
    pub max_steps: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            data: PathBuf::new(),
            model: "salt_paper".into(),
            checkpoint: None,
            encoder_weights: None,
            method: MethodName::Salt,
            svd_rank: 48,
            rank: 256,
            salt_init: SaltInit::Reference,
            lora_dropout: 0.1,
            targets: Vec::new(),
            trainable: Vec::new(),
            epochs: 200,
            batch_size: 2,
            lr: 1e-4,
            weight_decay: 1e-2,
            schedule: Schedule::Constant,
            warmup_epochs: 0,
            seed: 42,
            device: "cpu".into(),
            precision: salt_core::Precision::F32,
            out: PathBuf::from("runs/salt"),
            workers: 2,
            loss: super::loss::LossKind::DiceFocal,
            augment: true,
            max_steps: 0,
        }
    }
}

impl TrainConfig {
    /// Reads a TOML file; unknown keys are errors naming them.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))
    }

    /// Checks values that need no model.
    pub fn validate(&self) -> Result<()> {
        if self.data.as_os_str().is_empty() {
            bail!("no dataset: give --data DIR (or `data = \"DIR\"` in the config)");
        }
        if !self.data.is_dir() {
            bail!("dataset directory {} does not exist", self.data.display());
        }
        if self.epochs == 0 {
            bail!("epochs = 0: expected at least 1");
        }
        if self.batch_size == 0 {
            bail!("batch_size = 0: expected at least 1");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("lr = {}: expected a positive number", self.lr);
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            bail!(
                "weight_decay = {}: expected a number >= 0",
                self.weight_decay
            );
        }
        if matches!(self.method, MethodName::Salt | MethodName::Lora) && self.rank == 0 {
            bail!("rank = 0: {:?} needs a rank >= 1", self.method);
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            bail!(
                "lora_dropout = {}: expected a probability in [0, 1)",
                self.lora_dropout
            );
        }
        self.device
            .parse::<crate::backend::DeviceList>()
            .map_err(anyhow::Error::msg)?;
        Ok(())
    }

    /// The adapter of the method, or `None` for `full` and `decoder-only`.
    pub fn adapter(&self) -> Option<AdapterConfig> {
        let mut a = match self.method {
            MethodName::Salt => AdapterConfig::salt(self.svd_rank, self.rank),
            MethodName::Lora => AdapterConfig::lora(self.rank),
            MethodName::Ssam => AdapterConfig::ssam(),
            MethodName::Full | MethodName::DecoderOnly => return None,
        };
        if let Method::Salt { init, .. } = &mut a.method {
            *init = self.salt_init;
        }
        if let Method::Lora { dropout, .. } = &mut a.method {
            *dropout = self.lora_dropout;
        }
        if !self.targets.is_empty() {
            a.targets = self.targets.clone();
        }
        a.seed = self.seed;
        Some(a)
    }

    /// Which non-adapter parameters train. `has_prompt_token`, `has_pos_embed`: whether the
    /// model has them (stock SAM has no learned prompt token).
    pub fn policy(&self, has_prompt_token: bool, has_pos_embed: bool) -> TrainablePolicy {
        match self.method {
            MethodName::Full => TrainablePolicy::full(),
            MethodName::DecoderOnly => {
                let mut p = vec!["mask_decoder.**".to_string()];
                if has_prompt_token {
                    p.push("prompt_encoder.prompt_token".into());
                }
                TrainablePolicy::with_patterns(p)
            }
            _ if !self.trainable.is_empty() => {
                TrainablePolicy::with_patterns(self.trainable.clone())
            }
            _ => TrainablePolicy::with_patterns(paper_trainable(has_prompt_token, has_pos_embed)),
        }
    }
}

/// The paper's extra trainable parameters: every LayerNorm of the encoder blocks and of the
/// decoder's two-way transformer, `pos_embed`, and the learned prompt token.
pub fn paper_trainable(has_prompt_token: bool, has_pos_embed: bool) -> Vec<String> {
    let mut p = vec![
        "image_encoder.blocks.*.norm*.*".to_string(),
        "mask_decoder.transformer.norm*.*".to_string(),
        "mask_decoder.transformer.layers.*.norm*.*".to_string(),
    ];
    if has_pos_embed {
        p.push("image_encoder.pos_embed".into());
    }
    if has_prompt_token {
        p.push("prompt_encoder.prompt_token".into());
    }
    p
}
