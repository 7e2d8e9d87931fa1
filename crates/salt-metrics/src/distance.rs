//! Surface distances (HD, HD95, ASSD) under the three definitions in use in the literature.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::edt::squared_distances_at;
use crate::error::Error;
use crate::percentile::percentile;
use crate::surface::{crop, surface_of, union_bbox};

/// Which definition of the surface distances to use. All three share the surface
/// `∂M = M XOR erosion(M)` (cross-shaped structuring element, outside the image is background)
/// and Euclidean distances in physical units (`spacing`); `P` is the prediction, `T` the target,
/// `d(p, S) = min_{s ∈ S} ‖p − s‖`, and `P_q` the `q`-th percentile with numpy's linear
/// interpolation (`q = 95` for HD95).
///
/// | definition | directed sets | HD95 | HD | ASSD |
/// |---|---|---|---|---|
/// | `monai` | `A = {d(p, ∂T) : p ∈ ∂P}`, `B = {d(t, ∂P) : t ∈ ∂T}` | `max(P_q(A), P_q(B))` | `max(max A, max B)` | `mean(A ∪ B)` (pooled) |
/// | `medpy` | same `A`, `B` | `P_q(A ∪ B)` (pooled) | `max(max A, max B)` | `mean(A ∪ B)` (pooled) |
/// | `salt-paper` | `A = {d(p, T) : p ∈ ∂P}`, `B = {d(t, P) : t ∈ ∂T}` (to the *foreground*) | `max(P_q(A), P_q(B))` | `max(max A, max B)` | `mean(A ∪ B)` (pooled) |
///
/// `monai` is MONAI's `compute_hausdorff_distance(percentile=95)` and
/// `compute_average_surface_distance(symmetric=True)`; `medpy` is medpy's `hd95`, `hd` and `assd`
/// (medpy 0.5 pools both directions in `assd`; releases before 0.5 averaged the two directed
/// means);
/// `salt-paper` is the evaluation code of the SALT paper (its surface points are measured to the
/// other mask's foreground, so a surface pixel inside the other mask is at distance 0). The paper
/// defines no ASSD: ours pools like MONAI. Empty masks give no distances at all (see
/// [`crate::EmptyMask`]) in every definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DistanceDefinition {
    /// MONAI: the larger of the two directed percentiles of surface-to-surface distances.
    #[default]
    Monai,
    /// medpy: the percentile of both directions' surface-to-surface distances pooled.
    Medpy,
    /// SALT paper: from each surface pixel to the nearest foreground pixel of the other mask.
    SaltPaper,
}

impl DistanceDefinition {
    /// The three definitions, in documentation order.
    pub const ALL: [Self; 3] = [Self::Monai, Self::Medpy, Self::SaltPaper];

    /// The name used on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Monai => "monai",
            Self::Medpy => "medpy",
            Self::SaltPaper => "salt-paper",
        }
    }
}

impl fmt::Display for DistanceDefinition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DistanceDefinition {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| Error::UnknownDefinition(s.to_string()))
    }
}

/// Hausdorff distance, its percentile variant and the average symmetric surface distance, in the
/// units of the spacing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SurfaceDistances {
    /// Hausdorff distance (the maximum).
    pub hd: f64,
    /// The `percentile`-th Hausdorff distance (HD95 for 95).
    pub hd_percentile: f64,
    /// Average symmetric surface distance.
    pub assd: f64,
}

/// Distances from every pixel set in `query` to the nearest pixel set in `features`.
fn directed(
    width: usize,
    height: usize,
    query: &[bool],
    features: &[bool],
    spacing: [f64; 2],
) -> Vec<f64> {
    let mut d = squared_distances_at(width, height, query, features, spacing);
    for v in &mut d {
        *v = v.sqrt();
    }
    d
}

