//! The Table-1 baselines of salt-baselines as [`Segmenter`]s: presets, base weights, export.
//!
//! Every baseline has two presets: `<name>` (the paper's row, 512 px input) and
//! `<name>_smoke` (reduced widths, 64 px: the smoke table and tests). They train with
//! `--method full` from random weights, or from a reference state_dict (`--checkpoint`: MONAI's
//! or smp's keys, `.pth` or `.safetensors`), or with a pre-trained encoder
//! (`--encoder-weights`: a torchvision ResNet-101 for DeepLabV3+, a MiT-b3 for Segformer).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use salt_core::{apply_trainable, ParamReport, TrainablePolicy};

use super::config::{MethodName, TrainConfig};
use super::model::{ExportReport, Segmenter};

/// Input side of the paper presets.
pub const PAPER_SIZE: usize = 512;
/// Input side of the `_smoke` presets.
pub const SMOKE_SIZE: usize = 64;

/// The baselines, in Table 1's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaselineKind {
    /// MONAI `UNet`.
    UNet,
    /// MONAI `UNETR`.
    Unetr,
    /// MONAI `RegUNet`.
    RegUNet,
    /// SegNet (VGG16-BN, max-unpooling).
    SegNet,
    /// smp `DeepLabV3Plus` (ResNet-101).
    DeepLabV3Plus,
    /// smp `Segformer` (MiT-b3).
    Segformer,
}

impl BaselineKind {
    /// Every baseline.
    pub const ALL: [BaselineKind; 6] = [
        BaselineKind::UNet,
        BaselineKind::Unetr,
        BaselineKind::RegUNet,
        BaselineKind::SegNet,
        BaselineKind::DeepLabV3Plus,
        BaselineKind::Segformer,
    ];

    /// The preset name (`--model`, `--methods` of reproduce-table1).
    pub fn name(self) -> &'static str {
        match self {
            BaselineKind::UNet => "unet",
            BaselineKind::Unetr => "unetr",
            BaselineKind::RegUNet => "regunet",
            BaselineKind::SegNet => "segnet",
            BaselineKind::DeepLabV3Plus => "deeplabv3plus",
            BaselineKind::Segformer => "segformer",
        }
    }

    /// `(kind, smoke)` of a preset name, `None` for a name that is not a baseline.
    pub fn parse(name: &str) -> Option<(Self, bool)> {
        let (base, smoke) = match name.strip_suffix("_smoke") {
            Some(b) => (b, true),
            None => (name, false),
        };
        Self::ALL
            .into_iter()
            .find(|k| k.name() == base)
            .map(|k| (k, smoke))
    }
}

/// The checks and steps every baseline's [`Segmenter::build`] shares: the method must be
/// `full`; `init` builds the network from the seed; `--checkpoint` and `--encoder-weights`
/// load into it; the weights must be finite.
fn build_net<B: Backend, N: Module<B> + burn_store::ModuleSnapshot<B>>(
    cfg: &TrainConfig,
    device: &B::Device,
    init: impl FnOnce(bool) -> salt_baselines::Result<N>,
    key_map: &salt_baselines::KeyMap,
    encoder: Option<fn(&mut N, &Path) -> salt_baselines::Result<salt_baselines::LoadReport>>,
) -> Result<(N, usize)> {
    let (kind, smoke) = BaselineKind::parse(&cfg.model)
        .with_context(|| format!("`{}` is not a baseline preset", cfg.model))?;
    if cfg.method != MethodName::Full {
        bail!(
            "--method {}: the baseline `{}` trains with --method full (Table 1's traditional \
             rows train every parameter; adapters are for SAM)",
            clap::ValueEnum::to_possible_value(&cfg.method)
                .map(|v| v.get_name().to_string())
                .unwrap_or_default(),
            cfg.model
        );
    }
    B::seed(device, super::run::seed_for(cfg.seed, 0, 0));
    let mut net = init(smoke).with_context(|| format!("building `{}`", cfg.model))?;
    if let Some(ckpt) = &cfg.checkpoint {
        let report =
            salt_baselines::load_state_dict(&mut net, ckpt, key_map).with_context(|| {
                format!("loading the {} checkpoint {}", kind.name(), ckpt.display())
            })?;
        tracing::info!(applied = report.applied, "loaded baseline checkpoint");
        salt_core::check_finite::<B, _>(&net, ckpt).context("checking the checkpoint")?;
    }
    if let Some(weights) = &cfg.encoder_weights {
        let Some(load) = encoder else {
            bail!(
                "--encoder-weights {}: `{}` has no pre-trained encoder to load (only \
                 deeplabv3plus, a torchvision ResNet-101, and segformer, a MiT-b3)",
                weights.display(),
                cfg.model
            );
        };
        load(&mut net, weights)
            .with_context(|| format!("loading the encoder weights {}", weights.display()))?;
        salt_core::check_finite::<B, _>(&net, weights).context("checking the encoder weights")?;
    }
    Ok((net, if smoke { SMOKE_SIZE } else { PAPER_SIZE }))
}

/// [`ParamReport`] of a baseline as PyTorch counts it: BatchNorm's running statistics are
/// buffers there, but burn visits them like parameters
/// ([`salt_baselines::params::running_stat_count`]).
fn report_without_buffers<B: Backend, M: Module<B> + burn_store::ModuleSnapshot<B>>(
    model: &M,
    policy: &TrainablePolicy,
) -> ParamReport {
    let mut r = ParamReport::new::<B, _>(model, policy, 0);
    let buffers = salt_baselines::params::running_stat_count(model);
    r.total -= buffers;
    if r.trainable >= buffers && policy.full {
        r.trainable -= buffers;
    }
    r.trainable_percent = 100.0 * r.trainable as f64 / r.total.max(1) as f64;
    r
}

