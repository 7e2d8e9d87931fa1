//! `salt metrics`: Dice, IoU, HD, HD95, ASSD and clDice of predicted masks against targets, for one
//! pair of files or for two directories paired by file stem.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use salt_metrics::{
    evaluate, read_mask, Accumulator, DistanceDefinition, EmptyMask, MetricOptions, MetricResult,
};
use serde::Serialize;

/// File extensions read as masks (case-insensitive).
const MASK_EXTENSIONS: [&str; 6] = ["png", "tif", "tiff", "gif", "jpg", "jpeg"];

/// Arguments of `salt metrics`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["pred", "pred_dir"])))]
pub struct Args {
    /// Predicted mask (PNG, TIFF, GIF or JPEG; 8/16-bit; grey or colour).
    #[arg(long, requires = "target", conflicts_with_all = ["pred_dir", "target_dir"])]
    pub pred: Option<PathBuf>,
    /// Target (ground-truth) mask, same size as `--pred`.
    #[arg(long, requires = "pred")]
    pub target: Option<PathBuf>,
    /// Directory of predicted masks, paired with `--target-dir` by file stem.
    #[arg(long, requires = "target_dir")]
    pub pred_dir: Option<PathBuf>,
    /// Directory of target masks.
    #[arg(long, requires = "pred_dir")]
    pub target_dir: Option<PathBuf>,
    /// HD / HD95 / ASSD definition: monai (max of the directed 95th percentiles of
    /// surface-to-surface distances), medpy (95th percentile of both directions pooled),
    /// salt-paper (surface pixels to the other mask's foreground).
    #[arg(long = "hd95", default_value = "monai", value_parser = parse_definition)]
    pub definition: DistanceDefinition,
    /// Foreground is a pixel value > THRESHOLD, in raw sample units (0-255 for 8-bit, 0-65535
    /// for 16-bit; the largest colour channel for colour images).
    #[arg(long, default_value_t = 0.0, value_parser = parse_threshold)]
    pub threshold: f64,
    /// Pixel spacing as SY,SX (row spacing, column spacing); distances are in its units.
    #[arg(long, default_value = "1,1", value_parser = parse_spacing)]
    pub spacing: [f64; 2],
    /// Skip clDice (its two skeletonisations are the slowest part).
    #[arg(long)]
    pub no_cldice: bool,
    /// Write the JSON report (per-image results and summary) to this file (atomically).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Directory mode: also write the per-image results as CSV (atomically).
    #[arg(long, requires = "pred_dir")]
    pub csv: Option<PathBuf>,
}

fn parse_threshold(s: &str) -> std::result::Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(t) if t.is_finite() && (0.0..65535.0).contains(&t) => Ok(t),
        Ok(t) => Err(format!(
            "{t}: expected a pixel value in [0, 65535) (below 255 for 8-bit masks)"
        )),
        Err(_) => Err(format!("`{s}` is not a number")),
    }
}

fn parse_definition(s: &str) -> std::result::Result<DistanceDefinition, String> {
    s.parse().map_err(|e: salt_metrics::Error| e.to_string())
}

fn parse_spacing(s: &str) -> std::result::Result<[f64; 2], String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let [sy, sx] = parts[..] else {
        return Err(format!(
            "expected SY,SX (two numbers separated by a comma), got `{s}`"
        ));
    };
    let num = |v: &str| {
        v.parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && *x > 0.0)
            .ok_or_else(|| format!("spacing `{v}` in `{s}` is not a finite number > 0"))
    };
    Ok([num(sy)?, num(sx)?])
}

/// One pair's output in single-file mode.
#[derive(Serialize)]
struct PairOutput<'a> {
    pred: &'a Path,
    target: &'a Path,
    #[serde(flatten)]
    metrics: &'a MetricResult,
}

/// The directory-mode report: salt-metrics' report plus the files that found no partner.
#[derive(Serialize)]
struct DirReport<'a> {
    pred_dir: &'a Path,
    target_dir: &'a Path,
    threshold: f64,
    spacing: [f64; 2],
    unmatched: Unmatched,
    #[serde(flatten)]
    report: salt_metrics::Report,
}

