//! Plain-slice CPU kernels behind [`crate::fused`]: strided GEMM through the `gemm` crate
//! (AVX-512 and AVX2/FMA microkernels picked at run time, rayon threads), row softmax, and the forward and backward passes of scaled dot-product
//! attention that recompute the probabilities instead of storing them.
//!
//! Every buffer is row-major and contiguous; shapes are contracts checked by `expect` on the
//! ndarray views (a wrong length is a bug in the caller, not a user error).

use rayon::prelude::*;

/// A row-major matrix operand, optionally used transposed.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    /// `rows × cols` values, row-major.
    pub data: &'a [f32],
    /// Rows as stored.
    pub rows: usize,
    /// Columns as stored.
    pub cols: usize,
    /// Use the transpose (a strided view: nothing is copied).
    pub t: bool,
}

impl<'a> Mat<'a> {
    pub(crate) fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            t: false,
        }
    }

    pub(crate) fn t(self) -> Self {
        Self { t: !self.t, ..self }
    }

    /// Rows and columns as used (after the optional transpose).
    fn shape(&self) -> (usize, usize) {
        if self.t {
            (self.cols, self.rows)
        } else {
            (self.rows, self.cols)
        }
    }

    /// `(row stride, column stride)` of the matrix as used.
    fn strides(&self) -> (isize, isize) {
        let cols = self.cols as isize;
        if self.t {
            (1, cols)
        } else {
            (cols, 1)
        }
    }
}

/// `c = alpha · a · b + beta · c`, `c` row-major `m × n`.
///
/// # Panics
/// When a buffer's length or an operand's shape does not match `m × k × n` (a bug in the caller).
#[allow(unsafe_code)]
pub(crate) fn gemm(
    alpha: f32,
    a: Mat<'_>,
    b: Mat<'_>,
    beta: f32,
    c: &mut [f32],
    m: usize,
    n: usize,
) {
    let ((am, k), (bk, bn)) = (a.shape(), b.shape());
    assert!(
        am == m && bk == k && bn == n,
        "gemm shapes: a {am}x{k}, b {bk}x{bn}, c {m}x{n}"
    );
    assert_eq!(
        a.data.len(),
        a.rows * a.cols,
        "lhs buffer matches its shape"
    );
    assert_eq!(
        b.data.len(),
        b.rows * b.cols,
        "rhs buffer matches its shape"
    );
    assert_eq!(c.len(), m * n, "output buffer matches its shape");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // An empty sum: `c = beta·c`.
        c.iter_mut()
            .for_each(|v| *v = if beta == 0.0 { 0.0 } else { beta * *v });
        return;
    }
    let ((a_rs, a_cs), (b_rs, b_cs)) = (a.strides(), b.strides());
    // SAFETY: the three buffers hold exactly the `m × k`, `k × n` and `m × n` elements their
    // strides address (checked above), `c` is borrowed mutably and so aliases neither input.
    // The crate's convention is `dst = alpha·dst + beta·lhs·rhs`: our `beta` is its `alpha`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            beta != 0.0,
            a.data.as_ptr(),
            a_cs,
            a_rs,
            b.data.as_ptr(),
            b_cs,
            b_rs,
            beta,
            alpha,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        );
    }
}

/// Rows of at least this many values are worth a rayon task each.
const PAR_MIN: usize = 4096;

/// Runs `f` compiled for the widest vector instruction set the CPU has (AVX-512, AVX2 + FMA, or
/// the baseline), picked at run time: the loops inside (inlined) then vectorise for it. The
/// binary's own target is the x86-64 baseline (SSE2), 4 lanes wide.
#[inline(always)]
fn simd<R>(f: impl FnOnce() -> R) -> R {
    pulp::Arch::new().dispatch(f)
}

/// The sum of `x`, in 16 independent lanes so that it vectorises (a single running sum cannot:
/// float addition is not reassociated by the compiler).
#[inline(always)]
fn sum_f32(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The largest value of `x` (`-inf` for an empty slice), in 16 lanes.
#[inline(always)]
fn max_f32(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let chunks = x.chunks_exact(16);
    let tail = chunks
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = a.max(v);
        }
    }
    acc.iter().copied().fold(tail, f32::max)
}

