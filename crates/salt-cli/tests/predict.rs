//! `salt predict` end to end on the tiny SAM fixtures of salt-sam (made by
//! `scripts/sam_reference.py --preset tiny`, Meta's `segment-anything`).

use std::path::{Path, PathBuf};
use std::process::Command;

use safetensors::SafeTensors;

/// Relative L2 error allowed on the logits (as salt-sam's parity tests).
const TOL_LOGITS: f64 = 1e-4;
/// The bound on the resize: at most one grey level from PIL's output.
const MAX_RESIZE_DIFF: u8 = 1;
/// Thresholded masks must agree wherever the reference logit is farther than this from 0.
const MASK_MARGIN: f32 = 1e-2;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../salt-sam/tests/fixtures/tiny")
}

fn salt(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_salt"))
        .args(args)
        .output()
        .expect("run salt");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn f32s(st: &SafeTensors, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = st
        .tensor(name)
        .unwrap_or_else(|_| panic!("no tensor `{name}`"));
    let v = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (t.shape().to_vec(), v)
}

fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den).sqrt()
}

#[test]
fn resize_is_within_one_grey_level_of_pil() {
    let image = salt_data::image_io::read_image(&fixtures().join("image.png"))
        .unwrap()
        .to_rgb();
    let (h, w) = salt_data::resize::longest_side_size(image.height, image.width, 128);
    let ours = salt_data::resize::resize_rgb8(&image.data, image.width, image.height, 3, w, h);
    let bytes = std::fs::read(fixtures().join("reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let reference = st.tensor("input_resized").unwrap();
    assert_eq!(reference.shape(), &[h, w, 3]);
    let max = ours
        .iter()
        .zip(reference.data())
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    assert!(
        max <= MAX_RESIZE_DIFF,
        "resize differs from PIL by {max} grey levels"
    );
}

#[test]
fn predict_matches_the_reference_and_writes_every_output() {
    let dir = tempfile::tempdir().unwrap();
    let fx = fixtures();
    let (mask, overlay, logits) = (
        dir.path().join("mask.png"),
        dir.path().join("overlay.png"),
        dir.path().join("l.safetensors"),
    );
    // The reference's "point" case: (0.4·160, 0.5·120) = (64, 60), foreground.
    let (ok, stdout, stderr) = salt(&[
        "predict",
        "--checkpoint",
        fx.join("checkpoint.pth").to_str().unwrap(),
        "--model",
        "tiny",
        "--image",
        fx.join("image.png").to_str().unwrap(),
        "--point",
        "64,60",
        "--multimask",
        "--out",
        mask.to_str().unwrap(),
        "--overlay",
        overlay.to_str().unwrap(),
        "--save-logits",
        logits.to_str().unwrap(),
    ]);
    assert!(ok, "salt predict failed: {stderr}");

    let ref_bytes = std::fs::read(fx.join("reference.safetensors")).unwrap();
    let reference = SafeTensors::deserialize(&ref_bytes).unwrap();
    let out_bytes = std::fs::read(&logits).unwrap();
    let out = SafeTensors::deserialize(&out_bytes).unwrap();
    for (name, key) in [
        ("image_embedding", "image_embedding"),
        ("low_res_logits", "point.multi.low_res_logits"),
        ("masks_logits", "point.multi.masks_logits"),
    ] {
        let (shape, ours) = f32s(&out, name);
        let (ref_shape, theirs) = f32s(&reference, key);
        assert_eq!(shape, ref_shape, "{name}");
        let err = rel_l2(&ours, &theirs);
        assert!(err <= TOL_LOGITS, "{name}: relative L2 error {err:.3e}");
    }
    let (iou_shape, iou) = f32s(&out, "iou_predictions");
    assert_eq!(iou_shape, vec![1, 3]);
    let best = (0..3).max_by(|&a, &b| iou[a].total_cmp(&iou[b])).unwrap();
    assert!(stdout.contains(&format!("mask {best} of 3")), "{stdout}");

    // The PNG is the best-IoU reference mask, thresholded at 0 (original size 160×120).
    let written = salt_data::image_io::read_mask(&mask).unwrap();
    assert_eq!((written.width, written.height), (160, 120));
    let (_, theirs) = f32s(&reference, "point.multi.masks_logits");
    let plane = &theirs[best * 160 * 120..(best + 1) * 160 * 120];
    let differing = plane
        .iter()
        .zip(&written.data)
        .filter(|(l, m)| l.abs() > MASK_MARGIN && ((**l > 0.0) != (**m != 0)))
        .count();
    assert_eq!(differing, 0);
    let tinted = salt_data::image_io::read_image(&overlay).unwrap();
    assert_eq!(
        (tinted.width, tinted.height, tinted.channels),
        (160, 120, 3)
    );
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let fx = fixtures();
    let ckpt = fx.join("checkpoint.pth");
    let image = fx.join("image.png");
    let out = dir.path().join("m.png");
    let run = |image: &Path, point: &str, model: &str| {
        salt(&[
            "predict",
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--model",
            model,
            "--image",
            image.to_str().unwrap(),
            "--point",
            point,
            "--out",
            out.to_str().unwrap(),
        ])
    };
    let garbage = dir.path().join("broken.png");
    std::fs::write(&garbage, b"\x89PNG not really").unwrap();
    let (ok, _, err) = run(&garbage, "1,1", "tiny");
    assert!(!ok && err.contains("broken.png"), "{err}");
    let (ok, _, err) = run(&dir.path().join("missing.png"), "1,1", "tiny");
    assert!(!ok && err.contains("missing.png"), "{err}");
    let (ok, _, err) = run(&image, "160,10", "tiny");
    assert!(!ok && err.contains("outside the image"), "{err}");
    let (ok, _, err) = run(&image, "10,10", "vit_b");
    assert!(!ok && err.contains("--model tiny"), "{err}");
    assert!(!out.exists());
}

/// `salt predict` with `--save-logits` on `model_args`; returns the logits and the mask bytes.
fn predict_logits(dir: &Path, name: &str, model_args: &[&str]) -> (Vec<f32>, Vec<u8>) {
    let (mask, logits) = (
        dir.join(format!("{name}.png")),
        dir.join(format!("{name}.safetensors")),
    );
    let image = fixtures().join("image.png");
    let mut args = vec!["predict"];
    args.extend_from_slice(model_args);
    args.extend_from_slice(&[
        "--image",
        image.to_str().unwrap(),
        "--point",
        "64,60",
        "--out",
        mask.to_str().unwrap(),
        "--save-logits",
        logits.to_str().unwrap(),
    ]);
    let (ok, _, stderr) = salt(&args);
    assert!(ok, "salt {args:?} failed: {stderr}");
    let bytes = std::fs::read(&logits).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    (f32s(&st, "masks_logits").1, std::fs::read(&mask).unwrap())
}

/// Writes 4 synthetic angiograms (96 px) to `d/data` and trains one epoch of Meta's tiny
/// checkpoint on them with `method_args`; returns the dataset and the run directory.
fn train_tiny(d: &Path, seed: u64, method_args: &[&str]) -> (PathBuf, PathBuf) {
    let data = d.join("data");
    salt_data::synth::write_dataset_sized(
        &data,
        salt_data::synth::Style::parse("xray-angio").unwrap(),
        4,
        seed,
        salt_data::synth::SynthLayout::Paper,
        96,
    )
    .unwrap();
    let base = fixtures().join("checkpoint.pth");
    let run = d.join("run");
    let mut args = vec![
        "train",
        "--data",
        data.to_str().unwrap(),
        "--model",
        "tiny",
        "--checkpoint",
        base.to_str().unwrap(),
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--out",
        run.to_str().unwrap(),
    ];
    args.extend_from_slice(method_args);
    let (ok, stdout, stderr) = salt(&args);
    assert!(ok, "salt {args:?} failed: {stderr}");
    assert!(stdout.contains("\"best_dice\""), "{stdout}");
    assert!(run.join("last/adapter.safetensors").is_file());
    (data, run)
}

#[test]
fn an_adapter_predicts_directly_and_exported_merged() {
    // A SALT adapter on Meta's tiny checkpoint, trained a few steps; `predict --adapter`, and the
    // `export-merged` checkpoint run by plain `predict --checkpoint`, give the same masks.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (data, run) = train_tiny(
        d,
        3,
        &[
            "--method",
            "salt",
            "--svd-rank",
            "4",
            "--rank",
            "2",
            "--lr",
            "0.01",
        ],
    );
    let base = fixtures().join("checkpoint.pth");
    let adapter = run.join("last");

    let merged = d.join("merged.safetensors");
    let (ok, stdout, stderr) = salt(&[
        "export-merged",
        "--adapter",
        adapter.to_str().unwrap(),
        "--out",
        merged.to_str().unwrap(),
    ]);
    assert!(ok, "salt export-merged failed: {stderr}");
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["model"], "tiny");
    assert_eq!(summary["method"], "salt");
    assert!(summary["merged_layers"].as_u64().unwrap() > 0, "{summary}");

    let (plain, _) = predict_logits(
        d,
        "plain",
        &["--checkpoint", base.to_str().unwrap(), "--model", "tiny"],
    );
    let (direct, direct_mask) =
        predict_logits(d, "direct", &["--adapter", adapter.to_str().unwrap()]);
    // No --model: the exported file names its preset.
    let (exported, exported_mask) =
        predict_logits(d, "exported", &["--checkpoint", merged.to_str().unwrap()]);
    let moved = rel_l2(&direct, &plain);
    assert!(moved > 1e-3, "the adapter changed nothing ({moved:.2e})");
    let err = rel_l2(&exported, &direct);
    assert!(
        err < 1e-6,
        "merged export differs from the adapter: {err:.2e}"
    );
    assert_eq!(exported_mask, direct_mask);

    // Without prompts, `predict --adapter` is the model `salt eval` measures: same pre-processing
    // (min–max, as in training), same mask for a validation image.
    let ev = d.join("eval");
    let (ok, _, stderr) = salt(&[
        "eval",
        "--adapter",
        adapter.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        ev.to_str().unwrap(),
    ]);
    assert!(ok, "salt eval failed: {stderr}");
    let evaluated = std::fs::read_dir(ev.join("masks"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let id = evaluated
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .trim_end_matches("_mask.png")
        .to_string();
    let predicted = d.join("predicted.png");
    let (ok, _, stderr) = salt(&[
        "predict",
        "--adapter",
        adapter.to_str().unwrap(),
        "--image",
        data.join(format!("images/{id}.png")).to_str().unwrap(),
        "--out",
        predicted.to_str().unwrap(),
    ]);
    assert!(ok, "salt predict failed: {stderr}");
    let a = salt_data::image_io::read_mask(&evaluated).unwrap();
    let b = salt_data::image_io::read_mask(&predicted).unwrap();
    assert_eq!((a.width, a.height), (b.width, b.height));
    assert_eq!(
        a.data, b.data,
        "predict --adapter and eval disagree on {id}"
    );
}

#[test]
fn export_and_adapter_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-run/best");
    let (ok, _, err) = salt(&[
        "export-merged",
        "--adapter",
        missing.to_str().unwrap(),
        "--out",
        dir.path().join("m.safetensors").to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("no-such-run"), "{err}");
    let (ok, _, err) = salt(&[
        "export-merged",
        "--adapter",
        missing.to_str().unwrap(),
        "--out",
        dir.path().join("m.pth").to_str().unwrap(),
    ]);
    assert!(!ok && err.contains(".safetensors"), "{err}");
    let (ok, _, err) = salt(&[
        "predict",
        "--image",
        "x.png",
        "--out",
        dir.path().join("m.png").to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("--checkpoint"), "{err}");
}

/// flex, burn's other CPU backend, trains and predicts through the binary (the library's unit
/// tests run on ndarray only) and agrees with ndarray.
#[cfg(feature = "flex")]
#[test]
fn flex_trains_and_predicts_like_ndarray() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    train_tiny(
        d,
        5,
        &["--method", "lora", "--rank", "2", "--device", "flex"],
    );
    let base = fixtures().join("checkpoint.pth");
    let model = ["--checkpoint", base.to_str().unwrap(), "--model", "tiny"];
    let (cpu, _) = predict_logits(d, "cpu", &[&model[..], &["--device", "cpu"]].concat());
    let (flex, _) = predict_logits(d, "flex", &[&model[..], &["--device", "flex"]].concat());
    let err = rel_l2(&flex, &cpu);
    assert!(err <= TOL_LOGITS, "flex vs ndarray: relative L2 {err:.3e}");
    let differing = cpu
        .iter()
        .zip(&flex)
        .filter(|(c, f)| c.abs() > MASK_MARGIN && (**c > 0.0) != (**f > 0.0))
        .count();
    assert_eq!(differing, 0, "thresholded masks differ");
}
