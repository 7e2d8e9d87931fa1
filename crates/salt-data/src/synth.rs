//! Synthetic vessel images with exact masks, for tests, demos and CI.
//!
//! A vessel tree is grown as a branching random walk: each step moves `≈ 2r` along a heading that
//! wanders (tortuosity), the radius tapers, and branches leave at 25–60° with a thinner radius.
//! Every step is a convex quadrilateral plus an octagonal joint; the mask is the union of these
//! polygons rasterised with [`fill_polygon`](crate::polygon::fill_polygon) (so ARCADE-style COCO
//! annotations written from the same polygons reproduce the mask exactly). The image is rendered
//! from a blurred copy of the mask with a modality-like appearance:
//! - `drive`: colour fundus, orange-red background, bright optic disc, radial fall-off, black
//!   outside a circular field of view (the mask is restricted to it);
//! - `arcade`, `xray-angio`: X-ray coronary angiography, dark vessels on a bright, unevenly lit
//!   background with noise;
//! - `dias`: DSA, dark vessels on a flatter bright background, more contrast;
//! - `rose`: OCT angiography, dense bright capillaries on a dark background with a foveal
//!   avascular zone.
//!
//! Everything is drawn from `StdRng` seeded per image (`seed`, index), so output is deterministic
//! for a seed and independent of thread count.

use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use rayon::prelude::*;

use crate::dataset::VesselItem;
use crate::image_io::{write_image, write_mask, Image8, Mask};
use crate::polygon::fill_polygon;
use crate::resize::{resize_nearest, resize_rgb8};
use crate::split::{seeded_split, write_split_csv, Split, SplitRow};
use crate::{Error, Result};

/// The modality to imitate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Style {
    /// Colour fundus photograph (DRIVE).
    Drive,
    /// X-ray coronary angiography, 512² grey (ARCADE).
    Arcade,
    /// Retinal OCT angiography (ROSE).
    Rose,
    /// Digital subtraction angiography (DIAS).
    Dias,
    /// X-ray coronary angiography, ~300² grey (XRay-Angio).
    XrayAngio,
}

/// Names accepted by [`Style::parse`].
pub const STYLE_NAMES: &str = "drive, arcade, rose, dias, xray-angio";

impl Style {
    /// All styles.
    pub const ALL: [Style; 5] = [
        Style::Drive,
        Style::Arcade,
        Style::Rose,
        Style::Dias,
        Style::XrayAngio,
    ];

    /// Parses `drive`, `arcade`, `rose`, `dias`, `xray-angio`.
    pub fn parse(s: &str) -> Option<Style> {
        Some(match s.to_ascii_lowercase().as_str() {
            "drive" => Style::Drive,
            "arcade" => Style::Arcade,
            "rose" => Style::Rose,
            "dias" => Style::Dias,
            "xray-angio" | "xrayangio" | "xray_angio" => Style::XrayAngio,
            _ => return None,
        })
    }

    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            Style::Drive => "drive",
            Style::Arcade => "arcade",
            Style::Rose => "rose",
            Style::Dias => "dias",
            Style::XrayAngio => "xray-angio",
        }
    }

    /// Default image side, close to the real data (DRIVE 565×584 → 576, ROSE-1 304, XRay-Angio 300).
    pub fn default_size(self) -> usize {
        match self {
            Style::Drive => 576,
            Style::Arcade | Style::Dias => 512,
            Style::Rose => 304,
            Style::XrayAngio => 300,
        }
    }
}

/// One generated image with its exact mask, the polygons that make the mask, and (DRIVE) the FOV.
#[derive(Debug, Clone)]
pub struct Synthetic {
    /// The image (RGB for `drive`, grey otherwise).
    pub image: Image8,
    /// Vessel mask (0/1).
    pub mask: Mask,
    /// Convex polygons whose union (before FOV clipping) is the mask, `[x0, y0, x1, y1, ...]`.
    pub polygons: Vec<Vec<f64>>,
    /// Field-of-view mask (`drive` only).
    pub fov: Option<Mask>,
}

struct TreeParams {
    roots: Vec<(f64, f64, f64)>, // x, y, heading (radians)
    radius: f64,
    min_radius: f64,
    taper: f64,
    tortuosity: f64,
    branch_p: f64,
    max_steps: usize,
    avoid: Option<(f64, f64, f64)>, // a disc vessels do not enter (OCT-A foveal zone)
}

