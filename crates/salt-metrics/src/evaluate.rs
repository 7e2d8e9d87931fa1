//! Per-image metrics: overlap scores, surface distances and clDice in one call.

use serde::{Deserialize, Serialize};

use crate::distance::{surface_distances, DistanceDefinition};
use crate::error::{Error, Result};
use crate::mask::Mask;
use crate::skeleton::skeletonize;

/// How to evaluate a prediction against a target.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MetricOptions {
    /// Physical pixel size `[sy, sx]` (row spacing, column spacing); distances are in its units.
    pub spacing: [f64; 2],
    /// Which HD / HD95 / ASSD definition to use.
    pub definition: DistanceDefinition,
    /// The Hausdorff percentile reported as `hd95` (95 unless you ask for another).
    pub percentile: f64,
    /// Whether to compute clDice (it needs two skeletonisations, the most expensive step).
    pub cldice: bool,
}

impl Default for MetricOptions {
    fn default() -> Self {
        Self {
            spacing: [1.0, 1.0],
            definition: DistanceDefinition::Monai,
            percentile: 95.0,
            cldice: true,
        }
    }
}

impl MetricOptions {
    /// Checks the spacing and the percentile.
    ///
    /// # Errors
    /// [`Error::InvalidSpacing`] for a spacing that is not finite and positive,
    /// [`Error::InvalidPercentile`] for a percentile outside [0, 100].
    pub fn validate(&self) -> Result<()> {
        for (axis, value) in [("y", self.spacing[0]), ("x", self.spacing[1])] {
            if !(value.is_finite() && value > 0.0) {
                return Err(Error::InvalidSpacing { axis, value });
            }
        }
        if !(0.0..=100.0).contains(&self.percentile) {
            return Err(Error::InvalidPercentile(self.percentile));
        }
        Ok(())
    }
}

/// Which mask of a pair is empty (has no foreground pixel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EmptyMask {
    /// Only the prediction.
    Pred,
    /// Only the target.
    Target,
    /// Both.
    Both,
}

impl EmptyMask {
    /// The name used in JSON and CSV: `pred`, `target` or `both`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pred => "pred",
            Self::Target => "target",
            Self::Both => "both",
        }
    }
}

/// Pixel counts of the confusion matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Confusion {
    /// Foreground in both.
    pub tp: u64,
    /// Foreground in the prediction only.
    pub fp: u64,
    /// Foreground in the target only.
    #[serde(rename = "fn")]
    pub fn_: u64,
    /// Background in both.
    pub tn: u64,
}

/// Metrics of one prediction/target pair. A value is `None` (JSON `null`) when it is undefined
/// for this pair, never a silent 0, NaN or ∞:
///
/// - `hd`, `hd95`, `assd`: `None` when either mask is empty (`empty` says which);
/// - `precision`: `None` when the prediction is empty (`tp + fp = 0`); `recall` when the target
///   is empty (`tp + fn = 0`); `specificity` when the target covers the image (`tn + fp = 0`);
/// - `cldice`: `None` when not requested, or when one mask is non-empty but its skeleton is empty.
///
/// `dice`, `iou` and `cldice` are 1 when both masks are empty (perfect agreement, as the SALT
/// paper's smoothed Dice also gives) and 0 when exactly one is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricResult {
    /// `2 tp / (2 tp + fp + fn)`.
    pub dice: f64,
    /// `tp / (tp + fp + fn)` (Jaccard).
    pub iou: f64,
    /// `tp / (tp + fp)`.
    pub precision: Option<f64>,
    /// `tp / (tp + fn)` (sensitivity).
    pub recall: Option<f64>,
    /// `tn / (tn + fp)`.
    pub specificity: Option<f64>,
    /// Hausdorff distance.
    pub hd: Option<f64>,
    /// The `percentile`-th Hausdorff distance (95 by default) under `definition`.
    pub hd95: Option<f64>,
    /// Average symmetric surface distance under `definition`.
    pub assd: Option<f64>,
    /// Centreline Dice (Shit et al., CVPR 2021) on Zhang–Suen skeletons.
    pub cldice: Option<f64>,
    /// Which mask is empty, if any.
    pub empty: Option<EmptyMask>,
    /// The distance definition used.
    pub definition: DistanceDefinition,
    /// The Hausdorff percentile reported as `hd95`.
    pub percentile: f64,
    /// The confusion-matrix counts.
    pub counts: Confusion,
}

