//! The S-SAM adapter (SVD only): `W′ = U · diag(ReLU(α ⊙ S + β)) · Vᵀ` over all `k` singular
//! values. Rebuilt as `W + U·diag(ReLU(α ⊙ S + β) − S)·Vᵀ`, like [`crate::SaltAdapter`].

use burn::module::{Module, Param};
use burn::tensor::activation::relu;
use burn::tensor::{backend::Backend, Tensor};

use crate::salt::{scale_cols_matmul, tensor1, tensor2};
use crate::svd::SvdFactors;

/// S-SAM adapter state of one layer.
#[derive(Module, Debug)]
pub struct SvdAdapter<B: Backend> {
    /// `α`, `[k]`, init ones.
    pub scale: Param<Tensor<B, 1>>,
    /// `β`, `[k]`, init zeros.
    pub shift: Param<Tensor<B, 1>>,
    /// Frozen `U`, `[rows, k]`.
    u: Tensor<B, 2>,
    /// Frozen `S`, `[k]`.
    s: Tensor<B, 1>,
    /// Frozen `Vᵀ`, `[k, cols]`.
    vt: Tensor<B, 2>,
}

impl<B: Backend> SvdAdapter<B> {
    /// An S-SAM adapter over `factors`; `W′ = W` at initialisation.
    pub fn new(factors: &SvdFactors, device: &B::Device) -> Self {
        let (rows, cols, k) = (factors.rows, factors.cols, factors.k);
        Self {
            scale: Param::from_tensor(Tensor::ones([k], device)),
            shift: Param::from_tensor(Tensor::zeros([k], device)),
            u: tensor2(factors.u_cols(0..k), [rows, k], device),
            s: tensor1(factors.s_range(0..k), device),
            vt: tensor2(factors.vt_rows(0..k), [k, cols], device),
        }
    }

    /// `U·diag(ReLU(α ⊙ S + β) − S)·Vᵀ`, `[rows, cols]`.
    pub fn delta(&self) -> Tensor<B, 2> {
        let sig = relu(self.scale.val() * self.s.clone() + self.shift.val()) - self.s.clone();
        scale_cols_matmul(self.u.clone(), sig, self.vt.clone())
    }
}
