//! 2-D convolutions as one matrix product, for the geometries SAM uses.
//!
//! burn-ndarray's `conv2d` (and its backward) runs a scalar loop for kernels such as SAM's 16×16
//! patch embedding and the 3×3 neck convolution: about a sixth of a `salt_paper` training step
//! on the CPU went there (docs/benchmarks.md). Written as patches × weight matrix, the same
//! convolution is a single GEMM forward and two GEMMs backward on every backend, and autodiff
//! differentiates it through reshape, slice and matmul with no special code.

use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};
use burn::tensor::{backend::Backend, Slice, Tensor};

use crate::precision::{lower, raise};

/// `conv2d(x, weight, bias, options)` through one matmul when the convolution is ungrouped
/// (any kernel, stride, padding and dilation: im2col of strided views); grouped convolutions
/// use burn's `conv2d`. Same result up to the order of the sums.
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
    let plain = options.groups == 1 && xc == ci;
    let patches = plain
        && options.dilation == [1, 1]
        && options.stride == [kh, kw]
        && options.padding == [0, 0];
    if patches && h.is_multiple_of(kh) && w.is_multiple_of(kw) {
        let out = patch_conv_channels_last(x, weight, bias); // [n, h/kh, w/kw, co]
        return out.permute([0, 3, 1, 2]);
    }
    if !plain {
        let y = burn::tensor::module::conv2d(lower(x), lower(weight), bias.map(lower), options);
        return raise(y);
    }
    let [ph, pw] = options.padding;
    let [sh, sw] = options.stride;
    let [dh, dw] = options.dilation;
    let (hp, wp) = (h + 2 * ph, w + 2 * pw);
    let (eh, ew) = (dh * (kh - 1) + 1, dw * (kw - 1) + 1); // dilated kernel extent
    assert!(
        hp >= eh && wp >= ew,
        "convolution of [{n}, {xc}, {h}, {w}] by [{co}, {ci}, {kh}, {kw}] with {options:?}"
    );
    let (oh, ow) = ((hp - eh) / sh + 1, (wp - ew) / sw + 1);
    let one_by_one = kh == 1 && kw == 1 && ph == 0 && pw == 0 && sh == 1 && sw == 1;
    let cols = if one_by_one {
        x.reshape([n, ci, h * w])
    } else {
        let xp = pad_zeros(x, [ph, ph], [pw, pw]);
        // im2col: one strided view per kernel tap, in the weight's (ci, kh, kw) order.
        let taps: Vec<Tensor<B, 5>> = (0..kh)
            .flat_map(|a| (0..kw).map(move |b| (a, b)))
            .map(|(a, b)| {
                let (y0, x0) = (a * dh, b * dw);
                let view = if sh == 1 && sw == 1 {
                    xp.clone().slice([0..n, 0..ci, y0..y0 + oh, x0..x0 + ow])
                } else {
                    xp.clone().slice([
                        Slice::from(0..n),
                        Slice::from(0..ci),
                        Slice::new(
                            y0 as isize,
                            Some((y0 + sh * (oh - 1) + 1) as isize),
                            sh as isize,
                        ),
                        Slice::new(
                            x0 as isize,
                            Some((x0 + sw * (ow - 1) + 1) as isize),
                            sw as isize,
                        ),
                    ])
                };
                view.reshape([n, ci, 1, oh, ow])
            })
            .collect();
        Tensor::cat(taps, 2).reshape([n, ci * kh * kw, oh * ow]) // [n, ci·kh·kw, oh·ow]
    };
    let wm = weight.reshape([1, co, ci * kh * kw]);
    let mut y = raise(crate::fused::matmul(lower(wm), lower(cols))); // [n, co, oh·ow]
    if let Some(b) = bias {
        y = y + b.reshape([1, co, 1]);
    }
    y.reshape([n, co, oh, ow])
}

/// `x` with `top`/`bottom` zero rows and `left`/`right` zero columns.
fn pad_zeros<B: Backend>(
    x: Tensor<B, 4>,
    [top, bottom]: [usize; 2],
    [left, right]: [usize; 2],
) -> Tensor<B, 4> {
    if top + bottom + left + right == 0 {
        return x;
    }
    let [n, c, h, w] = x.dims();
    Tensor::zeros([n, c, h + top + bottom, w + left + right], &x.device())
        .slice_assign([0..n, 0..c, top..top + h, left..left + w], x)
}

