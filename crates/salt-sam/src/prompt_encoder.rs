//! `PromptEncoder`: points (with labels and the padding point), boxes, a mask input, no prompt;
//! and the `salt_paper` prompts (one learned token, an optional text embedding).

use std::f64::consts::PI;

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Embedding, EmbeddingConfig, Linear};
use burn::tensor::activation::{gelu, relu};
use burn::tensor::{backend::Backend, Distribution, Int, Tensor, TensorData};

use crate::common::{torch_linear, LayerNorm2d, LayerNorm2dConfig};

/// Configuration of a [`PromptEncoder`].
#[derive(Config, Debug)]
pub struct PromptEncoderConfig {
    /// Prompt embedding width (256).
    pub embed_dim: usize,
    /// Token grid of the image embedding `[h, w]` (64×64 at 1024).
    pub image_embedding_size: [usize; 2],
    /// Padded input size `[h, w]` the coordinates refer to (1024×1024).
    pub input_image_size: [usize; 2],
    /// Hidden channels of the mask downscaling convolutions.
    #[config(default = 16)]
    pub mask_in_chans: usize,
    /// `salt_paper`: one learned `embed_dim` token (zero at init) is prepended to the sparse
    /// prompt (`prompt_encoder.prompt_token`, absent from SAM checkpoints).
    #[config(default = false)]
    pub learned_prompt_token: bool,
    /// Whether the dense `no_mask_embed` is added to the image embedding when no mask is given
    /// (stock SAM: true; `salt_paper`: false).
    #[config(default = true)]
    pub dense_no_mask_embed: bool,
    /// If set, a text embedding of this width (512 for CLIP ViT-B/32) can be given as a prompt;
    /// it becomes one sparse token through Linear → ReLU → BatchNorm1d, as in the paper.
    #[config(default = "None")]
    pub text_embedding_dim: Option<usize>,
}

impl PromptEncoderConfig {
    /// SAM's initialisation (embeddings N(0, 1), Gaussian PE matrix N(0, 1)).
    pub fn init<B: Backend>(&self, device: &B::Device) -> PromptEncoder<B> {
        let d = self.embed_dim;
        let emb = || EmbeddingConfig::new(1, d).init(device);
        let mic = self.mask_in_chans;
        let g = Tensor::random([2, d / 2], Distribution::Normal(0.0, 1.0), device);
        PromptEncoder {
            pe_layer: PositionEmbeddingRandom {
                positional_encoding_gaussian_matrix: Param::from_tensor(g).set_require_grad(false),
            },
            point_embeddings: (0..4).map(|_| emb()).collect(),
            not_a_point_embed: emb(),
            mask_downscaling: MaskDownscaling {
                conv1: Conv2dConfig::new([1, mic / 4], [2, 2])
                    .with_stride([2, 2])
                    .init(device),
                norm1: LayerNorm2dConfig::new(mic / 4).init(device),
                conv2: Conv2dConfig::new([mic / 4, mic], [2, 2])
                    .with_stride([2, 2])
                    .init(device),
                norm2: LayerNorm2dConfig::new(mic).init(device),
                conv3: Conv2dConfig::new([mic, d], [1, 1]).init(device),
            },
            no_mask_embed: emb(),
            prompt_token: self
                .learned_prompt_token
                .then(|| Param::from_tensor(Tensor::zeros([1, d], device))),
            text_projection: self.text_embedding_dim.map(|t| TextProjection {
                linear: torch_linear(t, d, device),
                norm: BatchNormConfig::new(d).init(device),
            }),
            image_embedding_size: self.image_embedding_size,
            input_image_size: self.input_image_size,
            dense_no_mask_embed: self.dense_no_mask_embed,
        }
    }
}

/// Prompts for a batch of `n` prompt sets, in the coordinates of the resized, padded input
/// (see [`crate::ResizeLongestSide`] to map original pixels).
#[derive(Debug, Clone)]
pub struct Prompts<B: Backend> {
    /// `[n, p, 2]` point coordinates `(x, y)`.
    pub points: Option<Tensor<B, 3>>,
    /// `[n, p]` labels: 1 foreground, 0 background, −1 padding (ignored point).
    pub labels: Option<Tensor<B, 2, Int>>,
    /// `[n, 4]` boxes `(x0, y0, x1, y1)`.
    pub boxes: Option<Tensor<B, 2>>,
    /// `[n, 1, 4g, 4g]` low-resolution mask logits from a previous prediction.
    pub masks: Option<Tensor<B, 4>>,
    /// `[n, text_embedding_dim]` text embeddings (needs `text_embedding_dim`).
    pub text: Option<Tensor<B, 2>>,
}