/// Rounds to 1/64 px so that coordinates written to JSON parse back bit-exactly.
fn q(v: f64) -> f64 {
    (v * 64.0).round() / 64.0
}

fn octagon(x: f64, y: f64, r: f64) -> Vec<f64> {
    (0..8)
        .flat_map(|k| {
            let a = std::f64::consts::TAU * (k as f64 + 0.5) / 8.0;
            [q(x + r * a.cos()), q(y + r * a.sin())]
        })
        .collect()
}

fn grow(rng: &mut StdRng, p: &TreeParams, w: f64, h: f64) -> Vec<Vec<f64>> {
    let mut polys = Vec::new();
    let mut stack: Vec<(f64, f64, f64, f64, usize)> = p
        .roots
        .iter()
        .map(|&(x, y, a)| {
            (
                x,
                y,
                a,
                p.radius.max(1.5 * p.min_radius) * rng.random_range(0.8..1.2),
                0,
            )
        })
        .collect();
    let margin = 4.0 * p.radius;
    while let Some((mut x, mut y, mut a, mut r, depth)) = stack.pop() {
        let mut drift = 0.0;
        for _ in 0..p.max_steps {
            let step = (1.6 * r).max(1.5);
            drift = 0.8 * drift + p.tortuosity * (rng.random::<f64>() - 0.5);
            a += drift;
            let (nx, ny) = (x + step * a.cos(), y + step * a.sin());
            let nr = r * p.taper;
            let (px, py) = (-a.sin(), a.cos());
            polys.push(vec![
                q(x + px * r),
                q(y + py * r),
                q(nx + px * nr),
                q(ny + py * nr),
                q(nx - px * nr),
                q(ny - py * nr),
                q(x - px * r),
                q(y - py * r),
            ]);
            polys.push(octagon(nx, ny, nr));
            x = nx;
            y = ny;
            r = nr;
            let outside = x < -margin || y < -margin || x > w + margin || y > h + margin;
            let avoided = p
                .avoid
                .is_some_and(|(cx, cy, rr)| (x - cx).hypot(y - cy) < rr);
            if r < p.min_radius || outside || avoided {
                break;
            }
            if depth < 6 && rng.random_bool(p.branch_p) {
                let side = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
                let ba = a + side * rng.random_range(25f64..60.0).to_radians();
                let br = r * rng.random_range(0.55..0.85);
                stack.push((x, y, ba, br, depth + 1));
                r *= 0.92;
                a -= side * 0.15;
            }
        }
    }
    polys
}

fn tree_params(style: Style, rng: &mut StdRng, s: f64) -> TreeParams {
    use std::f64::consts::PI;
    let jitter = |rng: &mut StdRng, v: f64| v + rng.random_range(-0.3..0.3);
    match style {
        Style::Drive => {
            let (dx, dy) = (
                s * rng.random_range(0.28..0.36),
                s * rng.random_range(0.45..0.55),
            );
            let roots = [-0.35 * PI, -0.65 * PI + PI, 0.35 * PI, 0.65 * PI - PI]
                .iter()
                .chain([-0.1 * PI, 0.1 * PI].iter())
                .map(|&a| (dx, dy, jitter(rng, a)))
                .collect();
            TreeParams {
                roots,
                radius: s * 0.011,
                min_radius: 0.9,
                taper: 0.992,
                tortuosity: 0.12,
                branch_p: 0.05,
                max_steps: 400,
                avoid: None,
            }
        }
        Style::Arcade | Style::XrayAngio => {
            let n = rng.random_range(1..=2);
            let mut roots: Vec<(f64, f64, f64)> = (0..n)
                .map(|_| (s * rng.random_range(0.2..0.8), -2.0, jitter(rng, 0.5 * PI)))
                .collect();
            let side_y = s * rng.random_range(0.2..0.6);
            roots.push((-2.0, side_y, jitter(rng, 0.1 * PI)));
            TreeParams {
                roots,
                radius: s * 0.013,
                min_radius: 1.0,
                taper: 0.988,
                tortuosity: 0.18,
                branch_p: 0.1,
                max_steps: 300,
                avoid: None,
            }
        }
        Style::Dias => {
            let roots = (0..2)
                .map(|_| {
                    (
                        s * rng.random_range(0.35..0.65),
                        s + 2.0,
                        jitter(rng, -0.5 * PI),
                    )
                })
                .collect();
            TreeParams {
                roots,
                radius: s * 0.013,
                min_radius: 0.8,
                taper: 0.988,
                tortuosity: 0.22,
                branch_p: 0.09,
                max_steps: 300,
                avoid: None,
            }
        }
        Style::Rose => {
            let c = s * 0.5;
            let roots = (0..14)
                .map(|k| {
                    let t = std::f64::consts::TAU * (k as f64 + rng.random::<f64>()) / 14.0;
                    (
                        c + 0.52 * s * t.cos(),
                        c + 0.52 * s * t.sin(),
                        jitter(rng, t + PI),
                    )
                })
                .collect();
            let faz = s * rng.random_range(0.07..0.1);
            TreeParams {
                roots,
                radius: s * 0.007,
                min_radius: 0.8,
                taper: 0.993,
                tortuosity: 0.2,
                branch_p: 0.14,
                max_steps: 220,
                avoid: Some((c, c, faz)),
            }
        }
    }
}

