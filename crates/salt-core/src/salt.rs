//! The SALT adapter: `W′ = U · ReLU(Σ′) · Vᵀ`.
//!
//! Σ′ is `k × k` block diagonal: `diag(α ⊙ S[:r] + β)` top-left, `diag(S[r:]) + X·Y` bottom-right
//! (dense), zeros elsewhere; the ReLU acts on every entry. `U`, `S`, `Vᵀ` are frozen,
//! non-persistent tensors (recomputed from the base weight, never saved); `α` (`scale`),
//! `β` (`shift`), `X` (`x`) and `Y` (`y`) train.
//!
//! The weight is rebuilt once per forward as `W + U·(ReLU(Σ′) − Σ)·Vᵀ`: identical to
//! `U·ReLU(Σ′)·Vᵀ` for an exact SVD, but free of the f32 reconstruction error of `U·Σ·Vᵀ`, so an
//! adapter that leaves Σ′ = Σ reproduces the base layer bit for bit.

use burn::module::{Module, Param};
use burn::tensor::activation::relu;
use burn::tensor::{backend::Backend, Tensor, TensorData};
use rand::Rng;
use rand_distr::{Distribution as _, Normal, Uniform};

use crate::config::SaltInit;
use crate::fused::matmul;
use crate::svd::SvdFactors;

/// Standard deviation of the reference initialisation of `X` and `Y`.
pub const REFERENCE_INIT_STD: f64 = 0.01;

/// SALT adapter state of one layer (see the module docs).
#[derive(Module, Debug)]
pub struct SaltAdapter<B: Backend> {
    /// `α`, `[r]`, init ones. `None` when `r = 0`.
    pub scale: Option<Param<Tensor<B, 1>>>,
    /// `β`, `[r]`, init zeros. `None` when `r = 0`.
    pub shift: Option<Param<Tensor<B, 1>>>,
    /// `X`, `[k − r, q]`. `None` when `r = k`.
    pub x: Option<Param<Tensor<B, 2>>>,
    /// `Y`, `[q, k − r]`. `None` when `r = k`.
    pub y: Option<Param<Tensor<B, 2>>>,
    /// Frozen `U[:, :r]`, `[rows, r]`.
    u_top: Option<Tensor<B, 2>>,
    /// Frozen `S[:r]`, `[r]`.
    s_top: Option<Tensor<B, 1>>,
    /// Frozen `Vᵀ[:r, :]`, `[r, cols]`.
    vt_top: Option<Tensor<B, 2>>,
    /// Frozen `U[:, r:]`, `[rows, k − r]`.
    u_rest: Option<Tensor<B, 2>>,
    /// Frozen `diag(S[r:])`, `[k − r, k − r]`.
    s_rest: Option<Tensor<B, 2>>,
    /// Frozen `Vᵀ[r:, :]`, `[k − r, cols]`.
    vt_rest: Option<Tensor<B, 2>>,
}

pub(crate) fn tensor2<B: Backend>(
    data: Vec<f32>,
    shape: [usize; 2],
    device: &B::Device,
) -> Tensor<B, 2> {
    Tensor::from_data(TensorData::new(data, shape), device)
}

pub(crate) fn tensor1<B: Backend>(data: Vec<f32>, device: &B::Device) -> Tensor<B, 1> {
    let n = data.len();
    Tensor::from_data(TensorData::new(data, [n]), device)
}

fn normal_matrix<R: Rng>(rng: &mut R, rows: usize, cols: usize, std: f64) -> Vec<f32> {
    let dist = Normal::new(0.0, std).expect("finite std");
    (0..rows * cols).map(|_| dist.sample(rng) as f32).collect()
}

