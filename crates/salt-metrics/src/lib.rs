//! Segmentation metrics for 2-D binary masks: Dice, IoU, precision, recall, specificity,
//! Hausdorff distance, HD95, average symmetric surface distance and clDice, with per-axis pixel
//! spacing.
//!
//! - Surface distances come from an exact linear-time Euclidean distance transform
//!   (Felzenszwalb–Huttenlocher, [`distance_transform`]); three named definitions of HD95/ASSD
//!   ([`DistanceDefinition`]: `monai`, `medpy`, `salt-paper`), percentiles interpolated linearly
//!   as numpy does ([`percentile`]).
//! - Empty masks are explicit: distances are `None` and [`MetricResult::empty`] names the empty
//!   mask; [`Accumulator`] counts such images and leaves them out of the distance statistics.
//! - clDice uses a Zhang–Suen thinning ([`skeletonize`]).
//!
//! ```
//! use salt_metrics::{evaluate, Accumulator, Mask, MetricOptions};
//!
//! let target = Mask::from_fn(8, 8, |x, y| (2..6).contains(&x) && (2..6).contains(&y));
//! let pred = Mask::from_fn(8, 8, |x, y| (3..7).contains(&x) && (2..6).contains(&y));
//! let r = evaluate(&pred, &target, &MetricOptions::default())?;
//! assert_eq!(r.dice, 0.75);
//! assert_eq!(r.hd95, Some(1.0));
//!
//! let mut acc = Accumulator::new();
//! acc.push("case-1", r);
//! let summary = acc.summary();
//! assert_eq!(summary.dice.mean, Some(0.75));
//! # Ok::<(), salt_metrics::Error>(())
//! ```
#![warn(missing_docs)]

mod accumulator;
mod distance;
mod edt;
mod error;
mod evaluate;
#[cfg(feature = "image")]
mod io;
mod mask;
mod percentile;
mod skeleton;
mod surface;

pub use accumulator::{Accumulator, EmptyCounts, ImageResult, Report, Stats, Summary};
pub use distance::{DistanceDefinition, SurfaceDistances};
pub use edt::distance_transform;
pub use error::{Error, Result};
pub use evaluate::{cl_dice, evaluate, Confusion, EmptyMask, MetricOptions, MetricResult};
#[cfg(feature = "image")]
pub use io::{mask_from_image, read_mask};
pub use mask::Mask;
pub use percentile::percentile;
pub use skeleton::skeletonize;
pub use surface::surface;

/// Compiles and runs the README's snippet as a doctest.
#[cfg(all(doctest, feature = "image"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