/// Softmax of one row in place; returns its log-sum-exp.
#[inline(always)]
fn softmax_row(row: &mut [f32]) -> f32 {
    let max = max_f32(row);
    for v in row.iter_mut() {
        *v = exp_f32(*v - max);
    }
    let sum = sum_f32(row);
    let inv = 1.0 / sum;
    for v in row.iter_mut() {
        *v *= inv;
    }
    max + sum.ln()
}

/// Softmax of every row of `s` (`rows × n`) in place; returns each row's log-sum-exp.
pub(crate) fn softmax_rows(s: &mut [f32], n: usize) -> Vec<f32> {
    let rows = s.len() / n;
    let mut lse = vec![0.0f32; rows];
    let body = |(row, l): (&mut [f32], &mut f32)| {
        simd(
            #[inline(always)]
            || *l = softmax_row(row),
        )
    };
    if s.len() >= PAR_MIN {
        s.par_chunks_mut(n).zip(lse.par_iter_mut()).for_each(body);
    } else {
        s.chunks_mut(n).zip(lse.iter_mut()).for_each(body);
    }
    lse
}

/// Shapes of one attention call: `heads` independent problems of `nq` queries, `nk` keys, width
/// `d` (values have the same width).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AttnDims {
    pub heads: usize,
    pub nq: usize,
    pub nk: usize,
    pub d: usize,
}

/// `o = softmax(scale · q·kᵀ) · v` per head; returns `(o, lse)`, the log-sum-exp of every row of
/// the scaled logits (what the backward pass needs to rebuild the probabilities).
pub(crate) fn attention_forward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dims: AttnDims,
    scale: f32,
) -> (Vec<f32>, Vec<f32>) {
    attention_forward_biased(q, k, v, dims, scale, None)
}

/// SAM's decomposed relative positions as an additive bias of the logits: key `j = y·gw + x`
/// of query `i` gets `h[i, y] + w[i, x]`.
#[derive(Clone, Copy)]
pub(crate) struct RelBias<'a> {
    /// `[heads, nq, gh]`.
    pub h: &'a [f32],
    /// `[heads, nq, gw]`.
    pub w: &'a [f32],
    /// Key grid height.
    pub gh: usize,
    /// Key grid width.
    pub gw: usize,
}

/// Adds head `h`'s relative-position bias to its `nq × (gh·gw)` logits `s`.
fn add_rel_bias(s: &mut [f32], b: &RelBias<'_>, h: usize, nq: usize) {
    let (gh, gw) = (b.gh, b.gw);
    let add = |(i, row): (usize, &mut [f32])| {
        let bh = &b.h[(h * nq + i) * gh..(h * nq + i + 1) * gh];
        let bw = &b.w[(h * nq + i) * gw..(h * nq + i + 1) * gw];
        simd(
            #[inline(always)]
            || {
                for (y, chunk) in row.chunks_mut(gw).enumerate() {
                    for (v, &x) in chunk.iter_mut().zip(bw) {
                        *v += bh[y] + x;
                    }
                }
            },
        )
    };
    s.par_chunks_mut(gh * gw).enumerate().for_each(add);
}

/// [`attention_forward`] with an optional relative-position bias added to the scaled logits.
pub(crate) fn attention_forward_biased(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dims: AttnDims,
    scale: f32,
    bias: Option<RelBias<'_>>,
) -> (Vec<f32>, Vec<f32>) {
    let AttnDims { heads, nq, nk, d } = dims;
    if let Some(b) = &bias {
        assert_eq!(
            b.gh * b.gw,
            nk,
            "relative-position grid {}x{} for {nk} keys",
            b.gh,
            b.gw
        );
    }
    let mut o = vec![0.0f32; heads * nq * d];
    let mut lse = Vec::with_capacity(heads * nq);
    let mut s = vec![0.0f32; nq * nk];
    for h in 0..heads {
        let qh = Mat::new(&q[h * nq * d..(h + 1) * nq * d], nq, d);
        let kh = Mat::new(&k[h * nk * d..(h + 1) * nk * d], nk, d);
        let vh = Mat::new(&v[h * nk * d..(h + 1) * nk * d], nk, d);
        gemm(scale, qh, kh.t(), 0.0, &mut s, nq, nk);
        if let Some(b) = &bias {
            add_rel_bias(&mut s, b, h, nq);
        }
        lse.extend(softmax_rows(&mut s, nk));
        gemm(
            1.0,
            Mat::new(&s, nq, nk),
            vh,
            0.0,
            &mut o[h * nq * d..(h + 1) * nq * d],
            nq,
            d,
        );
    }
    (o, lse)
}

