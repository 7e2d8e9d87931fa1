//! Attaching adapters to the layers that match a configuration.

use burn::tensor::backend::Backend;
use rand::{rngs::StdRng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::adapter::{AdaptableLayer, Adapter, VisitAdaptable};
use crate::config::{AdapterConfig, Method};
use crate::error::{Error, Result};
use crate::lora::LoraAdapter;
use crate::pattern;
use crate::salt::SaltAdapter;
use crate::ssam::SvdAdapter;
use crate::svd::SvdFactors;

/// One layer an adapter attached to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdaptedLayer {
    /// Dotted path of the layer.
    pub path: String,
    /// `[rows, cols]` of its weight matrix.
    pub shape: [usize; 2],
    /// Trainable values the adapter adds.
    pub adapter_params: usize,
}

/// Validates the patterns and the method of `config`.
fn validate(config: &AdapterConfig) -> Result<()> {
    config.method.validate()?;
    if config.targets.is_empty() {
        return Err(Error::InvalidConfig {
            field: "targets",
            value: "[]".into(),
            expected: "at least one layer path pattern, e.g. \"attn.qkv\"".into(),
        });
    }
    for t in &config.targets {
        pattern::validate(t).map_err(|e| Error::InvalidConfig {
            field: "targets",
            value: t.clone(),
            expected: format!("a valid pattern ({e})"),
        })?;
    }
    Ok(())
}

/// Builds the adapter `method` for one layer, computing its SVD where the method needs one.
pub fn build_adapter<B: Backend, R: rand::Rng>(
    method: &Method,
    path: &str,
    layer: &dyn AdaptableLayer<B>,
    rng: &mut R,
) -> Result<Adapter<B>> {
    let [rows, cols] = layer.matrix_shape();
    let k = rows.min(cols);
    let device = layer.device();
    let factors = || -> Result<SvdFactors> {
        let w = layer.weight_matrix().into_data().convert::<f32>();
        let w = w.as_slice::<f32>().expect("f32 after convert");
        SvdFactors::compute(path, w, rows, cols)
    };
    let too_large = |what, rank, expected: String| Error::RankTooLarge {
        path: path.to_string(),
        rows,
        cols,
        k,
        what,
        rank,
        expected,
    };
    Ok(match *method {
        Method::Salt {
            svd_rank,
            lora_rank,
            init,
        } => {
            if svd_rank > k {
                return Err(too_large("svd_rank", svd_rank, format!("at most k = {k}")));
            }
            if svd_rank < k && lora_rank > k - svd_rank {
                return Err(too_large(
                    "lora_rank",
                    lora_rank,
                    format!("at most k - svd_rank = {}", k - svd_rank),
                ));
            }
            Adapter::Salt(SaltAdapter::new(
                &factors()?,
                svd_rank,
                lora_rank,
                init,
                rng,
                &device,
            ))
        }
        Method::Svd => Adapter::Svd(SvdAdapter::new(&factors()?, &device)),
        Method::Lora {
            rank,
            scale,
            dropout,
        } => {
            if rank > k {
                return Err(too_large("rank", rank, format!("at most k = {k}")));
            }
            Adapter::Lora(LoraAdapter::new(
                rows, cols, rank, scale, dropout, rng, &device,
            ))
        }
    })
}

