//! `salt`: fine-tune, evaluate and run Segment Anything with SALT, LoRA, S-SAM or full
//! fine-tuning, on CPU (ndarray, flex), any GPU (wgpu) or NVIDIA (CUDA).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use salt_cli::cmd;

/// Fine-tune and run Segment Anything for vessel segmentation with SALT and its baselines.
#[derive(Debug, Parser)]
#[command(name = "salt", version, about, long_about = None)]
struct Cli {
    /// Log filter (tracing's env-filter syntax), e.g. `info`, `debug`, `salt_core=debug`.
    #[arg(
        long,
        global = true,
        default_value = "info,burn_collective=warn",
        env = "SALT_LOG"
    )]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The main job: synthetic vessels, fine-tune a small SAM with SALT on the CPU, report.
    Demo(cmd::demo::Args),
    /// Fine-tune SAM with SALT, LoRA, S-SAM, full fine-tuning or the decoder only.
    Train(cmd::train::Args),
    /// Evaluate an adapter on a dataset split: per-image CSV, summary, masks, figure.
    Eval(cmd::eval::Args),
    /// Merge an adapter into its base model and write a plain SAM checkpoint (safetensors).
    ExportMerged(cmd::export::Args),
    /// List the backends compiled into this binary and whether each can run here.
    Devices(cmd::devices::Args),
    /// Synthetic vessel datasets, dataset checks, imports and splits.
    Data(cmd::data::Args),
    /// Segment one image with SAM from point / box prompts.
    Predict(cmd::predict::Args),
    /// Dice, IoU, HD, HD95, ASSD and clDice of predicted masks against targets.
    Metrics(cmd::metrics::Args),
    /// Every model preset (SAM and the Table 1 baselines) with total and trainable parameters
    /// per method.
    Models(cmd::models::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Eval(_) | Command::Predict(_)) {
        // Inference: large tensors come and go every op; keeping freed memory instead of
        // faulting it in again saves a third of a 1024 encoder forward. Training measured ~5 %
        // slower with it, so it keeps glibc's default (docs/decisions.md, "Allocator").
        salt_cli::keep_freed_memory();
    }
    init_tracing(&cli.log);
    let result = match cli.command {
        Command::Demo(args) => cmd::demo::run(args),
        Command::Train(args) => cmd::train::run(args),
        Command::Eval(args) => cmd::eval::run(args),
        Command::ExportMerged(args) => cmd::export::run(args),
        Command::Devices(args) => cmd::devices::run(args),
        Command::Data(args) => cmd::data::run(args),
        Command::Predict(args) => cmd::predict::run(args),
        Command::Metrics(args) => cmd::metrics::run(args),
        Command::Models(args) => cmd::models::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined by `: ` (as `{:#}`), leaving out a cause whose text the
/// message already holds (typed errors that print their source would otherwise say it twice).
fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
