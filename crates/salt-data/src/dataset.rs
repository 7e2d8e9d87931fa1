//! Datasets as burn [`Dataset`]s of [`VesselItem`]s, read from the paper's layout, DRIVE or ARCADE.
//!
//! Datasets are small (at most a thousand 512² images), so every item is decoded and validated
//! when the dataset is opened (in parallel): a bad file is an error at open time, with its path,
//! never a blank item later inside a worker thread.

use std::path::{Path, PathBuf};

use burn::data::dataset::Dataset;
use rayon::prelude::*;

use crate::image_io::{read_image, read_mask_for};
use crate::polygon::fill_polygon;
use crate::split::{parse_split_csv_lines, Split};
use crate::{Error, Image8, Mask, Result};

/// One image with its vessel mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VesselItem {
    /// Identifier: the image stem (e.g. `21_training`).
    pub id: String,
    /// The image as stored (grey or RGB, 8-bit).
    pub image: Image8,
    /// The vessel mask (0/1), same size as the image.
    pub mask: Mask,
    /// Original size `(height, width)`, used to map predictions back.
    pub original_size: (usize, usize),
    /// Field-of-view mask (DRIVE publishes one); evaluation may restrict metrics to it.
    pub fov: Option<Mask>,
}

/// The on-disk layouts the loaders understand (see docs/formats.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `images/<stem>.png`, `masks/<stem>_mask.png`, `data_split.csv` (`imgs,split`).
    Paper,
    /// DRIVE as published: `training|test/{images,1st_manual,mask}`.
    Drive,
    /// ARCADE as published (zenodo 10390295): `[syntax/]<split>/{images,annotations/<split>.json}`.
    Arcade,
}

impl Layout {
    /// Guesses the layout of `root` from the folders it holds.
    pub fn detect(root: &Path) -> Result<Layout> {
        if root.join("images").is_dir() && root.join("masks").is_dir() {
            Ok(Layout::Paper)
        } else if root.join("training").join("images").is_dir()
            || root.join("test").join("images").is_dir()
        {
            Ok(Layout::Drive)
        } else if arcade_root(root, Split::Train).is_some()
            || arcade_root(root, Split::Val).is_some()
            || arcade_root(root, Split::Test).is_some()
        {
            Ok(Layout::Arcade)
        } else {
            Err(Error::Missing {
                path: root.to_path_buf(),
                what: "a known dataset layout (images/+masks/, training|test/images/, or \
                       [syntax/]<split>/annotations/<split>.json)"
                    .into(),
            })
        }
    }
}

/// A dataset held in memory: a burn [`Dataset`] of [`VesselItem`].
#[derive(Debug, Clone, Default)]
pub struct VesselDataset {
    items: Vec<VesselItem>,
}

impl Dataset<VesselItem> for VesselDataset {
    fn get(&self, index: usize) -> Option<VesselItem> {
        self.items.get(index).cloned()
    }

    fn len(&self) -> usize {
        self.items.len()
    }
}

impl VesselDataset {
    /// A dataset from items (e.g. synthetic ones).
    pub fn from_items(items: Vec<VesselItem>) -> Self {
        Self { items }
    }

    /// The items.
    pub fn items(&self) -> &[VesselItem] {
        &self.items
    }

    /// Opens `split` of the dataset at `root`, in the layout detected by [`Layout::detect`].
    pub fn open(root: &Path, split: Split) -> Result<Self> {
        Self::open_layout(root, Layout::detect(root)?, split)
    }

    /// Opens `split` of the dataset at `root` in the given layout. An empty split is an error.
    pub fn open_layout(root: &Path, layout: Layout, split: Split) -> Result<Self> {
        let items = match layout {
            Layout::Paper => load_paper(root, split)?,
            Layout::Drive => load_drive(root, split)?,
            Layout::Arcade => load_arcade(root, split)?,
        };
        if items.is_empty() {
            return Err(Error::EmptySplit {
                path: root.to_path_buf(),
                split: split.name().into(),
            });
        }
        tracing::info!(root = %root.display(), ?layout, %split, n = items.len(), "dataset opened");
        Ok(Self { items })
    }
}

