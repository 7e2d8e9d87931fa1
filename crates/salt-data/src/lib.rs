//! salt-data: vessel segmentation datasets (the SALT paper layout, DRIVE, ARCADE, and imports of
//! ROSE, DIAS and XRay-Angio), SAM pre-processing (with a Pillow-exact resize), seeded
//! augmentation, burn datasets and batches, and a synthetic vessel generator.
#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod augment;
pub mod batch;
pub mod check;
pub mod dataset;
pub mod error;
pub mod image_io;
pub mod import;
pub mod polygon;
pub mod prefetch;
pub mod preprocess;
pub mod resize;
pub mod split;
pub mod synth;

pub use augment::{Augment, Pipeline, Sample};
pub use batch::{dataloader, VesselBatch, VesselBatcher};
pub use dataset::{Layout, VesselDataset, VesselItem};
pub use error::{Error, Result};
pub use image_io::{Image8, Mask};
pub use prefetch::{epoch_batches, with_prefetch, HostBatch};
pub use preprocess::{MaskResize, Prepared, Preprocess};
pub use resize::{
    interpolate_bilinear_f32, longest_side_size, pad_bottom_right, resize_f32_bilinear,
    resize_nearest, resize_rgb8, to_original_size,
};
pub use split::{Split, SplitRow};
pub use synth::Style;
