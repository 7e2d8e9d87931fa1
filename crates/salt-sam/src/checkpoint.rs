//! Loading Meta's checkpoints (`torch.save`d state_dicts such as `sam_vit_b_01ec64.pth`) and
//! safetensors files into a [`Sam`] through burn-store.
//!
//! Keys keep PyTorch's names except the `nn.Sequential` indices, which [`SEQUENTIAL_NAMES`] renames.
//! Every key must match: a missing, unexpected or misshapen key is an [`Error`] naming it (with
//! both shapes). Exceptions by design: the checkpoint's `rel_pos_*` when the model has no
//! relative positions (`salt_paper`), the parameters SAM has no counterpart for
//! (`prompt_encoder.prompt_token`, `prompt_encoder.text_projection.*`), which keep their
//! initialisation, and `pos_embed` pooled when `pos_embed_source_grid` says so.
//!
//! [`save_checkpoint`] writes the other way: a safetensors file with SAM's own key names and
//! PyTorch layouts, which `segment_anything`'s `Sam.load_state_dict` takes as it is.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::ParamId;
use burn::tensor::backend::Backend;
use burn::tensor::TensorData;
use burn_store::{
    ApplyError, BurnToPyTorchAdapter, ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter,
    PytorchStore, SafetensorsStore, TensorSnapshot,
};

use crate::config::SamConfig;
use crate::error::{Error, Result};
use crate::sam::Sam;

/// SAM's `nn.Sequential` children that salt-sam names: `(PyTorch prefix, salt-sam prefix)`.
///
/// Loading renames the left prefix to the right one ([`remap_rules`]); [`save_checkpoint`]
/// renames back. Every other key is already the burn module path (burn-store's PyTorch adapters
/// transpose burn `Linear` weights and rename burn `LayerNorm`'s `gamma`/`beta`;
/// `AdaptableLinear`, `AdaptableConv2d` and `LayerNorm2d` store PyTorch's layout and names).
pub const SEQUENTIAL_NAMES: &[(&str, &str)] = &[
    // ImageEncoderViT.neck = Sequential(Conv2d 1×1, LayerNorm2d, Conv2d 3×3, LayerNorm2d)
    ("image_encoder.neck.0.", "image_encoder.neck.conv1."),
    ("image_encoder.neck.1.", "image_encoder.neck.norm1."),
    ("image_encoder.neck.2.", "image_encoder.neck.conv2."),
    ("image_encoder.neck.3.", "image_encoder.neck.norm2."),
    // PromptEncoder.mask_downscaling = Sequential(Conv, LN2d, GELU, Conv, LN2d, GELU, Conv)
    (
        "prompt_encoder.mask_downscaling.0.",
        "prompt_encoder.mask_downscaling.conv1.",
    ),
    (
        "prompt_encoder.mask_downscaling.1.",
        "prompt_encoder.mask_downscaling.norm1.",
    ),
    (
        "prompt_encoder.mask_downscaling.3.",
        "prompt_encoder.mask_downscaling.conv2.",
    ),
    (
        "prompt_encoder.mask_downscaling.4.",
        "prompt_encoder.mask_downscaling.norm2.",
    ),
    (
        "prompt_encoder.mask_downscaling.6.",
        "prompt_encoder.mask_downscaling.conv3.",
    ),
    // MaskDecoder.output_upscaling = Sequential(ConvT, LN2d, GELU, ConvT, GELU)
    (
        "mask_decoder.output_upscaling.0.",
        "mask_decoder.output_upscaling.conv1.",
    ),
    (
        "mask_decoder.output_upscaling.1.",
        "mask_decoder.output_upscaling.norm.",
    ),
    (
        "mask_decoder.output_upscaling.3.",
        "mask_decoder.output_upscaling.conv2.",
    ),
];

/// burn's `LayerNorm` calls its affine parameters gamma/beta. burn-store's adapter would find
/// them under weight/bias too, but then still lists weight/bias as unused: rename explicitly at
/// load. (SAM's `LayerNorm2d` keeps weight/bias: neck, mask_downscaling, output_upscaling.)
const NORM_REMAP: &[(&str, &str)] = &[
    (
        r"^(image_encoder\.blocks\.\d+\.norm[12])\.weight$",
        "${1}.gamma",
    ),
    (
        r"^(image_encoder\.blocks\.\d+\.norm[12])\.bias$",
        "${1}.beta",
    ),
    (
        r"^(mask_decoder\.transformer\.(layers\.\d+\.norm[1-4]|norm_final_attn))\.weight$",
        "${1}.gamma",
    ),
    (
        r"^(mask_decoder\.transformer\.(layers\.\d+\.norm[1-4]|norm_final_attn))\.bias$",
        "${1}.beta",
    ),
];

