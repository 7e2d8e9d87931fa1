//! Compares salt-metrics with scipy / medpy / numpy values from `scripts/metrics_reference.py`
//! (regenerate the fixtures with `python3 scripts/metrics_reference.py`).
#![cfg(feature = "image")]

use std::path::{Path, PathBuf};

use salt_metrics::{
    distance_transform, evaluate, percentile, read_mask, DistanceDefinition, MetricOptions,
};
use serde_json::Value;

/// Overlap scores are ratios of pixel counts: agreement to 1e-9 (the bound).
const DICE_TOL: f64 = 1e-9;
/// Distances in pixels (or spacing units): 1e-6 (the bound).
const DIST_TOL: f64 = 1e-6;
/// numpy.percentile against ours on the same f64 values.
const PERCENTILE_TOL: f64 = 1e-9;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn load() -> Value {
    let text = std::fs::read_to_string(fixtures().join("metrics_reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn close(name: &str, what: &str, got: Option<f64>, want: &Value, tol: f64) {
    match (got, want.as_f64()) {
        (None, None) => assert!(want.is_null(), "{name} {what}: expected {want}, got null"),
        (Some(g), Some(w)) => assert!((g - w).abs() <= tol, "{name} {what}: got {g}, expected {w}"),
        (g, _) => panic!("{name} {what}: got {g:?}, expected {want}"),
    }
}

#[test]
fn metrics_match_the_python_references() {
    let data = load();
    let cases = data["cases"].as_array().unwrap();
    assert!(
        cases.len() >= 30,
        "fixture file has only {} cases",
        cases.len()
    );
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let pred = read_mask(fixtures().join(case["pred"].as_str().unwrap()), 0.0).unwrap();
        let target = read_mask(fixtures().join(case["target"].as_str().unwrap()), 0.0).unwrap();
        assert_eq!(
            pred.width() as u64,
            case["width"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            pred.height() as u64,
            case["height"].as_u64().unwrap(),
            "{name}"
        );
        let spacing = [
            case["spacing"][0].as_f64().unwrap(),
            case["spacing"][1].as_f64().unwrap(),
        ];
        let e = &case["expected"];
        for definition in DistanceDefinition::ALL {
            let opts = MetricOptions {
                spacing,
                definition,
                ..Default::default()
            };
            let r = evaluate(&pred, &target, &opts).unwrap();
            let counts = serde_json::to_value(r.counts).unwrap();
            assert_eq!(counts, e["counts"], "{name}");
            close(name, "dice", Some(r.dice), &e["dice"], DICE_TOL);
            close(name, "iou", Some(r.iou), &e["iou"], DICE_TOL);
            close(name, "precision", r.precision, &e["precision"], DICE_TOL);
            close(name, "recall", r.recall, &e["recall"], DICE_TOL);
            close(
                name,
                "specificity",
                r.specificity,
                &e["specificity"],
                DICE_TOL,
            );
            close(name, "cldice", r.cldice, &e["cldice"], DICE_TOL);
            assert_eq!(serde_json::to_value(r.empty).unwrap(), e["empty"], "{name}");
            let d = &e[definition.name()];
            let what = |m: &str| format!("{definition} {m}");
            close(name, &what("hd"), r.hd, &d["hd"], DIST_TOL);
            close(name, &what("hd95"), r.hd95, &d["hd95"], DIST_TOL);
            close(name, &what("assd"), r.assd, &d["assd"], DIST_TOL);
        }
        if let Some(edt) = case.get("edt_target") {
            let ours = distance_transform(&target, spacing);
            let edt = edt.as_array().unwrap();
            assert_eq!(ours.len(), edt.len(), "{name}");
            for (i, (g, w)) in ours.iter().zip(edt).enumerate() {
                let w = w.as_f64().unwrap();
                assert!(
                    (g - w).abs() <= DIST_TOL,
                    "{name} edt[{i}]: got {g}, expected {w}"
                );
            }
        }
    }
}

#[test]
fn definitions_disagree_where_they_should() {
    // Guards against the three definitions collapsing into one (the fixtures would then still
    // agree with a buggy script): pooled (medpy) < directed (monai) on the eroded tree, and the
    // salt-paper HD95 is 0 on the broken small tree (its surfaces lie inside the other mask).
    let data = load();
    let cases = data["cases"].as_array().unwrap();
    let get = |case: &str, def: &str| {
        let c = cases.iter().find(|c| c["name"] == case).unwrap();
        c["expected"][def]["hd95"].as_f64().unwrap()
    };
    assert!(get("tree-eroded", "medpy") < get("tree-eroded", "monai"));
    assert_eq!(get("small-tree-broken", "salt-paper"), 0.0);
    assert!(get("small-tree-broken", "monai") > 1.0);
}

#[test]
fn percentiles_match_numpy() {
    let data = load();
    for p in data["percentiles"].as_array().unwrap() {
        let mut values: Vec<f64> = p["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let q = p["q"].as_f64().unwrap();
        let want = p["expected"].as_f64().unwrap();
        let got = percentile(&mut values, q).unwrap();
        assert!(
            (got - want).abs() <= PERCENTILE_TOL,
            "n={} q={q}: {got} vs {want}",
            values.len()
        );
    }
}
