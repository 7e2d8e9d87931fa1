//! torchvision's ResNet with `Bottleneck` blocks (v1.5: the stride on the 3×3 convolution) as
//! smp's `ResNetEncoder` uses it: no `avgpool` / `fc`, the five feature maps of the stem and the
//! four stages, and smp's `make_dilated` for output stride 16 or 8.
//!
//! Field names are torchvision's (`conv1 bn1 layer1..layer4`, blocks `conv1..3 bn1..3`); only
//! `downsample.0` / `downsample.1` (an `nn.Sequential`) need [`RESNET_KEY_MAP`].

use std::path::Path;

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, BatchNormConfig};
use burn::tensor::activation::relu;
use burn::tensor::module::max_pool2d;
use burn::tensor::{backend::Backend, Tensor};

use crate::checkpoint::{load_state_dict, KeyMap, LoadReport};
use crate::conv_bn::{ConvSpec, KAIMING_NORMAL_FAN_OUT};
use crate::error::Error;
use crate::fast::FastConv;

/// Output channels of a `Bottleneck` / its `planes`.
pub const BOTTLENECK_EXPANSION: usize = 4;

/// How a torchvision ResNet `state_dict` (keys `conv1.weight`, `layer1.0.downsample.0.weight`,
/// ...) maps onto [`ResNet`]. Unanchored, so the same rules serve a model that holds the
/// ResNet under a prefix (`encoder.`).
pub const RESNET_LOAD_RULES: &[(&str, &str)] = &[
    // `downsample = nn.Sequential(conv1x1, BatchNorm2d)`.
    (r"\.downsample\.0\.", ".downsample.conv."),
    (r"\.downsample\.1\.", ".downsample.bn."),
];

/// The inverse of [`RESNET_LOAD_RULES`].
pub const RESNET_SAVE_RULES: &[(&str, &str)] = &[
    (r"\.downsample\.conv\.", ".downsample.0."),
    (r"\.downsample\.bn\.", ".downsample.1."),
];

/// Keys of a torchvision ResNet that are not parameters of ours.
pub const RESNET_IGNORED: &[&str] = &[
    // BatchNorm's step counter (only used with `momentum=None`).
    r"num_batches_tracked$",
    // The ImageNet classifier, which smp's encoder deletes.
    r"^fc\.(weight|bias)$",
];

/// A torchvision `resnet*` `state_dict` ↔ [`ResNet`].
pub const RESNET_KEY_MAP: KeyMap = KeyMap {
    model: "resnet",
    load: RESNET_LOAD_RULES,
    save: RESNET_SAVE_RULES,
    ignored: RESNET_IGNORED,
};

/// Configuration of a [`ResNet`] (torchvision's `ResNet(Bottleneck, layers)` arguments, plus
/// the widths torchvision fixes, so that tests can build a slim model of the same structure).
#[derive(Config, Debug)]
pub struct ResNetConfig {
    /// Bottleneck blocks per stage: ResNet-50 `[3, 4, 6, 3]`, ResNet-101 `[3, 4, 23, 3]`.
    pub layers: [usize; 4],
    /// Input channels of `conv1`.
    #[config(default = 3)]
    pub in_channels: usize,
    /// Output channels of the stem (`conv1`, torchvision's initial `inplanes`): 64.
    #[config(default = 64)]
    pub stem_width: usize,
    /// `planes` of the four stages (block outputs are `4 · planes`): `[64, 128, 256, 512]`.
    #[config(default = "[64, 128, 256, 512]")]
    pub planes: [usize; 4],
    /// Groups of the 3×3 convolutions (ResNeXt); 1 for ResNet.
    #[config(default = 1)]
    pub groups: usize,
    /// torchvision's `width_per_group`: the 3×3 width is `planes · width_per_group / 64 ·
    /// groups`; 64 for ResNet.
    #[config(default = 64)]
    pub width_per_group: usize,
    /// Stride of the last feature map: 32 (plain), 16 (layer4 dilated ×2) or 8 (layer3 ×2,
    /// layer4 ×4), smp's `make_dilated`: every convolution of a dilated stage gets stride 1 and
    /// that dilation, the 3×3 ones padding = dilation.
    #[config(default = 32)]
    pub output_stride: usize,
}

