//! `salt models`: every model preset with its total and trainable parameter counts per method,
//! so a user sees sizes before training.
//!
//! The counts are exact and need no SVD: each preset is built on the CPU with random weights,
//! adapter parameters come from the layer shapes (`salt_core::adapter_param_count`, tested
//! equal to what `inject` attaches), and the trainable base parameters from the method's
//! trainable policy, as `salt train` applies them.

use anyhow::{Context, Result};
use burn::backend::NdArray;
use serde::Serialize;

use salt_core::{adapter_param_count, parameter_keys, ParamReport};

use crate::train::config::{MethodName, TrainConfig};
use crate::train::model::{with_model, ModelFamily, ModelTask, Segmenter, MODEL_NAMES};

/// Arguments of `salt models`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only these presets (default: all).
    #[arg(long = "model")]
    pub models: Vec<String>,
    /// SALT: adapted singular values r (as `salt train`).
    #[arg(long, default_value_t = 48)]
    pub svd_rank: usize,
    /// SALT: rank q; LoRA: rank (as `salt train`).
    #[arg(long, default_value_t = 256)]
    pub rank: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One preset under one method.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelSize {
    /// Preset name (`--model`).
    pub model: String,
    /// `sam` or `baseline`.
    pub family: String,
    /// Side of the square input.
    pub input_size: usize,
    /// `--method`.
    pub method: String,
    /// All parameters, adapter included.
    pub total: usize,
    /// Parameters that train; `None` when the ranks do not fit the model (see `note`).
    pub trainable: Option<usize>,
    /// `100 · trainable / total`.
    pub trainable_percent: Option<f64>,
    /// Why a method has no count (e.g. a rank larger than the model's layers allow).
    pub note: Option<String>,
}

/// The sizes of `name` under every method it trains with (SAM: salt, lora, ssam, full,
/// decoder-only, with the SALT/LoRA ranks given; baselines: full).
pub fn model_sizes(name: &str, svd_rank: usize, rank: usize) -> Result<Vec<ModelSize>> {
    type B = NdArray<f32>;
    let device = Default::default();
    let row = |family: &str, input_size, method: MethodName, total: usize, trainable| ModelSize {
        model: name.to_string(),
        family: family.to_string(),
        input_size,
        method: clap::ValueEnum::to_possible_value(&method)
            .map(|v| v.get_name().to_string())
            .unwrap_or_default(),
        total,
        trainable,
        trainable_percent: trainable.map(|t: usize| 100.0 * t as f64 / (total.max(1)) as f64),
        note: None,
    };
    match ModelFamily::of(name)? {
        ModelFamily::Sam => {
            let mut sam = crate::train::run::model_config(name)?
                .init::<B>(&device)
                .with_context(|| format!("building `{name}`"))?;
            let has_token = sam.prompt_encoder.prompt_token.is_some();
            let has_pos = sam.image_encoder.pos_embed.is_some();
            let base: usize = parameter_keys::<B, _>(&sam)
                .iter()
                .map(|(_, s)| s.iter().product::<usize>())
                .sum();
            let mut rows = Vec::new();
            for method in [
                MethodName::Salt,
                MethodName::Lora,
                MethodName::Ssam,
                MethodName::Full,
                MethodName::DecoderOnly,
            ] {
                let cfg = TrainConfig {
                    model: name.to_string(),
                    method,
                    svd_rank,
                    rank,
                    ..TrainConfig::default()
                };
                let policy = cfg.policy(has_token, has_pos);
                let adapter = match cfg.adapter() {
                    Some(a) => adapter_param_count(&mut sam, &a),
                    None => Ok(0),
                };
                let base_trainable = ParamReport::new::<B, _>(&sam, &policy, 0).trainable;
                rows.push(match adapter {
                    Ok(n) => row(
                        "sam",
                        sam.img_size(),
                        method,
                        base + n,
                        Some(base_trainable + n),
                    ),
                    Err(e) => ModelSize {
                        note: Some(e.to_string()),
                        ..row("sam", sam.img_size(), method, base, None)
                    },
                });
            }
            Ok(rows)
        }
        ModelFamily::Baseline(_) => {
            struct Size<'a>(&'a TrainConfig);
            impl ModelTask<B> for Size<'_> {
                type Output = (usize, ParamReport);
                fn run<M: Segmenter<B>>(self) -> Result<Self::Output> {
                    let (model, policy, _) = M::build(self.0, &Default::default())?;
                    Ok((model.input_size(), model.param_report(&policy)))
                }
            }
            let cfg = TrainConfig {
                model: name.to_string(),
                method: MethodName::Full,
                ..TrainConfig::default()
            };
            let (size, report) = with_model::<B, _>(name, Size(&cfg))?;
            Ok(vec![row(
                "baseline",
                size,
                MethodName::Full,
                report.total,
                Some(report.trainable),
            )])
        }
    }
}

