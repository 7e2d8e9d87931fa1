//! Mixed precision for the GEMM-heavy operations (`--precision f32|bf16|f16`).
//!
//! burn 0.21 has no autocast, so salt does it at its chokepoints: [`crate::fused::linear`]
//! (every linear layer and adapter branch), [`crate::fused::attention`] /
//! [`crate::fused::attention_rel_pos`] and [`crate::conv2d_matmul`] cast their operands to the
//! compute dtype, multiply there, and cast the result back to f32. Everything else stays f32:
//! the parameters (the master copies) and so the optimizer state, LayerNorm, softmax (the
//! attention logits are cast up before it), GELU, the loss. Gradients flow back through the
//! casts (burn's autodiff casts each gradient to its tensor's dtype), so every trainable tensor
//! gets an f32 gradient. SALT's `W′` is rebuilt in f32 and cast once per forward.
//!
//! The precision is a property of the calling thread ([`PrecisionGuard`]), set by the commands
//! for the duration of a run; burn's autodiff runs backward on the same thread. A backend that
//! cannot compute in a dtype is refused up front by [`check_precision`], never run in f32
//! silently.

use std::cell::Cell;
use std::fmt;
use std::str::FromStr;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The dtype of matmuls and attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32 (the default).
    #[default]
    F32,
    /// bfloat16 matmuls and attention, f32 master weights, statistics and loss.
    Bf16,
    /// float16 matmuls and attention, f32 master weights, statistics and loss.
    F16,
}

impl Precision {
    /// Every precision, for help texts.
    pub const ALL: [Precision; 3] = [Precision::F32, Precision::Bf16, Precision::F16];

    /// The reduced dtype, or `None` for f32.
    pub fn reduced(self) -> Option<FloatDType> {
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(FloatDType::BF16),
            Precision::F16 => Some(FloatDType::F16),
        }
    }

    fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
            Precision::F16 => DType::F16,
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        })
    }
}

impl FromStr for Precision {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            "f16" | "fp16" => Ok(Precision::F16),
            _ => Err(Error::UnknownPrecision(s.to_string())),
        }
    }
}

thread_local! {
    static CURRENT: Cell<Precision> = const { Cell::new(Precision::F32) };
}

/// The compute precision of the calling thread.
pub fn current() -> Precision {
    CURRENT.with(Cell::get)
}

/// Sets the calling thread's compute precision until dropped (then restores the previous one).
#[derive(Debug)]
pub struct PrecisionGuard {
    previous: Precision,
}

impl PrecisionGuard {
    /// Computes in `precision` on this thread until the guard is dropped.
    pub fn set(precision: Precision) -> Self {
        let previous = CURRENT.with(|c| c.replace(precision));
        Self { previous }
    }
}

impl Drop for PrecisionGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.previous));
    }
}

/// Refuses a precision the backend cannot compute in on `device`, naming both. `backend` is the
/// name in the message (e.g. `cpu`, `wgpu`).
pub fn check_precision<B: Backend>(
    device: &B::Device,
    precision: Precision,
    backend: &str,
) -> Result<()> {
    if precision == Precision::F32 || B::supports_dtype(device, precision.dtype()) {
        return Ok(());
    }
    let hint = match precision {
        Precision::Bf16 => "bf16 needs --device cuda (or flex on the CPU)",
        Precision::F16 => "f16 needs --device cuda, a wgpu adapter with shader-f16, or flex",
        Precision::F32 => unreachable!("f32 is always supported"),
    };
    Err(Error::UnsupportedPrecision {
        precision: precision.to_string(),
        backend: backend.to_string(),
        hint: hint.to_string(),
    })
}

/// `t` in the calling thread's compute dtype (itself for f32).
pub(crate) fn lower<B: Backend, const D: usize>(t: Tensor<B, D>) -> Tensor<B, D> {
    match current().reduced() {
        Some(dt) => t.cast(dt),
        None => t,
    }
}

/// `t` back in f32 after a reduced-precision operation (itself for f32).
pub(crate) fn raise<B: Backend, const D: usize>(t: Tensor<B, D>) -> Tensor<B, D> {
    match current().reduced() {
        Some(_) => t.cast(FloatDType::F32),
        None => t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    #[test]
    fn names_round_trip_and_unknown_names_are_errors() {
        for p in Precision::ALL {
            assert_eq!(p.to_string().parse::<Precision>().unwrap(), p);
        }
        let err = "f8".parse::<Precision>().unwrap_err().to_string();
        assert!(err.contains("`f8`") && err.contains("bf16"), "{err}");
    }

    #[test]
    fn the_guard_is_scoped_and_per_thread() {
        assert_eq!(current(), Precision::F32);
        {
            let _g = PrecisionGuard::set(Precision::Bf16);
            assert_eq!(current(), Precision::Bf16);
            let other = std::thread::spawn(current).join().unwrap();
            assert_eq!(other, Precision::F32);
        }
        assert_eq!(current(), Precision::F32);
    }

    #[test]
    fn ndarray_refuses_reduced_precision_by_name() {
        let device = Default::default();
        check_precision::<NdArray<f32>>(&device, Precision::F32, "cpu").unwrap();
        for p in [Precision::Bf16, Precision::F16] {
            let err = check_precision::<NdArray<f32>>(&device, p, "cpu")
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("--precision {p}")), "{err}");
            assert!(err.contains("`cpu`"), "{err}");
        }
    }
}