impl<B: Backend> Default for Prompts<B> {
    fn default() -> Self {
        Self {
            points: None,
            labels: None,
            boxes: None,
            masks: None,
            text: None,
        }
    }
}

impl<B: Backend> Prompts<B> {
    /// No prompt at all (the learned token alone for `salt_paper`).
    pub fn none() -> Self {
        Self::default()
    }

    /// The batch size the prompts imply, if any prompt is given.
    pub fn batch_size(&self) -> Option<usize> {
        self.points
            .as_ref()
            .map(|p| p.dims()[0])
            .or_else(|| self.boxes.as_ref().map(|b| b.dims()[0]))
            .or_else(|| self.masks.as_ref().map(|m| m.dims()[0]))
            .or_else(|| self.text.as_ref().map(|t| t.dims()[0]))
    }
}

/// The sparse tokens and the dense embedding of a batch of prompts.
#[derive(Debug, Clone)]
pub struct PromptEmbeddings<B: Backend> {
    /// `[n, t, d]`, `None` when there is no sparse token.
    pub sparse: Option<Tensor<B, 3>>,
    /// `[n, d, g, g]` added to the image embedding, `None` when nothing is added.
    pub dense: Option<Tensor<B, 4>>,
}

/// SAM's prompt encoder.
#[derive(Module, Debug)]
pub struct PromptEncoder<B: Backend> {
    /// Random Fourier features of coordinates.
    pub pe_layer: PositionEmbeddingRandom<B>,
    /// Background point, foreground point, box top-left, box bottom-right: `[1, d]` each.
    pub point_embeddings: Vec<Embedding<B>>,
    /// The padding point's embedding.
    pub not_a_point_embed: Embedding<B>,
    /// Mask input → dense embedding (PyTorch `mask_downscaling.0/1/3/4/6`).
    pub mask_downscaling: MaskDownscaling<B>,
    /// Dense embedding when no mask is given.
    pub no_mask_embed: Embedding<B>,
    /// `salt_paper`'s learned sparse token `[1, d]`.
    pub prompt_token: Option<Param<Tensor<B, 2>>>,
    /// Text embedding → one sparse token.
    pub text_projection: Option<TextProjection<B>>,
    /// Token grid `[h, w]`.
    #[module(skip)]
    pub image_embedding_size: [usize; 2],
    /// Input size `[h, w]`.
    #[module(skip)]
    pub input_image_size: [usize; 2],
    /// Whether `no_mask_embed` is used.
    #[module(skip)]
    pub dense_no_mask_embed: bool,
}

impl<B: Backend> PromptEncoder<B> {
    /// The dense positional encoding of the image grid (`get_dense_pe`).
    ///
    /// # Shapes
    /// → `[1, d, g, g]`.
    pub fn get_dense_pe(&self) -> Tensor<B, 4> {
        let [h, w] = self.image_embedding_size;
        let device = self.device();
        // Cell centres (cumsum of ones − 0.5), normalised by the grid size: (x, y) per cell.
        let coords: Vec<f32> = (0..h)
            .flat_map(|i| {
                (0..w).flat_map(move |j| [(j as f32 + 0.5) / w as f32, (i as f32 + 0.5) / h as f32])
            })
            .collect();
        let coords = Tensor::<B, 3>::from_data(TensorData::new(coords, [h, w, 2]), &device);
        let pe = self.pe_layer.pe_encoding(coords); // [h, w, d]
        pe.permute([2, 0, 1]).unsqueeze_dim(0)
    }

    fn device(&self) -> B::Device {
        self.pe_layer
            .positional_encoding_gaussian_matrix
            .val()
            .device()
    }

    /// Points `[n, p, 2]` with labels `[n, p]` → `[n, p (+1), d]`; `pad` appends the padding
    /// point (label −1) used when no box is given.
    fn embed_points(
        &self,
        points: Tensor<B, 3>,
        labels: Tensor<B, 2, Int>,
        pad: bool,
    ) -> Tensor<B, 3> {
        let device = points.device();
        let [n, p, _] = points.dims();
        let points = points.add_scalar(0.5); // centre of the pixel
        let (points, labels, p) = if pad {
            let points = Tensor::cat(vec![points, Tensor::zeros([n, 1, 2], &device)], 1);
            let labels = Tensor::cat(vec![labels, Tensor::full([n, 1], -1, &device)], 1);
            (points, labels, p + 1)
        } else {
            (points, labels, p)
        };
        let pe = self
            .pe_layer
            .forward_with_coords(points, self.input_image_size); // [n, p, d]
        let d = pe.dims()[2];
        let is = |v: i64| labels.clone().equal_elem(v).float().reshape([n, p, 1]);
        let row = |e: &Embedding<B>| e.weight.val().reshape([1, 1, d]);
        // label −1: the PE is replaced by not_a_point; 0 / 1: the label's embedding is added.
        pe * (is(-1).neg().add_scalar(1.0))
            + is(-1) * row(&self.not_a_point_embed)
            + is(0) * row(&self.point_embeddings[0])
            + is(1) * row(&self.point_embeddings[1])
    }

