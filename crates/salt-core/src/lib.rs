//! Backend-generic adapter maths for fine-tuning SAM: SALT, S-SAM (SVD only) and LoRA.
//!
//! - [`AdaptableLinear`] / [`AdaptableConv2d`]: the chokepoint layers a model uses; each may hold
//!   an [`Adapter`].
//! - [`inject`]: attach an adapter to every layer whose dotted path matches [`AdapterConfig::targets`].
//! - [`apply_trainable`]: freeze everything but the adapters and the [`TrainablePolicy`]'s extras.
//! - [`ParamReport`]: trainable / total parameters as the SALT paper's Table 1 counts them.
//! - [`merge`]: fold adapters into plain dense weights for inference.
//! - [`save_adapter`] / [`AdapterManifest::read`] + [`load_adapter_tensors`]: adapter-only files.
//!
//! ```
//! use burn::backend::NdArray;
//! use salt_core::{AdaptableLinearConfig, AdapterConfig, inject};
//!
//! let device = Default::default();
//! let mut layer = AdaptableLinearConfig::new(16, 48).init::<NdArray>(&device);
//! let mut config = AdapterConfig::salt(4, 2);
//! config.targets = vec!["**".into()];
//! let adapted = inject(&mut layer, &config).unwrap();
//! assert_eq!(adapted[0].adapter_params, 2 * 4 + 2 * (16 - 4) * 2);
//! ```
#![warn(missing_docs)]

mod adapter;
pub mod alloc;
mod config;
mod conv;
mod error;
pub mod fused;
mod inject;
mod io;
mod kernels;
mod linear;
mod lora;
mod matconv;
pub mod pattern;
mod policy;
pub mod precision;
pub mod recompute;
mod salt;
mod ssam;
mod svd;

pub use adapter::{join_path, AdaptableLayer, Adapter, LayerKind, VisitAdaptable};
pub use config::{AdapterConfig, Method, SaltInit, TrainablePolicy};
pub use conv::{AdaptableConv2d, AdaptableConv2dConfig};
pub use error::{Error, Result};
pub use inject::{
    adaptable_paths, adapter_param_count, build_adapter, inject, merge, AdaptedLayer,
};
pub use io::{
    check_finite, first_non_finite, load_adapter_tensors, save_adapter, sha256_file,
    sha256_file_cached, trainable_tensors, write_atomic, write_f32_safetensors, AdapterManifest,
    AdapterTensors, BaseIdentity, ADAPTER_CONFIG, ADAPTER_WEIGHTS, CACHE_DIR_ENV, FORMAT_VERSION,
};
pub use linear::{AdaptableLinear, AdaptableLinearConfig};
pub use lora::LoraAdapter;
pub use matconv::{conv2d_matmul, conv_transpose2d_matmul, patch_conv_channels_last};
pub use policy::{
    apply_trainable, is_adapter_key, is_trainable, param_key, parameter_keys, ParamReport,
};
pub use precision::{check_precision, Precision, PrecisionGuard};
pub use salt::{SaltAdapter, REFERENCE_INIT_STD};
pub use ssam::SvdAdapter;
pub use svd::{SvdFactors, SIGN_RULE};
