//! Adapter files: `adapter.safetensors` (the trained tensors) + `adapter_config.json` (how to
//! rebuild the adapter around them). Both are written to a temporary file and then renamed.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{backend::Backend, Tensor, TensorData};
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::config::{AdapterConfig, TrainablePolicy};
use crate::error::{Error, Result};
use crate::policy::{is_trainable, PathStack};
use crate::svd::SIGN_RULE;

/// File name of the tensors.
pub const ADAPTER_WEIGHTS: &str = "adapter.safetensors";
/// File name of the manifest.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// Version of the adapter format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Identity of the base model an adapter was trained on.
///
/// A checkpoint file is identified by the sha256 of its bytes (`id = "sha256:<hex>"`, `file` =
/// its canonical path when trained); a random base (no checkpoint) by its preset and seed
/// (`id = "random:<preset>:seed=<seed>"`, `file` = `""`). Only `id` is compared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseIdentity {
    /// Where the checkpoint was when the adapter was trained (canonical path), `""` for a
    /// random base; for humans and for finding the base again.
    pub file: String,
    /// `sha256:<hex>` of the checkpoint file, or `random:<preset>:seed=<seed>`.
    pub id: String,
}

impl BaseIdentity {
    /// The identity of the checkpoint file at `path`: its sha256 (through [`sha256_file_cached`]).
    pub fn of_file(path: &Path) -> Result<Self> {
        let canonical = std::fs::canonicalize(path).map_err(|source| Error::Io {
            action: "finding",
            path: path.to_path_buf(),
            source,
        })?;
        let hex = sha256_file_cached(&canonical)?;
        Ok(Self {
            file: canonical.display().to_string(),
            id: format!("sha256:{hex}"),
        })
    }

    /// The identity of random base weights of `preset` drawn from `seed`.
    pub fn random(preset: &str, seed: u64) -> Self {
        Self {
            file: String::new(),
            id: format!("random:{preset}:seed={seed}"),
        }
    }

    /// Whether this is a random base.
    pub fn is_random(&self) -> bool {
        self.id.starts_with("random:")
    }

    /// For messages: `id` and, when known, the file.
    pub fn describe(&self) -> String {
        match self.file.is_empty() {
            true => self.id.clone(),
            false => format!("{} ({})", self.file, self.id),
        }
    }
}

/// Environment variable naming the directory of the sha256 cache (default
/// `$XDG_CACHE_HOME/salt`, else `$HOME/.cache/salt`).
pub const CACHE_DIR_ENV: &str = "SALT_CACHE_DIR";
const HASH_CACHE_FILE: &str = "sha256-cache.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct HashEntry {
    size: u64,
    mtime_ns: u128,
    sha256: String,
}

fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os(CACHE_DIR_ENV) {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("salt"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("salt"))
}

