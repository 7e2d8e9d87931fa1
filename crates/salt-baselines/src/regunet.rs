//! MONAI's `RegUNet` (`monai.networks.nets.RegUNet`, 2-D): the registration U-Net of
//! DeepReg, used by the paper as a segmentation baseline.
//!
//! Encoder: per level a BatchNorm-ReLU convolution and a two-layer residual block, then 2×2
//! max pooling (or a strided convolution); a bottleneck block; a decoder from the bottleneck up
//! to the lowest extracted level (transposed convolution, skip added or concatenated, conv
//! block); and an output block that convolves each extracted level to the output channels,
//! nearest-upsamples it to the input size and averages the levels.
//!
//! With MONAI's default `extract_levels = (depth,)` (the paper's configuration) the output is
//! read at the bottleneck alone: the decoder is empty and the logits are a 3×3 convolution of
//! the bottleneck features, upsampled by `2^depth`.

use burn::config::Config;
use burn::module::Module;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::BatchNorm;
use burn::nn::BatchNormConfig;
use burn::tensor::activation::relu;
use burn::tensor::{backend::Backend, Tensor};

use crate::checkpoint::KeyMap;
use crate::error::Error;
use crate::monai_blocks::{
    same_padding, ActKind, AdnConfig, AdnOp, Convolution, ConvolutionConfig, NormKind,
    TransposedConvolution,
};

/// How MONAI's `RegUNet` state_dict keys and our burn paths correspond.
///
/// Load rules, applied in order to each MONAI key:
/// - a conv block (`encode_convs.{d}`, `decode_convs.{i}`, `bottom_block`) is
///   `nn.Sequential(Convolution, RegistrationResidualConvBlock)`: `.0.` → `.conv.`,
///   `.1.` → `.residual.`;
/// - `adn.N` (the BatchNorm of a `Convolution`'s ADN block) → `adn.norm`.
///
/// BatchNorm's `weight`/`bias` become `gamma`/`beta` in burn-store's PyTorch adapter;
/// `running_mean`/`running_var` keep their names. `num_batches_tracked` (a training counter
/// burn's BatchNorm does not keep) is ignored at load and not written at save; PyTorch's
/// BatchNorm fills it in (with 0) when `load_state_dict` finds it missing.
pub const KEY_MAP: KeyMap = KeyMap {
    model: "regunet",
    load: &[
        (
            r"^(encode_convs\.\d+|decode_convs\.\d+|bottom_block)\.0\.",
            "${1}.conv.",
        ),
        (
            r"^(encode_convs\.\d+|decode_convs\.\d+|bottom_block)\.1\.",
            "${1}.residual.",
        ),
        (r"\.adn\.N\.", ".adn.norm."),
    ],
    save: &[
        (
            r"^(encode_convs\.\d+|decode_convs\.\d+|bottom_block)\.conv\.",
            "${1}.0.",
        ),
        (
            r"^(encode_convs\.\d+|decode_convs\.\d+|bottom_block)\.residual\.",
            "${1}.1.",
        ),
        (r"\.adn\.norm\.", ".adn.N."),
    ],
    ignored: &[r"\.num_batches_tracked$"],
};

/// Configuration of a [`RegUNet`]: the arguments of MONAI's `RegUNet(spatial_dims=2, ...)`.
///
/// Not ported: `out_kernel_initializer` (initialisation only; load a checkpoint) and
/// `out_activation` (always `None`: the model returns logits).
#[derive(Config, Debug)]
pub struct RegUNetConfig {
    /// Channels of the first level; level `d` has `num_channel_initial · 2^d`.
    pub num_channel_initial: usize,
    /// Number of down-sampling levels (at least 1).
    pub depth: usize,
    /// Input channels.
    #[config(default = 3)]
    pub in_channels: usize,
    /// Output channels (MONAI's default is 3, a displacement field; 1 logit channel here).
    #[config(default = 1)]
    pub out_channels: usize,
    /// Levels the output block reads (0 = full resolution, `depth` = the bottleneck); their
    /// maximum must be `depth`. `None`: `[depth]`, MONAI's default.
    #[config(default = "None")]
    pub extract_levels: Option<Vec<usize>>,
    /// Down-sample by 2×2 max pooling (`true`) or by a strided 2×2 BatchNorm-ReLU convolution.
    #[config(default = true)]
    pub pooling: bool,
    /// Concatenate the skip to the up-sampled features (`true`) or add it.
    #[config(default = false)]
    pub concat_skip: bool,
    /// Kernel of the encoder levels and the bottleneck: one value for all, or `depth + 1`
    /// values; odd.
    #[config(default = "vec![3]")]
    pub encode_kernel_sizes: Vec<usize>,
}

