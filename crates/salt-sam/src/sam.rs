//! `Sam`: the three parts together, with SAM's pre- and post-processing.
//!
//! Embed an image once with [`Sam::image_embeddings`], then prompt it many times with
//! [`Sam::decode`].

use burn::module::Module;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{backend::Backend, Tensor, TensorData};

use crate::config::SamConfig;
use crate::error::{Error, Result};
use crate::image_encoder::ImageEncoderViT;
use crate::mask_decoder::{DecoderOutput, MaskDecoder};
use crate::prompt_encoder::{PromptEncoder, Prompts};

/// Segment Anything: image encoder, prompt encoder and mask decoder.
///
/// Field names are SAM's so that module paths equal the checkpoint keys
/// (`image_encoder.blocks.3.attn.qkv.weight`).
#[derive(Module, Debug)]
pub struct Sam<B: Backend> {
    /// The ViT image encoder.
    pub image_encoder: ImageEncoderViT<B>,
    /// The prompt encoder.
    pub prompt_encoder: PromptEncoder<B>,
    /// The mask decoder.
    pub mask_decoder: MaskDecoder<B>,
    /// The configuration the model was built with.
    #[module(skip)]
    pub config: SamConfig,
}

salt_core::visit_adaptable_fields!(Sam { image_encoder });

impl<B: Backend> Sam<B> {
    /// Builds the modules (use [`SamConfig::init`], which validates first).
    pub(crate) fn new(config: &SamConfig, device: &B::Device) -> Self {
        Sam {
            image_encoder: config.image_encoder.init(device),
            prompt_encoder: config.prompt_encoder.init(device),
            mask_decoder: config.mask_decoder.init(device),
            config: config.clone(),
        }
    }

    /// The encoder's square input size.
    pub fn img_size(&self) -> usize {
        self.config.image_encoder.img_size
    }