/// Gradients `(dq, dk, dv)` of [`attention_forward`] given `do_` (the output's gradient), the
/// saved inputs, output and log-sum-exp. The probabilities are recomputed head by head, so
/// only one `nq × nk` block (plus its gradient) exists at a time (the unbiased case of
/// [`attention_backward_biased`], which the fused ops call).
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    o: &[f32],
    lse: &[f32],
    do_: &[f32],
    dims: AttnDims,
    scale: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (dq, dk, dv, _) = attention_backward_biased(q, k, v, o, lse, do_, dims, scale, None);
    (dq, dk, dv)
}

/// Gradients of the two relative-position terms of [`RelBias`]: `[heads, nq, gh]`, `[heads, nq, gw]`.
pub(crate) type RelBiasGrads = (Vec<f32>, Vec<f32>);

/// [`attention_backward`] of [`attention_forward_biased`]: also the gradients of the bias terms
/// (`d rel_h[i, y] = Σₓ dS[i, y·gw + x]`, `d rel_w[i, x] = Σ_y dS[i, y·gw + x]`, `dS` the
/// gradient of the biased logits) when there is a bias.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_backward_biased(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    o: &[f32],
    lse: &[f32],
    do_: &[f32],
    dims: AttnDims,
    scale: f32,
    bias: Option<RelBias<'_>>,
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Option<RelBiasGrads>) {
    let AttnDims { heads, nq, nk, d } = dims;
    let mut dbias = bias.map(|b| {
        (
            vec![0.0f32; heads * nq * b.gh],
            vec![0.0f32; heads * nq * b.gw],
        )
    });
    let mut dq = vec![0.0f32; heads * nq * d];
    let mut dk = vec![0.0f32; heads * nk * d];
    let mut dv = vec![0.0f32; heads * nk * d];
    let mut p = vec![0.0f32; nq * nk];
    let mut dp = vec![0.0f32; nq * nk];
    for h in 0..heads {
        let (qs, ks) = (h * nq * d..(h + 1) * nq * d, h * nk * d..(h + 1) * nk * d);
        let qh = Mat::new(&q[qs.clone()], nq, d);
        let kh = Mat::new(&k[ks.clone()], nk, d);
        let vh = Mat::new(&v[ks.clone()], nk, d);
        let doh = Mat::new(&do_[qs.clone()], nq, d);
        let oh = &o[qs.clone()];
        let lseh = &lse[h * nq..(h + 1) * nq];
        // P = exp(scale·q·kᵀ + bias − lse), row by row.
        gemm(scale, qh, kh.t(), 0.0, &mut p, nq, nk);
        if let Some(b) = &bias {
            add_rel_bias(&mut p, b, h, nq);
        }
        let rebuild = |(row, &l): (&mut [f32], &f32)| {
            simd(
                #[inline(always)]
                || {
                    for x in row.iter_mut() {
                        *x = exp_f32(*x - l);
                    }
                },
            )
        };
        if p.len() >= PAR_MIN {
            p.par_chunks_mut(nk).zip(lseh.par_iter()).for_each(rebuild);
        } else {
            p.chunks_mut(nk).zip(lseh.iter()).for_each(rebuild);
        }
        // dV = Pᵀ·dO; dP = dO·Vᵀ.
        gemm(
            1.0,
            Mat::new(&p, nq, nk).t(),
            doh,
            0.0,
            &mut dv[ks.clone()],
            nk,
            d,
        );
        gemm(1.0, doh, vh.t(), 0.0, &mut dp, nq, nk);
        // dS = P ⊙ (dP − rowsum(dO ⊙ O)), in place in dp.
        let dsoft = |((dprow, prow), i): ((&mut [f32], &[f32]), usize)| {
            let delta: f32 = doh.data[i * d..(i + 1) * d]
                .iter()
                .zip(&oh[i * d..(i + 1) * d])
                .map(|(a, b)| a * b)
                .sum();
            simd(
                #[inline(always)]
                || {
                    for (g, &pp) in dprow.iter_mut().zip(prow) {
                        *g = pp * (*g - delta);
                    }
                },
            )
        };
        if dp.len() >= PAR_MIN {
            dp.par_chunks_mut(nk)
                .zip(p.par_chunks(nk))
                .zip(0..nq)
                .for_each(dsoft);
        } else {
            dp.chunks_mut(nk)
                .zip(p.chunks(nk))
                .zip(0..nq)
                .for_each(dsoft);
        }
        // d rel_h, d rel_w: the bias's row sums over each grid row and column.
        if let (Some(b), Some((dh, dw))) = (&bias, dbias.as_mut()) {
            let (gh, gw) = (b.gh, b.gw);
            let dh = &mut dh[h * nq * gh..(h + 1) * nq * gh];
            let dw = &mut dw[h * nq * gw..(h + 1) * nq * gw];
            let sums = |((row, dhr), dwr): ((&[f32], &mut [f32]), &mut [f32])| {
                simd(
                    #[inline(always)]
                    || {
                        for (y, chunk) in row.chunks(gw).enumerate() {
                            dhr[y] = sum_f32(chunk);
                            for (a, &g) in dwr.iter_mut().zip(chunk) {
                                *a += g;
                            }
                        }
                    },
                )
            };
            dp.par_chunks(nk)
                .zip(dh.par_chunks_mut(gh))
                .zip(dw.par_chunks_mut(gw))
                .for_each(sums);
        }
        // dQ = scale·dS·K; dK = scale·dSᵀ·Q.
        let ds = Mat::new(&dp, nq, nk);
        gemm(scale, ds, kh, 0.0, &mut dq[qs], nq, d);
        gemm(scale, ds.t(), qh, 0.0, &mut dk[ks], nk, d);
    }
    (dq, dk, dv, dbias)
}

