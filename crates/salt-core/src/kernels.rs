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
    /// Distance between the starts of two stored rows (`cols` for a dense matrix; more for a
    /// block of columns of a wider matrix).
    pub ld: usize,
    /// Use the transpose (a strided view: nothing is copied).
    pub t: bool,
}

impl<'a> Mat<'a> {
    pub(crate) fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            ld: cols,
            t: false,
        }
    }

    /// `rows × cols` values whose rows start `ld` apart (`ld ≥ cols`): a block of columns of a
    /// wider row-major matrix, e.g. one head's queries inside a packed `[n, 3, heads, d]` buffer.
    pub(crate) fn strided(data: &'a [f32], rows: usize, cols: usize, ld: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            ld,
            t: false,
        }
    }

    /// Whether `data` holds every element the view addresses.
    fn fits(&self) -> bool {
        self.ld >= self.cols
            && (self.rows == 0 || (self.rows - 1) * self.ld + self.cols <= self.data.len())
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
        let ld = self.ld as isize;
        if self.t {
            (1, ld)
        } else {
            (ld, 1)
        }
    }
}

/// `c = alpha · a · b + beta · c`, `c` row-major `m × n`.
///
/// # Panics
/// When a buffer's length or an operand's shape does not match `m × k × n` (a bug in the caller).
pub(crate) fn gemm(
    alpha: f32,
    a: Mat<'_>,
    b: Mat<'_>,
    beta: f32,
    c: &mut [f32],
    m: usize,
    n: usize,
) {
    assert_eq!(c.len(), m * n, "output buffer matches its shape");
    gemm_strided(alpha, a, b, beta, c, n, m, n, Par::Rayon);
}

/// Threads for one [`gemm_strided`].
#[derive(Clone, Copy)]
pub(crate) enum Par {
    /// Split over rayon's pool (one large product).
    Rayon,
    /// On the calling thread (many small products, already one per rayon task).
    Serial,
}

/// [`gemm`] into an `m × n` block of a wider row-major matrix: row `i` of `c` starts at `i·ldc`.
///
/// # Panics
/// When a buffer is too short for the elements its view addresses, or an operand's shape does
/// not match `m × k × n` (a bug in the caller).
#[allow(unsafe_code, clippy::too_many_arguments)]
pub(crate) fn gemm_strided(
    alpha: f32,
    a: Mat<'_>,
    b: Mat<'_>,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
    m: usize,
    n: usize,
    par: Par,
) {
    let ((am, k), (bk, bn)) = (a.shape(), b.shape());
    assert!(
        am == m && bk == k && bn == n,
        "gemm shapes: a {am}x{k}, b {bk}x{bn}, c {m}x{n}"
    );
    assert!(a.fits(), "lhs buffer holds its {}x{} view", a.rows, a.cols);
    assert!(b.fits(), "rhs buffer holds its {}x{} view", b.rows, b.cols);
    assert!(
        ldc >= n && (m == 0 || (m - 1) * ldc + n <= c.len()),
        "output buffer holds its {m}x{n} view"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // An empty sum: `c = beta·c`.
        for row in c.chunks_mut(ldc).take(m) {
            row[..n]
                .iter_mut()
                .for_each(|v| *v = if beta == 0.0 { 0.0 } else { beta * *v });
        }
        return;
    }
    let ((a_rs, a_cs), (b_rs, b_cs)) = (a.strides(), b.strides());
    let parallelism = match par {
        Par::Rayon => gemm::Parallelism::Rayon(0),
        Par::Serial => gemm::Parallelism::None,
    };
    // SAFETY: every element the three views address lies inside its buffer (checked above:
    // `(rows − 1)·ld + cols ≤ len` for each, with unit column stride), and `c` is borrowed
    // mutably and so aliases neither input. The crate's convention is
    // `dst = alpha·dst + beta·lhs·rhs`: our `beta` is its `alpha`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
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
            parallelism,
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

impl<'a> RelBias<'a> {
    /// The two terms of logits row `at` (`head · nq + query`).
    fn row(&self, at: usize) -> (&'a [f32], &'a [f32]) {
        let (gh, gw) = (self.gh, self.gw);
        (
            &self.h[at * gh..(at + 1) * gh],
            &self.w[at * gw..(at + 1) * gw],
        )
    }
}

/// Adds head `h`'s relative-position bias to its `nq × (gh·gw)` logits `s`.
fn add_rel_bias(s: &mut [f32], b: &RelBias<'_>, h: usize, nq: usize) {
    let add = |(i, row): (usize, &mut [f32])| {
        let (bh, bw) = b.row(h * nq + i);
        add_grid_bias(row, bh, bw);
    };
    s.par_chunks_mut(b.gh * b.gw).enumerate().for_each(add);
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
    let dense = |data, n| Heads {
        data,
        seq_stride: n * d,
        head_stride: 0,
        ld: d,
    };
    let shape = HeadsShape {
        seqs: heads,
        heads: 1,
        nq,
        nk,
        d,
    };
    let bias = match bias {
        Some(b) => Bias::Given(b),
        None => Bias::None,
    };
    attention_heads(dense(q, nq), dense(k, nk), dense(v, nk), shape, scale, bias)
}

/// Queries, keys or values of every head of an attention call inside one buffer: head `h` of
/// sequence `s` is the `n × d` view starting at `s·seq_stride + h·head_stride`, rows `ld` apart.
#[derive(Clone, Copy)]
pub(crate) struct Heads<'a> {
    pub data: &'a [f32],
    pub seq_stride: usize,
    pub head_stride: usize,
    pub ld: usize,
}

