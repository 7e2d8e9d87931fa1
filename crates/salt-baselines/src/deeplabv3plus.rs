//! DeepLabV3+ (Chen et al. 2018) as `segmentation_models_pytorch.DeepLabV3Plus` builds it: a
//! dilated ResNet encoder (output stride 16), the atrous spatial pyramid pooling with
//! depthwise-separable branches, the decoder that fuses the ×4-upsampled ASPP output with the
//! stride-4 `layer1` features, and a 1×1 head upsampled ×4 to the input size.
//!
//! The paper's row is `DeepLabV3Plus(encoder_name="resnet101", encoder_weights=None,
//! in_channels=3, classes=1)`: [`DeepLabV3PlusConfig::paper`], 45,669,713 parameters.

use std::path::Path;

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig};
use burn::tensor::activation::relu;
use burn::tensor::{backend::Backend, Tensor};

use crate::checkpoint::{load_state_dict, KeyMap, LoadReport};
use crate::conv_bn::{
    resize_bilinear, ConvBnRelu, ConvBnReluConfig, ConvSpec, SegmentationHead, SeparableConv2d,
    XAVIER_UNIFORM,
};
use crate::error::Error;
use crate::fast::FastConv;
use crate::resnet::{ResNet, ResNetConfig, RESNET_KEY_MAP};

/// smp `DeepLabV3Plus` `state_dict` ↔ [`DeepLabV3Plus`].
///
/// Load rules run in order on each key; `X.0` / `X.1` of `nn.Sequential(conv, bn, relu)` become
/// `X.conv` / `X.bn` ([`ConvBnRelu`]), those of `SeparableConv2d` `X.depthwise` /
/// `X.pointwise`. The save rules undo them from the inside out.
pub const KEY_MAP: KeyMap = KeyMap {
    model: "deeplabv3plus",
    load: &[
        // Encoder: torchvision's `downsample = nn.Sequential(conv, bn)`.
        (r"\.downsample\.0\.", ".downsample.conv."),
        (r"\.downsample\.1\.", ".downsample.bn."),
        // `decoder.aspp = nn.Sequential(ASPP, SeparableConv2d, BatchNorm2d, ReLU)`.
        (r"^decoder\.aspp\.1\.0\.", "decoder.aspp.conv.depthwise."),
        (r"^decoder\.aspp\.1\.1\.", "decoder.aspp.conv.pointwise."),
        (r"^decoder\.aspp\.2\.", "decoder.aspp.bn."),
        (r"^decoder\.aspp\.0\.", "decoder.aspp.aspp."),
        // `ASPP.convs`: 0 the 1×1 branch, 1..3 the atrous ones, 4 the image pooling
        // `nn.Sequential(AdaptiveAvgPool2d, Conv2d, BatchNorm2d, ReLU)`.
        (r"\.aspp\.aspp\.convs\.0\.", ".aspp.aspp.conv0."),
        (r"\.aspp\.aspp\.convs\.1\.", ".aspp.aspp.atrous.0."),
        (r"\.aspp\.aspp\.convs\.2\.", ".aspp.aspp.atrous.1."),
        (r"\.aspp\.aspp\.convs\.3\.", ".aspp.aspp.atrous.2."),
        (r"\.aspp\.aspp\.convs\.4\.1\.", ".aspp.aspp.pooling.conv."),
        (r"\.aspp\.aspp\.convs\.4\.2\.", ".aspp.aspp.pooling.bn."),
        // Conv-BN-ReLU and SeparableConv-BN-ReLU sequentials.
        (
            r"\.(conv0|project|block1|atrous\.\d|block2)\.0\.",
            ".${1}.conv.",
        ),
        (
            r"\.(conv0|project|block1|atrous\.\d|block2)\.1\.",
            ".${1}.bn.",
        ),
        // `SeparableConv2d = nn.Sequential(depthwise, pointwise)` inside those.
        (r"\.conv\.0\.", ".conv.depthwise."),
        (r"\.conv\.1\.", ".conv.pointwise."),
        // `SegmentationHead = nn.Sequential(Conv2d, Upsample, Activation)`.
        (r"^segmentation_head\.0\.", "segmentation_head.conv."),
    ],
    save: &[
        (r"^segmentation_head\.conv\.", "segmentation_head.0."),
        (r"\.conv\.depthwise\.", ".conv.0."),
        (r"\.conv\.pointwise\.", ".conv.1."),
        (
            r"\.(conv0|project|block1|atrous\.\d|block2)\.conv\.",
            ".${1}.0.",
        ),
        (
            r"\.(conv0|project|block1|atrous\.\d|block2)\.bn\.",
            ".${1}.1.",
        ),
        (r"\.aspp\.aspp\.pooling\.bn\.", ".aspp.aspp.convs.4.2."),
        (r"\.aspp\.aspp\.pooling\.conv\.", ".aspp.aspp.convs.4.1."),
        (r"\.aspp\.aspp\.atrous\.2\.", ".aspp.aspp.convs.3."),
        (r"\.aspp\.aspp\.atrous\.1\.", ".aspp.aspp.convs.2."),
        (r"\.aspp\.aspp\.atrous\.0\.", ".aspp.aspp.convs.1."),
        (r"\.aspp\.aspp\.conv0\.", ".aspp.aspp.convs.0."),
        (r"^decoder\.aspp\.aspp\.", "decoder.aspp.0."),
        (r"^decoder\.aspp\.conv\.", "decoder.aspp.1."),
        (r"^decoder\.aspp\.bn\.", "decoder.aspp.2."),
        (r"\.downsample\.conv\.", ".downsample.0."),
        (r"\.downsample\.bn\.", ".downsample.1."),
    ],
    ignored: &[r"num_batches_tracked$"],
};

