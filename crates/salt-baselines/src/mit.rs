//! The Mix Transformer (MiT, Xie et al. 2021, "SegFormer") encoder as smp's
//! `encoders/mix_transformer.py` builds it: four stages of overlapping patch embedding, blocks
//! of efficient self-attention (keys and values spatially reduced by a strided convolution) and
//! a Mix-FFN (a 3×3 depthwise convolution between the two linears), and a LayerNorm per stage.
//!
//! Field names are smp's (which are NVlabs'): `patch_embed{1..4}.{proj,norm}`,
//! `block{1..4}.{i}.{norm1,attn.{q,kv,proj,sr,norm},norm2,mlp.{fc1,dwconv.dwconv,fc2}}`,
//! `norm{1..4}`. A MiT checkpoint (NVlabs' `mit_b3.pth`, smp-hub's `mit_b3.imagenet`) has these
//! keys plus the ImageNet classifier `head.weight` / `head.bias`, which [`MIT_KEY_MAP`] skips.

use std::path::Path;

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::{backend::Backend, Tensor};

use crate::checkpoint::{load_state_dict, KeyMap, LoadReport};
use crate::conv_bn::{drop_path, ConvSpec, KAIMING_NORMAL_FAN_OUT};
use crate::error::Error;
use crate::fast::FastConv;

/// A MiT checkpoint ↔ [`MixVisionTransformer`]: same names; the classifier is skipped.
pub const MIT_KEY_MAP: KeyMap = KeyMap {
    model: "mit",
    load: &[],
    save: &[],
    // NVlabs' ImageNet classifier, which smp's encoder pops before loading.
    ignored: &[r"^head\.(weight|bias)$"],
};

/// Epsilon of the LayerNorms smp builds with `nn.LayerNorm`'s default: the patch embeddings'
/// and the spatial-reduction norms (`attn.norm`). The blocks' and stages' use
/// [`MixVisionTransformerConfig::layer_norm_eps`].
pub const DEFAULT_LAYER_NORM_EPS: f64 = 1e-5;

/// Number of stages.
pub const STAGES: usize = 4;

/// Configuration of a [`MixVisionTransformer`] (the `params` of smp's `mix_transformer_encoders`;
/// `drop_rate` and `attn_drop_rate` are 0 there and not modelled).
#[derive(Config, Debug)]
pub struct MixVisionTransformerConfig {
    /// Token width per stage (b3: 64, 128, 320, 512).
    pub embed_dims: [usize; STAGES],
    /// Attention heads per stage (b3: 1, 2, 5, 8).
    pub num_heads: [usize; STAGES],
    /// Blocks per stage (b3: 3, 4, 18, 3).
    pub depths: [usize; STAGES],
    /// Mix-FFN hidden width / token width (4).
    #[config(default = "[4, 4, 4, 4]")]
    pub mlp_ratios: [usize; STAGES],
    /// Spatial reduction of keys and values per stage (8, 4, 2, 1).
    #[config(default = "[8, 4, 2, 1]")]
    pub sr_ratios: [usize; STAGES],
    /// Bias in `q` and `kv` (true).
    #[config(default = true)]
    pub qkv_bias: bool,
    /// Stochastic depth, rising linearly from 0 to this over all blocks (0.1). Training only.
    #[config(default = 0.1)]
    pub drop_path_rate: f64,
    /// Epsilon of the blocks' and stages' LayerNorms (`partial(LayerNorm, eps=1e-6)`).
    #[config(default = 1e-6)]
    pub layer_norm_eps: f64,
    /// Input channels.
    #[config(default = 3)]
    pub in_channels: usize,
}

impl MixVisionTransformerConfig {
    /// smp's `mit_b3`.
    pub fn mit_b3() -> Self {
        Self::new([64, 128, 320, 512], [1, 2, 5, 8], [3, 4, 18, 3])
    }

    /// smp's `mit_b0`.
    pub fn mit_b0() -> Self {
        Self::new([32, 64, 160, 256], [1, 2, 5, 8], [2, 2, 2, 2])
    }

