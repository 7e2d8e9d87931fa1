//! Mask surfaces (boundaries) and the bounding box used to crop before distance transforms.

use crate::mask::Mask;

/// The surface of `mask`: foreground pixels with at least one background pixel among their four
/// edge neighbours, pixels outside the image counting as background. This is
/// `mask XOR binary_erosion(mask)` with scipy's default cross-shaped structuring element and
/// `border_value = 0`, as MONAI's `get_mask_edges` and medpy's `__surface_distances` compute it.
pub fn surface(mask: &Mask) -> Mask {
    let data = surface_of(mask.width(), mask.height(), mask.data());
    Mask::new(mask.width(), mask.height(), data)
        .unwrap_or_else(|_| unreachable!("surface_of keeps the size"))
}

/// [`surface`] on a row-major buffer.
pub(crate) fn surface_of(width: usize, height: usize, m: &[bool]) -> Vec<bool> {
    let mut out = vec![false; m.len()];
    for y in 0..height {
        let row = y * width;
        for x in 0..width {
            let i = row + x;
            if !m[i] {
                continue;
            }
            let interior = x > 0
                && x + 1 < width
                && y > 0
                && y + 1 < height
                && m[i - 1]
                && m[i + 1]
                && m[i - width]
                && m[i + width];
            out[i] = !interior;
        }
    }
    out
}

/// Inclusive bounding box `(x0, y0, x1, y1)` of the pixels set in `a` or `b`; `None` when both
/// are empty.
pub(crate) fn union_bbox(
    width: usize,
    a: &[bool],
    b: &[bool],
) -> Option<(usize, usize, usize, usize)> {
    let mut bbox: Option<(usize, usize, usize, usize)> = None;
    for (i, (&p, &q)) in a.iter().zip(b).enumerate() {
        if p || q {
            let (x, y) = (i % width, i / width);
            bbox = Some(match bbox {
                None => (x, y, x, y),
                Some((x0, y0, x1, y1)) => (x0.min(x), y0.min(y), x1.max(x), y1.max(y)),
            });
        }
    }
    bbox
}

/// Copies the inclusive box `(x0, y0, x1, y1)` out of a row-major buffer.
pub(crate) fn crop(
    width: usize,
    m: &[bool],
    (x0, y0, x1, y1): (usize, usize, usize, usize),
) -> Vec<bool> {
    let mut out = Vec::with_capacity((x1 - x0 + 1) * (y1 - y0 + 1));
    for y in y0..=y1 {
        out.extend_from_slice(&m[y * width + x0..=y * width + x1]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(rows: &[&str]) -> Mask {
        Mask::from_fn(rows[0].len(), rows.len(), |x, y| {
            rows[y].as_bytes()[x] == b'#'
        })
    }

    #[test]
    fn square_keeps_its_ring_and_border_counts_as_background() {
        let m = parse(&["....", ".###", ".###", ".###"]);
        // The block touches the right and bottom border: outside counts as background, so the
        // whole ring is surface and only the centre is interior.
        assert_eq!(surface(&m), parse(&["....", ".###", ".#.#", ".###"]));
        let bar = parse(&["....", "####", "####", "...."]);
        assert_eq!(surface(&bar), bar);
        let full = Mask::from_fn(3, 3, |_, _| true);
        assert_eq!(surface(&full), parse(&["###", "#.#", "###"]));
        assert_eq!(surface(&Mask::from_fn(1, 1, |_, _| true)), parse(&["#"]));
    }

    #[test]
    fn bbox_and_crop() {
        let a = parse(&["....", "..#.", "...."]);
        let b = parse(&["....", "....", ".#.."]);
        let bb = union_bbox(4, a.data(), b.data()).unwrap();
        assert_eq!(bb, (1, 1, 2, 2));
        assert_eq!(crop(4, a.data(), bb), vec![false, true, false, false]);
        assert_eq!(union_bbox(4, &[false; 12], &[false; 12]), None);
    }
}