/// Configuration of a [`DeepLabV3Plus`] (smp's constructor arguments; `encoder_depth` is 5 and
/// `decoder_aspp_separable` true, smp's defaults for this model).
#[derive(Config, Debug)]
pub struct DeepLabV3PlusConfig {
    /// The ResNet encoder; its `output_stride` is smp's `encoder_output_stride` (8 or 16) and
    /// its `in_channels` smp's `in_channels`.
    pub encoder: ResNetConfig,
    /// `decoder_channels`: width of the ASPP and the decoder (256).
    #[config(default = 256)]
    pub decoder_channels: usize,
    /// `decoder_atrous_rates` of the three separable ASPP branches (12, 24, 36).
    #[config(default = "[12, 24, 36]")]
    pub decoder_atrous_rates: [usize; 3],
    /// `decoder_aspp_dropout`: dropout after the ASPP projection, training only (0.5).
    #[config(default = 0.5)]
    pub decoder_aspp_dropout: f64,
    /// Output channels (`classes`).
    #[config(default = 1)]
    pub classes: usize,
    /// `upsampling` of the head (bilinear, `align_corners=True`); 4 returns the input size.
    #[config(default = 4)]
    pub upsampling: usize,
}

/// `highres_out_channels` of smp's decoder ("proposed by authors of paper").
pub const HIGHRES_OUT_CHANNELS: usize = 48;

impl DeepLabV3PlusConfig {
    /// The paper's Table-1 row: ResNet-101, output stride 16, smp's defaults.
    pub fn paper() -> Self {
        Self::new(ResNetConfig::resnet101().with_output_stride(16))
    }

    /// A ~0.4M-parameter model of the same structure for tests and the smoke table (one block
    /// per stage, narrow widths; takes 64×64 and 512×512 inputs).
    pub fn smoke() -> Self {
        Self::new(
            ResNetConfig::new([1, 1, 1, 1])
                .with_stem_width(16)
                .with_planes([16, 32, 64, 64])
                .with_output_stride(16),
        )
        .with_decoder_channels(64)
    }

    /// Inputs must have `h` and `w` multiples of this (the encoder's output stride), as smp's
    /// `check_input_shape`.
    pub fn input_multiple(&self) -> usize {
        self.encoder.output_stride
    }

