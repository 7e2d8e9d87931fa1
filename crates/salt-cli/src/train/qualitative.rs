//! Predicted masks at the original resolution and the paper's Fig. 3-style figure:
//! image | ground truth | prediction, false negatives in red.

use anyhow::Result;
use burn::tensor::backend::Backend;
use image::{Rgb, RgbImage};
use salt_data::{Preprocess, VesselBatcher, VesselItem};

use super::model::{to_original, Segmenter};

/// The predicted mask of `item` at its original size (`logit ≥ 0`, i.e. probability ≥ 0.5).
pub fn predict_item<B: Backend, M: Segmenter<B>>(
    model: &M,
    item: &VesselItem,
    device: &B::Device,
) -> Result<Vec<bool>> {
    use burn::data::dataloader::batcher::Batcher;
    let pre = Preprocess {
        size: model.input_size(),
        ..Default::default()
    };
    let batch: salt_data::VesselBatch<B> =
        VesselBatcher::eval(pre).batch(vec![item.clone()], device);
    let logits = model.logits(batch.images)?;
    let logits = to_original(logits, batch.resized_sizes[0], item.original_size);
    let v: Vec<f32> = logits
        .into_data()
        .convert::<f32>()
        .into_vec()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(v.iter().map(|&z| z >= 0.0).collect())
}

fn rgb_of(item: &VesselItem) -> RgbImage {
    let img = item.image.to_rgb();
    RgbImage::from_fn(img.width as u32, img.height as u32, |x, y| {
        let i = (y as usize * img.width + x as usize) * 3;
        Rgb([img.data[i], img.data[i + 1], img.data[i + 2]])
    })
}

/// One row per item: image | ground truth (white) | prediction (white), with false negatives in
/// red and false positives in yellow on the prediction panel.
pub fn figure(rows: &[(&VesselItem, Vec<bool>)]) -> RgbImage {
    let cell = rows
        .iter()
        .map(|(it, _)| it.original_size.1.max(it.original_size.0))
        .max()
        .unwrap_or(1) as u32;
    let pad = 4u32;
    let mut out = RgbImage::from_pixel(
        3 * cell + 4 * pad,
        rows.len() as u32 * (cell + pad) + pad,
        Rgb([255, 255, 255]),
    );
    for (r, (item, pred)) in rows.iter().enumerate() {
        let (h, w) = item.original_size;
        let oy = pad + r as u32 * (cell + pad);
        let img = rgb_of(item);
        for y in 0..h as u32 {
            for x in 0..w as u32 {
                let i = y as usize * w + x as usize;
                let gt = item.mask.data[i] > 0;
                let p = pred[i];
                out.put_pixel(pad + x, oy + y, *img.get_pixel(x, y));
                let g = if gt { 255 } else { 0 };
                out.put_pixel(2 * pad + cell + x, oy + y, Rgb([g, g, g]));
                let c = match (gt, p) {
                    (true, true) => [255, 255, 255],
                    (true, false) => [230, 30, 30],
                    (false, true) => [240, 200, 40],
                    (false, false) => [0, 0, 0],
                };
                out.put_pixel(3 * pad + 2 * cell + x, oy + y, Rgb(c));
            }
        }
    }
    out
}

/// PNG bytes of an image.
pub fn png_bytes(img: &RgbImage) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )?;
    Ok(bytes)
}
