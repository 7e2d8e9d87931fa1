//! Exact Euclidean distance transform in linear time (Felzenszwalb & Huttenlocher, "Distance
//! Transforms of Sampled Functions", Theory of Computing 8, 2012), with per-axis spacing.
//!
//! The squared distance is separable: `D(y, x) = min_q (sx (x - qx))² + (sy (y - qy))²`. Pass 1
//! runs down the columns and finds, for each pixel, the row distance to the nearest feature in its
//! column (two sweeps over whole rows: contiguous memory, no per-column strides). Pass 2 runs
//! along each row and takes the lower envelope of the parabolas `g(q) + sx² (x - q)²` with
//! `g(q) = (sy · dy(q))²`. Both passes are O(pixels). With unit spacing every intermediate value is
//! an integer below 2^53, so the squared distances are exact.

use crate::mask::Mask;

/// Unsigned row counts of pass 1: `u16` when the image has fewer than 65535 rows (half the memory
/// traffic of `u32`), `u32` otherwise. `NONE` (the type's maximum) means "no feature in this
/// column"; counts saturate there, and a real count never reaches it because it is below the
/// height.
trait RowCount: Copy + Ord {
    const NONE: Self;
    /// `self + 1`, saturating at `NONE`.
    fn step(self) -> Self;
    /// `if feature { 0 } else { self }` without a branch (so the sweep vectorises).
    fn unless(self, feature: bool) -> Self;
    fn to_f64(self) -> f64;
}

macro_rules! row_count {
    ($t:ty) => {
        impl RowCount for $t {
            const NONE: Self = <$t>::MAX;
            fn step(self) -> Self {
                self.saturating_add(1)
            }
            fn unless(self, feature: bool) -> Self {
                // The mask is 0 for a feature, all ones otherwise.
                self & <$t>::from(feature).wrapping_sub(1)
            }
            fn to_f64(self) -> f64 {
                f64::from(self)
            }
        }
    };
}
row_count!(u16);
row_count!(u32);

/// Whether `u16` row counts suffice for `height` rows.
fn short_counts(height: usize) -> bool {
    height < usize::from(u16::MAX)
}

/// Columns on each side of a query used to bound its answer before building the envelope.
const BOUND_REACH: usize = 3;

/// Squared Euclidean distance from every pixel to the nearest `true` pixel of `features`
/// (row-major `width x height`), with `spacing = [sy, sx]`. `f64::INFINITY` everywhere when
/// there is no feature.
///
/// # Panics
/// When `features.len() != width * height` (a contract of this crate's internal callers).
pub(crate) fn squared_edt(
    width: usize,
    height: usize,
    features: &[bool],
    spacing: [f64; 2],
) -> Vec<f64> {
    assert_eq!(
        features.len(),
        width * height,
        "feature buffer does not match its size"
    );
    if short_counts(height) {
        squared_edt_with::<u16>(width, height, features, spacing)
    } else {
        squared_edt_with::<u32>(width, height, features, spacing)
    }
}

fn squared_edt_with<T: RowCount>(
    width: usize,
    height: usize,
    features: &[bool],
    spacing: [f64; 2],
) -> Vec<f64> {
    let mut out = vec![f64::INFINITY; width * height];
    if width == 0 || height == 0 {
        return out;
    }
    let dy = column_distances::<T>(width, height, features);
    let mut env = Envelope::new(width);
    let mut g = vec![0.0f64; width];
    for y in 0..height {
        let row = y * width;
        squared_row(&dy[row..row + width], spacing[0], &mut g);
        let finite = g.iter().enumerate().filter(|(_, v)| v.is_finite());
        env.build(finite.map(|(q, &v)| (q, v)), spacing[1] * spacing[1]);
        let mut cells = out[row..row + width].iter_mut();
        env.evaluate(0..width, |d| {
            if let Some(c) = cells.next() {
                *c = d;
            }
        });
    }
    out
}

