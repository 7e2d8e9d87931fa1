//! A 2-D binary mask stored row-major (`index = y * width + x`).

use crate::error::{Error, Result};

/// A 2-D binary mask: `true` is foreground. Row-major, `index = y * width + x`.
///
/// The physical pixel size lives in [`crate::MetricOptions::spacing`], not here: prediction and
/// target always share one grid, so one spacing per comparison cannot disagree with itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    width: usize,
    height: usize,
    data: Vec<bool>,
}

impl Mask {
    /// Wraps a row-major buffer of `width * height` pixels.
    ///
    /// # Errors
    /// [`Error::DataLength`] when `data.len() != width * height`.
    pub fn new(width: usize, height: usize, data: Vec<bool>) -> Result<Self> {
        let expected = width * height;
        if data.len() != expected {
            return Err(Error::DataLength {
                width,
                height,
                expected,
                len: data.len(),
            });
        }
        Ok(Self {
            width,
            height,
            data,
        })
    }

    /// An all-background mask.
    pub fn empty(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            data: vec![false; width * height],
        }
    }

    /// Builds a mask from `f(x, y)`.
    pub fn from_fn(width: usize, height: usize, mut f: impl FnMut(usize, usize) -> bool) -> Self {
        let mut data = Vec::with_capacity(width * height);
        for y in 0..height {
            for x in 0..width {
                data.push(f(x, y));
            }
        }
        Self {
            width,
            height,
            data,
        }
    }

    /// Thresholds a row-major buffer of scores: foreground is `value > threshold`.
    ///
    /// # Errors
    /// [`Error::DataLength`] when `values.len() != width * height`.
    pub fn from_scores(
        width: usize,
        height: usize,
        values: &[f32],
        threshold: f32,
    ) -> Result<Self> {
        Self::new(
            width,
            height,
            values.iter().map(|&v| v > threshold).collect(),
        )
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// The row-major pixels.
    pub fn data(&self) -> &[bool] {
        &self.data
    }

    /// Pixel `(x, y)`.
    ///
    /// # Panics
    /// When `(x, y)` lies outside the mask.
    pub fn get(&self, x: usize, y: usize) -> bool {
        assert!(
            x < self.width && y < self.height,
            "pixel ({x}, {y}) outside the mask"
        );
        self.data[y * self.width + x]
    }

    /// Sets pixel `(x, y)`.
    ///
    /// # Panics
    /// When `(x, y)` lies outside the mask.
    pub fn set(&mut self, x: usize, y: usize, value: bool) {
        assert!(
            x < self.width && y < self.height,
            "pixel ({x}, {y}) outside the mask"
        );
        self.data[y * self.width + x] = value;
    }

    /// Number of foreground pixels.
    pub fn count(&self) -> usize {
        self.data.iter().filter(|&&v| v).count()
    }

    /// Whether no pixel is foreground.
    pub fn is_empty(&self) -> bool {
        !self.data.iter().any(|&v| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_checks_length() {
        let err = Mask::new(3, 2, vec![false; 5]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::DataLength {
                    expected: 6,
                    len: 5,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("width 3 x height 2"));
    }

    #[test]
    fn from_fn_is_row_major() {
        let m = Mask::from_fn(3, 2, |x, y| x == 2 && y == 1);
        assert_eq!(m.data(), &[false, false, false, false, false, true]);
        assert!(m.get(2, 1));
        assert_eq!(m.count(), 1);
        assert!(!m.is_empty());
        assert!(Mask::empty(4, 4).is_empty());
    }

    #[test]
    fn from_scores_thresholds_strictly() {
        let m = Mask::from_scores(3, 1, &[0.0, 0.5, 0.7], 0.5).unwrap();
        assert_eq!(m.data(), &[false, false, true]);
    }
}
