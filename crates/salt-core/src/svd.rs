//! Thin SVD of a frozen weight matrix on the host, with a canonical sign rule.
//!
//! Singular vectors are only defined up to sign, and SALT's dense `X·Y` block plus the
//! element-wise ReLU make `W′` depend on that choice. So every backend uses this one routine
//! (faer, f64) and the rule [`SIGN_RULE`]: in PyTorch orientation (`W = U·diag(S)·Vᵀ`, `U` is
//! `rows × k`), each column of `U` — with the matching row of `Vᵀ` — is flipped so that its entry
//! of largest absolute value is positive, the lowest index winning a tie.

use crate::error::{Error, Result};

/// The sign rule's name, recorded in `adapter_config.json`.
pub const SIGN_RULE: &str = "u-col-max-abs-positive";

/// A thin SVD `W = U·diag(S)·Vᵀ` of a `rows × cols` matrix, row-major, f64.
#[derive(Debug, Clone, PartialEq)]
pub struct SvdFactors {
    /// Rows of `W` (out features).
    pub rows: usize,
    /// Columns of `W` (in features).
    pub cols: usize,
    /// `min(rows, cols)`.
    pub k: usize,
    /// `U`, `rows × k`, row-major.
    pub u: Vec<f64>,
    /// Singular values, non-increasing, length `k`.
    pub s: Vec<f64>,
    /// `Vᵀ`, `k × cols`, row-major.
    pub vt: Vec<f64>,
}

impl SvdFactors {
    /// Thin SVD of the row-major `rows × cols` matrix `w` (PyTorch orientation), with the sign
    /// rule applied. `path` only names the layer in errors.
    ///
    /// # Panics
    /// If `w.len() != rows * cols`.
    pub fn compute(path: &str, w: &[f32], rows: usize, cols: usize) -> Result<Self> {
        assert_eq!(
            w.len(),
            rows * cols,
            "weight length does not match {rows}x{cols}"
        );
        let fail = |reason: String| Error::Svd {
            path: path.to_string(),
            rows,
            cols,
            reason,
        };
        if let Some(i) = w.iter().position(|v| !v.is_finite()) {
            return Err(fail(format!("non-finite weight {} at index {i}", w[i])));
        }
        let mat = faer::Mat::<f64>::from_fn(rows, cols, |i, j| f64::from(w[i * cols + j]));
        let svd = mat.thin_svd().map_err(|e| fail(format!("{e:?}")))?;
        let k = rows.min(cols);
        let (uf, vf) = (svd.U(), svd.V());
        let sf = svd.S().column_vector();
        let mut u = vec![0.0; rows * k];
        let mut vt = vec![0.0; k * cols];
        let mut s = vec![0.0; k];
        for c in 0..k {
            // Sign rule: the entry of largest |value| in U's column c must be positive.
            let mut best = 0usize;
            for i in 1..rows {
                if uf[(i, c)].abs() > uf[(best, c)].abs() {
                    best = i;
                }
            }
            let sign = if uf[(best, c)] < 0.0 { -1.0 } else { 1.0 };
            for i in 0..rows {
                u[i * k + c] = sign * uf[(i, c)];
            }
            for j in 0..cols {
                vt[c * cols + j] = sign * vf[(j, c)];
            }
            s[c] = sf[c];
        }
        Ok(Self {
            rows,
            cols,
            k,
            u,
            s,
            vt,
        })
    }

    /// `U` restricted to columns `range`, row-major `rows × range.len()`, as f32.
    pub fn u_cols(&self, range: std::ops::Range<usize>) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.rows * range.len());
        for i in 0..self.rows {
            out.extend(
                self.u[i * self.k + range.start..i * self.k + range.end]
                    .iter()
                    .map(|&v| v as f32),
            );
        }
        out
    }

    /// `Vᵀ` restricted to rows `range`, row-major `range.len() × cols`, as f32.
    pub fn vt_rows(&self, range: std::ops::Range<usize>) -> Vec<f32> {
        self.vt[range.start * self.cols..range.end * self.cols]
            .iter()
            .map(|&v| v as f32)
            .collect()
    }

    /// Singular values in `range`, as f32.
    pub fn s_range(&self, range: std::ops::Range<usize>) -> Vec<f32> {
        self.s[range].iter().map(|&v| v as f32).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// f64 SVD of an f32 input reconstructs it to f32 rounding.
    const RECONSTRUCTION_TOL: f64 = 1e-6;

    fn matrix(rows: usize, cols: usize) -> Vec<f32> {
        (0..rows * cols)
            .map(|i| ((i * 7919 % 101) as f32 / 50.0) - 1.0)
            .collect()
    }

    #[test]
    fn reconstructs_and_follows_sign_rule() {
        for (rows, cols) in [(7, 3), (3, 7), (5, 5)] {
            let w = matrix(rows, cols);
            let f = SvdFactors::compute("t", &w, rows, cols).unwrap();
            for i in 0..rows {
                for j in 0..cols {
                    let mut acc = 0.0;
                    for c in 0..f.k {
                        acc += f.u[i * f.k + c] * f.s[c] * f.vt[c * cols + j];
                    }
                    assert!((acc - f64::from(w[i * cols + j])).abs() < RECONSTRUCTION_TOL);
                }
            }
            for c in 0..f.k {
                let col: Vec<f64> = (0..rows).map(|i| f.u[i * f.k + c]).collect();
                let max = col
                    .iter()
                    .cloned()
                    .fold(0.0f64, |m, v| if v.abs() > m.abs() { v } else { m });
                assert!(max > 0.0, "column {c} of U breaks the sign rule");
            }
            assert!(f.s.windows(2).all(|p| p[0] >= p[1]));
        }
    }

    #[test]
    fn non_finite_weight_is_an_error() {
        let mut w = matrix(3, 3);
        w[4] = f32::NAN;
        let err = SvdFactors::compute("blocks.0.attn.qkv", &w, 3, 3).unwrap_err();
        assert!(err.to_string().contains("blocks.0.attn.qkv"), "{err}");
    }
}
