//! `ImageEncoderViT`: patch embedding, absolute positions, windowed / global attention blocks
//! with decomposed relative positions, and the convolutional neck.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{LayerNorm, LayerNormConfig};
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use salt_core::fused::matmul;
use salt_core::{AdaptableConv2d, AdaptableConv2dConfig, AdaptableLinear, AdaptableLinearConfig};

use crate::common::{LayerNorm2d, LayerNorm2dConfig, MlpBlock, MlpBlockConfig};
use crate::error::Error;

/// Configuration of an [`ImageEncoderViT`].
#[derive(Config, Debug)]
pub struct ImageEncoderViTConfig {
    /// Input size (square, after resize and padding): 1024 for stock SAM, 512 for `salt_paper`.
    pub img_size: usize,
    /// Patch size (16).
    pub patch_size: usize,
    /// Token width (768 / 1024 / 1280).
    pub embed_dim: usize,
    /// Number of blocks.
    pub depth: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// Output channels of the neck (256).
    pub out_chans: usize,
    /// Input channels.
    #[config(default = 3)]
    pub in_chans: usize,
    /// MLP hidden width / `embed_dim`.
    #[config(default = 4.0)]
    pub mlp_ratio: f64,
    /// Bias in the qkv projection.
    #[config(default = true)]
    pub qkv_bias: bool,
    /// Learned absolute positions (`pos_embed`).
    #[config(default = true)]
    pub use_abs_pos: bool,
    /// Decomposed relative positions in every attention (`rel_pos_h`, `rel_pos_w`).
    /// `salt_paper`: false.
    #[config(default = true)]
    pub use_rel_pos: bool,
    /// Window of the windowed blocks; 0 makes every block global. `salt_paper`: 0.
    #[config(default = 0)]
    pub window_size: usize,
    /// Blocks with global attention.
    #[config(default = "Vec::new()")]
    pub global_attn_indexes: Vec<usize>,
    /// LayerNorm epsilon of the blocks: 1e-6 in SAM, 1e-5 in `salt_paper`.
    #[config(default = 1e-6)]
    pub layer_norm_eps: f64,
    /// If set, the checkpoint's `pos_embed` has this grid and is average-pooled to the model's
    /// grid at load (`salt_paper`: 64 → 32 by 2×2 pooling).
    #[config(default = "None")]
    pub pos_embed_source_grid: Option<usize>,
}

impl ImageEncoderViTConfig {
    /// The token grid side, `img_size / patch_size`.
    pub fn grid(&self) -> usize {
        self.img_size / self.patch_size
    }

    /// Window size of block `i` (0: global).
    pub fn block_window(&self, i: usize) -> usize {
        if self.global_attn_indexes.contains(&i) {
            0
        } else {
            self.window_size
        }
    }

    /// Checks divisibility and index ranges.
    pub fn validate(&self) -> crate::error::Result<()> {
        let bad = |field, value: String, expected: &str| {
            Err(Error::InvalidConfig {
                field,
                value,
                expected: expected.to_string(),
            })
        };
        if self.patch_size == 0 || !self.img_size.is_multiple_of(self.patch_size) {
            return bad(
                "image_encoder.img_size",
                self.img_size.to_string(),
                "a multiple of patch_size",
            );
        }
        if self.num_heads == 0 || !self.embed_dim.is_multiple_of(self.num_heads) {
            return bad(
                "image_encoder.num_heads",
                self.num_heads.to_string(),
                "a divisor of embed_dim",
            );
        }
        if let Some(&i) = self.global_attn_indexes.iter().find(|&&i| i >= self.depth) {
            return bad(
                "image_encoder.global_attn_indexes",
                i.to_string(),
                "block indexes < depth",
            );
        }
        if let Some(src) = self.pos_embed_source_grid {
            if src == 0 || !src.is_multiple_of(self.grid()) {
                return bad(
                    "image_encoder.pos_embed_source_grid",
                    src.to_string(),
                    "a multiple of the token grid (img_size / patch_size)",
                );
            }
        }
        Ok(())
    }

