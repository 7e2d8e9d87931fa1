//! Errors of salt-data: every variant names the file (and row/key) it is about.

use std::path::PathBuf;

/// Everything that can go wrong while reading, checking, splitting or writing a dataset.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The background loader thread failed.
    #[error("data loading: {0}")]
    Prefetch(String),
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a decodable image (corrupt, truncated, unknown format).
    #[error("{path}: cannot decode image: {source}")]
    Decode {
        /// The image file.
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: image::ImageError,
    },
    /// The file ends before the image does (a decoder that would accept it is overruled).
    #[error("{path}: truncated {format} file: {what}")]
    Truncated {
        /// The image file.
        path: PathBuf,
        /// The format.
        format: &'static str,
        /// What is missing.
        what: &'static str,
    },
    /// A file of the dataset that resolves (through a symlink) outside the dataset root.
    #[error("{path}: resolves to {resolved}, outside the dataset root {root}")]
    OutsideRoot {
        /// The file as the layout names it.
        path: PathBuf,
        /// Where it really is.
        resolved: PathBuf,
        /// The dataset root.
        root: PathBuf,
    },
    /// The image decoded but has a pixel format we refuse (16-bit, float, RGBA, palette, ...).
    #[error("{path}: unsupported pixel format {found}; expected {expected}")]
    PixelFormat {
        /// The image file.
        path: PathBuf,
        /// What the file holds.
        found: String,
        /// What is accepted.
        expected: &'static str,
    },
    /// A mask whose size differs from its image.
    #[error("{mask}: mask is {mask_w}x{mask_h} but image {image} is {image_w}x{image_h}")]
    MaskSize {
        /// The mask file.
        mask: PathBuf,
        /// Mask width.
        mask_w: u32,
        /// Mask height.
        mask_h: u32,
        /// The image file.
        image: PathBuf,
        /// Image width.
        image_w: u32,
        /// Image height.
        image_h: u32,
    },
    /// A file the dataset layout requires is missing.
    #[error("{path}: missing {what}")]
    Missing {
        /// The path that should exist.
        path: PathBuf,
        /// What it should have been (e.g. "mask for image 21_training").
        what: String,
    },
    /// A malformed CSV (split file).
    #[error("{path}:{line}: {message}")]
    Csv {
        /// The CSV file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A split name that is neither known nor requested.
    #[error("{path}:{line}: unknown split {split:?}; expected one of {expected}")]
    UnknownSplit {
        /// The CSV file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The split found.
        split: String,
        /// The accepted split names.
        expected: &'static str,
    },
    /// A split with no item.
    #[error("{path}: split {split:?} is empty")]
    EmptySplit {
        /// The dataset root or CSV file.
        path: PathBuf,
        /// The split.
        split: String,
    },
    /// A malformed annotation file (ARCADE's COCO JSON).
    #[error("{path}: {message}")]
    Annotation {
        /// The JSON file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A bad argument (count, size, probability) given by the caller.
    #[error("invalid {what}: {message}")]
    Invalid {
        /// The argument.
        what: &'static str,
        /// Why it is rejected.
        message: String,
    },
    /// An image could not be encoded (writing PNGs).
    #[error("{path}: cannot encode image: {source}")]
    Encode {
        /// The output file.
        path: PathBuf,
        /// The encoder's error.
        #[source]
        source: image::ImageError,
    },
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An [`Error::Io`] about `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