impl<B: Backend> SaltAdapter<B> {
    /// A SALT adapter over `factors` with `r` adapted singular values and rank-`q` `X·Y`.
    ///
    /// # Panics
    /// If `r > k` (checked by [`crate::inject`] with a clear error first).
    pub fn new<R: Rng>(
        factors: &SvdFactors,
        r: usize,
        q: usize,
        init: SaltInit,
        rng: &mut R,
        device: &B::Device,
    ) -> Self {
        let (rows, cols, k) = (factors.rows, factors.cols, factors.k);
        assert!(r <= k, "svd rank {r} exceeds k = {k}");
        let rest = k - r;
        let top = r > 0;
        let (x, y) = if rest > 0 {
            let (x, y) = match init {
                SaltInit::Reference => (
                    normal_matrix(rng, rest, q, REFERENCE_INIT_STD),
                    normal_matrix(rng, q, rest, REFERENCE_INIT_STD),
                ),
                SaltInit::Zero => {
                    // kaiming-uniform (a = √5, as torch's Linear) over fan-in q.
                    let bound = 1.0 / (q as f64).sqrt();
                    let dist = Uniform::new(-bound, bound).expect("finite bound");
                    let x = (0..rest * q).map(|_| dist.sample(rng) as f32).collect();
                    (x, vec![0.0; q * rest])
                }
            };
            (
                Some(Param::from_tensor(tensor2(x, [rest, q], device))),
                Some(Param::from_tensor(tensor2(y, [q, rest], device))),
            )
        } else {
            (None, None)
        };
        let s_rest = (rest > 0).then(|| {
            let mut diag = vec![0.0f32; rest * rest];
            for i in 0..rest {
                diag[i * rest + i] = factors.s[r + i] as f32;
            }
            tensor2(diag, [rest, rest], device)
        });
        Self {
            scale: top.then(|| Param::from_tensor(Tensor::ones([r], device))),
            shift: top.then(|| Param::from_tensor(Tensor::zeros([r], device))),
            x,
            y,
            u_top: top.then(|| tensor2(factors.u_cols(0..r), [rows, r], device)),
            s_top: top.then(|| tensor1(factors.s_range(0..r), device)),
            vt_top: top.then(|| tensor2(factors.vt_rows(0..r), [r, cols], device)),
            u_rest: (rest > 0).then(|| tensor2(factors.u_cols(r..k), [rows, rest], device)),
            s_rest,
            vt_rest: (rest > 0).then(|| tensor2(factors.vt_rows(r..k), [rest, cols], device)),
        }
    }

    /// `U·(ReLU(Σ′) − Σ)·Vᵀ`, `[rows, cols]`: what SALT adds to the base weight.
    pub fn delta(&self) -> Tensor<B, 2> {
        let top = match (
            &self.scale,
            &self.shift,
            &self.u_top,
            &self.s_top,
            &self.vt_top,
        ) {
            (Some(a), Some(b), Some(u), Some(s), Some(vt)) => {
                let sig = relu(a.val() * s.clone() + b.val()) - s.clone(); // [r]
                Some(scale_cols_matmul(u.clone(), sig, vt.clone()))
            }
            _ => None,
        };
        let rest = match (&self.x, &self.y, &self.u_rest, &self.s_rest, &self.vt_rest) {
            (Some(x), Some(y), Some(u), Some(s), Some(vt)) => {
                let m = relu(s.clone() + matmul(x.val(), y.val())) - s.clone(); // [k−r, k−r]
                Some(chain_matmul(u.clone(), m, vt.clone()))
            }
            _ => None,
        };
        match (top, rest) {
            (Some(a), Some(b)) => a + b,
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => unreachable!("k >= 1 always leaves a top or a rest block"),
        }
    }

    /// Number of trainable values: `2r + 2(k − r)q`.
    pub fn num_trainable(&self) -> usize {
        self.num_params()
    }
}

/// `(u · diag(d)) · vt` for `u: [m, n]`, `d: [n]`, `vt: [n, p]`.
pub(crate) fn scale_cols_matmul<B: Backend>(
    u: Tensor<B, 2>,
    d: Tensor<B, 1>,
    vt: Tensor<B, 2>,
) -> Tensor<B, 2> {
    matmul(u * d.unsqueeze_dim::<2>(0), vt)
}

/// `a · m · b` in the cheaper association order.
pub(crate) fn chain_matmul<B: Backend>(
    a: Tensor<B, 2>,
    m: Tensor<B, 2>,
    b: Tensor<B, 2>,
) -> Tensor<B, 2> {
    let [rows, _] = a.dims();
    let [_, cols] = b.dims();
    // (a·m)·b costs rows·n·n + rows·n·cols; a·(m·b) costs n·n·cols + rows·n·cols.
    if rows <= cols {
        matmul(matmul(a, m), b)
    } else {
        matmul(a, matmul(m, b))
    }
}