impl RegUNetConfig {
    /// The paper's Table-1 row: `RegUNet(spatial_dims=2, in_channels=3,
    /// num_channel_initial=32, depth=4, out_channels=1)`, 7,863,456 parameters. Inputs:
    /// multiples of 16.
    pub fn paper() -> Self {
        Self::new(32, 4)
    }

    /// A small model for fast tests and the smoke table (`num_channel_initial` 8: 493,608
    /// parameters, same depth, so the same inputs as [`paper`](Self::paper): multiples of 16).
    pub fn smoke() -> Self {
        Self::new(8, 4)
    }

    /// The extracted levels (resolving `None` to `[depth]`).
    pub fn levels(&self) -> Vec<usize> {
        self.extract_levels
            .clone()
            .unwrap_or_else(|| vec![self.depth])
    }

    /// Channels per level, `0..=depth`.
    pub fn num_channels(&self) -> Vec<usize> {
        (0..=self.depth)
            .map(|d| self.num_channel_initial << d)
            .collect()
    }

    /// What the input height and width must be multiples of: `2^depth`.
    pub fn size_multiple(&self) -> usize {
        1 << self.depth
    }

    fn encode_kernel(&self, d: usize) -> usize {
        if self.encode_kernel_sizes.len() == 1 {
            self.encode_kernel_sizes[0]
        } else {
            self.encode_kernel_sizes[d]
        }
    }

    /// Checks every field.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |field, value: String, expected: &str| {
            Err(Error::InvalidConfig {
                model: "regunet",
                field,
                value,
                expected: expected.to_string(),
            })
        };
        if !(1..=16).contains(&self.depth) {
            return bad("depth", self.depth.to_string(), "1 to 16");
        }
        if self.num_channel_initial == 0 {
            return bad("num_channel_initial", "0".into(), "at least 1");
        }
        if self.in_channels == 0 {
            return bad("in_channels", "0".into(), "at least 1");
        }
        if self.out_channels == 0 {
            return bad("out_channels", "0".into(), "at least 1");
        }
        let levels = self.levels();
        if levels.iter().max() != Some(&self.depth) {
            return bad(
                "extract_levels",
                format!("{levels:?}"),
                "levels in 0..=depth whose maximum is depth",
            );
        }
        let n = self.encode_kernel_sizes.len();
        if (n != 1 && n != self.depth + 1)
            || self.encode_kernel_sizes.iter().any(|k| k.is_multiple_of(2))
        {
            return bad(
                "encode_kernel_sizes",
                format!("{:?}", self.encode_kernel_sizes),
                "one or depth + 1 odd kernel sizes",
            );
        }
        Ok(())
    }

    /// Validates the configuration and builds the model with burn's default initialisation
    /// (load a checkpoint for MONAI's weights).
    pub fn init<B: Backend>(&self, device: &B::Device) -> crate::Result<RegUNet<B>> {
        self.validate()?;
        let ch = self.num_channels();
        let depth = self.depth;
        let encode_convs = (0..depth)
            .map(|d| {
                let inc = if d == 0 { self.in_channels } else { ch[d - 1] };
                conv_block(inc, ch[d], self.encode_kernel(d), device)
            })
            .collect();
        let encode_pools = (0..depth)
            .map(|d| DownSample {
                layer: (!self.pooling).then(|| {
                    bn_relu_conv(ch[d], ch[d], 2, 2)
                        .with_padding(0)
                        .init(device)
                }),
                pool: MaxPool2dConfig::new([2, 2]).init(),
            })
            .collect();
        let bottom_block = conv_block(ch[depth - 1], ch[depth], self.encode_kernel(depth), device);
        let levels = self.levels();
        let min_level = *levels.iter().min().unwrap_or(&depth);
        let decoded: Vec<usize> = (min_level..depth).rev().collect();
        let decode_deconvs = decoded
            .iter()
            .map(|&d| {
                bn_relu_conv(ch[d + 1], ch[d], 3, 2)
                    .with_padding(1)
                    .with_output_padding(1)
                    .init_transposed(device)
            })
            .collect();
        let decode_convs = decoded
            .iter()
            .map(|&d| {
                let inc = if self.concat_skip { 2 * ch[d] } else { ch[d] };
                conv_block(inc, ch[d], 3, device)
            })
            .collect();
        let output_block = ExtractionBlock {
            layers: levels
                .iter()
                .map(|&d| {
                    ConvolutionConfig::new(ch[d], self.out_channels, 3, 1)
                        .with_bias(false)
                        .init(device)
                })
                .collect(),
            extract_levels: levels,
        };
        Ok(RegUNet {
            encode_convs,
            encode_pools,
            bottom_block,
            decode_deconvs,
            decode_convs,
            output_block,
            concat_skip: self.concat_skip,
            depth,
        })
    }
}