/// Prints the table (or JSON) of every requested preset.
pub fn run(args: Args) -> Result<()> {
    let names: Vec<String> = if args.models.is_empty() {
        MODEL_NAMES.iter().map(|s| s.to_string()).collect()
    } else {
        args.models.clone()
    };
    let mut rows = Vec::new();
    for name in &names {
        rows.extend(model_sizes(name, args.svd_rank, args.rank)?);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<16} {:<9} {:>5} {:<13} {:>14} {:>14} {:>8}",
        "model", "family", "size", "method", "total", "trainable", "%"
    );
    for r in &rows {
        let (t, p) = match (r.trainable, r.trainable_percent) {
            (Some(t), Some(p)) => (t.to_string(), format!("{p:.3}")),
            _ => ("–".into(), "–".into()),
        };
        println!(
            "{:<16} {:<9} {:>5} {:<13} {:>14} {:>14} {:>8}{}",
            r.model,
            r.family,
            r.input_size,
            r.method,
            r.total,
            t,
            p,
            r.note
                .as_deref()
                .map(|n| format!("  ({n})"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Module;

    #[test]
    fn counts_equal_the_trained_models_counts() {
        let _rng = crate::train::run::tests::BACKEND_RNG
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // tiny_salt_paper under each method: the SVD-free count equals the model `salt train`
        // builds (adapters injected by SVD, policy applied).
        let rows = model_sizes("tiny_salt_paper", 4, 4).unwrap();
        assert_eq!(rows.len(), 5);
        for r in &rows {
            let method = <MethodName as clap::ValueEnum>::from_str(&r.method, false).unwrap();
            let cfg = TrainConfig {
                model: r.model.clone(),
                method,
                svd_rank: 4,
                rank: 4,
                ..TrainConfig::default()
            };
            let (sam, policy, _) =
                crate::train::run::build_model::<NdArray<f32>>(&cfg, &Default::default()).unwrap();
            let report = ParamReport::new::<NdArray<f32>, _>(&sam, &policy, 0);
            assert_eq!(r.total, report.total, "{}", r.method);
            assert_eq!(r.total, sam.num_params(), "{}", r.method);
            assert_eq!(r.trainable, Some(report.trainable), "{}", r.method);
        }
        let full = rows.iter().find(|r| r.method == "full").unwrap();
        assert_eq!(full.trainable, Some(full.total));
        // The tiny model's layers are 32 wide: rank 256 does not fit, and the row says so.
        let rows = model_sizes("tiny_salt_paper", 48, 256).unwrap();
        let salt = rows.iter().find(|r| r.method == "salt").unwrap();
        assert!(salt.trainable.is_none());
        assert!(
            salt.note.as_deref().unwrap().contains("svd_rank"),
            "{salt:?}"
        );
        // Baselines: PyTorch's parameter counts (BatchNorm statistics are buffers), full only.
        let rows = model_sizes("segnet", 48, 256).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].total, rows[0].trainable),
            (29_443_585, Some(29_443_585))
        );
        assert_eq!(rows[0].input_size, 512);
        let err = model_sizes("nope", 4, 4).unwrap_err().to_string();
        assert!(err.contains("nope") && err.contains("salt_paper"), "{err}");
    }
}
