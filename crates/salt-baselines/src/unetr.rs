//! MONAI's `UNETR` (`monai.networks.nets.UNETR`, 2-D): a 12-block ViT on 16×16 patches whose
//! block 3, 6 and 9 outputs and final (normalised) tokens feed a convolutional decoder, with a
//! full-resolution residual block on the image itself as the last skip.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{
    Dropout, DropoutConfig, InstanceNorm, InstanceNormConfig, LayerNorm, LayerNormConfig, Linear,
    LinearConfig,
};
use burn::tensor::activation::{gelu, leaky_relu, softmax};
use burn::tensor::{backend::Backend, Distribution, Tensor};

use crate::checkpoint::KeyMap;
use crate::error::Error;
use crate::fast::FastConv;
use crate::monai_blocks::{Convolution, ConvolutionConfig, TransposedConvolution};

/// MONAI's UNETR patch side (fixed: `UNETR` has no argument for it).
pub const PATCH_SIZE: usize = 16;
/// MONAI's UNETR transformer depth (fixed: `UNETR` has no argument for it).
pub const NUM_LAYERS: usize = 12;
/// The transformer blocks whose outputs feed `encoder2`, `encoder3`, `encoder4`.
pub const SKIP_BLOCKS: [usize; 3] = [3, 6, 9];
/// LeakyReLU slope of MONAI's `UnetResBlock`.
const LEAKY_SLOPE: f64 = 0.01;

/// How MONAI's `UNETR` state_dict keys and our burn paths correspond.
///
/// Load rules: an `encoder{2,3,4}.blocks.{i}` is `nn.Sequential(transposed Convolution,
/// UnetResBlock)`: `.0.` → `.transp_conv.`, `.1.` → `.res_block.`. Every other key already is
/// the burn path (after burn-store's adapter: `Linear` weights transposed, LayerNorm
/// `weight`/`bias` → `gamma`/`beta`).
///
/// Ignored: `vit.blocks.{i}.norm_cross_attn.{weight,bias}`. MONAI ≥ 1.4 gives every
/// `TransformerBlock` a LayerNorm for optional cross-attention that UNETR never uses (its
/// `with_cross_attention` is false, `cross_attn` an `nn.Identity`); the model has no such
/// tensors, so a checkpoint with them (MONAI ≥ 1.4) and one without (older MONAI) both load.
/// Saved checkpoints lack them; MONAI ≥ 1.4 then needs `strict=False`, or the ignored
/// LayerNorms filled with the identity (`weight` 1, `bias` 0, unused anyway).
pub const KEY_MAP: KeyMap = KeyMap {
    model: "unetr",
    load: &[
        (r"^(encoder\d+\.blocks\.\d+)\.0\.", "${1}.transp_conv."),
        (r"^(encoder\d+\.blocks\.\d+)\.1\.", "${1}.res_block."),
    ],
    save: &[
        (r"^(encoder\d+\.blocks\.\d+)\.transp_conv\.", "${1}.0."),
        (r"^(encoder\d+\.blocks\.\d+)\.res_block\.", "${1}.1."),
    ],
    ignored: &[r"^vit\.blocks\.\d+\.norm_cross_attn\.(weight|bias)$"],
};

/// Configuration of a [`UNETR`]: the arguments of MONAI's `UNETR(spatial_dims=2, ...)`.
///
/// Fixed as in the paper (MONAI's defaults): `proj_type="conv"`, `norm_name="instance"`,
/// `conv_block=True`, `res_block=True`; 16×16 patches and 12 blocks are fixed in MONAI too.
#[derive(Config, Debug)]
pub struct UNETRConfig {
    /// Input `[height, width]`: the only size the model takes (the position embeddings are
    /// learned per patch); multiples of 16.
    #[config(default = "[512, 512]")]
    pub img_size: [usize; 2],
    /// Input channels.
    #[config(default = 3)]
    pub in_channels: usize,
    /// Output channels (logits).
    #[config(default = 1)]
    pub out_channels: usize,
    /// Channels of the full-resolution decoder level; the others have 2×, 4×, 8× as many.
    #[config(default = 16)]
    pub feature_size: usize,
    /// Token width of the ViT.
    #[config(default = 768)]
    pub hidden_size: usize,
    /// Hidden width of the ViT's MLPs.
    #[config(default = 3072)]
    pub mlp_dim: usize,
    /// Attention heads (a divisor of `hidden_size`).
    #[config(default = 12)]
    pub num_heads: usize,
    /// Dropout in the ViT (embeddings, attention weights and output, MLP), in `[0, 1)`.
    #[config(default = 0.0)]
    pub dropout_rate: f64,
    /// Bias in the qkv projection.
    #[config(default = false)]
    pub qkv_bias: bool,
}