/// Box blur of radius 1 along x then y, `passes` times.
fn blur(v: &mut [f32], w: usize, h: usize, passes: usize) {
    let mut tmp = vec![0f32; v.len()];
    for _ in 0..passes {
        for y in 0..h {
            let row = &v[y * w..(y + 1) * w];
            for x in 0..w {
                let (a, b) = (row[x.saturating_sub(1)], row[(x + 1).min(w - 1)]);
                tmp[y * w + x] = (a + row[x] + b) / 3.0;
            }
        }
        for y in 0..h {
            let (up, down) = (y.saturating_sub(1), (y + 1).min(h - 1));
            for x in 0..w {
                v[y * w + x] = (tmp[up * w + x] + tmp[y * w + x] + tmp[down * w + x]) / 3.0;
            }
        }
    }
}

/// Approximately standard normal noise (Irwin–Hall of four 16-bit uniforms), one `u64` per value.
fn noise(rng: &mut StdRng) -> f32 {
    let b = rng.next_u64();
    let sum: u32 = (0..4).map(|k| ((b >> (16 * k)) & 0xffff) as u32).sum();
    (sum as f32 / 65535.0 - 2.0) * 3f32.sqrt()
}

/// Smooth uneven illumination: a gradient plus a few broad separable Gaussian blobs.
fn illumination(rng: &mut StdRng, w: usize, h: usize, strength: f32) -> Vec<f32> {
    let (gx, gy) = (
        rng.random_range(-1f32..1.0) * strength,
        rng.random_range(-1f32..1.0) * strength,
    );
    let mut out: Vec<f32> = (0..h)
        .flat_map(|y| {
            (0..w).map(move |x| {
                1.0 + gx * (x as f32 / w as f32 - 0.5) + gy * (y as f32 / h as f32 - 0.5)
            })
        })
        .collect();
    for _ in 0..3 {
        let (cx, cy) = (
            rng.random_range(0.0..w as f32),
            rng.random_range(0.0..h as f32),
        );
        let sigma = rng.random_range(0.15f32..0.35) * w.max(h) as f32;
        let amp = rng.random_range(-1f32..1.0) * strength;
        let gxs: Vec<f32> = (0..w)
            .map(|x| (-((x as f32 - cx) / sigma).powi(2) / 2.0).exp())
            .collect();
        for y in 0..h {
            let gyv = amp * (-((y as f32 - cy) / sigma).powi(2) / 2.0).exp();
            for x in 0..w {
                out[y * w + x] += gyv * gxs[x];
            }
        }
    }
    out
}

fn to_u8(v: f32) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

/// The DRIVE-style circular field of view of a `size × size` image.
pub fn drive_fov(size: usize) -> Mask {
    let c = size as f64 / 2.0;
    let r = size as f64 * 0.46;
    let data = (0..size * size)
        .map(|i| u8::from(((i % size) as f64 + 0.5 - c).hypot((i / size) as f64 + 0.5 - c) <= r))
        .collect();
    Mask {
        width: size,
        height: size,
        data,
    }
}

