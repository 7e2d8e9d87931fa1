//! Segformer (Xie et al. 2021) as `segmentation_models_pytorch.Segformer` builds it: a MiT
//! encoder ([`crate::mit`]), the all-MLP decoder (one linear per stage to
//! `decoder_segmentation_channels`, bilinear resize to `h/4` with `align_corners=False`,
//! concatenation deepest stage first, 1×1 conv-BN-ReLU fusion) and a 1×1 head upsampled ×4
//! (`align_corners=True`).
//!
//! The paper's row is `Segformer(encoder_name="mit_b3", encoder_weights=None, in_channels=3,
//! classes=1)`: [`SegformerConfig::paper`], 44,598,209 parameters.

use std::path::Path;

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{backend::Backend, Tensor};

use crate::checkpoint::{load_state_dict, KeyMap, LoadReport};
use crate::conv_bn::{
    resize_bilinear, ConvBnRelu, ConvBnReluConfig, ConvSpec, SegmentationHead, XAVIER_UNIFORM,
};
use crate::error::Error;
use crate::mit::{MixVisionTransformer, MixVisionTransformerConfig, MIT_KEY_MAP, STAGES};

/// smp `Segformer` `state_dict` ↔ [`Segformer`]: the encoder's and `decoder.mlp_stage.{i}.linear`
/// keys are the field paths; the two `nn.Sequential`s are renamed.
pub const KEY_MAP: KeyMap = KeyMap {
    model: "segformer",
    load: &[
        // `fuse_stage = Conv2dReLU = nn.Sequential(Conv2d, BatchNorm2d, ReLU)`.
        (r"^decoder\.fuse_stage\.0\.", "decoder.fuse_stage.conv."),
        (r"^decoder\.fuse_stage\.1\.", "decoder.fuse_stage.bn."),
        // `SegmentationHead = nn.Sequential(Conv2d, Upsample, Activation)`.
        (r"^segmentation_head\.0\.", "segmentation_head.conv."),
    ],
    save: &[
        (r"^decoder\.fuse_stage\.conv\.", "decoder.fuse_stage.0."),
        (r"^decoder\.fuse_stage\.bn\.", "decoder.fuse_stage.1."),
        (r"^segmentation_head\.conv\.", "segmentation_head.0."),
    ],
    ignored: &[r"num_batches_tracked$"],
};

/// Inputs must have `h` and `w` multiples of this (MiT's output stride), as smp's
/// `check_input_shape`.
pub const INPUT_MULTIPLE: usize = 32;

/// Configuration of a [`Segformer`] (smp's constructor arguments; `encoder_depth` is 5).
#[derive(Config, Debug)]
pub struct SegformerConfig {
    /// The MiT encoder (`encoder_name`); its `in_channels` is smp's `in_channels`.
    pub encoder: MixVisionTransformerConfig,
    /// `decoder_segmentation_channels` (256).
    #[config(default = 256)]
    pub decoder_segmentation_channels: usize,
    /// Output channels (`classes`).
    #[config(default = 1)]
    pub classes: usize,
    /// `upsampling` of the head (bilinear, `align_corners=True`); 4 returns the input size.
    #[config(default = 4)]
    pub upsampling: usize,
}

impl SegformerConfig {
    /// The paper's Table-1 row: MiT-b3, smp's defaults.
    pub fn paper() -> Self {
        Self::new(MixVisionTransformerConfig::mit_b3())
    }

    /// A ~0.6M-parameter Segformer of the same structure (a quarter of b3's widths, one or two
    /// blocks per stage) for tests and the smoke table.
    pub fn smoke() -> Self {
        Self::new(MixVisionTransformerConfig::new(
            [16, 32, 80, 128],
            [1, 2, 5, 8],
            [1, 1, 2, 1],
        ))
        .with_decoder_segmentation_channels(64)
    }

