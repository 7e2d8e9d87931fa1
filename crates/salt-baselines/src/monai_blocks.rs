//! MONAI's building blocks shared by the U-Net family: `Convolution` (a convolution followed by
//! an `ADN` block of norm / dropout / activation), its transposed form, and `ResidualUnit`.
//!
//! Field names are MONAI's attribute names where Rust allows them; the rest (`ADN`'s one-letter
//! `N`/`A` children, `ResidualUnit`'s `unit{i}` names, PReLU's `weight`) are translated by each
//! model's `KEY_MAP`.
//!
//! # Training and inference
//! As in PyTorch's `train()` / `eval()`, which burn expresses through the backend: under an
//! autodiff backend (`B::ad_enabled()`), [`Dropout`] is active and BatchNorm normalises with the
//! batch statistics and updates its running statistics; on a plain backend (or after
//! `model.valid()`) dropout is the identity and BatchNorm uses the running statistics. Instance
//! norm (MONAI's default, `affine=False`, `track_running_stats=False`) always normalises with the
//! statistics of each sample and channel, in both modes, exactly as PyTorch does.
//!
//! One difference in training only: burn's BatchNorm updates `running_var` with the biased batch
//! variance, PyTorch with the unbiased one (a factor `n / (n − 1)`, `n` = batch × H × W values
//! per channel: below 1e-5 relative at 512×512). Forward outputs are unaffected.

use crate::fast::FastConv;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{
    BatchNorm, BatchNormConfig, Dropout, DropoutConfig, InstanceNorm, InstanceNormConfig, PRelu,
    PReluConfig, PaddingConfig2d,
};
use burn::tensor::activation::relu;
use burn::tensor::{backend::Backend, Tensor};

/// One of the three operations of an [`Adn`] block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdnOp {
    /// `N`: normalisation.
    Norm,
    /// `D`: dropout.
    Dropout,
    /// `A`: activation.
    Act,
}

impl AdnOp {
    /// Parses MONAI's `adn_ordering` (e.g. `"NDA"`): each of `N`, `D`, `A` at most once, any
    /// case. `None` if the string has another letter or a repeated one.
    pub fn parse_ordering(ordering: &str) -> Option<Vec<AdnOp>> {
        let mut ops = Vec::new();
        for c in ordering.chars() {
            let op = match c.to_ascii_uppercase() {
                'N' => AdnOp::Norm,
                'D' => AdnOp::Dropout,
                'A' => AdnOp::Act,
                _ => return None,
            };
            if ops.contains(&op) {
                return None;
            }
            ops.push(op);
        }
        Some(ops)
    }
}

/// The normalisation of an [`Adn`] block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormKind {
    /// `nn.InstanceNorm2d(c)` (`affine=False`): no tensors.
    Instance,
    /// `nn.BatchNorm2d(c)`: weight, bias, running mean and variance.
    Batch,
}

/// The activation of an [`Adn`] block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActKind {
    /// `nn.PReLU()`: one learned slope shared by all channels.
    PRelu,
    /// `nn.ReLU()`.
    Relu,
}

/// Configuration of an [`Adn`] block (built by [`ConvolutionConfig`]).
#[derive(Debug, Clone)]
pub struct AdnConfig {
    /// Channels.
    pub channels: usize,
    /// Operation order (MONAI's `adn_ordering`); an operation absent here is not applied.
    pub ordering: Vec<AdnOp>,
    /// `N`, if any.
    pub norm: Option<NormKind>,
    /// `D`'s probability, if there is a dropout layer (MONAI's UNet always has one, `p = 0` by
    /// default).
    pub dropout: Option<f64>,
    /// `A`, if any.
    pub act: Option<ActKind>,
}

impl AdnConfig {
    /// Builds the block with PyTorch's initial values (PReLU slope 0.25, BatchNorm identity).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Adn<B> {
        let norm = self.norm;
        Adn {
            norm: (norm == Some(NormKind::Batch))
                .then(|| BatchNormConfig::new(self.channels).init(device)),
            instance_norm: (norm == Some(NormKind::Instance)).then(|| {
                InstanceNormConfig::new(self.channels)
                    .with_affine(false)
                    .init(device)
            }),
            dropout: self.dropout.map(|p| DropoutConfig::new(p).init()),
            act: (self.act == Some(ActKind::PRelu)).then(|| PReluConfig::new().init(device)),
            relu: self.act == Some(ActKind::Relu),
            ordering: self.ordering.clone(),
        }
    }
}

/// MONAI's `ADN`: normalisation, dropout and activation in a configurable order.
///
/// PyTorch names the children `N`, `D`, `A`; the key maps translate `adn.N.*` ↔ `adn.norm.*` and
/// `adn.A.weight` ↔ `adn.act.alpha`.
#[derive(Module, Debug)]
pub struct Adn<B: Backend> {
    /// `N` when it is a BatchNorm (the only norm here with tensors).
    pub norm: Option<BatchNorm<B>>,
    /// `N` when it is an instance norm (no tensors).
    pub instance_norm: Option<InstanceNorm<B>>,
    /// `D`.
    pub dropout: Option<Dropout>,
    /// `A` when it is a PReLU.
    pub act: Option<PRelu<B>>,
    /// `A` is a ReLU.
    #[module(skip)]
    pub relu: bool,
    /// The order of the operations.
    #[module(skip)]
    pub ordering: Vec<AdnOp>,
}