/// Generates image number `index` of a seeded set: deterministic in `(style, seed, index, size)`.
///
/// # Panics
/// If `size < 16` (callers validate sizes; see [`generate`]).
pub fn generate_one(style: Style, seed: u64, index: usize, size: usize) -> Synthetic {
    assert!(size >= 16, "synthetic images need size >= 16");
    let mut rng = StdRng::seed_from_u64(
        seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ (index as u64).wrapping_add(style as u64 * 1_000_003),
    );
    let (w, h) = (size, size);
    let params = tree_params(style, &mut rng, size as f64);
    let polygons = grow(&mut rng, &params, w as f64, h as f64);
    let mut mask = Mask::zeros(w, h);
    for p in &polygons {
        fill_polygon(&mut mask, p);
    }
    let fov = (style == Style::Drive).then(|| drive_fov(size));
    if let Some(f) = &fov {
        for (m, &inside) in mask.data.iter_mut().zip(&f.data) {
            *m &= inside;
        }
    }
    let mut vessel: Vec<f32> = mask.data.iter().map(|&v| f32::from(v)).collect();
    blur(&mut vessel, w, h, 1);
    let image = match style {
        Style::Drive => render_fundus(
            &mut rng,
            &vessel,
            fov.as_ref().expect("drive has a FOV"),
            w,
            h,
            &params,
        ),
        Style::Arcade | Style::XrayAngio => {
            render_grey(&mut rng, &vessel, w, h, 165.0, 0.22, 0.5, 9.0)
        }
        Style::Dias => render_grey(&mut rng, &vessel, w, h, 185.0, 0.08, 0.7, 5.0),
        Style::Rose => render_octa(&mut rng, &vessel, w, h),
    };
    Synthetic {
        image,
        mask,
        polygons,
        fov,
    }
}

#[allow(clippy::too_many_arguments)]
fn render_grey(
    rng: &mut StdRng,
    vessel: &[f32],
    w: usize,
    h: usize,
    base: f32,
    uneven: f32,
    contrast: f32,
    sigma: f32,
) -> Image8 {
    let light = illumination(rng, w, h, uneven);
    let mut v: Vec<f32> = vessel
        .iter()
        .zip(&light)
        .map(|(&m, &l)| base * l * (1.0 - contrast * m))
        .collect();
    blur(&mut v, w, h, 1);
    let data = v.iter().map(|&x| to_u8(x + sigma * noise(rng))).collect();
    Image8 {
        width: w,
        height: h,
        channels: 1,
        data,
    }
}

fn render_octa(rng: &mut StdRng, vessel: &[f32], w: usize, h: usize) -> Image8 {
    let light = illumination(rng, w, h, 0.3);
    let data = vessel
        .iter()
        .zip(&light)
        .map(|(&m, &l)| to_u8(18.0 * l + 190.0 * m * l + 7.0 * noise(rng)))
        .collect();
    Image8 {
        width: w,
        height: h,
        channels: 1,
        data,
    }
}

fn render_fundus(
    rng: &mut StdRng,
    vessel: &[f32],
    fov: &Mask,
    w: usize,
    h: usize,
    p: &TreeParams,
) -> Image8 {
    let light = illumination(rng, w, h, 0.15);
    let (dx, dy) = (p.roots[0].0 as f32, p.roots[0].1 as f32);
    let disc_r = w as f32 * 0.06;
    let (cx, cy, rr) = (w as f32 / 2.0, h as f32 / 2.0, w as f32 * 0.46);
    let mut data = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            if fov.data[i] == 0 {
                data.extend([0u8; 3].map(|_| to_u8(2.0 + 1.5 * noise(rng))));
                continue;
            }
            let r2 = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)) / (rr * rr);
            let fall = light[i] * (1.0 - 0.35 * r2);
            let disc = 70.0
                * (-(((x as f32 - dx).powi(2) + (y as f32 - dy).powi(2)) / (disc_r * disc_r)))
                    .exp();
            let m = vessel[i];
            let rgb = [
                (205.0 * fall + disc) * (1.0 - 0.25 * m),
                (95.0 * fall + disc) * (1.0 - 0.55 * m),
                (40.0 * fall + 0.6 * disc) * (1.0 - 0.4 * m),
            ];
            data.extend(rgb.map(|c| to_u8(c + 4.0 * noise(rng))));
        }
    }
    Image8 {
        width: w,
        height: h,
        channels: 3,
        data,
    }
}

/// `n` images of `style` at `size × size`, with exact masks; deterministic for `seed`.
pub fn generate(style: Style, n: usize, seed: u64, size: usize) -> Vec<(Image8, Mask)> {
    generate_full(style, n, seed, size)
        .into_iter()
        .map(|s| (s.image, s.mask))
        .collect()
}

