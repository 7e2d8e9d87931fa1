//! Helpers shared by the integration tests that run the `salt` binary.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `salt` with `args`: `(success, stdout, stderr)`.
#[allow(dead_code)] // bad_inputs.rs has its own, taking owned arguments
pub fn salt(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_salt"))
        .args(args)
        .output()
        .expect("run salt");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every f32 tensor of a safetensors file as `(name, shape, values)`, in name order.
#[allow(dead_code)] // not every test file reads tensors
pub fn f32_tensors(path: &Path) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let t = st.tensor(&n).unwrap();
            let v = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (n, t.shape().to_vec(), v)
        })
        .collect()
}

/// A synthetic X-ray angiography dataset of `n` 64-px images (seed `seed`) in the paper's
/// layout, written to `root`; returns `root`.
#[allow(dead_code)] // not every test file trains
pub fn synth_dataset(root: PathBuf, n: usize, seed: u64) -> PathBuf {
    salt_data::synth::write_dataset_sized(
        &root,
        salt_data::synth::Style::parse("xray-angio").unwrap(),
        n,
        seed,
        salt_data::synth::SynthLayout::Paper,
        64,
    )
    .unwrap();
    root
}
