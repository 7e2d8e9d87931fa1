//! Small layers shared by the encoder and the decoder: `LayerNorm2d`, `MLPBlock`, the decoder's
//! `MLP`.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{backend::Backend, Tensor};
use salt_core::{AdaptableLinear, AdaptableLinearConfig};

/// Configuration of a [`LayerNorm2d`].
#[derive(Config, Debug)]
pub struct LayerNorm2dConfig {
    /// Channels.
    pub num_channels: usize,
    /// Added to the variance.
    #[config(default = 1e-6)]
    pub eps: f64,
}

/// LayerNorm over the channel axis of an `[n, c, h, w]` tensor (SAM's `LayerNorm2d`).
///
/// Fields keep PyTorch's names (`weight`, `bias`): burn-store renames `weight/bias` to
/// `gamma/beta` only for burn's own `LayerNorm`, so this struct loads as-is.
#[derive(Module, Debug)]
pub struct LayerNorm2d<B: Backend> {
    /// `[c]`, ones at init.
    pub weight: Param<Tensor<B, 1>>,
    /// `[c]`, zeros at init.
    pub bias: Param<Tensor<B, 1>>,
    /// Added to the variance.
    #[module(skip)]
    pub eps: f64,
}

impl LayerNorm2dConfig {
    /// Ones and zeros, as PyTorch.
    pub fn init<B: Backend>(&self, device: &B::Device) -> LayerNorm2d<B> {
        LayerNorm2d {
            weight: Param::from_tensor(Tensor::ones([self.num_channels], device)),
            bias: Param::from_tensor(Tensor::zeros([self.num_channels], device)),
            eps: self.eps,
        }
    }
}

impl<B: Backend> LayerNorm2d<B> {
    /// # Shapes
    /// `x: [n, c, h, w]` → `[n, c, h, w]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let c = self.weight.dims()[0];
        let mean = x.clone().mean_dim(1);
        let centered = x - mean;
        // Biased variance, as `(x - u).pow(2).mean(1)` in the reference.
        let var = centered.clone().square().mean_dim(1);
        let normed = centered / (var + self.eps).sqrt();
        let w = self.weight.val().reshape([1, c, 1, 1]);
        let b = self.bias.val().reshape([1, c, 1, 1]);
        normed * w + b
    }
}

/// Configuration of an [`MlpBlock`].
#[derive(Config, Debug)]
pub struct MlpBlockConfig {
    /// Input and output width.
    pub embedding_dim: usize,
    /// Hidden width.
    pub mlp_dim: usize,
}

/// The encoder's `MLPBlock`: `lin2(GELU(lin1(x)))`, both layers adaptable.
#[derive(Module, Debug)]
pub struct MlpBlock<B: Backend> {
    /// `embedding_dim → mlp_dim`.
    pub lin1: AdaptableLinear<B>,
    /// `mlp_dim → embedding_dim`.
    pub lin2: AdaptableLinear<B>,
}

salt_core::visit_adaptable_fields!(MlpBlock { lin1, lin2 });

impl MlpBlockConfig {
    /// PyTorch's default initialisation.
    pub fn init<B: Backend>(&self, device: &B::Device) -> MlpBlock<B> {
        MlpBlock {
            lin1: AdaptableLinearConfig::new(self.embedding_dim, self.mlp_dim).init(device),
            lin2: AdaptableLinearConfig::new(self.mlp_dim, self.embedding_dim).init(device),
        }
    }
}

impl<B: Backend> MlpBlock<B> {
    /// Exact (erf) GELU, as `nn.GELU()`.
    ///
    /// # Shapes
    /// `x: [..., embedding_dim]` → same.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        self.lin2
            .forward(salt_core::fused::gelu(self.lin1.forward(x)))
    }
}

/// Configuration of a [`DecoderMlpBlock`].
#[derive(Config, Debug)]
pub struct DecoderMlpBlockConfig {
    /// Input and output width.
    pub embedding_dim: usize,
    /// Hidden width.
    pub mlp_dim: usize,
}

/// The two-way transformer's `MLPBlock`: `lin2(ReLU(lin1(x)))` with plain linear layers.
#[derive(Module, Debug)]
pub struct DecoderMlpBlock<B: Backend> {
    /// `embedding_dim → mlp_dim`.
    pub lin1: Linear<B>,
    /// `mlp_dim → embedding_dim`.
    pub lin2: Linear<B>,
}

impl DecoderMlpBlockConfig {
    /// PyTorch's default initialisation.
    pub fn init<B: Backend>(&self, device: &B::Device) -> DecoderMlpBlock<B> {
        DecoderMlpBlock {
            lin1: torch_linear(self.embedding_dim, self.mlp_dim, device),
            lin2: torch_linear(self.mlp_dim, self.embedding_dim, device),
        }
    }
}

impl<B: Backend> DecoderMlpBlock<B> {
    /// # Shapes
    /// `x: [..., embedding_dim]` → same.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        self.lin2.forward(relu(self.lin1.forward(x)))
    }
}

/// Configuration of an [`Mlp`].
#[derive(Config, Debug)]
pub struct MlpConfig {
    /// Input width.
    pub input_dim: usize,
    /// Hidden width.
    pub hidden_dim: usize,
    /// Output width.
    pub output_dim: usize,
    /// Number of linear layers.
    pub num_layers: usize,
}

/// The mask decoder's `MLP`: linear layers with ReLU between them (hypernetworks, IoU head).
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// The linear layers.
    pub layers: Vec<Linear<B>>,
}

impl MlpConfig {
    /// PyTorch's default initialisation.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Mlp<B> {
        let layers = (0..self.num_layers)
            .map(|i| {
                let d_in = if i == 0 {
                    self.input_dim
                } else {
                    self.hidden_dim
                };
                let d_out = if i + 1 == self.num_layers {
                    self.output_dim
                } else {
                    self.hidden_dim
                };
                torch_linear(d_in, d_out, device)
            })
            .collect();
        Mlp { layers }
    }
}

impl<B: Backend> Mlp<B> {
    /// # Shapes
    /// `x: [..., input_dim]` → `[..., output_dim]`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let n = self.layers.len();
        self.layers.iter().enumerate().fold(x, |x, (i, layer)| {
            let y = layer.forward(x);
            if i + 1 < n {
                relu(y)
            } else {
                y
            }
        })
    }
}

/// A burn `Linear` with PyTorch's default initialisation (`U(±1/√in)` for weight and bias).
pub(crate) fn torch_linear<B: Backend>(d_in: usize, d_out: usize, device: &B::Device) -> Linear<B> {
    let bound = 1.0 / (d_in as f64).sqrt();
    LinearConfig::new(d_in, d_out)
        .with_initializer(burn::nn::Initializer::Uniform {
            min: -bound,
            max: bound,
        })
        .init(device)
}