/// MONAI's `get_conv_block`: convolution (no bias, "same" padding) → BatchNorm → ReLU.
fn bn_relu_conv(inc: usize, outc: usize, kernel: usize, stride: usize) -> ConvolutionConfig {
    ConvolutionConfig::new(inc, outc, kernel, stride)
        .with_bias(false)
        .with_adn(Some(AdnConfig {
            channels: outc,
            ordering: vec![AdnOp::Norm, AdnOp::Dropout, AdnOp::Act],
            norm: Some(NormKind::Batch),
            dropout: None,
            act: Some(ActKind::Relu),
        }))
}

/// RegUNet's `build_conv_block`: a BatchNorm-ReLU convolution, then a residual block.
fn conv_block<B: Backend>(
    inc: usize,
    outc: usize,
    kernel: usize,
    device: &B::Device,
) -> ConvBlock<B> {
    ConvBlock {
        conv: bn_relu_conv(inc, outc, kernel, 1).init(device),
        residual: ResidualConvBlock {
            layers: (0..2)
                .map(|_| {
                    ConvolutionConfig::new(outc, outc, kernel, 1)
                        .with_bias(false)
                        .with_padding(same_padding(kernel))
                        .init(device)
                })
                .collect(),
            norms: (0..2)
                .map(|_| BatchNormConfig::new(outc).init(device))
                .collect(),
        },
    }
}

/// MONAI's RegUNet.
///
/// # Training and inference
/// The BatchNorms use batch statistics (and update their running statistics) under an
/// autodiff backend, the running statistics otherwise: see [`crate::monai_blocks`].
#[derive(Module, Debug)]
pub struct RegUNet<B: Backend> {
    /// One conv block per level, `0..depth`.
    pub encode_convs: Vec<ConvBlock<B>>,
    /// One down-sampling per level.
    pub encode_pools: Vec<DownSample<B>>,
    /// The bottleneck conv block (level `depth`).
    pub bottom_block: ConvBlock<B>,
    /// Transposed convolutions, from the bottleneck up to the lowest extracted level.
    pub decode_deconvs: Vec<TransposedConvolution<B>>,
    /// Conv blocks after each up-sampling and skip.
    pub decode_convs: Vec<ConvBlock<B>>,
    /// Output convolutions of the extracted levels.
    pub output_block: ExtractionBlock<B>,
    /// Skips are concatenated (else added).
    #[module(skip)]
    pub concat_skip: bool,
    /// Levels of down-sampling.
    #[module(skip)]
    pub depth: usize,
}

/// Activations of [`RegUNet::forward_features`].
#[derive(Debug, Clone)]
pub struct RegUNetFeatures<B: Backend> {
    /// Output of each encoder conv block (the skips), level 0 first:
    /// `[n, c·2^d, h / 2^d, w / 2^d]`.
    pub encode: Vec<Tensor<B, 4>>,
    /// Output of the bottleneck block: `[n, c·2^depth, h / 2^depth, w / 2^depth]`.
    pub bottom: Tensor<B, 4>,
    /// Output of each decoder conv block, deepest first.
    pub decode: Vec<Tensor<B, 4>>,
    /// `[n, out_channels, h, w]`.
    pub logits: Tensor<B, 4>,
}

