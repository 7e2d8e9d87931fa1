//! Small PNG charts with no system dependency (no font files): line charts drawn pixel by pixel,
//! text from the public-domain `font8x8` bitmap font. Used for `curves.png`.

use font8x8::UnicodeFonts;
use image::{Rgb, RgbImage};

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// `(x, y)` points; non-finite `y` values leave a gap.
    pub points: Vec<(f64, f64)>,
    /// Colour.
    pub color: [u8; 3],
}

/// One panel: a title, axis labels and series.
#[derive(Debug, Clone)]
pub struct Panel {
    /// Title above the panel.
    pub title: String,
    /// Label of the x axis.
    pub x_label: String,
    /// The lines.
    pub series: Vec<Series>,
}

/// Distinct colours for series.
pub const PALETTE: [[u8; 3]; 6] = [
    [31, 119, 180],
    [214, 39, 40],
    [44, 160, 44],
    [255, 127, 14],
    [148, 103, 189],
    [23, 190, 207],
];

const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const AXIS: Rgb<u8> = Rgb([60, 60, 60]);
const GRID: Rgb<u8> = Rgb([225, 225, 225]);

/// Draws `text` with its top-left corner at `(x, y)`, each font pixel `scale × scale`.
pub fn draw_text(img: &mut RgbImage, x: i64, y: i64, text: &str, color: [u8; 3], scale: i64) {
    for (i, ch) in text.chars().enumerate() {
        let glyph = font8x8::BASIC_FONTS
            .get(ch)
            .or_else(|| font8x8::BASIC_FONTS.get('?'))
            .unwrap_or([0; 8]);
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) != 0 {
                    for dy in 0..scale {
                        for dx in 0..scale {
                            put(
                                img,
                                x + (i as i64 * 8 + col) * scale + dx,
                                y + row as i64 * scale + dy,
                                color,
                            );
                        }
                    }
                }
            }
        }
    }
}

fn put(img: &mut RgbImage, x: i64, y: i64, color: [u8; 3]) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, Rgb(color));
    }
}

/// A line from `(x0, y0)` to `(x1, y1)`, `width` pixels thick.
fn line(
    img: &mut RgbImage,
    (x0, y0): (f64, f64),
    (x1, y1): (f64, f64),
    color: [u8; 3],
    width: i64,
) {
    let steps = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as i64).max(1);
    for s in 0..=steps {
        let t = s as f64 / steps as f64;
        let (x, y) = (x0 + t * (x1 - x0), y0 + t * (y1 - y0));
        for dy in 0..width {
            for dx in 0..width {
                put(
                    img,
                    x.round() as i64 + dx - width / 2,
                    y.round() as i64 + dy - width / 2,
                    color,
                );
            }
        }
    }
}

/// A tick label: short, fixed-ish width.
fn tick(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.1e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn draw_panel(img: &mut RgbImage, panel: &Panel, ox: i64, oy: i64, w: i64, h: i64) {
    let (left, right, top, bottom) = (70i64, 12i64, 28i64, 40i64);
    let (px0, py0, pw, ph) = (ox + left, oy + top, w - left - right, h - top - bottom);
    draw_text(img, ox + left, oy + 8, &panel.title, [0, 0, 0], 1);
    let pts: Vec<(f64, f64)> = panel
        .series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    let (mut xmin, mut xmax, mut ymin, mut ymax) = pts.iter().fold(
        (
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ),
        |(a, b, c, d), &(x, y)| (a.min(x), b.max(x), c.min(y), d.max(y)),
    );
    if pts.is_empty() {
        (xmin, xmax, ymin, ymax) = (0.0, 1.0, 0.0, 1.0);
    }
    if xmax <= xmin {
        xmax = xmin + 1.0;
    }
    if ymax <= ymin {
        let pad = ymin.abs().max(1.0) * 0.05;
        ymin -= pad;
        ymax += pad;
    }
    let margin = (ymax - ymin) * 0.05;
    ymin -= margin;
    ymax += margin;
    let sx = |x: f64| px0 as f64 + (x - xmin) / (xmax - xmin) * pw as f64;
    let sy = |y: f64| (py0 + ph) as f64 - (y - ymin) / (ymax - ymin) * ph as f64;
    for i in 0..=4 {
        let yv = ymin + (ymax - ymin) * i as f64 / 4.0;
        let y = sy(yv);
        line(img, (px0 as f64, y), ((px0 + pw) as f64, y), GRID.0, 1);
        let label = tick(yv);
        draw_text(
            img,
            px0 - 6 - 8 * label.len() as i64,
            y as i64 - 4,
            &label,
            AXIS.0,
            1,
        );
        let xv = xmin + (xmax - xmin) * i as f64 / 4.0;
        let x = sx(xv);
        let label = tick(xv);
        draw_text(
            img,
            x as i64 - 4 * label.len() as i64,
            py0 + ph + 6,
            &label,
            AXIS.0,
            1,
        );
    }
    line(
        img,
        (px0 as f64, py0 as f64),
        (px0 as f64, (py0 + ph) as f64),
        AXIS.0,
        1,
    );
    line(
        img,
        (px0 as f64, (py0 + ph) as f64),
        ((px0 + pw) as f64, (py0 + ph) as f64),
        AXIS.0,
        1,
    );
    draw_text(
        img,
        px0 + pw / 2 - 4 * panel.x_label.len() as i64,
        py0 + ph + 22,
        &panel.x_label,
        AXIS.0,
        1,
    );
    for (i, s) in panel.series.iter().enumerate() {
        let mut prev: Option<(f64, f64)> = None;
        for &(x, y) in &s.points {
            if !(x.is_finite() && y.is_finite()) {
                prev = None;
                continue;
            }
            let p = (sx(x), sy(y));
            match prev {
                Some(q) => line(img, q, p, s.color, 2),
                None => line(img, p, p, s.color, 3),
            }
            prev = Some(p);
        }
        let ly = py0 + 6 + 12 * i as i64;
        line(
            img,
            ((px0 + pw - 110) as f64, (ly + 4) as f64),
            ((px0 + pw - 92) as f64, (ly + 4) as f64),
            s.color,
            2,
        );
        draw_text(img, px0 + pw - 88, ly, &s.label, [0, 0, 0], 1);
    }
}

/// Renders panels side by side into one image, `panel_w × panel_h` each.
pub fn render(panels: &[Panel], panel_w: u32, panel_h: u32) -> RgbImage {
    let mut img = RgbImage::from_pixel(panel_w * panels.len().max(1) as u32, panel_h, WHITE);
    for (i, p) in panels.iter().enumerate() {
        draw_panel(
            &mut img,
            p,
            i as i64 * panel_w as i64,
            0,
            panel_w as i64,
            panel_h as i64,
        );
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_lines_text_and_legend() {
        let panel = Panel {
            title: "loss".into(),
            x_label: "epoch".into(),
            series: vec![Series {
                label: "train".into(),
                points: vec![(1.0, 1.0), (2.0, 0.5), (3.0, f64::NAN), (4.0, 0.2)],
                color: PALETTE[1],
            }],
        };
        let img = render(&[panel.clone(), panel], 320, 240);
        assert_eq!(img.dimensions(), (640, 240));
        let red = img.pixels().filter(|p| p.0 == PALETTE[1]).count();
        assert!(red > 100, "series not drawn ({red} pixels)");
        let black = img.pixels().filter(|p| p.0 == [0, 0, 0]).count();
        assert!(black > 50, "text not drawn ({black} pixels)");
    }
}
