//! Seeded train-time augmentation with the same geometry for image and mask. A [`Pipeline`] is a
//! list of [`Augment`] steps applied in order; add a step by implementing the trait.
//! Defaults follow the paper (§4): horizontal flip p 0.5; rotation by an integer 1–10°
//! counter-clockwise p 0.5 (nearest, fill 0, image and mask alike); brightness × U[1, 2] p 0.5,
//! clamped to 255. Nothing is applied at evaluation.

use rand::rngs::StdRng;
use rand::Rng;

use crate::image_io::{Image8, Mask};

/// An image (RGB, 0–255 after min–max) and its mask, transformed together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The image.
    pub image: Image8,
    /// The mask, same size.
    pub mask: Mask,
}

/// One augmentation step. Implementations draw all randomness from `rng`, so a pipeline is
/// deterministic for a seed.
pub trait Augment: Send + Sync + std::fmt::Debug {
    /// Transforms `sample` in place.
    fn apply(&self, sample: &mut Sample, rng: &mut StdRng);
}

/// Horizontal flip with probability `p`.
#[derive(Debug, Clone, Copy)]
pub struct HFlip {
    /// Probability.
    pub p: f64,
}

fn flip_rows<T: Copy>(data: &mut [T], width: usize, channels: usize) {
    for row in data.chunks_exact_mut(width * channels) {
        for x in 0..width / 2 {
            for c in 0..channels {
                row.swap(x * channels + c, (width - 1 - x) * channels + c);
            }
        }
    }
}

impl Augment for HFlip {
    fn apply(&self, s: &mut Sample, rng: &mut StdRng) {
        if rng.random_bool(self.p) {
            flip_rows(&mut s.image.data, s.image.width, s.image.channels);
            flip_rows(&mut s.mask.data, s.mask.width, 1);
        }
    }
}

/// Rotation by an integer angle in `[min_deg, max_deg]` degrees counter-clockwise about the image
/// centre, with probability `p`; nearest sampling, fill 0, for image and mask alike.
#[derive(Debug, Clone, Copy)]
pub struct Rotate {
    /// Probability.
    pub p: f64,
    /// Smallest angle (degrees).
    pub min_deg: i32,
    /// Largest angle (degrees).
    pub max_deg: i32,
}

/// Rotates `data` (`w × h × channels`) by `deg` degrees counter-clockwise (as seen on screen)
/// about the centre `(w/2, h/2)`; nearest neighbour, fill 0 (torchvision's `F.rotate` convention).
pub fn rotate_ccw<T: Copy + Default>(
    data: &[T],
    w: usize,
    h: usize,
    channels: usize,
    deg: f64,
) -> Vec<T> {
    let (sin, cos) = deg.to_radians().sin_cos();
    let (cx, cy) = (w as f64 * 0.5, h as f64 * 0.5);
    let mut out = vec![T::default(); data.len()];
    for y in 0..h {
        let dy = y as f64 + 0.5 - cy;
        for x in 0..w {
            let dx = x as f64 + 0.5 - cx;
            // Inverse map (y points down): source = R(-deg) · destination.
            let sx = (cos * dx - sin * dy + cx).floor();
            let sy = (sin * dx + cos * dy + cy).floor();
            if sx >= 0.0 && sy >= 0.0 && (sx as usize) < w && (sy as usize) < h {
                let (src, dst) = (
                    ((sy as usize) * w + sx as usize) * channels,
                    (y * w + x) * channels,
                );
                out[dst..dst + channels].copy_from_slice(&data[src..src + channels]);
            }
        }
    }
    out
}

impl Augment for Rotate {
    fn apply(&self, s: &mut Sample, rng: &mut StdRng) {
        if rng.random_bool(self.p) {
            let deg = f64::from(rng.random_range(self.min_deg..=self.max_deg));
            let (w, h) = (s.image.width, s.image.height);
            s.image.data = rotate_ccw(&s.image.data, w, h, s.image.channels, deg);
            s.mask.data = rotate_ccw(&s.mask.data, w, h, 1, deg);
        }
    }
}

/// Brightness: multiply the image by a factor drawn from U[`min`, `max`], with probability `p`;
/// clamped to 255 and truncated (torchvision's `adjust_brightness` on uint8). Mask unchanged.
#[derive(Debug, Clone, Copy)]
pub struct Brightness {
    /// Probability.
    pub p: f64,
    /// Smallest factor.
    pub min: f32,
    /// Largest factor.
    pub max: f32,
}