/// Attaches the adapter of `config` to every layer of `model` whose path matches a target.
///
/// Call it after the base weights are loaded: SVD adapters factor the weights they find.
/// Layers are visited in model order and all draw from one generator seeded with `config.seed`,
/// so every layer gets its own initial values and a run is reproducible.
///
/// Errors when no layer matches, a rank does not fit a layer, or an SVD fails.
pub fn inject<B: Backend, M: VisitAdaptable<B>>(
    model: &mut M,
    config: &AdapterConfig,
) -> Result<Vec<AdaptedLayer>> {
    validate(config)?;
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut adapted = Vec::new();
    let mut all = Vec::new();
    let mut first_err = None;
    model.visit_adaptable("", &mut |path, layer| {
        all.push(path.to_string());
        if first_err.is_some() || !pattern::matches_any(&config.targets, path) {
            return;
        }
        if !layer.supports_adapter() {
            first_err = Some(Error::InvalidConfig {
                field: "targets",
                value: path.to_string(),
                expected: "a linear layer or an ungrouped convolution".into(),
            });
            return;
        }
        match build_adapter(&config.method, path, &*layer, &mut rng) {
            Ok(adapter) => {
                let adapter_params = burn::module::Module::num_params(&adapter);
                layer.set_adapter(Some(adapter));
                adapted.push(AdaptedLayer {
                    path: path.to_string(),
                    shape: layer.matrix_shape(),
                    adapter_params,
                });
            }
            Err(e) => first_err = Some(e),
        }
    });
    if let Some(e) = first_err {
        return Err(e);
    }
    if adapted.is_empty() {
        let examples = all.iter().take(4).cloned().collect::<Vec<_>>().join(", ");
        return Err(Error::NoTargetMatched {
            patterns: config.targets.clone(),
            available: all.len(),
            examples: if examples.is_empty() {
                "none".into()
            } else {
                examples
            },
        });
    }
    tracing::info!(
        method = config.method.name(),
        layers = adapted.len(),
        "attached adapters"
    );
    Ok(adapted)
}

/// The trainable parameters [`inject`] would attach for `config`, from the layer shapes alone
/// (no SVD): SALT `2r + 2q(k − r)`, S-SAM `2k`, LoRA `rank·(rows + cols)` per targeted layer of
/// shape `rows × cols`, `k = min(rows, cols)`. Same errors as [`inject`] for a target that
/// matches nothing or a rank that does not fit.
pub fn adapter_param_count<B: Backend, M: VisitAdaptable<B>>(
    model: &mut M,
    config: &AdapterConfig,
) -> Result<usize> {
    validate(config)?;
    let mut total = 0;
    let mut matched = 0;
    let mut all = 0;
    let mut first_err = None;
    model.visit_adaptable("", &mut |path, layer| {
        all += 1;
        if first_err.is_some() || !pattern::matches_any(&config.targets, path) {
            return;
        }
        let [rows, cols] = layer.matrix_shape();
        let k = rows.min(cols);
        let too_large = |what, rank, expected: String| Error::RankTooLarge {
            path: path.to_string(),
            rows,
            cols,
            k,
            what,
            rank,
            expected,
        };
        matched += 1;
        total += match config.method {
            Method::Salt {
                svd_rank,
                lora_rank,
                ..
            } => {
                if svd_rank > k {
                    first_err = Some(too_large("svd_rank", svd_rank, format!("at most k = {k}")));
                    return;
                }
                if svd_rank < k && lora_rank > k - svd_rank {
                    first_err = Some(too_large(
                        "lora_rank",
                        lora_rank,
                        format!("at most k - svd_rank = {}", k - svd_rank),
                    ));
                    return;
                }
                let low_rank = if svd_rank < k {
                    2 * lora_rank * (k - svd_rank)
                } else {
                    0
                };
                2 * svd_rank + low_rank
            }
            Method::Svd => 2 * k,
            Method::Lora { rank, .. } => {
                if rank > k {
                    first_err = Some(too_large("rank", rank, format!("at most k = {k}")));
                    return;
                }
                rank * (rows + cols)
            }
        };
    });
    if let Some(e) = first_err {
        return Err(e);
    }
    if matched == 0 {
        return Err(Error::NoTargetMatched {
            patterns: config.targets.clone(),
            available: all,
            examples: "none".into(),
        });
    }
    Ok(total)
}

/// Folds every adapter of `model` into its base weight: a plain model with no adapter cost.
pub fn merge<B: Backend, M: VisitAdaptable<B>>(model: &mut M) -> usize {
    let mut n = 0;
    model.visit_adaptable("", &mut |_, layer| {
        if layer.adapter().is_some() {
            layer.merge();
            n += 1;
        }
    });
    n
}

/// Paths of all adaptable layers of `model`, in model order.
pub fn adaptable_paths<B: Backend, M: VisitAdaptable<B>>(model: &mut M) -> Vec<String> {
    let mut paths = Vec::new();
    model.visit_adaptable("", &mut |p, _| paths.push(p.to_string()));
    paths
}