impl<B: Backend> Adn<B> {
    /// # Shapes
    /// `x: [n, c, h, w]` → same.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.ordering.iter().fold(x, |x, op| match op {
            AdnOp::Norm => match (&self.norm, &self.instance_norm) {
                (Some(bn), _) => bn.forward(x),
                (None, Some(inorm)) => inorm.forward(x),
                (None, None) => x,
            },
            AdnOp::Dropout => match &self.dropout {
                Some(d) => d.forward(x),
                None => x,
            },
            AdnOp::Act => match &self.act {
                Some(prelu) => prelu.forward(x),
                None if self.relu => relu(x),
                None => x,
            },
        })
    }
}

/// Configuration of a [`Convolution`] or [`TransposedConvolution`] (MONAI's `Convolution`).
#[derive(Debug, Clone)]
pub struct ConvolutionConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Square kernel side.
    pub kernel_size: usize,
    /// Stride.
    pub stride: usize,
    /// Symmetric zero padding.
    pub padding: usize,
    /// Extra rows / columns on the bottom / right of a transposed convolution's output
    /// (`output_padding`).
    pub output_padding: usize,
    /// Bias in the convolution.
    pub bias: bool,
    /// The ADN block, or `None` for `conv_only=True`.
    pub adn: Option<AdnConfig>,
}

impl ConvolutionConfig {
    /// A plain convolution with MONAI's "same" padding `(k − 1) / 2`, no ADN, with bias.
    pub fn new(in_channels: usize, out_channels: usize, kernel_size: usize, stride: usize) -> Self {
        Self {
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding: same_padding(kernel_size),
            output_padding: 0,
            bias: true,
            adn: None,
        }
    }

    /// With (`true`) or without a bias.
    pub fn with_bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    /// With this padding.
    pub fn with_padding(mut self, padding: usize) -> Self {
        self.padding = padding;
        self
    }

    /// With this output padding (transposed convolutions).
    pub fn with_output_padding(mut self, output_padding: usize) -> Self {
        self.output_padding = output_padding;
        self
    }

    /// Followed by this ADN block.
    pub fn with_adn(mut self, adn: Option<AdnConfig>) -> Self {
        self.adn = adn;
        self
    }

    /// A convolution (`is_transposed=False`).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Convolution<B> {
        let (k, s, p) = (self.kernel_size, self.stride, self.padding);
        Convolution {
            conv: Conv2dConfig::new([self.in_channels, self.out_channels], [k, k])
                .with_stride([s, s])
                .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
                .with_bias(self.bias)
                .init(device),
            adn: self.adn.as_ref().map(|a| a.init(device)),
        }
    }

    /// A transposed convolution (`is_transposed=True`).
    pub fn init_transposed<B: Backend>(&self, device: &B::Device) -> TransposedConvolution<B> {
        let (k, s, p, op) = (
            self.kernel_size,
            self.stride,
            self.padding,
            self.output_padding,
        );
        TransposedConvolution {
            conv: ConvTranspose2dConfig::new([self.in_channels, self.out_channels], [k, k])
                .with_stride([s, s])
                .with_padding([p, p])
                .with_padding_out([op, op])
                .with_bias(self.bias)
                .init(device),
            adn: self.adn.as_ref().map(|a| a.init(device)),
        }
    }
}

/// MONAI's `same_padding(k)` for dilation 1: `(k − 1) / 2`.
pub fn same_padding(kernel_size: usize) -> usize {
    (kernel_size.max(1) - 1) / 2
}

/// MONAI's `Convolution` (not transposed): `conv`, then the optional `adn`.
#[derive(Module, Debug)]
pub struct Convolution<B: Backend> {
    /// The convolution.
    pub conv: Conv2d<B>,
    /// Norm / dropout / activation; `None` when `conv_only`.
    pub adn: Option<Adn<B>>,
}

impl<B: Backend> Convolution<B> {
    /// # Shapes
    /// `x: [n, in, h, w]` → `[n, out, h', w']`, `h' = ⌊(h + 2p − k) / s⌋ + 1`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = self.conv.fast(x);
        match &self.adn {
            Some(adn) => adn.forward(x),
            None => x,
        }
    }
}

/// MONAI's `Convolution(is_transposed=True)`: a transposed convolution, then the optional `adn`.
#[derive(Module, Debug)]
pub struct TransposedConvolution<B: Backend> {
    /// The transposed convolution (weight `[in, out, k, k]`, as PyTorch).
    pub conv: ConvTranspose2d<B>,
    /// Norm / dropout / activation; `None` when `conv_only`.
    pub adn: Option<Adn<B>>,
}

impl<B: Backend> TransposedConvolution<B> {
    /// # Shapes
    /// `x: [n, in, h, w]` → `[n, out, (h − 1)·s − 2p + k + op, …]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = self.conv.fast(x);
        match &self.adn {
            Some(adn) => adn.forward(x),
            None => x,
        }
    }
}