impl UNETRConfig {
    /// The paper's Table-1 row: `UNETR(in_channels=3, out_channels=1, img_size=(512, 512),
    /// spatial_dims=2)`, 88,298,737 parameters (MONAI ≥ 1.4 counts 88,317,169: with the unused
    /// `norm_cross_attn` LayerNorms, see [`KEY_MAP`]).
    pub fn paper() -> Self {
        Self::new()
    }

    /// A small model for fast tests and the smoke table on 512×512 inputs (feature size 8,
    /// hidden 96, MLP 192, 4 heads: 1,336,985 parameters); `.with_img_size([64, 64])` for
    /// 64×64 inputs (1,240,217 parameters).
    pub fn smoke() -> Self {
        Self::new()
            .with_feature_size(8)
            .with_hidden_size(96)
            .with_mlp_dim(192)
            .with_num_heads(4)
    }

    /// The token grid `[height / 16, width / 16]`.
    pub fn grid(&self) -> [usize; 2] {
        [self.img_size[0] / PATCH_SIZE, self.img_size[1] / PATCH_SIZE]
    }

    /// Checks every field.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |field, value: String, expected: &str| {
            Err(Error::InvalidConfig {
                model: "unetr",
                field,
                value,
                expected: expected.to_string(),
            })
        };
        let [h, w] = self.img_size;
        if h == 0 || w == 0 || !h.is_multiple_of(PATCH_SIZE) || !w.is_multiple_of(PATCH_SIZE) {
            return bad(
                "img_size",
                format!("{:?}", self.img_size),
                "positive multiples of 16",
            );
        }
        for (field, v) in [
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("feature_size", self.feature_size),
            ("hidden_size", self.hidden_size),
            ("mlp_dim", self.mlp_dim),
        ] {
            if v == 0 {
                return bad(field, "0".into(), "at least 1");
            }
        }
        if self.num_heads == 0 || !self.hidden_size.is_multiple_of(self.num_heads) {
            return bad(
                "num_heads",
                self.num_heads.to_string(),
                "a divisor of hidden_size",
            );
        }
        if !(0.0..1.0).contains(&self.dropout_rate) {
            return bad(
                "dropout_rate",
                self.dropout_rate.to_string(),
                "a probability in [0, 1)",
            );
        }
        Ok(())
    }

    /// Validates the configuration and builds the model: burn's default initialisation, the
    /// position embeddings N(0, 0.02) (MONAI: the same, truncated at ±2; MONAI also
    /// re-initialises the ViT's linear layers with a truncated N(0, 0.02) and zero biases).
    /// Load a checkpoint for MONAI's weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> crate::Result<UNETR<B>> {
        self.validate()?;
        let [gh, gw] = self.grid();
        let (hs, fs) = (self.hidden_size, self.feature_size);
        let p = self.dropout_rate;
        let blocks = (0..NUM_LAYERS)
            .map(|_| TransformerBlock {
                mlp: MLPBlock {
                    linear1: LinearConfig::new(hs, self.mlp_dim).init(device),
                    linear2: LinearConfig::new(self.mlp_dim, hs).init(device),
                    drop1: DropoutConfig::new(p).init(),
                    drop2: DropoutConfig::new(p).init(),
                },
                norm1: LayerNormConfig::new(hs).init(device),
                attn: SABlock {
                    out_proj: LinearConfig::new(hs, hs).init(device),
                    qkv: LinearConfig::new(hs, 3 * hs)
                        .with_bias(self.qkv_bias)
                        .init(device),
                    drop_output: DropoutConfig::new(p).init(),
                    drop_weights: DropoutConfig::new(p).init(),
                    num_heads: self.num_heads,
                },
                norm2: LayerNormConfig::new(hs).init(device),
            })
            .collect();
        let vit = ViT {
            patch_embedding: PatchEmbeddingBlock {
                patch_embeddings: Conv2dConfig::new(
                    [self.in_channels, hs],
                    [PATCH_SIZE, PATCH_SIZE],
                )
                .with_stride([PATCH_SIZE, PATCH_SIZE])
                .init(device),
                position_embeddings: Param::from_tensor(Tensor::random(
                    [1, gh * gw, hs],
                    Distribution::Normal(0.0, 0.02),
                    device,
                )),
                dropout: DropoutConfig::new(p).init(),
                grid: [gh, gw],
            },
            blocks,
            norm: LayerNormConfig::new(hs).init(device),
        };
        let pr_up = |outc: usize, num_layer: usize| UnetrPrUpBlock {
            transp_conv_init: up_conv(hs, outc, device),
            blocks: (0..num_layer)
                .map(|_| PrUpLayer {
                    transp_conv: up_conv(outc, outc, device),
                    res_block: res_block(outc, outc, device),
                })
                .collect(),
        };
        let up = |inc: usize, outc: usize| UnetrUpBlock {
            transp_conv: up_conv(inc, outc, device),
            conv_block: res_block(2 * outc, outc, device),
        };
        Ok(UNETR {
            vit,
            encoder1: UnetrBasicBlock {
                layer: res_block(self.in_channels, fs, device),
            },
            encoder2: pr_up(2 * fs, 2),
            encoder3: pr_up(4 * fs, 1),
            encoder4: pr_up(8 * fs, 0),
            decoder5: up(hs, 8 * fs),
            decoder4: up(8 * fs, 4 * fs),
            decoder3: up(4 * fs, 2 * fs),
            decoder2: up(2 * fs, fs),
            out: UnetOutBlock {
                conv: ConvolutionConfig::new(fs, self.out_channels, 1, 1).init(device),
            },
        })
    }
}