/// The sha256 (lower-case hex) of the file's bytes.
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let io = |source| Error::Io {
        action: "hashing",
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// [`sha256_file`] through a small cache keyed by canonical path, size and modification time
/// (`sha256-cache.json` in [`CACHE_DIR_ENV`]'s directory): hashing ViT-B's 375 MB costs about a
/// second, looking it up microseconds. A cache that cannot be read or written is ignored.
pub fn sha256_file_cached(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(|source| Error::Io {
        action: "reading",
        path: path.to_path_buf(),
        source,
    })?;
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let key = path.display().to_string();
    let cache_file = cache_dir().map(|d| d.join(HASH_CACHE_FILE));
    let mut cache: BTreeMap<String, HashEntry> = cache_file
        .as_ref()
        .and_then(|f| std::fs::read(f).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    if let Some(e) = cache.get(&key) {
        if e.size == meta.len() && e.mtime_ns == mtime_ns && mtime_ns != 0 {
            return Ok(e.sha256.clone());
        }
    }
    let t0 = std::time::Instant::now();
    let sha256 = sha256_file(path)?;
    tracing::debug!(file = %key, seconds = t0.elapsed().as_secs_f64(), "hashed base checkpoint");
    if let Some(f) = cache_file {
        // Forget files that are gone, so the cache stays small.
        cache.retain(|p, _| Path::new(p).exists());
        cache.insert(
            key,
            HashEntry {
                size: meta.len(),
                mtime_ns,
                sha256: sha256.clone(),
            },
        );
        let written = serde_json::to_vec_pretty(&cache)
            .map_err(|e| e.to_string())
            .and_then(|b| write_atomic(&f, &b).map_err(|e| e.to_string()));
        if let Err(e) = written {
            tracing::warn!(cache = %f.display(), "cannot write the sha256 cache: {e}");
        }
    }
    Ok(sha256)
}

/// The first non-finite value of `values`, as `(index, value)`.
pub fn first_non_finite(values: &[f32]) -> Option<(usize, f32)> {
    values
        .iter()
        .position(|v| !v.is_finite())
        .map(|i| (i, values[i]))
}

/// Contents of `adapter_config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterManifest {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The adapter (method, ranks, targets, init, seed); `None` when only plain parameters
    /// trained (full fine-tuning, decoder only): the file then holds those parameters.
    pub adapter: Option<AdapterConfig>,
    /// Which non-adapter parameters trained (and are in the file).
    pub trainable: TrainablePolicy,
    /// The SVD sign rule the factors followed ([`SIGN_RULE`]).
    pub svd_sign_rule: String,
    /// The model preset the adapter belongs to (e.g. `salt_paper`).
    pub model: String,
    /// The base checkpoint, when known.
    pub base: Option<BaseIdentity>,
    /// Free-form metadata (training run, epoch, metrics).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

impl AdapterManifest {
    /// A manifest for a fresh adapter.
    pub fn new(
        adapter: Option<AdapterConfig>,
        trainable: TrainablePolicy,
        model: &str,
        base: Option<BaseIdentity>,
    ) -> Self {
        Self {
            format_version: FORMAT_VERSION,
            adapter,
            trainable,
            svd_sign_rule: SIGN_RULE.to_string(),
            model: model.to_string(),
            base,
            metadata: BTreeMap::new(),
        }
    }

    /// Reads `dir/adapter_config.json` and checks its version.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(ADAPTER_CONFIG);
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
            action: "reading",
            path: path.clone(),
            source,
        })?;
        let m: Self = serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.clone(),
            source,
        })?;
        if m.format_version != FORMAT_VERSION {
            return Err(Error::FormatVersion {
                file: path,
                found: m.format_version,
                expected: FORMAT_VERSION,
            });
        }
        Ok(m)
    }

    /// Errors unless `base` is the base model this adapter was trained on: a recorded base that
    /// differs is [`Error::BaseMismatch`] with both identities, no recorded base is
    /// [`Error::BaseUnknown`]. `allow_mismatch` turns both into warnings (the user knows why).
    pub fn check_base(&self, dir: &Path, base: &BaseIdentity, allow_mismatch: bool) -> Result<()> {
        let file = dir.join(ADAPTER_CONFIG);
        let err = match &self.base {
            Some(expected) if expected.id == base.id => return Ok(()),
            Some(expected) => Error::BaseMismatch {
                file,
                expected: expected.describe(),
                found: base.describe(),
            },
            None => Error::BaseUnknown { file },
        };
        if allow_mismatch {
            tracing::warn!("{err} (--allow-base-mismatch: going on)");
            return Ok(());
        }
        Err(err)
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so a
/// crash never leaves a truncated file under the final name.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let io = |action, source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| io("creating the directory of", e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // pid + a per-process counter: two threads writing one file never share a temporary.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io("writing", e));
    }
    Ok(())
}

struct Collector<'a> {
    path: PathStack,
    policy: &'a TrainablePolicy,
    out: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl<B: Backend> ModuleVisitor<B> for Collector<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let key = self.path.key();
        if is_trainable(&key, self.policy) {
            let data = param.val().into_data().convert::<f32>();
            let shape = data.shape.to_vec();
            self.out.push((
                key,
                shape,
                data.into_vec::<f32>().expect("f32 after convert"),
            ));
        }
    }
}

/// The trainable tensors of `module` under `policy`, as `(key, shape, values)`.
pub fn trainable_tensors<B: Backend, M: Module<B>>(
    module: &M,
    policy: &TrainablePolicy,
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut c = Collector {
        path: PathStack::default(),
        policy,
        out: Vec::new(),
    };
    module.visit(&mut c);
    c.out
}