    /// Checks head divisibility, ratios and rates.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |field, value: String, expected: &str| {
            Err(Error::InvalidConfig {
                model: "mit",
                field,
                value,
                expected: expected.to_string(),
            })
        };
        let divides = self
            .embed_dims
            .iter()
            .zip(&self.num_heads)
            .all(|(&d, &h)| h > 0 && d > 0 && d.is_multiple_of(h));
        if !divides {
            return bad(
                "num_heads",
                format!("{:?} for embed_dims {:?}", self.num_heads, self.embed_dims),
                "a divisor of each stage's embed_dim",
            );
        }
        if self.depths.contains(&0) || self.mlp_ratios.contains(&0) || self.sr_ratios.contains(&0) {
            return bad(
                "depths / mlp_ratios / sr_ratios",
                format!(
                    "{:?} / {:?} / {:?}",
                    self.depths, self.mlp_ratios, self.sr_ratios
                ),
                "values >= 1",
            );
        }
        if !(0.0..1.0).contains(&self.drop_path_rate) || self.in_channels == 0 {
            return bad(
                "drop_path_rate / in_channels",
                format!("{} / {}", self.drop_path_rate, self.in_channels),
                "a probability in [0, 1) / > 0",
            );
        }
        Ok(())
    }

    /// Drop-path probability of every block, `torch.linspace(0, drop_path_rate, sum(depths))`.
    fn drop_path_rates(&self) -> Vec<f64> {
        let n: usize = self.depths.iter().sum();
        (0..n)
            .map(|i| {
                if n > 1 {
                    self.drop_path_rate * i as f64 / (n - 1) as f64
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// Builds the encoder (Linear `N(0, 0.02)` where smp truncates that normal at ±2σ;
    /// convolutions `N(0, √(2 / fan_out))` as smp; norms 1 / 0).
    pub fn init<B: Backend>(&self, device: &B::Device) -> crate::Result<MixVisionTransformer<B>> {
        self.validate()?;
        let rates = self.drop_path_rates();
        let mut rates = rates.into_iter();
        let mut cin = self.in_channels;
        let mut embeds = Vec::new();
        let mut stages = Vec::new();
        let mut norms = Vec::new();
        for s in 0..STAGES {
            let dim = self.embed_dims[s];
            // Stage 1: 7×7 / 4 (padding 3); then 3×3 / 2 (padding 1).
            let (k, stride) = if s == 0 { (7, 4) } else { (3, 2) };
            embeds.push(OverlapPatchEmbed {
                proj: ConvSpec {
                    stride,
                    padding: k / 2,
                    bias: true,
                    ..ConvSpec::new([cin, dim], k, KAIMING_NORMAL_FAN_OUT)
                }
                .init(device),
                norm: LayerNormConfig::new(dim)
                    .with_epsilon(DEFAULT_LAYER_NORM_EPS)
                    .init(device),
            });
            let blocks = (0..self.depths[s])
                .map(|_| self.block(s, rates.next().expect("one rate per block"), device))
                .collect();
            stages.push(blocks);
            norms.push(
                LayerNormConfig::new(dim)
                    .with_epsilon(self.layer_norm_eps)
                    .init(device),
            );
            cin = dim;
        }
        let [patch_embed1, patch_embed2, patch_embed3, patch_embed4] =
            <[_; STAGES]>::try_from(embeds).expect("four stages");
        let [block1, block2, block3, block4] =
            <[_; STAGES]>::try_from(stages).expect("four stages");
        let [norm1, norm2, norm3, norm4] = <[_; STAGES]>::try_from(norms).expect("four stages");
        Ok(MixVisionTransformer {
            patch_embed1,
            patch_embed2,
            patch_embed3,
            patch_embed4,
            block1,
            block2,
            block3,
            block4,
            norm1,
            norm2,
            norm3,
            norm4,
        })
    }

    fn block<B: Backend>(&self, stage: usize, drop_path: f64, device: &B::Device) -> Block<B> {
        let dim = self.embed_dims[stage];
        let sr = self.sr_ratios[stage];
        let hidden = dim * self.mlp_ratios[stage];
        let linear = |i, o, bias| {
            LinearConfig::new(i, o)
                .with_bias(bias)
                .with_initializer(burn::module::Initializer::Normal {
                    mean: 0.0,
                    std: 0.02,
                })
                .init(device)
        };
        let norm = |eps| LayerNormConfig::new(dim).with_epsilon(eps).init(device);
        Block {
            norm1: norm(self.layer_norm_eps),
            attn: Attention {
                q: linear(dim, dim, self.qkv_bias),
                kv: linear(dim, 2 * dim, self.qkv_bias),
                proj: linear(dim, dim, true),
                sr: (sr > 1).then(|| {
                    ConvSpec {
                        stride: sr,
                        bias: true,
                        ..ConvSpec::new([dim, dim], sr, KAIMING_NORMAL_FAN_OUT)
                    }
                    .init(device)
                }),
                norm: (sr > 1).then(|| norm(DEFAULT_LAYER_NORM_EPS)),
                num_heads: self.num_heads[stage],
            },
            norm2: norm(self.layer_norm_eps),
            mlp: Mlp {
                fc1: linear(dim, hidden, true),
                dwconv: DwConv {
                    dwconv: ConvSpec {
                        padding: 1,
                        groups: hidden,
                        bias: true,
                        ..ConvSpec::new([hidden, hidden], 3, KAIMING_NORMAL_FAN_OUT)
                    }
                    .init(device),
                },
                fc2: linear(hidden, dim, true),
            },
            drop_path,
        }
    }
}

/// smp's `MixVisionTransformerEncoder` (depth 5).
///
/// # Training and inference
/// Stochastic depth is active under an `Autodiff` backend only (see [`crate::conv_bn`]);
/// dropout rates are 0 in smp's MiT.
#[derive(Module, Debug)]
pub struct MixVisionTransformer<B: Backend> {
    /// 7×7 / 4.
    pub patch_embed1: OverlapPatchEmbed<B>,
    /// 3×3 / 2.
    pub patch_embed2: OverlapPatchEmbed<B>,
    /// 3×3 / 2.
    pub patch_embed3: OverlapPatchEmbed<B>,
    /// 3×3 / 2.
    pub patch_embed4: OverlapPatchEmbed<B>,
    /// Stage 1 blocks.
    pub block1: Vec<Block<B>>,
    /// Stage 2 blocks.
    pub block2: Vec<Block<B>>,
    /// Stage 3 blocks.
    pub block3: Vec<Block<B>>,
    /// Stage 4 blocks.
    pub block4: Vec<Block<B>>,
    /// Stage 1 output norm.
    pub norm1: LayerNorm<B>,
    /// Stage 2 output norm.
    pub norm2: LayerNorm<B>,
    /// Stage 3 output norm.
    pub norm3: LayerNorm<B>,
    /// Stage 4 output norm.
    pub norm4: LayerNorm<B>,
}

impl<B: Backend> MixVisionTransformer<B> {
    /// The four stage outputs (smp's `features[2..]`).
    ///
    /// # Shapes
    /// `x: [n, in_channels, h, w]` → `[n, embed_dims[s], h_s, w_s]` with `h_1 = ⌈h/4⌉`, then
    /// `h_{s+1} = ⌈h_s/2⌉` (PyTorch's convolution arithmetic); `h/4, h/8, h/16, h/32` for
    /// multiples of 32.
    pub fn forward(&self, x: Tensor<B, 4>) -> [Tensor<B, 4>; STAGES] {
        let stages = [
            (&self.patch_embed1, &self.block1, &self.norm1),
            (&self.patch_embed2, &self.block2, &self.norm2),
            (&self.patch_embed3, &self.block3, &self.norm3),
            (&self.patch_embed4, &self.block4, &self.norm4),
        ];
        let mut x = x;
        let mut outs = Vec::with_capacity(STAGES);
        for (embed, blocks, norm) in stages {
            let (tokens, h, w) = embed.forward(x); // [n, h·w, d]
            let tokens = blocks.iter().fold(tokens, |t, b| b.forward(t, h, w));
            let tokens = norm.forward(tokens);
            let [n, _, d] = tokens.dims();
            x = tokens.swap_dims(1, 2).reshape([n, d, h, w]); // [n, d, h, w]
            outs.push(x.clone());
        }
        <[_; STAGES]>::try_from(outs).expect("four stages")
    }
}

/// Loads a MiT encoder checkpoint (keys as NVlabs / smp-hub name them: `patch_embed1.proj.weight`,
/// `block1.0.attn.q.weight`, ...; `head.*` skipped) into `mit`: every other key must match by
/// name and shape. `.pth` or `.safetensors`.
pub fn load_mit_weights<B: Backend>(
    mit: &mut MixVisionTransformer<B>,
    path: &Path,
) -> crate::Result<LoadReport> {
    load_state_dict(mit, path, &MIT_KEY_MAP)
}

/// smp's `OverlapPatchEmbed`: a strided convolution with `padding = k/2` and a LayerNorm.
#[derive(Module, Debug)]
pub struct OverlapPatchEmbed<B: Backend> {
    /// The projection.
    pub proj: Conv2d<B>,
    /// LayerNorm over channels (eps 1e-5).
    pub norm: LayerNorm<B>,
}

impl<B: Backend> OverlapPatchEmbed<B> {
    /// # Shapes
    /// `[n, c, h, w]` → tokens `[n, h'·w', d]` and `(h', w')`.
    pub fn forward(&self, x: Tensor<B, 4>) -> (Tensor<B, 3>, usize, usize) {
        let x = self.proj.fast(x);
        let [n, d, h, w] = x.dims();
        let tokens = x.reshape([n, d, h * w]).swap_dims(1, 2); // [n, h·w, d]
        (self.norm.forward(tokens), h, w)
    }
}

/// A MiT block: pre-norm efficient attention and Mix-FFN, each with stochastic depth.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    /// Pre-attention norm.
    pub norm1: LayerNorm<B>,
    /// Efficient self-attention.
    pub attn: Attention<B>,
    /// Pre-FFN norm.
    pub norm2: LayerNorm<B>,
    /// Mix-FFN.
    pub mlp: Mlp<B>,
    /// This block's drop-path probability (training only).
    pub drop_path: f64,
}

impl<B: Backend> Block<B> {
    /// # Shapes
    /// `x: [n, h·w, d]` → same.
    pub fn forward(&self, x: Tensor<B, 3>, h: usize, w: usize) -> Tensor<B, 3> {
        let a = self.attn.forward(self.norm1.forward(x.clone()), h, w);
        let x = x + drop_path(a, self.drop_path);
        let m = self.mlp.forward(self.norm2.forward(x.clone()), h, w);
        x + drop_path(m, self.drop_path)
    }
}

/// smp's `Attention`: keys and values from the tokens spatially reduced by an `sr × sr / sr`
/// convolution and a LayerNorm (when `sr_ratio > 1`).
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// Query projection.
    pub q: Linear<B>,
    /// Key and value projection (`[k | v]` along the output).
    pub kv: Linear<B>,
    /// Output projection.
    pub proj: Linear<B>,
    /// Spatial reduction (absent for `sr_ratio = 1`).
    pub sr: Option<Conv2d<B>>,
    /// Its LayerNorm (eps 1e-5).
    pub norm: Option<LayerNorm<B>>,
    /// Heads.
    pub num_heads: usize,
}

impl<B: Backend> Attention<B> {
    /// # Shapes
    /// `x: [n, h·w, d]` → same.
    pub fn forward(&self, x: Tensor<B, 3>, h: usize, w: usize) -> Tensor<B, 3> {
        let [n, len, d] = x.dims();
        let heads = self.num_heads;
        let hd = d / heads;
        let split = |t: Tensor<B, 3>| {
            let l = t.dims()[1];
            t.reshape([n, l, heads, hd]).swap_dims(1, 2) // [n, heads, l, hd]
        };
        let q = split(self.q.forward(x.clone()));
        let reduced = match (&self.sr, &self.norm) {
            (Some(sr), Some(norm)) => {
                let grid = x.swap_dims(1, 2).reshape([n, d, h, w]); // [n, d, h, w]
                let r = sr.fast(grid);
                let [_, _, rh, rw] = r.dims();
                norm.forward(r.reshape([n, d, rh * rw]).swap_dims(1, 2)) // [n, rh·rw, d]
            }
            _ => x,
        };
        let kv = self.kv.forward(reduced); // [n, l', 2d]: the reshape (2, heads, hd) of smp
        let l = kv.dims()[1];
        let k = split(kv.clone().slice([0..n, 0..l, 0..d]));
        let v = split(kv.slice([0..n, 0..l, d..2 * d]));
        let scale = (hd as f64).powf(-0.5);
        let attn = softmax(q.matmul(k.swap_dims(2, 3)) * scale, 3); // [n, heads, len, l']
        let out = attn.matmul(v).swap_dims(1, 2).reshape([n, len, d]); // [n, len, d]
        self.proj.forward(out)
    }
}

/// smp's `Mix-FFN`: `fc1 → 3×3 depthwise conv → GELU → fc2`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `d → hidden`.
    pub fc1: Linear<B>,
    /// The depthwise convolution (`mlp.dwconv.dwconv`).
    pub dwconv: DwConv<B>,
    /// `hidden → d`.
    pub fc2: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    /// # Shapes
    /// `x: [n, h·w, d]` → same.
    pub fn forward(&self, x: Tensor<B, 3>, h: usize, w: usize) -> Tensor<B, 3> {
        let x = self.fc1.forward(x);
        let [n, len, c] = x.dims();
        let grid = x.swap_dims(1, 2).reshape([n, c, h, w]); // [n, hidden, h, w]
        let x = self.dwconv.dwconv.fast(grid);
        let x = x.reshape([n, c, len]).swap_dims(1, 2); // [n, h·w, hidden]
        self.fc2.forward(gelu(x))
    }
}