    /// Checks the encoder and the decoder's widths.
    pub fn validate(&self) -> crate::Result<()> {
        self.encoder.validate()?;
        if self.decoder_segmentation_channels == 0 || self.classes == 0 || self.upsampling == 0 {
            return Err(Error::InvalidConfig {
                model: "segformer",
                field: "decoder_segmentation_channels / classes / upsampling",
                value: format!(
                    "{} / {} / {}",
                    self.decoder_segmentation_channels, self.classes, self.upsampling
                ),
                expected: "> 0".into(),
            });
        }
        Ok(())
    }

    /// Builds the model (encoder: smp's MiT init; decoder: `kaiming_uniform_` fan-in convolution,
    /// Xavier-uniform linears; head: Xavier-uniform).
    pub fn init<B: Backend>(&self, device: &B::Device) -> crate::Result<Segformer<B>> {
        self.validate()?;
        let c = self.decoder_segmentation_channels;
        let mlp_stage = self
            .encoder
            .embed_dims
            .iter()
            .rev()
            .map(|&d| MlpStage {
                linear: LinearConfig::new(d, c)
                    .with_initializer(XAVIER_UNIFORM)
                    .init(device),
            })
            .collect();
        Ok(Segformer {
            encoder: self.encoder.init(device)?,
            decoder: SegformerDecoder {
                mlp_stage,
                fuse_stage: ConvBnReluConfig::new([STAGES * c, c], 1).init(device),
            },
            segmentation_head: SegmentationHead {
                conv: ConvSpec {
                    bias: true,
                    ..ConvSpec::new([c, self.classes], 1, XAVIER_UNIFORM)
                }
                .init(device),
                upsampling: self.upsampling,
            },
        })
    }
}

/// Segformer with a MiT encoder.
///
/// # Training and inference
/// The decoder's BatchNorm and the encoder's stochastic depth train under an `Autodiff`
/// backend and are in inference mode otherwise (see [`crate::conv_bn`]).
#[derive(Module, Debug)]
pub struct Segformer<B: Backend> {
    /// MiT.
    pub encoder: MixVisionTransformer<B>,
    /// All-MLP decoder.
    pub decoder: SegformerDecoder<B>,
    /// 1×1 conv + bilinear ×`upsampling`.
    pub segmentation_head: SegmentationHead<B>,
}

impl<B: Backend> Segformer<B> {
    /// # Shapes
    /// `images: [n, in_channels, h, w]` → logits `[n, classes, h, w]` (with the default
    /// `upsampling = 4`).
    ///
    /// # Panics
    /// If `h` or `w` is not a multiple of 32 ([`INPUT_MULTIPLE`]), as smp raises; pad the
    /// images first.
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 4> {
        let [_, _, h, w] = images.dims();
        assert!(
            h.is_multiple_of(INPUT_MULTIPLE) && w.is_multiple_of(INPUT_MULTIPLE),
            "Segformer: input {h}×{w} is not a multiple of {INPUT_MULTIPLE}"
        );
        let features = self.encoder.forward(images);
        let x = self.decoder.forward(&features, [h / 4, w / 4]);
        self.segmentation_head.forward(x)
    }
}

/// Loads a MiT-b3 checkpoint into the encoder (`--encoder-weights`): NVlabs' / smp-hub's keys
/// (`patch_embed1.proj.weight`, `block3.17.mlp.dwconv.dwconv.bias`, ...) without smp's
/// `encoder.` prefix; the ImageNet classifier `head.*` is skipped, every other key must match
/// by name and shape.
pub fn load_encoder_weights<B: Backend>(
    model: &mut Segformer<B>,
    path: &Path,
) -> crate::Result<LoadReport> {
    load_state_dict(&mut model.encoder, path, &MIT_KEY_MAP)
}

/// smp's `SegformerDecoder`.
#[derive(Module, Debug)]
pub struct SegformerDecoder<B: Backend> {
    /// One linear per stage, deepest stage first (`mlp_stage.{i}.linear`).
    pub mlp_stage: Vec<MlpStage<B>>,
    /// `fuse_stage`: 1×1 conv (no bias) + BatchNorm + ReLU over the concatenation.
    pub fuse_stage: ConvBnRelu<B>,
}