#[derive(Debug, Default, PartialEq, Serialize)]
struct Unmatched {
    /// Predictions without a target of the same stem.
    pred: Vec<PathBuf>,
    /// Targets without a prediction of the same stem.
    target: Vec<PathBuf>,
}

/// Evaluates one pair or two directories and prints the JSON result.
pub fn run(args: Args) -> Result<()> {
    let opts = MetricOptions {
        spacing: args.spacing,
        definition: args.definition,
        cldice: !args.no_cldice,
        ..MetricOptions::default()
    };
    opts.validate().context("invalid metric options")?;
    match (&args.pred, &args.target, &args.pred_dir, &args.target_dir) {
        (Some(pred), Some(target), None, None) => {
            let metrics = evaluate_files(pred, target, args.threshold, &opts)?;
            let json = serde_json::to_string_pretty(&PairOutput {
                pred,
                target,
                metrics: &metrics,
            })?;
            if let Some(out) = &args.out {
                write(out, json.as_bytes())?;
            }
            println!("{json}");
            Ok(())
        }
        (None, None, Some(pred_dir), Some(target_dir)) => {
            run_dirs(&args, pred_dir, target_dir, &opts)
        }
        _ => bail!("give either --pred and --target, or --pred-dir and --target-dir"),
    }
}

fn run_dirs(args: &Args, pred_dir: &Path, target_dir: &Path, opts: &MetricOptions) -> Result<()> {
    let preds = list_masks(pred_dir)?;
    let targets = list_masks(target_dir)?;
    let (pairs, unmatched) = pair_by_stem(&preds, &targets);
    for p in &unmatched.pred {
        tracing::warn!(file = %p.display(), "prediction has no target with the same stem");
    }
    for t in &unmatched.target {
        tracing::warn!(file = %t.display(), "target has no prediction with the same stem");
    }
    if pairs.is_empty() {
        bail!(
            "no prediction in {} has a target with the same file stem in {} ({} predictions, {} targets)",
            pred_dir.display(),
            target_dir.display(),
            preds.len(),
            targets.len()
        );
    }
    tracing::info!(pairs = pairs.len(), definition = %opts.definition, "evaluating");
    let bar = ProgressBar::new(pairs.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40} {pos}/{len} {msg} [{elapsed_precise}<{eta_precise}]",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut acc = Accumulator::new();
    for (stem, pred, target) in &pairs {
        bar.set_message(stem.clone());
        acc.push(
            stem.clone(),
            evaluate_files(pred, target, args.threshold, opts)?,
        );
        bar.inc(1);
    }
    bar.finish_and_clear();
    let report = DirReport {
        pred_dir,
        target_dir,
        threshold: args.threshold,
        spacing: opts.spacing,
        unmatched,
        report: acc.report(),
    };
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(csv) = &args.csv {
        write(csv, to_csv(&report.report).as_bytes())?;
    }
    match &args.out {
        Some(out) => {
            write(out, json.as_bytes())?;
            // The report went to the file: print the summary only.
            #[derive(Serialize)]
            struct Brief<'a> {
                out: &'a Path,
                unmatched: &'a Unmatched,
                summary: &'a salt_metrics::Summary,
            }
            let brief = Brief {
                out,
                unmatched: &report.unmatched,
                summary: &report.report.summary,
            };
            println!("{}", serde_json::to_string_pretty(&brief)?);
        }
        None => println!("{json}"),
    }
    Ok(())
}

fn evaluate_files(
    pred: &Path,
    target: &Path,
    threshold: f64,
    opts: &MetricOptions,
) -> Result<MetricResult> {
    let p = read_mask(pred, threshold)?;
    let t = read_mask(target, threshold)?;
    if (p.width(), p.height()) != (t.width(), t.height()) {
        bail!(
            "prediction {} is {}x{} (width x height) but target {} is {}x{}",
            pred.display(),
            p.width(),
            p.height(),
            target.display(),
            t.width(),
            t.height()
        );
    }
    evaluate(&p, &t, opts)
        .with_context(|| format!("evaluating {} against {}", pred.display(), target.display()))
}