    /// Boxes `[n, 4]` → two corner tokens `[n, 2, d]`.
    fn embed_boxes(&self, boxes: Tensor<B, 2>) -> Tensor<B, 3> {
        let [n, _] = boxes.dims();
        let corners = boxes.add_scalar(0.5).reshape([n, 2, 2]);
        let pe = self
            .pe_layer
            .forward_with_coords(corners, self.input_image_size); // [n, 2, d]
        let d = pe.dims()[2];
        let corner_rows = Tensor::cat(
            vec![
                self.point_embeddings[2].weight.val(),
                self.point_embeddings[3].weight.val(),
            ],
            0,
        ); // [2, d]
        pe + corner_rows.reshape([1, 2, d])
    }

    /// Embeds the prompts of `batch` prompt sets (`batch` is used when no prompt fixes it).
    ///
    /// Sparse token order: learned token, text token, points, box corners.
    ///
    /// # Panics
    /// If `points` is given without `labels` (or with other shapes), or `text` without
    /// `text_embedding_dim`: [`crate::Sam::decode`] checks these first.
    pub fn forward(&self, prompts: &Prompts<B>, batch: usize) -> PromptEmbeddings<B> {
        let n = prompts.batch_size().unwrap_or(batch);
        let mut sparse = Vec::new();
        if let Some(token) = &self.prompt_token {
            let d = token.dims()[1];
            sparse.push(token.val().reshape([1, 1, d]).repeat_dim(0, n));
        }
        if let (Some(text), Some(proj)) = (&prompts.text, &self.text_projection) {
            sparse.push(proj.forward(text.clone()).unsqueeze_dim(1));
        }
        if let Some(points) = &prompts.points {
            let labels = prompts
                .labels
                .clone()
                .expect("labels are checked by Sam::decode");
            sparse.push(self.embed_points(points.clone(), labels, prompts.boxes.is_none()));
        }
        if let Some(boxes) = &prompts.boxes {
            sparse.push(self.embed_boxes(boxes.clone()));
        }
        let sparse = (!sparse.is_empty()).then(|| Tensor::cat(sparse, 1));
        let [gh, gw] = self.image_embedding_size;
        let dense = match &prompts.masks {
            Some(masks) => Some(self.mask_downscaling.forward(masks.clone())),
            None if self.dense_no_mask_embed => {
                let d = self.no_mask_embed.weight.dims()[1];
                Some(
                    self.no_mask_embed
                        .weight
                        .val()
                        .reshape([1, d, 1, 1])
                        .expand([n, d, gh, gw]),
                )
            }
            None => None,
        };
        PromptEmbeddings { sparse, dense }
    }
}

/// Positional encoding with random spatial frequencies (`PositionEmbeddingRandom`).
#[derive(Module, Debug)]
pub struct PositionEmbeddingRandom<B: Backend> {
    /// `[2, d/2]` frequencies (a persistent buffer in SAM: it is in the checkpoint).
    pub positional_encoding_gaussian_matrix: Param<Tensor<B, 2>>,
}

impl<B: Backend> PositionEmbeddingRandom<B> {
    /// Coordinates normalised to `[0, 1]` → `[sin, cos]` features.
    ///
    /// # Shapes
    /// `coords: [a, b, 2]` → `[a, b, d]`.
    pub fn pe_encoding(&self, coords: Tensor<B, 3>) -> Tensor<B, 3> {
        let [a, b, _] = coords.dims();
        let g = self.positional_encoding_gaussian_matrix.val();
        let half = g.dims()[1];
        let coords = coords.mul_scalar(2.0).sub_scalar(1.0);
        let proj = coords.reshape([a * b, 2]).matmul(g).mul_scalar(2.0 * PI); // [a·b, d/2]
        Tensor::cat(vec![proj.clone().sin(), proj.cos()], 1).reshape([a, b, 2 * half])
    }

