//! Configurations and presets: stock SAM (`vit_b`, `vit_l`, `vit_h`), the tiny test model and the
//! SALT paper's 512 variant (`salt_paper`).

use burn::config::Config;
use burn::tensor::backend::Backend;

use crate::error::Error;
use crate::image_encoder::ImageEncoderViTConfig;
use crate::mask_decoder::MaskDecoderConfig;
use crate::prompt_encoder::PromptEncoderConfig;
use crate::sam::Sam;

/// The whole model: image encoder, prompt encoder, mask decoder and pixel statistics.
#[derive(Config, Debug)]
pub struct SamConfig {
    /// The ViT image encoder.
    pub image_encoder: ImageEncoderViTConfig,
    /// The prompt encoder.
    pub prompt_encoder: PromptEncoderConfig,
    /// The mask decoder.
    pub mask_decoder: MaskDecoderConfig,
    /// Per-channel RGB mean subtracted before the encoder (0–255 scale).
    #[config(default = "[123.675, 116.28, 103.53]")]
    pub pixel_mean: [f64; 3],
    /// Per-channel RGB standard deviation (0–255 scale).
    #[config(default = "[58.395, 57.12, 57.375]")]
    pub pixel_std: [f64; 3],
    /// Logit threshold of a foreground pixel.
    #[config(default = 0.0)]
    pub mask_threshold: f64,
    /// Preset name, for messages (`vit_b`, ..., or `custom`).
    #[config(default = "String::from(\"custom\")")]
    pub name: String,
}

/// Stock SAM with the given ViT size (Meta's `_build_sam`).
fn stock(
    name: &str,
    embed_dim: usize,
    depth: usize,
    num_heads: usize,
    global: [usize; 4],
) -> SamConfig {
    let prompt_dim = 256;
    let img_size = 1024;
    let patch = 16;
    let grid = img_size / patch;
    SamConfig::new(
        ImageEncoderViTConfig::new(img_size, patch, embed_dim, depth, num_heads, prompt_dim)
            .with_window_size(14)
            .with_global_attn_indexes(global.to_vec()),
        PromptEncoderConfig::new(prompt_dim, [grid, grid], [img_size, img_size]),
        MaskDecoderConfig::new(prompt_dim),
    )
    .with_name(name.to_string())
}

impl SamConfig {
    /// SAM ViT-B (`sam_vit_b_01ec64.pth`): 768-d, 12 blocks, 12 heads, global blocks 2, 5, 8, 11.
    pub fn vit_b() -> Self {
        stock("vit_b", 768, 12, 12, [2, 5, 8, 11])
    }

    /// SAM ViT-L (`sam_vit_l_0b3195.pth`): 1024-d, 24 blocks, 16 heads.
    pub fn vit_l() -> Self {
        stock("vit_l", 1024, 24, 16, [5, 11, 17, 23])
    }

    /// SAM ViT-H (`sam_vit_h_4b8939.pth`): 1280-d, 32 blocks, 16 heads.
    pub fn vit_h() -> Self {
        stock("vit_h", 1280, 32, 16, [7, 15, 23, 31])
    }

    /// A tiny stock SAM for tests (equal to `TINY` in `scripts/sam_reference.py`).
    ///
    /// Input 128, patch 8: a 16×16 token grid that is not a multiple of the window (5), so the
    /// windowed blocks pad to 20×20 and crop, and relative positions are exercised; blocks 1 and
    /// 3 are global. Prompt/decoder width 32.
    pub fn tiny() -> Self {
        let prompt_dim = 32;
        SamConfig::new(
            ImageEncoderViTConfig::new(128, 8, 32, 4, 2, prompt_dim)
                .with_window_size(5)
                .with_global_attn_indexes(vec![1, 3]),
            PromptEncoderConfig::new(prompt_dim, [16, 16], [128, 128]),
            MaskDecoderConfig::new(prompt_dim)
                .with_transformer_heads(2)
                .with_transformer_mlp_dim(64)
                .with_iou_head_hidden_dim(32),
        )
        .with_name("tiny".to_string())
    }

    /// The tiny model with every `salt_paper` change (tests): input 64, an 8×8 grid whose
    /// `pos_embed` is pooled from the tiny checkpoint's 16×16, and the flags of [`Self::salt_paper`].
    pub fn tiny_salt_paper() -> Self {
        Self::tiny().with_paper_changes(64, Some(16), "tiny_salt_paper")
    }

