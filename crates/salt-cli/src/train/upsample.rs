//! Differentiable bilinear resize as two matrix products.
//!
//! burn 0.21's ndarray backend has no backward pass for bilinear interpolation, so training
//! upsamples the decoder's low-resolution logits with `A_h · X · A_wᵀ`, where `A_h`, `A_w` hold
//! PyTorch's bilinear weights (`align_corners = false`, no antialiasing). This is exactly
//! `F.interpolate(..., mode="bilinear", align_corners=False)`, and differentiable on every backend.

use burn::tensor::{backend::Backend, Tensor, TensorData};

/// `[out, inp]` bilinear interpolation weights, `align_corners = false`.
pub fn bilinear_weights(out: usize, inp: usize) -> Vec<f32> {
    let mut a = vec![0f32; out * inp];
    let scale = inp as f64 / out as f64;
    for o in 0..out {
        let src = ((o as f64 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(inp - 1);
        let i1 = (i0 + 1).min(inp - 1);
        let l1 = src - i0 as f64;
        a[o * inp + i0] += (1.0 - l1) as f32;
        a[o * inp + i1] += l1 as f32;
    }
    a
}

/// Bilinear resize of `x` to `[size_h, size_w]`.
///
/// # Shapes
/// `x: [n, c, h, w]` → `[n, c, size_h, size_w]`.
pub fn upsample_bilinear<B: Backend>(
    x: Tensor<B, 4>,
    [size_h, size_w]: [usize; 2],
) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    let device = x.device();
    let ah = Tensor::<B, 2>::from_data(
        TensorData::new(bilinear_weights(size_h, h), [size_h, h]),
        &device,
    );
    let awt = Tensor::<B, 2>::from_data(
        TensorData::new(bilinear_weights(size_w, w), [size_w, w]),
        &device,
    )
    .transpose();
    let x = x.reshape([n * c, h, w]);
    let rows = ah.unsqueeze::<3>().expand([n * c, size_h, h]).matmul(x); // [nc, H, w]
    let out = rows.matmul(awt.unsqueeze::<3>().expand([n * c, w, size_w])); // [nc, H, W]
    out.reshape([n, c, size_h, size_w])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::module::interpolate;
    use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

    type TestBackend = NdArray<f32>;

    /// Same weights, different summation order.
    const INTERP_TOL: f32 = 1e-5;

    #[test]
    fn equals_burn_bilinear_forward() {
        let d = Default::default();
        let v: Vec<f32> = (0..2 * 3 * 5 * 4)
            .map(|i| ((i * 31 % 23) as f32) / 7.0 - 1.5)
            .collect();
        let x = Tensor::<TestBackend, 4>::from_data(TensorData::new(v, [2, 3, 5, 4]), &d);
        for size in [[20, 16], [7, 9], [5, 4], [3, 2]] {
            let ours = upsample_bilinear(x.clone(), size);
            let opts = InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(false);
            let theirs = interpolate(x.clone(), size, opts);
            let a: Vec<f32> = ours.into_data().into_vec().unwrap();
            let b: Vec<f32> = theirs.into_data().into_vec().unwrap();
            let diff = a
                .iter()
                .zip(&b)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0, f32::max);
            assert!(diff < INTERP_TOL, "{size:?}: {diff}");
        }
    }

    #[test]
    fn weights_by_hand_and_gradients_flow() {
        // 2 → 4 with align_corners = false: sources -0.25→0, 0.25, 0.75, 1.25→(1, clamped).
        assert_eq!(
            bilinear_weights(4, 2),
            vec![1.0, 0.0, 0.75, 0.25, 0.25, 0.75, 0.0, 1.0]
        );
        let d = Default::default();
        let x = Tensor::<Autodiff<TestBackend>, 4>::ones([1, 1, 2, 2], &d).require_grad();
        let g = upsample_bilinear(x.clone(), [4, 4]).sum().backward();
        let gx: Vec<f32> = x.grad(&g).unwrap().into_data().into_vec().unwrap();
        // Each input pixel receives its column sums: (1 + .75 + .25)² = 4.
        assert_eq!(gx, vec![4.0; 4]);
    }
}