fn stem_of(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn item(id: String, image: Image8, mask: Mask, fov: Option<Mask>) -> VesselItem {
    let original_size = (image.height, image.width);
    VesselItem {
        id,
        image,
        mask,
        original_size,
        fov,
    }
}

/// Resolves the `imgs` value of a paper CSV row to an image path: `images/<imgs>` if it exists,
/// else `images/<imgs>.png`.
pub fn paper_image_path(root: &Path, imgs: &str) -> PathBuf {
    let direct = root.join("images").join(imgs);
    if direct.is_file() || Path::new(imgs).extension().is_some() {
        direct
    } else {
        root.join("images").join(format!("{imgs}.png"))
    }
}

/// The mask path of a paper-layout image: `masks/<stem>_mask.png`.
pub fn paper_mask_path(root: &Path, image: &Path) -> PathBuf {
    root.join("masks")
        .join(format!("{}_mask.png", stem_of(image)))
}

fn load_pair(image_path: &Path, mask_path: &Path) -> Result<(Image8, Mask)> {
    if !image_path.is_file() {
        return Err(Error::Missing {
            path: image_path.to_path_buf(),
            what: "image".into(),
        });
    }
    if !mask_path.is_file() {
        return Err(Error::Missing {
            path: mask_path.to_path_buf(),
            what: format!("mask for image {}", image_path.display()),
        });
    }
    let image = read_image(image_path)?;
    let mask = read_mask_for(mask_path, &image, image_path)?;
    Ok((image, mask))
}

/// One row of a paper-layout dataset, resolved to its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaperEntry {
    /// 1-based line of `data_split.csv`.
    pub line: usize,
    /// The split of the row.
    pub split: Split,
    /// `images/<imgs>` (see [`paper_image_path`]).
    pub image: PathBuf,
    /// `masks/<stem>_mask.png`.
    pub mask: PathBuf,
}

/// Errors unless the row's files stay inside the dataset: `imgs` must be a plain relative name
/// (no `..`, no absolute path), and the files it names must not resolve (through symlinks)
/// outside `root`.
fn check_inside(root: &Path, csv: &Path, line: usize, imgs: &str, files: [&Path; 2]) -> Result<()> {
    use std::path::Component;
    let csv_err = |message: String| Error::Csv {
        path: csv.to_path_buf(),
        line,
        message,
    };
    if !Path::new(imgs)
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(csv_err(format!(
            "`imgs` value {imgs:?} leaves images/: absolute paths and `..` are not allowed in a \
             split file (a row must name a file inside the dataset)"
        )));
    }
    let canonical_root = std::fs::canonicalize(root).map_err(|e| Error::io(root, e))?;
    for f in files {
        if let Ok(c) = std::fs::canonicalize(f) {
            if !c.starts_with(&canonical_root) {
                return Err(csv_err(format!(
                    "`imgs` value {imgs:?}: {} resolves to {}, outside the dataset root {} (a \
                     symlink out of the dataset)",
                    f.display(),
                    c.display(),
                    canonical_root.display()
                )));
            }
        }
    }
    Ok(())
}

/// The files of a paper-layout dataset: every row of `data_split.csv` resolved to its image and
/// mask, and every problem (bad rows, rows leaving the dataset root), each naming its line. This
/// is the one file list: [`VesselDataset::open`] (train, eval) refuses the dataset on the first
/// problem, `salt data check` lists them all. Only a missing or unreadable CSV is an `Err`.
pub fn paper_entries(root: &Path) -> Result<(Vec<PaperEntry>, Vec<Error>)> {
    let csv = root.join("data_split.csv");
    if !csv.is_file() {
        return Err(Error::Missing {
            path: csv,
            what: "split file (make one with `salt data split`)".into(),
        });
    }
    let bytes = std::fs::read(&csv).map_err(|e| Error::io(&csv, e))?;
    let text = String::from_utf8(bytes).map_err(|_| Error::Csv {
        path: csv.clone(),
        line: 1,
        message: "not UTF-8 text".into(),
    })?;
    let (rows, mut problems) = parse_split_csv_lines(&text, &csv);
    let mut entries = Vec::new();
    for (line, r) in rows {
        let image = paper_image_path(root, &r.image);
        let mask = paper_mask_path(root, &image);
        match check_inside(root, &csv, line, &r.image, [&image, &mask]) {
            Ok(()) => entries.push(PaperEntry {
                line,
                split: r.split,
                image,
                mask,
            }),
            Err(e) => problems.push(e),
        }
    }
    Ok((entries, problems))
}

