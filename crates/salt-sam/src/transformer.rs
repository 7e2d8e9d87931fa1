//! `TwoWayTransformer`: tokens attend to the image and the image attends to the tokens.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::tensor::activation::softmax;
use burn::tensor::{backend::Backend, Tensor};
use salt_core::fused::matmul;

use crate::common::{torch_linear, DecoderMlpBlock, DecoderMlpBlockConfig};

/// Configuration of a [`TwoWayTransformer`].
#[derive(Config, Debug)]
pub struct TwoWayTransformerConfig {
    /// Number of two-way blocks (2).
    pub depth: usize,
    /// Token and image width (256).
    pub embedding_dim: usize,
    /// Attention heads (8).
    pub num_heads: usize,
    /// MLP hidden width (2048).
    pub mlp_dim: usize,
    /// Width reduction of the cross attentions (2).
    #[config(default = 2)]
    pub attention_downsample_rate: usize,
    /// Whether the positional encodings are added inside the blocks (stock SAM) or only to the
    /// queries of the final token→image attention (`salt_paper`).
    #[config(default = true)]
    pub pos_encodings_in_blocks: bool,
}

impl TwoWayTransformerConfig {
    /// PyTorch's default initialisation (LayerNorm eps 1e-5).
    pub fn init<B: Backend>(&self, device: &B::Device) -> TwoWayTransformer<B> {
        let d = self.embedding_dim;
        let attn = |rate: usize| DecoderAttentionConfig::new(d, self.num_heads, rate).init(device);
        let norm = || LayerNormConfig::new(d).init(device);
        TwoWayTransformer {
            layers: (0..self.depth)
                .map(|i| TwoWayAttentionBlock {
                    self_attn: attn(1),
                    norm1: norm(),
                    cross_attn_token_to_image: attn(self.attention_downsample_rate),
                    norm2: norm(),
                    mlp: DecoderMlpBlockConfig::new(d, self.mlp_dim).init(device),
                    norm3: norm(),
                    norm4: norm(),
                    cross_attn_image_to_token: attn(self.attention_downsample_rate),
                    skip_first_layer_pe: i == 0,
                    use_pe: self.pos_encodings_in_blocks,
                })
                .collect(),
            final_attn_token_to_image: attn(self.attention_downsample_rate),
            norm_final_attn: norm(),
            pos_encodings_in_blocks: self.pos_encodings_in_blocks,
        }
    }
}

/// SAM's two-way transformer.
#[derive(Module, Debug)]
pub struct TwoWayTransformer<B: Backend> {
    /// The blocks.
    pub layers: Vec<TwoWayAttentionBlock<B>>,
    /// Last attention of the tokens to the image.
    pub final_attn_token_to_image: DecoderAttention<B>,
    /// Norm after it.
    pub norm_final_attn: LayerNorm<B>,
    /// See [`TwoWayTransformerConfig::pos_encodings_in_blocks`].
    #[module(skip)]
    pub pos_encodings_in_blocks: bool,
}

impl<B: Backend> TwoWayTransformer<B> {
    /// Returns the processed tokens and image tokens.
    ///
    /// # Shapes
    /// `image_embedding, image_pe: [n, d, h, w]`, `point_embedding: [n, t, d]`
    /// → (`[n, t, d]`, `[n, h·w, d]`).
    pub fn forward(
        &self,
        image_embedding: Tensor<B, 4>,
        image_pe: Tensor<B, 4>,
        point_embedding: Tensor<B, 3>,
    ) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let [n, d, h, w] = image_embedding.dims();
        let keys = image_embedding.reshape([n, d, h * w]).swap_dims(1, 2); // [n, hw, d]
        let [pn, _, _, _] = image_pe.dims();
        let key_pe = image_pe.reshape([pn, d, h * w]).swap_dims(1, 2); // [1|n, hw, d]
        let mut queries = point_embedding.clone();
        let mut keys = keys;
        for layer in &self.layers {
            (queries, keys) = layer.forward(queries, keys, point_embedding.clone(), key_pe.clone());
        }
        let q = queries.clone() + point_embedding;
        let k = if self.pos_encodings_in_blocks {
            keys.clone() + key_pe
        } else {
            keys.clone()
        };
        let attn_out = self.final_attn_token_to_image.forward(q, k, keys.clone());
        let queries = self.norm_final_attn.forward(queries + attn_out);
        (queries, keys)
    }
}

