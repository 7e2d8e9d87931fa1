//! `cargo xtask <task>`: project automation for salt.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "salt's project automation")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Generate SAM reference fixtures with Meta's segment-anything (Python, torch from PyPI):
    /// `python3 scripts/sam_reference.py --preset vit_b --out target/sam-fixtures/vit_b`.
    Refs {
        /// Preset: vit_b (default) or tiny.
        #[arg(long, default_value = "vit_b")]
        preset: String,
        /// Output directory.
        #[arg(long, default_value = "target/sam-fixtures/vit_b")]
        out: PathBuf,
    },
    /// Check burn's ViT-B against the reference fixtures of `cargo xtask refs` (the ignored
    /// parity test of salt-sam, in release).
    Parity {
        /// Fixture directory made by `cargo xtask refs`.
        #[arg(long, default_value = "target/sam-fixtures/vit_b")]
        fixtures: PathBuf,
    },
    /// Reproduce the SAM-based rows of the SALT paper's Table 1 on the five datasets.
    ReproduceTable1 {
        /// Root with one directory per dataset: arcade, dias, rose, xray-angio, drive.
        #[arg(long)]
        data_root: Option<PathBuf>,
        /// `sam_vit_b_01ec64.pth`.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Datasets (comma-separated); default all five.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "arcade,dias,rose,xray-angio,drive"
        )]
        datasets: Vec<String>,
        /// Methods (comma-separated); default every row: the traditional networks, then the
        /// SAM-based rows.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "unet,unetr,regunet,segnet,deeplabv3plus,segformer,sam,ssam,lora4,lora256,salt4,salt256"
        )]
        methods: Vec<String>,
        /// Device: cpu, flex, wgpu[:N], cuda[:N] (build xtask with the matching feature); several
        /// of one backend (`cuda:0,cuda:1`, `cuda:all`) train each cell data-parallel.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Output directory.
        #[arg(long, default_value = "runs/table1")]
        out: PathBuf,
        /// Epochs per cell (the paper: 200).
        #[arg(long, default_value_t = 200)]
        epochs: usize,
        /// The same pipeline on synthetic datasets with the tiny SAM and a few steps.
        #[arg(long)]
        smoke: bool,
    },
    /// Time training steps (forward, loss, backward, AdamW) of a model with random weights on
    /// fixed random images; the peer of `scripts/torch_train_bench.py`. Prints one JSON object.
    BenchTrain {
        #[command(flatten)]
        opts: salt_cli::bench::BenchTrainOptions,
        /// Append the JSON result as one line to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Run the criterion benchmarks (all, or the named bench targets of benches/).
    Bench {
        /// Bench targets, e.g. `adapters`; all when empty.
        names: Vec<String>,
        /// Extra arguments for criterion (after `--`), e.g. a filter.
        #[arg(last = true)]
        criterion: Vec<String>,
    },
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn run(mut cmd: Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let result = match cli.task {
        Task::Refs { preset, out } => {
            let mut cmd = Command::new("python3");
            cmd.args(["scripts/sam_reference.py", "--preset", &preset, "--out"])
                .arg(&out);
            run(cmd)
        }
        Task::Parity { fixtures } => (|| -> Result<()> {
            let abs = std::fs::canonicalize(&fixtures).with_context(|| {
                format!(
                    "no fixtures at {}: run `cargo xtask refs` first",
                    fixtures.display()
                )
            })?;
            let mut cmd = cargo();
            cmd.env("SALT_SAM_VITB_FIXTURES", abs).args([
                "test",
                "-p",
                "salt-sam",
                "--release",
                "--test",
                "parity",
                "--",
                "--ignored",
                "vit_b",
            ]);
            run(cmd)
        })(),
        Task::ReproduceTable1 {
            data_root,
            checkpoint,
            datasets,
            methods,
            device,
            out,
            epochs,
            smoke,
        } => (|| -> Result<()> {
            let data_root = match (data_root, smoke) {
                (Some(d), _) => d,
                (None, true) => {
                    let d = out.join("smoke-data");
                    salt_cli::table1::smoke_data(&d)?;
                    d
                }
                (None, false) => bail!("--data-root DIR is required (or --smoke)"),
            };
            let opts = salt_cli::table1::Table1Options {
                data_root,
                checkpoint,
                datasets,
                methods,
                device,
                out,
                smoke,
                epochs: if smoke { 1 } else { epochs },
            };
            let path = salt_cli::table1::reproduce(&opts)?;
            eprintln!("wrote {}", path.display());
            Ok(())
        })(),
        Task::BenchTrain { opts, json } => (|| -> Result<()> {
            let result = salt_cli::bench::bench_train(&opts)?;
            let line = serde_json::to_string(&result)?;
            println!("{line}");
            if let Some(path) = json {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .with_context(|| format!("opening {}", path.display()))?;
                writeln!(f, "{line}").with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(())
        })(),
        Task::Bench { names, criterion } => {
            let mut cmd = cargo();
            cmd.args(["bench", "-p", "salt-benches"]);
            for n in &names {
                cmd.args(["--bench", n]);
            }
            if !criterion.is_empty() {
                cmd.arg("--").args(&criterion);
            }
            run(cmd)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