    /// The SALT paper's model (S-SAM's "prompt-adapted SAM"; salt-reference.md §3), from ViT-B:
    ///
    /// - input 512 (`image_encoder.img_size`), a 32×32 token grid;
    /// - `image_encoder.pos_embed_source_grid = Some(64)`: the checkpoint's 64×64 `pos_embed` is
    ///   average-pooled 2×2 at load;
    /// - global attention in every block (`window_size = 0`) without relative positions
    ///   (`use_rel_pos = false`: the checkpoint's `rel_pos_*` are skipped by design);
    /// - encoder LayerNorm eps 1e-5 (`layer_norm_eps`);
    /// - `prompt_encoder.learned_prompt_token`: one learned 256-d token, zero at init, is the
    ///   sparse prompt; `prompt_encoder.dense_no_mask_embed = false`: no dense embedding is added;
    /// - `mask_decoder.pos_encodings_in_blocks = false`: no positional encodings inside the
    ///   two-way blocks, only the final token→image attention adds the token PE to its queries;
    /// - `mask_decoder.single_mask_output = true`: mask token 0 only.
    ///
    /// The text-embedding input (CLIP → Linear → ReLU → BatchNorm1d) is off; turn it on with
    /// `prompt_encoder.text_embedding_dim = Some(512)`.
    pub fn salt_paper() -> Self {
        Self::vit_b().with_paper_changes(512, Some(64), "salt_paper")
    }

    /// This model with every change of [`Self::salt_paper`]: input `img_size`, global attention
    /// in every block without relative positions, LayerNorm eps 1e-5, the learned prompt token
    /// without a dense embedding, no positional encodings inside the decoder blocks, one mask.
    /// `pos_embed_source_grid`: the grid of the checkpoint's `pos_embed`, pooled to the model's
    /// at load (`None`: loaded as it is).
    pub fn with_paper_changes(
        self,
        img_size: usize,
        pos_embed_source_grid: Option<usize>,
        name: &str,
    ) -> Self {
        let mut encoder = self.image_encoder;
        let depth = encoder.depth;
        let grid = img_size / encoder.patch_size;
        encoder.img_size = img_size;
        let encoder = encoder
            .with_window_size(0)
            .with_global_attn_indexes((0..depth).collect())
            .with_use_rel_pos(false)
            .with_layer_norm_eps(1e-5)
            .with_pos_embed_source_grid(pos_embed_source_grid);
        let prompt = PromptEncoderConfig::new(
            self.prompt_encoder.embed_dim,
            [grid, grid],
            [img_size, img_size],
        )
        .with_mask_in_chans(self.prompt_encoder.mask_in_chans)
        .with_learned_prompt_token(true)
        .with_dense_no_mask_embed(false);
        let decoder = self
            .mask_decoder
            .with_pos_encodings_in_blocks(false)
            .with_single_mask_output(true);
        SamConfig::new(encoder, prompt, decoder).with_name(name.to_string())
    }

    /// A preset by name: `vit_b`, `vit_l`, `vit_h`, `salt_paper` or `tiny`.
    pub fn preset(name: &str) -> crate::error::Result<Self> {
        match name {
            "vit_b" => Ok(Self::vit_b()),
            "vit_l" => Ok(Self::vit_l()),
            "vit_h" => Ok(Self::vit_h()),
            "salt_paper" => Ok(Self::salt_paper()),
            "tiny" => Ok(Self::tiny()),
            "tiny_salt_paper" => Ok(Self::tiny_salt_paper()),
            other => Err(Error::UnknownPreset(other.to_string())),
        }
    }

    /// Checks the configuration for values the model cannot be built with.
    pub fn validate(&self) -> crate::error::Result<()> {
        self.image_encoder.validate()?;
        let enc = &self.image_encoder;
        let grid = enc.img_size / enc.patch_size;
        if self.prompt_encoder.image_embedding_size != [grid, grid] {
            return Err(Error::InvalidConfig {
                field: "prompt_encoder.image_embedding_size",
                value: format!("{:?}", self.prompt_encoder.image_embedding_size),
                expected: format!("the encoder's token grid [{grid}, {grid}]"),
            });
        }
        if self.prompt_encoder.input_image_size != [enc.img_size, enc.img_size] {
            return Err(Error::InvalidConfig {
                field: "prompt_encoder.input_image_size",
                value: format!("{:?}", self.prompt_encoder.input_image_size),
                expected: format!("the encoder's input size [{0}, {0}]", enc.img_size),
            });
        }
        if enc.out_chans != self.prompt_encoder.embed_dim
            || self.prompt_encoder.embed_dim != self.mask_decoder.transformer_dim
        {
            return Err(Error::InvalidConfig {
                field: "image_encoder.out_chans",
                value: enc.out_chans.to_string(),
                expected: format!(
                    "equal to prompt_encoder.embed_dim ({}) and mask_decoder.transformer_dim ({})",
                    self.prompt_encoder.embed_dim, self.mask_decoder.transformer_dim
                ),
            });
        }
        self.mask_decoder.validate()
    }

    /// Builds the model with PyTorch's default initialisation (load a checkpoint next).
    pub fn init<B: Backend>(&self, device: &B::Device) -> crate::error::Result<Sam<B>> {
        self.validate()?;
        Ok(Sam::new(self, device))
    }
}