/// Self-attention of the tokens, cross-attention tokens→image, MLP, cross-attention image→tokens.
#[derive(Module, Debug)]
pub struct TwoWayAttentionBlock<B: Backend> {
    /// Token self-attention.
    pub self_attn: DecoderAttention<B>,
    /// Norm after it.
    pub norm1: LayerNorm<B>,
    /// Tokens attend to the image.
    pub cross_attn_token_to_image: DecoderAttention<B>,
    /// Norm after it.
    pub norm2: LayerNorm<B>,
    /// Token MLP (ReLU).
    pub mlp: DecoderMlpBlock<B>,
    /// Norm after it.
    pub norm3: LayerNorm<B>,
    /// Norm after the image→token attention.
    pub norm4: LayerNorm<B>,
    /// The image attends to the tokens.
    pub cross_attn_image_to_token: DecoderAttention<B>,
    /// The first block replaces the tokens by their self-attention (no residual, no PE).
    #[module(skip)]
    pub skip_first_layer_pe: bool,
    /// Whether positional encodings are added (stock SAM: yes).
    #[module(skip)]
    pub use_pe: bool,
}

impl<B: Backend> TwoWayAttentionBlock<B> {
    /// # Shapes
    /// `queries, query_pe: [n, t, d]`, `keys: [n, hw, d]`, `key_pe: [1|n, hw, d]` → same as inputs.
    pub fn forward(
        &self,
        queries: Tensor<B, 3>,
        keys: Tensor<B, 3>,
        query_pe: Tensor<B, 3>,
        key_pe: Tensor<B, 3>,
    ) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let with_qpe = |x: Tensor<B, 3>| if self.use_pe { x + query_pe.clone() } else { x };
        let with_kpe = |x: Tensor<B, 3>| if self.use_pe { x + key_pe.clone() } else { x };
        let queries = if self.skip_first_layer_pe {
            self.self_attn
                .forward(queries.clone(), queries.clone(), queries)
        } else {
            let q = with_qpe(queries.clone());
            queries.clone() + self.self_attn.forward(q.clone(), q, queries)
        };
        let queries = self.norm1.forward(queries);

        let q = with_qpe(queries.clone());
        let k = with_kpe(keys.clone());
        let queries = queries + self.cross_attn_token_to_image.forward(q, k, keys.clone());
        let queries = self.norm2.forward(queries);

        let queries = queries.clone() + self.mlp.forward(queries);
        let queries = self.norm3.forward(queries);

        let q = with_qpe(queries.clone());
        let k = with_kpe(keys.clone());
        let keys = keys
            + self
                .cross_attn_image_to_token
                .forward(k, q, queries.clone());
        let keys = self.norm4.forward(keys);
        (queries, keys)
    }
}

/// Configuration of a [`DecoderAttention`].
#[derive(Config, Debug)]
pub struct DecoderAttentionConfig {
    /// Input / output width.
    pub embedding_dim: usize,
    /// Heads.
    pub num_heads: usize,
    /// Internal width = `embedding_dim / downsample_rate`.
    pub downsample_rate: usize,
}

impl DecoderAttentionConfig {
    /// PyTorch's default initialisation.
    pub fn init<B: Backend>(&self, device: &B::Device) -> DecoderAttention<B> {
        let d = self.embedding_dim;
        let internal = d / self.downsample_rate;
        DecoderAttention {
            q_proj: torch_linear(d, internal, device),
            k_proj: torch_linear(d, internal, device),
            v_proj: torch_linear(d, internal, device),
            out_proj: torch_linear(internal, d, device),
            num_heads: self.num_heads,
        }
    }
}

/// The decoder's attention (`transformer.Attention`): projections to a narrower width.
#[derive(Module, Debug)]
pub struct DecoderAttention<B: Backend> {
    /// Query projection.
    pub q_proj: Linear<B>,
    /// Key projection.
    pub k_proj: Linear<B>,
    /// Value projection.
    pub v_proj: Linear<B>,
    /// Output projection.
    pub out_proj: Linear<B>,
    /// Heads.
    #[module(skip)]
    pub num_heads: usize,
}

impl<B: Backend> DecoderAttention<B> {
    fn separate_heads(&self, x: Tensor<B, 3>) -> Tensor<B, 4> {
        let [n, t, c] = x.dims();
        x.reshape([n, t, self.num_heads, c / self.num_heads])
            .swap_dims(1, 2) // [n, heads, t, c/h]
    }

    /// # Shapes
    /// `q: [n, tq, d]`, `k, v: [n, tk, d]` → `[n, tq, d]`.
    pub fn forward(&self, q: Tensor<B, 3>, k: Tensor<B, 3>, v: Tensor<B, 3>) -> Tensor<B, 3> {
        let q = self.separate_heads(self.q_proj.forward(q));
        let k = self.separate_heads(self.k_proj.forward(k));
        let v = self.separate_heads(self.v_proj.forward(v));
        let [n, heads, tq, c] = q.dims();
        let attn = matmul(q, k.swap_dims(2, 3)).div_scalar((c as f64).sqrt()); // [n, h, tq, tk]
        let out = matmul(softmax(attn, 3), v); // [n, h, tq, c]
        let out = out.swap_dims(1, 2).reshape([n, tq, heads * c]);
        self.out_proj.forward(out)
    }
}
