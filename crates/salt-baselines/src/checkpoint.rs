//! Loading reference `state_dict`s (MONAI, segmentation_models_pytorch; `torch.save`d `.pth` or
//! `.safetensors`) into a baseline model, and writing a model back under the reference's names.
//!
//! Every model keeps the reference's module names as field names, so most keys are already the
//! burn module paths after burn-store's PyTorch adapter (which transposes `Linear` weights and
//! renames norm `weight`/`bias` to `gamma`/`beta`). The rest (`nn.Sequential` indices, names a
//! Rust field cannot have) are one commented [`KeyMap`] per model. Every key must match: a
//! missing, unexpected or misshapen key is an [`Error`] naming it.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use burn::tensor::backend::Backend;
use burn_store::{
    ApplyError, BurnToPyTorchAdapter, ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter,
    PytorchStore, SafetensorsStore, TensorSnapshot,
};

use crate::error::{Error, Result};

/// How one model's parameter paths and the reference's `state_dict` keys correspond.
#[derive(Debug, Clone, Copy)]
pub struct KeyMap {
    /// The model's name in errors (e.g. `unet`).
    pub model: &'static str,
    /// Regex rules `(reference key pattern, burn path replacement)` applied in order at load.
    pub load: &'static [(&'static str, &'static str)],
    /// Regex rules `(burn path pattern, reference key replacement)` applied in order at save:
    /// the inverse of `load`.
    pub save: &'static [(&'static str, &'static str)],
    /// Regex patterns of reference keys that are never parameters of ours (e.g. BatchNorm's
    /// `num_batches_tracked` counter); skipped at load, not written at save.
    pub ignored: &'static [&'static str],
}

/// What [`load_state_dict`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Tensors loaded.
    pub applied: usize,
    /// Checkpoint keys skipped because [`KeyMap::ignored`] names them.
    pub ignored: usize,
}

/// Loads the checkpoint at `path` into `model`, keys translated by `map`.
///
/// On error the model may be partly loaded: build a fresh one before retrying.
pub fn load_state_dict<B: Backend, M: ModuleSnapshot<B>>(
    model: &mut M,
    path: &Path,
    map: &KeyMap,
) -> Result<LoadReport> {
    let snapshots = read_snapshots(path, map.load)?;
    let ignored = compile(map.ignored.iter().map(|p| (*p, "")), path)?;
    let mut report = LoadReport::default();
    let mut kept = Vec::new();
    for (key, snap) in snapshots {
        if ignored.iter().any(|(re, _)| re.is_match(&key)) {
            report.ignored += 1;
        } else {
            kept.push(snap);
        }
    }
    let result = model.apply(kept, None, Some(Box::new(PyTorchToBurnAdapter)), false);
    if let Some(first) = result.errors.first() {
        let others = result.errors.len() - 1;
        return Err(match first {
            ApplyError::ShapeMismatch {
                path: key,
                expected,
                found,
            } => Error::ShapeMismatch {
                path: path.to_path_buf(),
                key: key.clone(),
                expected: expected.to_vec(),
                found: found.to_vec(),
                others,
            },
            other => Error::BadTensor {
                path: path.to_path_buf(),
                key: error_key(other),
                message: other.to_string(),
            },
        });
    }
    if !result.missing.is_empty() {
        return Err(Error::MissingKeys {
            path: path.to_path_buf(),
            model: map.model.to_string(),
            keys: result.missing.iter().map(|(k, _)| k.clone()).collect(),
        });
    }
    // burn-store's adapter finds a norm's `gamma`/`beta` under PyTorch's `weight`/`bias`, but
    // still lists the `weight`/`bias` keys as unused: those that were applied are not unused.
    let applied: HashSet<&str> = result.applied.iter().map(String::as_str).collect();
    let unused: Vec<String> = result
        .unused
        .iter()
        .filter(|key| {
            let renamed = key
                .strip_suffix(".weight")
                .map(|p| format!("{p}.gamma"))
                .or_else(|| key.strip_suffix(".bias").map(|p| format!("{p}.beta")));
            !renamed.is_some_and(|r| applied.contains(r.as_str()))
        })
        .cloned()
        .collect();
    if !unused.is_empty() {
        return Err(Error::UnexpectedKeys {
            path: path.to_path_buf(),
            model: map.model.to_string(),
            keys: unused,
        });
    }
    report.applied = result.applied.len();
    tracing::info!(
        path = %path.display(),
        model = map.model,
        applied = report.applied,
        ignored = report.ignored,
        "loaded baseline checkpoint"
    );
    Ok(report)
}

