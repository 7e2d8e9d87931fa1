//! The paper's training loss: batch-global Dice (smooth 1) + focal loss (α 0.75, γ 3), both
//! computed from logits; also Dice alone and Dice + BCE (`--loss`), for the baselines' rows.
//!
//! The authors' focal loss applies BCE-with-logits to probabilities (a bug, reference §4); this
//! one is torchvision's `sigmoid_focal_loss` on the logits, in a numerically stable form
//! (`log p = log_sigmoid(z)`, `log(1 − p) = log_sigmoid(−z)`), valid for soft targets in [0, 1].

use burn::tensor::activation::{log_sigmoid, sigmoid};
use burn::tensor::{backend::Backend, Tensor};
use serde::{Deserialize, Serialize};

/// Which terms the training loss has (`--loss`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
pub enum LossKind {
    /// Batch-global soft Dice only.
    #[serde(rename = "dice")]
    #[value(name = "dice")]
    Dice,
    /// Dice + focal: the paper's loss (every Table 1 row uses it).
    #[default]
    #[serde(rename = "dice+focal")]
    #[value(name = "dice+focal")]
    DiceFocal,
    /// Dice + binary cross-entropy (mean over pixels), the usual U-Net recipe.
    #[serde(rename = "dice+bce")]
    #[value(name = "dice+bce")]
    DiceBce,
}

/// Weights and hyper-parameters of the loss.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossConfig {
    /// The terms.
    pub kind: LossKind,
    /// Smoothing of the Dice term (the paper: 1).
    pub dice_smooth: f64,
    /// Focal α: weight of the positive class (the paper: 0.75).
    pub focal_alpha: f64,
    /// Focal γ: focusing exponent (the paper: 3).
    pub focal_gamma: f64,
    /// Weight of the Dice term.
    pub dice_weight: f64,
    /// Weight of the focal term.
    pub focal_weight: f64,
    /// Weight of the BCE term.
    pub bce_weight: f64,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            kind: LossKind::DiceFocal,
            dice_smooth: 1.0,
            focal_alpha: 0.75,
            focal_gamma: 3.0,
            dice_weight: 1.0,
            focal_weight: 1.0,
            bce_weight: 1.0,
        }
    }
}

/// The loss terms of one batch.
#[derive(Debug, Clone)]
pub struct LossTerms<B: Backend> {
    /// The weighted sum of the kind's terms, a scalar.
    pub total: Tensor<B, 1>,
    /// Batch-global soft Dice loss.
    pub dice: Tensor<B, 1>,
    /// Mean focal loss (0 unless the kind has it).
    pub focal: Tensor<B, 1>,
    /// Mean binary cross-entropy (0 unless the kind has it).
    pub bce: Tensor<B, 1>,
}

/// Mean binary cross-entropy on logits, `−y·log σ(z) − (1−y)·log σ(−z)`, stable for any z.
pub fn bce_loss<B: Backend, const D: usize>(
    logits: Tensor<B, D>,
    targets: Tensor<B, D>,
) -> Tensor<B, 1> {
    let log_p = log_sigmoid(logits.clone());
    let log_1mp = log_sigmoid(logits.neg());
    let one_minus_y = targets.clone().neg().add_scalar(1.0);
    (targets * log_p + one_minus_y * log_1mp).neg().mean()
}

/// Batch-global soft Dice loss `1 − (2Σyp + s)/(Σy + Σp + s)` with `p = σ(logits)`.
///
/// # Shapes
/// `logits`, `targets`: any equal shape; the sums run over every element of the batch.
pub fn dice_loss<B: Backend, const D: usize>(
    logits: Tensor<B, D>,
    targets: Tensor<B, D>,
    smooth: f64,
) -> Tensor<B, 1> {
    let p = sigmoid(logits);
    let inter = (p.clone() * targets.clone()).sum();
    let denom = targets.sum() + p.sum();
    (inter.mul_scalar(2.0).add_scalar(smooth) / denom.add_scalar(smooth))
        .neg()
        .add_scalar(1.0)
}

/// Mean sigmoid focal loss on logits (torchvision's definition).
///
/// `ce = −y·log p − (1−y)·log(1−p)`, `p_t = p·y + (1−p)·(1−y)`,
/// `α_t = α·y + (1−α)·(1−y)`, loss = mean of `α_t · (1 − p_t)^γ · ce`.
pub fn focal_loss<B: Backend, const D: usize>(
    logits: Tensor<B, D>,
    targets: Tensor<B, D>,
    alpha: f64,
    gamma: f64,
) -> Tensor<B, 1> {
    let log_p = log_sigmoid(logits.clone());
    let log_1mp = log_sigmoid(logits.clone().neg());
    let p = sigmoid(logits);
    let one_minus_y = targets.clone().neg().add_scalar(1.0);
    let ce = (targets.clone() * log_p + one_minus_y.clone() * log_1mp).neg();
    let p_t = p.clone() * targets.clone() + p.neg().add_scalar(1.0) * one_minus_y.clone();
    let alpha_t = targets.mul_scalar(alpha) + one_minus_y.mul_scalar(1.0 - alpha);
    let modulator = p_t.neg().add_scalar(1.0).clamp_min(0.0).powf_scalar(gamma);
    (alpha_t * modulator * ce).mean()
}