/// Surface distances between two row-major masks of the same size; `None` when either is empty.
///
/// Both masks are cropped to the bounding box of their union first (as MONAI does): every query
/// and feature pixel lies inside it, and pixels outside it are background either way, so the
/// surfaces and the distances are unchanged while the transforms touch fewer pixels.
pub(crate) fn surface_distances(
    width: usize,
    pred: &[bool],
    target: &[bool],
    spacing: [f64; 2],
    definition: DistanceDefinition,
    q: f64,
) -> Option<SurfaceDistances> {
    if !pred.iter().any(|&v| v) || !target.iter().any(|&v| v) {
        return None;
    }
    let bbox = union_bbox(width, pred, target)?;
    let (w, h) = (bbox.2 - bbox.0 + 1, bbox.3 - bbox.1 + 1);
    let p = crop(width, pred, bbox);
    let t = crop(width, target, bbox);
    let sp = surface_of(w, h, &p);
    let st = surface_of(w, h, &t);
    let (mut a, mut b) = match definition {
        DistanceDefinition::Monai | DistanceDefinition::Medpy => (
            directed(w, h, &sp, &st, spacing),
            directed(w, h, &st, &sp, spacing),
        ),
        DistanceDefinition::SaltPaper => (
            directed(w, h, &sp, &t, spacing),
            directed(w, h, &st, &p, spacing),
        ),
    };
    let max = |v: &[f64]| v.iter().copied().fold(0.0f64, f64::max);
    let sum = |v: &[f64]| v.iter().sum::<f64>();
    let hd = max(&a).max(max(&b));
    let assd = (sum(&a) + sum(&b)) / (a.len() + b.len()) as f64;
    let hd_percentile = match definition {
        DistanceDefinition::Monai | DistanceDefinition::SaltPaper => {
            percentile(&mut a, q)?.max(percentile(&mut b, q)?)
        }
        DistanceDefinition::Medpy => {
            a.append(&mut b);
            percentile(&mut a, q)?
        }
    };
    Some(SurfaceDistances {
        hd,
        hd_percentile,
        assd,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::Mask;

    const TOL: f64 = 1e-12;

    fn parse(rows: &[&str]) -> Mask {
        Mask::from_fn(rows[0].len(), rows.len(), |x, y| {
            rows[y].as_bytes()[x] == b'#'
        })
    }

    #[test]
    fn names_round_trip() {
        for d in DistanceDefinition::ALL {
            assert_eq!(d.name().parse::<DistanceDefinition>().unwrap(), d);
            assert_eq!(
                serde_json::to_string(&d).unwrap(),
                format!("\"{}\"", d.name())
            );
        }
        let err = "hausdorff".parse::<DistanceDefinition>().unwrap_err();
        assert!(err.to_string().contains("`hausdorff`"));
    }

    #[test]
    fn single_pixels_three_apart() {
        let p = parse(&["#...", "...."]);
        let t = parse(&["...#", "...."]);
        for d in DistanceDefinition::ALL {
            let r = surface_distances(4, p.data(), t.data(), [1.0, 1.0], d, 95.0).unwrap();
            assert_eq!((r.hd, r.hd_percentile, r.assd), (3.0, 3.0, 3.0), "{d}");
        }
        // Spacing scales the x axis only.
        let r = surface_distances(
            4,
            p.data(),
            t.data(),
            [5.0, 0.5],
            DistanceDefinition::Monai,
            95.0,
        )
        .unwrap();
        assert!((r.hd - 1.5).abs() < TOL);
    }

    #[test]
    fn definitions_differ_on_nested_masks() {
        // Target: a 5x5 block; prediction: its 3x3 centre. ∂P is the 3x3 ring (8 px) at distance
        // 1 from ∂T; ∂T is the 5x5 ring (16 px): its 4 corners are √2 from ∂P and the other 12 are 1.
        let t = Mask::from_fn(7, 7, |x, y| (1..=5).contains(&x) && (1..=5).contains(&y));
        let p = Mask::from_fn(7, 7, |x, y| (2..=4).contains(&x) && (2..=4).contains(&y));
        let s2 = 2f64.sqrt();
        let monai = surface_distances(
            7,
            p.data(),
            t.data(),
            [1.0, 1.0],
            DistanceDefinition::Monai,
            95.0,
        )
        .unwrap();
        // B sorted: 12 ones then 4 × √2; index 0.95·15 = 14.25 lies among the √2.
        assert!((monai.hd_percentile - s2).abs() < TOL);
        assert!((monai.hd - s2).abs() < TOL);
        assert!((monai.assd - (8.0 + 12.0 + 4.0 * s2) / 24.0).abs() < TOL);
        let medpy = surface_distances(
            7,
            p.data(),
            t.data(),
            [1.0, 1.0],
            DistanceDefinition::Medpy,
            95.0,
        )
        .unwrap();
        // Pooled: 20 ones then 4 × √2; index 0.95·23 = 21.85 → √2.
        assert!((medpy.hd_percentile - s2).abs() < TOL);
        assert!((medpy.assd - monai.assd).abs() < TOL);
        let paper = surface_distances(
            7,
            p.data(),
            t.data(),
            [1.0, 1.0],
            DistanceDefinition::SaltPaper,
            95.0,
        )
        .unwrap();
        // ∂P lies inside T (distance 0); ∂T to the 3x3 block: same 12 ones and 4 √2 as above.
        assert!((paper.hd_percentile - s2).abs() < TOL);
        assert!((paper.assd - (12.0 + 4.0 * s2) / 24.0).abs() < TOL);
    }

    #[test]
    fn empty_gives_none() {
        let e = Mask::empty(3, 3);
        let f = Mask::from_fn(3, 3, |_, _| true);
        assert!(surface_distances(
            3,
            e.data(),
            f.data(),
            [1.0, 1.0],
            DistanceDefinition::Monai,
            95.0
        )
        .is_none());
        assert!(surface_distances(
            3,
            f.data(),
            e.data(),
            [1.0, 1.0],
            DistanceDefinition::Medpy,
            95.0
        )
        .is_none());
    }
}
