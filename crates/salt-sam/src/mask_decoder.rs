//! `MaskDecoder`: output tokens + prompt tokens through the two-way transformer, upscaling,
//! hypernetwork MLPs and the IoU head.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{Embedding, EmbeddingConfig};
use burn::tensor::{backend::Backend, Tensor};
use salt_core::fused::{gelu, matmul};

use crate::common::{LayerNorm2d, LayerNorm2dConfig, Mlp, MlpConfig};
use crate::error::Error;
use crate::transformer::{TwoWayTransformer, TwoWayTransformerConfig};

/// Configuration of a [`MaskDecoder`].
#[derive(Config, Debug)]
pub struct MaskDecoderConfig {
    /// Token and image width (256).
    pub transformer_dim: usize,
    /// Two-way blocks.
    #[config(default = 2)]
    pub transformer_depth: usize,
    /// Heads of the decoder attentions.
    #[config(default = 8)]
    pub transformer_heads: usize,
    /// MLP hidden width of the two-way blocks.
    #[config(default = 2048)]
    pub transformer_mlp_dim: usize,
    /// Masks of the multimask output (3); one more mask token gives the single mask.
    #[config(default = 3)]
    pub num_multimask_outputs: usize,
    /// Layers of the IoU head.
    #[config(default = 3)]
    pub iou_head_depth: usize,
    /// Hidden width of the IoU head.
    #[config(default = 256)]
    pub iou_head_hidden_dim: usize,
    /// Positional encodings inside the two-way blocks (stock: true; `salt_paper`: false, only
    /// the final token→image attention adds the token PE to its queries).
    #[config(default = true)]
    pub pos_encodings_in_blocks: bool,
    /// Only mask token 0 is ever output (`salt_paper`); asking for multimask is an error.
    #[config(default = false)]
    pub single_mask_output: bool,
}

impl MaskDecoderConfig {
    /// Checks head divisibility.
    pub fn validate(&self) -> crate::error::Result<()> {
        let internal = self.transformer_dim / 2;
        if self.transformer_heads == 0
            || !self.transformer_dim.is_multiple_of(self.transformer_heads)
            || !internal.is_multiple_of(self.transformer_heads)
            || !self.transformer_dim.is_multiple_of(8)
        {
            return Err(Error::InvalidConfig {
                field: "mask_decoder.transformer_heads",
                value: self.transformer_heads.to_string(),
                expected: format!(
                    "a divisor of transformer_dim / 2 = {internal} (and transformer_dim a multiple of 8)"
                ),
            });
        }
        Ok(())
    }

    /// PyTorch's default initialisation.
    pub fn init<B: Backend>(&self, device: &B::Device) -> MaskDecoder<B> {
        let d = self.transformer_dim;
        let num_mask_tokens = self.num_multimask_outputs + 1;
        MaskDecoder {
            transformer: TwoWayTransformerConfig::new(
                self.transformer_depth,
                d,
                self.transformer_heads,
                self.transformer_mlp_dim,
            )
            .with_pos_encodings_in_blocks(self.pos_encodings_in_blocks)
            .init(device),
            iou_token: EmbeddingConfig::new(1, d).init(device),
            mask_tokens: EmbeddingConfig::new(num_mask_tokens, d).init(device),
            output_upscaling: OutputUpscaling {
                conv1: ConvTranspose2dConfig::new([d, d / 4], [2, 2])
                    .with_stride([2, 2])
                    .init(device),
                norm: LayerNorm2dConfig::new(d / 4).init(device),
                conv2: ConvTranspose2dConfig::new([d / 4, d / 8], [2, 2])
                    .with_stride([2, 2])
                    .init(device),
            },
            output_hypernetworks_mlps: (0..num_mask_tokens)
                .map(|_| MlpConfig::new(d, d, d / 8, 3).init(device))
                .collect(),
            iou_prediction_head: MlpConfig::new(
                d,
                self.iou_head_hidden_dim,
                num_mask_tokens,
                self.iou_head_depth,
            )
            .init(device),
            single_mask_output: self.single_mask_output,
        }
    }
}