impl<B: Backend> RegUNet<B> {
    /// Logits of the images.
    ///
    /// # Shapes
    /// `images: [n, in_channels, h, w]` → `[n, out_channels, h, w]`; `h` and `w` multiples of
    /// `2^depth` (16 for the presets).
    ///
    /// # Panics
    /// If `h` or `w` is not such a multiple (MONAI raises `ValueError` in the down-sampling).
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 4> {
        self.forward_features(images).logits
    }

    /// [`forward`](Self::forward), also returning the encoder, bottleneck and decoder
    /// activations (tensors are shared, not copied).
    ///
    /// # Panics
    /// As [`forward`](Self::forward).
    pub fn forward_features(&self, images: Tensor<B, 4>) -> RegUNetFeatures<B> {
        let [_, _, h, w] = images.dims();
        let m = 1 << self.depth;
        assert!(
            h > 0 && w > 0 && h.is_multiple_of(m) && w.is_multiple_of(m),
            "RegUNet input {h}×{w}: height and width must be positive multiples of {m}"
        );
        let mut encode = Vec::with_capacity(self.depth);
        let mut x = images;
        for (conv, pool) in self.encode_convs.iter().zip(&self.encode_pools) {
            let skip = conv.forward(x); // [n, c_d, h_d, w_d]
            x = pool.forward(skip.clone()); // [n, c_d, h_d / 2, w_d / 2]
            encode.push(skip);
        }
        let bottom = self.bottom_block.forward(x);
        // `outs[k]` is level `depth − k`.
        let mut outs = vec![bottom.clone()];
        let mut decoded = bottom.clone();
        for (i, (deconv, conv)) in self
            .decode_deconvs
            .iter()
            .zip(&self.decode_convs)
            .enumerate()
        {
            let up = deconv.forward(decoded); // [n, c_d, 2·h_{d+1}, 2·w_{d+1}]
            let skip = encode[self.depth - 1 - i].clone();
            let joined = if self.concat_skip {
                Tensor::cat(vec![up, skip], 1)
            } else {
                up + skip
            };
            decoded = conv.forward(joined);
            outs.push(decoded.clone());
        }
        let logits = self.output_block.forward(&outs, self.depth, [h, w]);
        RegUNetFeatures {
            encode,
            bottom,
            decode: outs[1..].to_vec(),
            logits,
        }
    }
}

/// `nn.Sequential(Convolution, RegistrationResidualConvBlock)` (MONAI `0`, `1`).
#[derive(Module, Debug)]
pub struct ConvBlock<B: Backend> {
    /// Convolution → BatchNorm → ReLU (MONAI `0`).
    pub conv: Convolution<B>,
    /// The residual block (MONAI `1`).
    pub residual: ResidualConvBlock<B>,
}

impl<B: Backend> ConvBlock<B> {
    /// # Shapes
    /// `x: [n, in, h, w]` → `[n, out, h, w]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.residual.forward(self.conv.forward(x))
    }
}

/// MONAI's `RegistrationResidualConvBlock` with two layers: conv → BN → ReLU → conv → BN →
/// (+ input) → ReLU.
#[derive(Module, Debug)]
pub struct ResidualConvBlock<B: Backend> {
    /// Bias-free convolutions (`conv_only`).
    pub layers: Vec<Convolution<B>>,
    /// One BatchNorm after each convolution.
    pub norms: Vec<BatchNorm<B>>,
}

impl<B: Backend> ResidualConvBlock<B> {
    /// # Shapes
    /// `x: [n, c, h, w]` → same.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let skip = x.clone();
        let last = self.layers.len() - 1;
        let mut x = x;
        for (i, (conv, norm)) in self.layers.iter().zip(&self.norms).enumerate() {
            x = norm.forward(conv.forward(x));
            if i == last {
                x = x + skip.clone();
            }
            x = relu(x);
        }
        x
    }
}