/// Evaluates `pred` against `target`.
///
/// # Errors
/// [`Error::SizeMismatch`] when the masks differ in size; the errors of
/// [`MetricOptions::validate`].
pub fn evaluate(pred: &Mask, target: &Mask, opts: &MetricOptions) -> Result<MetricResult> {
    if (pred.width(), pred.height()) != (target.width(), target.height()) {
        return Err(Error::SizeMismatch {
            pred_width: pred.width(),
            pred_height: pred.height(),
            target_width: target.width(),
            target_height: target.height(),
        });
    }
    opts.validate()?;
    let counts = confusion(pred.data(), target.data());
    let Confusion { tp, fp, fn_, tn } = counts;
    let ratio = |num: u64, den: u64| (den > 0).then(|| num as f64 / den as f64);
    let empty = match (tp + fp == 0, tp + fn_ == 0) {
        (true, true) => Some(EmptyMask::Both),
        (true, false) => Some(EmptyMask::Pred),
        (false, true) => Some(EmptyMask::Target),
        (false, false) => None,
    };
    let dice = ratio(2 * tp, 2 * tp + fp + fn_).unwrap_or(1.0);
    let iou = ratio(tp, tp + fp + fn_).unwrap_or(1.0);
    let distances = surface_distances(
        pred.width(),
        pred.data(),
        target.data(),
        opts.spacing,
        opts.definition,
        opts.percentile,
    );
    let cldice = if !opts.cldice {
        None
    } else {
        match empty {
            Some(EmptyMask::Both) => Some(1.0),
            Some(_) => Some(0.0),
            None => cl_dice(pred, target),
        }
    };
    Ok(MetricResult {
        dice,
        iou,
        precision: ratio(tp, tp + fp),
        recall: ratio(tp, tp + fn_),
        specificity: ratio(tn, tn + fp),
        hd: distances.map(|d| d.hd),
        hd95: distances.map(|d| d.hd_percentile),
        assd: distances.map(|d| d.assd),
        cldice,
        empty,
        definition: opts.definition,
        percentile: opts.percentile,
        counts,
    })
}

fn confusion(pred: &[bool], target: &[bool]) -> Confusion {
    // Branch-free counts (vectorises); tn follows from the total.
    let (mut tp, mut np, mut nt) = (0u64, 0u64, 0u64);
    for (&p, &t) in pred.iter().zip(target) {
        tp += (p & t) as u64;
        np += p as u64;
        nt += t as u64;
    }
    let n = pred.len() as u64;
    Confusion {
        tp,
        fp: np - tp,
        fn_: nt - tp,
        tn: n + tp - np - nt,
    }
}

