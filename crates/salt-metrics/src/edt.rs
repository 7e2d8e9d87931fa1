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

/// Row distance meaning "no feature in this column".
const NO_FEATURE: u32 = u32::MAX;

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
    let mut out = vec![f64::INFINITY; width * height];
    if width == 0 || height == 0 {
        return out;
    }
    let [sy, sx] = spacing;

    // Pass 1: rows to the nearest feature in the same column (saturating at NO_FEATURE).
    let mut dy = vec![NO_FEATURE; width * height];
    for y in 0..height {
        let row = y * width;
        for x in 0..width {
            dy[row + x] = if features[row + x] {
                0
            } else if y == 0 {
                NO_FEATURE
            } else {
                dy[row - width + x].saturating_add(1)
            };
        }
    }
    for y in (0..height - 1).rev() {
        let (head, tail) = dy.split_at_mut((y + 1) * width);
        let cur = &mut head[y * width..];
        let below = &tail[..width];
        for (c, &b) in cur.iter_mut().zip(below) {
            *c = (*c).min(b.saturating_add(1));
        }
    }

    // Pass 2: lower envelope of parabolas along each row.
    let wx = sx * sx;
    let mut g = vec![0.0f64; width];
    let mut v = vec![0usize; width];
    let mut z = vec![0.0f64; width + 1];
    for y in 0..height {
        let row = y * width;
        for (gx, &d) in g.iter_mut().zip(&dy[row..row + width]) {
            *gx = if d == NO_FEATURE {
                f64::INFINITY
            } else {
                (sy * d as f64).powi(2)
            };
        }
        lower_envelope(&g, wx, &mut v, &mut z, &mut out[row..row + width]);
    }
    out
}

/// One row of Felzenszwalb–Huttenlocher: `out[p] = min_q g[q] + w (p - q)²`, skipping `q` with
/// `g[q] = ∞` (they never win, and keeping them would put ∞ − ∞ into the intersections).
fn lower_envelope(g: &[f64], w: f64, v: &mut [usize], z: &mut [f64], out: &mut [f64]) {
    let n = g.len();
    let mut k = 0usize; // parabolas in the envelope
    for q in 0..n {
        if g[q].is_infinite() {
            continue;
        }
        let fq = g[q] + w * (q * q) as f64;
        loop {
            if k == 0 {
                v[0] = q;
                z[0] = f64::NEG_INFINITY;
                k = 1;
                break;
            }
            let p = v[k - 1];
            let s = (fq - (g[p] + w * (p * p) as f64)) / (2.0 * w * (q - p) as f64);
            if s <= z[k - 1] {
                k -= 1;
            } else {
                v[k] = q;
                z[k] = s;
                k += 1;
                break;
            }
        }
    }
    if k == 0 {
        out.fill(f64::INFINITY);
        return;
    }
    z[k] = f64::INFINITY;
    let mut j = 0usize;
    for (p, o) in out.iter_mut().enumerate() {
        while z[j + 1] < p as f64 {
            j += 1;
        }
        let d = p.abs_diff(v[j]) as f64;
        *o = w * d * d + g[v[j]];
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
