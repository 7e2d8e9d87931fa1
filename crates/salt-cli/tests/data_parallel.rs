//! `salt train --device cpu,cpu`: data-parallel training through the binary trains, writes and
//! resumes like one device with the same global batch (the equivalence itself, for SALT and
//! LoRA on 2 and 3 replicas, is tested in train/run.rs).

mod common;

use std::path::{Path, PathBuf};

use common::{f32_tensors, salt, synth_dataset};

/// Summation order across replicas (see train/run.rs, `DATA_PARALLEL_TOL`).
const DATA_PARALLEL_TOL: f32 = 1e-5;

fn dataset(d: &Path) -> PathBuf {
    synth_dataset(d.join("data"), 7, 5)
}

fn train(data: &Path, out: &Path, extra: &[&str]) -> (bool, String, String) {
    let mut args = vec![
        "train",
        "--data",
        data.to_str().unwrap(),
        "--model",
        "tiny_salt_paper",
        "--method",
        "salt",
        "--svd-rank",
        "4",
        "--rank",
        "4",
        "--batch-size",
        "3",
        "--lr",
        "0.003",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    salt(&args)
}

fn max_diff(a: &Path, b: &Path) -> f32 {
    let (ta, tb) = (f32_tensors(a), f32_tensors(b));
    assert_eq!(ta.len(), tb.len());
    ta.iter()
        .zip(&tb)
        .flat_map(|((na, _, va), (nb, _, vb))| {
            assert_eq!(na, nb);
            va.iter().zip(vb).map(|(x, y)| (x - y).abs())
        })
        .fold(0.0, f32::max)
}

#[test]
fn two_cpu_replicas_train_checkpoint_and_resume_like_one_device() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let one = dir.path().join("one");
    let (ok, stdout, err) = train(&data, &one, &["--epochs", "2", "--device", "cpu"]);
    assert!(ok, "{err}");
    let one_steps = serde_json::from_str::<serde_json::Value>(&stdout).unwrap()["steps"]
        .as_u64()
        .unwrap();

    // Two replicas, stopped after epoch 1 and resumed to epoch 2 on two devices again.
    let two = dir.path().join("two");
    let (ok, stdout, err) = train(&data, &two, &["--epochs", "1", "--devices", "cpu,cpu"]);
    assert!(ok, "{err}");
    assert!(err.contains("data-parallel replicas ready"), "{err}");
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["steps"].as_u64(), Some(one_steps / 2), "{stdout}");
    let config = std::fs::read_to_string(two.join("config.toml")).unwrap();
    assert!(config.contains("device = \"cpu,cpu\""), "{config}");
    let (ok, stdout, err) = train(
        &data,
        &two,
        &["--epochs", "2", "--devices", "cpu,cpu", "--resume"],
    );
    assert!(ok, "{err}");
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (summary["epochs"].as_u64(), summary["steps"].as_u64()),
        (Some(2), Some(one_steps))
    );

    let weights = |run: &Path| run.join("last").join("adapter.safetensors");
    let d = max_diff(&weights(&one), &weights(&two));
    assert!(d < DATA_PARALLEL_TOL, "2 replicas vs one device: {d:e}");
    // One metrics.csv, one row per epoch, written by the main replica only.
    let rows = |run: &Path| std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert_eq!(rows(&two).lines().count(), 3);
    let loss = |csv: String| -> Vec<f64> {
        csv.lines()
            .skip(1)
            .map(|l| l.split(',').nth(3).unwrap().parse().unwrap())
            .collect()
    };
    for (a, b) in loss(rows(&one)).iter().zip(loss(rows(&two))) {
        assert!((a - b).abs() < 1e-5, "epoch loss {a} vs {b}");
    }

    // The device may change on --resume: the two-replica run continues on one device.
    let (ok, _, err) = train(
        &data,
        &two,
        &["--epochs", "3", "--device", "cpu", "--resume"],
    );
    assert!(ok, "{err}");
    assert_eq!(rows(&two).lines().count(), 4);
}

/// Replicas on burn's flex CPU backend: another backend type through the same collective.
#[cfg(feature = "flex")]
#[test]
fn flex_replicas_train_like_one_flex_device() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    let (ok, _, err) = train(&data, &one, &["--epochs", "1", "--device", "flex"]);
    assert!(ok, "{err}");
    let (ok, _, err) = train(&data, &two, &["--epochs", "1", "--device", "flex,flex"]);
    assert!(ok, "{err}");
    let weights = |run: &Path| run.join("last").join("adapter.safetensors");
    let d = max_diff(&weights(&one), &weights(&two));
    assert!(d < DATA_PARALLEL_TOL, "2 flex replicas vs one: {d:e}");
}