impl ResNetConfig {
    /// torchvision's `resnet50`.
    pub fn resnet50() -> Self {
        Self::new([3, 4, 6, 3])
    }

    /// torchvision's `resnet101`.
    pub fn resnet101() -> Self {
        Self::new([3, 4, 23, 3])
    }

    /// Channels of the five feature maps `[stem, layer1, layer2, layer3, layer4]`.
    pub fn out_channels(&self) -> [usize; 5] {
        let p = self.planes.map(|p| p * BOTTLENECK_EXPANSION);
        [self.stem_width, p[0], p[1], p[2], p[3]]
    }

    /// The 3×3 width of a stage's blocks (torchvision: `int(planes * (base_width / 64.)) *
    /// groups`).
    fn width(&self, planes: usize) -> usize {
        planes * self.width_per_group / 64 * self.groups
    }

    /// `(stride, dilation)` of stage `i` (0-based) after smp's `make_dilated`.
    fn stage_stride_dilation(&self, i: usize) -> (usize, usize) {
        // Stride of layer1..layer4's output relative to the input.
        let stage_stride = 4 << i;
        if stage_stride > self.output_stride {
            (1, stage_stride / self.output_stride)
        } else if i == 0 {
            (1, 1)
        } else {
            (2, 1)
        }
    }

    /// Checks the block counts, widths and output stride.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |field, value: String, expected: &str| {
            Err(Error::InvalidConfig {
                model: "resnet",
                field,
                value,
                expected: expected.to_string(),
            })
        };
        if self.layers.contains(&0) {
            return bad(
                "layers",
                format!("{:?}", self.layers),
                "at least 1 block per stage",
            );
        }
        if self.in_channels == 0 || self.stem_width == 0 {
            return bad(
                "in_channels / stem_width",
                format!("{} / {}", self.in_channels, self.stem_width),
                "> 0",
            );
        }
        if self.groups == 0 || self.planes.iter().any(|&p| self.width(p) == 0) {
            return bad(
                "planes",
                format!("{:?}", self.planes),
                "planes · width_per_group / 64 · groups > 0 for every stage",
            );
        }
        if ![8, 16, 32].contains(&self.output_stride) {
            return bad(
                "output_stride",
                self.output_stride.to_string(),
                "8, 16 or 32",
            );
        }
        Ok(())
    }

    /// Builds the ResNet with torchvision's initialisation (convolutions
    /// `kaiming_normal_(fan_out, relu)`, BatchNorm 1 / 0).
    pub fn init<B: Backend>(&self, device: &B::Device) -> crate::Result<ResNet<B>> {
        self.validate()?;
        let mut inplanes = self.stem_width;
        let mut stages = Vec::with_capacity(4);
        for (i, (&planes, &blocks)) in self.planes.iter().zip(&self.layers).enumerate() {
            let (stride, dilation) = self.stage_stride_dilation(i);
            // torchvision decides on a downsample from the stride *before* `make_dilated`.
            let original_stride = if i == 0 { 1 } else { 2 };
            let out = planes * BOTTLENECK_EXPANSION;
            let stage: Vec<Bottleneck<B>> = (0..blocks)
                .map(|b| {
                    let first = b == 0;
                    let block = BottleneckInit {
                        inplanes,
                        width: self.width(planes),
                        out,
                        groups: self.groups,
                        stride: if first { stride } else { 1 },
                        dilation,
                        downsample: first && (original_stride != 1 || inplanes != out),
                    }
                    .init(device);
                    inplanes = out;
                    block
                })
                .collect();
            stages.push(stage);
        }
        let mut stages = stages.into_iter();
        let mut next = || stages.next().expect("four stages");
        Ok(ResNet {
            conv1: ConvSpec {
                stride: 2,
                padding: 3,
                ..ConvSpec::new(
                    [self.in_channels, self.stem_width],
                    7,
                    KAIMING_NORMAL_FAN_OUT,
                )
            }
            .init(device),
            bn1: BatchNormConfig::new(self.stem_width).init(device),
            layer1: next(),
            layer2: next(),
            layer3: next(),
            layer4: next(),
        })
    }
}

