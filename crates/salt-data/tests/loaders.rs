//! Loaders turn bad input into typed errors that name the file (never a blank mask).

use std::path::Path;

use burn::data::dataset::Dataset;
use salt_data::image_io::{write_image, write_mask};
use salt_data::synth::{write_dataset_sized, Style, SynthLayout};
use salt_data::{Error, Image8, Mask, Split, VesselDataset};

fn paper(dir: &Path) {
    write_dataset_sized(dir, Style::Arcade, 4, 0, SynthLayout::Paper, 32).unwrap();
}

fn first_train(dir: &Path) -> String {
    let csv = std::fs::read_to_string(dir.join("data_split.csv")).unwrap();
    let line = csv.lines().find(|l| l.ends_with(",train")).unwrap();
    line.split(',')
        .next()
        .unwrap()
        .trim_end_matches(".png")
        .to_string()
}

#[test]
fn paper_layout_opens_and_items_carry_sizes() {
    let dir = tempfile::tempdir().unwrap();
    paper(dir.path());
    let ds = VesselDataset::open(dir.path(), Split::Train).unwrap();
    assert_eq!(ds.len(), 3);
    let it = ds.get(0).unwrap();
    assert_eq!(it.original_size, (32, 32));
    assert!(it.fov.is_none());
    assert!(matches!(
        VesselDataset::open(dir.path(), Split::Test),
        Err(Error::EmptySplit { .. })
    ));
}

#[test]
fn csv_naming_a_missing_file_is_an_error_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    paper(dir.path());
    let stem = first_train(dir.path());
    std::fs::remove_file(dir.path().join(format!("images/{stem}.png"))).unwrap();
    let err = VesselDataset::open(dir.path(), Split::Train).unwrap_err();
    assert!(matches!(err, Error::Missing { .. }), "{err}");
    assert!(err.to_string().contains(&format!("{stem}.png")), "{err}");
}

#[test]
fn missing_mask_wrong_size_and_rgba_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    paper(dir.path());
    let stem = first_train(dir.path());
    let mask = dir.path().join(format!("masks/{stem}_mask.png"));
    write_mask(&mask, &Mask::zeros(30, 32)).unwrap();
    let err = VesselDataset::open(dir.path(), Split::Train).unwrap_err();
    assert!(
        matches!(
            err,
            Error::MaskSize {
                mask_w: 30,
                image_w: 32,
                ..
            }
        ),
        "{err}"
    );
    // RGBA mask.
    let rgba = image::RgbaImage::new(32, 32);
    rgba.save(&mask).unwrap();
    let err = VesselDataset::open(dir.path(), Split::Train).unwrap_err();
    assert!(
        matches!(err, Error::PixelFormat { .. }) && err.to_string().contains("_mask.png"),
        "{err}"
    );
    std::fs::remove_file(&mask).unwrap();
    let err = VesselDataset::open(dir.path(), Split::Train).unwrap_err();
    assert!(err.to_string().contains("missing mask"), "{err}");
    // 16-bit image.
    write_mask(&mask, &Mask::zeros(32, 32)).unwrap();
    let img16 = image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::new(32, 32);
    img16
        .save(dir.path().join(format!("images/{stem}.png")))
        .unwrap();
    let err = VesselDataset::open(dir.path(), Split::Train).unwrap_err();
    assert!(err.to_string().contains("16-bit"), "{err}");
}

#[test]
fn unknown_split_in_csv_and_missing_csv_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    paper(dir.path());
    let csv = dir.path().join("data_split.csv");
    let text = std::fs::read_to_string(&csv)
        .unwrap()
        .replacen(",val", ",validation", 1);
    std::fs::write(&csv, text).unwrap();
    let err = VesselDataset::open(dir.path(), Split::Train).unwrap_err();
    assert!(
        matches!(err, Error::UnknownSplit { .. }) && err.to_string().contains("validation"),
        "{err}"
    );
    std::fs::remove_file(&csv).unwrap();
    let err = VesselDataset::open(dir.path(), Split::Train).unwrap_err();
    assert!(err.to_string().contains("data_split.csv"), "{err}");
}

#[test]
fn drive_without_fov_mask_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("training");
    write_image(&t.join("images/21_training.tif"), &Image8::zeros(8, 8, 3)).unwrap();
    write_mask(&t.join("1st_manual/21_manual1.gif"), &Mask::zeros(8, 8)).unwrap();
    let err = VesselDataset::open(dir.path(), Split::Train).unwrap_err();
    assert!(err.to_string().contains("21_training_mask.gif"), "{err}");
    write_mask(&t.join("mask/21_training_mask.gif"), &Mask::zeros(8, 8)).unwrap();
    let ds = VesselDataset::open(dir.path(), Split::Train).unwrap();
    assert_eq!(ds.items()[0].id, "21_training");
    assert!(ds.items()[0].fov.is_some());
}

#[test]
fn arcade_rle_and_unknown_image_id_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("train");
    write_image(&base.join("images/1.png"), &Image8::zeros(8, 8, 1)).unwrap();
    let json = base.join("annotations/train.json");
    std::fs::create_dir_all(json.parent().unwrap()).unwrap();
    let write = |v: serde_json::Value| std::fs::write(&json, v.to_string()).unwrap();
    let img = serde_json::json!([{"id": 1, "file_name": "1.png", "width": 8, "height": 8}]);
    write(
        serde_json::json!({"images": img, "annotations": [{"image_id": 1, "segmentation": {"counts": [], "size": [8, 8]}}]}),
    );
    let err = VesselDataset::open(dir.path(), Split::Train).unwrap_err();
    assert!(
        err.to_string().contains("train.json") && err.to_string().contains("RLE"),
        "{err}"
    );
    write(
        serde_json::json!({"images": img, "annotations": [{"image_id": 7, "segmentation": [[0, 0, 4, 0, 4, 4]]}]}),
    );
    let err = VesselDataset::open(dir.path(), Split::Train).unwrap_err();
    assert!(err.to_string().contains("unknown image_id 7"), "{err}");
    write(
        serde_json::json!({"images": img, "annotations": [{"image_id": 1, "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]]}]}),
    );
    let ds = VesselDataset::open(dir.path(), Split::Train).unwrap();
    assert_eq!(ds.items()[0].mask.count(), 16);
}