/// The regex rules that turn checkpoint keys into salt-sam module paths, applied in order:
/// [`SEQUENTIAL_NAMES`], then the `LayerNorm` renames.
pub fn remap_rules() -> Vec<(String, String)> {
    SEQUENTIAL_NAMES
        .iter()
        .map(|(sam, ours)| (format!("^{}", sam.replace('.', r"\.")), ours.to_string()))
        .chain(
            NORM_REMAP
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string())),
        )
        .collect()
}

/// The checkpoint key of a salt-sam module path (after burn-store's PyTorch adapter):
/// [`SEQUENTIAL_NAMES`] backwards.
pub fn sam_key(path: &str) -> String {
    SEQUENTIAL_NAMES
        .iter()
        .find_map(|(sam, ours)| path.strip_prefix(ours).map(|rest| format!("{sam}{rest}")))
        .unwrap_or_else(|| path.to_string())
}

/// Model parameters that no SAM checkpoint has: they keep their initialisation.
const MODEL_ONLY: &[&str] = &[
    "prompt_encoder.prompt_token",
    "prompt_encoder.text_projection.",
];

/// Checkpoint keys that are never model parameters (non-persistent buffers some exporters keep).
const IGNORED: &[&str] = &["pixel_mean", "pixel_std"];

/// What [`load_checkpoint`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Tensors loaded.
    pub applied: usize,
    /// Checkpoint keys skipped by design (e.g. `rel_pos_*` for `salt_paper`).
    pub skipped_by_design: Vec<String>,
    /// Model parameters absent from SAM checkpoints, left at their initialisation.
    pub kept_init: Vec<String>,
    /// Keys transformed at load (e.g. `image_encoder.pos_embed` pooled 64×64 → 32×32).
    pub transformed: Vec<String>,
}

/// The official presets' encoder sizes: `(name, embed_dim, depth)`.
const PRESET_SIZES: &[(&str, usize, usize)] = &[
    ("vit_b", 768, 12),
    ("vit_l", 1024, 24),
    ("vit_h", 1280, 32),
    ("tiny", 32, 4),
];

/// Loads a checkpoint (`.pth` / `.pt`: `torch.save`d state_dict; `.safetensors`) into `sam`.
///
/// On error the model may be partly loaded: build a fresh one before retrying.
pub fn load_checkpoint<B: Backend>(sam: &mut Sam<B>, path: &Path) -> Result<LoadReport> {
    let snapshots = read_snapshots(path)?;
    check_preset(&sam.config, path, &snapshots)?;
    let mut report = LoadReport::default();
    let mut kept = Vec::new();
    for (key, snap) in snapshots {
        if IGNORED.contains(&key.as_str()) {
            continue;
        }
        if !sam.config.image_encoder.use_rel_pos && is_rel_pos(&key) {
            report.skipped_by_design.push(key);
            continue;
        }
        if key == "image_encoder.pos_embed" {
            if let Some(pooled) = pool_pos_embed(&sam.config, path, &snap)? {
                report.transformed.push(key);
                kept.push(pooled);
                continue;
            }
        }
        kept.push(snap);
    }
    if !report.skipped_by_design.is_empty() {
        tracing::info!(
            keys = report.skipped_by_design.len(),
            "checkpoint rel_pos_* skipped by design: the `{}` model has no relative positions",
            sam.config.name
        );
    }
    let result = sam.apply(kept, None, Some(Box::new(PyTorchToBurnAdapter)), false);
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
    let mut missing = Vec::new();
    for (key, _) in &result.missing {
        if MODEL_ONLY.iter().any(|p| key.starts_with(p)) {
            report.kept_init.push(key.clone());
        } else {
            missing.push(key.clone());
        }
    }
    if !missing.is_empty() {
        return Err(Error::MissingKeys {
            path: path.to_path_buf(),
            keys: missing,
        });
    }
    if !result.unused.is_empty() {
        return Err(Error::UnexpectedKeys {
            path: path.to_path_buf(),
            keys: result.unused.clone(),
        });
    }
    report.applied = result.applied.len();
    tracing::info!(
        path = %path.display(),
        applied = report.applied,
        kept_init = report.kept_init.len(),
        "loaded SAM checkpoint"
    );
    Ok(report)
}

/// What [`save_checkpoint`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaveReport {
    /// Tensors written.
    pub tensors: usize,
    /// Parameters written (sum of the tensors' element counts).
    pub parameters: usize,
    /// Size of the file in bytes.
    pub bytes: usize,
}

