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

/// [`surface`] on a row-major buffer. Row by row over slices (the inner loop vectorises).
pub(crate) fn surface_of(width: usize, height: usize, m: &[bool]) -> Vec<bool> {
    let mut out = m.to_vec();
    if width < 3 || height < 3 {
        // Every foreground pixel touches the border.
        return out;
    }
    for y in 1..height - 1 {
        let row = y * width;
        let (up, cur, down) = (
            &m[row - width..row],
            &m[row..row + width],
            &m[row + width..row + 2 * width],
        );
        let o = &mut out[row + 1..row + width - 1];
        for (x, o) in o.iter_mut().enumerate() {
            // x + 1 is the pixel; its left neighbour is cur[x], its right one cur[x + 2].
            let interior = cur[x] & cur[x + 2] & up[x + 1] & down[x + 1];
            *o = cur[x + 1] & !interior;
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
    for (y, (ra, rb)) in a.chunks_exact(width).zip(b.chunks_exact(width)).enumerate() {
        let first = ra.iter().zip(rb).position(|(&p, &q)| p | q);
        let Some(x0) = first else { continue };
        let x1 = width
            - 1
            - ra.iter()
                .zip(rb)
                .rev()
                .position(|(&p, &q)| p | q)
                .unwrap_or(0);
        bbox = Some(match bbox {
            None => (x0, y, x1, y),
            Some((bx0, by0, bx1, _)) => (bx0.min(x0), by0, bx1.max(x1), y),
        });
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