/// `conv_transpose2d(x, weight, bias, options)` as a stride-1 convolution through one matmul
/// ([`conv2d_matmul`]): the input with `stride − 1` zeros between its pixels, padded by
/// `dilation·(k − 1) − padding` (plus `padding_out` at the bottom/right), convolved with the
/// flipped kernel. Ungrouped only (else burn's `conv_transpose2d`), and `padding ≤ dilation·(k−1)`.
///
/// # Shapes
/// `x: [n, ci, h, w]`, `weight: [ci, co, kh, kw]` (PyTorch's layout), `bias: [co]` →
/// `[n, co, (h − 1)·s − 2p + d·(kh − 1) + p_out + 1, …]`.
pub fn conv_transpose2d_matmul<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    options: ConvTransposeOptions<2>,
) -> Tensor<B, 4> {
    let [wi, _, kh, kw] = weight.dims();
    let [n, ci, h, w] = x.dims();
    let [ph, pw] = options.padding;
    let [dh, dw] = options.dilation;
    let fits = options.groups == 1
        && wi == ci
        && ph <= dh * (kh - 1)
        && pw <= dw * (kw - 1)
        && options.padding_out[0] < options.stride[0].max(dh)
        && options.padding_out[1] < options.stride[1].max(dw);
    if !fits {
        let y = burn::tensor::module::conv_transpose2d(
            lower(x),
            lower(weight),
            bias.map(lower),
            options,
        );
        return raise(y);
    }
    let [sh, sw] = options.stride;
    let [oph, opw] = options.padding_out;
    // Zero insertion: [n, c, h, 1, w, 1] widened to [n, c, h, s, w, s], cut to (h−1)·s + 1.
    let spread = if sh == 1 && sw == 1 {
        x
    } else {
        let dev = x.device();
        let mut t = x.reshape([n, ci, h, 1, w, 1]);
        if sh > 1 {
            t = Tensor::cat(vec![t, Tensor::zeros([n, ci, h, sh - 1, w, 1], &dev)], 3);
        }
        if sw > 1 {
            t = Tensor::cat(vec![t, Tensor::zeros([n, ci, h, sh, w, sw - 1], &dev)], 5);
        }
        t.reshape([n, ci, h * sh, w * sw]).slice([
            0..n,
            0..ci,
            0..(h - 1) * sh + 1,
            0..(w - 1) * sw + 1,
        ])
    };
    let (th, tw) = (dh * (kh - 1) - ph, dw * (kw - 1) - pw);
    let xp = pad_zeros(spread, [th, th + oph], [tw, tw + opw]);
    // [ci, co, kh, kw] → [co, ci, kh, kw], flipped in space.
    let k = weight.swap_dims(0, 1).flip([2, 3]);
    conv2d_matmul(
        xp,
        k,
        bias,
        ConvOptions::new([1, 1], [0, 0], options.dilation, 1),
    )
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
    /// Weight gradients sum over every output position (hundreds of products) in another order.
    const CONV_GRAD_TOL: f32 = 1e-4;

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
        // Strided with padding (U-Net's downsampling), ResNet's 7×7/2 stem and 1×1/2 shortcut,
        // a dilated 3×3 (DeepLab's ASPP), an odd size that strides do not divide.
        check(
            [1, 2, 7, 7],
            [3, 2, 3, 3],
            ConvOptions::new([2, 2], [1, 1], [1, 1], 1),
            true,
        );
        check(
            [2, 3, 16, 12],
            [4, 3, 7, 7],
            ConvOptions::new([2, 2], [3, 3], [1, 1], 1),
            false,
        );
        check(
            [1, 4, 9, 8],
            [6, 4, 1, 1],
            ConvOptions::new([2, 2], [0, 0], [1, 1], 1),
            false,
        );
        check(
            [1, 3, 11, 10],
            [2, 3, 3, 3],
            ConvOptions::new([1, 1], [2, 2], [2, 2], 1),
            true,
        );
        // Grouped (depthwise): burn's conv2d.
        check(
            [1, 4, 6, 6],
            [4, 1, 3, 3],
            ConvOptions::new([1, 1], [1, 1], [1, 1], 4),
            true,
        );
    }

    #[test]
    fn strided_matmul_convolution_has_burns_gradients() {
        type Ad = burn::backend::Autodiff<TestBackend>;
        let device = Default::default();
        let x = Tensor::<Ad, 4>::random([2, 3, 9, 8], Distribution::Normal(0.0, 1.0), &device)
            .require_grad();
        let w = Tensor::<Ad, 4>::random([4, 3, 3, 3], Distribution::Normal(0.0, 1.0), &device)
            .require_grad();
        let opts = ConvOptions::new([2, 2], [1, 1], [1, 1], 1);
        let g1 = conv2d_matmul(x.clone(), w.clone(), None, opts.clone())
            .sum()
            .backward();
        let g2 = burn::tensor::module::conv2d(x.clone(), w.clone(), None, opts)
            .sum()
            .backward();
        x.grad(&g1).unwrap().into_data().assert_approx_eq::<f32>(
            &x.grad(&g2).unwrap().into_data(),
            Tolerance::absolute(CONV_TOL),
        );
        w.grad(&g1).unwrap().into_data().assert_approx_eq::<f32>(
            &w.grad(&g2).unwrap().into_data(),
            Tolerance::absolute(CONV_GRAD_TOL),
        );
    }

    fn check_transposed(x: [usize; 4], wshape: [usize; 4], opts: ConvTransposeOptions<2>) {
        type Ad = burn::backend::Autodiff<TestBackend>;
        let device = Default::default();
        let x = Tensor::<Ad, 4>::random(x, Distribution::Normal(0.0, 1.0), &device).require_grad();
        let w =
            Tensor::<Ad, 4>::random(wshape, Distribution::Normal(0.0, 1.0), &device).require_grad();
        let b = Tensor::<Ad, 1>::random([wshape[1]], Distribution::Normal(0.0, 1.0), &device)
            .require_grad();
        let want = burn::tensor::module::conv_transpose2d(
            x.clone(),
            w.clone(),
            Some(b.clone()),
            opts.clone(),
        );
        let got = conv_transpose2d_matmul(x.clone(), w.clone(), Some(b.clone()), opts);
        assert_eq!(got.dims(), want.dims());
        got.clone()
            .into_data()
            .assert_approx_eq::<f32>(&want.clone().into_data(), Tolerance::absolute(CONV_TOL));
        let weights = Tensor::<Ad, 4>::random(got.dims(), Distribution::Normal(0.0, 1.0), &device);
        let g1 = (got * weights.clone()).sum().backward();
        let g2 = (want * weights).sum().backward();
        for t in [&x, &w] {
            t.grad(&g1).unwrap().into_data().assert_approx_eq::<f32>(
                &t.grad(&g2).unwrap().into_data(),
                Tolerance::absolute(CONV_GRAD_TOL),
            );
        }
        b.grad(&g1).unwrap().into_data().assert_approx_eq::<f32>(
            &b.grad(&g2).unwrap().into_data(),
            Tolerance::absolute(CONV_GRAD_TOL),
        );
    }

    #[test]
    fn matmul_transposed_convolutions_equal_burns() {
        // MONAI's up-sampling (3×3/2, padding 1, output padding 1), U-Net/UNETR's 2×2/2, a
        // stride-1 3×3, a dilated one.
        check_transposed(
            [2, 3, 5, 4],
            [3, 2, 3, 3],
            ConvTransposeOptions::new([2, 2], [1, 1], [1, 1], [1, 1], 1),
        );
        check_transposed(
            [1, 4, 3, 5],
            [4, 3, 2, 2],
            ConvTransposeOptions::new([2, 2], [0, 0], [0, 0], [1, 1], 1),
        );
        check_transposed(
            [1, 2, 4, 4],
            [2, 3, 3, 3],
            ConvTransposeOptions::new([1, 1], [1, 1], [0, 0], [1, 1], 1),
        );
        check_transposed(
            [1, 2, 4, 3],
            [2, 2, 3, 3],
            ConvTransposeOptions::new([2, 2], [1, 1], [0, 0], [2, 2], 1),
        );
    }
}