    /// PyTorch's default initialisation; `pos_embed` and `rel_pos_*` start at zero as in SAM.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ImageEncoderViT<B> {
        let grid = self.grid();
        let p = self.patch_size;
        let blocks = (0..self.depth)
            .map(|i| {
                let window = self.block_window(i);
                let input = if window == 0 { grid } else { window };
                BlockConfig {
                    dim: self.embed_dim,
                    num_heads: self.num_heads,
                    mlp_dim: (self.embed_dim as f64 * self.mlp_ratio) as usize,
                    qkv_bias: self.qkv_bias,
                    use_rel_pos: self.use_rel_pos,
                    window_size: window,
                    input_size: input,
                    eps: self.layer_norm_eps,
                }
                .init(device)
            })
            .collect();
        ImageEncoderViT {
            patch_embed: PatchEmbed {
                proj: Conv2dConfig::new([self.in_chans, self.embed_dim], [p, p])
                    .with_stride([p, p])
                    .init(device),
            },
            pos_embed: self.use_abs_pos.then(|| {
                Param::from_tensor(Tensor::zeros([1, grid, grid, self.embed_dim], device))
            }),
            blocks,
            neck: Neck {
                conv1: AdaptableConv2dConfig::new([self.embed_dim, self.out_chans], [1, 1])
                    .with_bias(false)
                    .init(device),
                norm1: LayerNorm2dConfig::new(self.out_chans).init(device),
                conv2: AdaptableConv2dConfig::new([self.out_chans, self.out_chans], [3, 3])
                    .with_padding([1, 1])
                    .with_bias(false)
                    .init(device),
                norm2: LayerNorm2dConfig::new(self.out_chans).init(device),
            },
        }
    }
}

/// The ViT image encoder of SAM.
#[derive(Module, Debug)]
pub struct ImageEncoderViT<B: Backend> {
    /// Non-overlapping patch projection.
    pub patch_embed: PatchEmbed<B>,
    /// `[1, g, g, embed_dim]` absolute positions.
    pub pos_embed: Option<Param<Tensor<B, 4>>>,
    /// Transformer blocks.
    pub blocks: Vec<Block<B>>,
    /// 1×1 conv → LayerNorm2d → 3×3 conv → LayerNorm2d (PyTorch `neck.0`..`neck.3`).
    pub neck: Neck<B>,
}

salt_core::visit_adaptable_fields!(ImageEncoderViT { blocks, neck });

impl<B: Backend> ImageEncoderViT<B> {
    /// # Shapes
    /// `x: [n, in_chans, img_size, img_size]` (normalised, padded) → `[n, out_chans, g, g]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = self.patch_embed.forward(x); // [n, g, g, d]
        let mut x = match &self.pos_embed {
            Some(pos) => x + pos.val(),
            None => x,
        };
        for block in &self.blocks {
            x = block.forward(x);
        }
        self.neck.forward(x.permute([0, 3, 1, 2])) // [n, d, g, g] → [n, out, g, g]
    }
}

/// Patch embedding: a `patch × patch` convolution with stride `patch`.
#[derive(Module, Debug)]
pub struct PatchEmbed<B: Backend> {
    /// The projection.
    pub proj: Conv2d<B>,
}

impl<B: Backend> PatchEmbed<B> {
    /// # Shapes
    /// `x: [n, c, h, w]` → `[n, h/p, w/p, d]` (channels last, as the reference).
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [_, _, h, w] = x.dims();
        let [kh, kw] = self.proj.kernel_size;
        let simple = self.proj.stride == [kh, kw]
            && matches!(self.proj.padding, burn::nn::PaddingConfig2d::Valid)
            && self.proj.dilation == [1, 1]
            && self.proj.groups == 1
            && h.is_multiple_of(kh)
            && w.is_multiple_of(kw);
        if simple {
            // One matmul over the flattened patches (burn-ndarray's conv2d is a scalar loop).
            salt_core::patch_conv_channels_last(
                x,
                self.proj.weight.val(),
                self.proj.bias.as_ref().map(|b| b.val()),
            )
        } else {
            self.proj.forward(x).permute([0, 2, 3, 1])
        }
    }
}

