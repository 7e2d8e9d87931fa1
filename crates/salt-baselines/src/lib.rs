//! The SALT paper's traditional baselines (Table 1, "Traditional DL Methods") in burn.
//!
//! Every model takes `[B, 3, H, W]` images and returns `[B, 1, H, W]` logits, is generic over
//! `B: Backend`, is built from a `#[derive(Config)]` whose presets carry the reference's
//! hyper-parameters, and loads the reference implementation's `state_dict` (MONAI,
//! segmentation_models_pytorch; `.pth` or `.safetensors`) through [`checkpoint`].
#![warn(missing_docs)]

pub mod checkpoint;
pub mod error;
pub mod monai_blocks;
pub mod regunet;
pub mod unet;
pub mod unetr;

pub use checkpoint::{load_state_dict, save_state_dict, KeyMap, LoadReport};
pub use error::{Error, Result};
pub use regunet::{RegUNet, RegUNetConfig};
pub use unet::{UNet, UNetConfig};
pub use unetr::{UNETRConfig, UNETR};