/// Squared distances from each `query` pixel to the nearest `features` pixel, in row-major order
/// of the query pixels (`f64::INFINITY` when there is no feature).
///
/// Same transform as [`squared_edt`], evaluated only where it is needed: in each row, the nearest
/// feature of a query at column `p` lies in a column `q` with `sx² (p − q)² ≤ u(p)` for any upper
/// bound `u(p)` of the answer (we take the best of the columns within [`BOUND_REACH`] of `p`), so
/// the envelope is built only from the columns within `√(u(p)) / sx` of some query of the row.
/// The result is exact. Cost: the linear column pass, then per row O(candidate columns) for the
/// envelope plus O(Q log Q) to order the Q query intervals (no sort when they arrive ordered, the
/// usual case); on vessel masks, whose surfaces lie close to each other, most columns are never
/// touched.
///
/// # Panics
/// When a buffer's length is not `width * height`.
pub(crate) fn squared_distances_at(
    width: usize,
    height: usize,
    query: &[bool],
    features: &[bool],
    spacing: [f64; 2],
) -> Vec<f64> {
    assert_eq!(
        features.len(),
        width * height,
        "feature buffer does not match its size"
    );
    assert_eq!(
        query.len(),
        width * height,
        "query buffer does not match its size"
    );
    if short_counts(height) {
        squared_distances_at_with::<u16>(width, height, query, features, spacing)
    } else {
        squared_distances_at_with::<u32>(width, height, query, features, spacing)
    }
}

fn squared_distances_at_with<T: RowCount>(
    width: usize,
    height: usize,
    query: &[bool],
    features: &[bool],
    spacing: [f64; 2],
) -> Vec<f64> {
    let mut result = Vec::new();
    if width == 0 || height == 0 {
        return result;
    }
    let dy = column_distances::<T>(width, height, features);
    let [sy, sx] = spacing;
    let w = sx * sx;
    let g = |d: T| {
        if d == T::NONE {
            f64::INFINITY
        } else {
            (sy * d.to_f64()).powi(2)
        }
    };
    let mut env = Envelope::new(width);
    let mut columns: Vec<usize> = Vec::new();
    let mut intervals: Vec<(usize, usize)> = Vec::new();
    let mut candidates: Vec<usize> = Vec::new();
    for y in 0..height {
        let row = y * width;
        columns.clear();
        set_positions(&query[row..row + width], &mut columns);
        if columns.is_empty() {
            continue;
        }
        let g_row = &dy[row..row + width];
        // Candidate columns: the union of [p − r, p + r] over the row's queries.
        intervals.clear();
        for &p in &columns {
            // Upper bound of the answer at p from the columns next to it (any candidate bounds
            // the minimum); a tighter bound than g(p) alone when the nearest feature lies to the
            // side, where the column's own vertical distance is large.
            let lo_n = p.saturating_sub(BOUND_REACH);
            let hi_n = (p + BOUND_REACH).min(width - 1);
            let gp = (lo_n..=hi_n)
                .map(|q| g(g_row[q]) + w * (p.abs_diff(q) as f64).powi(2))
                .fold(f64::INFINITY, f64::min);
            intervals.push(if gp.is_infinite() {
                (0, width - 1)
            } else {
                // +1 column of slack against rounding in the square root.
                let r = (gp / w).sqrt() as usize + 1;
                (p.saturating_sub(r), (p + r).min(width - 1))
            });
        }
        if !intervals.is_sorted() {
            intervals.sort_unstable();
        }
        candidates.clear();
        let mut next = 0usize; // first column not yet added
        for &(lo, hi) in &intervals {
            let start = lo.max(next);
            if start <= hi {
                let span = g_row[start..=hi].iter().enumerate();
                candidates.extend(span.filter(|(_, &d)| d != T::NONE).map(|(i, _)| start + i));
            }
            next = next.max(hi + 1);
        }
        env.build(candidates.iter().map(|&q| (q, g(g_row[q]))), w);
        env.evaluate(columns.iter().copied(), |d| result.push(d));
    }
    result
}

/// Appends the indices of the `true` entries of `row`. Queries are sparse (surfaces), so whole
/// blocks are skipped with a vectorised `any` first.
fn set_positions(row: &[bool], out: &mut Vec<usize>) {
    const BLOCK: usize = 32;
    for (b, block) in row.chunks(BLOCK).enumerate() {
        if block.iter().fold(false, |acc, &v| acc | v) {
            out.extend(
                block
                    .iter()
                    .enumerate()
                    .filter(|(_, &v)| v)
                    .map(|(i, _)| b * BLOCK + i),
            );
        }
    }
}

/// Pass 1: for each pixel, the number of rows to the nearest feature in its column
/// (`T::NONE` when the column has none). Whole rows at a time, so both sweeps vectorise.
fn column_distances<T: RowCount>(width: usize, height: usize, features: &[bool]) -> Vec<T> {
    let mut dy = vec![T::NONE; width * height];
    for (d, &f) in dy[..width].iter_mut().zip(&features[..width]) {
        *d = T::NONE.unless(f);
    }
    for y in 1..height {
        let (done, rest) = dy.split_at_mut(y * width);
        let prev = &done[(y - 1) * width..];
        let feats = &features[y * width..(y + 1) * width];
        for ((c, &p), &f) in rest[..width].iter_mut().zip(prev).zip(feats) {
            *c = p.step().unless(f);
        }
    }
    for y in (0..height - 1).rev() {
        let (head, tail) = dy.split_at_mut((y + 1) * width);
        for (c, &b) in head[y * width..].iter_mut().zip(&tail[..width]) {
            *c = (*c).min(b.step());
        }
    }
    dy
}