/// Writes `sam` as a SAM checkpoint: safetensors, SAM's key names (the inverse of
/// [`SEQUENTIAL_NAMES`] and of the `LayerNorm` renames), PyTorch layouts, f32. `metadata` goes
/// into the file's header. The file is written to a temporary name and renamed.
///
/// The model must be plain: adapters are merged first (`salt_core::merge`); a model that still
/// holds adapter tensors is an error naming the first one. Model-only parameters (the learned
/// prompt token) and a pooled `pos_embed` are written as they are; [`load_checkpoint`] reads
/// them back into a model of the same configuration.
pub fn save_checkpoint<B: Backend>(
    sam: &Sam<B>,
    path: &Path,
    metadata: &BTreeMap<String, String>,
) -> Result<SaveReport> {
    check_save_path(path)?;
    let write_err = |message: String| Error::CheckpointWrite {
        path: path.to_path_buf(),
        message,
    };
    let mut tensors = Vec::new();
    let mut keys = std::collections::HashSet::new();
    for snap in sam.collect(None, Some(Box::new(BurnToPyTorchAdapter)), false) {
        let burn_path = snap.full_path();
        if burn_path.split('.').any(|part| part == "adapter") {
            return Err(write_err(format!(
                "`{burn_path}` is an adapter tensor: merge the adapters into the weights first"
            )));
        }
        let key = sam_key(&burn_path);
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
    let bytes = salt_core::write_f32_safetensors(path, &tensors, header)
        .map_err(|e| write_err(e.to_string()))?;
    tracing::info!(path = %path.display(), tensors = tensors.len(), parameters, "wrote SAM checkpoint");
    Ok(SaveReport {
        tensors: tensors.len(),
        parameters,
        bytes,
    })
}

/// Checks that `path` names a file [`save_checkpoint`] can write (a `.safetensors` file), so
/// callers can refuse a bad output path before any heavy work.
pub fn check_save_path(path: &Path) -> Result<()> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if ext.eq_ignore_ascii_case("safetensors") {
        return Ok(());
    }
    Err(Error::CheckpointWrite {
        path: path.to_path_buf(),
        message: format!(
            "extension `{ext}`: salt writes checkpoints as .safetensors (PyTorch reads them with \
             `safetensors.torch.load_file`)"
        ),
    })
}

/// The header metadata of a safetensors checkpoint (empty for `.pth` files and for
/// safetensors files without metadata).
pub fn checkpoint_metadata(path: &Path) -> Result<BTreeMap<String, String>> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if !ext.eq_ignore_ascii_case("safetensors") {
        return Ok(BTreeMap::new());
    }
    let read_err = |message: String| Error::CheckpointRead {
        path: path.to_path_buf(),
        message,
    };
    let mut file = std::fs::File::open(path).map_err(|e| read_err(e.to_string()))?;
    let mut len = [0u8; 8];
    std::io::Read::read_exact(&mut file, &mut len).map_err(|e| read_err(e.to_string()))?;
    let len = u64::from_le_bytes(len);
    if len > 100 << 20 {
        return Err(read_err(format!(
            "header of {len} bytes: not a safetensors file"
        )));
    }
    let mut header = vec![0u8; len as usize];
    std::io::Read::read_exact(&mut file, &mut header).map_err(|e| read_err(e.to_string()))?;
    let json: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| read_err(format!("header is not JSON: {e}")))?;
    Ok(json
        .get("__metadata__")
        .and_then(|m| m.as_object())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default())
}

fn error_key(e: &ApplyError) -> String {
    match e {
        ApplyError::ShapeMismatch { path, .. }
        | ApplyError::DTypeMismatch { path, .. }
        | ApplyError::AdapterError { path, .. }
        | ApplyError::LoadError { path, .. } => path.clone(),
    }
}

fn is_rel_pos(key: &str) -> bool {
    key.starts_with("image_encoder.blocks.")
        && (key.ends_with(".attn.rel_pos_h") || key.ends_with(".attn.rel_pos_w"))
}

