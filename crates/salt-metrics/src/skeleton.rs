//! 2-D thinning by Zhang & Suen ("A fast parallel algorithm for thinning digital patterns",
//! Communications of the ACM 27(3), 1984), implemented from the paper's conditions.
//!
//! Name the 8 neighbours of a foreground pixel `P1` clockwise from north: `P2` (N), `P3` (NE),
//! `P4` (E), `P5` (SE), `P6` (S), `P7` (SW), `P8` (W), `P9` (NW). Let `B` be the number of
//! foreground neighbours and `A` the number of 0→1 transitions in the cyclic sequence
//! `P2, P3, …, P9, P2`. Each iteration has two sub-iterations; in each, every pixel that meets the
//! conditions *at the start of the sub-iteration* is removed (parallel deletion):
//!
//! - both: `2 ≤ B ≤ 6` and `A = 1`;
//! - first (south-east boundary and north-west corner): `P2·P4·P6 = 0` and `P4·P6·P8 = 0`;
//! - second (north-west boundary and south-east corner): `P2·P4·P8 = 0` and `P2·P6·P8 = 0`.
//!
//! Iteration stops when neither sub-iteration removes a pixel. Pixels outside the image are
//! background.
//!
//! scikit-image's `skeletonize(method="zhang")` uses a lookup table that differs from these
//! conditions in 25 of the 256 neighbourhoods (it also removes some pixels with `A = 2` whose
//! neighbours stay 8-connected, and keeps some two-neighbour end pixels), so its skeletons, and the
//! clDice computed from them, can differ from ours; see docs/decisions.md.

use crate::mask::Mask;

/// Bit `i` of a neighbourhood code is `P(i + 2)`: N, NE, E, SE, S, SW, W, NW.
const OFFSETS: [(isize, isize); 8] = [
    (0, -1),
    (1, -1),
    (1, 0),
    (1, 1),
    (0, 1),
    (-1, 1),
    (-1, 0),
    (-1, -1),
];

/// For each neighbourhood code: bit 0 set if the pixel may go in the first sub-iteration, bit 1
/// if in the second.
const LUT: [u8; 256] = build_lut();

const fn build_lut() -> [u8; 256] {
    let mut lut = [0u8; 256];
    let mut code = 0usize;
    while code < 256 {
        let b = (code as u8).count_ones();
        let mut a = 0;
        let mut i = 0;
        while i < 8 {
            let cur = (code >> i) & 1;
            let next = (code >> ((i + 1) % 8)) & 1;
            if cur == 0 && next == 1 {
                a += 1;
            }
            i += 1;
        }
        if b >= 2 && b <= 6 && a == 1 {
            let (p2, p4, p6, p8) = (bit(code, 2), bit(code, 4), bit(code, 6), bit(code, 8));
            let first = p2 * p4 * p6 == 0 && p4 * p6 * p8 == 0;
            let second = p2 * p4 * p8 == 0 && p2 * p6 * p8 == 0;
            lut[code] = (first as u8) | ((second as u8) << 1);
        }
        code += 1;
    }
    lut
}

/// Neighbour `P(i)` (`i` in 2..=9) of a neighbourhood code.
const fn bit(code: usize, i: usize) -> u32 {
    ((code >> (i - 2)) & 1) as u32
}

/// The Zhang–Suen skeleton of `mask` (see the module documentation).
pub fn skeletonize(mask: &Mask) -> Mask {
    let (w, h) = (mask.width(), mask.height());
    // One background pixel of padding on each side: no bounds checks in the inner loop.
    let pw = w + 2;
    let mut grid = vec![0u8; pw * (h + 2)];
    let mut candidates = Vec::new();
    for y in 0..h {
        for x in 0..w {
            if mask.get(x, y) {
                let i = (y + 1) * pw + x + 1;
                grid[i] = 1;
                candidates.push(i);
            }
        }
    }
    let offsets: [isize; 8] = OFFSETS.map(|(dx, dy)| dy * pw as isize + dx);
    let mut remove = Vec::new();
    loop {
        let mut removed_any = false;
        for pass in 0..2u8 {
            remove.clear();
            for &i in &candidates {
                let mut code = 0usize;
                for (bit, &o) in offsets.iter().enumerate() {
                    code |= (grid[i.wrapping_add_signed(o)] as usize) << bit;
                }
                if LUT[code] & (1 << pass) != 0 {
                    remove.push(i);
                }
            }
            for &i in &remove {
                grid[i] = 0;
            }
            removed_any |= !remove.is_empty();
            candidates.retain(|&i| grid[i] == 1);
        }
        if !removed_any {
            break;
        }
    }
    Mask::from_fn(w, h, |x, y| grid[(y + 1) * pw + x + 1] == 1)
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
    fn lut_hand_entries() {
        // A pixel with only N and S neighbours (a vertical line) has A = 2: kept.
        assert_eq!(LUT[0b0001_0001], 0);
        // End point (B = 1): kept.
        assert_eq!(LUT[0b0000_0001], 0);
        // Neighbours N, NE, E (B = 3, A = 1): P4·P6·P8 = 0 and P2·P4·P6 = 0 → first; P2·P4·P8 = 0
        // and P2·P6·P8 = 0 → second.
        assert_eq!(LUT[0b0000_0111], 3);
        // Neighbours N, E, S: A = 3 (three separate runs), kept.
        assert_eq!(LUT[0b0001_0101], 0);
        // N, NE, E, SE, S (B = 5, A = 1): P2·P4·P6 = 1 → not first; P8 = 0 → second only.
        assert_eq!(LUT[0b0001_1111], 2);
        // N, S, SW, W, NW (B = 5, A = 1): P4 = 0 → first; P2·P6·P8 = 1 → not second.
        assert_eq!(LUT[0b1111_0001], 1);
        // All eight (B = 8): interior, kept.
        assert_eq!(LUT[0xFF], 0);
    }

    #[test]
    fn thin_lines_are_their_own_skeleton() {
        let line = parse(&[".......", ".#####.", "......."]);
        assert_eq!(skeletonize(&line), line);
        let diag = parse(&["#...", ".#..", "..#.", "...#"]);
        assert_eq!(skeletonize(&diag), diag);
        let single = parse(&["#"]);
        assert_eq!(skeletonize(&single), single);
        assert_eq!(skeletonize(&Mask::empty(3, 3)), Mask::empty(3, 3));
    }

    #[test]
    fn thick_bar_thins_to_one_pixel_wide() {
        // A 3-pixel-high bar: the first sub-iteration peels the bottom row and the right end
        // column, the second the top row and the left end column; the middle row stays.
        let bar = parse(&[
            "..........",
            ".########.",
            ".########.",
            ".########.",
            "..........",
        ]);
        let skel = skeletonize(&bar);
        for y in 0..5 {
            for x in 0..10 {
                if skel.get(x, y) {
                    assert_eq!(y, 2, "skeleton pixel ({x}, {y}) off the centre row");
                }
            }
        }
        assert!(
            (3..=6).all(|x| skel.get(x, 2)),
            "centre row broken: {skel:?}"
        );
    }
}