/// One baseline network and the side of its square input.
macro_rules! baseline {
    ($wrapper:ident, $net:ident, $module:ident, $doc:literal, $init:expr, $encoder:expr) => {
        #[doc = $doc]
        #[derive(Module, Debug)]
        pub struct $wrapper<B: Backend> {
            /// The network (its parameter paths are the reference's under `net.`).
            pub net: salt_baselines::$net<B>,
            /// Side of the square input.
            pub size: usize,
        }

        impl<B: Backend> Segmenter<B> for $wrapper<B> {
            fn build(
                cfg: &TrainConfig,
                device: &B::Device,
            ) -> Result<(Self, TrainablePolicy, usize)> {
                let init: fn(bool, &B::Device) -> salt_baselines::Result<salt_baselines::$net<B>> =
                    $init;
                let (net, size) = build_net::<B, _>(
                    cfg,
                    device,
                    |smoke| init(smoke, device),
                    &salt_baselines::$module::KEY_MAP,
                    $encoder,
                )?;
                let policy = TrainablePolicy::full();
                let model = apply_trainable(Self { net, size }, &policy)?;
                Ok((model, policy, 0))
            }

            fn input_size(&self) -> usize {
                self.size
            }

            fn logits(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
                Ok(self.net.forward(images))
            }

            fn param_report(&self, policy: &TrainablePolicy) -> ParamReport {
                report_without_buffers::<B, _>(&self.net, policy)
            }

            fn export(
                self,
                path: &Path,
                source: &Path,
                metadata: BTreeMap<String, String>,
            ) -> Result<ExportReport> {
                salt_core::check_finite::<B, _>(&self.net, source)
                    .context("the trained weights are not finite; nothing was written")?;
                export_net(
                    &self.net,
                    path,
                    &salt_baselines::$module::KEY_MAP,
                    &metadata,
                )
            }
        }
    };
}

/// Writes a baseline network under its reference's keys.
fn export_net<B: Backend, N: burn_store::ModuleSnapshot<B>>(
    net: &N,
    path: &Path,
    key_map: &salt_baselines::KeyMap,
    metadata: &BTreeMap<String, String>,
) -> Result<ExportReport> {
    let parameters = salt_baselines::save_state_dict(net, path, key_map, metadata)
        .with_context(|| format!("writing {}", path.display()))?;
    let tensors = net
        .collect(None, None, false)
        .iter()
        .filter(|s| !key_map.ignored.iter().any(|p| s.full_path().ends_with(p)))
        .count();
    let bytes = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len() as usize;
    Ok(ExportReport {
        merged_layers: 0,
        tensors,
        parameters,
        bytes,
    })
}

baseline!(
    UNetModel,
    UNet,
    unet,
    "MONAI's residual UNet as a training model.",
    |smoke, device| {
        let c = if smoke {
            salt_baselines::UNetConfig::smoke()
        } else {
            salt_baselines::UNetConfig::paper()
        };
        c.init(device)
    },
    None
);

baseline!(
    UnetrModel,
    UNETR,
    unetr,
    "MONAI's UNETR (ViT-B encoder, 16×16 patches) as a training model.",
    |smoke, device| {
        let c = if smoke {
            salt_baselines::UNETRConfig::smoke().with_img_size([SMOKE_SIZE, SMOKE_SIZE])
        } else {
            salt_baselines::UNETRConfig::paper()
        };
        c.init(device)
    },
    None
);

baseline!(
    RegUNetModel,
    RegUNet,
    regunet,
    "MONAI's RegUNet as a training model.",
    |smoke, device| {
        let c = if smoke {
            salt_baselines::RegUNetConfig::smoke()
        } else {
            salt_baselines::RegUNetConfig::paper()
        };
        c.init(device)
    },
    None
);

baseline!(
    SegNetModel,
    SegNet,
    segnet,
    "SegNet (VGG16-BN encoder, max-unpooling decoder) as a training model.",
    |smoke, device| {
        let c = if smoke {
            salt_baselines::SegNetConfig::smoke()
        } else {
            salt_baselines::SegNetConfig::paper()
        };
        c.init(device)
    },
    None
);

baseline!(
    DeepLabV3PlusModel,
    DeepLabV3Plus,
    deeplabv3plus,
    "smp's DeepLabV3+ (ResNet-101) as a training model.",
    |smoke, device| {
        let c = if smoke {
            salt_baselines::DeepLabV3PlusConfig::smoke()
        } else {
            salt_baselines::DeepLabV3PlusConfig::paper()
        };
        c.init(device)
    },
    Some(|net, path| salt_baselines::deeplabv3plus::load_encoder_weights(net, path))
);

baseline!(
    SegformerModel,
    Segformer,
    segformer,
    "smp's Segformer (MiT-b3) as a training model.",
    |smoke, device| {
        let c = if smoke {
            salt_baselines::SegformerConfig::smoke()
        } else {
            salt_baselines::SegformerConfig::paper()
        };
        c.init(device)
    },
    Some(|net, path| salt_baselines::segformer::load_encoder_weights(net, path))
);
