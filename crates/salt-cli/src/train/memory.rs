//! A rough estimate of the memory one training batch needs, so that an absurd `--batch-size`
//! is an error before the first step rather than an allocation that aborts the process.
//!
//! The estimate counts the activations the backward pass keeps, in f32: per image and encoder
//! block `tokens · dim · (10 + 4 · mlp_ratio)` (norms, qkv, projections, MLP) plus the attention
//! maps (`heads · tokens²` for a global block, `heads · tokens · window²` for a windowed one),
//! and the input, mask and logits planes. It ignores weights, optimizer state and the decoder,
//! so it is a lower bound of the real need within a small factor.

use anyhow::{bail, Result};
use salt_sam::SamConfig;

/// Training refuses a batch whose estimate exceeds this multiple of the available memory (CPU
/// devices); between 1× and this it only warns, since the estimate is rough.
pub const REFUSE_FACTOR: f64 = 2.0;

/// Estimated bytes of activations for a batch of `batch` images, `None` on overflow.
pub fn batch_bytes(cfg: &SamConfig, batch: usize) -> Option<u64> {
    let e = &cfg.image_encoder;
    let side = e.img_size as u64;
    let grid = (e.img_size / e.patch_size.max(1)) as u64;
    let tokens = grid.checked_mul(grid)?;
    let dim = e.embed_dim as u64;
    let heads = e.num_heads as u64;
    let per_token = 10 + (4.0 * e.mlp_ratio).ceil() as u64;
    let mut floats: u64 = 0;
    for block in 0..e.depth {
        let global = e.window_size == 0 || e.global_attn_indexes.contains(&block);
        let w = e.window_size as u64;
        let attn = match global {
            true => heads.checked_mul(tokens)?.checked_mul(tokens)?,
            false => heads.checked_mul(tokens)?.checked_mul(w.checked_mul(w)?)?,
        };
        floats = floats
            .checked_add(tokens.checked_mul(dim)?.checked_mul(per_token)?)?
            .checked_add(attn)?;
    }
    // Input (3 planes), mask, logits and their gradient.
    floats = floats.checked_add(side.checked_mul(side)?.checked_mul(6)?)?;
    floats.checked_mul(4)?.checked_mul(batch as u64)
}

/// Available memory of this machine (Linux `MemAvailable`), if known.
fn available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

const GIB: f64 = (1u64 << 30) as f64;

/// Errors if a batch of `batch` images of `cfg` cannot fit: an estimate that overflows, or (on
/// the CPU devices, whose memory we can read) one above [`REFUSE_FACTOR`] × the available memory.
pub fn check_batch(cfg: &SamConfig, batch: usize, device: &str) -> Result<()> {
    let Some(bytes) = batch_bytes(cfg, batch) else {
        bail!(
            "batch_size = {batch}: the memory a batch of `{}` needs does not even fit in 64 bits; \
             lower --batch-size",
            cfg.name
        );
    };
    let cpu = matches!(device, "cpu" | "flex");
    if let (true, Some(avail)) = (cpu, available_bytes()) {
        let (need, have) = (bytes as f64 / GIB, avail as f64 / GIB);
        if need > REFUSE_FACTOR * have {
            bail!(
                "batch_size = {batch}: a batch of `{}` at {} px needs roughly {need:.1} GiB of \
                 activations (estimate), more than {REFUSE_FACTOR}× the {have:.1} GiB of memory \
                 available; lower --batch-size",
                cfg.name,
                cfg.image_encoder.img_size
            );
        }
        if need > have {
            tracing::warn!(
                "batch_size = {batch} may not fit: roughly {need:.1} GiB of activations, \
                 {have:.1} GiB available"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_grows_with_the_batch_and_overflow_is_an_error() {
        let b = SamConfig::vit_b();
        let one = batch_bytes(&b, 1).unwrap();
        // ViT-B at 1024 px: a few GiB per image (real SAM training needs about that much).
        assert!(
            (2.0..20.0).contains(&(one as f64 / GIB)),
            "{}",
            one as f64 / GIB
        );
        assert_eq!(batch_bytes(&b, 3), Some(3 * one));
        let err = check_batch(&b, usize::MAX, "cpu").unwrap_err().to_string();
        assert!(err.contains("batch_size = 18446744073709551615"), "{err}");
        // A tiny model's small batch is never refused.
        check_batch(&SamConfig::tiny(), 2, "cpu").unwrap();
    }
}