/// The encoder neck (PyTorch `nn.Sequential`; see the remap table in `checkpoint.rs`).
#[derive(Module, Debug)]
pub struct Neck<B: Backend> {
    /// `neck.0`: 1×1, `embed_dim → out_chans`, no bias.
    pub conv1: AdaptableConv2d<B>,
    /// `neck.1`.
    pub norm1: LayerNorm2d<B>,
    /// `neck.2`: 3×3, padding 1, no bias.
    pub conv2: AdaptableConv2d<B>,
    /// `neck.3`.
    pub norm2: LayerNorm2d<B>,
}

salt_core::visit_adaptable_fields!(Neck { conv1, conv2 });

impl<B: Backend> Neck<B> {
    /// # Shapes
    /// `x: [n, d, g, g]` → `[n, out, g, g]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = self.norm1.forward(self.conv1.forward(x));
        self.norm2.forward(self.conv2.forward(x))
    }
}

/// Configuration of a [`Block`] (built by [`ImageEncoderViTConfig::init`]).
#[derive(Debug, Clone)]
struct BlockConfig {
    dim: usize,
    num_heads: usize,
    mlp_dim: usize,
    qkv_bias: bool,
    use_rel_pos: bool,
    window_size: usize,
    input_size: usize,
    eps: f64,
}

impl BlockConfig {
    fn init<B: Backend>(&self, device: &B::Device) -> Block<B> {
        let head_dim = self.dim / self.num_heads;
        let rel =
            |device| Param::from_tensor(Tensor::zeros([2 * self.input_size - 1, head_dim], device));
        Block {
            norm1: LayerNormConfig::new(self.dim)
                .with_epsilon(self.eps)
                .init(device),
            attn: Attention {
                qkv: AdaptableLinearConfig::new(self.dim, 3 * self.dim)
                    .with_bias(self.qkv_bias)
                    .init(device),
                proj: AdaptableLinearConfig::new(self.dim, self.dim).init(device),
                rel_pos_h: self.use_rel_pos.then(|| rel(device)),
                rel_pos_w: self.use_rel_pos.then(|| rel(device)),
                num_heads: self.num_heads,
            },
            norm2: LayerNormConfig::new(self.dim)
                .with_epsilon(self.eps)
                .init(device),
            mlp: MlpBlockConfig::new(self.dim, self.mlp_dim).init(device),
            window_size: self.window_size,
        }
    }
}

/// A transformer block with windowed (padded) or global attention.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    /// Pre-attention norm.
    pub norm1: LayerNorm<B>,
    /// Multi-head attention.
    pub attn: Attention<B>,
    /// Pre-MLP norm.
    pub norm2: LayerNorm<B>,
    /// The MLP.
    pub mlp: MlpBlock<B>,
    /// Window side, 0 for global attention.
    #[module(skip)]
    pub window_size: usize,
}

salt_core::visit_adaptable_fields!(Block { attn, mlp });

impl<B: Backend> Block<B> {
    /// # Shapes
    /// `x: [n, h, w, d]` → same.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let shortcut = x.clone();
        let x = self.norm1.forward(x);
        let x = if self.window_size > 0 {
            let [_, h, w, _] = x.dims();
            let (windows, padded) = window_partition(x, self.window_size);
            window_unpartition(self.attn.forward(windows), self.window_size, padded, [h, w])
        } else {
            self.attn.forward(x)
        };
        let x = shortcut + x;
        x.clone() + self.mlp.forward(self.norm2.forward(x))
    }
}

/// Splits `[n, h, w, c]` into `ws × ws` windows after zero-padding h and w up to multiples of
/// `ws` (bottom / right, as `F.pad`). Returns the windows `[n·nh·nw, ws, ws, c]` and the padded
/// size.
pub fn window_partition<B: Backend>(x: Tensor<B, 4>, ws: usize) -> (Tensor<B, 4>, [usize; 2]) {
    let [n, h, w, c] = x.dims();
    let hp = h.div_ceil(ws) * ws;
    let wp = w.div_ceil(ws) * ws;
    let x = if hp != h || wp != w {
        Tensor::zeros([n, hp, wp, c], &x.device()).slice_assign([0..n, 0..h, 0..w, 0..c], x)
    } else {
        x
    };
    let windows = x
        .reshape([n, hp / ws, ws, wp / ws, ws, c])
        .permute([0, 1, 3, 2, 4, 5]) // [n, nh, nw, ws, ws, c]
        .reshape([n * (hp / ws) * (wp / ws), ws, ws, c]);
    (windows, [hp, wp])
}