fn load_paper(root: &Path, split: Split) -> Result<Vec<VesselItem>> {
    let (entries, mut problems) = paper_entries(root)?;
    if !problems.is_empty() {
        return Err(problems.swap_remove(0));
    }
    entries
        .par_iter()
        .filter(|e| e.split == split)
        .map(|e| {
            let (image, mask) = load_pair(&e.image, &e.mask)?;
            Ok(item(stem_of(&e.image), image, mask, None))
        })
        .collect()
}

/// DRIVE's folder for a split: `training` for train, `test` for val/test.
pub fn drive_folder(split: Split) -> &'static str {
    match split {
        Split::Train => "training",
        Split::Val | Split::Test => "test",
    }
}

/// Paths of a DRIVE image's manual annotation and field-of-view mask:
/// `images/21_training.tif` → `1st_manual/21_manual1.gif`, `mask/21_training_mask.gif`.
pub fn drive_companions(dir: &Path, image: &Path) -> (PathBuf, PathBuf) {
    let stem = stem_of(image);
    let number = stem.split('_').next().unwrap_or(&stem).to_string();
    (
        dir.join("1st_manual").join(format!("{number}_manual1.gif")),
        dir.join("mask").join(format!("{stem}_mask.gif")),
    )
}

fn sorted_files(dir: &Path, exts: &[&str]) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut files = Vec::new();
    for entry in rd {
        let p = entry.map_err(|e| Error::io(dir, e))?.path();
        let ext = p
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        if p.is_file() && exts.contains(&ext.as_str()) {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

/// The images of a DRIVE split folder (`training/` or `test/`): `images/*.{tif,tiff,png}`, sorted.
/// Training and `salt data check` read this one list.
pub fn drive_images(dir: &Path) -> Result<Vec<PathBuf>> {
    sorted_files(&dir.join("images"), &["tif", "tiff", "png"])
}

/// Errors with [`Error::OutsideRoot`] if `file` exists and resolves (through symlinks) outside
/// `root`. A symlink that stays inside the root is fine.
pub fn ensure_inside(root: &Path, file: &Path) -> Result<()> {
    let Ok(resolved) = std::fs::canonicalize(file) else {
        return Ok(());
    };
    let root_c = std::fs::canonicalize(root).map_err(|e| Error::io(root, e))?;
    if resolved.starts_with(&root_c) {
        Ok(())
    } else {
        Err(Error::OutsideRoot {
            path: file.to_path_buf(),
            resolved,
            root: root_c,
        })
    }
}

fn load_drive(root: &Path, split: Split) -> Result<Vec<VesselItem>> {
    let dir = root.join(drive_folder(split));
    let images = drive_images(&dir)?;
    images
        .par_iter()
        .map(|ip| {
            ensure_inside(root, ip)?;
            let (manual, fov_path) = drive_companions(&dir, ip);
            let (image, mask) = load_pair(ip, &manual)?;
            let fov = if fov_path.is_file() {
                Some(read_mask_for(&fov_path, &image, ip)?)
            } else {
                return Err(Error::Missing {
                    path: fov_path,
                    what: "DRIVE field-of-view mask".into(),
                });
            };
            Ok(item(stem_of(ip), image, mask, fov))
        })
        .collect()
}

/// The folder holding ARCADE's `images/` and `annotations/` for a split, if present:
/// `<root>/<split>` or `<root>/syntax/<split>` (zenodo 10390295 ships `arcade/syntax/...`).
pub fn arcade_root(root: &Path, split: Split) -> Option<PathBuf> {
    [
        root.join(split.name()),
        root.join("syntax").join(split.name()),
    ]
    .into_iter()
    .find(|d| arcade_json(d, split).is_file())
}

/// `<dir>/annotations/<split>.json`.
pub fn arcade_json(dir: &Path, split: Split) -> PathBuf {
    dir.join("annotations")
        .join(format!("{}.json", split.name()))
}

/// A COCO image entry with the union mask of its annotations.
#[derive(Debug, Clone)]
pub struct CocoImage {
    /// `file_name`.
    pub file_name: String,
    /// `width`.
    pub width: usize,
    /// `height`.
    pub height: usize,
    /// Union of all segment polygons, rasterised with [`fill_polygon`].
    pub mask: Mask,
}

fn ann_err(path: &Path, message: String) -> Error {
    Error::Annotation {
        path: path.to_path_buf(),
        message,
    }
}

/// Parses a COCO JSON (ARCADE) and rasterises, per image, the union of all annotations' polygons.
/// `path` is used in errors only.
pub fn parse_coco(text: &str, path: &Path) -> Result<Vec<CocoImage>> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| ann_err(path, format!("invalid JSON: {e}")))?;
    let images = v
        .get("images")
        .and_then(|i| i.as_array())
        .ok_or_else(|| ann_err(path, "no `images` array".into()))?;
    let anns = v
        .get("annotations")
        .and_then(|a| a.as_array())
        .ok_or_else(|| ann_err(path, "no `annotations` array".into()))?;
    let mut out = Vec::with_capacity(images.len());
    let mut by_id = std::collections::HashMap::new();
    for (i, im) in images.iter().enumerate() {
        let id = im
            .get("id")
            .and_then(|x| x.as_i64())
            .ok_or_else(|| ann_err(path, format!("images[{i}] has no integer `id`")))?;
        let file_name = im
            .get("file_name")
            .and_then(|x| x.as_str())
            .ok_or_else(|| ann_err(path, format!("images[{i}] has no `file_name`")))?;
        if !Path::new(file_name)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
        {
            return Err(ann_err(
                path,
                format!(
                    "images[{i}].file_name {file_name:?} leaves images/: absolute paths and `..` \
                     are not allowed"
                ),
            ));
        }
        let dim = |k: &str| -> Result<usize> {
            im.get(k)
                .and_then(|x| x.as_u64())
                .filter(|&d| d > 0 && d <= u64::from(crate::image_io::MAX_SIDE))
                .map(|d| d as usize)
                .ok_or_else(|| {
                    ann_err(
                        path,
                        format!("images[{i}] ({file_name}) has no valid `{k}`"),
                    )
                })
        };
        let (width, height) = (dim("width")?, dim("height")?);
        if by_id.insert(id, out.len()).is_some() {
            return Err(ann_err(path, format!("image id {id} appears twice")));
        }
        out.push(CocoImage {
            file_name: file_name.to_string(),
            width,
            height,
            mask: Mask::zeros(width, height),
        });
    }
    for (i, a) in anns.iter().enumerate() {
        let image_id = a
            .get("image_id")
            .and_then(|x| x.as_i64())
            .ok_or_else(|| ann_err(path, format!("annotations[{i}] has no integer `image_id`")))?;
        let &k = by_id.get(&image_id).ok_or_else(|| {
            ann_err(
                path,
                format!("annotations[{i}] names unknown image_id {image_id}"),
            )
        })?;
        let segs = a
            .get("segmentation")
            .and_then(|s| s.as_array())
            .ok_or_else(|| {
                ann_err(
                    path,
                    format!(
                        "annotations[{i}] has no polygon `segmentation` (RLE is not supported)"
                    ),
                )
            })?;
        for (j, poly) in segs.iter().enumerate() {
            let coords: Option<Vec<f64>> = poly
                .as_array()
                .map(|p| p.iter().map(|c| c.as_f64()).collect::<Option<Vec<_>>>())
                .unwrap_or(None);
            let coords = coords.filter(|c| c.len() >= 6 && c.len() % 2 == 0 && c.iter().all(|v| v.is_finite())).ok_or_else(|| {
                ann_err(path, format!("annotations[{i}].segmentation[{j}] is not a list of >= 3 (x, y) numbers"))
            })?;
            fill_polygon(&mut out[k].mask, &coords);
        }
    }
    Ok(out)
}

fn load_arcade(root: &Path, split: Split) -> Result<Vec<VesselItem>> {
    let dir = arcade_root(root, split).ok_or_else(|| Error::Missing {
        path: arcade_json(&root.join(split.name()), split),
        what: format!("ARCADE annotations for split {split} (also looked under syntax/)"),
    })?;
    let json = arcade_json(&dir, split);
    let text = std::fs::read_to_string(&json).map_err(|e| Error::io(&json, e))?;
    let entries = parse_coco(&text, &json)?;
    entries
        .into_par_iter()
        .map(|e| {
            let ip = dir.join("images").join(&e.file_name);
            ensure_inside(root, &ip)?;
            if !ip.is_file() {
                return Err(Error::Missing {
                    path: ip,
                    what: format!("image named in {}", json.display()),
                });
            }
            let image = read_image(&ip)?;
            if (image.width, image.height) != (e.width, e.height) {
                return Err(Error::MaskSize {
                    mask: json.clone(),
                    mask_w: e.width as u32,
                    mask_h: e.height as u32,
                    image: ip,
                    image_w: image.width as u32,
                    image_h: image.height as u32,
                });
            }
            Ok(item(stem_of(&ip), image, e.mask, None))
        })
        .collect()
}