    /// Checks the encoder and the decoder's arguments.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |field, value: String, expected: &str| {
            Err(Error::InvalidConfig {
                model: "deeplabv3plus",
                field,
                value,
                expected: expected.to_string(),
            })
        };
        self.encoder.validate()?;
        if ![8, 16].contains(&self.encoder.output_stride) {
            return bad(
                "encoder.output_stride",
                self.encoder.output_stride.to_string(),
                "8 or 16 (smp's encoder_output_stride)",
            );
        }
        if self.decoder_channels == 0 || self.classes == 0 || self.upsampling == 0 {
            return bad(
                "decoder_channels / classes / upsampling",
                format!(
                    "{} / {} / {}",
                    self.decoder_channels, self.classes, self.upsampling
                ),
                "> 0",
            );
        }
        if self.decoder_atrous_rates.contains(&0) {
            return bad(
                "decoder_atrous_rates",
                format!("{:?}", self.decoder_atrous_rates),
                "dilations >= 1",
            );
        }
        if !(0.0..1.0).contains(&self.decoder_aspp_dropout) {
            return bad(
                "decoder_aspp_dropout",
                self.decoder_aspp_dropout.to_string(),
                "a probability in [0, 1)",
            );
        }
        Ok(())
    }

    /// Builds the model (encoder: torchvision's init; decoder: smp's `kaiming_uniform_`
    /// fan-in; head: Xavier-uniform; BatchNorm 1 / 0).
    pub fn init<B: Backend>(&self, device: &B::Device) -> crate::Result<DeepLabV3Plus<B>> {
        self.validate()?;
        let enc = self.encoder.out_channels();
        let c = self.decoder_channels;
        let cbr = |cin, cout| ConvBnReluConfig::new([cin, cout], 1).init(device);
        let sep_cbr = |cin, cout, dilation| SepConvBnRelu {
            conv: SeparableConv2d::new_3x3([cin, cout], dilation, false, device),
            bn: BatchNormConfig::new(cout).init(device),
        };
        let aspp = Aspp {
            conv0: cbr(enc[4], c),
            atrous: self
                .decoder_atrous_rates
                .iter()
                .map(|&r| sep_cbr(enc[4], c, r))
                .collect(),
            pooling: AsppPooling {
                conv: cbr(enc[4], c).conv,
                bn: BatchNormConfig::new(c).init(device),
            },
            project: cbr(5 * c, c),
            dropout: DropoutConfig::new(self.decoder_aspp_dropout).init(),
        };
        // smp: `scale_factor = 4 if output_stride == 16 and encoder_depth > 3 else 2`.
        let up_scale = if self.encoder.output_stride == 16 {
            4
        } else {
            2
        };
        Ok(DeepLabV3Plus {
            encoder: self.encoder.init(device)?,
            decoder: DeepLabV3PlusDecoder {
                aspp: AsppStage {
                    aspp,
                    conv: SeparableConv2d::new_3x3([c, c], 1, false, device),
                    bn: BatchNormConfig::new(c).init(device),
                },
                block1: cbr(enc[1], HIGHRES_OUT_CHANNELS),
                block2: sep_cbr(HIGHRES_OUT_CHANNELS + c, c, 1),
                up_scale,
            },
            segmentation_head: SegmentationHead {
                conv: ConvSpec {
                    bias: true,
                    ..ConvSpec::new([c, self.classes], 1, XAVIER_UNIFORM)
                }
                .init(device),
                upsampling: self.upsampling,
            },
            output_stride: self.encoder.output_stride,
        })
    }
}

/// DeepLabV3+ with a ResNet encoder.
///
/// # Training and inference
/// BatchNorm and the ASPP dropout train under an `Autodiff` backend and are in inference mode
/// otherwise (see [`crate::conv_bn`]). PyTorch refuses a training step on a batch of one (the
/// image-pooling branch's BatchNorm sees one value per channel); burn normalises it to the
/// BatchNorm bias instead.
#[derive(Module, Debug)]
pub struct DeepLabV3Plus<B: Backend> {
    /// Dilated ResNet.
    pub encoder: ResNet<B>,
    /// ASPP + low-level fusion.
    pub decoder: DeepLabV3PlusDecoder<B>,
    /// 1×1 conv + bilinear ×`upsampling`.
    pub segmentation_head: SegmentationHead<B>,
    /// The encoder's output stride (inputs must be multiples of it).
    pub output_stride: usize,
}

impl<B: Backend> DeepLabV3Plus<B> {
    /// # Shapes
    /// `images: [n, in_channels, h, w]` → logits `[n, classes, h, w]` (with the default
    /// `upsampling = 4`).
    ///
    /// # Panics
    /// If `h` or `w` is not a multiple of the output stride (16 for [`DeepLabV3PlusConfig::paper`]),
    /// as smp raises; pad the images first.
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 4> {
        let [_, _, h, w] = images.dims();
        let os = self.output_stride;
        assert!(
            h.is_multiple_of(os) && w.is_multiple_of(os),
            "DeepLabV3Plus: input {h}×{w} is not a multiple of the output stride {os}"
        );
        let features = self.encoder.forward(images);
        let x = self.decoder.forward(&features);
        self.segmentation_head.forward(x)
    }
}