/// `g(q) = (sy · dy(q))²`, ∞ for columns without a feature.
fn squared_row<T: RowCount>(dy: &[T], sy: f64, g: &mut [f64]) {
    for (gx, &d) in g.iter_mut().zip(dy) {
        *gx = if d == T::NONE {
            f64::INFINITY
        } else {
            (sy * d.to_f64()).powi(2)
        };
    }
}

/// Work buffers of one Felzenszwalb–Huttenlocher row transform.
struct Envelope {
    /// Apex positions of the parabolas in the lower envelope.
    v: Vec<usize>,
    /// Their heights `g(v)`.
    gv: Vec<f64>,
    /// Left boundary of parabola `i`'s interval as a fraction `num[i] / den[i]` (`den > 0`):
    /// comparing fractions by cross-multiplication keeps divisions out of the inner loop.
    num: Vec<f64>,
    den: Vec<f64>,
    /// Parabolas in the envelope.
    k: usize,
    /// `sx²` of the last build.
    w: f64,
}

impl Envelope {
    fn new(n: usize) -> Self {
        Self {
            v: vec![0; n],
            gv: vec![0.0; n],
            num: vec![0.0; n],
            den: vec![0.0; n],
            k: 0,
            w: 1.0,
        }
    }

    /// Builds the lower envelope of the parabolas `g + w (x − q)²` for `(q, g)` in `parabolas`
    /// (ascending `q`, finite `g`). The parabolas at `p < q` intersect at
    /// `s = (f(q) − f(p)) / (2w (q − p))` with `f(q) = g(q) + w q²`.
    fn build(&mut self, parabolas: impl Iterator<Item = (usize, f64)>, w: f64) {
        let Self {
            v, gv, num, den, ..
        } = self;
        let mut k = 0usize; // parabolas in the envelope
        for (q, gq) in parabolas {
            let fq = gq + w * (q * q) as f64;
            while k > 0 {
                let p = v[k - 1];
                let sn = fq - (gv[k - 1] + w * (p * p) as f64);
                let sd = 2.0 * w * (q - p) as f64;
                // Pop the top parabola while the new intersection lies left of its interval
                // start (`k == 1`: its interval starts at −∞, never pop).
                if k > 1 && sn * den[k - 1] <= num[k - 1] * sd {
                    k -= 1;
                } else {
                    num[k] = sn;
                    den[k] = sd;
                    break;
                }
            }
            v[k] = q;
            gv[k] = gq;
            k += 1;
        }
        self.k = k;
        self.w = w;
    }

    /// Passes `min_q g(q) + w (p − q)²` to `sink` for each column `p` of `columns` (ascending),
    /// from the envelope of the last [`Self::build`]; ∞ when it holds no parabola.
    fn evaluate(&self, columns: impl Iterator<Item = usize>, mut sink: impl FnMut(f64)) {
        let Self {
            v,
            gv,
            num,
            den,
            k,
            w,
        } = self;
        let mut j = 0usize;
        for p in columns {
            if *k == 0 {
                sink(f64::INFINITY);
                continue;
            }
            let pf = p as f64;
            while j + 1 < *k && num[j + 1] < pf * den[j + 1] {
                j += 1;
            }
            let d = p.abs_diff(v[j]) as f64;
            sink(w * d * d + gv[j]);
        }
    }
}