impl<B: Backend> SegformerDecoder<B> {
    /// # Shapes
    /// `features`: the four MiT stages (shallowest first) → `[n, c, size[0], size[1]]`; smp
    /// passes `size = (h/4, w/4)` of the input.
    pub fn forward(&self, features: &[Tensor<B, 4>; STAGES], size: [usize; 2]) -> Tensor<B, 4> {
        let resized = self
            .mlp_stage
            .iter()
            .zip(features.iter().rev())
            .map(|(mlp, f)| resize_bilinear(mlp.forward(f.clone()), size, false))
            .collect();
        self.fuse_stage.forward(Tensor::cat(resized, 1))
    }
}

/// smp's decoder `MLP`: a linear over channels at every position.
#[derive(Module, Debug)]
pub struct MlpStage<B: Backend> {
    /// `skip_channels → segmentation_channels`.
    pub linear: Linear<B>,
}

impl<B: Backend> MlpStage<B> {
    /// # Shapes
    /// `[n, c, h, w]` → `[n, c', h, w]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [n, c, h, w] = x.dims();
        let tokens = x.reshape([n, c, h * w]).swap_dims(1, 2); // [n, h·w, c]
        let y = self.linear.forward(tokens);
        let c2 = y.dims()[2];
        y.swap_dims(1, 2).reshape([n, c2, h, w]) // [n, c', h, w]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::optim::{AdamConfig, GradientsParams, Optimizer};

    type TestBackend = burn::backend::NdArray<f32>;
    type TestAutodiffBackend = burn::backend::Autodiff<TestBackend>;

    /// `sum(p.numel() for p in smp.Segformer("mit_b3", encoder_weights=None, in_channels=3,
    /// classes=1).parameters())` (smp 0.6.0).
    const PAPER_PARAMS: usize = 44_598_209;
    /// Upper bound for the smoke preset ("a few M").
    const SMOKE_MAX_PARAMS: usize = 3_000_000;

    #[test]
    fn paper_parameter_count() {
        let model = SegformerConfig::paper()
            .init::<TestBackend>(&Default::default())
            .unwrap();
        assert_eq!(crate::parameter_count(&model), PAPER_PARAMS);
        let running = crate::params::running_stat_count(&model);
        assert_eq!(model.num_params(), PAPER_PARAMS + running);
    }

    #[test]
    fn smoke_is_small_and_keeps_the_input_size() {
        let device = Default::default();
        let model = SegformerConfig::smoke()
            .init::<TestBackend>(&device)
            .unwrap();
        let params = crate::parameter_count(&model);
        assert!(params <= SMOKE_MAX_PARAMS, "{params}");
        for [h, w] in [[64, 64], [512, 512], [64, 96]] {
            let x = Tensor::<TestBackend, 4>::zeros([1, 3, h, w], &device);
            assert_eq!(model.forward(x).dims(), [1, 1, h, w]);
        }
    }

    #[test]
    #[should_panic(expected = "not a multiple of 32")]
    fn input_not_a_multiple_of_32_panics() {
        let device = Default::default();
        let model = SegformerConfig::smoke()
            .init::<TestBackend>(&device)
            .unwrap();
        model.forward(Tensor::zeros([1, 3, 48, 64], &device));
    }

    #[test]
    fn trains_under_autodiff() {
        let device = Default::default();
        let mut model = SegformerConfig::smoke()
            .init::<TestAutodiffBackend>(&device)
            .unwrap();
        let x = Tensor::<TestAutodiffBackend, 4>::random(
            [2, 3, 64, 64],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let before = model
            .decoder
            .fuse_stage
            .bn
            .running_var
            .value_sync()
            .into_data();
        let loss = model.forward(x).powi_scalar(2).mean();
        let grads = loss.backward();
        let first = model
            .encoder
            .patch_embed1
            .proj
            .weight
            .val()
            .grad(&grads)
            .unwrap();
        assert!(first.abs().sum().into_scalar() > 0.0);
        let grads = GradientsParams::from_grads(grads, &model);
        model = AdamConfig::new().init().step(1e-3, model, grads);
        let after = model
            .decoder
            .fuse_stage
            .bn
            .running_var
            .value_sync()
            .into_data();
        assert_ne!(before, after);
    }
}
