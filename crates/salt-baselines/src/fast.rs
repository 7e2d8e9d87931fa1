//! burn's convolution modules through salt-core's GEMM convolutions.
//!
//! burn-ndarray's `conv2d` / `conv_transpose2d` (and their backward passes) run scalar loops:
//! a U-Net training step at 512 spent 93 % of its time there. [`FastConv::fast`] computes the
//! same convolution as `salt_core::conv2d_matmul` / `conv_transpose2d_matmul` (im2col, one
//! matmul; grouped convolutions keep burn's kernel), on every backend, from the module's own
//! weights and options, so checkpoints and parameter paths are untouched.

use burn::nn::conv::{Conv2d, ConvTranspose2d};
use burn::nn::PaddingConfig2d;
use burn::tensor::backend::Backend;
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};
use burn::tensor::Tensor;

/// A convolution module's forward through one matmul.
pub trait FastConv<B: Backend> {
    /// The module's `forward`, computed as a GEMM.
    ///
    /// # Shapes
    /// As the module's `forward`.
    fn fast(&self, x: Tensor<B, 4>) -> Tensor<B, 4>;
}

impl<B: Backend> FastConv<B> for Conv2d<B> {
    fn fast(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [kh, kw] = self.kernel_size;
        let padding = match &self.padding {
            PaddingConfig2d::Valid => Some([0, 0]),
            PaddingConfig2d::Explicit(top, left, bottom, right)
                if top == bottom && left == right =>
            {
                Some([*top, *left])
            }
            // burn's "same" for odd kernels at stride 1: `(k − 1) / 2`, as burn computes it
            // (without the dilation).
            PaddingConfig2d::Same if self.stride == [1, 1] && kh % 2 == 1 && kw % 2 == 1 => {
                Some([(kh - 1) / 2, (kw - 1) / 2])
            }
            _ => None,
        };
        let Some(padding) = padding else {
            return self.forward(x);
        };
        salt_core::conv2d_matmul(
            x,
            self.weight.val(),
            self.bias.as_ref().map(|b| b.val()),
            ConvOptions::new(self.stride, padding, self.dilation, self.groups),
        )
    }
}

impl<B: Backend> FastConv<B> for ConvTranspose2d<B> {
    fn fast(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        salt_core::conv_transpose2d_matmul(
            x,
            self.weight.val(),
            self.bias.as_ref().map(|b| b.val()),
            ConvTransposeOptions::new(
                self.stride,
                self.padding,
                self.padding_out,
                self.dilation,
                self.groups,
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::nn::conv::{Conv2dConfig, ConvTranspose2dConfig};
    use burn::tensor::{Distribution, Tolerance};

    type TestBackend = NdArray<f32>;

    /// f32 sums of up to ci·kh·kw products in another order.
    const FAST_TOL: f32 = 1e-4;

    #[test]
    fn fast_equals_the_modules_forward() {
        let device = Default::default();
        let x =
            Tensor::<TestBackend, 4>::random([2, 4, 9, 8], Distribution::Normal(0.0, 1.0), &device);
        let convs = [
            Conv2dConfig::new([4, 6], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)),
            Conv2dConfig::new([4, 6], [3, 3]).with_padding(PaddingConfig2d::Same),
            Conv2dConfig::new([4, 6], [3, 3])
                .with_stride([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)),
            Conv2dConfig::new([4, 6], [3, 3])
                .with_dilation([2, 2])
                .with_padding(PaddingConfig2d::Same),
            Conv2dConfig::new([4, 4], [3, 3])
                .with_groups(4)
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)),
            Conv2dConfig::new([4, 6], [2, 2]).with_stride([2, 2]),
        ];
        for c in convs {
            let conv = c.init::<TestBackend>(&device);
            conv.fast(x.clone()).into_data().assert_approx_eq::<f32>(
                &conv.forward(x.clone()).into_data(),
                Tolerance::absolute(FAST_TOL),
            );
        }
        for c in [
            ConvTranspose2dConfig::new([4, 3], [3, 3])
                .with_stride([2, 2])
                .with_padding([1, 1])
                .with_padding_out([1, 1]),
            ConvTranspose2dConfig::new([4, 3], [2, 2]).with_stride([2, 2]),
        ] {
            let conv = c.init::<TestBackend>(&device);
            conv.fast(x.clone()).into_data().assert_approx_eq::<f32>(
                &conv.forward(x.clone()).into_data(),
                Tolerance::absolute(FAST_TOL),
            );
        }
    }
}
