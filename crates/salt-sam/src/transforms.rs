//! `ResizeLongestSide`'s geometry: the resized size, and original-pixel coordinates mapped into
//! the resized frame. (The pixel resize itself, PIL's antialiased bilinear, lives in salt-data.)

/// Size `(h, w)` after scaling the longest side of `(h, w)` to `target`, rounded as SAM does
/// (`int(x · scale + 0.5)`).
pub fn preprocess_shape(h: usize, w: usize, target: usize) -> (usize, usize) {
    let scale = target as f64 / h.max(w) as f64;
    let nh = (h as f64 * scale + 0.5) as usize;
    let nw = (w as f64 * scale + 0.5) as usize;
    (nh, nw)
}

/// Maps coordinates between an original image and its resized version (`ResizeLongestSide`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResizeLongestSide {
    /// The target length of the longest side (the encoder's `img_size`).
    pub target_length: usize,
    /// Original `(h, w)`.
    pub original_size: (usize, usize),
}

impl ResizeLongestSide {
    /// For an image of `original_size = (h, w)` resized to `target_length`.
    pub fn new(target_length: usize, original_size: (usize, usize)) -> Self {
        Self {
            target_length,
            original_size,
        }
    }

    /// The resized `(h, w)`.
    pub fn input_size(&self) -> (usize, usize) {
        preprocess_shape(
            self.original_size.0,
            self.original_size.1,
            self.target_length,
        )
    }

    /// Original `(x, y)` → resized frame (`apply_coords`: `x · new_w / old_w`, `y · new_h / old_h`).
    pub fn apply_coords(&self, [x, y]: [f32; 2]) -> [f32; 2] {
        let (oh, ow) = self.original_size;
        let (nh, nw) = self.input_size();
        // Computed in f64 then rounded once, as numpy does in float64 before the f32 cast.
        [
            (x as f64 * (nw as f64 / ow as f64)) as f32,
            (y as f64 * (nh as f64 / oh as f64)) as f32,
        ]
    }

    /// Original box `(x0, y0, x1, y1)` → resized frame.
    pub fn apply_box(&self, b: [f32; 4]) -> [f32; 4] {
        let [x0, y0] = self.apply_coords([b[0], b[1]]);
        let [x1, y1] = self.apply_coords([b[2], b[3]]);
        [x0, y0, x1, y1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_side_rounds_half_up() {
        // 120×160 → scale 0.8 → 96×128; 480×640 at 1024 → 768×1024.
        assert_eq!(preprocess_shape(120, 160, 128), (96, 128));
        assert_eq!(preprocess_shape(480, 640, 1024), (768, 1024));
        // 333 × 1024/1000 = 340.992 → 341; 1000 → 1024.
        assert_eq!(preprocess_shape(333, 1000, 1024), (341, 1024));
        // 5 × 3/4 = 3.75 → 4 (int(3.75 + 0.5) = 4); 4 × 0.75 = 3.
        assert_eq!(preprocess_shape(5, 4, 4), (4, 3));
    }

    #[test]
    fn coords_scale_per_axis() {
        let t = ResizeLongestSide::new(128, (120, 160));
        assert_eq!(t.apply_coords([160.0, 120.0]), [128.0, 96.0]);
        assert_eq!(
            t.apply_box([10.0, 20.0, 30.0, 40.0]),
            [8.0, 16.0, 24.0, 32.0]
        );
    }
}