impl LossConfig {
    /// The kind's terms and their weighted sum.
    pub fn forward<B: Backend, const D: usize>(
        &self,
        logits: Tensor<B, D>,
        targets: Tensor<B, D>,
    ) -> LossTerms<B> {
        let zero = || Tensor::<B, 1>::zeros([1], &logits.device());
        let dice = dice_loss(logits.clone(), targets.clone(), self.dice_smooth);
        let mut total = dice.clone().mul_scalar(self.dice_weight);
        let (mut focal, mut bce) = (zero(), zero());
        match self.kind {
            LossKind::Dice => {}
            LossKind::DiceFocal => {
                focal = focal_loss(logits, targets, self.focal_alpha, self.focal_gamma);
                total = total + focal.clone().mul_scalar(self.focal_weight);
            }
            LossKind::DiceBce => {
                bce = bce_loss(logits, targets);
                total = total + bce.clone().mul_scalar(self.bce_weight);
            }
        }
        LossTerms {
            total,
            dice,
            focal,
            bce,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    type TestBackend = NdArray<f32>;

    /// f32 transcendental functions against f64 hand computation.
    const LOSS_TOL: f64 = 1e-6;

    fn sig(z: f64) -> f64 {
        1.0 / (1.0 + (-z).exp())
    }

    fn scalar(t: Tensor<TestBackend, 1>) -> f64 {
        f64::from(t.into_scalar())
    }

    #[test]
    fn dice_matches_hand_computation() {
        let d = Default::default();
        let z = [2.0, -1.0, 0.5, -3.0];
        let y = [1.0, 0.0, 1.0, 1.0];
        let logits = Tensor::<TestBackend, 1>::from_floats(z.map(|v| v as f32), &d);
        let targets = Tensor::<TestBackend, 1>::from_floats(y.map(|v| v as f32), &d);
        let p: Vec<f64> = z.iter().map(|&v| sig(v)).collect();
        let inter: f64 = p.iter().zip(&y).map(|(p, y)| p * y).sum();
        let expected =
            1.0 - (2.0 * inter + 1.0) / (y.iter().sum::<f64>() + p.iter().sum::<f64>() + 1.0);
        let got = scalar(dice_loss(logits, targets, 1.0));
        assert!((got - expected).abs() < LOSS_TOL, "{got} vs {expected}");
    }

    #[test]
    fn bce_and_the_loss_kinds_match_hand_computation() {
        let d = Default::default();
        let z = [2.0, -1.0, 0.5, -30.0];
        let y = [1.0, 0.0, 0.3, 0.0];
        let logits = Tensor::<TestBackend, 1>::from_floats(z.map(|v| v as f32), &d);
        let targets = Tensor::<TestBackend, 1>::from_floats(y.map(|v| v as f32), &d);
        // −y·ln σ(z) − (1−y)·ln(1 − σ(z)), with ln(1 − σ(z)) = ln σ(−z).
        let expected: f64 = z
            .iter()
            .zip(&y)
            .map(|(&z, &y)| -(y * sig(z).ln() + (1.0 - y) * sig(-z).ln()))
            .sum::<f64>()
            / 4.0;
        let got = scalar(bce_loss(logits.clone(), targets.clone()));
        assert!((got - expected).abs() < LOSS_TOL, "{got} vs {expected}");
        let dice = scalar(dice_loss(logits.clone(), targets.clone(), 1.0));
        for (kind, extra) in [
            (LossKind::Dice, 0.0),
            (LossKind::DiceBce, expected),
            (
                LossKind::DiceFocal,
                scalar(focal_loss(logits.clone(), targets.clone(), 0.75, 3.0)),
            ),
        ] {
            let cfg = LossConfig {
                kind,
                ..LossConfig::default()
            };
            let t = cfg.forward(logits.clone(), targets.clone());
            let total = scalar(t.total);
            assert!((total - dice - extra).abs() < LOSS_TOL, "{kind:?}: {total}");
        }
    }

    #[test]
    fn focal_matches_hand_computation_including_soft_targets_and_large_logits() {
        let d = Default::default();
        let z = [2.0, -1.0, 0.5, -30.0, 30.0];
        let y = [1.0, 0.0, 0.3, 1.0, 0.0];
        let (alpha, gamma) = (0.75, 3.0);
        let expected: f64 = z
            .iter()
            .zip(&y)
            .map(|(&z, &y)| {
                let p = sig(z);
                // log(1 + e^x) without overflow for the ±30 cases.
                let softplus = |x: f64| x.max(0.0) + (-x.abs()).exp().ln_1p();
                let ce = y * softplus(-z) + (1.0 - y) * softplus(z);
                let p_t = p * y + (1.0 - p) * (1.0 - y);
                let a_t = alpha * y + (1.0 - alpha) * (1.0 - y);
                a_t * (1.0 - p_t).powf(gamma) * ce
            })
            .sum::<f64>()
            / z.len() as f64;
        let logits = Tensor::<TestBackend, 1>::from_floats(z.map(|v| v as f32), &d);
        let targets = Tensor::<TestBackend, 1>::from_floats(y.map(|v| v as f32), &d);
        let got = scalar(focal_loss(logits, targets, alpha, gamma));
        assert!(got.is_finite());
        assert!(
            (got - expected).abs() < LOSS_TOL * expected.max(1.0),
            "{got} vs {expected}"
        );
    }

    #[test]
    fn perfect_prediction_has_near_zero_loss() {
        let d = Default::default();
        let logits = Tensor::<TestBackend, 2>::from_floats([[20.0, -20.0], [-20.0, 20.0]], &d);
        let targets = Tensor::<TestBackend, 2>::from_floats([[1.0, 0.0], [0.0, 1.0]], &d);
        let terms = LossConfig::default().forward(logits, targets);
        assert!(scalar(terms.total) < 1e-6);
    }
}
