//! Layers shared by the smp-style baselines (DeepLabV3+, Segformer) and SegNet: convolution,
//! BatchNorm and ReLU in a block, the depthwise-separable convolution, PyTorch-exact bilinear
//! resizing and stochastic depth.
//!
//! # Training and inference
//! burn has no `train()` / `eval()` switch: [`BatchNorm`], [`burn::nn::Dropout`] and [`drop_path`]
//! follow `B::ad_enabled()`. Under an `Autodiff` backend they behave as PyTorch's `train()`
//! (batch statistics, running statistics updated, random masks); on a plain backend (or
//! `model.valid()`) as `eval()`. One deviation in training: burn updates `running_var` with the
//! biased batch variance where PyTorch uses the unbiased one (the forward output is the same).

use crate::fast::FastConv;
use burn::config::Config;
use burn::module::{Initializer, Module};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{backend::Backend, Distribution, Tensor, TensorData};

/// PyTorch's `kaiming_uniform_(mode="fan_in", nonlinearity="relu")` (smp's decoder init).
pub(crate) const KAIMING_UNIFORM_RELU: Initializer = Initializer::KaimingUniform {
    gain: std::f64::consts::SQRT_2,
    fan_out_only: false,
};

/// PyTorch's `kaiming_normal_(mode="fan_out", nonlinearity="relu")` (torchvision's ResNet and
/// VGG init).
pub(crate) const KAIMING_NORMAL_FAN_OUT: Initializer = Initializer::KaimingNormal {
    gain: std::f64::consts::SQRT_2,
    fan_out_only: true,
};

/// PyTorch's `xavier_uniform_` (smp's head init).
pub(crate) const XAVIER_UNIFORM: Initializer = Initializer::XavierUniform { gain: 1.0 };

/// A square `k × k` convolution with symmetric padding (`Conv2dConfig` in PyTorch's terms).
#[derive(Debug, Clone)]
pub(crate) struct ConvSpec {
    pub channels: [usize; 2],
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    pub groups: usize,
    pub bias: bool,
    pub initializer: Initializer,
}

impl ConvSpec {
    /// Stride 1, no padding, no dilation, one group, no bias.
    pub fn new(channels: [usize; 2], kernel: usize, initializer: Initializer) -> Self {
        Self {
            channels,
            kernel,
            stride: 1,
            padding: 0,
            dilation: 1,
            groups: 1,
            bias: false,
            initializer,
        }
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> Conv2d<B> {
        let (k, s, p, d) = (self.kernel, self.stride, self.padding, self.dilation);
        Conv2dConfig::new(self.channels, [k, k])
            .with_stride([s, s])
            .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
            .with_dilation([d, d])
            .with_groups(self.groups)
            .with_bias(self.bias)
            .with_initializer(self.initializer.clone())
            .init(device)
    }
}

/// Configuration of a [`ConvBnRelu`].
#[derive(Config, Debug)]
pub struct ConvBnReluConfig {
    /// `[in, out]` channels.
    pub channels: [usize; 2],
    /// Square kernel side.
    pub kernel_size: usize,
    /// Symmetric zero padding.
    #[config(default = 0)]
    pub padding: usize,
    /// Dilation.
    #[config(default = 1)]
    pub dilation: usize,
    /// Bias in the convolution (false when the BatchNorm follows, as in smp).
    #[config(default = false)]
    pub bias: bool,
    /// Weight initialisation of the convolution.
    #[config(default = "KAIMING_UNIFORM_RELU")]
    pub initializer: Initializer,
}

impl ConvBnReluConfig {
    /// Builds the block; BatchNorm starts at weight 1, bias 0 as in PyTorch.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ConvBnRelu<B> {
        ConvBnRelu {
            conv: ConvSpec {
                padding: self.padding,
                dilation: self.dilation,
                bias: self.bias,
                ..ConvSpec::new(self.channels, self.kernel_size, self.initializer.clone())
            }
            .init(device),
            bn: BatchNormConfig::new(self.channels[1]).init(device),
        }
    }
}

/// `nn.Sequential(Conv2d, BatchNorm2d, ReLU)`: PyTorch keys `X.0.*` (conv) and `X.1.*` (bn); the
/// model's key map renames them to `X.conv.*`, `X.bn.*`.
#[derive(Module, Debug)]
pub struct ConvBnRelu<B: Backend> {
    /// `X.0`.
    pub conv: Conv2d<B>,
    /// `X.1`.
    pub bn: BatchNorm<B>,
}

impl<B: Backend> ConvBnRelu<B> {
    /// # Shapes
    /// `[n, in, h, w]` → `[n, out, h', w']` (same size for `padding = dilation·(k-1)/2`).
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        relu(self.bn.forward(self.conv.fast(x)))
    }
}