/// Loads a torchvision `resnet101` `state_dict` into the encoder (`--encoder-weights`); `fc.*`
/// and `num_batches_tracked` are skipped, every other key must match by name and shape.
pub fn load_encoder_weights<B: Backend>(
    model: &mut DeepLabV3Plus<B>,
    path: &Path,
) -> crate::Result<LoadReport> {
    load_state_dict(&mut model.encoder, path, &RESNET_KEY_MAP)
}

/// smp's `DeepLabV3PlusDecoder`.
#[derive(Module, Debug)]
pub struct DeepLabV3PlusDecoder<B: Backend> {
    /// `aspp = nn.Sequential(ASPP, SeparableConv2d, BatchNorm2d, ReLU)`.
    pub aspp: AsppStage<B>,
    /// 1×1 conv of `layer1`'s features to 48 channels.
    pub block1: ConvBnRelu<B>,
    /// Separable 3×3 over the concatenation.
    pub block2: SepConvBnRelu<B>,
    /// Bilinear (`align_corners=True`) upsampling of the ASPP output: 4 at output stride 16,
    /// 2 at 8.
    pub up_scale: usize,
}

impl<B: Backend> DeepLabV3PlusDecoder<B> {
    /// # Shapes
    /// `features`: the encoder's five maps (`layer1 = features[1]` at `[n, c1, h/4, w/4]`,
    /// `layer4 = features[4]` at `h/os`) → `[n, decoder_channels, h/4, w/4]`.
    pub fn forward(&self, features: &[Tensor<B, 4>; 5]) -> Tensor<B, 4> {
        let aspp = self.aspp.forward(features[4].clone());
        let [_, _, ah, aw] = aspp.dims();
        let aspp = resize_bilinear(aspp, [ah * self.up_scale, aw * self.up_scale], true);
        let high_res = self.block1.forward(features[1].clone());
        self.block2.forward(Tensor::cat(vec![aspp, high_res], 1))
    }
}

/// `decoder.aspp`: the pyramid, a separable 3×3, BatchNorm, ReLU.
#[derive(Module, Debug)]
pub struct AsppStage<B: Backend> {
    /// `aspp.0`.
    pub aspp: Aspp<B>,
    /// `aspp.1`.
    pub conv: SeparableConv2d<B>,
    /// `aspp.2`.
    pub bn: BatchNorm<B>,
}

impl<B: Backend> AsppStage<B> {
    /// # Shapes
    /// `[n, c4, h, w]` → `[n, decoder_channels, h, w]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        relu(self.bn.forward(self.conv.forward(self.aspp.forward(x))))
    }
}

/// smp's `ASPP` (separable): five parallel branches concatenated, projected by a 1×1.
#[derive(Module, Debug)]
pub struct Aspp<B: Backend> {
    /// `convs.0`: 1×1 conv-BN-ReLU.
    pub conv0: ConvBnRelu<B>,
    /// `convs.1..3`: separable 3×3 conv-BN-ReLU with the atrous rates.
    pub atrous: Vec<SepConvBnRelu<B>>,
    /// `convs.4`: global average → 1×1 conv-BN-ReLU → broadcast.
    pub pooling: AsppPooling<B>,
    /// `project`: 1×1 conv-BN-ReLU over the five branches (then dropout).
    pub project: ConvBnRelu<B>,
    /// `project.3`.
    pub dropout: Dropout,
}

impl<B: Backend> Aspp<B> {
    /// # Shapes
    /// `[n, c4, h, w]` → `[n, decoder_channels, h, w]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut branches = vec![self.conv0.forward(x.clone())];
        branches.extend(self.atrous.iter().map(|b| b.forward(x.clone())));
        branches.push(self.pooling.forward(x));
        self.dropout
            .forward(self.project.forward(Tensor::cat(branches, 1)))
    }
}

/// smp's `ASPPPooling`: `nn.Sequential(AdaptiveAvgPool2d(1), Conv2d, BatchNorm2d, ReLU)`, then
/// a bilinear resize of the 1×1 map, which is a broadcast.
#[derive(Module, Debug)]
pub struct AsppPooling<B: Backend> {
    /// `convs.4.1`: 1×1, no bias.
    pub conv: Conv2d<B>,
    /// `convs.4.2`.
    pub bn: BatchNorm<B>,
}

