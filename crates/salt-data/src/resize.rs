//! Image resizing that reproduces Pillow bit for bit, plus the float variants used for masks and
//! the inverse mapping from model space back to the original image.
//!
//! SAM's `ResizeLongestSide.apply_image` resizes with `PIL.Image.resize((w, h), BILINEAR)`, which is
//! *not* textbook bilinear interpolation: Pillow convolves with a triangle filter whose support is
//! stretched by the downscale factor (antialiasing), normalises the weights, rounds them to 22-bit
//! fixed point and runs a horizontal pass, then a vertical pass, rounding to 8 bits after each
//! pass. [`resize_rgb8`] follows `libImaging/Resample.c` step by step so that the model sees the
//! same pixels as the Python reference (checked against Pillow fixtures in `tests/`).
//!
//! Layouts: all buffers are row-major, channels interleaved (`[y][x][c]`).

/// Number of fractional bits of Pillow's fixed-point coefficients (`32 - 8 - 2`).
const PRECISION_BITS: u32 = 22;

/// Support (half-width) of Pillow's bilinear (triangle) filter.
const BILINEAR_SUPPORT: f64 = 1.0;

fn bilinear_filter(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

/// Convolution weights of one output axis, as Pillow's `precompute_coeffs` computes them.
struct Coeffs {
    /// Maximum taps per output sample.
    ksize: usize,
    /// Per output sample: first input index and number of taps.
    bounds: Vec<(usize, usize)>,
    /// `out_size * ksize` normalised weights (unused taps are 0).
    weights: Vec<f64>,
}

fn precompute_coeffs(in_size: usize, out_size: usize) -> Coeffs {
    // Pillow: in0 = 0, in1 = in_size (floats), scale = (in1 - in0) / out_size.
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = BILINEAR_SUPPORT * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0.0f64; out_size * ksize];
    let ss = 1.0 / filterscale;
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        // `(int)` in C truncates toward zero, as `as i64` does.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let taps = xmax.saturating_sub(xmin);
        let k = &mut weights[xx * ksize..xx * ksize + ksize];
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(taps) {
            let w = bilinear_filter((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        if ww != 0.0 {
            for kx in k.iter_mut().take(taps) {
                *kx /= ww;
            }
        }
        bounds.push((xmin, taps));
    }
    Coeffs {
        ksize,
        bounds,
        weights,
    }
}

/// Pillow's `normalize_coeffs_8bpc`: weights to fixed point, rounded half away from zero.
fn fixed_point(weights: &[f64]) -> Vec<i32> {
    let one = f64::from(1u32 << PRECISION_BITS);
    weights
        .iter()
        .map(|&w| {
            if w < 0.0 {
                (-0.5 + w * one) as i32
            } else {
                (0.5 + w * one) as i32
            }
        })
        .collect()
}

/// Pillow's `clip8`: drop the fraction bits and clamp to `0..=255`.
fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One 8-bit convolution pass along x (`horizontal`) or y, Pillow's `ImagingResample*_8bpc`.
/// Accumulates in `i32` exactly as Pillow does (bilinear weights are non-negative, so the sum
/// stays below `255 · 2^22 + 2^21 < 2^31`).
fn pass_u8(
    src: &[u8],
    w: usize,
    h: usize,
    channels: usize,
    coeffs: &Coeffs,
    horizontal: bool,
) -> Vec<u8> {
    let k = fixed_point(&coeffs.weights);
    let half = 1i32 << (PRECISION_BITS - 1);
    if horizontal {
        let out_w = coeffs.bounds.len();
        let mut out = vec![0u8; out_w * h * channels];
        let mut acc = vec![0i32; channels];
        for (src_row, out_row) in src
            .chunks_exact(w * channels)
            .zip(out.chunks_exact_mut(out_w * channels))
        {
            for (xx, &(start, taps)) in coeffs.bounds.iter().enumerate() {
                let kk = &k[xx * coeffs.ksize..xx * coeffs.ksize + taps];
                acc.fill(half);
                let pixels = &src_row[start * channels..(start + taps) * channels];
                for (px, &kt) in pixels.chunks_exact(channels).zip(kk) {
                    for (a, &v) in acc.iter_mut().zip(px) {
                        *a += i32::from(v) * kt;
                    }
                }
                for (o, &a) in out_row[xx * channels..(xx + 1) * channels]
                    .iter_mut()
                    .zip(&acc)
                {
                    *o = clip8(i64::from(a));
                }
            }
        }
        out
    } else {
        let row_len = w * channels;
        let out_h = coeffs.bounds.len();
        let mut out = vec![0u8; row_len * out_h];
        let mut acc = vec![0i32; row_len];
        for (yy, &(start, taps)) in coeffs.bounds.iter().enumerate() {
            let kk = &k[yy * coeffs.ksize..yy * coeffs.ksize + taps];
            acc.fill(half);
            for (t, &kt) in kk.iter().enumerate() {
                let row = &src[(start + t) * row_len..(start + t + 1) * row_len];
                for (a, &v) in acc.iter_mut().zip(row) {
                    *a += i32::from(v) * kt;
                }
            }
            for (o, &a) in out[yy * row_len..(yy + 1) * row_len].iter_mut().zip(&acc) {
                *o = clip8(i64::from(a));
            }
        }
        out
    }
}

fn coeffs_index(horizontal: bool, xx: usize, yy: usize) -> usize {
    if horizontal {
        xx
    } else {
        yy
    }
}

/// One float convolution pass, Pillow's `ImagingResample*_32bpc` for mode `F` (weights in f64,
/// no rounding, result stored as f32).
fn pass_f32(src: &[f32], w: usize, h: usize, coeffs: &Coeffs, horizontal: bool) -> Vec<f32> {
    let (out_w, out_h) = if horizontal {
        (coeffs.bounds.len(), h)
    } else {
        (w, coeffs.bounds.len())
    };
    let mut out = vec![0f32; out_w * out_h];
    for yy in 0..out_h {
        for xx in 0..out_w {
            let o = coeffs_index(horizontal, xx, yy);
            let (start, taps) = coeffs.bounds[o];
            let kk = &coeffs.weights[o * coeffs.ksize..o * coeffs.ksize + taps];
            let mut acc = 0.0f64;
            for (t, &kt) in kk.iter().enumerate() {
                let (sx, sy) = if horizontal {
                    (start + t, yy)
                } else {
                    (xx, start + t)
                };
                acc += f64::from(src[sy * w + sx]) * kt;
            }
            out[yy * out_w + xx] = acc as f32;
        }
    }
    out
}

fn check_buffer(len: usize, w: usize, h: usize, channels: usize, new_w: usize, new_h: usize) {
    assert!(channels > 0, "resize: channels must be at least 1");
    assert!(
        w > 0 && h > 0 && new_w > 0 && new_h > 0,
        "resize: sizes must be non-zero"
    );
    assert_eq!(
        len,
        w * h * channels,
        "resize: buffer length != w * h * channels"
    );
}

/// Resizes an 8-bit image exactly as Pillow's `Image.resize((new_w, new_h), Image.BILINEAR)`.
///
/// `src` is `h` rows of `w` pixels of `channels` interleaved bytes (1 = grey `L`, 3 = `RGB`; any
/// count works, each channel independently — which is what Pillow does for `L` and `RGB`, not for
/// `RGBA`, which it premultiplies). The horizontal pass runs first, then the vertical pass; a pass
/// whose size does not change is skipped, as in Pillow.
///
/// # Panics
/// If `src.len() != w * h * channels`, a size is 0 or `channels` is 0 (contract violations).
pub fn resize_rgb8(
    src: &[u8],
    w: usize,
    h: usize,
    channels: usize,
    new_w: usize,
    new_h: usize,
) -> Vec<u8> {
    check_buffer(src.len(), w, h, channels, new_w, new_h);
    let mut buf = std::borrow::Cow::Borrowed(src);
    let mut cur_w = w;
    if new_w != w {
        buf = pass_u8(&buf, w, h, channels, &precompute_coeffs(w, new_w), true).into();
        cur_w = new_w;
    }
    if new_h != h {
        buf = pass_u8(
            &buf,
            cur_w,
            h,
            channels,
            &precompute_coeffs(h, new_h),
            false,
        )
        .into();
    }
    buf.into_owned()
}

/// Resizes a single-channel float image exactly as Pillow does for mode `F` with `BILINEAR`
/// (antialiased triangle filter, weights in f64, no rounding). This is the "bilinear-soft" mask
/// resize: a 0/1 mask becomes a soft mask in `[0, 1]` with the same geometry as the image.
///
/// # Panics
/// If `src.len() != w * h` or a size is 0.
pub fn resize_f32_bilinear(
    src: &[f32],
    w: usize,
    h: usize,
    new_w: usize,
    new_h: usize,
) -> Vec<f32> {
    check_buffer(src.len(), w, h, 1, new_w, new_h);
    let mut buf = std::borrow::Cow::Borrowed(src);
    let mut cur_w = w;
    if new_w != w {
        buf = pass_f32(&buf, w, h, &precompute_coeffs(w, new_w), true).into();
        cur_w = new_w;
    }
    if new_h != h {
        buf = pass_f32(&buf, cur_w, h, &precompute_coeffs(h, new_h), false).into();
    }
    buf.into_owned()
}

/// Source index of each output sample for Pillow's `NEAREST` resize (`ImagingScaleAffine`):
/// the sample position starts at `scale / 2` and is advanced by `scale` per pixel (accumulated in
/// f64 as Pillow does, so the rare ties at exact .0 land on the same side), then truncated.
fn nearest_indices(in_size: usize, out_size: usize) -> Vec<usize> {
    let scale = in_size as f64 / out_size as f64;
    let mut pos = scale * 0.5;
    let mut idx = Vec::with_capacity(out_size);
    for _ in 0..out_size {
        idx.push((pos as usize).min(in_size - 1));
        pos += scale;
    }
    idx
}

/// Nearest-neighbour resize with Pillow's `NEAREST` sampling (pixel centres, no antialiasing). For
/// masks it keeps labels exact (no soft edges).
///
/// # Panics
/// If `src.len() != w * h * channels`, a size is 0 or `channels` is 0.
pub fn resize_nearest<T: Copy>(
    src: &[T],
    w: usize,
    h: usize,
    channels: usize,
    new_w: usize,
    new_h: usize,
) -> Vec<T> {
    check_buffer(src.len(), w, h, channels, new_w, new_h);
    let xs = nearest_indices(w, new_w);
    let ys = nearest_indices(h, new_h);
    let mut out = Vec::with_capacity(new_w * new_h * channels);
    for &sy in &ys {
        for &sx in &xs {
            let p = (sy * w + sx) * channels;
            out.extend_from_slice(&src[p..p + channels]);
        }
    }
    out
}

/// Target `(new_h, new_w)` of SAM's `ResizeLongestSide.get_preprocess_shape`: the longest side
/// becomes `target`, the other `int(x * scale + 0.5)` with `scale = target / max(h, w)` (f64, as
/// Python computes it).
///
/// # Panics
/// If `h` or `w` is 0.
pub fn longest_side_size(h: usize, w: usize, target: usize) -> (usize, usize) {
    assert!(h > 0 && w > 0, "longest_side_size: empty image");
    let scale = target as f64 / h.max(w) as f64;
    let new_h = (h as f64 * scale + 0.5) as usize;
    let new_w = (w as f64 * scale + 0.5) as usize;
    (new_h.max(1), new_w.max(1))
}

/// Copies an image into the top-left corner of a `size_w × size_h` canvas filled with `fill`
/// (SAM pads bottom/right with zeros).
///
/// # Panics
/// If `src.len() != w * h * channels` or the image is larger than the canvas.
pub fn pad_bottom_right<T: Copy>(
    src: &[T],
    w: usize,
    h: usize,
    channels: usize,
    size_w: usize,
    size_h: usize,
    fill: T,
) -> Vec<T> {
    assert_eq!(
        src.len(),
        w * h * channels,
        "pad: buffer length != w * h * channels"
    );
    assert!(
        w <= size_w && h <= size_h,
        "pad: image {w}x{h} larger than canvas {size_w}x{size_h}"
    );
    let mut out = vec![fill; size_w * size_h * channels];
    for y in 0..h {
        let row = &src[y * w * channels..(y + 1) * w * channels];
        out[y * size_w * channels..y * size_w * channels + w * channels].copy_from_slice(row);
    }
    out
}

/// Bilinear interpolation as PyTorch's `F.interpolate(mode="bilinear", align_corners=False)`
/// (no antialiasing): what SAM's `postprocess_masks` uses to bring logits back to the image.
///
/// # Panics
/// If `src.len() != w * h` or a size is 0.
pub fn interpolate_bilinear_f32(
    src: &[f32],
    w: usize,
    h: usize,
    new_w: usize,
    new_h: usize,
) -> Vec<f32> {
    check_buffer(src.len(), w, h, 1, new_w, new_h);
    // PyTorch: src = max((dst + 0.5) * in / out - 0.5, 0); i1 = min(i0 + 1, in - 1).
    let axis = |in_size: usize, out_size: usize| -> Vec<(usize, usize, f32)> {
        let scale = in_size as f32 / out_size as f32;
        (0..out_size)
            .map(|d| {
                let s = ((d as f32 + 0.5) * scale - 0.5).max(0.0);
                let i0 = (s as usize).min(in_size - 1);
                let i1 = (i0 + 1).min(in_size - 1);
                (i0, i1, s - i0 as f32)
            })
            .collect()
    };
    let xs = axis(w, new_w);
    let ys = axis(h, new_h);
    let mut out = Vec::with_capacity(new_w * new_h);
    for &(y0, y1, ly) in &ys {
        for &(x0, x1, lx) in &xs {
            let top = src[y0 * w + x0] * (1.0 - lx) + src[y0 * w + x1] * lx;
            let bottom = src[y1 * w + x0] * (1.0 - lx) + src[y1 * w + x1] * lx;
            out.push(top * (1.0 - ly) + bottom * ly);
        }
    }
    out
}

/// Inverse of "resize longest side + pad bottom/right": takes a `model_size × model_size` map
/// (logits or probabilities), crops the `resized_h × resized_w` top-left block that holds the
/// image, and interpolates it bilinearly (PyTorch `align_corners=False`, as SAM's
/// `postprocess_masks`) to `orig_h × orig_w`.
///
/// # Panics
/// If `src.len() != model_size²` or the resized block is larger than the model size.
pub fn to_original_size(
    src: &[f32],
    model_size: usize,
    resized: (usize, usize),
    original: (usize, usize),
) -> Vec<f32> {
    let (rh, rw) = resized;
    let (oh, ow) = original;
    assert_eq!(
        src.len(),
        model_size * model_size,
        "to_original_size: buffer is not model_size²"
    );
    assert!(
        rh <= model_size && rw <= model_size,
        "to_original_size: resized block exceeds model"
    );
    let mut crop = Vec::with_capacity(rh * rw);
    for y in 0..rh {
        crop.extend_from_slice(&src[y * model_size..y * model_size + rw]);
    }
    interpolate_bilinear_f32(&crop, rw, rh, ow, oh)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// f32 rounding slack for hand-computed float cases.
    const FLOAT_TOL: f32 = 1e-6;

    #[test]
    fn same_size_is_identity() {
        let src: Vec<u8> = (0..5 * 3 * 3).map(|v| (v * 7 % 256) as u8).collect();
        assert_eq!(resize_rgb8(&src, 5, 3, 3, 5, 3), src);
    }

    #[test]
    fn halving_averages_pairs() {
        // 4 -> 2: scale 2, support 2, center 1.0 -> taps x=0..3 with weights 1/4*(0.5+... ); by
        // hand: filter((x - 1 + 0.5) / 2) for x = 0,1,2 = 0.75, 0.75, 0.25 -> normalised 3/7,3/7,1/7.
        let src = [0u8, 70, 140, 210];
        let out = resize_rgb8(&src, 4, 1, 1, 2, 1);
        // (0*3 + 70*3 + 140) / 7 = 50; second: center 3.0, taps x=1..3 (xmax clamp 4):
        // filter((x-3+0.5)/2): x=1 0.25, x=2 0.75, x=3 0.75 -> (70 + 420 + 630) / 7 = 160.
        assert_eq!(out, vec![50, 160]);
    }

    #[test]
    fn longest_side_matches_sam() {
        // SAM: 565x584 (DRIVE) to 1024: scale = 1024/584, w = int(565*scale + 0.5) = 991.
        assert_eq!(longest_side_size(584, 565, 1024), (1024, 991));
        assert_eq!(longest_side_size(300, 300, 512), (512, 512));
        assert_eq!(longest_side_size(3, 7, 512), (219, 512));
    }

    #[test]
    fn interpolate_matches_torch_by_hand() {
        // 2 -> 4 along x: src positions -0.25(->0), 0.25, 0.75, 1.25(->i0=1)
        let out = interpolate_bilinear_f32(&[0.0, 1.0], 2, 1, 4, 1);
        let want = [0.0, 0.25, 0.75, 1.0];
        for (o, w) in out.iter().zip(want) {
            assert!((o - w).abs() < FLOAT_TOL, "{out:?}");
        }
    }

    #[test]
    fn pad_then_unpad_round_trips() {
        let src: Vec<f32> = (0..6).map(|v| v as f32).collect(); // 3 wide, 2 high
        let padded = pad_bottom_right(&src, 3, 2, 1, 4, 4, 0.0);
        assert_eq!(padded[4..7], [3.0, 4.0, 5.0]);
        let back = to_original_size(&padded, 4, (2, 3), (2, 3));
        assert_eq!(back, src);
    }

    #[test]
    fn nearest_picks_pixel_centres() {
        let src = [10u8, 20, 30, 40];
        assert_eq!(resize_nearest(&src, 4, 1, 1, 2, 1), vec![20, 40]);
        assert_eq!(
            resize_nearest(&src, 4, 1, 1, 8, 1),
            vec![10, 10, 20, 20, 30, 30, 40, 40]
        );
    }
}