/// Writes f32 tensors `(key, shape, values)` as a safetensors file (little-endian, `metadata` in
/// the header) through [`write_atomic`]; returns the file's size in bytes. A NaN or infinity is
/// [`Error::NonFinite`] naming the tensor, and nothing is written.
pub fn write_f32_safetensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    metadata: HashMap<String, String>,
) -> Result<usize> {
    let safetensors_err = |source| Error::Safetensors {
        path: path.to_path_buf(),
        source,
    };
    for (key, _, values) in tensors {
        if let Some((index, value)) = first_non_finite(values) {
            return Err(Error::NonFinite {
                file: path.to_path_buf(),
                key: key.clone(),
                index,
                value,
            });
        }
    }
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((k, shape, _), b)| {
            TensorView::new(Dtype::F32, shape.clone(), b).map(|v| (k.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(safetensors_err)?;
    let data = safetensors::serialize(views, Some(metadata)).map_err(safetensors_err)?;
    write_atomic(path, &data)?;
    Ok(data.len())
}

/// Writes `dir/adapter.safetensors` (every trainable tensor of `module` under
/// `manifest.trainable`) and `dir/adapter_config.json`.
pub fn save_adapter<B: Backend, M: Module<B>>(
    module: &M,
    manifest: &AdapterManifest,
    dir: &Path,
) -> Result<()> {
    let tensors = trainable_tensors::<B, M>(module, &manifest.trainable);
    let info = HashMap::from([
        ("format".to_string(), "salt-adapter".to_string()),
        (
            "method".to_string(),
            manifest
                .adapter
                .as_ref()
                .map_or("none", |a| a.method.name())
                .to_string(),
        ),
    ]);
    write_f32_safetensors(&dir.join(ADAPTER_WEIGHTS), &tensors, info)?;
    let config = dir.join(ADAPTER_CONFIG);
    let json = serde_json::to_vec_pretty(manifest).map_err(|source| Error::Json {
        path: config.clone(),
        source,
    })?;
    write_atomic(&config, &json)?;
    tracing::info!(dir = %dir.display(), "saved adapter");
    Ok(())
}

struct FiniteCheck {
    path: PathStack,
    error: Option<(String, usize, f32)>,
}

impl<B: Backend> ModuleVisitor<B> for FiniteCheck {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.error.is_some() {
            return;
        }
        let data = param.val().into_data().convert::<f32>();
        if let Some((index, value)) = data.as_slice::<f32>().ok().and_then(first_non_finite) {
            self.error = Some((self.path.key(), index, value));
        }
    }
}

/// Errors with [`Error::NonFinite`] naming the first float parameter of `module` that holds a
/// NaN or an infinity; `file` is what the weights were loaded from (for the message). One pass
/// over the weights: meant to run once after loading a checkpoint, not per step.
pub fn check_finite<B: Backend, M: Module<B>>(module: &M, file: &Path) -> Result<()> {
    let mut c = FiniteCheck {
        path: PathStack::default(),
        error: None,
    };
    module.visit(&mut c);
    match c.error {
        None => Ok(()),
        Some((key, index, value)) => Err(Error::NonFinite {
            file: file.to_path_buf(),
            key,
            index,
            value,
        }),
    }
}

/// Tensors read from an adapter file, by key.
#[derive(Debug, Clone)]
pub struct AdapterTensors {
    file: PathBuf,
    tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

impl AdapterTensors {
    /// Reads `dir/adapter.safetensors`; a tensor that is not f32 or holds a NaN or infinity is an
    /// error naming it.
    pub fn read(dir: &Path) -> Result<Self> {
        let file = dir.join(ADAPTER_WEIGHTS);
        let bytes = std::fs::read(&file).map_err(|source| Error::Io {
            action: "reading",
            path: file.clone(),
            source,
        })?;
        let st = SafeTensors::deserialize(&bytes).map_err(|source| Error::Safetensors {
            path: file.clone(),
            source,
        })?;
        let mut tensors = BTreeMap::new();
        for (key, view) in st.tensors() {
            if view.dtype() != Dtype::F32 {
                return Err(Error::DType {
                    file,
                    key,
                    dtype: format!("{:?}", view.dtype()),
                });
            }
            let values = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect::<Vec<f32>>();
            if let Some((index, value)) = first_non_finite(&values) {
                return Err(Error::NonFinite {
                    file,
                    key,
                    index,
                    value,
                });
            }
            tensors.insert(key, (view.shape().to_vec(), values));
        }
        Ok(Self { file, tensors })
    }

    /// The shape and values of `key`.
    pub fn get(&self, key: &str) -> Option<(&[usize], &[f32])> {
        self.tensors
            .get(key)
            .map(|(s, v)| (s.as_slice(), v.as_slice()))
    }

    /// The keys in the file.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }
}

struct Loader<'a> {
    path: PathStack,
    policy: &'a TrainablePolicy,
    tensors: &'a AdapterTensors,
    used: Vec<String>,
    error: Option<Error>,
}

impl<B: Backend> ModuleMapper<B> for Loader<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let key = self.path.key();
        if self.error.is_some() || !is_trainable(&key, self.policy) {
            return param;
        }
        let expected = param.shape().dims::<D>().to_vec();
        match self.tensors.tensors.get(&key) {
            None => {
                self.error = Some(Error::MissingKey {
                    file: self.tensors.file.clone(),
                    key,
                    expected,
                });
                param
            }
            Some((shape, _)) if *shape != expected => {
                self.error = Some(Error::ShapeMismatch {
                    file: self.tensors.file.clone(),
                    key,
                    expected,
                    found: shape.clone(),
                });
                param
            }
            Some((shape, values)) => {
                self.used.push(key);
                let data = TensorData::new(values.clone(), shape.clone());
                let require_grad = param.is_require_grad();
                param.map(|t| {
                    Tensor::<B, D>::from_data(data, &t.device()).set_require_grad(require_grad)
                })
            }
        }
    }
}

