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

impl From<LossKind> for LossConfig {
    /// The paper's weights and hyper-parameters with the terms of `kind`.
    fn from(kind: LossKind) -> Self {
        Self {
            kind,
            ..Self::default()
        }
    }
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

/// One replica's part of a data-parallel batch's loss ([`LossConfig::local`]).
///
/// The batch-global Dice is not a mean over images, so averaging the replicas' own losses would
/// not give the single-device gradient. Instead each replica contributes its sums (`Σσ(z)·y`,
/// `Σy`, `Σσ(z)`) and its share of the mean focal / BCE terms; after these five numbers are
/// summed over the replicas ([`LocalLoss::stats`], one all-reduce), [`LocalLoss::finish`] gives
/// each replica a surrogate whose gradient is exactly its part of the whole batch's gradient:
/// with `I`, `T`, `P` the batch's sums, `N = 2I + s`, `D = T + P + s` (held constant), the Dice
/// loss `1 − N/D` has the gradient of `Σ_k (−2·I_k/D + N·P_k/D²)`. The replicas' gradients then
/// add up (a sum all-reduce) to the single-device gradient, up to f32 summation order.
#[derive(Debug, Clone)]
pub struct LocalLoss<B: Backend> {
    kind: LossKind,
    weights: (f64, f64, f64),
    smooth: f64,
    inter: Tensor<B, 1>,
    target_sum: Tensor<B, 1>,
    pred_sum: Tensor<B, 1>,
    focal: Tensor<B, 1>,
    bce: Tensor<B, 1>,
}

impl LossConfig {
    /// This replica's part of the batch loss: its images are `share` (= n_k / batch size) of
    /// the batch; `share = 0` marks a stand-in (a replica with no image of a short last batch
    /// runs one image whose every term counts zero).
    pub fn local<B: Backend, const D: usize>(
        &self,
        logits: Tensor<B, D>,
        targets: Tensor<B, D>,
        share: f64,
    ) -> LocalLoss<B> {
        let active = if share > 0.0 { 1.0 } else { 0.0 };
        let zero = || Tensor::<B, 1>::zeros([1], &logits.device());
        let p = sigmoid(logits.clone());
        let inter = (p.clone() * targets.clone()).sum().mul_scalar(active);
        let target_sum = targets.clone().sum().mul_scalar(active);
        let pred_sum = p.sum().mul_scalar(active);
        let (mut focal, mut bce) = (zero(), zero());
        match self.kind {
            LossKind::Dice => {}
            LossKind::DiceFocal => {
                focal = focal_loss(logits, targets, self.focal_alpha, self.focal_gamma)
                    .mul_scalar(share)
            }
            LossKind::DiceBce => bce = bce_loss(logits, targets).mul_scalar(share),
        }
        LocalLoss {
            kind: self.kind,
            weights: (self.dice_weight, self.focal_weight, self.bce_weight),
            smooth: self.dice_smooth,
            inter,
            target_sum,
            pred_sum,
            focal,
            bce,
        }
    }
}

impl<B: Backend> LocalLoss<B> {
    /// `[Σσ(z)·y, Σy, Σσ(z), share·focal, share·bce]` of this replica, detached: summed over
    /// the replicas, the batch's statistics.
    pub fn stats(&self) -> Tensor<B, 1> {
        Tensor::cat(
            vec![
                self.inter.clone(),
                self.target_sum.clone(),
                self.pred_sum.clone(),
                self.focal.clone(),
                self.bce.clone(),
            ],
            0,
        )
        .detach()
    }