    /// Pixel coordinates `(x, y)` of an image of size `[h, w]` → features.
    ///
    /// # Shapes
    /// `coords: [n, p, 2]` → `[n, p, d]`.
    pub fn forward_with_coords(&self, coords: Tensor<B, 3>, [h, w]: [usize; 2]) -> Tensor<B, 3> {
        let device = coords.device();
        let scale = Tensor::<B, 1>::from_floats([1.0 / w as f32, 1.0 / h as f32], &device);
        self.pe_encoding(coords * scale.reshape([1, 1, 2]))
    }
}

/// The mask-input branch: two stride-2 convolutions with LayerNorm2d and GELU, then a 1×1.
#[derive(Module, Debug)]
pub struct MaskDownscaling<B: Backend> {
    /// `mask_downscaling.0`.
    pub conv1: Conv2d<B>,
    /// `mask_downscaling.1`.
    pub norm1: LayerNorm2d<B>,
    /// `mask_downscaling.3`.
    pub conv2: Conv2d<B>,
    /// `mask_downscaling.4`.
    pub norm2: LayerNorm2d<B>,
    /// `mask_downscaling.6`.
    pub conv3: Conv2d<B>,
}

impl<B: Backend> MaskDownscaling<B> {
    /// # Shapes
    /// `masks: [n, 1, 4g, 4g]` → `[n, d, g, g]`.
    pub fn forward(&self, masks: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = gelu(self.norm1.forward(self.conv1.forward(masks)));
        let x = gelu(self.norm2.forward(self.conv2.forward(x)));
        self.conv3.forward(x)
    }
}

/// The paper's text prompt: Linear → ReLU → BatchNorm1d.
///
/// With one label per dataset the batch statistics in training make the token equal to the
/// norm's bias β (salt-reference.md §3): in effect a learned token.
#[derive(Module, Debug)]
pub struct TextProjection<B: Backend> {
    /// `text_dim → d`.
    pub linear: Linear<B>,
    /// BatchNorm1d over the `d` features.
    pub norm: BatchNorm<B>,
}

impl<B: Backend> TextProjection<B> {
    /// # Shapes
    /// `text: [n, text_dim]` → `[n, d]`.
    pub fn forward(&self, text: Tensor<B, 2>) -> Tensor<B, 2> {
        self.norm.forward(relu(self.linear.forward(text)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SamConfig;

    type TestBackend = burn::backend::NdArray<f32>;

    /// BatchNorm's epsilon (burn's default, as `nn.BatchNorm1d`).
    const BN_EPS: f64 = 1e-5;

    #[test]
    fn text_prompt_is_linear_relu_batchnorm_after_the_learned_token() {
        let device = Default::default();
        let mut config = SamConfig::tiny_salt_paper();
        config.prompt_encoder.text_embedding_dim = Some(8);
        let sam = config.init::<TestBackend>(&device).unwrap();
        let pe = &sam.prompt_encoder;
        let text = Tensor::<TestBackend, 2>::random([1, 8], Distribution::Default, &device);
        let prompts = Prompts {
            text: Some(text.clone()),
            ..Prompts::none()
        };
        let sparse = pe.forward(&prompts, 1).sparse.unwrap();
        assert_eq!(sparse.dims(), [1, 2, 32]);
        // Token 0 is the learned token (zeros at init); token 1 is BatchNorm in inference mode
        // (running mean 0, variance 1, γ 1, β 0): relu(W·x + b) / sqrt(1 + eps).
        let proj = pe.text_projection.as_ref().unwrap();
        let expected = relu(proj.linear.forward(text)).div_scalar((1.0 + BN_EPS).sqrt());
        let got = sparse.clone().narrow(1, 1, 1).reshape([1, 32]);
        let diff = (got - expected).abs().max().into_scalar();
        assert!(diff < 1e-6, "text token differs by {diff}");
        assert_eq!(sparse.narrow(1, 0, 1).abs().sum().into_scalar(), 0.0);
        // No dense embedding in salt_paper.
        assert!(pe.forward(&prompts, 1).dense.is_none());
    }

    #[test]
    fn text_prompt_without_text_input_is_an_error() {
        let device = Default::default();
        let sam = SamConfig::tiny().init::<TestBackend>(&device).unwrap();
        let emb = Tensor::<TestBackend, 4>::zeros([1, 32, 16, 16], &device);
        let prompts = Prompts {
            text: Some(Tensor::zeros([1, 512], &device)),
            ..Prompts::none()
        };
        let err = sam.decode(emb, &prompts, false).unwrap_err().to_string();
        assert!(err.contains("text_embedding_dim"), "{err}");
    }
}