impl<B: Backend> AsppPooling<B> {
    /// # Shapes
    /// `[n, c, h, w]` → `[n, out, h, w]`, constant over `h, w`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [n, _, h, w] = x.dims();
        let pooled = x.mean_dim(3).mean_dim(2); // [n, c, 1, 1]
        let y = relu(self.bn.forward(self.conv.fast(pooled)));
        let c = y.dims()[1];
        y.expand([n, c, h, w])
    }
}

/// `nn.Sequential(SeparableConv2d, BatchNorm2d, ReLU)` (ASPP branches, `block2`).
#[derive(Module, Debug)]
pub struct SepConvBnRelu<B: Backend> {
    /// `X.0`.
    pub conv: SeparableConv2d<B>,
    /// `X.1`.
    pub bn: BatchNorm<B>,
}

impl<B: Backend> SepConvBnRelu<B> {
    /// # Shapes
    /// `[n, in, h, w]` → `[n, out, h, w]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        relu(self.bn.forward(self.conv.forward(x)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::optim::{AdamConfig, GradientsParams, Optimizer};

    type TestBackend = burn::backend::NdArray<f32>;
    type TestAutodiffBackend = burn::backend::Autodiff<TestBackend>;

    /// `sum(p.numel() for p in smp.DeepLabV3Plus("resnet101", encoder_weights=None,
    /// in_channels=3, classes=1).parameters())` (smp 0.6.0).
    const PAPER_PARAMS: usize = 45_669_713;
    /// Upper bound for the smoke preset ("a few M").
    const SMOKE_MAX_PARAMS: usize = 3_000_000;

    /// Builds the 45.7M-parameter model (under a second).
    #[test]
    fn paper_parameter_count() {
        let model = DeepLabV3PlusConfig::paper()
            .init::<TestBackend>(&Default::default())
            .unwrap();
        assert_eq!(crate::parameter_count(&model), PAPER_PARAMS);
        // burn's `num_params` also counts the BatchNorm running statistics.
        let running = crate::params::running_stat_count(&model);
        assert_eq!(model.num_params(), PAPER_PARAMS + running);
    }

    #[test]
    fn smoke_is_small_and_keeps_the_input_size() {
        let device = Default::default();
        let model = DeepLabV3PlusConfig::smoke()
            .init::<TestBackend>(&device)
            .unwrap();
        let params = crate::parameter_count(&model);
        assert!(params <= SMOKE_MAX_PARAMS, "{params}");
        for size in [64, 512] {
            let x = Tensor::<TestBackend, 4>::zeros([1, 3, size, size], &device);
            assert_eq!(model.forward(x).dims(), [1, 1, size, size]);
        }
    }

    #[test]
    #[should_panic(expected = "not a multiple of the output stride 16")]
    fn input_not_a_multiple_of_the_stride_panics() {
        let device = Default::default();
        let model = DeepLabV3PlusConfig::smoke()
            .init::<TestBackend>(&device)
            .unwrap();
        model.forward(Tensor::zeros([1, 3, 40, 64], &device));
    }

    #[test]
    fn trains_under_autodiff() {
        let device = Default::default();
        let mut model = DeepLabV3PlusConfig::smoke()
            .init::<TestAutodiffBackend>(&device)
            .unwrap();
        let mut optim = AdamConfig::new().init();
        let x = Tensor::<TestAutodiffBackend, 4>::random(
            [2, 3, 32, 32],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let before = model.decoder.aspp.bn.running_mean.value_sync().into_data();
        let loss = model.forward(x).powi_scalar(2).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-3, model, grads);
        // Training-mode BatchNorm updated its running statistics.
        let after = model.decoder.aspp.bn.running_mean.value_sync().into_data();
        assert_ne!(before, after);
    }

    #[test]
    fn invalid_configs_are_typed_errors() {
        let device = Default::default();
        for cfg in [
            DeepLabV3PlusConfig::new(ResNetConfig::resnet50()),
            DeepLabV3PlusConfig::smoke().with_decoder_atrous_rates([0, 1, 2]),
            DeepLabV3PlusConfig::smoke().with_decoder_aspp_dropout(1.0),
        ] {
            let err = cfg.init::<TestBackend>(&device).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::InvalidConfig {
                        model: "deeplabv3plus",
                        ..
                    }
                ),
                "{err}"
            );
        }
    }
}
