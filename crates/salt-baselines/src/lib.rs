//! The SALT paper's traditional baselines (Table 1, "Traditional DL Methods") in burn.
//!
//! Every model takes `[B, 3, H, W]` images and returns `[B, 1, H, W]` logits, is generic over
//! `B: Backend`, is built from a `#[derive(Config)]` whose presets carry the reference's
//! hyper-parameters, and loads the reference implementation's `state_dict` (MONAI,
//! segmentation_models_pytorch; `.pth` or `.safetensors`) through [`checkpoint`].
#![warn(missing_docs)]

pub mod checkpoint;
pub mod conv_bn;
pub mod deeplabv3plus;
pub mod error;
pub mod fast;
pub mod mit;
pub mod monai_blocks;
pub mod params;
pub mod regunet;
pub mod resnet;
pub mod segformer;
pub mod segnet;
pub mod unet;
pub mod unetr;

pub use checkpoint::{load_state_dict, save_state_dict, KeyMap, LoadReport};
pub use deeplabv3plus::{DeepLabV3Plus, DeepLabV3PlusConfig};
pub use error::{Error, Result};
pub use mit::{MixVisionTransformer, MixVisionTransformerConfig};
pub use params::parameter_count;
pub use regunet::{RegUNet, RegUNetConfig};
pub use resnet::{ResNet, ResNetConfig};
pub use segformer::{Segformer, SegformerConfig};
pub use segnet::{SegNet, SegNetConfig};
pub use unet::{UNet, UNetConfig};
pub use unetr::{UNETRConfig, UNETR};
