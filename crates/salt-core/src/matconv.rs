//! 2-D convolutions as one matrix product, for the geometries SAM uses.
//!
//! burn-ndarray's `conv2d` (and its backward) runs a scalar loop for kernels such as SAM's 16×16
//! patch embedding and the 3×3 neck convolution: about a sixth of a `salt_paper` training step
//! on the CPU went there (docs/benchmarks.md). Written as patches × weight matrix, the same
//! convolution is a single GEMM forward and two GEMMs backward on every backend, and autodiff
//! differentiates it through reshape, slice and matmul with no special code.

use burn::tensor::ops::ConvOptions;
use burn::tensor::{backend::Backend, Tensor};

use crate::precision::{lower, raise};

/// `conv2d(x, weight, bias, options)` through one matmul when the geometry allows it (groups 1,
/// dilation 1, and either stride = kernel with no padding, or stride 1); otherwise burn's
/// `conv2d`. Same result up to the order of the sums.
///
/// # Shapes
/// `x: [n, ci, h, w]`, `weight: [co, ci, kh, kw]`, `bias: [co]` → `[n, co, h′, w′]`.
pub fn conv2d_matmul<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    options: ConvOptions<2>,
) -> Tensor<B, 4> {
    let [co, ci, kh, kw] = weight.dims();
    let [n, xc, h, w] = x.dims();
    let plain = options.groups == 1 && options.dilation == [1, 1] && xc == ci;
    let patches = plain && options.stride == [kh, kw] && options.padding == [0, 0];
    let dense = plain && options.stride == [1, 1];
    if patches && h.is_multiple_of(kh) && w.is_multiple_of(kw) {
        let out = patch_conv_channels_last(x, weight, bias); // [n, h/kh, w/kw, co]
        return out.permute([0, 3, 1, 2]);
    }
    if !dense {
        let y = burn::tensor::module::conv2d(lower(x), lower(weight), bias.map(lower), options);
        return raise(y);
    }
    let [ph, pw] = options.padding;
    let (oh, ow) = (h + 2 * ph + 1 - kh, w + 2 * pw + 1 - kw);
    let cols = if kh == 1 && kw == 1 && ph == 0 && pw == 0 {
        x.reshape([n, ci, h * w])
    } else {
        let xp = if ph > 0 || pw > 0 {
            Tensor::zeros([n, ci, h + 2 * ph, w + 2 * pw], &x.device())
                .slice_assign([0..n, 0..ci, ph..ph + h, pw..pw + w], x)
        } else {
            x
        };
        // im2col: one shifted view per kernel tap, in the weight's (ci, kh, kw) order.
        let taps: Vec<Tensor<B, 5>> = (0..kh)
            .flat_map(|a| (0..kw).map(move |b| (a, b)))
            .map(|(a, b)| {
                xp.clone()
                    .slice([0..n, 0..ci, a..a + oh, b..b + ow])
                    .reshape([n, ci, 1, oh, ow])
            })
            .collect();
        Tensor::cat(taps, 2).reshape([n, ci * kh * kw, oh * ow]) // [n, ci·kh·kw, oh·ow]
    };
    let wm = weight.reshape([1, co, ci * kh * kw]);
    let mut y = raise(lower(wm).matmul(lower(cols))); // [n, co, oh·ow]
    if let Some(b) = bias {
        y = y + b.reshape([1, co, 1]);
    }
    y.reshape([n, co, oh, ow])
}

/// A convolution whose stride equals its kernel and has no padding (a ViT patch embedding), as
/// one matmul, with the output channels last.
///
/// # Shapes
/// `x: [n, ci, h, w]` (h, w multiples of kh, kw), `weight: [co, ci, kh, kw]` →
/// `[n, h/kh, w/kw, co]`.
///
/// # Panics
/// If h or w is not a multiple of the kernel, or the channels differ.
pub fn patch_conv_channels_last<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, 4> {
    let [co, ci, kh, kw] = weight.dims();
    let [n, xc, h, w] = x.dims();
    assert!(
        xc == ci && h.is_multiple_of(kh) && w.is_multiple_of(kw),
        "patch convolution of [{n}, {xc}, {h}, {w}] by [{co}, {ci}, {kh}, {kw}]"
    );
    let (gh, gw) = (h / kh, w / kw);
    let patches = x
        .reshape([n, ci, gh, kh, gw, kw])
        .permute([0, 2, 4, 1, 3, 5]) // [n, gh, gw, ci, kh, kw]
        .reshape([n * gh * gw, ci * kh * kw]);
    let wt = weight.reshape([co, ci * kh * kw]).transpose(); // [ci·kh·kw, co]
    let y = burn::tensor::module::linear(lower(patches), lower(wt), bias.map(lower));
    raise(y).reshape([n, gh, gw, co])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tolerance};

    type TestBackend = burn::backend::NdArray<f32>;

    /// f32 sums of up to ci·kh·kw = 48 products in another order.
    const CONV_TOL: f32 = 1e-5;

    fn check(x: [usize; 4], wshape: [usize; 4], opts: ConvOptions<2>, bias: bool) {
        let device = Default::default();
        let x = Tensor::<TestBackend, 4>::random(x, Distribution::Normal(0.0, 1.0), &device);
        let w = Tensor::<TestBackend, 4>::random(wshape, Distribution::Normal(0.0, 1.0), &device);
        let b = bias.then(|| {
            Tensor::<TestBackend, 1>::random([wshape[0]], Distribution::Normal(0.0, 1.0), &device)
        });
        let want = burn::tensor::module::conv2d(x.clone(), w.clone(), b.clone(), opts.clone());
        let got = conv2d_matmul(x, w, b, opts);
        assert_eq!(got.dims(), want.dims());
        got.into_data()
            .assert_approx_eq::<f32>(&want.into_data(), Tolerance::absolute(CONV_TOL));
    }

    #[test]
    fn matmul_convolutions_equal_burns() {
        // Patch embedding (stride = kernel), 1×1, 3×3 "same", 2×2 without padding.
        check(
            [2, 3, 8, 12],
            [5, 3, 4, 4],
            ConvOptions::new([4, 4], [0, 0], [1, 1], 1),
            true,
        );
        check(
            [2, 6, 5, 7],
            [4, 6, 1, 1],
            ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
            false,
        );
        check(
            [1, 4, 6, 5],
            [3, 4, 3, 3],
            ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
            false,
        );
        check(
            [2, 2, 5, 5],
            [3, 2, 2, 2],
            ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
            true,
        );
        // Not covered: strided with padding falls back to burn.
        check(
            [1, 2, 7, 7],
            [3, 2, 3, 3],
            ConvOptions::new([2, 2], [1, 1], [1, 1], 1),
            true,
        );
    }
}
