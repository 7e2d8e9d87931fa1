//! Fine-tuning: loss, schedule, loop, checkpoints, curves.

pub mod baseline;
pub mod config;
pub mod loss;
pub mod memory;
pub mod model;
pub mod qualitative;
pub mod replicas;
pub mod run;
pub mod rundir;
pub mod schedule;
pub mod upsample;
