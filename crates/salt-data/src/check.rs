//! `salt data check`: validates a dataset and lists every problem with its path, instead of
//! stopping at the first.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::dataset::{
    arcade_json, arcade_root, drive_companions, drive_folder, drive_images, ensure_inside,
    paper_entries, parse_coco, Layout,
};
use crate::image_io::{read_image, read_mask_for};
use crate::split::Split;
use crate::Error;

/// One problem found in a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file or folder concerned.
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

impl From<Error> for Problem {
    fn from(e: Error) -> Self {
        let path = match &e {
            Error::Io { path, .. }
            | Error::Decode { path, .. }
            | Error::Truncated { path, .. }
            | Error::OutsideRoot { path, .. }
            | Error::PixelFormat { path, .. }
            | Error::Missing { path, .. }
            | Error::Csv { path, .. }
            | Error::UnknownSplit { path, .. }
            | Error::EmptySplit { path, .. }
            | Error::Annotation { path, .. }
            | Error::Encode { path, .. } => path.clone(),
            Error::MaskSize { mask, .. } => mask.clone(),
            Error::Invalid { .. } | Error::Prefetch(_) => PathBuf::new(),
        };
        // The Display of every variant already starts with the path: keep only the rest.
        let text = e.to_string();
        let prefix = format!("{}: ", path.display());
        let message = match text.strip_prefix(&prefix) {
            Some(rest) => rest.to_string(),
            // `path:line: ...` (CSV errors).
            None => match text.strip_prefix(&format!("{}:", path.display())) {
                Some(rest) => format!("line {rest}"),
                None => text,
            },
        };
        Problem { path, message }
    }
}

/// Summary of a check: the layout, item counts per split, and every problem.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The layout found (None if none was recognised).
    pub layout: Option<Layout>,
    /// `(split, number of readable image/mask pairs)`.
    pub counts: Vec<(Split, usize)>,
    /// Everything wrong, sorted by path.
    pub problems: Vec<Problem>,
}

fn problem(path: impl Into<PathBuf>, message: impl Into<String>) -> Problem {
    Problem {
        path: path.into(),
        message: message.into(),
    }
}

/// Checks an image/mask pair: both exist, decode, are of an accepted format and the same size.
fn check_pair(image: &Path, mask: &Path, out: &mut Vec<Problem>) -> bool {
    let mut ok = true;
    if !mask.is_file() {
        out.push(problem(
            mask,
            format!("missing mask for image {}", image.display()),
        ));
        ok = false;
    }
    let img = match read_image(image) {
        Ok(img) => img,
        Err(e) => {
            out.push(e.into());
            return false;
        }
    };
    if ok {
        if let Err(e) = read_mask_for(mask, &img, image) {
            out.push(e.into());
            ok = false;
        }
    }
    ok
}

fn list_dir(dir: &Path, out: &mut Vec<Problem>) -> Vec<PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(rd) => {
            let mut v: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            v.sort();
            v
        }
        Err(e) => {
            out.push(Error::io(dir, e).into());
            Vec::new()
        }
    }
}

/// Checks the dataset at `root` (layout detected) and returns every problem found.
pub fn check(root: &Path) -> Report {
    let layout = match Layout::detect(root) {
        Ok(l) => l,
        Err(e) => {
            return Report {
                layout: None,
                counts: Vec::new(),
                problems: vec![e.into()],
            }
        }
    };
    let mut report = match layout {
        Layout::Paper => check_paper(root),
        Layout::Drive => check_drive(root),
        Layout::Arcade => check_arcade(root),
    };
    report.layout = Some(layout);
    report
        .problems
        .sort_by(|a, b| a.path.cmp(&b.path).then(a.message.cmp(&b.message)));
    report.problems.dedup();
    report
}