impl<'a> Heads<'a> {
    /// Rows `r0..r0 + rows` of head `h` of sequence `s`, `d` wide.
    fn rows(&self, s: usize, h: usize, r0: usize, rows: usize, d: usize) -> Mat<'a> {
        let start = s * self.seq_stride + h * self.head_stride + r0 * self.ld;
        Mat::strided(&self.data[start..], rows, d, self.ld)
    }
}

/// Sizes of [`attention_heads`]: `seqs` independent sequences (images, windows) of `heads` heads,
/// `nq` queries and `nk` keys each, head width `d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeadsShape {
    pub seqs: usize,
    pub heads: usize,
    pub nq: usize,
    pub nk: usize,
    pub d: usize,
}

/// SAM's relative-position tables gathered per query row: `rh[y, ky, :]` (`[gh, gh, d]`) and
/// `rw[x, kx, :]` (`[gw, gw, d]`); the bias of query `(y, x)` and key `(ky, kx)` is
/// `q·rh[y, ky] + q·rw[x, kx]` with the unscaled query (queries and keys on one `gh × gw` grid).
#[derive(Clone, Copy)]
pub(crate) struct RelTables<'a> {
    pub rh: &'a [f32],
    pub rw: &'a [f32],
    pub gh: usize,
    pub gw: usize,
}