/// The mask files of `dir`, sorted, keyed by stem.
fn list_masks(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list directory {}", dir.display()))?;
    let mut out = BTreeMap::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("cannot list directory {}", dir.display()))?
            .path();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        if !path.is_file() || !ext.is_some_and(|e| MASK_EXTENSIONS.contains(&e.as_str())) {
            continue;
        }
        let Some(stem) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        if let Some(previous) = out.insert(stem.clone(), path.clone()) {
            bail!(
                "two masks with the stem `{stem}` in {}: {} and {}",
                dir.display(),
                previous.display(),
                path.display()
            );
        }
    }
    Ok(out)
}

type Pair = (String, PathBuf, PathBuf);

fn pair_by_stem(
    preds: &BTreeMap<String, PathBuf>,
    targets: &BTreeMap<String, PathBuf>,
) -> (Vec<Pair>, Unmatched) {
    let mut pairs = Vec::new();
    let mut unmatched = Unmatched::default();
    for (stem, p) in preds {
        match targets.get(stem) {
            Some(t) => pairs.push((stem.clone(), p.clone(), t.clone())),
            None => unmatched.pred.push(p.clone()),
        }
    }
    unmatched.target = targets
        .iter()
        .filter(|(s, _)| !preds.contains_key(*s))
        .map(|(_, t)| t.clone())
        .collect();
    (pairs, unmatched)
}