/// Inverse of [`window_partition`]: reassembles windows and crops the padding.
pub fn window_unpartition<B: Backend>(
    windows: Tensor<B, 4>,
    ws: usize,
    [hp, wp]: [usize; 2],
    [h, w]: [usize; 2],
) -> Tensor<B, 4> {
    let [nwin, _, _, c] = windows.dims();
    let n = nwin / ((hp / ws) * (wp / ws));
    let x = windows
        .reshape([n, hp / ws, wp / ws, ws, ws, c])
        .permute([0, 1, 3, 2, 4, 5]) // [n, nh, ws, nw, ws, c]
        .reshape([n, hp, wp, c]);
    if hp != h || wp != w {
        x.slice([0..n, 0..h, 0..w, 0..c])
    } else {
        x
    }
}

/// Multi-head self-attention with optional decomposed relative positions.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// `dim → 3·dim`.
    pub qkv: AdaptableLinear<B>,
    /// `dim → dim`.
    pub proj: AdaptableLinear<B>,
    /// `[2·size − 1, head_dim]` relative positions along the height.
    pub rel_pos_h: Option<Param<Tensor<B, 2>>>,
    /// `[2·size − 1, head_dim]` relative positions along the width.
    pub rel_pos_w: Option<Param<Tensor<B, 2>>>,
    /// Heads.
    #[module(skip)]
    pub num_heads: usize,
}

salt_core::visit_adaptable_fields!(Attention { qkv, proj });

impl<B: Backend> Attention<B> {
    /// # Shapes
    /// `x: [n, h, w, d]` → same.
    ///
    /// # Panics
    /// If `h`, `w` do not match the size the relative positions were built for.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [n, h, w, d] = x.dims();
        let nh = self.num_heads;
        let hd = d / nh;
        let scale = (hd as f64).powf(-0.5);
        let qkv = self.qkv.forward(x);
        if salt_core::fused::has_packed_attention::<B>() {
            // CPU inference: the heads are read where the projection wrote them (no permutes).
            let rel = match (&self.rel_pos_h, &self.rel_pos_w) {
                (Some(rh), Some(rw)) => Some((get_rel_pos(h, rh.val()), get_rel_pos(w, rw.val()))),
                _ => None,
            };
            let packed = qkv.clone().reshape([n, h * w, 3 * d]);
            if let Some(x) = salt_core::fused::packed_attention(packed, nh, scale, rel) {
                return self.proj.forward(x.reshape([n, h, w, d]));
            }
        }
        let qkv = qkv
            .reshape([n, h * w, 3, nh, hd])
            .permute([2, 0, 3, 1, 4]) // [3, n, nh, hw, hd]
            .reshape([3, n * nh, h * w, hd]);
        let part = |i: usize| qkv.clone().narrow(0, i, 1).reshape([n * nh, h * w, hd]);
        let (q, k, v) = (part(0), part(1), part(2));
        let x = match (&self.rel_pos_h, &self.rel_pos_w) {
            (Some(rh), Some(rw)) => {
                let (rel_h, rel_w) = decomposed_rel_pos(q.clone(), rh.val(), rw.val(), [h, w]);
                salt_core::fused::attention_rel_pos(q, k, v, scale, rel_h, rel_w)
            }
            // The paper's global blocks: one fused op (recomputing backward on the CPU).
            _ => salt_core::fused::attention(q, k, v, scale),
        };
        let x = x // [n·nh, hw, hd]
            .reshape([n, nh, h, w, hd])
            .permute([0, 2, 3, 1, 4]) // [n, h, w, nh, hd]
            .reshape([n, h, w, d]);
        self.proj.forward(x)
    }
}

/// Relative positions `[q, k, c]` for query/key index pairs: row `i − j + size − 1` of `rel_pos`.
///
/// # Panics
/// If `rel_pos` does not have `2·size − 1` rows (SAM would interpolate; salt-sam requires the
/// model's own size, which the checkpoint loader checks).
fn get_rel_pos<B: Backend>(size: usize, rel_pos: Tensor<B, 2>) -> Tensor<B, 3> {
    let [len, c] = rel_pos.dims();
    assert_eq!(
        len,
        2 * size - 1,
        "relative positions for size {size} need {} rows",
        2 * size - 1
    );
    let idx: Vec<i64> = (0..size)
        .flat_map(|i| (0..size).map(move |j| (i + size - 1 - j) as i64))
        .collect();
    let idx =
        Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [size * size]), &rel_pos.device());
    rel_pos.select(0, idx).reshape([size, size, c])
}