/// MONAI's `get_conv_layer(..., kernel_size=2, stride=2, conv_only=True, is_transposed=True)`:
/// a bias-free 2×2 stride-2 transposed convolution (padding and output padding 0).
fn up_conv<B: Backend>(inc: usize, outc: usize, device: &B::Device) -> TransposedConvolution<B> {
    ConvolutionConfig::new(inc, outc, 2, 2)
        .with_padding(0)
        .with_bias(false)
        .init_transposed(device)
}

/// MONAI's `UnetResBlock(kernel_size=3, stride=1, norm_name="instance")`.
fn res_block<B: Backend>(inc: usize, outc: usize, device: &B::Device) -> UnetResBlock<B> {
    let conv = |i, o, k| {
        ConvolutionConfig::new(i, o, k, 1)
            .with_bias(false)
            .init(device)
    };
    let norm = || {
        InstanceNormConfig::new(outc)
            .with_affine(false)
            .init(device)
    };
    let downsample = inc != outc;
    UnetResBlock {
        conv1: conv(inc, outc, 3),
        conv2: conv(outc, outc, 3),
        conv3: downsample.then(|| conv(inc, outc, 1)),
        norm1: norm(),
        norm2: norm(),
        norm3: downsample.then(norm),
    }
}

/// MONAI's UNETR.
#[derive(Module, Debug)]
#[allow(clippy::upper_case_acronyms)]
pub struct UNETR<B: Backend> {
    /// The transformer encoder.
    pub vit: ViT<B>,
    /// Residual block on the image (full resolution).
    pub encoder1: UnetrBasicBlock<B>,
    /// Block 3's tokens up-sampled ×8 (`2·feature_size` channels).
    pub encoder2: UnetrPrUpBlock<B>,
    /// Block 6's tokens up-sampled ×4 (`4·feature_size`).
    pub encoder3: UnetrPrUpBlock<B>,
    /// Block 9's tokens up-sampled ×2 (`8·feature_size`).
    pub encoder4: UnetrPrUpBlock<B>,
    /// Final tokens ×2, joined with `encoder4`.
    pub decoder5: UnetrUpBlock<B>,
    /// ×2, joined with `encoder3`.
    pub decoder4: UnetrUpBlock<B>,
    /// ×2, joined with `encoder2`.
    pub decoder3: UnetrUpBlock<B>,
    /// ×2, joined with `encoder1`.
    pub decoder2: UnetrUpBlock<B>,
    /// 1×1 convolution to the logits.
    pub out: UnetOutBlock<B>,
}

