//! Helpers shared by the integration tests that run the `salt` binary.

use std::path::Path;
use std::process::Command;

/// Runs `salt` with `args`: `(success, stdout, stderr)`.
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