/// Reads every tensor of the file (lazily: data is read when applied), keys remapped.
pub fn read_snapshots(path: &Path) -> Result<BTreeMap<String, TensorSnapshot>> {
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
            let mut store = remap_rules()
                .iter()
                .fold(PytorchStore::from_file(path), |s, (from, to)| {
                    s.with_key_remapping(from, to)
                })
                .map_indices_contiguous(false);
            store
                .get_all_snapshots()
                .cloned()
                .map_err(|e| read_err(e.to_string()))
        }
        "safetensors" => {
            let mut store = remap_rules()
                .iter()
                .fold(SafetensorsStore::from_file(path), |s, (from, to)| {
                    s.with_key_remapping(from, to)
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

/// Errors with a preset suggestion when the checkpoint's encoder width or depth differs from
/// the model's.
fn check_preset(
    config: &SamConfig,
    path: &Path,
    snapshots: &BTreeMap<String, TensorSnapshot>,
) -> Result<()> {
    let Some(patch) = snapshots.get("image_encoder.patch_embed.proj.weight") else {
        return Ok(()); // reported as a missing key
    };
    let embed_dim = patch.shape.as_slice().first().copied().unwrap_or(0);
    let depth = snapshots
        .keys()
        .filter_map(|k| k.strip_prefix("image_encoder.blocks."))
        .filter_map(|rest| rest.split('.').next()?.parse::<usize>().ok())
        .max()
        .map_or(0, |m| m + 1);
    let enc = &config.image_encoder;
    if embed_dim == enc.embed_dim && depth == enc.depth {
        return Ok(());
    }
    let suggestion = match PRESET_SIZES
        .iter()
        .find(|(_, d, n)| *d == embed_dim && *n == depth)
    {
        Some((name, _, _)) => format!(
            "use --model {name} (SamConfig::{name}()){}",
            if *name == "vit_b" {
                " or --model salt_paper (built from ViT-B)"
            } else {
                ""
            }
        ),
        None => "no preset has this size; build a SamConfig with these values".to_string(),
    };
    Err(Error::WrongPreset {
        path: path.to_path_buf(),
        expected: format!(
            "`{}`: embed_dim {}, {} blocks",
            config.name, enc.embed_dim, enc.depth
        ),
        found: format!("an image encoder with embed_dim {embed_dim}, {depth} blocks"),
        suggestion,
    })
}

/// `pos_embed` `[1, G, G, d]` average-pooled to the model's grid when the configuration says
/// the checkpoint has the source grid G; `None` when the tensor is to be loaded as-is.
fn pool_pos_embed(
    config: &SamConfig,
    path: &Path,
    snap: &TensorSnapshot,
) -> Result<Option<TensorSnapshot>> {
    let enc = &config.image_encoder;
    let Some(src) = enc.pos_embed_source_grid else {
        return Ok(None);
    };
    let grid = enc.grid();
    let dims = snap.shape.to_vec();
    if dims.len() != 4 || dims[1] != src || dims[2] != src || src == grid {
        return Ok(None); // loaded as-is (a fine-tuned checkpoint at the model's grid) or mismatched
    }
    let d = dims[3];
    let data = snap.to_data().map_err(|e| Error::BadTensor {
        path: path.to_path_buf(),
        key: "image_encoder.pos_embed".into(),
        message: e.to_string(),
    })?;
    let values = data
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| Error::BadTensor {
            path: path.to_path_buf(),
            key: "image_encoder.pos_embed".into(),
            message: format!("{e:?}"),
        })?;
    let pooled = avg_pool_grid(&values, src, d, src / grid);
    tracing::info!(from = src, to = grid, "pos_embed average-pooled at load");
    Ok(Some(TensorSnapshot::from_data(
        TensorData::new(pooled, [1, grid, grid, d]),
        vec!["image_encoder".into(), "pos_embed".into()],
        vec![],
        ParamId::new(),
    )))
}

/// `k × k` average pooling of a channels-last `[g, g, d]` grid (`F.avg_pool2d` on
/// `pos_embed.permute(0, 3, 1, 2)`), summed in f64.
pub(crate) fn avg_pool_grid(values: &[f32], g: usize, d: usize, k: usize) -> Vec<f32> {
    let out = g / k;
    let mut pooled = vec![0f32; out * out * d];
    for oy in 0..out {
        for ox in 0..out {
            for c in 0..d {
                let mut sum = 0f64;
                for dy in 0..k {
                    for dx in 0..k {
                        sum += values[((oy * k + dy) * g + ox * k + dx) * d + c] as f64;
                    }
                }
                pooled[(oy * out + ox) * d + c] = (sum / (k * k) as f64) as f32;
            }
        }
    }
    pooled
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avg_pool_averages_blocks() {
        // 4×4 grid, one channel, values 0..16 row-major; 2×2 blocks average to
        // (0+1+4+5)/4 = 2.5, (2+3+6+7)/4 = 4.5, 10.5, 12.5.
        let v: Vec<f32> = (0..16).map(|i| i as f32).collect();
        assert_eq!(avg_pool_grid(&v, 4, 1, 2), vec![2.5, 4.5, 10.5, 12.5]);
    }
}
