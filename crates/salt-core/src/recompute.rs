//! Attention whose backward recomputes the probabilities, on any backend: the GPU backends'
//! training path (issue: attention memory at batch 16).
//!
//! burn 0.21 has no fused attention under autodiff, and its composition
//! `softmax(scale·q·kᵀ)·v` keeps the `[heads, n, n]` logits and probabilities of every block
//! alive until backward: at batch 16, 1024 tokens and 12 heads that is ~0.8 GB per tensor, per
//! block. [`attention_recompute`] is one autodiff node that saves q, k, v, the output and one
//! log-sum-exp per row (`O(n·d)`), and rebuilds `p = exp(scale·q·kᵀ − lse)` one block at a
//! time in backward, so at most one block's `n × n` tensors exist at once. The price is one
//! more `q·kᵀ` matmul per block in backward. Its maths is the CPU kernel's
//! ([`crate::kernels::attention_backward`]) in burn tensor operations of the inner backend, so
//! it runs wherever burn does, and in the thread's [`crate::precision`] (matmuls reduced,
//! softmax statistics in f32).
//!
//! `SALT_ATTENTION=composed` switches the GPU backends back to burn's composition (to measure
//! one against the other); the CPU backend always uses its kernels.

use std::sync::OnceLock;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{backend::Backend, Tensor, TensorPrimitive};

use crate::precision::{lower, raise};

/// Whether the GPU backends train attention through [`attention_recompute`] (the default) or
/// burn's composition (`SALT_ATTENTION=composed`).
pub fn recompute_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        let v = std::env::var("SALT_ATTENTION").unwrap_or_default();
        let on = !v.eq_ignore_ascii_case("composed");
        tracing::debug!(recompute = on, "attention under autodiff");
        on
    })
}

fn wrap<I: Backend, const D: usize>(p: FloatTensor<I>) -> Tensor<I, D> {
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

/// `(p, lse)`: the probabilities `softmax(scale·q·kᵀ)` `[h, nq, nk]` and the log-sum-exp of
/// each row of the scaled logits `[h, nq, 1]`, in f32.
fn probabilities<I: Backend>(
    q: Tensor<I, 3>,
    k: Tensor<I, 3>,
    scale: f64,
) -> (Tensor<I, 3>, Tensor<I, 3>) {
    let logits = raise(lower(q.mul_scalar(scale)).matmul(lower(k).swap_dims(1, 2)));
    let max = logits.clone().max_dim(2); // [h, nq, 1]
    let lse = max.clone() + (logits.clone() - max).exp().sum_dim(2).log();
    ((logits - lse.clone()).exp(), lse)
}

#[derive(Debug, Clone)]
struct Saved<I: Backend> {
    q: FloatTensor<I>,
    k: FloatTensor<I>,
    v: FloatTensor<I>,
    o: FloatTensor<I>,
    lse: FloatTensor<I>,
    scale: f64,
}

#[derive(Debug)]
struct RecomputeBackward;

impl<I: Backend> Backward<I, 3> for RecomputeBackward {
    type State = Saved<I>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let s = ops.state;
        let d_o: Tensor<I, 3> = wrap(grads.consume::<I>(&ops.node)); // [h, nq, d]
        let (q, k, v, o): (Tensor<I, 3>, Tensor<I, 3>, Tensor<I, 3>, Tensor<I, 3>) =
            (wrap(s.q), wrap(s.k), wrap(s.v), wrap(s.o));
        let lse: Tensor<I, 3> = wrap(s.lse);
        // p = exp(scale·q·kᵀ − lse), as in the forward.
        let logits =
            raise(lower(q.clone().mul_scalar(s.scale)).matmul(lower(k.clone()).swap_dims(1, 2)));
        let p = (logits - lse).exp(); // [h, nq, nk]
        let [pq, pk, pv] = ops.parents;
        if let Some(node) = pv {
            // dv = pᵀ·dO
            let dv = raise(lower(p.clone()).swap_dims(1, 2).matmul(lower(d_o.clone())));
            grads.register::<I>(node.id, dv.into_primitive().tensor());
        }
        if pq.is_none() && pk.is_none() {
            return;
        }
        // ds = p ∘ (dO·vᵀ − rowsum(dO ∘ o)): the softmax backward, times scale below.
        let dp = raise(lower(d_o.clone()).matmul(lower(v).swap_dims(1, 2))); // [h, nq, nk]
        let delta = (d_o * o).sum_dim(2); // [h, nq, 1]
        let ds = lower(p * (dp - delta)); // [h, nq, nk]
        if let Some(node) = pq {
            let dq = raise(ds.clone().matmul(lower(k))).mul_scalar(s.scale);
            grads.register::<I>(node.id, dq.into_primitive().tensor());
        }
        if let Some(node) = pk {
            let dk = raise(ds.swap_dims(1, 2).matmul(lower(q))).mul_scalar(s.scale);
            grads.register::<I>(node.id, dk.into_primitive().tensor());
        }
    }
}