/// ResNet feature extractor (smp `ResNetEncoder`, depth 5).
#[derive(Module, Debug)]
pub struct ResNet<B: Backend> {
    /// 7×7, stride 2, padding 3, no bias.
    pub conv1: Conv2d<B>,
    /// Stem BatchNorm.
    pub bn1: BatchNorm<B>,
    /// Stage 1 (after the 3×3 / 2 max-pool), stride 4.
    pub layer1: Vec<Bottleneck<B>>,
    /// Stage 2, stride 8.
    pub layer2: Vec<Bottleneck<B>>,
    /// Stage 3, stride 16 (8 when dilated).
    pub layer3: Vec<Bottleneck<B>>,
    /// Stage 4, stride 32 (16 or 8 when dilated).
    pub layer4: Vec<Bottleneck<B>>,
}

impl<B: Backend> ResNet<B> {
    /// The feature maps smp's decoders take (its `features[1..]`; `features[0]` is the input).
    ///
    /// # Shapes
    /// `x: [n, in_channels, h, w]` → `[stem, layer1, layer2, layer3, layer4]` with
    /// [`ResNetConfig::out_channels`] channels at sizes `⌈h/2⌉`, then halving (PyTorch's
    /// convolution / pooling arithmetic) at every stage that is not dilated. `h`, `w` multiples
    /// of 32 give exact `h/2, h/4, h/8, h/16, h/32` (or `h/16` for the dilated stages).
    pub fn forward(&self, x: Tensor<B, 4>) -> [Tensor<B, 4>; 5] {
        let stem = relu(self.bn1.forward(self.conv1.fast(x)));
        let x = max_pool2d(stem.clone(), [3, 3], [2, 2], [1, 1], [1, 1], false);
        let run = |stage: &[Bottleneck<B>], x: Tensor<B, 4>| {
            stage.iter().fold(x, |x, block| block.forward(x))
        };
        let f1 = run(&self.layer1, x);
        let f2 = run(&self.layer2, f1.clone());
        let f3 = run(&self.layer3, f2.clone());
        let f4 = run(&self.layer4, f3.clone());
        [stem, f1, f2, f3, f4]
    }
}

/// What one block is built from ([`ResNetConfig::init`]).
struct BottleneckInit {
    inplanes: usize,
    width: usize,
    out: usize,
    groups: usize,
    stride: usize,
    dilation: usize,
    downsample: bool,
}

impl BottleneckInit {
    fn init<B: Backend>(&self, device: &B::Device) -> Bottleneck<B> {
        let w = self.width;
        let d = self.dilation;
        let k = KAIMING_NORMAL_FAN_OUT;
        Bottleneck {
            conv1: ConvSpec::new([self.inplanes, w], 1, k.clone()).init(device),
            bn1: BatchNormConfig::new(w).init(device),
            conv2: ConvSpec {
                stride: self.stride,
                padding: d,
                dilation: d,
                groups: self.groups,
                ..ConvSpec::new([w, w], 3, k.clone())
            }
            .init(device),
            bn2: BatchNormConfig::new(w).init(device),
            conv3: ConvSpec::new([w, self.out], 1, k.clone()).init(device),
            bn3: BatchNormConfig::new(self.out).init(device),
            downsample: self.downsample.then(|| Downsample {
                // smp's make_dilated also sets dilation on this 1×1 conv: no effect.
                conv: ConvSpec {
                    stride: self.stride,
                    ..ConvSpec::new([self.inplanes, self.out], 1, k)
                }
                .init(device),
                bn: BatchNormConfig::new(self.out).init(device),
            }),
        }
    }
}

/// torchvision's `Bottleneck`: 1×1 → 3×3 (stride, dilation, groups) → 1×1 (×4), residual.
#[derive(Module, Debug)]
pub struct Bottleneck<B: Backend> {
    /// 1×1 reduction.
    pub conv1: Conv2d<B>,
    /// BatchNorm after `conv1`.
    pub bn1: BatchNorm<B>,
    /// 3×3, carries the stage's stride (v1.5) and dilation.
    pub conv2: Conv2d<B>,
    /// BatchNorm after `conv2`.
    pub bn2: BatchNorm<B>,
    /// 1×1 expansion to `4 · planes`.
    pub conv3: Conv2d<B>,
    /// BatchNorm after `conv3`.
    pub bn3: BatchNorm<B>,
    /// Projection of the identity in a stage's first block.
    pub downsample: Option<Downsample<B>>,
}

