//! salt-data: vessel segmentation datasets (the SALT paper layout, DRIVE, ARCADE, and imports of
//! ROSE, DIAS and XRay-Angio), SAM pre-processing (with a Pillow-exact resize), seeded
//! augmentation, burn datasets and batches, and a synthetic vessel generator.
#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod error;
pub mod resize;

pub use error::{Error, Result};
pub use resize::{
    interpolate_bilinear_f32, longest_side_size, pad_bottom_right, resize_f32_bilinear,
    resize_nearest, resize_rgb8, to_original_size,
};
