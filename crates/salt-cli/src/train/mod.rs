//! Fine-tuning: loss, schedule, loop, checkpoints, curves.

pub mod loss;