/// The additive bias of the scaled logits.
#[derive(Clone, Copy)]
pub(crate) enum Bias<'a> {
    None,
    /// Precomputed terms, indexed by `s·heads + h`.
    Given(RelBias<'a>),
    /// Computed from the queries and the gathered tables, row by row.
    FromQueries(RelTables<'a>),
}

/// The largest logits block one task holds (4 MiB of f32: it stays in the last-level cache).
const BLOCK_VALUES: usize = 1 << 20;

thread_local! {
    /// Each rayon thread's logits block, reused by every task it runs (no fresh allocation, and
    /// so no page faults, per head).
    static LOGITS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `o = softmax(scale·q·kᵀ + bias)·v` for every head of every sequence; returns `o` as
/// `[seqs, nq, heads·d]` (head `h` in columns `h·d..`: for one head per sequence, the plain
/// `[seqs, nq, d]`) and the log-sum-exp of every logits row as `[seqs, nq, heads]`.
///
/// The work is split into tasks of one sequence and a block of query rows (all its heads), run
/// on rayon's threads with single-threaded GEMMs: many small windows and one large global
/// attention keep both cores busy alike, and a task's logits block is its thread's reused
/// scratch, at most [`BLOCK_VALUES`] values.
pub(crate) fn attention_heads(
    q: Heads<'_>,
    k: Heads<'_>,
    v: Heads<'_>,
    shape: HeadsShape,
    scale: f32,
    bias: Bias<'_>,
) -> (Vec<f32>, Vec<f32>) {
    let HeadsShape {
        seqs,
        heads,
        nq,
        nk,
        d,
    } = shape;
    if let Bias::FromQueries(t) = &bias {
        assert!(
            t.gh * t.gw == nq && nq == nk,
            "relative-position grid {}x{} for {nq} queries and {nk} keys",
            t.gh,
            t.gw
        );
        assert!(t.rh.len() == t.gh * t.gh * d && t.rw.len() == t.gw * t.gw * d);
    }
    let width = heads * d;
    let mut o = vec![0.0f32; seqs * nq * width];
    let mut lse = vec![0.0f32; seqs * nq * heads];
    if o.is_empty() || nk == 0 {
        return (o, lse);
    }
    // Query rows per task: enough tasks for every thread several times over, a logits block
    // that fits in cache, and no block so thin that the GEMMs lose their efficiency.
    let tasks_per_seq = (4 * rayon::current_num_threads()).div_ceil(seqs);
    let rows = nq
        .div_ceil(tasks_per_seq)
        .max(32)
        .min((BLOCK_VALUES / nk).max(1))
        .min(nq);
    let blocks = nq.div_ceil(rows);
    let task = |(t, (ob, lb)): (usize, (&mut [f32], &mut [f32]))| {
        let (s, r0) = (t / blocks, (t % blocks) * rows);
        let m = ob.len() / width;
        LOGITS.with(|cell| {
            let mut logits = cell.borrow_mut();
            if logits.len() < m * nk {
                logits.resize(m * nk, 0.0);
            }
            let p = &mut logits[..m * nk];
            for h in 0..heads {
                let qh = q.rows(s, h, r0, m, d);
                let kh = k.rows(s, h, 0, nk, d);
                gemm_strided(scale, qh, kh.t(), 0.0, p, nk, m, nk, Par::Serial);
                match &bias {
                    Bias::None => {}
                    Bias::Given(b) => {
                        let head = s * heads + h;
                        for (i, row) in p.chunks_mut(nk).enumerate() {
                            let (bh, bw) = b.row(head * nq + r0 + i);
                            add_grid_bias(row, bh, bw);
                        }
                    }
                    Bias::FromQueries(t) => {
                        let mut bh = vec![0.0f32; t.gh];
                        let mut bw = vec![0.0f32; t.gw];
                        for (i, row) in p.chunks_mut(nk).enumerate() {
                            let (y, x) = ((r0 + i) / t.gw, (r0 + i) % t.gw);
                            let qi = &qh.data[i * qh.ld..i * qh.ld + d];
                            rel_terms(qi, &t.rh[y * t.gh * d..(y + 1) * t.gh * d], &mut bh);
                            rel_terms(qi, &t.rw[x * t.gw * d..(x + 1) * t.gw * d], &mut bw);
                            add_grid_bias(row, &bh, &bw);
                        }
                    }
                }
                for (i, row) in p.chunks_mut(nk).enumerate() {
                    lb[i * heads + h] = simd(
                        #[inline(always)]
                        || softmax_row(row),
                    );
                }
                let vh = v.rows(s, h, 0, nk, d);
                gemm_strided(
                    1.0,
                    Mat::new(p, m, nk),
                    vh,
                    0.0,
                    &mut ob[h * d..],
                    width,
                    m,
                    d,
                    Par::Serial,
                );
            }
        })
    };
    // Task `t` owns rows `r0..r0 + rows` of sequence `s`: one contiguous block of `o` and `lse`.
    let sizes = |per_row: usize| {
        (0..seqs * blocks).map(move |t| (nq - (t % blocks) * rows).min(rows) * per_row)
    };
    let o_parts = split_sizes(&mut o, sizes(width));
    let l_parts = split_sizes(&mut lse, sizes(heads));
    o_parts
        .into_par_iter()
        .zip(l_parts)
        .enumerate()
        .for_each(task);
    (o, lse)
}

/// Splits `buf` into consecutive parts of the given sizes (their sum is `buf.len()`).
fn split_sizes(buf: &mut [f32], sizes: impl Iterator<Item = usize>) -> Vec<&mut [f32]> {
    let mut rest = buf;
    let mut parts = Vec::new();
    for n in sizes {
        let (part, tail) = std::mem::take(&mut rest).split_at_mut(n);
        parts.push(part);
        rest = tail;
    }
    debug_assert!(rest.is_empty());
    parts
}

/// `out[j] = q · table[j, :]` for the `out.len()` rows of `table` (`d = q.len()` wide).
#[inline(always)]
fn rel_terms(q: &[f32], table: &[f32], out: &mut [f32]) {
    simd(
        #[inline(always)]
        || {
            for (o, row) in out.iter_mut().zip(table.chunks_exact(q.len())) {
                let mut acc = [0.0f32; 16];
                let (qc, rc) = (q.chunks_exact(16), row.chunks_exact(16));
                let tail: f32 = qc
                    .remainder()
                    .iter()
                    .zip(rc.remainder())
                    .map(|(a, b)| a * b)
                    .sum();
                for (a, b) in qc.zip(rc) {
                    for ((s, &x), &y) in acc.iter_mut().zip(a).zip(b) {
                        *s += x * y;
                    }
                }
                *o = acc.iter().sum::<f32>() + tail;
            }
        },
    )
}

/// Adds `bh[y] + bw[x]` to the logit of key `y·gw + x` of one row.
#[inline(always)]
fn add_grid_bias(row: &mut [f32], bh: &[f32], bw: &[f32]) {
    simd(
        #[inline(always)]
        || {
            for (chunk, &hy) in row.chunks_mut(bw.len()).zip(bh) {
                for (v, &x) in chunk.iter_mut().zip(bw) {
                    *v += hy + x;
                }
            }
        },
    )
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
    fn strided_gemm_reads_and_writes_only_its_blocks() {
        // a: columns 2..5 of a 4x7 matrix; b (transposed): columns 1..4 of a 6x9 matrix;
        // c: columns 3..9 of a 4x10 matrix, whose other columns must stay as they were.
        let (m, k, n) = (4, 3, 6);
        let (abuf, bbuf) = (values(4 * 7, 5), values(6 * 9, 6));
        let mut c = values(4 * 10, 7);
        let c0 = c.clone();
        let a = Mat::strided(&abuf[2..], m, k, 7);
        let b = Mat::strided(&bbuf[1..], n, k, 9).t();
        gemm_strided(1.0, a, b, 1.0, &mut c[3..], 10, m, n, Par::Serial);
        for i in 0..m {
            for j in 0..10 {
                let want = if (3..3 + n).contains(&j) {
                    let jj = j - 3;
                    c0[i * 10 + j]
                        + (0..k)
                            .map(|p| abuf[i * 7 + 2 + p] * bbuf[jj * 9 + 1 + p])
                            .sum::<f32>()
                } else {
                    c0[i * 10 + j]
                };
                assert!((c[i * 10 + j] - want).abs() < TOL, "({i}, {j})");
            }
        }
    }

    #[test]
    fn packed_attention_with_relative_tables_equals_the_definition() {
        // Two sequences of a token grid, 2 heads of width 5, packed per token as
        // [q (heads × d), k, v] the way a fused qkv projection writes them. The 8x10 grid has
        // 80 queries: several row blocks per sequence, the last one shorter.
        for (gh, gw) in [(3, 4), (8, 10)] {
            packed_attention_case(gh, gw);
        }
    }

    fn packed_attention_case(gh: usize, gw: usize) {
        let (seqs, heads, d) = (2, 2, 5);
        let n = gh * gw;
        let width = heads * d;
        let qkv = values(seqs * n * 3 * width, 11);
        let (rh, rw) = (values(gh * gh * d, 12), values(gw * gw * d, 13));
        let scale = 0.4;
        let part = |i: usize| Heads {
            data: &qkv[i * width..],
            seq_stride: n * 3 * width,
            head_stride: d,
            ld: 3 * width,
        };
        let shape = HeadsShape {
            seqs,
            heads,
            nq: n,
            nk: n,
            d,
        };
        let tables = RelTables {
            rh: &rh,
            rw: &rw,
            gh,
            gw,
        };
        let (o, lse) = attention_heads(
            part(0),
            part(1),
            part(2),
            shape,
            scale,
            Bias::FromQueries(tables),
        );
        assert_eq!((o.len(), lse.len()), (seqs * n * width, seqs * n * heads));
        let at = |s: usize, tok: usize, which: usize, h: usize, c: usize| {
            qkv[(s * n + tok) * 3 * width + which * width + h * d + c]
        };
        for s in 0..seqs {
            for h in 0..heads {
                for i in 0..n {
                    let (y, x) = (i / gw, i % gw);
                    let logits: Vec<f32> = (0..n)
                        .map(|j| {
                            let (ky, kx) = (j / gw, j % gw);
                            let dot = |f: &dyn Fn(usize) -> f32| (0..d).map(f).sum::<f32>();
                            scale * dot(&|c| at(s, i, 0, h, c) * at(s, j, 1, h, c))
                                + dot(&|c| at(s, i, 0, h, c) * rh[(y * gh + ky) * d + c])
                                + dot(&|c| at(s, i, 0, h, c) * rw[(x * gw + kx) * d + c])
                        })
                        .collect();
                    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let z: f32 = logits.iter().map(|l| (l - m).exp()).sum();
                    let got_lse = lse[(s * n + i) * heads + h];
                    assert!((got_lse - (m + z.ln())).abs() < TOL, "lse {s} {h} {i}");
                    for c in 0..d {
                        let want: f32 = (0..n)
                            .map(|j| (logits[j] - m).exp() / z * at(s, j, 2, h, c))
                            .sum();
                        let got = o[(s * n + i) * width + h * d + c];
                        assert!(
                            (got - want).abs() < TOL,
                            "o {s} {h} {i} {c}: {got} vs {want}"
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