fn check_paper(root: &Path) -> Report {
    let mut problems = Vec::new();
    let images = list_dir(&root.join("images"), &mut problems);
    let masks = list_dir(&root.join("masks"), &mut problems);
    let image_stems: HashSet<String> = images
        .iter()
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    for m in &masks {
        let name = m
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        match name
            .rsplit_once('.')
            .map(|(s, _)| s)
            .and_then(|s| s.strip_suffix("_mask"))
        {
            Some(stem) if image_stems.contains(stem) => {}
            Some(_) => problems.push(problem(m, "mask without an image in images/")),
            None => problems.push(problem(m, "not named <stem>_mask.<ext>")),
        }
    }
    // The rows, exactly as training reads them (`paper_entries`): each pair is decoded.
    let (entries, row_problems) = match paper_entries(root) {
        Ok(v) => v,
        Err(e) => {
            problems.push(e.into());
            return Report {
                layout: None,
                counts: Vec::new(),
                problems,
            };
        }
    };
    problems.extend(row_problems.into_iter().map(Into::into));
    let csv = root.join("data_split.csv");
    let results: Vec<(bool, Vec<Problem>)> = entries
        .par_iter()
        .map(|e| {
            let mut p = Vec::new();
            if !e.image.is_file() {
                p.push(problem(
                    &csv,
                    format!("line {}: names missing file {}", e.line, e.image.display()),
                ));
                return (false, p);
            }
            let ok = check_pair(&e.image, &e.mask, &mut p);
            (ok, p)
        })
        .collect();
    let mut counts = Vec::new();
    let mut ok_by_split = std::collections::HashMap::<Split, usize>::new();
    for (e, (ok, p)) in entries.iter().zip(results) {
        problems.extend(p);
        if ok {
            *ok_by_split.entry(e.split).or_default() += 1;
        }
    }
    for split in [Split::Train, Split::Val, Split::Test] {
        counts.push((split, ok_by_split.get(&split).copied().unwrap_or(0)));
    }
    for split in [Split::Train, Split::Val] {
        if !entries.iter().any(|e| e.split == split) {
            problems.push(problem(
                &csv,
                format!("split {split:?} is empty").to_lowercase(),
            ));
        }
    }
    let listed: HashSet<&PathBuf> = entries.iter().map(|e| &e.image).collect();
    for ip in &images {
        if !listed.contains(ip) {
            problems.push(problem(ip, "image not listed in data_split.csv"));
        }
    }
    Report {
        layout: None,
        counts,
        problems,
    }
}

fn check_drive(root: &Path) -> Report {
    let mut problems = Vec::new();
    let mut counts = Vec::new();
    for split in [Split::Train, Split::Test] {
        let dir = root.join(drive_folder(split));
        if !dir.join("images").is_dir() {
            problems.push(problem(
                dir.join("images"),
                "missing DRIVE folder (split is empty)",
            ));
            continue;
        }
        // The list training reads (`drive_images`); anything else in the folder is reported.
        let images = match drive_images(&dir) {
            Ok(v) => v,
            Err(e) => {
                problems.push(e.into());
                Vec::new()
            }
        };
        for other in list_dir(&dir.join("images"), &mut problems) {
            if !images.contains(&other) {
                problems.push(problem(
                    &other,
                    "not a DRIVE image (.tif, .tiff, .png): training ignores it",
                ));
            }
        }
        if images.is_empty() {
            problems.push(problem(
                dir.join("images"),
                format!("split {split} is empty"),
            ));
        }
        let results: Vec<(bool, Vec<Problem>)> = images
            .par_iter()
            .map(|ip| {
                let mut p = Vec::new();
                if let Err(e) = ensure_inside(root, ip) {
                    p.push(e.into());
                    return (false, p);
                }
                let (manual, fov) = drive_companions(&dir, ip);
                let mut ok = check_pair(ip, &manual, &mut p);
                ok &= check_pair(ip, &fov, &mut p);
                (ok, p)
            })
            .collect();
        let mut n = 0;
        for (ok, p) in results {
            n += usize::from(ok);
            problems.extend(p.into_iter().map(|mut p| {
                p.message = p.message.replace(
                    "missing mask for image",
                    "missing DRIVE annotation/FOV for image",
                );
                p
            }));
        }
        counts.push((split, n));
    }
    Report {
        layout: None,
        counts,
        problems,
    }
}

