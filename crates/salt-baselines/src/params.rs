//! Parameter counts comparable with PyTorch's `sum(p.numel() for p in model.parameters())`.
//!
//! burn's [`burn::module::Module::num_params`] also counts `RunningState` tensors (BatchNorm's
//! `running_mean` / `running_var`), which are buffers in PyTorch, not parameters.

use burn::tensor::backend::Backend;
use burn_store::ModuleSnapshot;

/// Number of trainable values: every tensor of the module except BatchNorm's running
/// statistics; equals PyTorch's `parameters()` count of the reference.
pub fn parameter_count<B: Backend, M: ModuleSnapshot<B>>(model: &M) -> usize {
    model
        .collect(None, None, false)
        .iter()
        .filter(|s| {
            let path = s.full_path();
            !(path.ends_with(".running_mean") || path.ends_with(".running_var"))
        })
        .map(|s| s.shape.iter().product::<usize>())
        .sum()
}

/// Number of BatchNorm running-statistic values (`running_mean` + `running_var`): what
/// [`burn::module::Module::num_params`] counts beyond [`parameter_count`].
pub fn running_stat_count<B: Backend, M: ModuleSnapshot<B>>(model: &M) -> usize {
    model
        .collect(None, None, false)
        .iter()
        .filter(|s| {
            let path = s.full_path();
            path.ends_with(".running_mean") || path.ends_with(".running_var")
        })
        .map(|s| s.shape.iter().product::<usize>())
        .sum()
}
