//! Prompting one image in its original pixel coordinates (SAM's `SamPredictor.predict`).

use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::prompt_encoder::Prompts;
use crate::sam::Sam;
use crate::transforms::ResizeLongestSide;

/// Points and an optional box in the original image's pixel coordinates.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImagePrompt {
    /// `(x, y)` and label (1 foreground, 0 background).
    pub points: Vec<([f32; 2], i64)>,
    /// `(x0, y0, x1, y1)`.
    pub bbox: Option<[f32; 4]>,
    /// A mask prompt: `4g × 4g` row-major low-resolution logits, e.g. one plane of a previous
    /// prediction's `low_res_logits` (256×256 for stock SAM).
    pub mask_input: Option<Vec<f32>>,
}

/// Masks for one image and one prompt.
#[derive(Debug, Clone)]
pub struct Prediction<B: Backend> {
    /// `[1, m, 4g, 4g]` low-resolution logits.
    pub low_res_logits: Tensor<B, 4>,
    /// `[1, m]` predicted IoU of each mask.
    pub iou_predictions: Tensor<B, 2>,
    /// `[1, m, H, W]` logits at the original size (threshold at `mask_threshold`).
    pub masks_logits: Tensor<B, 4>,
}

impl<B: Backend> Sam<B> {
    /// Predicts masks for `prompt` on the embedding of one image whose original size is
    /// `transform.original_size`: coordinates are mapped like `ResizeLongestSide.apply_coords`,
    /// decoded, and the logits post-processed to the original size.
    ///
    /// # Shapes
    /// `embedding: [1, 256, g, g]`.
    pub fn predict(
        &self,
        embedding: Tensor<B, 4>,
        transform: &ResizeLongestSide,
        prompt: &ImagePrompt,
        multimask: bool,
    ) -> Result<Prediction<B>> {
        let device = embedding.device();
        let (oh, ow) = transform.original_size;
        for &([x, y], label) in &prompt.points {
            if !(x >= 0.0 && y >= 0.0 && x < ow as f32 && y < oh as f32) {
                return Err(Error::InvalidPrompt(format!(
                    "point ({x}, {y}) is outside the {ow}×{oh} image"
                )));
            }
            if label != 0 && label != 1 {
                return Err(Error::InvalidPrompt(format!(
                    "point label {label}: expected 1 (foreground) or 0 (background)"
                )));
            }
        }
        if let Some([x0, y0, x1, y1]) = prompt.bbox {
            if !(x0 < x1 && y0 < y1) {
                return Err(Error::InvalidPrompt(format!(
                    "box ({x0}, {y0}, {x1}, {y1}) needs x0 < x1 and y0 < y1"
                )));
            }
        }
        let mut prompts = Prompts::none();
        if !prompt.points.is_empty() {
            let p = prompt.points.len();
            let coords: Vec<f32> = prompt
                .points
                .iter()
                .flat_map(|(xy, _)| transform.apply_coords(*xy))
                .collect();
            let labels: Vec<i64> = prompt.points.iter().map(|(_, l)| *l).collect();
            prompts.points = Some(Tensor::from_data(
                TensorData::new(coords, [1, p, 2]),
                &device,
            ));
            prompts.labels = Some(Tensor::<B, 2, Int>::from_data(
                TensorData::new(labels, [1, p]),
                &device,
            ));
        }
        if let Some(b) = prompt.bbox {
            let b = transform.apply_box(b);
            prompts.boxes = Some(Tensor::from_data(
                TensorData::new(b.to_vec(), [1, 4]),
                &device,
            ));
        }
        if let Some(mask) = &prompt.mask_input {
            let [gh, gw] = self.prompt_encoder.image_embedding_size;
            let (mh, mw) = (4 * gh, 4 * gw);
            if mask.len() != mh * mw {
                return Err(Error::InvalidPrompt(format!(
                    "mask input has {} values; expected {mh}×{mw} = {} low-resolution logits",
                    mask.len(),
                    mh * mw
                )));
            }
            prompts.masks = Some(Tensor::from_data(
                TensorData::new(mask.clone(), [1, 1, mh, mw]),
                &device,
            ));
        }
        let out = self.decode(embedding, &prompts, multimask)?;
        let masks_logits =
            self.postprocess_masks(out.low_res_logits.clone(), transform.input_size(), (oh, ow));
        Ok(Prediction {
            low_res_logits: out.low_res_logits,
            iou_predictions: out.iou_predictions,
            masks_logits,
        })
    }
}