/// MONAI's `RegistrationDownSampleBlock`: 2×2 max pooling, or a strided convolution block.
#[derive(Module, Debug)]
pub struct DownSample<B: Backend> {
    /// The 2×2 stride-2 BatchNorm-ReLU convolution when `pooling=False` (MONAI `layer`).
    pub layer: Option<Convolution<B>>,
    /// The max pooling used otherwise (no tensors).
    pub pool: MaxPool2d,
}

impl<B: Backend> DownSample<B> {
    /// # Shapes
    /// `x: [n, c, h, w]` → `[n, c, h / 2, w / 2]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match &self.layer {
            Some(conv) => conv.forward(x),
            None => self.pool.forward(x),
        }
    }
}

/// MONAI's `RegistrationExtractionBlock`: per extracted level a bias-free 3×3 convolution to
/// the output channels, nearest up-sampling to the input size, and the mean over the levels.
#[derive(Module, Debug)]
pub struct ExtractionBlock<B: Backend> {
    /// One convolution per extracted level, in `extract_levels` order.
    pub layers: Vec<Convolution<B>>,
    /// The levels.
    #[module(skip)]
    pub extract_levels: Vec<usize>,
}

impl<B: Backend> ExtractionBlock<B> {
    /// `outs[k]` holds level `max_level − k`.
    ///
    /// # Shapes
    /// `outs[k]: [n, c_l, h / 2^l, w / 2^l]` → `[n, out, h, w]`.
    pub fn forward(
        &self,
        outs: &[Tensor<B, 4>],
        max_level: usize,
        [h, w]: [usize; 2],
    ) -> Tensor<B, 4> {
        let count = self.layers.len() as f64;
        let sum = self
            .layers
            .iter()
            .zip(&self.extract_levels)
            .map(|(layer, &level)| {
                let y = layer.forward(outs[max_level - level].clone());
                upsample_nearest(y, [h, w])
            })
            .reduce(|a, b| a + b)
            .expect("at least one extracted level");
        sum / count
    }
}

