//! `salt data import`: converts a folder of image/mask pairs into the paper's layout, for datasets
//! whose published layout we could not confirm (ROSE, DIAS, XRay-Angio) or any other source.
//!
//! Pairs are matched by name: the mask of `images/<stem>.<ext>` is the file in the mask folder
//! whose stem is `<stem><mask_suffix>` (any supported extension). Images and masks may share one
//! folder (XRay-Angio ships `1.pgm` next to `1_gt.pgm`: `--mask-suffix _gt`). Images are written
//! as PNG (grey stays grey), masks as 0/255 PNG, then a seeded split is written to
//! `data_split.csv`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::image_io::{read_image, read_mask_for, write_image, write_mask};
use crate::split::{seeded_split, write_split_csv};
use crate::{Error, Result};

/// Extensions read by the importer.
pub const IMAGE_EXTENSIONS: [&str; 8] = ["png", "tif", "tiff", "gif", "jpg", "jpeg", "bmp", "pgm"];

/// What to import.
#[derive(Debug, Clone)]
pub struct ImportSpec {
    /// Folder of images.
    pub images: PathBuf,
    /// Folder of masks (may equal `images`).
    pub masks: PathBuf,
    /// Suffix of a mask's stem after the image stem (e.g. `_mask`, `_gt`, or empty).
    pub mask_suffix: String,
    /// Train count of the seeded split (`None`: 70 %).
    pub n_train: Option<usize>,
    /// Test (`val`) count (`None`: the rest).
    pub n_test: Option<usize>,
    /// Split seed.
    pub seed: u64,
}

fn files(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut v = Vec::new();
    for e in rd {
        let p = e.map_err(|e| Error::io(dir, e))?.path();
        let ext = p
            .extension()
            .map(|x| x.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        if p.is_file() && IMAGE_EXTENSIONS.contains(&ext.as_str()) {
            v.push(p);
        }
    }
    v.sort();
    Ok(v)
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Imports the pairs described by `spec` into `out` (paper layout) and returns the number of
/// pairs. An image without a mask, a mask of another size or an unreadable file is an error.
///
/// `out` must not exist or be an empty folder. The dataset is written into a temporary folder
/// beside it (`.<name>.tmp-<pid>`) and renamed to `out` at the end, so a failed import leaves
/// nothing under `out` (and removes its temporary).
pub fn import(spec: &ImportSpec, out: &Path) -> Result<usize> {
    if out.exists() {
        let empty = std::fs::read_dir(out)
            .map_err(|e| Error::io(out, e))?
            .next()
            .is_none();
        if !empty {
            return Err(Error::Invalid {
                what: "--out",
                message: format!(
                    "{} exists and is not empty; import into a new folder",
                    out.display()
                ),
            });
        }
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "import".into());
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let result = import_into(spec, &tmp).and_then(|n| {
        if out.exists() {
            std::fs::remove_dir(out).map_err(|e| Error::io(out, e))?;
        }
        std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))?;
        Ok(n)
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    if let Ok(n) = result {
        tracing::info!(n, out = %out.display(), "imported");
    }
    result
}

fn import_into(spec: &ImportSpec, out: &Path) -> Result<usize> {
    let masks: HashMap<String, PathBuf> = files(&spec.masks)?
        .into_iter()
        .map(|p| (stem(&p), p))
        .collect();
    let mut pairs = Vec::new();
    for ip in files(&spec.images)? {
        let s = stem(&ip);
        // In a shared folder, skip the masks themselves.
        if spec.images == spec.masks
            && !spec.mask_suffix.is_empty()
            && s.ends_with(&spec.mask_suffix)
        {
            continue;
        }
        let key = format!("{s}{}", spec.mask_suffix);
        let mp = masks.get(&key).cloned().ok_or_else(|| Error::Missing {
            path: spec.masks.join(format!("{key}.<ext>")),
            what: format!("mask for image {}", ip.display()),
        })?;
        if mp == ip {
            return Err(Error::Invalid {
                what: "--mask-suffix",
                message: format!("image {} would be its own mask", ip.display()),
            });
        }
        pairs.push((s, ip, mp));
    }
    if pairs.is_empty() {
        return Err(Error::Missing {
            path: spec.images.clone(),
            what: "images to import".into(),
        });
    }
    pairs.par_iter().try_for_each(|(s, ip, mp)| {
        let img = read_image(ip)?;
        let mask = read_mask_for(mp, &img, ip)?;
        write_image(&out.join("images").join(format!("{s}.png")), &img)?;
        write_mask(&out.join("masks").join(format!("{s}_mask.png")), &mask)
    })?;
    let names: Vec<String> = pairs.iter().map(|(s, _, _)| format!("{s}.png")).collect();
    let n_train = spec
        .n_train
        .unwrap_or_else(|| crate::synth::train_count(names.len()));
    let n_test = spec.n_test.unwrap_or(names.len().saturating_sub(n_train));
    let rows = seeded_split(&names, n_train, n_test, spec.seed)?;
    write_split_csv(&out.join("data_split.csv"), &rows)?;
    Ok(pairs.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::VesselDataset;
    use crate::image_io::{write_image, write_mask};
    use crate::split::Split;
    use crate::{Image8, Mask};

    #[test]
    fn imports_shared_folder_with_suffix() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        for i in 1..=5 {
            write_image(&src.join(format!("{i}.tif")), &Image8::zeros(8, 6, 1)).unwrap();
            let mut m = Mask::zeros(8, 6);
            m.data[i] = 1;
            write_mask(&src.join(format!("{i}_gt.png")), &m).unwrap();
        }
        let out = dir.path().join("out");
        let spec = ImportSpec {
            images: src.clone(),
            masks: src.clone(),
            mask_suffix: "_gt".into(),
            n_train: Some(3),
            n_test: Some(2),
            seed: 1,
        };
        assert_eq!(import(&spec, &out).unwrap(), 5);
        let train = VesselDataset::open(&out, Split::Train).unwrap();
        assert_eq!(train.items().len(), 3);
        for it in train.items() {
            let i: usize = it.id.parse().unwrap();
            assert_eq!(it.mask.data[i], 1);
        }
        // An image without mask is an error naming it.
        write_image(&src.join("9.tif"), &Image8::zeros(8, 6, 1)).unwrap();
        let err = import(&spec, &dir.path().join("out2")).unwrap_err();
        assert!(err.to_string().contains("9.tif"), "{err}");
    }
}
