//! The paper's training loss: batch-global Dice (smooth 1) + focal loss (α 0.75, γ 3), both
//! computed from logits.
//!
//! The authors' focal loss applies BCE-with-logits to probabilities (a bug, reference §4); this
//! one is torchvision's `sigmoid_focal_loss` on the logits, in a numerically stable form
//! (`log p = log_sigmoid(z)`, `log(1 − p) = log_sigmoid(−z)`), valid for soft targets in [0, 1].

use burn::tensor::activation::{log_sigmoid, sigmoid};
use burn::tensor::{backend::Backend, Tensor};
use serde::{Deserialize, Serialize};

/// Weights and hyper-parameters of the loss.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossConfig {
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
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            dice_smooth: 1.0,
            focal_alpha: 0.75,
            focal_gamma: 3.0,
            dice_weight: 1.0,
            focal_weight: 1.0,
        }
    }
}

/// The loss terms of one batch.
#[derive(Debug, Clone)]
pub struct LossTerms<B: Backend> {
    /// `dice_weight · dice + focal_weight · focal`, a scalar.
    pub total: Tensor<B, 1>,
    /// Batch-global soft Dice loss.
    pub dice: Tensor<B, 1>,
    /// Mean focal loss.
    pub focal: Tensor<B, 1>,
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
    /// Both terms and their weighted sum.
    pub fn forward<B: Backend, const D: usize>(
        &self,
        logits: Tensor<B, D>,
        targets: Tensor<B, D>,
    ) -> LossTerms<B> {
        let dice = dice_loss(logits.clone(), targets.clone(), self.dice_smooth);
        let focal = focal_loss(logits, targets, self.focal_alpha, self.focal_gamma);
        let total =
            dice.clone().mul_scalar(self.dice_weight) + focal.clone().mul_scalar(self.focal_weight);
        LossTerms { total, dice, focal }
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
