//! `cargo xtask <task>`: project automation for salt.

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
    let result = match cli.task {
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