/// Activations of [`UNETR::forward_features`].
#[derive(Debug, Clone)]
pub struct UNETRFeatures<B: Backend> {
    /// Patch embeddings plus positions: `[n, tokens, hidden]`.
    pub patch_embedding: Tensor<B, 3>,
    /// Each transformer block's output, block 0 first: `[n, tokens, hidden]`.
    pub hidden: Vec<Tensor<B, 3>>,
    /// The final LayerNorm's output: `[n, tokens, hidden]`.
    pub vit: Tensor<B, 3>,
    /// `encoder1`: `[n, feature_size, h, w]`.
    pub enc1: Tensor<B, 4>,
    /// `encoder2`: `[n, 2·feature_size, h / 2, w / 2]`.
    pub enc2: Tensor<B, 4>,
    /// `decoder5`'s output: `[n, 8·feature_size, h / 8, w / 8]`.
    pub dec3: Tensor<B, 4>,
    /// `[n, out_channels, h, w]`.
    pub logits: Tensor<B, 4>,
}

impl<B: Backend> UNETR<B> {
    /// Logits of the images.
    ///
    /// # Shapes
    /// `images: [n, in_channels, h, w]` → `[n, out_channels, h, w]`, `[h, w]` the configured
    /// `img_size`.
    ///
    /// # Panics
    /// If `[h, w]` is not `img_size` (MONAI fails adding the position embeddings).
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 4> {
        self.forward_features(images).logits
    }

    /// [`forward`](Self::forward), also returning the ViT's and some decoder activations
    /// (tensors are shared, not copied).
    ///
    /// # Panics
    /// As [`forward`](Self::forward).
    pub fn forward_features(&self, images: Tensor<B, 4>) -> UNETRFeatures<B> {
        let [_, _, h, w] = images.dims();
        let [gh, gw] = self.vit.patch_embedding.grid;
        assert!(
            [h, w] == [gh * PATCH_SIZE, gw * PATCH_SIZE],
            "UNETR input {h}×{w}: the model was built for img_size {}×{}",
            gh * PATCH_SIZE,
            gw * PATCH_SIZE
        );
        let patch_embedding = self.vit.patch_embedding.forward(images.clone());
        let mut hidden = Vec::with_capacity(self.vit.blocks.len());
        let mut x = patch_embedding.clone();
        for block in &self.vit.blocks {
            x = block.forward(x);
            hidden.push(x.clone());
        }
        let vit = self.vit.norm.forward(x);
        let grid = |t: &Tensor<B, 3>| self.proj_feat(t.clone());
        let enc1 = self.encoder1.forward(images);
        let enc2 = self.encoder2.forward(grid(&hidden[SKIP_BLOCKS[0]]));
        let enc3 = self.encoder3.forward(grid(&hidden[SKIP_BLOCKS[1]]));
        let enc4 = self.encoder4.forward(grid(&hidden[SKIP_BLOCKS[2]]));
        let dec3 = self.decoder5.forward(grid(&vit), enc4);
        let dec2 = self.decoder4.forward(dec3.clone(), enc3);
        let dec1 = self.decoder3.forward(dec2, enc2.clone());
        let dec0 = self.decoder2.forward(dec1, enc1.clone());
        UNETRFeatures {
            patch_embedding,
            hidden,
            vit,
            enc1,
            enc2,
            dec3,
            logits: self.out.forward(dec0),
        }
    }

    /// MONAI's `proj_feat`: tokens back onto the patch grid.
    ///
    /// # Shapes
    /// `x: [n, gh·gw, hidden]` → `[n, hidden, gh, gw]`.
    fn proj_feat(&self, x: Tensor<B, 3>) -> Tensor<B, 4> {
        let [n, _, d] = x.dims();
        let [gh, gw] = self.vit.patch_embedding.grid;
        x.reshape([n, gh, gw, d]).permute([0, 3, 1, 2]) // [n, d, gh, gw]
    }
}

/// MONAI's `ViT` without classification head: patch embedding, blocks, final LayerNorm.
#[derive(Module, Debug)]
pub struct ViT<B: Backend> {
    /// Patches and positions.
    pub patch_embedding: PatchEmbeddingBlock<B>,
    /// The transformer blocks.
    pub blocks: Vec<TransformerBlock<B>>,
    /// The final norm (applied to the last block's output only).
    pub norm: LayerNorm<B>,
}