impl Augment for Brightness {
    fn apply(&self, s: &mut Sample, rng: &mut StdRng) {
        if rng.random_bool(self.p) {
            let f = rng.random_range(self.min..=self.max);
            for v in &mut s.image.data {
                *v = (f32::from(*v) * f).clamp(0.0, 255.0) as u8;
            }
        }
    }
}

/// An ordered list of augmentation steps.
#[derive(Debug, Default)]
pub struct Pipeline {
    steps: Vec<Box<dyn Augment>>,
}

impl Pipeline {
    /// An empty pipeline (evaluation).
    pub fn none() -> Self {
        Self::default()
    }

    /// The paper's training augmentation (§4).
    pub fn paper() -> Self {
        Self::none()
            .with(HFlip { p: 0.5 })
            .with(Rotate {
                p: 0.5,
                min_deg: 1,
                max_deg: 10,
            })
            .with(Brightness {
                p: 0.5,
                min: 1.0,
                max: 2.0,
            })
    }

    /// Appends a step.
    pub fn with(mut self, step: impl Augment + 'static) -> Self {
        self.steps.push(Box::new(step));
        self
    }

    /// Whether the pipeline has no step.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Applies every step in order.
    pub fn apply(&self, sample: &mut Sample, rng: &mut StdRng) {
        for step in &self.steps {
            step.apply(sample, rng);
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn sample() -> Sample {
        let image = Image8 {
            width: 4,
            height: 3,
            channels: 3,
            data: (0..36).map(|v| v as u8 * 7).collect(),
        };
        let mask = Mask {
            width: 4,
            height: 3,
            data: vec![1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 1],
        };
        Sample { image, mask }
    }

    #[test]
    fn flip_mirrors_image_and_mask() {
        let mut s = sample();
        HFlip { p: 1.0 }.apply(&mut s, &mut StdRng::seed_from_u64(0));
        assert_eq!(&s.mask.data[..4], &[0, 0, 0, 1]);
        assert_eq!(&s.image.data[..3], &sample().image.data[9..12]);
    }

    #[test]
    fn rotate_90_ccw_by_hand() {
        // 3x3: the pixel right of centre moves to the top (counter-clockwise on screen).
        let mut m = vec![0u8; 9];
        m[5] = 1; // (x=2, y=1)
        let r = rotate_ccw(&m, 3, 3, 1, 90.0);
        assert_eq!(r, vec![0, 1, 0, 0, 0, 0, 0, 0, 0]);
        // Corners of a non-square image fall outside and are filled with 0.
        let r = rotate_ccw(&[9u8; 8], 4, 2, 1, 90.0);
        assert_eq!(r.iter().filter(|&&v| v == 0).count(), 4);
    }

    #[test]
    fn brightness_clamps_and_keeps_mask() {
        let mut s = sample();
        Brightness {
            p: 1.0,
            min: 2.0,
            max: 2.0,
        }
        .apply(&mut s, &mut StdRng::seed_from_u64(0));
        assert_eq!(s.image.data[1], 14);
        assert_eq!(*s.image.data.last().unwrap(), 255);
        assert_eq!(s.mask, sample().mask);
    }

    #[test]
    fn pipeline_is_deterministic_per_seed_and_geometry_is_shared() {
        let p = Pipeline::paper();
        let (mut a, mut b) = (sample(), sample());
        p.apply(&mut a, &mut StdRng::seed_from_u64(3));
        p.apply(&mut b, &mut StdRng::seed_from_u64(3));
        assert_eq!(a, b);
        // Same geometry: the mask follows the image when the image encodes its own coordinates.
        let image = Image8 {
            width: 9,
            height: 9,
            channels: 1,
            data: (0..81).map(|v| v as u8 + 1).collect(),
        };
        let mut s = Sample {
            image,
            mask: Mask {
                width: 9,
                height: 9,
                data: vec![1; 81],
            },
        };
        let geo = Pipeline::none().with(HFlip { p: 1.0 }).with(Rotate {
            p: 1.0,
            min_deg: 7,
            max_deg: 7,
        });
        geo.apply(&mut s, &mut StdRng::seed_from_u64(1));
        for (iv, mv) in s.image.data.iter().zip(&s.mask.data) {
            assert_eq!(*iv == 0, *mv == 0);
        }
    }
}
