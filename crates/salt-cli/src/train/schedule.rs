//! Learning-rate schedules, as a pure function of the step (so a resumed run continues exactly).

use super::config::Schedule;

/// The learning rate at `step` (0-based) of `total` steps.
pub fn learning_rate(
    schedule: Schedule,
    peak: f64,
    step: usize,
    total: usize,
    warmup: usize,
) -> f64 {
    match schedule {
        Schedule::Constant => peak,
        Schedule::Cosine => {
            if step < warmup {
                peak * (step + 1) as f64 / warmup as f64
            } else {
                let span = total.saturating_sub(warmup).max(1) as f64;
                let t = ((step - warmup) as f64 / span).min(1.0);
                peak * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_and_cosine_by_hand() {
        assert_eq!(learning_rate(Schedule::Constant, 1e-4, 7, 10, 0), 1e-4);
        assert!((learning_rate(Schedule::Cosine, 1.0, 0, 12, 2) - 0.5).abs() < 1e-15);
        assert!((learning_rate(Schedule::Cosine, 1.0, 1, 12, 2) - 1.0).abs() < 1e-15);
        assert!((learning_rate(Schedule::Cosine, 1.0, 2, 12, 2) - 1.0).abs() < 1e-15);
        assert!((learning_rate(Schedule::Cosine, 1.0, 7, 12, 2) - 0.5).abs() < 1e-12);
        assert!(learning_rate(Schedule::Cosine, 1.0, 12, 12, 2).abs() < 1e-15);
    }
}