impl<B: Backend> Bottleneck<B> {
    /// # Shapes
    /// `[n, inplanes, h, w]` → `[n, 4·planes, h/stride, w/stride]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let identity = match &self.downsample {
            Some(d) => d.bn.forward(d.conv.fast(x.clone())),
            None => x.clone(),
        };
        let out = relu(self.bn1.forward(self.conv1.fast(x)));
        let out = relu(self.bn2.forward(self.conv2.fast(out)));
        let out = self.bn3.forward(self.conv3.fast(out));
        relu(out + identity)
    }
}

/// `downsample = nn.Sequential(conv1x1(stride), BatchNorm2d)` (keys `downsample.0`,
/// `downsample.1`).
#[derive(Module, Debug)]
pub struct Downsample<B: Backend> {
    /// `downsample.0`.
    pub conv: Conv2d<B>,
    /// `downsample.1`.
    pub bn: BatchNorm<B>,
}

/// Loads a torchvision ResNet `state_dict` (`torch.save(resnet101().state_dict())`, `.pth` or
/// `.safetensors`) into `resnet`; `fc.*` and `num_batches_tracked` are skipped, every other key
/// must match by name and shape.
pub fn load_resnet_weights<B: Backend>(
    resnet: &mut ResNet<B>,
    path: &Path,
) -> crate::Result<LoadReport> {
    load_state_dict(resnet, path, &RESNET_KEY_MAP)
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestBackend = burn::backend::NdArray<f32>;

    /// torchvision: `sum(p.numel() for p in resnet101().parameters())` minus `fc`
    /// (2048·1000 + 1000).
    const RESNET101_PARAMS_NO_FC: usize = 44_549_160 - 2_049_000;

    /// torchvision: the `weight` + `bias` of resnet101's BatchNorms.
    const RESNET101_BN_AFFINE: usize = 105_344;

    #[test]
    fn resnet101_parameter_count() {
        let model = ResNetConfig::resnet101()
            .init::<TestBackend>(&Default::default())
            .unwrap();
        assert_eq!(crate::parameter_count(&model), RESNET101_PARAMS_NO_FC);
        // burn's count adds BatchNorm's running mean and variance (as many as its affine terms).
        let running = crate::params::running_stat_count(&model);
        assert_eq!(running, RESNET101_BN_AFFINE);
        assert_eq!(model.num_params(), RESNET101_PARAMS_NO_FC + running);
    }

    #[test]
    fn feature_shapes_follow_the_output_stride() {
        let device = Default::default();
        let cfg = ResNetConfig::new([1, 1, 1, 1])
            .with_stem_width(4)
            .with_planes([2, 2, 4, 4]);
        let x = Tensor::<TestBackend, 4>::zeros([1, 3, 64, 32], &device);
        for (os, last) in [(32, [2, 1]), (16, [4, 2]), (8, [8, 4])] {
            let f = cfg
                .clone()
                .with_output_stride(os)
                .init::<TestBackend>(&device)
                .unwrap();
            let dims = f.forward(x.clone()).map(|t| t.dims());
            assert_eq!(dims[0], [1, 4, 32, 16]);
            assert_eq!(dims[1], [1, 8, 16, 8]);
            assert_eq!(&dims[4][2..], &last, "output stride {os}");
        }
    }

    #[test]
    fn invalid_configs_are_typed_errors() {
        let device = Default::default();
        for cfg in [
            ResNetConfig::new([3, 0, 1, 1]),
            ResNetConfig::resnet50().with_output_stride(4),
            ResNetConfig::resnet50().with_width_per_group(0),
        ] {
            let err = cfg.init::<TestBackend>(&device).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::InvalidConfig {
                        model: "resnet",
                        ..
                    }
                ),
                "{err}"
            );
        }
    }
}
