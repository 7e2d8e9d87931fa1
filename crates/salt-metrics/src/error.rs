//! Errors of salt-metrics.

#[cfg(feature = "image")]
use std::path::PathBuf;

/// Everything that can go wrong while building masks, evaluating or reading mask files.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pixel buffer does not hold `width * height` values.
    #[error("mask data has {len} pixels, expected width {width} x height {height} = {expected}")]
    DataLength {
        /// Declared width.
        width: usize,
        /// Declared height.
        height: usize,
        /// `width * height`.
        expected: usize,
        /// Length of the buffer that was given.
        len: usize,
    },
    /// Prediction and target do not have the same size.
    #[error(
        "prediction is {pred_width}x{pred_height} (width x height) but target is \
         {target_width}x{target_height}"
    )]
    SizeMismatch {
        /// Prediction width.
        pred_width: usize,
        /// Prediction height.
        pred_height: usize,
        /// Target width.
        target_width: usize,
        /// Target height.
        target_height: usize,
    },
    /// A pixel spacing is not a finite positive number.
    #[error("invalid pixel spacing {value} along {axis}: expected a finite number > 0")]
    InvalidSpacing {
        /// `"y"` or `"x"`.
        axis: &'static str,
        /// The value given.
        value: f64,
    },
    /// The HD percentile is outside [0, 100].
    #[error("invalid percentile {0}: expected a number in [0, 100]")]
    InvalidPercentile(f64),
    /// An unknown distance definition name.
    #[error("unknown distance definition `{0}`: expected one of monai, medpy, salt-paper")]
    UnknownDefinition(String),
    /// A mask file could not be opened or decoded.
    #[cfg(feature = "image")]
    #[error("cannot read mask {path}")]
    ReadImage {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        #[source]
        source: image::ImageError,
    },
    /// A threshold outside the value range of the mask's samples: no pixel (or every pixel)
    /// could be foreground, which is never what was meant.
    #[cfg(feature = "image")]
    #[error("mask {path}: threshold {threshold} is outside its sample range (expected a number in [0, {max}) for these {bits}-bit samples)")]
    Threshold {
        /// The file.
        path: PathBuf,
        /// The threshold given.
        threshold: f64,
        /// The largest sample value of the format.
        max: f64,
        /// Bits per sample.
        bits: u32,
    },
}

/// Result type of salt-metrics.
pub type Result<T> = std::result::Result<T, Error>;