/// Per-image results as CSV (RFC 4180 quoting for names; undefined values are empty fields).
fn to_csv(report: &salt_metrics::Report) -> String {
    let mut s = String::from(
        "name,dice,iou,precision,recall,specificity,hd,hd95,assd,cldice,empty,tp,fp,fn,tn\n",
    );
    let num = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
    for img in &report.images {
        let m = &img.metrics;
        let name = if img.name.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", img.name.replace('"', "\"\""))
        } else {
            img.name.clone()
        };
        let empty = m.empty.map(EmptyMask::name).unwrap_or("");
        let c = m.counts;
        let _ = writeln!(
            s,
            "{name},{},{},{},{},{},{},{},{},{},{empty},{},{},{},{}",
            m.dice,
            m.iou,
            num(m.precision),
            num(m.recall),
            num(m.specificity),
            num(m.hd),
            num(m.hd95),
            num(m.assd),
            num(m.cldice),
            c.tp,
            c.fp,
            c.fn_,
            c.tn
        );
    }
    s
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    salt_core::write_atomic(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Luma};

    fn save(dir: &Path, name: &str, w: u32, h: u32, f: impl Fn(u32, u32) -> bool) -> PathBuf {
        let path = dir.join(name);
        let img = GrayImage::from_fn(w, h, |x, y| Luma([if f(x, y) { 255 } else { 0 }]));
        if name.ends_with(".gif") {
            // The GIF encoder takes colour only.
            image::DynamicImage::ImageLuma8(img)
                .to_rgba8()
                .save(&path)
                .unwrap();
        } else {
            img.save(&path).unwrap();
        }
        path
    }

    fn args() -> Args {
        Args {
            pred: None,
            target: None,
            pred_dir: None,
            target_dir: None,
            definition: DistanceDefinition::Monai,
            threshold: 0.0,
            spacing: [1.0, 1.0],
            no_cldice: false,
            out: None,
            csv: None,
        }
    }

    #[test]
    fn spacing_parsing() {
        assert_eq!(parse_spacing("0.5,2").unwrap(), [0.5, 2.0]);
        assert_eq!(parse_spacing(" 1 , 1 ").unwrap(), [1.0, 1.0]);
        assert!(parse_spacing("1").unwrap_err().contains("SY,SX"));
        assert!(parse_spacing("1,0").unwrap_err().contains("`0`"));
        assert!(parse_spacing("1,x").is_err());
        assert!(parse_definition("hausdorff").unwrap_err().contains("monai"));
    }

    #[test]
    fn size_mismatch_names_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = save(dir.path(), "a.png", 4, 3, |x, _| x == 1);
        let t = save(dir.path(), "b.png", 3, 4, |x, _| x == 1);
        let err = evaluate_files(&p, &t, 0.0, &MetricOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("a.png") && err.contains("4x3"), "{err}");
        assert!(err.contains("b.png") && err.contains("3x4"), "{err}");
        let missing = dir.path().join("missing.png");
        let err = format!(
            "{:#}",
            evaluate_files(&missing, &t, 0.0, &MetricOptions::default()).unwrap_err()
        );
        assert!(err.contains("missing.png"), "{err}");
    }

    #[test]
    fn directories_pair_by_stem_and_report_unmatched() {
        let dir = tempfile::tempdir().unwrap();
        let (pd, td) = (dir.path().join("pred"), dir.path().join("target"));
        std::fs::create_dir_all(&pd).unwrap();
        std::fs::create_dir_all(&td).unwrap();
        // "a": identical squares; "b": empty prediction; "c" only predicted; "d" only a target;
        // non-mask files are ignored.
        save(&pd, "a.png", 6, 5, |x, y| {
            (1..4).contains(&x) && (1..4).contains(&y)
        });
        save(&td, "a.tif", 6, 5, |x, y| {
            (1..4).contains(&x) && (1..4).contains(&y)
        });
        save(&pd, "b.png", 6, 5, |_, _| false);
        save(&td, "b.gif", 6, 5, |x, y| x == 2 && y == 2);
        save(&pd, "c.png", 6, 5, |_, _| true);
        save(&td, "d.png", 6, 5, |_, _| true);
        std::fs::write(td.join("notes.txt"), "not a mask").unwrap();
        let (out, csv) = (
            dir.path().join("report.json"),
            dir.path().join("report.csv"),
        );
        let a = Args {
            pred_dir: Some(pd.clone()),
            target_dir: Some(td.clone()),
            out: Some(out.clone()),
            csv: Some(csv.clone()),
            ..args()
        };
        run(a).unwrap();
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(
            report["unmatched"]["pred"][0].as_str().unwrap(),
            pd.join("c.png").to_str().unwrap()
        );
        assert_eq!(
            report["unmatched"]["target"][0].as_str().unwrap(),
            td.join("d.png").to_str().unwrap()
        );
        assert_eq!(report["images"].as_array().unwrap().len(), 2);
        assert_eq!(report["images"][0]["name"], "a");
        assert_eq!(report["images"][0]["dice"], 1.0);
        assert_eq!(report["images"][1]["empty"], "pred");
        assert!(report["images"][1]["hd95"].is_null());
        let summary = &report["summary"];
        assert_eq!(summary["images"], 2);
        assert_eq!(summary["empty"]["pred"], 1);
        assert_eq!(summary["hd95"]["count"], 1);
        assert_eq!(summary["hd95"]["excluded"], 1);
        assert_eq!(summary["dice"]["mean"], 0.5);
        let csv = std::fs::read_to_string(&csv).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("name,dice,iou"));
        assert_eq!(lines[1], "a,1,1,1,1,1,0,0,0,1,,9,0,0,21");
        assert_eq!(lines[2], "b,0,0,,0,1,,,,0,pred,0,0,1,29");
        // No temporary files left next to the outputs.
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_file())
            .collect();
        assert_eq!(leftovers.len(), 2);
    }

    #[test]
    fn no_pairs_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (pd, td) = (dir.path().join("p"), dir.path().join("t"));
        std::fs::create_dir_all(&pd).unwrap();
        std::fs::create_dir_all(&td).unwrap();
        save(&pd, "x.png", 2, 2, |_, _| true);
        save(&td, "y.png", 2, 2, |_, _| true);
        let err = run(Args {
            pred_dir: Some(pd),
            target_dir: Some(td),
            ..args()
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("1 predictions, 1 targets"),
            "{err}"
        );
        let missing = dir.path().join("nope");
        let err = list_masks(&missing).unwrap_err();
        assert!(format!("{err:#}").contains("nope"));
    }

    #[test]
    fn duplicate_stems_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), "x.png", 2, 2, |_, _| true);
        save(dir.path(), "x.tif", 2, 2, |_, _| true);
        let err = list_masks(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("`x`") && err.contains("x.png") && err.contains("x.tif"),
            "{err}"
        );
    }
}
