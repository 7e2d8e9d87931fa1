//! The models the commands train, evaluate, predict with and export: SAM (with its learned
//! prompt token, no prompts) and the Table-1 baselines of salt-baselines, behind one trait.
//!
//! The training loop, validation and evaluation are generic over [`Segmenter`]; the commands
//! pick the type from the preset name with [`with_model`] / [`with_train_model`].

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::Tensor;

use salt_core::{ParamReport, TrainablePolicy};
use salt_sam::{Prompts, Sam};

use super::baseline::{
    BaselineKind, DeepLabV3PlusModel, RegUNetModel, SegNetModel, SegformerModel, UNetModel,
    UnetrModel,
};
use super::config::TrainConfig;

/// A model that turns a batch of pre-processed images into mask logits at the input size.
pub trait Segmenter<B: Backend>:
    Module<B> + Clone + Send + std::fmt::Debug + Sized + 'static
{
    /// Builds the model of `cfg` (preset, base weights, adapter) and the trainable policy;
    /// also returns the number of adapted layers.
    fn build(cfg: &TrainConfig, device: &B::Device) -> Result<(Self, TrainablePolicy, usize)>;

    /// The square side `S` images are pre-processed to.
    fn input_size(&self) -> usize;

    /// Mask logits.
    ///
    /// # Shapes
    /// `images: [n, 3, S, S]` → `[n, 1, S, S]`.
    fn logits(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 4>>;

    /// Parameter counts under `policy`, as the reference implementation counts them.
    fn param_report(&self, policy: &TrainablePolicy) -> ParamReport {
        ParamReport::new::<B, _>(self, policy, 0)
    }

    /// Writes the model (adapters merged) as a plain safetensors checkpoint in its reference's
    /// format (SAM: Meta's key names; baselines: MONAI's / smp's), refusing non-finite
    /// weights (named after `source`, the trained model's files).
    fn export(
        self,
        path: &Path,
        source: &Path,
        metadata: BTreeMap<String, String>,
    ) -> Result<ExportReport>;
}

/// What [`Segmenter::export`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportReport {
    /// Adapted layers merged into their weights.
    pub merged_layers: usize,
    /// Tensors written.
    pub tensors: usize,
    /// Parameters written.
    pub parameters: usize,
    /// Size of the file.
    pub bytes: usize,
}

/// A [`Segmenter`] that trains on `B`: its inference twin is a [`Segmenter`] too.
pub trait TrainSegmenter<B: AutodiffBackend>:
    Segmenter<B> + AutodiffModule<B, InnerModule = Self::Inner>
{
    /// `Self` on `B::InnerBackend`.
    type Inner: Segmenter<B::InnerBackend>;
}

impl<B: AutodiffBackend, M> TrainSegmenter<B> for M
where
    M: Segmenter<B> + AutodiffModule<B>,
    M::InnerModule: Segmenter<B::InnerBackend>,
{
    type Inner = M::InnerModule;
}

/// Logits at `S` of one image cut to its resized region and resized to its original size
/// (SAM's `postprocess_masks` after its upscaling to `S`: bilinear, no corner alignment).
///
/// # Shapes
/// `logits: [1, 1, S, S]` → `[1, 1, h, w]` for `original = (h, w)`.
pub fn to_original<B: Backend>(
    logits: Tensor<B, 4>,
    resized: (usize, usize),
    original: (usize, usize),
) -> Tensor<B, 4> {
    let opts = InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(false);
    let cropped = logits.slice([0..1, 0..1, 0..resized.0, 0..resized.1]);
    interpolate(cropped, [original.0, original.1], opts)
}

impl<B: Backend> Segmenter<B> for Sam<B> {
    fn build(cfg: &TrainConfig, device: &B::Device) -> Result<(Self, TrainablePolicy, usize)> {
        super::run::build_model(cfg, device)
    }

    fn input_size(&self) -> usize {
        self.img_size()
    }

    fn logits(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        let s = self.img_size();
        let emb = self.image_embeddings(images);
        let out = self.decode(emb, &Prompts::none(), false)?;
        Ok(super::upsample::upsample_bilinear(
            out.low_res_logits,
            [s, s],
        ))
    }