/// MONAI's `PatchEmbeddingBlock` (`proj_type="conv"`, learnable positions).
#[derive(Module, Debug)]
pub struct PatchEmbeddingBlock<B: Backend> {
    /// 16×16 stride-16 convolution.
    pub patch_embeddings: Conv2d<B>,
    /// `[1, gh·gw, hidden]`.
    pub position_embeddings: Param<Tensor<B, 3>>,
    /// Dropout on the embeddings.
    pub dropout: Dropout,
    /// The token grid `[gh, gw]`.
    #[module(skip)]
    pub grid: [usize; 2],
}

impl<B: Backend> PatchEmbeddingBlock<B> {
    /// # Shapes
    /// `x: [n, c, 16·gh, 16·gw]` → `[n, gh·gw, hidden]` (tokens row-major over the grid).
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 3> {
        let x = self.patch_embeddings.fast(x); // [n, d, gh, gw]
        let [n, d, gh, gw] = x.dims();
        let x = x.reshape([n, d, gh * gw]).swap_dims(1, 2); // [n, gh·gw, d]
        self.dropout.forward(x + self.position_embeddings.val())
    }
}

/// MONAI's `TransformerBlock` (pre-norm; no cross-attention).
#[derive(Module, Debug)]
pub struct TransformerBlock<B: Backend> {
    /// The MLP.
    pub mlp: MLPBlock<B>,
    /// Norm before attention.
    pub norm1: LayerNorm<B>,
    /// Self-attention.
    pub attn: SABlock<B>,
    /// Norm before the MLP.
    pub norm2: LayerNorm<B>,
}

impl<B: Backend> TransformerBlock<B> {
    /// # Shapes
    /// `x: [n, l, d]` → same.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = x.clone() + self.attn.forward(self.norm1.forward(x));
        x.clone() + self.mlp.forward(self.norm2.forward(x))
    }
}

/// MONAI's `MLPBlock` (GELU, "vit" dropout mode).
#[derive(Module, Debug)]
#[allow(clippy::upper_case_acronyms)]
pub struct MLPBlock<B: Backend> {
    /// `hidden → mlp_dim`.
    pub linear1: Linear<B>,
    /// `mlp_dim → hidden`.
    pub linear2: Linear<B>,
    /// After the activation.
    pub drop1: Dropout,
    /// After `linear2`.
    pub drop2: Dropout,
}

impl<B: Backend> MLPBlock<B> {
    /// # Shapes
    /// `x: [n, l, d]` → same.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = self.drop1.forward(gelu(self.linear1.forward(x)));
        self.drop2.forward(self.linear2.forward(x))
    }
}

/// MONAI's `SABlock`: multi-head self-attention with one combined qkv projection.
#[derive(Module, Debug)]
pub struct SABlock<B: Backend> {
    /// Output projection.
    pub out_proj: Linear<B>,
    /// `d → 3·d`, laid out `(qkv, head, head_dim)` as MONAI's
    /// `Rearrange("b h (qkv l d) -> qkv b l h d")`.
    pub qkv: Linear<B>,
    /// After the output projection.
    pub drop_output: Dropout,
    /// On the attention weights.
    pub drop_weights: Dropout,
    /// Heads.
    #[module(skip)]
    pub num_heads: usize,
}

impl<B: Backend> SABlock<B> {
    /// # Shapes
    /// `x: [n, l, d]` → same.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [n, l, d] = x.dims();
        let heads = self.num_heads;
        let hd = d / heads;
        let qkv = self
            .qkv
            .forward(x)
            .reshape([n, l, 3, heads, hd])
            .permute([2, 0, 3, 1, 4]); // [3, n, heads, l, hd]
        let part = |i: usize| qkv.clone().narrow(0, i, 1).reshape([n, heads, l, hd]);
        let (q, k, v) = (part(0), part(1), part(2));
        let scale = (hd as f64).powf(-0.5);
        let att = softmax(q.matmul(k.swap_dims(2, 3)) * scale, 3); // [n, heads, l, l]
        let x = self.drop_weights.forward(att).matmul(v); // [n, heads, l, hd]
        let x = x.swap_dims(1, 2).reshape([n, l, d]); // [n, l, heads·hd]
        self.drop_output.forward(self.out_proj.forward(x))
    }
}