/// Low-resolution mask logits and their predicted IoU.
#[derive(Debug, Clone)]
pub struct DecoderOutput<B: Backend> {
    /// `[n, m, 4g, 4g]` mask logits (m = 3 with multimask, else 1).
    pub low_res_logits: Tensor<B, 4>,
    /// `[n, m]`.
    pub iou_predictions: Tensor<B, 2>,
}

/// SAM's mask decoder.
#[derive(Module, Debug)]
pub struct MaskDecoder<B: Backend> {
    /// The two-way transformer.
    pub transformer: TwoWayTransformer<B>,
    /// IoU output token `[1, d]`.
    pub iou_token: Embedding<B>,
    /// Mask output tokens `[num_multimask_outputs + 1, d]`.
    pub mask_tokens: Embedding<B>,
    /// ConvT → LayerNorm2d → GELU → ConvT → GELU (PyTorch `output_upscaling.0/1/3`).
    pub output_upscaling: OutputUpscaling<B>,
    /// One hypernetwork MLP per mask token.
    pub output_hypernetworks_mlps: Vec<Mlp<B>>,
    /// IoU prediction head.
    pub iou_prediction_head: Mlp<B>,
    /// See [`MaskDecoderConfig::single_mask_output`].
    #[module(skip)]
    pub single_mask_output: bool,
}

impl<B: Backend> MaskDecoder<B> {
    /// Predicts masks; `multimask` selects masks 1..=3, otherwise mask 0.
    ///
    /// # Shapes
    /// `image_embeddings: [1|n, d, g, g]` (one image is shared by all prompt sets),
    /// `image_pe: [1, d, g, g]`, `sparse: [n, t, d]`, `dense: [n, d, g, g]`.
    ///
    /// # Panics
    /// If the image batch is neither 1 nor the prompt batch `n` ([`crate::Sam::decode`] checks).
    pub fn forward(
        &self,
        image_embeddings: Tensor<B, 4>,
        image_pe: Tensor<B, 4>,
        sparse: Option<Tensor<B, 3>>,
        dense: Option<Tensor<B, 4>>,
        batch: usize,
        multimask: bool,
    ) -> DecoderOutput<B> {
        let (masks, iou) = self.predict_masks(image_embeddings, image_pe, sparse, dense, batch);
        let [n, m, h, w] = masks.dims();
        let range = if multimask { 1..m } else { 0..1 };
        let k = range.len();
        DecoderOutput {
            low_res_logits: masks
                .slice([0..n, range.clone(), 0..h, 0..w])
                .reshape([n, k, h, w]),
            iou_predictions: iou.slice([0..n, range]),
        }
    }

    fn predict_masks(
        &self,
        image_embeddings: Tensor<B, 4>,
        image_pe: Tensor<B, 4>,
        sparse: Option<Tensor<B, 3>>,
        dense: Option<Tensor<B, 4>>,
        n: usize,
    ) -> (Tensor<B, 4>, Tensor<B, 2>) {
        let output_tokens = Tensor::cat(
            vec![self.iou_token.weight.val(), self.mask_tokens.weight.val()],
            0,
        ); // [1+M, d]
        let [nt, d] = output_tokens.dims();
        let output_tokens = output_tokens.reshape([1, nt, d]).repeat_dim(0, n); // [n, 1+M, d]
        let tokens = match sparse {
            Some(s) => Tensor::cat(vec![output_tokens, s], 1),
            None => output_tokens,
        };
        let [ni, _, g, gw] = image_embeddings.dims();
        let src = if ni == n {
            image_embeddings
        } else {
            image_embeddings.repeat_dim(0, n)
        };
        let src = match dense {
            Some(dense) => src + dense,
            None => src,
        };
        let pos_src = image_pe.repeat_dim(0, n); // [n, d, g, g]
        let (hs, src) = self.transformer.forward(src, pos_src, tokens);
        let num_mask_tokens = self.mask_tokens.weight.dims()[0];
        let iou_token_out = hs.clone().slice([0..n, 0..1, 0..d]).reshape([n, d]);
        let src = src.swap_dims(1, 2).reshape([n, d, g, gw]); // [n, hw, d] → [n, d, g, g]
        let upscaled = self.output_upscaling.forward(src); // [n, d/8, 4g, 4g]
        let [_, c, h, w] = upscaled.dims();
        let hyper_in = Tensor::cat(
            self.output_hypernetworks_mlps
                .iter()
                .enumerate()
                .map(|(i, mlp)| mlp.forward(hs.clone().slice([0..n, 1 + i..2 + i, 0..d])))
                .collect(),
            1,
        ); // [n, M, d/8]
        let masks = matmul(hyper_in, upscaled.reshape([n, c, h * w])) // [n, M, hw]
            .reshape([n, num_mask_tokens, h, w]);
        let iou = self.iou_prediction_head.forward(iou_token_out); // [n, M]
        (masks, iou)
    }
}

