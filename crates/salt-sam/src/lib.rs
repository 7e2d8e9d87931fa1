//! Segment Anything (SAM) in burn: image encoder, prompt encoder, mask decoder, SAM's pre- and
//! post-processing, official checkpoint loading, and the SALT paper's 512 variant.
//!
//! Module paths equal the keys of Meta's checkpoints (`image_encoder.blocks.0.attn.qkv`), and
//! every linear layer of the image encoder (`qkv`, `proj`, `lin1`, `lin2`) and both neck
//! convolutions are salt-core's adaptable layers, so adapters attach by path.
//!
//! ```
//! use burn::backend::NdArray;
//! use salt_sam::{Prompts, SamConfig};
//!
//! let device = Default::default();
//! let sam = SamConfig::tiny().init::<NdArray>(&device).unwrap();
//! // A black 96×128 image, already resized so that its longest side is 128.
//! let input = sam.preprocess(&vec![0u8; 96 * 128 * 3], 96, 128, &device).unwrap();
//! let embedding = sam.image_embeddings(input); // once per image
//! let out = sam.decode(embedding, &Prompts::none(), true).unwrap(); // many times
//! assert_eq!(out.low_res_logits.dims(), [1, 3, 64, 64]);
//! ```
#![warn(missing_docs)]

pub mod checkpoint;
pub mod common;
mod config;
mod error;
pub mod image_encoder;
pub mod mask_decoder;
mod predictor;
pub mod prompt_encoder;
mod sam;
pub mod transformer;
mod transforms;

pub use checkpoint::{
    check_save_path, checkpoint_metadata, load_checkpoint, save_checkpoint, LoadReport, SaveReport,
};
pub use config::SamConfig;
pub use error::{Error, Result};
pub use mask_decoder::DecoderOutput;
pub use predictor::{ImagePrompt, Prediction};
pub use prompt_encoder::{PromptEmbeddings, Prompts};
pub use sam::Sam;
pub use transforms::{preprocess_shape, ResizeLongestSide};