/// clDice = `2 Tprec Tsens / (Tprec + Tsens)` with `Tprec = |S(P) ∩ T| / |S(P)|` and
/// `Tsens = |S(T) ∩ P| / |S(T)|`, `S` the skeleton. `None` when a skeleton is empty; 0 when both
/// ratios are 0.
pub fn cl_dice(pred: &Mask, target: &Mask) -> Option<f64> {
    let sp = skeletonize(pred);
    let st = skeletonize(target);
    let fraction_inside = |skel: &Mask, other: &Mask| {
        let (mut inside, mut total) = (0u64, 0u64);
        for (&s, &o) in skel.data().iter().zip(other.data()) {
            total += s as u64;
            inside += (s && o) as u64;
        }
        (total > 0).then(|| inside as f64 / total as f64)
    };
    let tprec = fraction_inside(&sp, target)?;
    let tsens = fraction_inside(&st, pred)?;
    if tprec + tsens == 0.0 {
        return Some(0.0);
    }
    Some(2.0 * tprec * tsens / (tprec + tsens))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ratios of small integers: a few ulps at most.
    const TOL: f64 = 1e-12;

    fn parse(rows: &[&str]) -> Mask {
        Mask::from_fn(rows[0].len(), rows.len(), |x, y| {
            rows[y].as_bytes()[x] == b'#'
        })
    }

    #[test]
    fn overlap_hand_values() {
        let p = parse(&["##..", "##..", "...."]);
        let t = parse(&[".##.", ".##.", "...."]);
        let r = evaluate(&p, &t, &MetricOptions::default()).unwrap();
        // tp 2, fp 2, fn 2, tn 6
        assert_eq!(
            r.counts,
            Confusion {
                tp: 2,
                fp: 2,
                fn_: 2,
                tn: 6
            }
        );
        assert!((r.dice - 0.5).abs() < TOL);
        assert!((r.iou - 1.0 / 3.0).abs() < TOL);
        assert!((r.precision.unwrap() - 0.5).abs() < TOL);
        assert!((r.recall.unwrap() - 0.5).abs() < TOL);
        assert!((r.specificity.unwrap() - 0.75).abs() < TOL);
        // Every surface pixel of one square is within 1 of the other's surface.
        assert_eq!((r.hd, r.hd95), (Some(1.0), Some(1.0)));
        assert_eq!(r.empty, None);
    }

    #[test]
    fn empty_masks_are_explicit() {
        let e = Mask::empty(4, 3);
        let f = parse(&["....", ".#..", "...."]);
        let opts = MetricOptions::default();
        let r = evaluate(&e, &f, &opts).unwrap();
        assert_eq!(r.empty, Some(EmptyMask::Pred));
        assert_eq!(
            (r.dice, r.hd, r.hd95, r.assd, r.precision),
            (0.0, None, None, None, None)
        );
        assert_eq!(r.recall, Some(0.0));
        assert_eq!(r.cldice, Some(0.0));
        let r = evaluate(&f, &e, &opts).unwrap();
        assert_eq!(r.empty, Some(EmptyMask::Target));
        assert_eq!((r.recall, r.precision), (None, Some(0.0)));
        let r = evaluate(&e, &e, &opts).unwrap();
        assert_eq!(r.empty, Some(EmptyMask::Both));
        assert_eq!(
            (r.dice, r.iou, r.cldice, r.hd95),
            (1.0, 1.0, Some(1.0), None)
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["empty"], "both");
        for e in [EmptyMask::Pred, EmptyMask::Target, EmptyMask::Both] {
            assert_eq!(serde_json::to_value(e).unwrap(), e.name());
        }
        assert!(json["hd95"].is_null());
        assert_eq!(json["definition"], "monai");
    }

    #[test]
    fn bad_inputs_are_errors() {
        let a = Mask::empty(4, 3);
        let b = Mask::empty(3, 4);
        let err = evaluate(&a, &b, &MetricOptions::default()).unwrap_err();
        assert!(
            err.to_string().contains("4x3") && err.to_string().contains("3x4"),
            "{err}"
        );
        let opts = MetricOptions {
            spacing: [1.0, 0.0],
            ..Default::default()
        };
        assert!(matches!(
            evaluate(&a, &a, &opts),
            Err(Error::InvalidSpacing { axis: "x", .. })
        ));
        let opts = MetricOptions {
            percentile: 101.0,
            ..Default::default()
        };
        assert!(matches!(
            evaluate(&a, &a, &opts),
            Err(Error::InvalidPercentile(_))
        ));
    }

    #[test]
    fn cldice_hand_values() {
        // Target: a horizontal 1-px line of 8. Prediction: its left half, plus a separate 3-px
        // line that misses the target. Straight 1-px lines are their own skeletons (end pixels have
        // B = 1, inner ones A = 2). Tprec = |S(P) ∩ T| / |S(P)| = 4/7, Tsens = 4/8;
        // clDice = 2 (4/7)(1/2) / (4/7 + 1/2) = 8/15.
        let t = parse(&[
            "..........",
            ".########.",
            "..........",
            "..........",
            "..........",
        ]);
        let p = parse(&[
            "..........",
            ".####.....",
            "..........",
            ".###......",
            "..........",
        ]);
        let got = cl_dice(&p, &t).unwrap();
        assert!((got - 8.0 / 15.0).abs() < TOL, "{got}");
        assert_eq!(cl_dice(&t, &t), Some(1.0));
    }
}
