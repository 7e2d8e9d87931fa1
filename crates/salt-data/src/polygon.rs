//! Polygon rasterisation for COCO-style annotations (ARCADE) and the synthetic generator.
//!
//! Rule: a pixel `(x, y)` is inside when its centre `(x + 0.5, y + 0.5)` is inside the polygon by
//! the **even-odd** rule (scanline crossings). Several polygons are combined by union, as a binary
//! vessel mask is the union of all ARCADE segments. pycocotools (`annToMask`) samples its boundary
//! differently (it upsamples edges ×5), so masks can differ from it on boundary pixels only.

use crate::Mask;

/// Sets to 1 every pixel of `mask` whose centre is inside `polygon` (even-odd rule). `polygon` is a
/// flat `[x0, y0, x1, y1, ...]` list in pixel coordinates (COCO's convention: the top-left corner
/// of the image is (0, 0)). Polygons with fewer than 3 points, or non-finite coordinates, are
/// ignored (the caller validates and reports them).
pub fn fill_polygon(mask: &mut Mask, polygon: &[f64]) {
    let n = polygon.len() / 2;
    if n < 3 || polygon.iter().any(|v| !v.is_finite()) {
        return;
    }
    let pts: Vec<(f64, f64)> = (0..n)
        .map(|i| (polygon[2 * i], polygon[2 * i + 1]))
        .collect();
    let (mut ymin, mut ymax) = (f64::INFINITY, f64::NEG_INFINITY);
    for &(_, y) in &pts {
        ymin = ymin.min(y);
        ymax = ymax.max(y);
    }
    let (w, h) = (mask.width as i64, mask.height as i64);
    // Rows whose centre y + 0.5 lies in [ymin, ymax].
    let row0 = ((ymin - 0.5).ceil() as i64).max(0);
    let row1 = ((ymax - 0.5).floor() as i64).min(h - 1);
    let mut xs: Vec<f64> = Vec::with_capacity(8);
    for row in row0..=row1 {
        let cy = row as f64 + 0.5;
        xs.clear();
        for i in 0..n {
            let (x0, y0) = pts[i];
            let (x1, y1) = pts[(i + 1) % n];
            // Half-open rule: an edge counts when cy is in [min(y0,y1), max(y0,y1)).
            if (y0 <= cy && cy < y1) || (y1 <= cy && cy < y0) {
                xs.push(x0 + (cy - y0) * (x1 - x0) / (y1 - y0));
            }
        }
        xs.sort_by(f64::total_cmp);
        for pair in xs.chunks_exact(2) {
            // Pixels whose centre x + 0.5 is in [pair[0], pair[1]).
            let c0 = ((pair[0] - 0.5).ceil() as i64).max(0);
            let c1 = ((pair[1] - 0.5).ceil() as i64 - 1).min(w - 1);
            if c0 <= c1 {
                let base = row as usize * mask.width;
                mask.data[base + c0 as usize..=base + c1 as usize].fill(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn square_covers_pixel_centres_inside() {
        // Square from (1,1) to (4,3): centres x+0.5 in [1,4) -> x = 1..=3, y = 1..=2.
        let mut m = Mask::zeros(6, 5);
        fill_polygon(&mut m, &[1.0, 1.0, 4.0, 1.0, 4.0, 3.0, 1.0, 3.0]);
        assert_eq!(m.count(), 6);
        for y in 1..=2 {
            for x in 1..=3 {
                assert_eq!(m.data[y * 6 + x], 1);
            }
        }
    }

    #[test]
    fn even_odd_leaves_overlap_of_self_intersection_inside_and_clips() {
        // A triangle larger than the image is clipped, not a panic; area of the right triangle
        // (0,0),(8,0),(0,8) over an 8x8 grid: centres with x+y+1 < 8 -> 28 pixels.
        let mut m = Mask::zeros(8, 8);
        fill_polygon(&mut m, &[0.0, 0.0, 8.0, 0.0, 0.0, 8.0]);
        assert_eq!(m.count(), 28);
        let mut m = Mask::zeros(4, 4);
        fill_polygon(
            &mut m,
            &[-10.0, -10.0, 100.0, -10.0, 100.0, 100.0, -10.0, 100.0],
        );
        assert_eq!(m.count(), 16);
        let mut m = Mask::zeros(4, 4);
        fill_polygon(&mut m, &[0.0, f64::NAN, 1.0, 1.0, 2.0, 0.0]);
        assert_eq!(m.count(), 0);
    }
}