fn check_arcade(root: &Path) -> Report {
    let mut problems = Vec::new();
    let mut counts = Vec::new();
    for split in [Split::Train, Split::Val, Split::Test] {
        let Some(dir) = arcade_root(root, split) else {
            if split != Split::Test {
                problems.push(problem(
                    arcade_json(&root.join(split.name()), split),
                    format!("missing ARCADE annotations: split {split} is empty"),
                ));
            }
            continue;
        };
        let json = arcade_json(&dir, split);
        let entries = match std::fs::read_to_string(&json)
            .map_err(|e| Error::io(&json, e))
            .and_then(|t| parse_coco(&t, &json))
        {
            Ok(e) => e,
            Err(e) => {
                problems.push(e.into());
                continue;
            }
        };
        if entries.is_empty() {
            problems.push(problem(&json, format!("split {split} is empty")));
        }
        let mut n = 0;
        for e in &entries {
            let ip = dir.join("images").join(&e.file_name);
            if let Err(err) = ensure_inside(root, &ip) {
                problems.push(err.into());
                continue;
            }
            match read_image(&ip) {
                Err(err) => problems.push(err.into()),
                Ok(img) if (img.width, img.height) != (e.width, e.height) => {
                    problems.push(problem(
                        &ip,
                        format!(
                            "image is {}x{} but {} says {}x{}",
                            img.width,
                            img.height,
                            json.display(),
                            e.width,
                            e.height
                        ),
                    ))
                }
                Ok(_) if e.mask.count() == 0 => {
                    problems.push(problem(&ip, "no vessel annotated (blank mask)"))
                }
                Ok(_) => n += 1,
            }
        }
        counts.push((split, n));
    }
    Report {
        layout: None,
        counts,
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image_io::{write_image, write_mask};
    use crate::synth::{write_dataset_sized, Style, SynthLayout};
    use crate::{Image8, Mask};

    #[test]
    fn clean_synthetic_dataset_has_no_problem() {
        let dir = tempfile::tempdir().unwrap();
        write_dataset_sized(dir.path(), Style::XrayAngio, 6, 2, SynthLayout::Paper, 32).unwrap();
        let r = check(dir.path());
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.counts[..2], [(Split::Train, 4), (Split::Val, 2)]);
    }

    #[test]
    fn lists_every_problem_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write_dataset_sized(root, Style::XrayAngio, 4, 2, SynthLayout::Paper, 32).unwrap();
        // Missing mask, mask of another size, corrupt image, orphan mask, CSV naming a missing file,
        // unknown split (reported as a CSV problem), unlisted image.
        std::fs::remove_file(root.join("masks/xray-angio_0000_mask.png")).unwrap();
        write_mask(
            &root.join("masks/xray-angio_0001_mask.png"),
            &Mask::zeros(31, 32),
        )
        .unwrap();
        std::fs::write(
            root.join("images/xray-angio_0002.png"),
            b"\x89PNG\r\n\x1a\ntruncated",
        )
        .unwrap();
        write_mask(&root.join("masks/orphan_mask.png"), &Mask::zeros(32, 32)).unwrap();
        write_image(&root.join("images/extra.png"), &Image8::zeros(32, 32, 1)).unwrap();
        write_mask(&root.join("masks/extra_mask.png"), &Mask::zeros(32, 32)).unwrap();
        let csv = std::fs::read_to_string(root.join("data_split.csv")).unwrap();
        std::fs::write(
            root.join("data_split.csv"),
            format!("{csv}ghost.png,train\n"),
        )
        .unwrap();
        let r = check(root);
        let text: Vec<String> = r.problems.iter().map(|p| p.to_string()).collect();
        let has = |needle: &str| text.iter().any(|t| t.contains(needle));
        assert!(has("xray-angio_0000_mask.png: missing mask"), "{text:#?}");
        assert!(has("xray-angio_0001_mask.png: mask is 31x32"), "{text:#?}");
        assert!(has("xray-angio_0002.png: cannot decode"), "{text:#?}");
        assert!(has("orphan_mask.png: mask without an image"), "{text:#?}");
        assert!(has("ghost.png"), "{text:#?}");
        assert!(has("extra.png: image not listed"), "{text:#?}");
        // Every bad row of the CSV at once: an unknown split, a missing file, a duplicate.
        std::fs::write(
            root.join("data_split.csv"),
            format!("{csv}extra.png,holdout\nghost.png,train\nghost.png,val\n"),
        )
        .unwrap();
        let r = check(root);
        let text: Vec<String> = r.problems.iter().map(|p| p.to_string()).collect();
        let has = |needle: &str| text.iter().any(|t| t.contains(needle));
        assert!(has("unknown split \"holdout\""), "{text:#?}");
        assert!(has("names missing file"), "{text:#?}");
        assert!(has("\"ghost.png\" listed twice"), "{text:#?}");
    }
}
