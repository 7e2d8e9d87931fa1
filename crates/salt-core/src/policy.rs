//! Which parameters train, and how many there are.
//!
//! A parameter is named by its burn module path with the adapter's enum level folded in:
//! `image_encoder.blocks.0.attn.qkv.adapter.Salt.scale` becomes
//! `image_encoder.blocks.0.attn.qkv.salt.scale`. Adapter parameters always train; others train
//! when the [`TrainablePolicy`] says so (full fine-tuning, or a matching pattern).

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{backend::Backend, Tensor};
use serde::{Deserialize, Serialize};

use crate::config::TrainablePolicy;
use crate::error::{Error, Result};
use crate::pattern;

/// Tracks the module path while burn walks a module tree.
#[derive(Debug, Default)]
pub(crate) struct PathStack {
    segments: Vec<String>,
}

impl PathStack {
    pub(crate) fn enter(&mut self, name: &str) {
        self.segments.push(name.to_string());
    }

    pub(crate) fn exit(&mut self) {
        self.segments.pop();
    }

    /// The parameter key of the current position (see the module docs).
    pub(crate) fn key(&self) -> String {
        param_key(&self.segments)
    }
}

/// Joins module path segments into a parameter key, folding `adapter.<Variant>` into the
/// variant's lowercase name.
pub fn param_key<S: AsRef<str>>(segments: &[S]) -> String {
    let mut out: Vec<String> = Vec::with_capacity(segments.len());
    let mut i = 0;
    while i < segments.len() {
        let s = segments[i].as_ref();
        if s == "adapter" {
            if let Some(variant) = segments.get(i + 1).map(|v| v.as_ref()) {
                if matches!(variant, "Salt" | "Svd" | "Lora") {
                    out.push(variant.to_lowercase());
                    i += 2;
                    continue;
                }
            }
        }
        out.push(s.to_string());
        i += 1;
    }
    out.join(".")
}

/// Whether a parameter key belongs to an adapter.
pub fn is_adapter_key(key: &str) -> bool {
    key.split('.').any(|s| matches!(s, "salt" | "svd" | "lora"))
}

/// Whether the parameter `key` trains under `policy`.
pub fn is_trainable(key: &str, policy: &TrainablePolicy) -> bool {
    policy.full || is_adapter_key(key) || pattern::matches_any(&policy.patterns, key)
}

struct KeyCollector {
    path: PathStack,
    keys: Vec<(String, Vec<usize>)>,
}

impl<B: Backend> ModuleVisitor<B> for KeyCollector {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.keys
            .push((self.path.key(), param.shape().dims::<D>().to_vec()));
    }
}

/// Every float parameter of `module` as `(key, shape)`, in module order.
pub fn parameter_keys<B: Backend, M: Module<B>>(module: &M) -> Vec<(String, Vec<usize>)> {
    let mut c = KeyCollector {
        path: PathStack::default(),
        keys: Vec::new(),
    };
    module.visit(&mut c);
    c.keys
}

struct GradSetter<'a> {
    path: PathStack,
    policy: &'a TrainablePolicy,
}

impl<B: Backend> ModuleMapper<B> for GradSetter<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        param.set_require_grad(is_trainable(&self.path.key(), self.policy))
    }
}

/// Marks each parameter of `module` as trainable or frozen according to `policy` (adapter
/// parameters always train). Errors when a policy pattern matches no parameter.
pub fn apply_trainable<B: Backend, M: Module<B>>(module: M, policy: &TrainablePolicy) -> Result<M> {
    let keys = parameter_keys::<B, M>(&module);
    for p in &policy.patterns {
        pattern::validate(p).map_err(|e| Error::InvalidConfig {
            field: "trainable",
            value: p.clone(),
            expected: format!("a valid pattern ({e})"),
        })?;
        if !keys.iter().any(|(k, _)| pattern::matches(p, k)) {
            let examples = keys
                .iter()
                .take(4)
                .map(|(k, _)| k.clone())
                .collect::<Vec<_>>();
            return Err(Error::NoTargetMatched {
                patterns: vec![p.clone()],
                available: keys.len(),
                examples: examples.join(", "),
            });
        }
    }
    Ok(module.map(&mut GradSetter {
        path: PathStack::default(),
        policy,
    }))
}

/// Parameter counts as Table 1 counts them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamReport {
    /// Parameters that train.
    pub trainable: usize,
    /// Of those, adapter parameters.
    pub adapter: usize,
    /// All parameters of the model (frozen SVD factors are buffers, not parameters).
    pub total: usize,
    /// Frozen parameters outside this model that the percentage also counts (the paper counts
    /// its frozen CLIP text encoder, 151.3M).
    pub extra_frozen: usize,
    /// `100 · trainable / (total + extra_frozen)`.
    pub trainable_percent: f64,
}

impl ParamReport {
    /// Counts the parameters of `module` under `policy`.
    pub fn new<B: Backend, M: Module<B>>(
        module: &M,
        policy: &TrainablePolicy,
        extra_frozen: usize,
    ) -> Self {
        let mut trainable = 0;
        let mut adapter = 0;
        let mut total = 0;
        for (key, shape) in parameter_keys::<B, M>(module) {
            let n: usize = shape.iter().product();
            total += n;
            if is_trainable(&key, policy) {
                trainable += n;
            }
            if is_adapter_key(&key) {
                adapter += n;
            }
        }
        let denom = (total + extra_frozen).max(1) as f64;
        Self {
            trainable,
            adapter,
            total,
            extra_frozen,
            trainable_percent: 100.0 * trainable as f64 / denom,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adapter_level_is_folded() {
        let k = param_key(&[
            "image_encoder",
            "blocks",
            "0",
            "attn",
            "qkv",
            "adapter",
            "Salt",
            "x",
        ]);
        assert_eq!(k, "image_encoder.blocks.0.attn.qkv.salt.x");
        assert!(is_adapter_key(&k));
        assert!(!is_adapter_key("image_encoder.blocks.0.norm1.gamma"));
    }
}