    fn export(
        mut self,
        path: &Path,
        source: &Path,
        mut metadata: BTreeMap<String, String>,
    ) -> Result<ExportReport> {
        let merged_layers = salt_core::merge(&mut self);
        // W + ΔW can overflow although both are finite: never write such a model.
        salt_core::check_finite::<B, _>(&self, source)
            .context("the merged weights are not finite; nothing was written")?;
        metadata.insert("salt.merged_layers".into(), merged_layers.to_string());
        let report = salt_sam::save_checkpoint(&self, path, &metadata)
            .with_context(|| format!("writing the merged model {}", path.display()))?;
        Ok(ExportReport {
            merged_layers,
            tensors: report.tensors,
            parameters: report.parameters,
            bytes: report.bytes,
        })
    }
}

/// Work generic over the model type, on an autodiff backend (training).
pub trait TrainModelTask<B: AutodiffBackend> {
    /// What it returns.
    type Output;
    /// Runs with the model type `M`.
    fn run<M: TrainSegmenter<B>>(self) -> Result<Self::Output>;
}

/// Work generic over the model type, on any backend (inference).
pub trait ModelTask<B: Backend> {
    /// What it returns.
    type Output;
    /// Runs with the model type `M`.
    fn run<M: Segmenter<B>>(self) -> Result<Self::Output>;
}

/// Runs `task` with the model type of the preset `name`.
pub fn with_train_model<B: AutodiffBackend, T: TrainModelTask<B>>(
    name: &str,
    task: T,
) -> Result<T::Output> {
    use BaselineKind as K;
    match ModelFamily::of(name)? {
        ModelFamily::Sam => task.run::<Sam<B>>(),
        ModelFamily::Baseline(K::UNet) => task.run::<UNetModel<B>>(),
        ModelFamily::Baseline(K::Unetr) => task.run::<UnetrModel<B>>(),
        ModelFamily::Baseline(K::RegUNet) => task.run::<RegUNetModel<B>>(),
        ModelFamily::Baseline(K::SegNet) => task.run::<SegNetModel<B>>(),
        ModelFamily::Baseline(K::DeepLabV3Plus) => task.run::<DeepLabV3PlusModel<B>>(),
        ModelFamily::Baseline(K::Segformer) => task.run::<SegformerModel<B>>(),
    }
}

/// Runs `task` with the model type of the preset `name`.
pub fn with_model<B: Backend, T: ModelTask<B>>(name: &str, task: T) -> Result<T::Output> {
    use BaselineKind as K;
    match ModelFamily::of(name)? {
        ModelFamily::Sam => task.run::<Sam<B>>(),
        ModelFamily::Baseline(K::UNet) => task.run::<UNetModel<B>>(),
        ModelFamily::Baseline(K::Unetr) => task.run::<UnetrModel<B>>(),
        ModelFamily::Baseline(K::RegUNet) => task.run::<RegUNetModel<B>>(),
        ModelFamily::Baseline(K::SegNet) => task.run::<SegNetModel<B>>(),
        ModelFamily::Baseline(K::DeepLabV3Plus) => task.run::<DeepLabV3PlusModel<B>>(),
        ModelFamily::Baseline(K::Segformer) => task.run::<SegformerModel<B>>(),
    }
}

/// Every preset name the commands take, SAM's first.
pub const MODEL_NAMES: &[&str] = &[
    "salt_paper",
    "vit_b",
    "vit_l",
    "vit_h",
    "small",
    "tiny",
    "tiny_salt_paper",
    "unet",
    "unetr",
    "regunet",
    "segnet",
    "deeplabv3plus",
    "segformer",
];

/// Which kind of model a preset name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFamily {
    /// A SAM preset (`salt_paper`, `vit_b`, …).
    Sam,
    /// A Table-1 baseline (`unet`, …, or its `_smoke` preset).
    Baseline(BaselineKind),
}

impl ModelFamily {
    /// The family of `name`; an unknown name is an error listing every known one.
    pub fn of(name: &str) -> Result<Self> {
        if let Some((kind, _)) = BaselineKind::parse(name) {
            return Ok(ModelFamily::Baseline(kind));
        }
        if super::run::model_config(name).is_ok() {
            return Ok(ModelFamily::Sam);
        }
        bail!(
            "unknown model `{name}`; known models: {} (and each baseline's `_smoke` preset)",
            MODEL_NAMES.join(", ")
        )
    }
}
