//! Errors of salt-baselines.

use std::path::PathBuf;

/// Everything that can go wrong when building, loading or saving a baseline model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The checkpoint file could not be read or parsed.
    #[error("cannot read checkpoint {path}: {message}")]
    CheckpointRead {
        /// The file.
        path: PathBuf,
        /// What the reader said.
        message: String,
    },
    /// A checkpoint could not be written.
    #[error("cannot write checkpoint {path}: {message}")]
    CheckpointWrite {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The checkpoint's extension is neither `.pth`/`.pt` nor `.safetensors`.
    #[error(
        "checkpoint {path}: unknown format (extension `{extension}`); expected a `torch.save`d \
         state_dict (.pth, .pt) or .safetensors"
    )]
    UnknownFormat {
        /// The file.
        path: PathBuf,
        /// Its extension.
        extension: String,
    },
    /// Keys the model needs are absent from the checkpoint.
    #[error("checkpoint {path}: {} missing key(s) for {model}: {}", keys.len(), keys.join(", "))]
    MissingKeys {
        /// The file.
        path: PathBuf,
        /// The model (e.g. `unet`).
        model: String,
        /// Model parameter paths not found (after the remap table).
        keys: Vec<String>,
    },
    /// The checkpoint has keys the model does not know.
    #[error("checkpoint {path}: {} unexpected key(s) for {model}: {}", keys.len(), keys.join(", "))]
    UnexpectedKeys {
        /// The file.
        path: PathBuf,
        /// The model (e.g. `unet`).
        model: String,
        /// Checkpoint keys (after the remap table) with no model parameter.
        keys: Vec<String>,
    },
    /// A tensor has another shape in the checkpoint than in the model.
    #[error(
        "checkpoint {path}: key `{key}` has shape {found:?} in the file but {expected:?} in the \
         model ({others} more shape mismatch(es))"
    )]
    ShapeMismatch {
        /// The file.
        path: PathBuf,
        /// The parameter path.
        key: String,
        /// The model's shape.
        expected: Vec<usize>,
        /// The file's shape.
        found: Vec<usize>,
        /// How many other keys mismatch too.
        others: usize,
    },
    /// A tensor could not be converted or applied.
    #[error("checkpoint {path}: key `{key}`: {message}")]
    BadTensor {
        /// The file.
        path: PathBuf,
        /// The parameter path.
        key: String,
        /// What went wrong.
        message: String,
    },
    /// A configuration value is invalid.
    #[error("invalid {model} configuration: `{field}` = {value}; expected {expected}")]
    InvalidConfig {
        /// The model.
        model: &'static str,
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
        /// What is allowed.
        expected: String,
    },
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