/// MONAI's `UnetResBlock` (instance norm, LeakyReLU 0.01): conv → norm → act → conv → norm,
/// plus the (1×1 conv → norm when the channels change) residual, → act.
#[derive(Module, Debug)]
pub struct UnetResBlock<B: Backend> {
    /// 3×3, bias-free.
    pub conv1: Convolution<B>,
    /// 3×3, bias-free.
    pub conv2: Convolution<B>,
    /// 1×1 residual projection when the channels change.
    pub conv3: Option<Convolution<B>>,
    /// Instance norm (no affine).
    pub norm1: InstanceNorm<B>,
    /// Instance norm (no affine).
    pub norm2: InstanceNorm<B>,
    /// Instance norm of the residual projection.
    pub norm3: Option<InstanceNorm<B>>,
}

impl<B: Backend> UnetResBlock<B> {
    /// # Shapes
    /// `x: [n, in, h, w]` → `[n, out, h, w]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let out = leaky_relu(
            self.norm1.forward(self.conv1.forward(x.clone())),
            LEAKY_SLOPE,
        );
        let out = self.norm2.forward(self.conv2.forward(out));
        let residual = match (&self.conv3, &self.norm3) {
            (Some(conv), Some(norm)) => norm.forward(conv.forward(x)),
            _ => x,
        };
        leaky_relu(out + residual, LEAKY_SLOPE)
    }
}

/// MONAI's `UnetrBasicBlock` with `res_block=True`.
#[derive(Module, Debug)]
pub struct UnetrBasicBlock<B: Backend> {
    /// The residual block.
    pub layer: UnetResBlock<B>,
}

impl<B: Backend> UnetrBasicBlock<B> {
    /// # Shapes
    /// `x: [n, in, h, w]` → `[n, out, h, w]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.layer.forward(x)
    }
}

/// MONAI's `UnetrPrUpBlock` (`conv_block=True`, `res_block=True`): a 2× transposed
/// convolution, then `num_layer` × (2× transposed convolution, residual block).
#[derive(Module, Debug)]
pub struct UnetrPrUpBlock<B: Backend> {
    /// The first up-sampling, from the token width.
    pub transp_conv_init: TransposedConvolution<B>,
    /// Further up-sampling layers (MONAI `nn.Sequential`s; see [`KEY_MAP`]).
    pub blocks: Vec<PrUpLayer<B>>,
}

impl<B: Backend> UnetrPrUpBlock<B> {
    /// # Shapes
    /// `x: [n, hidden, gh, gw]` → `[n, out, gh·2^(1+layers), gw·2^(1+layers)]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = self.transp_conv_init.forward(x);
        self.blocks
            .iter()
            .fold(x, |x, b| b.res_block.forward(b.transp_conv.forward(x)))
    }
}

/// One `nn.Sequential(transposed Convolution, UnetResBlock)` of a [`UnetrPrUpBlock`].
#[derive(Module, Debug)]
pub struct PrUpLayer<B: Backend> {
    /// 2×2 stride-2 transposed convolution (MONAI `0`).
    pub transp_conv: TransposedConvolution<B>,
    /// Residual block (MONAI `1`).
    pub res_block: UnetResBlock<B>,
}

/// MONAI's `UnetrUpBlock` (`res_block=True`): up-sample, concatenate the skip, residual block.
#[derive(Module, Debug)]
pub struct UnetrUpBlock<B: Backend> {
    /// 2×2 stride-2 transposed convolution.
    pub transp_conv: TransposedConvolution<B>,
    /// Residual block on `cat(up, skip)`.
    pub conv_block: UnetResBlock<B>,
}

impl<B: Backend> UnetrUpBlock<B> {
    /// # Shapes
    /// `x: [n, in, h, w]`, `skip: [n, out, 2h, 2w]` → `[n, out, 2h, 2w]`.
    pub fn forward(&self, x: Tensor<B, 4>, skip: Tensor<B, 4>) -> Tensor<B, 4> {
        let up = self.transp_conv.forward(x);
        self.conv_block.forward(Tensor::cat(vec![up, skip], 1))
    }
}

/// MONAI's `UnetOutBlock`: a 1×1 convolution with bias.
#[derive(Module, Debug)]
pub struct UnetOutBlock<B: Backend> {
    /// The convolution.
    pub conv: Convolution<B>,
}