/// `F.interpolate(x, size=[h, w], mode="nearest")` for integer factors: each value repeated
/// `h / h_in` × `w / w_in` times (what PyTorch's `floor(dst · in / out)` indexing gives there).
///
/// # Shapes
/// `x: [n, c, h_in, w_in]` → `[n, c, h, w]`; `h_in` divides `h`, `w_in` divides `w`.
fn upsample_nearest<B: Backend>(x: Tensor<B, 4>, [h, w]: [usize; 2]) -> Tensor<B, 4> {
    let [n, c, hi, wi] = x.dims();
    if [hi, wi] == [h, w] {
        return x;
    }
    let (fh, fw) = (h / hi, w / wi);
    x.reshape([n, c, hi, 1, wi, 1])
        .expand([n, c, hi, fh, wi, fw]) // [n, c, hi, fh, wi, fw]
        .reshape([n, c, h, w])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::module::AutodiffModule;
    use burn::tensor::{Distribution, TensorData};

    type TestBackend = burn::backend::NdArray<f32>;
    type TestAutodiffBackend = Autodiff<TestBackend>;

    /// `sum(p.numel() for p in RegUNet(...).parameters())` printed by MONAI 1.6.1.
    const PAPER_PARAMS: usize = 7_863_456;
    /// The paper model's BatchNorm running means and variances (MONAI's float buffers), which
    /// burn's `num_params` counts too.
    const PAPER_RUNNING_STATS: usize = 5_952;
    /// The same two numbers for `smoke()`.
    const SMOKE_PARAMS: usize = 493_608;
    const SMOKE_RUNNING_STATS: usize = 1_488;

    #[test]
    fn paper_parameter_count_matches_monai() {
        let model = RegUNetConfig::paper()
            .init::<TestBackend>(&Default::default())
            .unwrap();
        assert_eq!(model.num_params(), PAPER_PARAMS + PAPER_RUNNING_STATS);
    }

    #[test]
    fn smoke_parameter_count_matches_monai() {
        let model = RegUNetConfig::smoke()
            .init::<TestBackend>(&Default::default())
            .unwrap();
        assert_eq!(model.num_params(), SMOKE_PARAMS + SMOKE_RUNNING_STATS);
    }

    #[test]
    fn smoke_takes_64_by_48() {
        let device = Default::default();
        let model = RegUNetConfig::smoke().init::<TestBackend>(&device).unwrap();
        let x = Tensor::random([1, 3, 64, 48], Distribution::Normal(0.0, 1.0), &device);
        let f = model.forward_features(x);
        assert_eq!(f.logits.dims(), [1, 1, 64, 48]);
        assert_eq!(f.bottom.dims(), [1, 128, 4, 3]);
        assert!(f.decode.is_empty(), "the default reads the bottleneck only");
    }

    #[test]
    #[should_panic(expected = "must be positive multiples of 16")]
    fn rejects_sizes_that_are_not_multiples_of_two_to_the_depth() {
        let device = Default::default();
        let model = RegUNetConfig::smoke().init::<TestBackend>(&device).unwrap();
        model.forward(Tensor::zeros([1, 3, 40, 64], &device));
    }

    #[test]
    fn nearest_upsampling_repeats_values() {
        let device = Default::default();
        let x = Tensor::<TestBackend, 4>::from_data(
            TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [1, 1, 2, 3]),
            &device,
        );
        let y = upsample_nearest(x, [4, 6])
            .into_data()
            .into_vec::<f32>()
            .unwrap();
        let row = |a: f32, b: f32, c: f32| [a, a, b, b, c, c];
        let want: Vec<f32> = [
            row(1., 2., 3.),
            row(1., 2., 3.),
            row(4., 5., 6.),
            row(4., 5., 6.),
        ]
        .concat();
        assert_eq!(y, want);
    }

    #[test]
    fn invalid_configs_are_typed_errors() {
        let device = Default::default();
        let cases = [
            (RegUNetConfig::new(4, 0), "depth"),
            (RegUNetConfig::new(0, 2), "num_channel_initial"),
            (
                RegUNetConfig::new(4, 3).with_extract_levels(Some(vec![0, 2])),
                "extract_levels",
            ),
            (
                RegUNetConfig::new(4, 3).with_encode_kernel_sizes(vec![3, 3]),
                "encode_kernel_sizes",
            ),
            (
                RegUNetConfig::new(4, 3).with_encode_kernel_sizes(vec![4]),
                "encode_kernel_sizes",
            ),
        ];
        for (cfg, want) in cases {
            match cfg.init::<TestBackend>(&device) {
                Err(Error::InvalidConfig { field, .. }) => assert_eq!(field, want),
                other => panic!(
                    "{want}: expected InvalidConfig, got {:?}",
                    other.map(|_| ())
                ),
            }
        }
    }

    #[test]
    fn batch_norm_trains_on_batch_statistics_under_autodiff() {
        let device = Default::default();
        let model = RegUNetConfig::new(4, 2)
            .with_extract_levels(Some(vec![0, 1, 2]))
            .init::<TestAutodiffBackend>(&device)
            .unwrap();
        let x = Tensor::random([2, 3, 16, 16], Distribution::Normal(0.0, 1.0), &device);
        let before = model.encode_convs[0].residual.norms[0].running_mean.value();
        let y = model.forward(x.clone());
        assert_eq!(y.dims(), [2, 1, 16, 16]);
        let grads = y.powf_scalar(2.0).mean().backward();
        let w = &model.encode_convs[0].conv.conv.weight;
        assert!(w.grad(&grads).unwrap().abs().sum().into_scalar() > 0.0);
        // Training updated the running statistics; inference uses them and leaves them alone.
        let after = model.encode_convs[0].residual.norms[0]
            .running_mean
            .value_sync();
        assert!((after.clone() - before).abs().sum().into_scalar() > 0.0);
        let valid = model.valid();
        valid.forward(x.inner());
        let still = valid.encode_convs[0].residual.norms[0]
            .running_mean
            .value_sync();
        assert_eq!(
            still.into_data().into_vec::<f32>().unwrap(),
            after.inner().into_data().into_vec::<f32>().unwrap()
        );
    }
}