/// Like [`generate`], keeping polygons and field of view.
pub fn generate_full(style: Style, n: usize, seed: u64, size: usize) -> Vec<Synthetic> {
    (0..n)
        .into_par_iter()
        .map(|i| generate_one(style, seed, i, size.max(16)))
        .collect()
}

/// Wraps generated pairs as dataset items with ids `synth_0000`, ...
pub fn items(pairs: Vec<(Image8, Mask)>) -> Vec<VesselItem> {
    pairs
        .into_iter()
        .enumerate()
        .map(|(i, (image, mask))| VesselItem {
            id: format!("synth_{i:04}"),
            original_size: (image.height, image.width),
            image,
            mask,
            fov: None,
        })
        .collect()
}

/// Where [`write_dataset`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynthLayout {
    /// The paper's layout (`images/`, `masks/`, `data_split.csv`).
    Paper,
    /// The dataset's published layout (DRIVE and ARCADE only; see docs/formats.md).
    Native,
}

/// Train count for `n` images: 70 % (the paper's ratios are 70/30 for most datasets), at least
/// one test image when `n >= 2`.
pub fn train_count(n: usize) -> usize {
    if n < 2 {
        n
    } else {
        ((n * 7 + 5) / 10).clamp(1, n - 1)
    }
}

/// Writes `n` synthetic images of `style` to `dir` at the style's default size.
pub fn write_dataset(
    dir: &Path,
    style: Style,
    n: usize,
    seed: u64,
    layout: SynthLayout,
) -> Result<Vec<Synthetic>> {
    write_dataset_sized(dir, style, n, seed, layout, style.default_size())
}

/// Writes `n` synthetic images of `style` at `size × size` to `dir` in `layout`, with a seeded
/// 70/30 split, and returns what was written.
pub fn write_dataset_sized(
    dir: &Path,
    style: Style,
    n: usize,
    seed: u64,
    layout: SynthLayout,
    size: usize,
) -> Result<Vec<Synthetic>> {
    if n == 0 {
        return Err(Error::Invalid {
            what: "--n",
            message: "need at least one image".into(),
        });
    }
    if !(16..=crate::image_io::MAX_SIDE as usize).contains(&size) {
        return Err(Error::Invalid {
            what: "size",
            message: format!("{size}; expected 16..=16384"),
        });
    }
    if layout == SynthLayout::Native && !matches!(style, Style::Drive | Style::Arcade) {
        return Err(Error::Invalid {
            what: "layout",
            message: format!(
                "no confirmed published layout for {}; use --layout paper (see docs/formats.md)",
                style.name()
            ),
        });
    }
    let synth = generate_full(style, n, seed, size);
    let n_train = train_count(n);
    let names: Vec<String> = (0..n).map(|i| format!("{}_{i:04}", style.name())).collect();
    let splits: Vec<Split> = if n < 2 {
        vec![Split::Train; n]
    } else {
        let rows = seeded_split(&names, n_train, n - n_train, seed)?;
        rows.iter().map(|r| r.split).collect()
    };
    match layout {
        SynthLayout::Paper => write_paper(dir, &synth, &names, &splits)?,
        SynthLayout::Native if style == Style::Drive => write_drive(dir, &synth, &splits)?,
        SynthLayout::Native => write_arcade(dir, &synth, &splits)?,
    }
    tracing::info!(dir = %dir.display(), style = style.name(), n, seed, ?layout, "synthetic dataset written");
    Ok(synth)
}

fn write_paper(dir: &Path, synth: &[Synthetic], names: &[String], splits: &[Split]) -> Result<()> {
    synth.par_iter().zip(names).try_for_each(|(s, name)| {
        write_image(&dir.join("images").join(format!("{name}.png")), &s.image)?;
        write_mask(&dir.join("masks").join(format!("{name}_mask.png")), &s.mask)
    })?;
    let rows: Vec<SplitRow> = names
        .iter()
        .zip(splits)
        .map(|(n, &split)| SplitRow {
            image: format!("{n}.png"),
            split,
        })
        .collect();
    write_split_csv(&dir.join("data_split.csv"), &rows)
}