impl<B: Backend> UnetOutBlock<B> {
    /// # Shapes
    /// `x: [n, feature_size, h, w]` → `[n, out_channels, h, w]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.conv.forward(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::module::AutodiffModule;

    type TestBackend = burn::backend::NdArray<f32>;
    type TestAutodiffBackend = Autodiff<TestBackend>;

    /// MONAI 1.6.1's `UNETR(...)` parameters without the 12 × 2 × 768 unused
    /// `norm_cross_attn` ones (88,317,169 with them).
    const PAPER_PARAMS: usize = 88_298_737;
    /// The same for `smoke()` and `smoke().with_img_size([64, 64])`.
    const SMOKE_PARAMS: usize = 1_336_985;
    const SMOKE_64_PARAMS: usize = 1_240_217;

    #[test]
    fn paper_parameter_count_matches_monai() {
        let model = UNETRConfig::paper()
            .init::<TestBackend>(&Default::default())
            .unwrap();
        assert_eq!(model.num_params(), PAPER_PARAMS);
    }

    #[test]
    fn smoke_parameter_counts_match_monai() {
        let device = Default::default();
        let model = UNETRConfig::smoke().init::<TestBackend>(&device).unwrap();
        assert_eq!(model.num_params(), SMOKE_PARAMS);
        let model = UNETRConfig::smoke()
            .with_img_size([64, 64])
            .init::<TestBackend>(&device)
            .unwrap();
        assert_eq!(model.num_params(), SMOKE_64_PARAMS);
    }

    #[test]
    fn smoke_takes_its_image_size() {
        let device = Default::default();
        let model = UNETRConfig::smoke()
            .with_img_size([64, 48])
            .init::<TestBackend>(&device)
            .unwrap();
        let x = Tensor::random([2, 3, 64, 48], Distribution::Normal(0.0, 1.0), &device);
        let f = model.forward_features(x);
        assert_eq!(f.logits.dims(), [2, 1, 64, 48]);
        assert_eq!(f.hidden.len(), NUM_LAYERS);
        assert_eq!(f.vit.dims(), [2, 12, 96]);
        assert_eq!(f.dec3.dims(), [2, 64, 8, 6]);
    }

    #[test]
    #[should_panic(expected = "the model was built for img_size 64×64")]
    fn rejects_other_sizes() {
        let device = Default::default();
        let model = UNETRConfig::smoke()
            .with_img_size([64, 64])
            .init::<TestBackend>(&device)
            .unwrap();
        model.forward(Tensor::zeros([1, 3, 32, 32], &device));
    }

    #[test]
    fn invalid_configs_are_typed_errors() {
        let device = Default::default();
        let cases = [
            (UNETRConfig::new().with_img_size([500, 512]), "img_size"),
            (
                UNETRConfig::new()
                    .with_img_size([512, 512])
                    .with_num_heads(7),
                "num_heads",
            ),
            (
                UNETRConfig::new()
                    .with_img_size([512, 512])
                    .with_feature_size(0),
                "feature_size",
            ),
            (
                UNETRConfig::new()
                    .with_img_size([512, 512])
                    .with_dropout_rate(1.5),
                "dropout_rate",
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
    fn trains_under_autodiff_with_dropout() {
        let device = Default::default();
        let model = UNETRConfig::new()
            .with_img_size([32, 32])
            .with_feature_size(2)
            .with_hidden_size(8)
            .with_mlp_dim(8)
            .with_num_heads(2)
            .with_dropout_rate(0.5)
            .init::<TestAutodiffBackend>(&device)
            .unwrap();
        let x = Tensor::random([1, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
        let y = model.forward(x.clone());
        let grads = y.clone().powf_scalar(2.0).mean().backward();
        let qkv = &model.vit.blocks[0].attn.qkv.weight;
        assert!(qkv.grad(&grads).unwrap().abs().sum().into_scalar() > 0.0);
        let pos = &model.vit.patch_embedding.position_embeddings;
        assert!(pos.grad(&grads).unwrap().abs().sum().into_scalar() > 0.0);
        assert!((y - model.forward(x.clone())).abs().max().into_scalar() > 0.0);
        let valid = model.valid();
        let d = (valid.forward(x.clone().inner()) - valid.forward(x.inner()))
            .abs()
            .max();
        assert_eq!(d.into_scalar(), 0.0);
    }
}