/// `eˣ` in f32, branch-free so that loops over slices vectorise: `x = n·ln 2 + r` with
/// `|r| ≤ ln 2 / 2`, a degree-7 Taylor polynomial for `eʳ` (truncation < 6e-9), and `2ⁿ` built
/// from its exponent bits. Relative error ≤ 2e-7 over the clamped range `[−87, 88]` (test); 0 and
/// `inf` are not reached (softmax and GELU never need them).
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that n·LN2_HI is exact (Cody–Waite).
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and subtracting 1.5·2²³ rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // `n` is an integer in [-126, 127]; `n + 127` as the exponent field of 2ⁿ. The float-to-int
    // conversion goes through the bits of `n + ROUND` (its low mantissa bits hold `n`): a
    // saturating `as` cast would not vectorise.
    let biased = (n + ROUND)
        .to_bits()
        .wrapping_sub(ROUND.to_bits())
        .wrapping_add(127);
    let scale = f32::from_bits(biased << 23);
    p * scale
}

/// `erf(x)` in f32 from the complementary error function of Numerical Recipes (`erfcc`,
/// fractional error < 1.2e-7 everywhere) in f32 arithmetic: absolute error ≤ 4e-7 (test
/// against f64 `erf`).
#[inline(always)]
pub(crate) fn erf_f32(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_2
        + t * (1.000_023_7
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_204
                                + t * (1.488_515_9 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * exp_f32(poly);
    (1.0 - erfc).copysign(x)
}

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// `1/√(2π)`.
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// Exact (erf) GELU `x·Φ(x)` of every value, in parallel.
pub(crate) fn gelu_forward(x: &[f32]) -> Vec<f32> {
    let mut y = x.to_vec();
    let f = |c: &mut [f32]| {
        simd(
            #[inline(always)]
            || {
                for v in c.iter_mut() {
                    *v *= 0.5 * (1.0 + erf_f32(*v * FRAC_1_SQRT_2));
                }
            },
        )
    };
    y.par_chunks_mut(PAR_MIN).for_each(f);
    y
}

/// Gradient of [`gelu_forward`]: `dy · (Φ(x) + x·φ(x))`.
pub(crate) fn gelu_backward(x: &[f32], dy: &[f32]) -> Vec<f32> {
    let mut dx = dy.to_vec();
    dx.par_chunks_mut(PAR_MIN)
        .zip(x.par_chunks(PAR_MIN))
        .for_each(|(g, x)| {
            simd(
                #[inline(always)]
                || {
                    for (g, &x) in g.iter_mut().zip(x) {
                        let cdf = 0.5 * (1.0 + erf_f32(x * FRAC_1_SQRT_2));
                        let pdf = INV_SQRT_2PI * exp_f32(-0.5 * x * x);
                        *g *= cdf + x * pdf;
                    }
                },
            )
        });
    dx
}

/// Column sums of a row-major `rows × cols` matrix.
pub(crate) fn col_sums(a: &[f32], cols: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; cols];
    for row in a.chunks(cols) {
        for (o, &x) in out.iter_mut().zip(row) {
            *o += x;
        }
    }
    out
}

/// The scaled dropout mask of `n` elements: `1/keep` where a uniform draw is below `keep`, else
/// 0. Draw `i` is the high or low half of `splitmix64(seed + (⌊i/2⌋ + 1)·γ)` (γ the golden
/// ratio constant): the same mask for the same seed on any number of threads.
pub(crate) fn dropout_mask(n: usize, keep: f64, seed: u64) -> Vec<f32> {
    use rayon::prelude::*;
    const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
    const CHUNK: usize = 1 << 14;
    let threshold = (keep.clamp(0.0, 1.0) * 4_294_967_296.0) as u64;
    let scale = (1.0 / keep) as f32;
    let mut mask = vec![0.0f32; n];
    mask.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            let first = (c * CHUNK / 2) as u64;
            for (j, pair) in chunk.chunks_mut(2).enumerate() {
                let mut z = seed.wrapping_add((first + j as u64 + 1).wrapping_mul(GAMMA));
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                for (k, m) in pair.iter_mut().enumerate() {
                    let u = if k == 0 { z >> 32 } else { z & 0xFFFF_FFFF };
                    if u < threshold {
                        *m = scale;
                    }
                }
            }
        });
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    /// f32 sums of at most a few dozen terms, in another order.
    const TOL: f32 = 1e-5;

    fn naive_attention(q: &[f32], k: &[f32], v: &[f32], dims: AttnDims, scale: f32) -> Vec<f32> {
        let AttnDims { heads, nq, nk, d } = dims;
        let mut o = vec![0.0; heads * nq * d];
        for h in 0..heads {
            for i in 0..nq {
                let logits: Vec<f32> = (0..nk)
                    .map(|j| {
                        (0..d)
                            .map(|c| q[(h * nq + i) * d + c] * k[(h * nk + j) * d + c])
                            .sum::<f32>()
                            * scale
                    })
                    .collect();
                let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let e: Vec<f32> = logits.iter().map(|x| (x - m).exp()).collect();
                let z: f32 = e.iter().sum();
                for c in 0..d {
                    o[(h * nq + i) * d + c] =
                        (0..nk).map(|j| e[j] / z * v[(h * nk + j) * d + c]).sum();
                }
            }
        }
        o
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    #[test]
    fn attention_forward_equals_the_definition() {
        let dims = AttnDims {
            heads: 3,
            nq: 5,
            nk: 7,
            d: 4,
        };
        let (q, k, v) = (values(60, 1), values(84, 2), values(84, 3));
        let (o, lse) = attention_forward(&q, &k, &v, dims, 0.5);
        let want = naive_attention(&q, &k, &v, dims, 0.5);
        for (a, b) in o.iter().zip(&want) {
            assert!((a - b).abs() < TOL, "{a} vs {b}");
        }
        assert_eq!(lse.len(), 15);
    }

    #[test]
    fn attention_backward_equals_finite_differences() {
        let dims = AttnDims {
            heads: 2,
            nq: 3,
            nk: 4,
            d: 2,
        };
        let scale = 0.7;
        let (q, k, v) = (values(12, 4), values(16, 5), values(16, 6));
        let w = values(12, 7); // loss = Σ w ⊙ o
        let loss = |q: &[f32], k: &[f32], v: &[f32]| -> f64 {
            let (o, _) = attention_forward(q, k, v, dims, scale);
            o.iter().zip(&w).map(|(a, b)| (a * b) as f64).sum()
        };
        let (o, lse) = attention_forward(&q, &k, &v, dims, scale);
        let (dq, dk, dv) = attention_backward(&q, &k, &v, &o, &lse, &w, dims, scale);
        /// Central differences in f32 with step 1e-2: truncation and rounding ~1e-4.
        const FD_TOL: f64 = 2e-3;
        let eps = 1e-2f32;
        for (which, grad) in [(0, &dq), (1, &dk), (2, &dv)] {
            for i in 0..grad.len() {
                let mut bufs = [q.clone(), k.clone(), v.clone()];
                bufs[which][i] += eps;
                let up = loss(&bufs[0], &bufs[1], &bufs[2]);
                bufs[which][i] -= 2.0 * eps;
                let down = loss(&bufs[0], &bufs[1], &bufs[2]);
                let fd = (up - down) / (2.0 * eps as f64);
                assert!(
                    (fd - grad[i] as f64).abs() < FD_TOL,
                    "input {which} index {i}: analytic {} vs numeric {fd}",
                    grad[i]
                );
            }
        }
    }

    #[test]
    fn gemm_equals_the_definition_for_every_layout() {
        /// f32 sums of up to ~300 products of values in [-1, 1].
        const GEMM_TOL: f32 = 1e-4;
        // Sizes past the crate's blocking and threading thresholds, and an empty inner sum.
        for (m, k, n) in [(3, 5, 4), (67, 300, 129), (4, 0, 3)] {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let (a, b) = (values(m * k, 1), values(k * n, 2));
                let at = |i: usize, p: usize| if ta { a[p * m + i] } else { a[i * k + p] };
                let bt = |p: usize, j: usize| if tb { b[j * k + p] } else { b[p * n + j] };
                let ma = if ta {
                    Mat::new(&a, k, m).t()
                } else {
                    Mat::new(&a, m, k)
                };
                let mb = if tb {
                    Mat::new(&b, n, k).t()
                } else {
                    Mat::new(&b, k, n)
                };
                let mut c = values(m * n, 3);
                let c0 = c.clone();
                gemm(0.5, ma, mb, 2.0, &mut c, m, n);
                for i in 0..m {
                    for j in 0..n {
                        let dot: f32 = (0..k).map(|p| at(i, p) * bt(p, j)).sum();
                        let want = 0.5 * dot + 2.0 * c0[i * n + j];
                        let got = c[i * n + j];
                        assert!(
                            (got - want).abs() <= GEMM_TOL,
                            "{m}x{k}x{n} {ta} {tb}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn exp_and_erf_are_accurate() {
        /// The documented bounds of `exp_f32` and `erf_f32`.
        const EXP_REL: f64 = 2e-7;
        const ERF_ABS: f64 = 4e-7;
        let mut worst = (0.0f64, 0.0f64);
        for i in 0..=200_000 {
            // The f32 input itself, so that its rounding is not counted.
            let x = (-87.0 + 175.0 * i as f64 / 200_000.0) as f32 as f64;
            let e = exp_f32(x as f32) as f64;
            let rel = (e - x.exp()).abs() / x.exp();
            worst.0 = worst.0.max(rel);
            let z = (-6.0 + 12.0 * i as f64 / 200_000.0) as f32 as f64;
            worst.1 = worst.1.max((erf_f32(z as f32) as f64 - libm::erf(z)).abs());
        }
        assert!(worst.0 < EXP_REL, "exp relative error {}", worst.0);
        assert!(worst.1 < ERF_ABS, "erf absolute error {}", worst.1);
    }

    #[test]
    fn gelu_backward_equals_finite_differences() {
        let x: Vec<f32> = (0..401).map(|i| -8.0 + i as f32 * 0.04).collect();
        let y = gelu_forward(&x);
        let dx = gelu_backward(&x, &vec![1.0; x.len()]);
        /// Central differences with step 1e-3 in f64 of the f32 function.
        const FD_TOL: f32 = 2e-3;
        for (i, &xi) in x.iter().enumerate() {
            let exact = 0.5 * xi as f64 * (1.0 + libm::erf(xi as f64 / 2f64.sqrt()));
            assert!((y[i] as f64 - exact).abs() < 1e-6, "gelu({xi})");
            let h = 1e-3f32;
            let fd = (gelu_forward(&[xi + h])[0] - gelu_forward(&[xi - h])[0]) / (2.0 * h);
            assert!((fd - dx[i]).abs() < FD_TOL, "gelu'({xi}) {} vs {fd}", dx[i]);
        }
    }
}