/// Writes `model` as a safetensors file under the reference's key names (PyTorch layouts, f32),
/// `metadata` in its header; written to a temporary name and renamed. Returns the number of
/// parameters written.
pub fn save_state_dict<B: Backend, M: ModuleSnapshot<B>>(
    model: &M,
    path: &Path,
    map: &KeyMap,
    metadata: &BTreeMap<String, String>,
) -> Result<usize> {
    let write_err = |message: String| Error::CheckpointWrite {
        path: path.to_path_buf(),
        message,
    };
    let rules = compile(map.save.iter().copied(), path)?;
    let mut tensors = Vec::new();
    let mut keys = HashSet::new();
    for snap in model.collect(None, Some(Box::new(BurnToPyTorchAdapter)), false) {
        let burn_path = snap.full_path();
        if burn_path.split('.').any(|part| part == "adapter") {
            return Err(write_err(format!(
                "`{burn_path}` is an adapter tensor: merge the adapters into the weights first"
            )));
        }
        let key = rules.iter().fold(burn_path, |k, (re, to)| {
            re.replace_all(&k, to.as_str()).into_owned()
        });
        if !keys.insert(key.clone()) {
            return Err(write_err(format!("two parameters map to the key `{key}`")));
        }
        let values = snap
            .to_data()
            .map_err(|e| write_err(format!("`{key}`: {e}")))?
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| write_err(format!("`{key}`: {e:?}")))?;
        tensors.push((key, snap.shape.to_vec(), values));
    }
    let parameters = tensors.iter().map(|(_, _, v)| v.len()).sum();
    let header = metadata.clone().into_iter().collect();
    salt_core::write_f32_safetensors(path, &tensors, header)
        .map_err(|e| write_err(e.to_string()))?;
    tracing::info!(path = %path.display(), model = map.model, parameters, "wrote baseline checkpoint");
    Ok(parameters)
}

/// Reads every tensor of the file (lazily: data is read when applied), keys remapped by `rules`.
pub fn read_snapshots(
    path: &Path,
    rules: &[(&str, &str)],
) -> Result<BTreeMap<String, TensorSnapshot>> {
    let read_err = |message: String| Error::CheckpointRead {
        path: path.to_path_buf(),
        message,
    };
    if !path.is_file() {
        return Err(read_err("no such file".into()));
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "pth" | "pt" | "bin" | "ckpt" => {
            let mut store = rules
                .iter()
                .fold(PytorchStore::from_file(path), |s, (from, to)| {
                    s.with_key_remapping(*from, *to)
                })
                .map_indices_contiguous(false);
            store
                .get_all_snapshots()
                .cloned()
                .map_err(|e| read_err(e.to_string()))
        }
        "safetensors" => {
            let mut store = rules
                .iter()
                .fold(SafetensorsStore::from_file(path), |s, (from, to)| {
                    s.with_key_remapping(*from, *to)
                })
                .map_indices_contiguous(false);
            store
                .get_all_snapshots()
                .cloned()
                .map_err(|e| read_err(e.to_string()))
        }
        _ => Err(Error::UnknownFormat {
            path: path.to_path_buf(),
            extension: ext,
        }),
    }
}

fn compile<'a>(
    rules: impl Iterator<Item = (&'a str, &'a str)>,
    path: &Path,
) -> Result<Vec<(regex::Regex, String)>> {
    rules
        .map(|(pattern, to)| {
            regex::Regex::new(pattern)
                .map(|re| (re, to.to_string()))
                .map_err(|e| Error::CheckpointRead {
                    path: path.to_path_buf(),
                    message: format!("bad key rule `{pattern}`: {e}"),
                })
        })
        .collect()
}

fn error_key(e: &ApplyError) -> String {
    match e {
        ApplyError::ShapeMismatch { path, .. }
        | ApplyError::DTypeMismatch { path, .. }
        | ApplyError::AdapterError { path, .. }
        | ApplyError::LoadError { path, .. } => path.clone(),
    }
}
