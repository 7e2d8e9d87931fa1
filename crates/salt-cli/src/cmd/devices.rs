//! `salt devices`: which backends this binary has, and whether each runs here.

use anyhow::Result;

use crate::backend::{compiled_backends, dispatch, DeviceSpec, Task};

/// Arguments of `salt devices`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Also run a tiny computation on each compiled backend.
    #[arg(long)]
    pub probe: bool,
}

struct Probe;

impl Task for Probe {
    type Output = ();
    fn run<B: burn::tensor::backend::AutodiffBackend>(self, device: B::Device) -> Result<()> {
        use burn::tensor::{ElementConversion, Tensor};
        let v: f32 = Tensor::<B, 2>::ones([8, 8], &device)
            .matmul(Tensor::ones([8, 8], &device))
            .sum()
            .into_scalar()
            .elem();
        anyhow::ensure!(v == 512.0, "8x8 ones matmul summed to {v}, expected 512");
        Ok(())
    }
}

/// Prints one line per backend.
pub fn run(args: Args) -> Result<()> {
    for (name, compiled) in compiled_backends() {
        let status = if !compiled {
            "not compiled in".to_string()
        } else if args.probe {
            let spec: DeviceSpec = name
                .split_whitespace()
                .next()
                .unwrap_or(name)
                .parse()
                .map_err(anyhow::Error::msg)?;
            match dispatch(spec, Probe) {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("unavailable: {e:#}"),
            }
        } else {
            "compiled in".to_string()
        };
        println!("{name:<14} {status}");
    }
    Ok(())
}
