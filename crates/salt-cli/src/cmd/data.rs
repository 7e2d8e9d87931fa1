//! `salt data ...`: synthetic datasets, validation, import into the paper layout, and splits.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use salt_data::check::check;
use salt_data::import::{import, ImportSpec};
use salt_data::split::{seeded_split, write_split_csv};
use salt_data::synth::{contact_sheet, write_dataset_sized, Style, SynthLayout, STYLE_NAMES};

/// Arguments of `salt data`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: DataCommand,
}

#[derive(Debug, clap::Subcommand)]
enum DataCommand {
    /// Write a synthetic vessel dataset (deterministic per seed) in the paper's or a real layout.
    Synth(SynthArgs),
    /// Validate a dataset and list every problem with its path (exit code 1 if any).
    Check(CheckArgs),
    /// Convert a folder of image/mask pairs into the paper's layout, with a seeded split.
    Import(ImportArgs),
    /// Write a seeded `data_split.csv` for a dataset in the paper's layout.
    Split(SplitArgs),
}

/// `salt data synth`.
#[derive(Debug, clap::Args)]
struct SynthArgs {
    /// Modality to imitate: drive, arcade, rose, dias, xray-angio.
    #[arg(long, value_parser = parse_style)]
    style: Style,
    /// Number of images.
    #[arg(long)]
    n: usize,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Seed (images and split).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// `paper` (images/, masks/, data_split.csv) or `native` (DRIVE and ARCADE published layouts).
    #[arg(long, default_value = "paper", value_parser = parse_layout)]
    layout: SynthLayout,
    /// Image side in pixels (default: the style's, close to the real data).
    #[arg(long)]
    size: Option<usize>,
    /// Also write a PNG contact sheet of (image | mask) pairs (at most 16).
    #[arg(long)]
    preview: Option<PathBuf>,
}

fn parse_style(s: &str) -> std::result::Result<Style, String> {
    Style::parse(s).ok_or_else(|| format!("unknown style {s:?}; expected one of {STYLE_NAMES}"))
}

fn parse_layout(s: &str) -> std::result::Result<SynthLayout, String> {
    match s {
        "paper" => Ok(SynthLayout::Paper),
        "native" => Ok(SynthLayout::Native),
        _ => Err(format!("unknown layout {s:?}; expected paper or native")),
    }
}

/// `salt data check`.
#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// Dataset root (paper layout, DRIVE or ARCADE).
    dir: PathBuf,
}

/// `salt data import`.
#[derive(Debug, clap::Args)]
struct ImportArgs {
    /// Folder of images (png, tif, gif, jpg, bmp, pgm).
    #[arg(long)]
    images: PathBuf,
    /// Folder of masks (default: the images folder).
    #[arg(long)]
    masks: Option<PathBuf>,
    /// A mask's stem is the image stem plus this suffix (e.g. `_gt` for XRay-Angio).
    #[arg(long, default_value = "_mask")]
    mask_suffix: String,
    /// Output folder (paper layout).
    #[arg(long)]
    out: PathBuf,
    /// Train count (default 70 %).
    #[arg(long)]
    train: Option<usize>,
    /// Test (`val`) count (default: the rest).
    #[arg(long)]
    test: Option<usize>,
    /// Split seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// `salt data split`.
#[derive(Debug, clap::Args)]
struct SplitArgs {
    /// Dataset root in the paper's layout.
    dir: PathBuf,
    /// Train count (the paper: ARCADE 700, DIAS 20, ROSE 22, XRay-Angio 93, DRIVE 14).
    #[arg(long)]
    train: usize,
    /// Test (`val`) count (the paper: ARCADE 300, DIAS 10, ROSE 8, XRay-Angio 41, DRIVE 6).
    #[arg(long)]
    test: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Overwrite an existing data_split.csv.
    #[arg(long)]
    force: bool,
}

/// Runs `salt data <subcommand>`.
pub fn run(args: Args) -> Result<()> {
    match args.command {
        DataCommand::Synth(a) => synth(a),
        DataCommand::Check(a) => run_check(a),
        DataCommand::Import(a) => run_import(a),
        DataCommand::Split(a) => run_split(a),
    }
}

fn spinner(msg: String) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("valid template"),
    );
    pb.set_message(msg);
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

fn synth(a: SynthArgs) -> Result<()> {
    let size = a.size.unwrap_or(a.style.default_size());
    let pb = spinner(format!("generating {} {} images", a.n, a.style.name()));
    let written = write_dataset_sized(&a.out, a.style, a.n, a.seed, a.layout, size)
        .with_context(|| format!("writing synthetic dataset to {}", a.out.display()));
    pb.finish_and_clear();
    let written = written?;
    println!(
        "wrote {} {} images ({size}x{size}) to {}",
        written.len(),
        a.style.name(),
        a.out.display()
    );
    if let Some(preview) = a.preview {
        let pairs: Vec<_> = written
            .into_iter()
            .take(16)
            .map(|s| (s.image, s.mask))
            .collect();
        let sheet = contact_sheet(&pairs, 4, 160);
        salt_data::image_io::write_image(&preview, &sheet)
            .with_context(|| format!("writing preview {}", preview.display()))?;
        println!("preview: {}", preview.display());
    }
    Ok(())
}

fn run_check(a: CheckArgs) -> Result<()> {
    let pb = spinner(format!("checking {}", a.dir.display()));
    let report = check(&a.dir);
    pb.finish_and_clear();
    if let Some(layout) = report.layout {
        println!("layout: {layout:?}");
    }
    for (split, n) in &report.counts {
        println!("{split}: {n} readable image/mask pairs");
    }
    for p in &report.problems {
        println!("problem: {p}");
    }
    if report.problems.is_empty() {
        println!("no problem found");
        Ok(())
    } else {
        bail!(
            "{} problem(s) in {}",
            report.problems.len(),
            a.dir.display()
        )
    }
}

fn run_import(a: ImportArgs) -> Result<()> {
    let spec = ImportSpec {
        masks: a.masks.unwrap_or_else(|| a.images.clone()),
        images: a.images,
        mask_suffix: a.mask_suffix,
        n_train: a.train,
        n_test: a.test,
        seed: a.seed,
    };
    let pb = spinner(format!("importing {}", spec.images.display()));
    let n = import(&spec, &a.out);
    pb.finish_and_clear();
    let n = n.with_context(|| {
        format!(
            "importing {} into {}",
            spec.images.display(),
            a.out.display()
        )
    })?;
    println!("imported {n} pairs into {}", a.out.display());
    Ok(())
}

fn run_split(a: SplitArgs) -> Result<()> {
    let csv = a.dir.join("data_split.csv");
    if csv.exists() && !a.force {
        bail!("{} exists; pass --force to overwrite it", csv.display());
    }
    let images_dir = a.dir.join("images");
    let mut names: Vec<String> = std::fs::read_dir(&images_dir)
        .with_context(|| format!("listing {}", images_dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    let rows = seeded_split(&names, a.train, a.test, a.seed).with_context(|| {
        format!(
            "splitting the {} images of {}",
            names.len(),
            images_dir.display()
        )
    })?;
    write_split_csv(&csv, &rows).with_context(|| format!("writing {}", csv.display()))?;
    println!(
        "wrote {} ({} train, {} val, seed {})",
        csv.display(),
        a.train,
        a.test,
        a.seed
    );
    Ok(())
}