    /// Normalises a resized RGB image (`h × w × 3`, row-major `u8`, longest side ≤ `img_size`)
    /// with the pixel mean and std, and zero-pads it at the bottom and right to `img_size`
    /// (SAM's `preprocess`). Resize first with `ResizeLongestSide` (PIL-compatible, salt-data).
    ///
    /// # Shapes
    /// → `[1, 3, img_size, img_size]`.
    pub fn preprocess(
        &self,
        rgb: &[u8],
        h: usize,
        w: usize,
        device: &B::Device,
    ) -> Result<Tensor<B, 4>> {
        let s = self.img_size();
        if h > s || w > s || h == 0 || w == 0 {
            return Err(Error::InvalidConfig {
                field: "preprocess image size",
                value: format!("{h}×{w}"),
                expected: format!(
                    "a resized image with sides in 1..={s} (resize the longest side to {s} first)"
                ),
            });
        }
        if rgb.len() != h * w * 3 {
            return Err(Error::InvalidConfig {
                field: "preprocess image buffer",
                value: format!("{} bytes", rgb.len()),
                expected: format!("{h}·{w}·3 = {} bytes of RGB", h * w * 3),
            });
        }
        let mean = self.config.pixel_mean.map(|v| v as f32);
        let std = self.config.pixel_std.map(|v| v as f32);
        let mut data = vec![0f32; 3 * s * s];
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    let v = rgb[(y * w + x) * 3 + c] as f32;
                    data[c * s * s + y * s + x] = (v - mean[c]) / std[c];
                }
            }
        }
        Ok(Tensor::from_data(
            TensorData::new(data, [1, 3, s, s]),
            device,
        ))
    }

    /// Runs the image encoder.
    ///
    /// # Shapes
    /// `images: [n, 3, img_size, img_size]` (from [`Sam::preprocess`]) → `[n, 256, g, g]`.
    pub fn image_embeddings(&self, images: Tensor<B, 4>) -> Tensor<B, 4> {
        self.image_encoder.forward(images)
    }

    /// Predicts low-resolution masks for prompts on precomputed image embeddings.
    ///
    /// One image (`embeddings` batch 1) can be shared by `n` prompt sets; otherwise the image
    /// batch must equal the prompt batch. `multimask` returns masks 1..=3 (SAM's ambiguity-aware
    /// output); otherwise mask 0.
    ///
    /// # Shapes
    /// `embeddings: [1|n, 256, g, g]` → low-res logits `[n, m, 4g, 4g]`, IoU `[n, m]`.
    pub fn decode(
        &self,
        embeddings: Tensor<B, 4>,
        prompts: &Prompts<B>,
        multimask: bool,
    ) -> Result<DecoderOutput<B>> {
        let n_img = embeddings.dims()[0];
        let n = self.check_prompts(prompts, n_img)?;
        if multimask && self.mask_decoder.single_mask_output {
            return Err(Error::InvalidPrompt(format!(
                "the `{}` model has single-mask output (mask_decoder.single_mask_output); ask for one mask",
                self.config.name
            )));
        }
        let prompt = self.prompt_encoder.forward(prompts, n);
        let image_pe = self.prompt_encoder.get_dense_pe();
        Ok(self.mask_decoder.forward(
            embeddings,
            image_pe,
            prompt.sparse,
            prompt.dense,
            n,
            multimask,
        ))
    }

    /// Checks prompt shapes against each other and the model; returns the prompt batch.
    fn check_prompts(&self, prompts: &Prompts<B>, n_img: usize) -> Result<usize> {
        let n = prompts.batch_size().unwrap_or(n_img);
        let bad = |what: String| Err(Error::InvalidPrompt(what));
        if n_img != n && n_img != 1 {
            return bad(format!("{n_img} image embeddings but {n} prompt sets; give one image or one prompt set per image"));
        }
        match (&prompts.points, &prompts.labels) {
            (Some(p), Some(l)) => {
                let [pn, pp, two] = p.dims();
                if l.dims() != [pn, pp] || two != 2 || pn != n {
                    return bad(format!(
                        "points {:?} need labels [n, p] = [{pn}, {pp}], got {:?}",
                        p.dims(),
                        l.dims()
                    ));
                }
            }
            (Some(_), None) => return bad("points without labels".into()),
            (None, Some(_)) => return bad("labels without points".into()),
            (None, None) => {}
        }
        if let Some(b) = &prompts.boxes {
            if b.dims() != [n, 4] {
                return bad(format!(
                    "boxes must be [n, 4] = [{n}, 4], got {:?}",
                    b.dims()
                ));
            }
        }
        if let Some(m) = &prompts.masks {
            let [gh, gw] = self.prompt_encoder.image_embedding_size;
            if m.dims() != [n, 1, 4 * gh, 4 * gw] {
                return bad(format!(
                    "mask input must be [{n}, 1, {}, {}], got {:?}",
                    4 * gh,
                    4 * gw,
                    m.dims()
                ));
            }
        }
        if let Some(t) = &prompts.text {
            match &self.config.prompt_encoder.text_embedding_dim {
                None => return bad(format!("a text embedding was given but the `{}` model has no text input (prompt_encoder.text_embedding_dim)", self.config.name)),
                Some(d) if t.dims() != [n, *d] => {
                    return bad(format!("text embedding must be [{n}, {d}], got {:?}", t.dims()))
                }
                Some(_) => {}
            }
        }
        Ok(n)
    }

    /// Upsamples low-resolution logits to the input size, removes the padding and resizes to the
    /// original image (bilinear, `align_corners = false`, as `postprocess_masks`).
    ///
    /// # Shapes
    /// `low_res: [n, m, 4g, 4g]`, `input_size = (h, w)` resized, `original_size = (H, W)` →
    /// `[n, m, H, W]`.
    pub fn postprocess_masks(
        &self,
        low_res: Tensor<B, 4>,
        input_size: (usize, usize),
        original_size: (usize, usize),
    ) -> Tensor<B, 4> {
        let s = self.img_size();
        let opts = || InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(false);
        let [n, m, _, _] = low_res.dims();
        let up = interpolate(low_res, [s, s], opts());
        let cropped = up.slice([0..n, 0..m, 0..input_size.0, 0..input_size.1]);
        interpolate(cropped, [original_size.0, original_size.1], opts())
    }

    /// Logits → binary masks (`logit > mask_threshold`).
    pub fn threshold(&self, logits: Tensor<B, 4>) -> Tensor<B, 4, burn::tensor::Bool> {
        logits.greater_elem(self.config.mask_threshold)
    }
}