/// smp's `SeparableConv2d`: a depthwise `k × k` convolution (`groups = in`, no bias) then a 1×1
/// pointwise one. PyTorch keys `X.0.weight` (depthwise), `X.1.weight` (pointwise).
#[derive(Module, Debug)]
pub struct SeparableConv2d<B: Backend> {
    /// `X.0`: `[in, 1, k, k]`.
    pub depthwise: Conv2d<B>,
    /// `X.1`: `[out, in, 1, 1]`.
    pub pointwise: Conv2d<B>,
}

impl<B: Backend> SeparableConv2d<B> {
    /// A depthwise-separable `3 × 3` convolution with `padding = dilation` (size preserving).
    pub(crate) fn new_3x3(
        channels: [usize; 2],
        dilation: usize,
        bias: bool,
        device: &B::Device,
    ) -> Self {
        let [cin, cout] = channels;
        Self {
            depthwise: ConvSpec {
                padding: dilation,
                dilation,
                groups: cin,
                ..ConvSpec::new([cin, cin], 3, KAIMING_UNIFORM_RELU)
            }
            .init(device),
            pointwise: ConvSpec {
                bias,
                ..ConvSpec::new([cin, cout], 1, KAIMING_UNIFORM_RELU)
            }
            .init(device),
        }
    }

    /// # Shapes
    /// `[n, in, h, w]` → `[n, out, h, w]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.pointwise.fast(self.depthwise.fast(x))
    }
}

/// Bilinear resize with PyTorch's `F.interpolate(mode="bilinear")` coordinates, built from two
/// interpolation matrices (`A_h · x · A_wᵀ`) so that it is differentiable on every backend
/// (burn-ndarray has no bilinear `interpolate` backward). `align_corners = true` maps corner
/// pixels onto corner pixels (`src = dst · (in-1)/(out-1)`); `false` is the half-pixel mapping
/// `src = max((dst + 0.5) · in/out - 0.5, 0)`, as PyTorch when given `size` or an integer
/// `scale_factor`.
///
/// # Shapes
/// `x: [n, c, h, w]` → `[n, c, size[0], size[1]]`.
pub fn resize_bilinear<B: Backend>(
    x: Tensor<B, 4>,
    size: [usize; 2],
    align_corners: bool,
) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    let [oh, ow] = size;
    if [h, w] == size {
        // Both mappings are the identity at equal sizes (as PyTorch).
        return x;
    }
    let device = x.device();
    // [oh, h] and [w, ow]
    let a_h = Tensor::<B, 2>::from_data(interp_matrix(h, oh, align_corners, false), &device);
    let a_wt = Tensor::<B, 2>::from_data(interp_matrix(w, ow, align_corners, true), &device);
    let x = x
        .reshape([n * c * h, w])
        .matmul(a_wt) // [n·c·h, ow]
        .reshape([n * c, h, ow]);
    let a_h = a_h.unsqueeze_dim::<3>(0).expand([n * c, oh, h]);
    a_h.matmul(x).reshape([n, c, oh, ow]) // [n, c, oh, ow]
}

/// The `[out, in]` matrix (or its transpose) of 1-D linear interpolation from `input` to
/// `output` samples, PyTorch's `upsample_bilinear2d` source indices and weights.
fn interp_matrix(input: usize, output: usize, align_corners: bool, transpose: bool) -> TensorData {
    let mut m = vec![0f32; input * output];
    for dst in 0..output {
        let src = if align_corners {
            if output > 1 {
                dst as f64 * (input as f64 - 1.0) / (output as f64 - 1.0)
            } else {
                0.0
            }
        } else {
            ((dst as f64 + 0.5) * input as f64 / output as f64 - 0.5).max(0.0)
        };
        let i0 = (src.floor() as usize).min(input - 1);
        let i1 = (i0 + 1).min(input - 1);
        let l1 = (src - i0 as f64) as f32;
        let l0 = 1.0 - l1;
        let mut put = |i: usize, v: f32| {
            let at = if transpose {
                i * output + dst
            } else {
                dst * input + i
            };
            m[at] += v;
        };
        put(i0, l0);
        put(i1, l1);
    }
    let shape = if transpose {
        [input, output]
    } else {
        [output, input]
    };
    TensorData::new(m, shape)
}

/// timm's `drop_path` (stochastic depth): in training each sample's residual branch is zeroed
/// with probability `drop_prob` and the survivors scaled by `1 / (1 - drop_prob)`; identity at
/// inference (`!B::ad_enabled()`) and when `drop_prob = 0`.
///
/// # Shapes
/// `x: [n, ...]` → same.
pub fn drop_path<B: Backend, const D: usize>(x: Tensor<B, D>, drop_prob: f64) -> Tensor<B, D> {
    if drop_prob == 0.0 || !B::ad_enabled(&x.device()) {
        return x;
    }
    let keep = 1.0 - drop_prob;
    let mut shape = [1; D];
    shape[0] = x.dims()[0];
    let mask = Tensor::<B, D>::random(shape, Distribution::Bernoulli(keep), &x.device());
    x * (mask / keep)
}