/// The decomposed relative-position terms `q·R_h` and `q·R_w` of the attention logits
/// (mvitv2's `add_decomposed_rel_pos`, with query and key grids equal), to be added to
/// `logits[b, (y, x), (ky, kx)]` as `rel_h[b, (y, x), ky] + rel_w[b, (y, x), kx]`.
///
/// # Shapes
/// `q: [b, h·w, c]` (unscaled) → `([b, h·w, h], [b, h·w, w])`.
fn decomposed_rel_pos<B: Backend>(
    q: Tensor<B, 3>,
    rel_pos_h: Tensor<B, 2>,
    rel_pos_w: Tensor<B, 2>,
    [h, w]: [usize; 2],
) -> (Tensor<B, 3>, Tensor<B, 3>) {
    let [b, _, c] = q.dims();
    let r_h = get_rel_pos(h, rel_pos_h); // [h, kh, c]
    let r_w = get_rel_pos(w, rel_pos_w); // [w, kw, c]
    let r_q = q.reshape([b, h, w, c]);
    // rel_h[b, y, x, k] = Σ_c r_q[b, y, x, c] · r_h[y, k, c]: a batched matmul over y.
    let rq_h = r_q.clone().swap_dims(0, 1).reshape([h, b * w, c]); // [h, b·w, c]
    let rel_h = matmul(rq_h, r_h.swap_dims(1, 2)) // [h, b·w, kh]
        .reshape([h, b, w, h])
        .swap_dims(0, 1); // [b, h, w, kh]
                          // rel_w[b, y, x, k] = Σ_c r_q[b, y, x, c] · r_w[x, k, c]: a batched matmul over x.
    let rq_w = r_q.permute([2, 0, 1, 3]).reshape([w, b * h, c]); // [w, b·h, c]
    let rel_w = matmul(rq_w, r_w.swap_dims(1, 2)) // [w, b·h, kw]
        .reshape([w, b, h, w])
        .permute([1, 2, 0, 3]); // [b, h, w, kw]
    (rel_h.reshape([b, h * w, h]), rel_w.reshape([b, h * w, w]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    type TestBackend = burn::backend::NdArray<f32>;

    #[test]
    fn window_partition_round_trips_with_padding() {
        let device = Default::default();
        let x = Tensor::<TestBackend, 4>::random([2, 7, 9, 3], Distribution::Default, &device);
        let (windows, padded) = window_partition(x.clone(), 4);
        assert_eq!(padded, [8, 12]);
        assert_eq!(windows.dims(), [2 * 2 * 3, 4, 4, 3]);
        // The bottom-right window of image 0 holds x[0, 4..7, 8..9] and zeros elsewhere.
        let last = windows.clone().narrow(0, 5, 1).reshape([4, 4, 3]);
        let expected = x.clone().slice([0..1, 4..7, 8..9, 0..3]).reshape([3, 1, 3]);
        last.clone()
            .slice([0..3, 0..1, 0..3])
            .into_data()
            .assert_eq(&expected.into_data(), true);
        assert_eq!(
            last.slice([3..4, 0..4, 0..3]).abs().sum().into_scalar(),
            0.0
        );
        let back = window_unpartition(windows, 4, padded, [7, 9]);
        back.into_data().assert_eq(&x.into_data(), true);
    }

    #[test]
    fn rel_pos_index_is_i_minus_j_plus_size_minus_one() {
        let device = Default::default();
        // rel_pos row r = [r]: the gathered value at (i, j) is i - j + 2 for size 3.
        let rel = Tensor::<TestBackend, 1, Int>::arange(0..5, &device)
            .float()
            .reshape([5, 1]);
        let got = get_rel_pos(3, rel).reshape([3, 3]);
        let expected = TensorData::from([[2.0f32, 1.0, 0.0], [3.0, 2.0, 1.0], [4.0, 3.0, 2.0]]);
        got.into_data().assert_eq(&expected, true);
    }
}