/// Loads the trainable tensors of `module` (adapter parameters and the policy's parameters)
/// from `tensors`. Every expected key must be present with its shape, and every key in the file
/// must have a place in the model; the first problem is returned as a typed error naming the key.
pub fn load_adapter_tensors<B: Backend, M: Module<B>>(
    module: M,
    policy: &TrainablePolicy,
    tensors: &AdapterTensors,
) -> Result<M> {
    let mut loader = Loader {
        path: PathStack::default(),
        policy,
        tensors,
        used: Vec::new(),
        error: None,
    };
    let module = module.map(&mut loader);
    if let Some(e) = loader.error {
        return Err(e);
    }
    if let Some((key, (shape, _))) = tensors
        .tensors
        .iter()
        .find(|(k, _)| !loader.used.contains(k))
    {
        return Err(Error::UnexpectedKey {
            file: tensors.file.clone(),
            key: key.clone(),
            found: shape.clone(),
        });
    }
    Ok(module)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(base: Option<BaseIdentity>) -> AdapterManifest {
        AdapterManifest::new(
            Some(AdapterConfig::ssam()),
            TrainablePolicy::with_patterns(Vec::<String>::new()),
            "tiny",
            base,
        )
    }

    #[test]
    fn check_base_refuses_another_or_an_unknown_base_unless_allowed() {
        let dir = Path::new("run/last");
        let a = BaseIdentity::random("tiny", 1);
        let b = BaseIdentity {
            file: "/m/sam.pth".into(),
            id: "sha256:00".into(),
        };
        manifest(Some(a.clone()))
            .check_base(dir, &a, false)
            .unwrap();
        let err = manifest(Some(a.clone()))
            .check_base(dir, &b, false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("random:tiny:seed=1") && err.contains("/m/sam.pth (sha256:00)"),
            "{err}"
        );
        let err = manifest(None).check_base(dir, &a, false).unwrap_err();
        assert!(matches!(err, Error::BaseUnknown { .. }), "{err}");
        manifest(None).check_base(dir, &a, true).unwrap();
        manifest(Some(a)).check_base(dir, &b, true).unwrap();
    }

    #[test]
    fn sha256_is_the_standard_one_and_the_cache_follows_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("base.bin");
        std::fs::write(&f, b"abc").unwrap();
        // FIPS 180-2's example.
        const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_file(&f).unwrap(), ABC);
        assert_eq!(sha256_file_cached(&f).unwrap(), ABC);
        assert_eq!(sha256_file_cached(&f).unwrap(), ABC);
        // Another size: the cache entry no longer applies.
        std::fs::write(&f, b"abcd").unwrap();
        assert_ne!(sha256_file_cached(&f).unwrap(), ABC);
    }

    #[test]
    fn non_finite_tensors_are_neither_written_nor_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(ADAPTER_WEIGHTS);
        let t = vec![("a.svd.scale".to_string(), vec![2], vec![1.0, f32::INFINITY])];
        let err = write_f32_safetensors(&file, &t, HashMap::new()).unwrap_err();
        assert!(err.to_string().contains("`a.svd.scale`"), "{err}");
        assert!(!file.exists());
        // A file written by someone else with a NaN.
        let bytes: Vec<u8> = [1.0f32, f32::NAN]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let view = TensorView::new(Dtype::F32, vec![2], &bytes).unwrap();
        let data = safetensors::serialize([("b.lora.up", view)], None).unwrap();
        std::fs::write(&file, data).unwrap();
        let err = AdapterTensors::read(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("`b.lora.up`") && err.contains("NaN at index 1"),
            "{err}"
        );
    }

    #[test]
    fn ssam_is_written_as_ssam_and_svd_is_still_read() {
        let json = serde_json::to_value(manifest(None)).unwrap();
        assert_eq!(json["adapter"]["method"], "ssam");
        let mut old = json.clone();
        old["adapter"]["method"] = "svd".into();
        let m: AdapterManifest = serde_json::from_value(old).unwrap();
        assert_eq!(m.adapter.unwrap().method, crate::Method::Svd);
    }
}