/// Configuration of a [`ResidualUnit`] (MONAI's `ResidualUnit`, 2-D).
#[derive(Debug, Clone)]
pub struct ResidualUnitConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Stride of the first unit (and of the residual path).
    pub stride: usize,
    /// Square kernel side (odd).
    pub kernel_size: usize,
    /// Number of `Convolution`s (at least 1).
    pub subunits: usize,
    /// Bias in every convolution.
    pub bias: bool,
    /// The ADN block of every unit.
    pub adn: AdnConfig,
    /// The last unit is a bare convolution (`last_conv_only`).
    pub last_conv_only: bool,
}

impl ResidualUnitConfig {
    /// Builds the unit: the residual path is a convolution when the stride is not 1 (same
    /// kernel and padding as the units) or the channels change (1×1, no padding), else the
    /// identity.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ResidualUnit<B> {
        let subunits = self.subunits.max(1);
        let conv = (0..subunits)
            .map(|su| {
                let conv_only = self.last_conv_only && su == subunits - 1;
                let mut adn = self.adn.clone();
                adn.channels = self.out_channels;
                ConvolutionConfig::new(
                    if su == 0 {
                        self.in_channels
                    } else {
                        self.out_channels
                    },
                    self.out_channels,
                    self.kernel_size,
                    if su == 0 { self.stride } else { 1 },
                )
                .with_bias(self.bias)
                .with_adn((!conv_only).then_some(adn))
                .init(device)
            })
            .collect();
        let residual = (self.stride != 1 || self.in_channels != self.out_channels).then(|| {
            let (k, p) = if self.stride == 1 {
                (1, 0)
            } else {
                (self.kernel_size, same_padding(self.kernel_size))
            };
            ConvolutionConfig::new(self.in_channels, self.out_channels, k, self.stride)
                .with_padding(p)
                .with_bias(self.bias)
                .init::<B>(device)
                .conv
        });
        ResidualUnit { conv, residual }
    }
}

/// MONAI's `ResidualUnit`: `conv(x) + residual(x)`, `conv` a sequence of `Convolution`s.
///
/// PyTorch names the units `conv.unit0`, `conv.unit1`, …; burn's `Vec` gives `conv.0`, … (key map).
#[derive(Module, Debug)]
pub struct ResidualUnit<B: Backend> {
    /// The units, the first one strided.
    pub conv: Vec<Convolution<B>>,
    /// The residual convolution; `None` is the identity.
    pub residual: Option<Conv2d<B>>,
}

impl<B: Backend> ResidualUnit<B> {
    /// # Shapes
    /// `x: [n, in, h, w]` → `[n, out, ⌈h / s⌉, ⌈w / s⌉]` (odd kernels, "same" padding).
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let res = match &self.residual {
            Some(conv) => conv.fast(x.clone()),
            None => x.clone(),
        };
        self.conv.iter().fold(x, |x, unit| unit.forward(x)) + res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestBackend = burn::backend::NdArray<f32>;

    #[test]
    fn ordering_parses_monai_strings() {
        assert_eq!(
            AdnOp::parse_ordering("NDA"),
            Some(vec![AdnOp::Norm, AdnOp::Dropout, AdnOp::Act])
        );
        assert_eq!(
            AdnOp::parse_ordering("an"),
            Some(vec![AdnOp::Act, AdnOp::Norm])
        );
        assert_eq!(AdnOp::parse_ordering("NNA"), None);
        assert_eq!(AdnOp::parse_ordering("NXA"), None);
    }

    #[test]
    fn residual_unit_shapes_and_residual_path() {
        let device = Default::default();
        let adn = AdnConfig {
            channels: 0,
            ordering: vec![AdnOp::Norm, AdnOp::Dropout, AdnOp::Act],
            norm: Some(NormKind::Instance),
            dropout: Some(0.0),
            act: Some(ActKind::PRelu),
        };
        let cfg = ResidualUnitConfig {
            in_channels: 3,
            out_channels: 5,
            stride: 2,
            kernel_size: 3,
            subunits: 2,
            bias: true,
            adn,
            last_conv_only: false,
        };
        let unit = cfg.init::<TestBackend>(&device);
        let residual = unit
            .residual
            .as_ref()
            .expect("strided unit has a residual conv");
        assert_eq!(residual.kernel_size, [3, 3]);
        let y = unit.forward(Tensor::ones([2, 3, 10, 7], &device));
        assert_eq!(y.dims(), [2, 5, 5, 4]);

        // Same channels, stride 1: the identity residual.
        let same = ResidualUnitConfig {
            in_channels: 5,
            stride: 1,
            ..cfg.clone()
        }
        .init::<TestBackend>(&device);
        assert!(same.residual.is_none());
        // Channels change at stride 1: a 1×1 residual.
        let one = ResidualUnitConfig { stride: 1, ..cfg }.init::<TestBackend>(&device);
        assert_eq!(one.residual.as_ref().unwrap().kernel_size, [1, 1]);
    }
}