/// `softmax(scale·q·kᵀ)·v` over independent heads as one autodiff node that saves `O(n·d)`
/// and recomputes the probabilities in backward.
///
/// # Shapes
/// `q: [heads, nq, d]`, `k, v: [heads, nk, d]` → `[heads, nq, d]`.
pub fn attention_recompute<I: Backend>(
    q: Tensor<Autodiff<I>, 3>,
    k: Tensor<Autodiff<I>, 3>,
    v: Tensor<Autodiff<I>, 3>,
    scale: f64,
) -> Tensor<Autodiff<I>, 3> {
    let (q, k, v) = (
        q.into_primitive().tensor(),
        k.into_primitive().tensor(),
        v.into_primitive().tensor(),
    );
    let forward = |qp: FloatTensor<I>, kp: FloatTensor<I>, vp: FloatTensor<I>| {
        let (qi, ki, vi): (Tensor<I, 3>, Tensor<I, 3>, Tensor<I, 3>) =
            (wrap(qp), wrap(kp), wrap(vp));
        let (p, lse) = probabilities(qi.clone(), ki.clone(), scale);
        let o = raise(lower(p).matmul(lower(vi.clone())));
        (qi, ki, vi, o, lse)
    };
    let out = match RecomputeBackward
        .prepare::<NoCheckpointing>([q.node.clone(), k.node.clone(), v.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (qi, ki, vi, o, lse) = forward(q.primitive, k.primitive, v.primitive);
            let state = Saved {
                q: qi.into_primitive().tensor(),
                k: ki.into_primitive().tensor(),
                v: vi.into_primitive().tensor(),
                o: o.clone().into_primitive().tensor(),
                lse: lse.into_primitive().tensor(),
                scale,
            };
            prep.finish(state, o.into_primitive().tensor())
        }
        OpsKind::UnTracked(prep) => {
            let (_, _, _, o, _) = forward(q.primitive, k.primitive, v.primitive);
            prep.finish(o.into_primitive().tensor())
        }
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::activation::softmax;
    use burn::tensor::{Distribution, Tolerance};

    type Ad = Autodiff<NdArray<f32>>;

    /// f32 sums of up to a few hundred products in another order (as `fused`'s tests).
    const RECOMPUTE_TOL: f32 = 1e-4;

    fn rand(shape: [usize; 3], seed: u64) -> Tensor<Ad, 3> {
        let device = Default::default();
        Ad::seed(&device, seed);
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), &device).require_grad()
    }

    #[test]
    fn forward_and_gradients_equal_burns_composition() {
        // Cross-attention shapes (nq ≠ nk) so that transposes cannot hide.
        let (q, k, v) = (rand([3, 7, 5], 1), rand([3, 9, 5], 2), rand([3, 9, 5], 3));
        let scale = 0.5;
        let weight =
            Tensor::<Ad, 3>::random([3, 7, 5], Distribution::Normal(0.0, 1.0), &q.device());
        let ours = attention_recompute(q.clone(), k.clone(), v.clone(), scale);
        let composed = softmax(
            q.clone()
                .mul_scalar(scale)
                .matmul(k.clone().swap_dims(1, 2)),
            2,
        )
        .matmul(v.clone());
        ours.clone().into_data().assert_approx_eq::<f32>(
            &composed.clone().into_data(),
            Tolerance::absolute(RECOMPUTE_TOL),
        );
        let g1 = (ours * weight.clone()).sum().backward();
        let g2 = (composed * weight).sum().backward();
        for t in [&q, &k, &v] {
            let (a, b) = (t.grad(&g1).unwrap(), t.grad(&g2).unwrap());
            a.into_data()
                .assert_approx_eq::<f32>(&b.into_data(), Tolerance::absolute(RECOMPUTE_TOL));
        }
    }

    #[test]
    fn only_tracked_inputs_get_gradients() {
        let device = Default::default();
        let q = rand([2, 4, 3], 4);
        let k = Tensor::<Ad, 3>::random([2, 4, 3], Distribution::Normal(0.0, 1.0), &device);
        let v = Tensor::<Ad, 3>::random([2, 4, 3], Distribution::Normal(0.0, 1.0), &device);
        let g = attention_recompute(q.clone(), k.clone(), v.clone(), 1.0)
            .sum()
            .backward();
        assert!(q.grad(&g).is_some());
        assert!(k.grad(&g).is_none() && v.grad(&g).is_none());
        // Untracked entirely: a plain forward.
        let out = attention_recompute(k.clone(), k.clone(), v.clone(), 1.0);
        assert_eq!(out.dims(), [2, 4, 3]);
    }
}
