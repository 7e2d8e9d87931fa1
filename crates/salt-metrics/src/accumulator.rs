//! A MONAI-like accumulator: per-image results plus mean, std and median per metric.

use serde::{Deserialize, Serialize};

use crate::distance::DistanceDefinition;
use crate::evaluate::{EmptyMask, MetricResult};

/// Statistics of one metric over the images where it is defined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Images with a value.
    pub count: usize,
    /// Images left out because the metric is undefined for them (`null`), e.g. HD95 with an empty
    /// mask.
    pub excluded: usize,
    /// Arithmetic mean (`None` when `count = 0`).
    pub mean: Option<f64>,
    /// Population standard deviation, `sqrt(mean((v - mean)²))` as numpy's default `ddof = 0`.
    pub std: Option<f64>,
    /// Median, the mean of the two middle values for an even count (numpy's `median`).
    pub median: Option<f64>,
    /// Smallest value.
    pub min: Option<f64>,
    /// Largest value.
    pub max: Option<f64>,
}

impl Stats {
    /// Statistics of the `Some` values; `None`s are counted in `excluded`.
    pub fn of(values: impl IntoIterator<Item = Option<f64>>) -> Self {
        let mut v = Vec::new();
        let mut excluded = 0;
        for value in values {
            match value {
                Some(x) => v.push(x),
                None => excluded += 1,
            }
        }
        let count = v.len();
        if count == 0 {
            return Self {
                count,
                excluded,
                mean: None,
                std: None,
                median: None,
                min: None,
                max: None,
            };
        }
        let n = count as f64;
        let mean = v.iter().sum::<f64>() / n;
        let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
        v.sort_by(f64::total_cmp);
        let median = if count % 2 == 1 {
            v[count / 2]
        } else {
            (v[count / 2 - 1] + v[count / 2]) / 2.0
        };
        Self {
            count,
            excluded,
            mean: Some(mean),
            std: Some(std),
            median: Some(median),
            min: Some(v[0]),
            max: Some(v[count - 1]),
        }
    }
}

/// Counts of images with empty masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EmptyCounts {
    /// Only the prediction empty.
    pub pred: usize,
    /// Only the target empty.
    pub target: usize,
    /// Both empty.
    pub both: usize,
}

/// Aggregates over all images, one [`Stats`] per metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Images accumulated.
    pub images: usize,
    /// Images with an empty mask (their distances are excluded from the distance statistics).
    pub empty: EmptyCounts,
    /// Dice.
    pub dice: Stats,
    /// IoU.
    pub iou: Stats,
    /// Precision.
    pub precision: Stats,
    /// Recall.
    pub recall: Stats,
    /// Specificity.
    pub specificity: Stats,
    /// Hausdorff distance.
    pub hd: Stats,
    /// HD95 (or the configured percentile).
    pub hd95: Stats,
    /// Average symmetric surface distance.
    pub assd: Stats,
    /// clDice.
    pub cldice: Stats,
}

/// One image's result with its name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageResult {
    /// The image name (the file stem in the CLI).
    pub name: String,
    /// Its metrics.
    #[serde(flatten)]
    pub metrics: MetricResult,
}

/// Per-image results and their summary, as the CLI writes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The distance definition of the results, when all share one.
    pub definition: Option<DistanceDefinition>,
    /// Per-image results in insertion order.
    pub images: Vec<ImageResult>,
    /// Aggregates.
    pub summary: Summary,
}

/// Collects per-image results (MONAI's cumulative-metric pattern: `push` per batch item,
/// `summary` at the end, `reset` between epochs).
#[derive(Debug, Clone, Default)]
pub struct Accumulator {
    images: Vec<ImageResult>,
}

impl Accumulator {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one image's result.
    pub fn push(&mut self, name: impl Into<String>, metrics: MetricResult) {
        self.images.push(ImageResult {
            name: name.into(),
            metrics,
        });
    }

