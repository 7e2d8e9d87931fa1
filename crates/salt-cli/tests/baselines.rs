//! A Table-1 baseline through the same commands as SAM: train, eval, export-merged, predict
//! (from the run and from the exported reference-format checkpoint), and `salt models`.

mod common;

use std::path::Path;

use common::{f32_tensors as tensors, salt};

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn a_baseline_trains_evaluates_exports_and_predicts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = common::synth_dataset(d.join("data"), 4, 5);
    let run = d.join("run");
    let train = |method: &str| {
        salt(&[
            "train",
            "--data",
            p(&data),
            "--model",
            "unet_smoke",
            "--method",
            method,
            "--loss",
            "dice+bce",
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--out",
            p(&run),
        ])
    };
    // Adapters are SAM's: a baseline refuses them by name, and writes nothing.
    let (ok, _, err) = train("salt");
    assert!(
        !ok && err.contains("--method full") && err.contains("unet_smoke"),
        "{err}"
    );
    assert!(!run.join("last").exists());
    let (ok, out, err) = train("full");
    assert!(ok, "train failed: {err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    // PyTorch's count of the smoke U-Net (BatchNorm-free: InstanceNorm, PReLU), all trainable.
    assert_eq!(summary["params"]["total"], 407_092);
    assert_eq!(summary["params"]["trainable"], 407_092);
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = header.iter().position(|h| *h == "train_bce_loss").unwrap();
    let last = csv.lines().last().unwrap();
    let bce: f64 = last.split(',').nth(col).unwrap().parse().unwrap();
    assert!(bce > 0.0, "dice+bce trained with a BCE term: {last}");

    let (ok, _, err) = salt(&[
        "eval",
        "--adapter",
        p(&run.join("best")),
        "--data",
        p(&data),
        "--split",
        "val",
        "--out",
        p(&d.join("eval")),
    ]);
    assert!(ok, "eval failed: {err}");
    assert!(d.join("eval/summary.json").is_file());

    let exported = d.join("unet.safetensors");
    let (ok, _, err) = salt(&[
        "export-merged",
        "--adapter",
        p(&run.join("best")),
        "--out",
        p(&exported),
    ]);
    assert!(ok, "export failed: {err}");
    // MONAI's key names (no wrapper prefix), the trained values of the run.
    let keys: Vec<String> = tensors(&exported).into_iter().map(|(n, _, _)| n).collect();
    assert!(
        keys.iter().any(|k| k == "model.0.conv.unit0.conv.weight"),
        "{keys:?}"
    );
    assert!(keys.iter().all(|k| !k.starts_with("net.")), "{keys:?}");

    let image = data.join("images/xray-angio_0000.png");
    let predict = |source: &[&str], name: &str| {
        let logits = d.join(format!("{name}.safetensors"));
        let mut args = vec!["predict", "--image", p(&image)];
        args.extend_from_slice(source);
        let mask = d.join(format!("{name}.png"));
        args.extend_from_slice(&["--out", p(&mask), "--save-logits", p(&logits)]);
        let (ok, _, err) = salt(&args);
        assert!(ok, "predict {source:?} failed: {err}");
        tensors(&logits)
    };
    let from_run = predict(&["--adapter", p(&run.join("best"))], "run");
    let from_file = predict(&["--checkpoint", p(&exported)], "file");
    let names: Vec<(&str, &[usize])> = from_run
        .iter()
        .map(|(n, s, _)| (n.as_str(), s.as_slice()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("input", &[1, 3, 64, 64][..]),
            ("logits", &[1, 1, 64, 64][..]),
            ("masks_logits", &[1, 1, 64, 64][..])
        ]
    );
    assert_eq!(
        from_run, from_file,
        "the exported checkpoint predicts as the run"
    );
    let (ok, _, err) = salt(&[
        "predict",
        "--checkpoint",
        p(&exported),
        "--image",
        p(&image),
        "--box",
        "1,1,9,9",
        "--out",
        p(&d.join("x.png")),
    ]);
    assert!(!ok && err.contains("no --point, --box"), "{err}");

    let (ok, out, err) = salt(&["models", "--json", "--model", "unet", "--model", "segnet"]);
    assert!(ok, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["total"], 6_495_868);
    assert_eq!(rows[1]["total"], 29_443_585);
    assert_eq!(rows[1]["method"], "full");
}
