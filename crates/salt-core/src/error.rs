//! Errors of salt-core.

use std::path::PathBuf;

/// Everything that can go wrong while building, injecting, saving or loading adapters.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backend cannot compute in the requested precision.
    #[error(
        "--precision {precision}: the `{backend}` backend cannot compute in {precision} on this \
         device; use --precision f32 ({hint})"
    )]
    UnsupportedPrecision {
        /// The precision asked for.
        precision: String,
        /// The backend.
        backend: String,
        /// Which backends can.
        hint: String,
    },
    /// A precision name that is not f32, bf16 or f16.
    #[error("precision `{0}`: expected f32, bf16 or f16")]
    UnknownPrecision(String),
    /// The adapter configuration is invalid (a rank of zero, a dropout outside [0, 1), ...).
    #[error("invalid adapter configuration: {field} = {value}: {expected}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// Its value, as written by the user.
        value: String,
        /// What was expected instead.
        expected: String,
    },
    /// No layer path matched the configured target patterns.
    #[error(
        "adapter targets {patterns:?} matched none of the {available} adaptable layers \
         (for example: {examples})"
    )]
    NoTargetMatched {
        /// The patterns that matched nothing.
        patterns: Vec<String>,
        /// How many adaptable layers the model has.
        available: usize,
        /// A few layer paths that exist, to help fix the pattern.
        examples: String,
    },
    /// A rank is larger than the layer's matrix allows.
    #[error("layer `{path}` ({rows}x{cols}, {k} singular values): {what} = {rank} is too large ({expected})")]
    RankTooLarge {
        /// Layer path.
        path: String,
        /// Matrix rows (out features).
        rows: usize,
        /// Matrix columns (in features, or ci*kh*kw for convolutions).
        cols: usize,
        /// min(rows, cols).
        k: usize,
        /// Which rank.
        what: &'static str,
        /// Its value.
        rank: usize,
        /// The allowed range.
        expected: String,
    },
    /// The SVD did not converge (non-finite weights, usually).
    #[error("SVD of layer `{path}` ({rows}x{cols}) failed: {reason}")]
    Svd {
        /// Layer path.
        path: String,
        /// Matrix rows.
        rows: usize,
        /// Matrix columns.
        cols: usize,
        /// What faer reported.
        reason: String,
    },
    /// A tensor the model expects is absent from an adapter file.
    #[error("adapter file {file}: missing tensor `{key}` (expected shape {expected:?})")]
    MissingKey {
        /// The adapter file.
        file: PathBuf,
        /// The missing key.
        key: String,
        /// The shape the model expects.
        expected: Vec<usize>,
    },
    /// An adapter file holds a tensor the model has no place for.
    #[error("adapter file {file}: unexpected tensor `{key}` (shape {found:?}); the model has no such trainable parameter")]
    UnexpectedKey {
        /// The adapter file.
        file: PathBuf,
        /// The unexpected key.
        key: String,
        /// Its shape in the file.
        found: Vec<usize>,
    },
    /// A tensor has another shape than the model expects.
    #[error("adapter file {file}: tensor `{key}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The adapter file.
        file: PathBuf,
        /// The key.
        key: String,
        /// Shape the model expects.
        expected: Vec<usize>,
        /// Shape found in the file.
        found: Vec<usize>,
    },
    /// A tensor in an adapter file is not f32.
    #[error("adapter file {file}: tensor `{key}` has dtype {dtype}, expected F32")]
    DType {
        /// The adapter file.
        file: PathBuf,
        /// The key.
        key: String,
        /// The dtype found.
        dtype: String,
    },
    /// Reading or writing a file failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("reading", "writing", ...).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A safetensors file could not be parsed or written.
    #[error("safetensors file {path}: {source}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: safetensors::SafeTensorError,
    },
    /// `adapter_config.json` could not be parsed or written.
    #[error("adapter config {path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The adapter was trained on another base checkpoint than the one loaded.
    #[error(
        "adapter {file} was trained on base checkpoint {expected}, but the loaded base is {found}"
    )]
    BaseMismatch {
        /// The adapter config file.
        file: PathBuf,
        /// The identity recorded in the adapter.
        expected: String,
        /// The identity of the loaded base.
        found: String,
    },
    /// The adapter records no base model (written before base identities were recorded, or
    /// edited), so nothing says which base it belongs to.
    #[error("adapter {file} does not record its base model; give the base with --checkpoint and pass --allow-base-mismatch if you know it is the right one")]
    BaseUnknown {
        /// The adapter config file.
        file: PathBuf,
    },
    /// A tensor holds NaN or an infinity.
    #[error("{file}: tensor `{key}` holds a non-finite value ({value} at index {index})")]
    NonFinite {
        /// The file (read or about to be written).
        file: PathBuf,
        /// The tensor's key.
        key: String,
        /// Flat index of the first non-finite value.
        index: usize,
        /// That value.
        value: f32,
    },
    /// The adapter file format version is not one this build reads.
    #[error("adapter config {file}: format version {found}, this build reads version {expected}")]
    FormatVersion {
        /// The file.
        file: PathBuf,
        /// Version found.
        found: u32,
        /// Version supported.
        expected: u32,
    },
}

/// Result alias of salt-core.
pub type Result<T> = std::result::Result<T, Error>;