/// Euclidean distance from every pixel to the nearest foreground pixel of `mask` (0 on the
/// foreground), row-major, with `spacing = [sy, sx]`: scipy's
/// `distance_transform_edt(~mask, sampling=spacing)`. All `f64::INFINITY` for an empty mask.
pub fn distance_transform(mask: &Mask, spacing: [f64; 2]) -> Vec<f64> {
    let mut d = squared_edt(mask.width(), mask.height(), mask.data(), spacing);
    for v in &mut d {
        *v = v.sqrt();
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Squared distances with unit spacing are exact integers.
    const EXACT: f64 = 0.0;
    /// With non-integer spacing the envelope arithmetic rounds.
    const SPACING_TOL: f64 = 1e-9;

    /// Brute-force reference, fine for the tiny masks of these tests.
    fn brute(mask: &Mask, spacing: [f64; 2]) -> Vec<f64> {
        let (w, h) = (mask.width(), mask.height());
        let mut out = vec![f64::INFINITY; w * h];
        for y in 0..h {
            for x in 0..w {
                for qy in 0..h {
                    for qx in 0..w {
                        if mask.get(qx, qy) {
                            let dy = spacing[0] * (y as f64 - qy as f64);
                            let dx = spacing[1] * (x as f64 - qx as f64);
                            out[y * w + x] = out[y * w + x].min(dy * dy + dx * dx);
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn single_pixel_hand_values() {
        let m = Mask::from_fn(4, 3, |x, y| x == 0 && y == 0);
        let d = squared_edt(4, 3, m.data(), [1.0, 1.0]);
        // (x, y) -> x² + y²
        assert_eq!(d, vec![0., 1., 4., 9., 1., 2., 5., 10., 4., 5., 8., 13.]);
        let d = distance_transform(&m, [2.0, 0.5]);
        // (x=3, y=2): sqrt((2*2)² + (0.5*3)²) = sqrt(16 + 2.25)
        assert!((d[2 * 4 + 3] - 18.25f64.sqrt()).abs() <= SPACING_TOL);
    }

    #[test]
    fn tall_images_use_wide_counts_and_agree() {
        // 70 000 rows need u32 row counts; the answer is the 1-D distance to the two features.
        let h = 70_000;
        let m = Mask::from_fn(1, h, |_, y| y == 5 || y == 69_000);
        assert!(!short_counts(h));
        let d = squared_edt(1, h, m.data(), [1.0, 1.0]);
        for (y, &v) in d.iter().enumerate() {
            let expected = (y.abs_diff(5).min(y.abs_diff(69_000)) as f64).powi(2);
            assert_eq!(v, expected, "row {y}");
        }
        let q = Mask::from_fn(1, h, |_, y| y % 1000 == 0);
        let at = squared_distances_at(1, h, q.data(), m.data(), [1.0, 1.0]);
        let want: Vec<f64> = (0..h).filter(|y| y % 1000 == 0).map(|y| d[y]).collect();
        assert_eq!(at, want);
        // u16 and u32 counts give the same transform where both apply.
        let small = Mask::from_fn(7, 9, |x, y| (x * 3 + y * 5) % 11 == 0);
        assert_eq!(
            squared_edt_with::<u16>(7, 9, small.data(), [0.7, 1.3]),
            squared_edt_with::<u32>(7, 9, small.data(), [0.7, 1.3])
        );
    }

    #[test]
    fn empty_is_infinite() {
        let m = Mask::empty(3, 2);
        assert!(squared_edt(3, 2, m.data(), [1.0, 1.0])
            .iter()
            .all(|v| v.is_infinite()));
        assert!(squared_edt(0, 0, &[], [1.0, 1.0]).is_empty());
    }

    #[test]
    fn matches_brute_force_on_seeded_masks() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for case in 0..60 {
            let w = 1 + (next() % 13) as usize;
            let h = 1 + (next() % 11) as usize;
            let density = 1 + next() % 20;
            let m = Mask::from_fn(w, h, |_, _| next() % 100 < density);
            let fast = squared_edt(w, h, m.data(), [1.0, 1.0]);
            let slow = brute(&m, [1.0, 1.0]);
            for (a, b) in fast.iter().zip(&slow) {
                assert!(a == b || (a - b).abs() <= EXACT, "case {case}: {a} vs {b}");
            }
            let query = Mask::from_fn(w, h, |_, _| next() % 3 == 0);
            for spacing in [[1.0, 1.0], [0.7, 1.3], [2.5, 0.4]] {
                let full = squared_edt(w, h, m.data(), spacing);
                let at: Vec<f64> = full
                    .iter()
                    .zip(query.data())
                    .filter(|(_, &q)| q)
                    .map(|(&d, _)| d)
                    .collect();
                assert_eq!(
                    squared_distances_at(w, h, query.data(), m.data(), spacing),
                    at,
                    "case {case}"
                );
            }
            let spacing = [0.7, 1.3];
            let fast = squared_edt(w, h, m.data(), spacing);
            let slow = brute(&m, spacing);
            for (a, b) in fast.iter().zip(&slow) {
                assert!(
                    a == b || (a - b).abs() <= SPACING_TOL * b.max(1.0),
                    "case {case}"
                );
            }
        }
    }
}