/// smp's `SegmentationHead`: a convolution, then bilinear upsampling with `align_corners=True`
/// (identity activation).
#[derive(Module, Debug)]
pub struct SegmentationHead<B: Backend> {
    /// `segmentation_head.0`.
    pub conv: Conv2d<B>,
    /// Upsampling factor (1: none).
    pub upsampling: usize,
}

impl<B: Backend> SegmentationHead<B> {
    /// # Shapes
    /// `[n, c, h, w]` → `[n, classes, h·upsampling, w·upsampling]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = self.conv.fast(x);
        if self.upsampling > 1 {
            let [_, _, h, w] = x.dims();
            resize_bilinear(x, [h * self.upsampling, w * self.upsampling], true)
        } else {
            x
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::module::interpolate;
    use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

    type TestBackend = burn::backend::NdArray<f32>;

    /// Our matrices against burn's own (forward-only) bilinear kernel: equal up to rounding.
    const TOL_RESIZE: f32 = 1e-5;

    fn ramp(shape: [usize; 4]) -> Tensor<TestBackend, 4> {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|i| ((i * 37) % 11) as f32 - 5.0).collect();
        Tensor::from_data(TensorData::new(v, shape), &Default::default())
    }

    #[test]
    fn resize_matches_burn_interpolate_both_alignments() {
        for (input, size) in [([1, 2, 3, 5], [12, 20]), ([2, 1, 4, 4], [16, 7])] {
            let x = ramp(input);
            for align in [true, false] {
                let ours = resize_bilinear(x.clone(), size, align);
                let opts =
                    InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(align);
                let burn = interpolate(x.clone(), size, opts);
                let diff = (ours - burn).abs().max().into_scalar();
                assert!(diff <= TOL_RESIZE, "align {align} {size:?}: {diff}");
            }
        }
    }

    /// Hand-computed: 2 → 4 samples of `[0, 1]`.
    #[test]
    fn resize_hand_values() {
        let x = Tensor::<TestBackend, 4>::from_data(
            TensorData::new(vec![0f32, 1.0], [1, 1, 1, 2]),
            &Default::default(),
        );
        let corners = resize_bilinear(x.clone(), [1, 4], true).into_data();
        let third = 1.0 / 3.0;
        corners.assert_approx_eq::<f32>(
            &TensorData::new(vec![0.0, third, 2.0 * third, 1.0], [1, 1, 1, 4]),
            burn::tensor::Tolerance::absolute(TOL_RESIZE),
        );
        // Half-pixel: src = (dst + 0.5) / 2 - 0.5 = -0.25 (clamped), 0.25, 0.75, 1.25 (clamped).
        let half = resize_bilinear(x, [1, 4], false).into_data();
        half.assert_approx_eq::<f32>(
            &TensorData::new(vec![0.0, 0.25, 0.75, 1.0], [1, 1, 1, 4]),
            burn::tensor::Tolerance::absolute(TOL_RESIZE),
        );
    }

    #[test]
    fn resize_is_differentiable_under_autodiff() {
        type Ad = burn::backend::Autodiff<TestBackend>;
        let x = Tensor::<Ad, 4>::ones([1, 1, 2, 2], &Default::default()).require_grad();
        let y = resize_bilinear(x.clone(), [8, 8], false).sum();
        let grads = y.backward();
        let g = x.grad(&grads).unwrap().sum().into_scalar();
        // Each output pixel's weights sum to 1: the gradient sums to the 64 outputs.
        assert!((g - 64.0).abs() <= TOL_RESIZE * 64.0, "{g}");
    }

    #[test]
    fn drop_path_is_identity_at_inference() {
        let x = ramp([4, 2, 3, 3]);
        let y = drop_path(x.clone(), 0.5);
        assert_eq!(x.into_data(), y.into_data());
    }

    #[test]
    fn drop_path_drops_whole_samples_in_training() {
        type Ad = burn::backend::Autodiff<TestBackend>;
        let x = Tensor::<Ad, 3>::ones([256, 2, 3], &Default::default());
        let y = drop_path(x, 0.5).into_data().into_vec::<f32>().unwrap();
        // Every sample is all 0 or all 2 (= 1 / keep), and both occur.
        let per_sample: Vec<f32> = y.chunks(6).map(|c| c[0]).collect();
        for (chunk, first) in y.chunks(6).zip(&per_sample) {
            assert!(chunk.iter().all(|v| v == first) && (*first == 0.0 || *first == 2.0));
        }
        assert!(per_sample.contains(&0.0) && per_sample.contains(&2.0));
    }
}
