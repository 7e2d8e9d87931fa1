//! Percentiles with numpy's default ("linear") interpolation.

/// The `q`-th percentile (`q` in [0, 100]) of `values` as `numpy.percentile(values, q)` computes
/// it with its default `method="linear"`: with the values sorted ascending as `a`, the virtual
/// index is `i = q/100 · (n − 1)` and the result `a[⌊i⌋] + (i − ⌊i⌋)(a[⌊i⌋+1] − a[⌊i⌋])`.
/// Runs in O(n) by selection (`values` is reordered). `None` for an empty slice.
pub fn percentile(values: &mut [f64], q: f64) -> Option<f64> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let index = (q / 100.0) * (n - 1) as f64;
    let lo = (index.floor() as usize).min(n - 1);
    let t = index - lo as f64;
    let (_, &mut a, right) = values.select_nth_unstable_by(lo, f64::total_cmp);
    if t <= 0.0 || right.is_empty() {
        return Some(a);
    }
    let b = right.iter().copied().fold(f64::INFINITY, f64::min);
    Some(lerp(a, b, t))
}

/// numpy's `_lerp`: `a + (b − a)·t`, computed from the nearer end for `t ≥ 0.5` (which keeps the
/// result monotonic in `t` and exact at `t = 1`).
fn lerp(a: f64, b: f64, t: f64) -> f64 {
    let diff = b - a;
    if t >= 0.5 {
        b - diff * (1.0 - t)
    } else {
        a + diff * t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOL: f64 = 1e-12;

    #[test]
    fn hand_values() {
        // numpy.percentile([1, 2, 3, 4], 95) = 3 + 0.85 * 1
        assert!((percentile(&mut [4.0, 1.0, 3.0, 2.0], 95.0).unwrap() - 3.85).abs() < TOL);
        assert_eq!(percentile(&mut [4.0, 1.0, 3.0, 2.0], 100.0), Some(4.0));
        assert_eq!(percentile(&mut [4.0, 1.0, 3.0, 2.0], 0.0), Some(1.0));
        assert_eq!(percentile(&mut [4.0, 1.0, 3.0, 2.0], 50.0), Some(2.5));
        assert_eq!(percentile(&mut [7.0], 95.0), Some(7.0));
        assert_eq!(percentile(&mut [], 95.0), None);
        // 21 values 0..=20: index 19 exactly.
        let mut v: Vec<f64> = (0..=20).rev().map(f64::from).collect();
        assert_eq!(percentile(&mut v, 95.0), Some(19.0));
    }
}