fn write_drive(dir: &Path, synth: &[Synthetic], splits: &[Split]) -> Result<()> {
    // DRIVE numbers test images 01-20 and training images 21-40.
    let (mut n_test, mut n_train) = (0usize, 0usize);
    let jobs: Vec<(String, String, &Synthetic)> = synth
        .iter()
        .zip(splits)
        .map(|(s, &split)| {
            if split == Split::Train {
                n_train += 1;
                ("training".to_string(), format!("{:02}", 20 + n_train), s)
            } else {
                n_test += 1;
                ("test".to_string(), format!("{n_test:02}"), s)
            }
        })
        .collect();
    jobs.par_iter().try_for_each(|(folder, num, s)| {
        let d = dir.join(folder);
        let kind = if folder == "training" {
            "training"
        } else {
            "test"
        };
        write_image(
            &d.join("images").join(format!("{num}_{kind}.tif")),
            &s.image,
        )?;
        write_mask(
            &d.join("1st_manual").join(format!("{num}_manual1.gif")),
            &s.mask,
        )?;
        write_mask(
            &d.join("mask").join(format!("{num}_{kind}_mask.gif")),
            s.fov.as_ref().expect("drive FOV"),
        )
    })
}

fn write_arcade(dir: &Path, synth: &[Synthetic], splits: &[Split]) -> Result<()> {
    for split in [Split::Train, Split::Val] {
        let base = dir.join("syntax").join(split.name());
        let chosen: Vec<(usize, &Synthetic)> = synth
            .iter()
            .zip(splits)
            .filter(|(_, &s)| s == split)
            .map(|(s, _)| s)
            .enumerate()
            .collect();
        if chosen.is_empty() {
            continue;
        }
        chosen.par_iter().try_for_each(|(k, s)| {
            write_image(
                &base.join("images").join(format!("{}.png", k + 1)),
                &s.image,
            )
        })?;
        let images: Vec<serde_json::Value> = chosen
            .iter()
            .map(|(k, s)| serde_json::json!({"id": k + 1, "file_name": format!("{}.png", k + 1), "width": s.image.width, "height": s.image.height}))
            .collect();
        let mut anns = Vec::new();
        for (k, s) in &chosen {
            // One annotation per image holding all polygons (category 1); ARCADE has one per
            // coronary segment, and the binary mask is the union either way.
            anns.push(serde_json::json!({"id": anns.len() + 1, "image_id": k + 1, "category_id": 1, "iscrowd": 0, "segmentation": s.polygons}));
        }
        let coco = serde_json::json!({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "1"}]});
        let json = crate::dataset::arcade_json(&base, split);
        crate::image_io::write_atomic(&json, coco.to_string().as_bytes())?;
    }
    Ok(())
}

