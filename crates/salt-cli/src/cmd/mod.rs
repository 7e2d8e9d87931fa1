//! One module per subcommand: each has `Args` (clap) and `run(args) -> anyhow::Result<()>`.

pub mod data;
pub mod demo;
pub mod devices;
pub mod eval;
pub mod export;
pub mod metrics;
pub mod models;
pub mod predict;
pub mod train;