/// smp's `DWConv` wrapper (its only field is again `dwconv`).
#[derive(Module, Debug)]
pub struct DwConv<B: Backend> {
    /// 3×3, padding 1, `groups = hidden`, bias.
    pub dwconv: Conv2d<B>,
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestBackend = burn::backend::NdArray<f32>;

    #[test]
    fn stage_shapes() {
        let device = Default::default();
        let mit = MixVisionTransformerConfig::new([8, 16, 24, 32], [1, 2, 3, 4], [1, 1, 1, 1])
            .init::<TestBackend>(&device)
            .unwrap();
        let f = mit.forward(Tensor::zeros([2, 3, 64, 96], &device));
        assert_eq!(f[0].dims(), [2, 8, 16, 24]);
        assert_eq!(f[3].dims(), [2, 32, 2, 3]);
    }

    #[test]
    fn drop_path_rates_are_torch_linspace() {
        let rates = MixVisionTransformerConfig::mit_b0().drop_path_rates();
        assert_eq!(rates.len(), 8);
        assert_eq!((rates[0], rates[7]), (0.0, 0.1));
        assert!((rates[1] - 0.1 / 7.0).abs() < f64::EPSILON);
    }

    #[test]
    fn invalid_configs_are_typed_errors() {
        let device = Default::default();
        for cfg in [
            MixVisionTransformerConfig::new([32, 64, 160, 256], [1, 2, 3, 8], [2, 2, 2, 2]),
            MixVisionTransformerConfig::mit_b0().with_sr_ratios([8, 4, 0, 1]),
            MixVisionTransformerConfig::mit_b0().with_drop_path_rate(1.5),
        ] {
            let err = cfg.init::<TestBackend>(&device).unwrap_err();
            assert!(
                matches!(err, Error::InvalidConfig { model: "mit", .. }),
                "{err}"
            );
        }
    }
}
