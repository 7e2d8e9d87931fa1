//! `--precision`: mixed-precision training stays close to f32 where a backend can run it (flex,
//! burn's CPU backend with bf16/f16 arithmetic), and a backend that cannot is refused by name.

mod common;

use std::path::{Path, PathBuf};

use common::salt;

/// bf16 keeps 8 significant bits (relative rounding 2^-8 ≈ 0.4 %) in every matmul operand; over
/// a few SALT steps on the tiny model the epoch losses (≈ 1) stay within this of the f32 run's.
#[cfg(feature = "flex")]
const BF16_LOSS_TOL: f64 = 2e-2;

fn dataset(d: &Path) -> PathBuf {
    common::synth_dataset(d.join("data"), 4, 3)
}

fn train_args<'a>(data: &'a Path, out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
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
        "--epochs",
        "3",
        "--batch-size",
        "2",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn reduced_precision_on_ndarray_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let out = dir.path().join("run");
    for p in ["bf16", "f16"] {
        let (ok, _, err) = salt(&train_args(
            &data,
            &out,
            &["--device", "cpu", "--precision", p],
        ));
        assert!(!ok, "--precision {p} on ndarray must fail");
        assert!(
            err.contains(&format!("--precision {p}")) && err.contains("`cpu`"),
            "{err}"
        );
        assert!(!out.join("last").exists(), "nothing may be written");
    }
    let (ok, _, err) = salt(&train_args(&data, &out, &["--precision", "f8"]));
    assert!(!ok && err.contains("f8") && err.contains("bf16"), "{err}");
}

/// The epoch losses of `metrics.csv`.
#[cfg(feature = "flex")]
fn losses(run: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = header.iter().position(|h| *h == "train_loss").unwrap();
    lines
        .map(|l| l.split(',').nth(col).unwrap().parse().unwrap())
        .collect()
}

#[cfg(feature = "flex")]
#[test]
fn bf16_and_f16_loss_curves_stay_near_f32_on_flex() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let mut curves = Vec::new();
    for p in ["f32", "bf16", "f16"] {
        let out = dir.path().join(p);
        let (ok, _, err) = salt(&train_args(
            &data,
            &out,
            &["--device", "flex", "--precision", p],
        ));
        assert!(ok, "--precision {p} on flex failed: {err}");
        curves.push((p, losses(&out)));
    }
    let reference = &curves[0].1;
    assert_eq!(reference.len(), 3);
    for (p, curve) in &curves[1..] {
        for (epoch, (a, b)) in curve.iter().zip(reference).enumerate() {
            assert!(
                (a - b).abs() <= BF16_LOSS_TOL,
                "{p} epoch {}: loss {a} vs f32 {b}",
                epoch + 1
            );
        }
    }
    // Reduced precision really ran: the trained tensors differ from the f32 run's (the tiny
    // model's loss moves in the sixth digit only), by a bf16/f16-sized amount.
    let f32_run = adapter(&dir.path().join("f32"));
    for p in ["bf16", "f16"] {
        let err = rel_l2(&adapter(&dir.path().join(p)), &f32_run);
        assert!(
            err > 0.0,
            "{p}: trained tensors equal the f32 run's: did it run in f32?"
        );
        assert!(
            err <= BF16_LOSS_TOL,
            "{p}: trained tensors {err:.3e} from f32"
        );
    }
}

/// Every tensor of the run's `last/adapter.safetensors`, concatenated in key order.
#[cfg(feature = "flex")]
fn adapter(run: &Path) -> Vec<f32> {
    common::f32_tensors(&run.join("last/adapter.safetensors"))
        .into_iter()
        .flat_map(|(_, _, v)| v)
        .collect()
}

#[cfg(feature = "flex")]
fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den).sqrt()
}
