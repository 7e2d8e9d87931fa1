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

/// Identity of the base checkpoint an adapter was trained on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseIdentity {
    /// File name of the checkpoint, for humans.
    pub file: String,
    /// `sha256:<hex>` of the checkpoint file, or another stable identifier.
    pub id: String,
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

    /// Errors unless `base` is the checkpoint this adapter was trained on (when both are known).
    pub fn check_base(&self, dir: &Path, base: Option<&BaseIdentity>) -> Result<()> {
        match (&self.base, base) {
            (Some(expected), Some(found)) if expected.id != found.id => Err(Error::BaseMismatch {
                file: dir.join(ADAPTER_CONFIG),
                expected: format!("{} ({})", expected.file, expected.id),
                found: format!("{} ({})", found.file, found.id),
            }),
            _ => Ok(()),
        }
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
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
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
/// the header) through [`write_atomic`]; returns the file's size in bytes.
pub fn write_f32_safetensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    metadata: HashMap<String, String>,
) -> Result<usize> {
    let safetensors_err = |source| Error::Safetensors {
        path: path.to_path_buf(),
        source,
    };
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

/// Tensors read from an adapter file, by key.
#[derive(Debug, Clone)]
pub struct AdapterTensors {
    file: PathBuf,
    tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

impl AdapterTensors {
    /// Reads `dir/adapter.safetensors`.
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
                .collect();
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