    /// Number of images so far.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// Whether nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// The per-image results.
    pub fn images(&self) -> &[ImageResult] {
        &self.images
    }

    /// Forgets all results.
    pub fn reset(&mut self) {
        self.images.clear();
    }

    /// Mean, std, median, min and max per metric over the images where it is defined.
    pub fn summary(&self) -> Summary {
        let stats = |f: fn(&MetricResult) -> Option<f64>| {
            Stats::of(self.images.iter().map(|i| f(&i.metrics)))
        };
        let mut empty = EmptyCounts::default();
        for i in &self.images {
            match i.metrics.empty {
                Some(EmptyMask::Pred) => empty.pred += 1,
                Some(EmptyMask::Target) => empty.target += 1,
                Some(EmptyMask::Both) => empty.both += 1,
                None => {}
            }
        }
        Summary {
            images: self.images.len(),
            empty,
            dice: stats(|m| Some(m.dice)),
            iou: stats(|m| Some(m.iou)),
            precision: stats(|m| m.precision),
            recall: stats(|m| m.recall),
            specificity: stats(|m| m.specificity),
            hd: stats(|m| m.hd),
            hd95: stats(|m| m.hd95),
            assd: stats(|m| m.assd),
            cldice: stats(|m| m.cldice),
        }
    }

    /// The per-image results and the summary together.
    pub fn report(&self) -> Report {
        let first = self.images.first().map(|i| i.metrics.definition);
        let definition = first.filter(|d| self.images.iter().all(|i| i.metrics.definition == *d));
        Report {
            definition,
            images: self.images.clone(),
            summary: self.summary(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{evaluate, Mask, MetricOptions};

    const TOL: f64 = 1e-12;

    #[test]
    fn stats_hand_values() {
        let s = Stats::of([Some(1.0), None, Some(2.0), Some(4.0), Some(3.0)]);
        assert_eq!((s.count, s.excluded), (4, 1));
        assert!((s.mean.unwrap() - 2.5).abs() < TOL);
        // numpy.std([1, 2, 3, 4]) = sqrt(1.25)
        assert!((s.std.unwrap() - 1.25f64.sqrt()).abs() < TOL);
        assert_eq!((s.median, s.min, s.max), (Some(2.5), Some(1.0), Some(4.0)));
        let s = Stats::of([Some(3.0), Some(1.0), Some(2.0)]);
        assert_eq!(s.median, Some(2.0));
        let s = Stats::of([None, None]);
        assert_eq!((s.count, s.excluded, s.mean), (0, 2, None));
    }

    #[test]
    fn empty_images_are_counted_and_excluded_from_distances() {
        let opts = MetricOptions::default();
        let a = Mask::from_fn(5, 5, |x, y| x == 1 && y == 1);
        let b = Mask::from_fn(5, 5, |x, y| x == 3 && y == 1);
        let e = Mask::empty(5, 5);
        let mut acc = Accumulator::new();
        acc.push("same", evaluate(&a, &a, &opts).unwrap());
        acc.push("apart", evaluate(&a, &b, &opts).unwrap());
        acc.push("missed", evaluate(&e, &a, &opts).unwrap());
        let s = acc.summary();
        assert_eq!(s.images, 3);
        assert_eq!(
            s.empty,
            EmptyCounts {
                pred: 1,
                target: 0,
                both: 0
            }
        );
        assert_eq!((s.hd95.count, s.hd95.excluded), (2, 1));
        assert!((s.hd95.mean.unwrap() - 1.0).abs() < TOL); // (0 + 2) / 2
        assert_eq!(s.dice.count, 3);
        assert!((s.dice.mean.unwrap() - 1.0 / 3.0).abs() < TOL); // (1 + 0 + 0) / 3
        let json = serde_json::to_value(acc.report()).unwrap();
        assert_eq!(json["images"][2]["name"], "missed");
        assert_eq!(json["images"][2]["empty"], "pred");
        assert_eq!(json["definition"], "monai");
        acc.reset();
        assert!(acc.is_empty());
    }
}
