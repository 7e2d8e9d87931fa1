//! SAM pre-processing as in the reference (§4): RGB, per-image min–max to [0, 255], resize the
//! longest side (Pillow-exact antialiased bilinear), SAM mean/std, zero-pad bottom/right; and the
//! inverse mapping from model space back to the original image.

use crate::image_io::{Image8, Mask};
use crate::resize::{
    longest_side_size, pad_bottom_right, resize_f32_bilinear, resize_nearest, resize_rgb8,
    to_original_size,
};

/// SAM's pixel mean (RGB, 0–255 scale).
pub const PIXEL_MEAN: [f32; 3] = [123.675, 116.28, 103.53];
/// SAM's pixel std (the paper's code has a typo 53.395 for the first; we use SAM's 58.395).
pub const PIXEL_STD: [f32; 3] = [58.395, 57.12, 57.375];

/// How masks are resized to model space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MaskResize {
    /// Antialiased bilinear on the 0/1 mask as floats (Pillow mode `F`): soft values in [0, 1]
    /// at edges. The paper's choice ("left soft").
    #[default]
    BilinearSoft,
    /// Nearest neighbour (Pillow `NEAREST`): stays 0/1.
    Nearest,
}

/// Pre-processing settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preprocess {
    /// Model input side `S` (512 in the paper, 1024 for stock SAM).
    pub size: usize,
    /// Mask resize mode.
    pub mask_resize: MaskResize,
}

impl Default for Preprocess {
    fn default() -> Self {
        Self {
            size: 512,
            mask_resize: MaskResize::BilinearSoft,
        }
    }
}

/// One image and mask in model space.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// `[3, S, S]` normalised image, channel-major; padding is 0.
    pub image: Vec<f32>,
    /// `[S, S]` mask in [0, 1]; padding is 0.
    pub mask: Vec<f32>,
    /// `(h, w)` of the resized image inside the padded square.
    pub resized: (usize, usize),
    /// `(h, w)` of the original image.
    pub original: (usize, usize),
}

/// Per-image min–max to [0, 255] over all channels, truncated to integers like the paper's
/// `image.int()`. A constant image becomes all zeros (the paper's code would divide by zero).
pub fn min_max_u8(img: &Image8) -> Image8 {
    let (lo, hi) = img
        .data
        .iter()
        .fold((u8::MAX, u8::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let data = if hi == lo {
        vec![0; img.data.len()]
    } else {
        let scale = 255.0 / f32::from(hi - lo);
        img.data
            .iter()
            .map(|&v| (f32::from(v - lo) * scale).clamp(0.0, 255.0) as u8)
            .collect()
    };
    Image8 {
        data,
        ..img.clone()
    }
}

impl Preprocess {
    /// Resizes an RGB image (already min–max scaled and augmented) and its mask to model space:
    /// Pillow bilinear to the longest-side size, SAM normalisation, zero padding.
    ///
    /// # Panics
    /// If the image is not 3-channel or the mask size differs (contract of the caller).
    pub fn to_model(&self, rgb: &Image8, mask: &Mask) -> Prepared {
        assert_eq!(rgb.channels, 3, "to_model expects an RGB image");
        assert_eq!(
            (mask.width, mask.height),
            (rgb.width, rgb.height),
            "mask size != image size"
        );
        let (h, w) = (rgb.height, rgb.width);
        let s = self.size;
        let (nh, nw) = longest_side_size(h, w, s);
        let resized = resize_rgb8(&rgb.data, w, h, 3, nw, nh);
        let mut image = vec![0f32; 3 * s * s];
        for y in 0..nh {
            for x in 0..nw {
                for c in 0..3 {
                    let v = f32::from(resized[(y * nw + x) * 3 + c]);
                    image[c * s * s + y * s + x] = (v - PIXEL_MEAN[c]) / PIXEL_STD[c];
                }
            }
        }
        let m: Vec<f32> = mask.data.iter().map(|&v| f32::from(v)).collect();
        let m = match self.mask_resize {
            MaskResize::BilinearSoft => resize_f32_bilinear(&m, w, h, nw, nh),
            MaskResize::Nearest => resize_nearest(&m, w, h, 1, nw, nh),
        };
        let mask = pad_bottom_right(&m, nw, nh, 1, s, s, 0.0);
        Prepared {
            image,
            mask,
            resized: (nh, nw),
            original: (h, w),
        }
    }

    /// Full evaluation-time pre-processing of a stored image: RGB, min–max, [`Self::to_model`].
    pub fn apply(&self, image: &Image8, mask: &Mask) -> Prepared {
        self.to_model(&min_max_u8(&image.to_rgb()), mask)
    }

    /// Maps an `S × S` model-space map (logits or probabilities) back to the original size:
    /// crop the resized block, bilinear (PyTorch `align_corners=False`) to `original`.
    pub fn to_original(
        &self,
        map: &[f32],
        resized: (usize, usize),
        original: (usize, usize),
    ) -> Vec<f32> {
        to_original_size(map, self.size, resized, original)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// f32 slack for values computed by hand.
    const TOL: f32 = 1e-5;

    #[test]
    fn min_max_stretches_and_truncates() {
        let img = Image8 {
            width: 3,
            height: 1,
            channels: 1,
            data: vec![10, 20, 30],
        };
        // (20-10)*255/20 = 127.5 -> 127 (truncation, as `.int()`).
        assert_eq!(min_max_u8(&img).data, vec![0, 127, 255]);
        let flat = Image8 {
            width: 2,
            height: 1,
            channels: 1,
            data: vec![7, 7],
        };
        assert_eq!(min_max_u8(&flat).data, vec![0, 0]);
    }

    #[test]
    fn normalises_pads_and_maps_back() {
        // 2 wide x 1 high grey image, S = 4: longest side 2 -> 4, new size (2, 4).
        let img = Image8 {
            width: 2,
            height: 1,
            channels: 1,
            data: vec![0, 255],
        };
        let mask = Mask {
            width: 2,
            height: 1,
            data: vec![0, 1],
        };
        let pre = Preprocess {
            size: 4,
            mask_resize: MaskResize::Nearest,
        };
        let p = pre.apply(&img, &mask);
        assert_eq!((p.resized, p.original), ((2, 4), (1, 2)));
        // First pixel is 0 in every channel: (0 - mean) / std; padding rows are exactly 0.
        for c in 0..3 {
            let v = p.image[c * 16];
            assert!((v - (-PIXEL_MEAN[c] / PIXEL_STD[c])).abs() < TOL);
            assert!(p.image[c * 16 + 8..c * 16 + 16].iter().all(|&v| v == 0.0));
        }
        assert_eq!(&p.mask[..8], &[0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]);
        assert!(p.mask[8..].iter().all(|&v| v == 0.0));
        let back = pre.to_original(&p.mask, p.resized, p.original);
        assert_eq!(back.len(), 2);
        assert!(back[0] < 0.5 && back[1] > 0.5, "{back:?}");
    }
}
