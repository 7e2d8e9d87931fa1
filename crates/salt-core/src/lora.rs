//! The LoRA adapter: `y = W·x + b + scale · up(down(dropout(x)))`.
//!
//! `down` is `[r, cols]` drawn from `N(0, (1/r)²)` (the S-SAM/SALT code's LoRA), `up` is
//! `[rows, r]` of zeros, so the layer starts as the base layer. For a convolution, `down` is the
//! `[r, ci·kh·kw]` matrix view of a `kh × kw` convolution and `up` a 1×1 convolution (peft's
//! layout).

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::{backend::Backend, Tensor};
use rand::Rng;
use rand_distr::{Distribution as _, Normal};

use crate::salt::tensor2;

/// LoRA adapter state of one layer.
#[derive(Module, Debug)]
pub struct LoraAdapter<B: Backend> {
    /// `[r, cols]`.
    pub down: Param<Tensor<B, 2>>,
    /// `[rows, r]`.
    pub up: Param<Tensor<B, 2>>,
    /// Output scale of the branch.
    pub scale: f64,
    /// Dropout on the branch input (active only in training on an autodiff backend).
    pub dropout: Dropout,
}

impl<B: Backend> LoraAdapter<B> {
    /// A LoRA adapter for a `rows × cols` weight.
    pub fn new<R: Rng>(
        rows: usize,
        cols: usize,
        rank: usize,
        scale: f64,
        dropout: f64,
        rng: &mut R,
        device: &B::Device,
    ) -> Self {
        let dist = Normal::new(0.0, 1.0 / rank as f64).expect("finite std");
        let down: Vec<f32> = (0..rank * cols).map(|_| dist.sample(rng) as f32).collect();
        Self {
            down: Param::from_tensor(tensor2(down, [rank, cols], device)),
            up: Param::from_tensor(Tensor::zeros([rows, rank], device)),
            scale,
            dropout: DropoutConfig::new(dropout).init(),
        }
    }

    /// `scale · up · down`, `[rows, cols]`: what LoRA adds to the weight.
    pub fn delta(&self) -> Tensor<B, 2> {
        self.up.val().matmul(self.down.val()).mul_scalar(self.scale)
    }

    /// The branch output for a linear layer: `scale · (dropout(x) · downᵀ) · upᵀ`.
    ///
    /// # Shapes
    /// `x: [..., cols]` → `[..., rows]`.
    pub fn forward_linear<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let h = crate::fused::linear(
            crate::fused::dropout(x, self.dropout.prob),
            self.down.val(),
            None,
        );
        let y = crate::fused::linear(h, self.up.val(), None);
        if self.scale == 1.0 {
            y
        } else {
            y.mul_scalar(self.scale)
        }
    }
}