/// The mask decoder's upscaling (4× in two transposed convolutions).
#[derive(Module, Debug)]
pub struct OutputUpscaling<B: Backend> {
    /// `output_upscaling.0`: `d → d/4`, 2×2 stride 2.
    pub conv1: ConvTranspose2d<B>,
    /// `output_upscaling.1`.
    pub norm: LayerNorm2d<B>,
    /// `output_upscaling.3`: `d/4 → d/8`, 2×2 stride 2.
    pub conv2: ConvTranspose2d<B>,
}

impl<B: Backend> OutputUpscaling<B> {
    /// # Shapes
    /// `x: [n, d, g, g]` → `[n, d/8, 4g, 4g]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = gelu(self.norm.forward(conv_transpose_patches(&self.conv1, x)));
        gelu(conv_transpose_patches(&self.conv2, x))
    }
}

/// A transposed convolution whose stride equals its kernel (no overlap, no padding, one group),
/// as one matmul: every input pixel writes its own `kh × kw` output patch,
/// `y[n, co, kh·i + a, kw·j + b] = Σ_ci x[n, ci, i, j] · W[ci, co, a, b] + bias[co]`.
///
/// Same result as `ConvTranspose2d::forward` (up to summation order), but burn-ndarray's generic
/// transposed convolution takes ~23 s for SAM's 256→64 upscaling at 64×64 on 2 cores; this takes
/// milliseconds. Falls back to the module for any other geometry.
fn conv_transpose_patches<B: Backend>(conv: &ConvTranspose2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [kh, kw] = conv.kernel_size;
    let simple = conv.stride == [kh, kw]
        && conv.padding == [0, 0]
        && conv.padding_out == [0, 0]
        && conv.dilation == [1, 1]
        && conv.groups == 1;
    if !simple {
        return conv.forward(x);
    }
    let [n, ci, h, w] = x.dims();
    let [_, co, _, _] = conv.weight.dims();
    let xt = x.reshape([n, ci, h * w]).swap_dims(1, 2); // [n, hw, ci]
    let patches = matmul(xt, conv.weight.val().reshape([1, ci, co * kh * kw])) // [n, hw, co·kh·kw]
        .reshape([n, h, w, co, kh, kw])
        .permute([0, 3, 1, 4, 2, 5]) // [n, co, h, kh, w, kw]
        .reshape([n, co, h * kh, w * kw]);
    match &conv.bias {
        Some(b) => patches + b.val().reshape([1, co, 1, 1]),
        None => patches,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    type TestBackend = burn::backend::NdArray<f32>;

    /// Tolerance between two summation orders of the same f32 products.
    const TOL: f32 = 1e-5;

    #[test]
    fn patch_matmul_equals_conv_transpose() {
        let device = Default::default();
        let conv = ConvTranspose2dConfig::new([6, 4], [2, 2])
            .with_stride([2, 2])
            .init::<TestBackend>(&device);
        let x = Tensor::<TestBackend, 4>::random([2, 6, 3, 5], Distribution::Default, &device);
        let expected = conv.forward(x.clone());
        let got = conv_transpose_patches(&conv, x);
        assert_eq!(got.dims(), [2, 4, 6, 10]);
        let diff = (got - expected).abs().max().into_scalar();
        assert!(diff < TOL, "max difference {diff}");
    }
}