    /// From the batch's statistics (the replicas' [`stats`](Self::stats) summed): the
    /// surrogate to call `backward` on, and the batch's detached `[total, dice, focal, bce]`
    /// (the same on every replica).
    pub fn finish(self, batch: Tensor<B, 1>) -> (Tensor<B, 1>, Tensor<B, 1>) {
        let (wd, wf, wb) = self.weights;
        let stat = |i: usize| batch.clone().narrow(0, i, 1);
        let n = stat(0).mul_scalar(2.0).add_scalar(self.smooth);
        let d = (stat(1) + stat(2)).add_scalar(self.smooth);
        let dice = (n.clone() / d.clone()).neg().add_scalar(1.0);
        let surrogate_dice =
            (self.inter.mul_scalar(-2.0) / d.clone()) + self.pred_sum * n / (d.clone() * d);
        let mut surrogate = surrogate_dice.mul_scalar(wd);
        let mut total = dice.clone().mul_scalar(wd);
        let (focal, bce) = (stat(3), stat(4));
        match self.kind {
            LossKind::Dice => {}
            LossKind::DiceFocal => {
                surrogate = surrogate + self.focal.mul_scalar(wf);
                total = total + focal.clone().mul_scalar(wf);
            }
            LossKind::DiceBce => {
                surrogate = surrogate + self.bce.mul_scalar(wb);
                total = total + bce.clone().mul_scalar(wb);
            }
        }
        (surrogate, Tensor::cat(vec![total, dice, focal, bce], 0))
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

    /// Split into parts, the local losses' statistics summed and their surrogates' gradients
    /// added give the whole batch's loss terms and gradient (batch-global Dice included).
    #[test]
    fn split_losses_add_up_to_the_whole_batch() {
        use burn::backend::Autodiff;
        type Ad = Autodiff<TestBackend>;
        let d = Default::default();
        let z: Vec<f32> = (0..24).map(|i| ((i * 7 % 11) as f32 - 5.0) / 2.0).collect();
        let y: Vec<f32> = (0..24).map(|i| ((i * 5 % 3) == 0) as u8 as f32).collect();
        for kind in [LossKind::Dice, LossKind::DiceFocal, LossKind::DiceBce] {
            let cfg = LossConfig {
                kind,
                ..LossConfig::default()
            };
            let whole = Tensor::<Ad, 1>::from_floats(z.as_slice(), &d).require_grad();
            let targets = Tensor::<Ad, 1>::from_floats(y.as_slice(), &d);
            let terms = cfg.forward(whole.clone().reshape([4, 6]), targets.reshape([4, 6]));
            let expected: Vec<f32> = Tensor::cat(
                vec![terms.total.clone(), terms.dice, terms.focal, terms.bce],
                0,
            )
            .into_data()
            .to_vec()
            .unwrap();
            let g = terms.total.backward();
            let expected_grad: Vec<f32> = whole.grad(&g).unwrap().into_data().to_vec().unwrap();
            // Parts of 3 and 1 images, and a stand-in (share 0) that must count nothing.
            let parts = [(0..18, 0.75), (18..24, 0.25), (0..6, 0.0)];
            let leaves: Vec<Tensor<Ad, 1>> = parts
                .iter()
                .map(|(r, _)| Tensor::<Ad, 1>::from_floats(&z[r.clone()], &d).require_grad())
                .collect();
            let locals: Vec<LocalLoss<Ad>> = parts
                .iter()
                .zip(&leaves)
                .map(|((r, share), leaf)| {
                    let n = r.len() / 6;
                    let t = Tensor::<Ad, 1>::from_floats(&y[r.clone()], &d);
                    cfg.local(leaf.clone().reshape([n, 6]), t.reshape([n, 6]), *share)
                })
                .collect();
            let stats = locals
                .iter()
                .map(LocalLoss::stats)
                .reduce(|a, b| a + b)
                .unwrap();
            let mut grad = vec![0.0f32; 24];
            for ((local, leaf), (r, share)) in locals.into_iter().zip(&leaves).zip(&parts) {
                let (surrogate, row) = local.finish(stats.clone());
                let row: Vec<f32> = row.into_data().to_vec().unwrap();
                for (a, b) in row.iter().zip(&expected) {
                    assert!(
                        (a - b).abs() < LOSS_TOL as f32,
                        "{kind:?}: {row:?} vs {expected:?}"
                    );
                }
                let g = surrogate.backward();
                let part: Vec<f32> = leaf.grad(&g).unwrap().into_data().to_vec().unwrap();
                if *share == 0.0 {
                    assert!(
                        part.iter().all(|&v| v == 0.0),
                        "{kind:?}: stand-in {part:?}"
                    );
                    continue;
                }
                for (i, v) in r.clone().zip(part) {
                    grad[i] += v;
                }
            }
            for (a, b) in grad.iter().zip(&expected_grad) {
                assert!(
                    (a - b).abs() < 1e-7,
                    "{kind:?}: {grad:?} vs {expected_grad:?}"
                );
            }
        }
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
