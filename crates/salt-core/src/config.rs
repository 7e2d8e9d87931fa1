//! What an adapter is: the method, its ranks, where it attaches, how it starts.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How SALT's low-rank factors `X`, `Y` start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SaltInit {
    /// The authors' code: `X, Y ~ N(0, 0.01²)`, every layer its own draws from one seeded
    /// generator. `W′` differs slightly from `W` at initialisation.
    #[default]
    Reference,
    /// `X` kaiming-uniform, `Y = 0` (the SAM2 variant): `W′ = W` exactly at initialisation.
    Zero,
}

/// Which adapter, with its hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "kebab-case")]
pub enum Method {
    /// SALT: scale/shift of the top `svd_rank` singular values, dense rank-`lora_rank` `X·Y` on
    /// the residual block, ReLU over Σ′.
    Salt {
        /// `r`: how many top singular values get a trainable scale and shift.
        svd_rank: usize,
        /// `q`: rank of the trainable `X·Y` added to the residual block of Σ.
        lora_rank: usize,
        /// How `X`, `Y` start.
        #[serde(default)]
        init: SaltInit,
    },
    /// S-SAM (SVD only): `ReLU(α ⊙ S + β)` over all singular values. Written `"ssam"` in
    /// `adapter_config.json`; `"svd"` (what earlier files wrote, and the tensor keys' name) is
    /// read too.
    #[serde(rename = "ssam", alias = "svd")]
    Svd,
    /// LoRA: `W·x + b + scale · up(down(dropout(x)))`, down `N(0, (1/r)²)`, up zero.
    Lora {
        /// Rank `r`.
        rank: usize,
        /// Output scale of the low-rank branch (the paper uses 1, no α/r).
        #[serde(default = "one")]
        scale: f64,
        /// Dropout on the branch input (the paper uses 0.1).
        #[serde(default)]
        dropout: f64,
    },
}

fn one() -> f64 {
    1.0
}

impl Method {
    /// Short name as used on the command line and in reports: `salt`, `ssam`, `lora`.
    pub fn name(&self) -> &'static str {
        match self {
            Method::Salt { .. } => "salt",
            Method::Svd => "ssam",
            Method::Lora { .. } => "lora",
        }
    }

    /// Checks the values that do not depend on a layer's shape.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Method::Salt { lora_rank: 0, .. } => Err(Error::InvalidConfig {
                field: "lora_rank",
                value: "0".into(),
                expected: "a rank >= 1 (use method `ssam` for no low-rank part)".into(),
            }),
            Method::Lora { rank: 0, .. } => Err(Error::InvalidConfig {
                field: "rank",
                value: "0".into(),
                expected: "a rank >= 1".into(),
            }),
            Method::Lora { dropout, .. } if !(0.0..1.0).contains(&dropout) => {
                Err(Error::InvalidConfig {
                    field: "dropout",
                    value: dropout.to_string(),
                    expected: "a probability in [0, 1)".into(),
                })
            }
            Method::Lora { scale, .. } if !scale.is_finite() => Err(Error::InvalidConfig {
                field: "scale",
                value: scale.to_string(),
                expected: "a finite number".into(),
            }),
            _ => Ok(()),
        }
    }
}

/// An adapter: the method and the layers it attaches to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterConfig {
    /// The method and its hyper-parameters.
    #[serde(flatten)]
    pub method: Method,
    /// Layer path patterns (see [`crate::pattern`]): peft's `target_modules` semantics.
    pub targets: Vec<String>,
    /// Seed of the one generator every adapted layer draws its initial values from, in model order.
    pub seed: u64,
}

impl AdapterConfig {
    /// The paper's SALT on `qkv` and `proj` of every image-encoder block.
    pub fn salt(svd_rank: usize, lora_rank: usize) -> Self {
        Self {
            method: Method::Salt {
                svd_rank,
                lora_rank,
                init: SaltInit::Reference,
            },
            targets: vec!["attn.qkv".into(), "attn.proj".into()],
            seed: 42,
        }
    }

    /// S-SAM on `qkv`, `proj`, `lin1`, `lin2` of every block.
    pub fn ssam() -> Self {
        Self {
            method: Method::Svd,
            targets: vec![
                "attn.qkv".into(),
                "attn.proj".into(),
                "mlp.lin1".into(),
                "mlp.lin2".into(),
            ],
            seed: 42,
        }
    }

    /// LoRA as the paper's baseline: `qkv`, `proj`, `lin1`, `lin2`, dropout 0.1, scale 1.
    pub fn lora(rank: usize) -> Self {
        Self {
            method: Method::Lora {
                rank,
                scale: 1.0,
                dropout: 0.1,
            },
            targets: vec![
                "attn.qkv".into(),
                "attn.proj".into(),
                "mlp.lin1".into(),
                "mlp.lin2".into(),
            ],
            seed: 42,
        }
    }
}

/// Which parameters outside the adapters also train.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TrainablePolicy {
    /// Full fine-tuning: every parameter trains.
    #[serde(default)]
    pub full: bool,
    /// Parameter path patterns (see [`crate::pattern`]) that train besides the adapters.
    #[serde(default)]
    pub patterns: Vec<String>,
}

impl TrainablePolicy {
    /// Only the adapters train.
    pub fn adapters_only() -> Self {
        Self::default()
    }

    /// Every parameter trains.
    pub fn full() -> Self {
        Self {
            full: true,
            patterns: Vec::new(),
        }
    }

    /// Adapters plus the given parameter patterns.
    pub fn with_patterns<I: IntoIterator<Item = S>, S: Into<String>>(patterns: I) -> Self {
        Self {
            full: false,
            patterns: patterns.into_iter().map(Into::into).collect(),
        }
    }
}