/// A contact sheet: rows of (image | mask) thumbnails of side `thumb`, `cols` pairs per row.
pub fn contact_sheet(pairs: &[(Image8, Mask)], cols: usize, thumb: usize) -> Image8 {
    let cols = cols.max(1);
    let rows = pairs.len().div_ceil(cols).max(1);
    let gap = 4;
    let (w, h) = (cols * (2 * thumb + 3 * gap), rows * (thumb + gap) + gap);
    let mut sheet = Image8 {
        width: w,
        height: h,
        channels: 3,
        data: vec![40; w * h * 3],
    };
    let mut blit = |img: &[u8], ox: usize, oy: usize| {
        for y in 0..thumb {
            let dst = ((oy + y) * w + ox) * 3;
            sheet.data[dst..dst + thumb * 3]
                .copy_from_slice(&img[y * thumb * 3..(y + 1) * thumb * 3]);
        }
    };
    for (i, (img, mask)) in pairs.iter().enumerate() {
        let (ox, oy) = (
            (i % cols) * (2 * thumb + 3 * gap) + gap,
            (i / cols) * (thumb + gap) + gap,
        );
        let rgb = img.to_rgb();
        blit(
            &resize_rgb8(&rgb.data, img.width, img.height, 3, thumb, thumb),
            ox,
            oy,
        );
        let m: Vec<u8> = mask.data.iter().flat_map(|&v| [v * 255; 3]).collect();
        blit(
            &resize_nearest(&m, mask.width, mask.height, 3, thumb, thumb),
            ox + thumb + gap,
            oy,
        );
    }
    sheet
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::VesselDataset;
    use burn::data::dataset::Dataset;

    #[test]
    fn deterministic_per_seed_and_styles_look_different() {
        for style in Style::ALL {
            let a = generate(style, 2, 11, 96);
            assert_eq!(a, generate(style, 2, 11, 96), "{style:?}");
            assert_ne!(a, generate(style, 2, 12, 96), "{style:?}");
            let (img, mask) = &a[0];
            // Background statistics inside the field of view only (DRIVE is black outside).
            let fov = generate_one(style, 11, 0, 96).fov.unwrap_or_else(|| Mask {
                width: 96,
                height: 96,
                data: vec![1; 96 * 96],
            });
            let frac = mask.count() as f64 / (96.0 * 96.0);
            assert!(
                (0.003..0.6).contains(&frac),
                "{style:?}: vessel fraction {frac}"
            );
            // Vessels are darker than background for angiography, brighter for OCT-A.
            let mean = |on: u8| {
                let v: Vec<f64> = img
                    .data
                    .chunks(img.channels)
                    .zip(mask.data.iter().zip(&fov.data))
                    .filter(|(_, (&m, &f))| m == on && f == 1)
                    .map(|(p, _)| f64::from(p[img.channels.min(2) - 1]))
                    .collect();
                v.iter().sum::<f64>() / v.len().max(1) as f64
            };
            match style {
                Style::Rose => assert!(mean(1) > mean(0) + 30.0, "{style:?}"),
                _ => assert!(mean(1) + 10.0 < mean(0), "{style:?}"),
            }
        }
    }

    #[test]
    fn drive_mask_stays_inside_fov() {
        let s = generate_one(Style::Drive, 1, 0, 128);
        let fov = s.fov.unwrap();
        assert!(s.mask.data.iter().zip(&fov.data).all(|(&m, &f)| m <= f));
        assert_eq!(s.image.channels, 3);
    }

    #[test]
    fn native_drive_and_arcade_round_trip_through_loaders() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("drive");
        let written = write_dataset_sized(&d, Style::Drive, 4, 3, SynthLayout::Native, 64).unwrap();
        let train = VesselDataset::open(&d, Split::Train).unwrap();
        let test = VesselDataset::open(&d, Split::Val).unwrap();
        assert_eq!(train.len() + test.len(), 4);
        let all: Vec<_> = train.items().iter().chain(test.items()).collect();
        for it in &all {
            assert!(it.fov.is_some());
            assert!(
                written
                    .iter()
                    .any(|s| s.mask == it.mask && s.image == it.image),
                "{}",
                it.id
            );
        }
        let a = dir.path().join("arcade");
        let written =
            write_dataset_sized(&a, Style::Arcade, 5, 3, SynthLayout::Native, 64).unwrap();
        let train = VesselDataset::open(&a, Split::Train).unwrap();
        let val = VesselDataset::open(&a, Split::Val).unwrap();
        assert_eq!((train.len(), val.len()), (4, 1));
        for it in train.items().iter().chain(val.items()) {
            assert!(
                written
                    .iter()
                    .any(|s| s.mask == it.mask && s.image == it.image),
                "{}",
                it.id
            );
        }
    }

    #[test]
    fn paper_layout_round_trips_and_unconfirmed_native_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let written =
            write_dataset_sized(dir.path(), Style::Rose, 10, 1, SynthLayout::Paper, 48).unwrap();
        let train = VesselDataset::open(dir.path(), Split::Train).unwrap();
        let val = VesselDataset::open(dir.path(), Split::Val).unwrap();
        assert_eq!((train.len(), val.len()), (7, 3));
        let first = train
            .items()
            .iter()
            .find(|i| i.id == "rose_0000")
            .or_else(|| val.items().iter().find(|i| i.id == "rose_0000"))
            .unwrap();
        assert_eq!(first.mask, written[0].mask);
        assert_eq!(first.image, written[0].image);
        let err = write_dataset_sized(dir.path(), Style::Dias, 2, 1, SynthLayout::Native, 48)
            .unwrap_err();
        assert!(err.to_string().contains("--layout paper"), "{err}");
    }

    #[test]
    fn contact_sheet_has_expected_size() {
        let pairs = generate(Style::Arcade, 3, 0, 32);
        let sheet = contact_sheet(&pairs, 2, 16);
        assert_eq!((sheet.width, sheet.height), (2 * (32 + 12), 2 * 20 + 4));
    }
}
