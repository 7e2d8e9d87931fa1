//! Choosing a backend at run time among those compiled in (`--device cpu|flex|wgpu|cuda[:N]`).
//!
//! Model code is generic over `B: Backend`; a command that needs a backend implements [`Task`]
//! and [`dispatch`] instantiates it for the backend the user asked for. Asking for a backend that
//! was not compiled in, or one this machine cannot run, is an error that says how to get it —
//! never a panic from deep inside a device thread.

use std::fmt;
use std::str::FromStr;

use anyhow::Result;
use burn::backend::Autodiff;
use burn::tensor::backend::AutodiffBackend;

/// A device named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// ndarray on the CPU (the default backend).
    Cpu,
    /// burn's flex CPU backend.
    Flex,
    /// wgpu: the default adapter, or the N-th discrete GPU.
    Wgpu(Option<usize>),
    /// CUDA device N.
    Cuda(usize),
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Flex => write!(f, "flex"),
            DeviceSpec::Wgpu(None) => write!(f, "wgpu"),
            DeviceSpec::Wgpu(Some(i)) => write!(f, "wgpu:{i}"),
            DeviceSpec::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let (name, index) = match s.split_once(':') {
            Some((n, i)) => {
                let i = i.parse::<usize>().map_err(|_| {
                    format!("device index `{i}` in `{s}` is not a non-negative integer")
                })?;
                (n, Some(i))
            }
            None => (s, None),
        };
        match (name.to_ascii_lowercase().as_str(), index) {
            ("cpu" | "ndarray", None) => Ok(DeviceSpec::Cpu),
            ("flex", None) => Ok(DeviceSpec::Flex),
            ("wgpu" | "gpu", i) => Ok(DeviceSpec::Wgpu(i)),
            ("cuda", i) => Ok(DeviceSpec::Cuda(i.unwrap_or(0))),
            ("cpu" | "ndarray" | "flex", Some(_)) => {
                Err(format!("`{s}`: the CPU backends take no device index"))
            }
            _ => Err(format!(
                "unknown device `{s}`; expected cpu, flex, wgpu[:N] or cuda[:N]"
            )),
        }
    }
}

/// Work that runs on whichever backend the user chose.
pub trait Task {
    /// What the work returns.
    type Output;
    /// Runs the work on backend `B`, device `device`.
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<Self::Output>;
}

/// The backends compiled into this binary, as `(name, feature)`.
pub fn compiled_backends() -> Vec<(&'static str, bool)> {
    vec![
        ("cpu (ndarray)", true),
        ("flex", cfg!(feature = "flex")),
        ("wgpu", cfg!(feature = "wgpu")),
        ("cuda", cfg!(feature = "cuda")),
    ]
}

// Unused when every backend is compiled in.
#[cfg_attr(
    all(feature = "flex", feature = "wgpu", feature = "cuda"),
    allow(dead_code)
)]
fn not_compiled(spec: DeviceSpec, feature: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "device `{spec}` needs the `{feature}` backend, which this `salt` binary was built without; \
         rebuild with `cargo build --release -p salt-cli --features {feature}` \
         (or `cargo install --path crates/salt-cli --features {feature}`)"
    )
}

/// `task` computing its matmuls and attention in `precision` ([`salt_core::precision`]): the
/// backend is checked first (an unsupported precision is an error naming the device), and the
/// precision holds on the task's thread while it runs.
pub struct WithPrecision<T> {
    /// The work.
    pub task: T,
    /// Its compute precision.
    pub precision: salt_core::Precision,
    /// The device, for the error message.
    pub device: DeviceSpec,
}

impl<T: Task> Task for WithPrecision<T> {
    type Output = T::Output;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<T::Output> {
        salt_core::check_precision::<B>(&device, self.precision, &self.device.to_string())?;
        let _guard = salt_core::PrecisionGuard::set(self.precision);
        self.task.run::<B>(device)
    }
}

/// [`dispatch`] of `task` in `precision`.
pub fn dispatch_in<T: Task>(
    spec: DeviceSpec,
    precision: salt_core::Precision,
    task: T,
) -> Result<T::Output> {
    dispatch(
        spec,
        WithPrecision {
            task,
            precision,
            device: spec,
        },
    )
}

/// Parses `--precision` (f32, bf16, f16).
pub fn parse_precision(s: &str) -> std::result::Result<salt_core::Precision, String> {
    s.parse().map_err(|e: salt_core::Error| e.to_string())
}

/// Runs `task` on the backend of `spec`.
pub fn dispatch<T: Task>(spec: DeviceSpec, task: T) -> Result<T::Output> {
    dispatch_devices(&DeviceList::Listed(vec![spec]), One(task))
}

/// A single-device [`Task`] as a [`MultiTask`] on a one-device list.
struct One<T>(T);

impl<T: Task> MultiTask for One<T> {
    type Output = T::Output;
    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Result<T::Output> {
        let device = devices
            .into_iter()
            .next()
            .ok_or_else(|| anyhow::anyhow!("no device to run on"))?;
        self.0.run::<B>(device)
    }
}

/// Work that runs on several devices of one backend at once (data-parallel training).
pub trait MultiTask {
    /// What the work returns.
    type Output;
    /// Runs the work on backend `B`, on `devices` (at least one; the first is the main one).
    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Result<Self::Output>;
}

/// The devices of a run, as `--device` names them: one device, a comma-separated list of one
/// backend's devices (`cuda:0,cuda:1`, `wgpu:0,wgpu:1`; `cpu,cpu` runs two CPU replicas as
/// threads sharing the cores), or every device of a GPU backend (`cuda:all`, `wgpu:all`, and
/// `all`: CUDA's when this binary has it, else wgpu's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceList {
    /// These devices, in order; the first holds the main replica.
    Listed(Vec<DeviceSpec>),
    /// Every CUDA device of the machine.
    AllCuda,
    /// Every discrete GPU wgpu finds.
    AllWgpu,
}

impl fmt::Display for DeviceList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceList::Listed(specs) => {
                let names: Vec<String> = specs.iter().map(ToString::to_string).collect();
                write!(f, "{}", names.join(","))
            }
            DeviceList::AllCuda => write!(f, "cuda:all"),
            DeviceList::AllWgpu => write!(f, "wgpu:all"),
        }
    }
}

impl FromStr for DeviceList {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cuda:all" => return Ok(DeviceList::AllCuda),
            "wgpu:all" | "gpu:all" => return Ok(DeviceList::AllWgpu),
            "all" => {
                return if cfg!(feature = "cuda") {
                    Ok(DeviceList::AllCuda)
                } else if cfg!(feature = "wgpu") {
                    Ok(DeviceList::AllWgpu)
                } else {
                    Err(
                        "device `all` means every GPU, but this `salt` binary has no GPU backend; \
                         rebuild with `--features cuda` or `--features wgpu`, or name the devices"
                            .into(),
                    )
                };
            }
            _ => {}
        }
        let specs = s
            .split(',')
            .map(|part| part.trim().parse::<DeviceSpec>())
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let kind = std::mem::discriminant(&specs[0]);
        if let Some(other) = specs.iter().find(|d| std::mem::discriminant(*d) != kind) {
            return Err(format!(
                "`{s}` mixes backends ({} and {other}): the devices of one run must all be of \
                 one backend",
                specs[0]
            ));
        }
        if specs.len() > 1 {
            for (i, d) in specs.iter().enumerate() {
                if *d == DeviceSpec::Wgpu(None) {
                    return Err(format!(
                        "`{s}`: in a list of devices, name each wgpu GPU by its index (wgpu:0, \
                         wgpu:1, …)"
                    ));
                }
                let gpu = matches!(d, DeviceSpec::Wgpu(_) | DeviceSpec::Cuda(_));
                if gpu && specs[..i].contains(d) {
                    return Err(format!(
                        "`{s}` names {d} twice: each GPU holds at most one replica"
                    ));
                }
            }
        }
        Ok(DeviceList::Listed(specs))
    }
}

impl DeviceList {
    /// The one device of a single-device list.
    pub fn single(&self) -> Option<DeviceSpec> {
        match self {
            DeviceList::Listed(v) if v.len() == 1 => Some(v[0]),
            _ => None,
        }
    }

    /// Whether the devices are CPU backends (whose replicas share the machine's memory).
    pub fn is_cpu(&self) -> bool {
        matches!(self, DeviceList::Listed(v) if matches!(v[0], DeviceSpec::Cpu | DeviceSpec::Flex))
    }

    /// The devices, `all` expanded to what this machine has.
    pub fn resolve(&self) -> Result<Vec<DeviceSpec>> {
        match self {
            DeviceList::Listed(v) => Ok(v.clone()),
            DeviceList::AllCuda => {
                #[cfg(feature = "cuda")]
                {
                    probe_cuda()?;
                    let n =
                        <burn::backend::Cuda as burn::tensor::backend::Backend>::device_count(0);
                    anyhow::ensure!(n > 0, "cuda:all: the CUDA driver reports no device");
                    Ok((0..n).map(DeviceSpec::Cuda).collect())
                }
                #[cfg(not(feature = "cuda"))]
                {
                    Err(not_compiled(DeviceSpec::Cuda(0), "cuda"))
                }
            }
            DeviceList::AllWgpu => {
                #[cfg(feature = "wgpu")]
                {
                    probe_wgpu(&wgpu_device(None))?;
                    let n =
                        <burn::backend::Wgpu as burn::tensor::backend::Backend>::device_count(0);
                    anyhow::ensure!(
                        n > 0,
                        "wgpu:all: wgpu finds no discrete GPU here (integrated and software \
                         adapters are left out); name the device, e.g. --device wgpu"
                    );
                    Ok((0..n).map(|i| DeviceSpec::Wgpu(Some(i))).collect())
                }
                #[cfg(not(feature = "wgpu"))]
                {
                    Err(not_compiled(DeviceSpec::Wgpu(None), "wgpu"))
                }
            }
        }
    }
}

/// [`dispatch_devices`] of `task` in `precision`, checked on every device.
pub fn dispatch_devices_in<T: MultiTask>(
    list: &DeviceList,
    precision: salt_core::Precision,
    task: T,
) -> Result<T::Output> {
    struct Checked<T>(T, salt_core::Precision, Vec<DeviceSpec>);
    impl<T: MultiTask> MultiTask for Checked<T> {
        type Output = T::Output;
        fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Result<T::Output> {
            for (device, spec) in devices.iter().zip(&self.2) {
                salt_core::check_precision::<B>(device, self.1, &spec.to_string())?;
            }
            let _guard = salt_core::PrecisionGuard::set(self.1);
            self.0.run::<B>(devices)
        }
    }
    let specs = list.resolve()?;
    dispatch_devices(
        &DeviceList::Listed(specs.clone()),
        Checked(task, precision, specs),
    )
}

/// Runs `task` on the backend of `list`'s devices, each checked to exist and run first.
pub fn dispatch_devices<T: MultiTask>(list: &DeviceList, task: T) -> Result<T::Output> {
    use burn::backend::NdArray;
    let specs = list.resolve()?;
    let n = specs.len();
    let Some(&first) = specs.first() else {
        anyhow::bail!("no device to run on: the device list is empty");
    };
    let kind = std::mem::discriminant(&first);
    if let Some(other) = specs.iter().find(|d| std::mem::discriminant(*d) != kind) {
        anyhow::bail!("device list `{list}` mixes backends ({first} and {other})");
    }
    match first {
        DeviceSpec::Cpu => task.run::<Autodiff<NdArray<f32>>>(vec![Default::default(); n]),
        DeviceSpec::Flex => {
            #[cfg(feature = "flex")]
            {
                run_on::<burn::backend::Flex, T>(task, vec![Default::default(); n])
            }
            #[cfg(not(feature = "flex"))]
            {
                drop(task);
                Err(not_compiled(first, "flex"))
            }
        }
        DeviceSpec::Wgpu(_) => {
            #[cfg(feature = "wgpu")]
            {
                let mut devices = Vec::with_capacity(n);
                for spec in &specs {
                    let DeviceSpec::Wgpu(index) = *spec else {
                        anyhow::bail!("device list `{list}` mixes backends");
                    };
                    let device = wgpu_device(index);
                    probe_wgpu(&device).map_err(|e| e.context(format!("device {spec}")))?;
                    devices.push(device);
                }
                run_on::<burn::backend::Wgpu, T>(task, devices)
            }
            #[cfg(not(feature = "wgpu"))]
            {
                drop(task);
                Err(not_compiled(first, "wgpu"))
            }
        }
        DeviceSpec::Cuda(_) => {
            #[cfg(feature = "cuda")]
            {
                probe_cuda()?;
                let count = if n > 1 {
                    <burn::backend::Cuda as burn::tensor::backend::Backend>::device_count(0)
                } else {
                    usize::MAX
                };
                let mut devices = Vec::with_capacity(n);
                for spec in &specs {
                    let DeviceSpec::Cuda(index) = *spec else {
                        anyhow::bail!("device list `{list}` mixes backends");
                    };
                    anyhow::ensure!(
                        index < count,
                        "device {spec}: this machine has {count} CUDA device(s), cuda:0 to cuda:{}",
                        count.saturating_sub(1)
                    );
                    devices.push(burn::backend::cuda::CudaDevice::new(index));
                }
                run_on::<burn::backend::Cuda, T>(task, devices)
            }
            #[cfg(not(feature = "cuda"))]
            {
                drop(task);
                Err(not_compiled(first, "cuda"))
            }
        }
    }
}

/// Runs `task` on backend `B` (flex, wgpu or CUDA; ndarray is called directly).
///
/// The unit-test build of this crate leaves these instantiations out: every command's training
/// and evaluation code monomorphised per backend is most of this crate's compile time, paid
/// twice by `cargo test` (library, and library again as the unit-test harness), and the unit
/// tests run their tasks on ndarray. The library that the `salt` binary, xtask and the
/// integration tests link always has every compiled-in backend (tests/predict.rs runs flex).
#[cfg(all(any(feature = "flex", feature = "wgpu", feature = "cuda"), not(test)))]
fn run_on<B: burn::tensor::backend::Backend, T: MultiTask>(
    task: T,
    devices: Vec<B::Device>,
) -> Result<T::Output> {
    task.run::<Autodiff<B>>(devices)
}

#[cfg(all(any(feature = "flex", feature = "wgpu", feature = "cuda"), test))]
fn run_on<B: burn::tensor::backend::Backend, T: MultiTask>(
    task: T,
    _devices: Vec<B::Device>,
) -> Result<T::Output> {
    drop(task);
    anyhow::bail!("salt-cli's unit-test build runs tasks on ndarray only")
}

#[cfg(feature = "wgpu")]
fn wgpu_device(index: Option<usize>) -> burn::backend::wgpu::WgpuDevice {
    use burn::backend::wgpu::WgpuDevice;
    match index {
        None => WgpuDevice::DefaultDevice,
        Some(i) => WgpuDevice::DiscreteGpu(i),
    }
}

/// Runs one tiny computation on the wgpu device; wgpu panics (in its own code) when no adapter
/// exists, so the panic is caught here and turned into an error that says what to install.
#[cfg(feature = "wgpu")]
pub fn probe_wgpu(device: &burn::backend::wgpu::WgpuDevice) -> Result<()> {
    use burn::tensor::Tensor;
    let device = device.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(move || {
        let t = Tensor::<burn::backend::Wgpu, 1>::ones([4], &device);
        t.sum().into_scalar()
    });
    std::panic::set_hook(previous);
    match result {
        Ok(v) => {
            if v != 4.0 {
                anyhow::bail!("the wgpu device computed 1+1+1+1 = {v}: the driver is broken");
            }
            Ok(())
        }
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            anyhow::bail!(
                "no usable wgpu adapter ({msg}); install a Vulkan, Metal or DX12 driver \
                 (on Debian/Ubuntu without a GPU: `apt-get install mesa-vulkan-drivers libvulkan1` \
                 for software Vulkan), or use --device cpu"
            )
        }
    }
}

/// Checks that the CUDA driver and NVRTC can be loaded before burn-cuda tries (and panics in a
/// device thread when they cannot).
#[cfg(feature = "cuda")]
pub fn probe_cuda() -> Result<()> {
    #[allow(unsafe_code)]
    fn loads(name: &str) -> bool {
        // SAFETY: loading a system library runs its initialisers; libcuda and libnvrtc are the
        // libraries burn-cuda itself loads next, so probing them adds no new code to the process.
        unsafe { libloading::Library::new(name).is_ok() }
    }
    if !["libcuda.so.1", "libcuda.so", "nvcuda.dll"]
        .iter()
        .any(|n| loads(n))
    {
        anyhow::bail!(
            "CUDA was asked for, but the NVIDIA driver library (libcuda.so.1) cannot be loaded on \
             this machine; install the NVIDIA driver, or use --device wgpu or --device cpu"
        );
    }
    let nvrtc = [
        "libnvrtc.so",
        "libnvrtc.so.13",
        "libnvrtc.so.12",
        "libnvrtc.so.11.2",
        "nvrtc64_120_0.dll",
    ];
    if !nvrtc.iter().any(|n| loads(n)) {
        anyhow::bail!(
            "CUDA was asked for, but NVRTC (libnvrtc.so) cannot be loaded: install the CUDA \
             toolkit, or `pip install nvidia-cuda-nvrtc-cu12` and add its `lib` folder to \
             LD_LIBRARY_PATH"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!("cpu".parse(), Ok(DeviceSpec::Cpu));
        assert_eq!("flex".parse(), Ok(DeviceSpec::Flex));
        assert_eq!("wgpu".parse(), Ok(DeviceSpec::Wgpu(None)));
        assert_eq!("cuda".parse(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("cuda:1".parse(), Ok(DeviceSpec::Cuda(1)));
        assert!("tpu"
            .parse::<DeviceSpec>()
            .unwrap_err()
            .contains("unknown device `tpu`"));
        assert!("cuda:x".parse::<DeviceSpec>().unwrap_err().contains("`x`"));
        assert!("cpu:1".parse::<DeviceSpec>().is_err());
    }

    #[test]
    fn parses_device_lists() {
        let l = |s: &str| s.parse::<DeviceList>();
        assert_eq!(l("cpu"), Ok(DeviceList::Listed(vec![DeviceSpec::Cpu])));
        assert_eq!(
            l("cuda:0, cuda:1"),
            Ok(DeviceList::Listed(vec![
                DeviceSpec::Cuda(0),
                DeviceSpec::Cuda(1)
            ]))
        );
        assert_eq!(
            l("cpu,cpu").map(|d| d.to_string()),
            Ok("cpu,cpu".to_string())
        );
        assert_eq!(l("cuda:all"), Ok(DeviceList::AllCuda));
        assert_eq!(l("wgpu:all"), Ok(DeviceList::AllWgpu));
        let err = l("cuda:0,wgpu:0").unwrap_err();
        assert!(err.contains("mixes backends"), "{err}");
        let err = l("cuda:1,cuda:1").unwrap_err();
        assert!(err.contains("cuda:1 twice"), "{err}");
        let err = l("wgpu,wgpu:1").unwrap_err();
        assert!(err.contains("by its index"), "{err}");
        assert!(l("cuda:0,tpu")
            .unwrap_err()
            .contains("unknown device `tpu`"));
        assert_eq!(l("cpu").unwrap().single(), Some(DeviceSpec::Cpu));
        assert_eq!(l("cpu,cpu").unwrap().single(), None);
        assert!(l("cpu,cpu").unwrap().is_cpu());
        #[cfg(not(any(feature = "cuda", feature = "wgpu")))]
        assert!(l("all").unwrap_err().contains("no GPU backend"));
    }

    struct Sum;
    impl Task for Sum {
        type Output = f32;
        fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<f32> {
            use burn::tensor::{ElementConversion, Tensor};
            Ok(Tensor::<B, 1>::from_floats([1.0, 2.0, 3.5], &device)
                .sum()
                .into_scalar()
                .elem())
        }
    }

    #[test]
    fn dispatches_to_cpu() {
        assert_eq!(dispatch(DeviceSpec::Cpu, Sum).unwrap(), 6.5);
        // A list built by hand (not parsed) is checked too: empty, or mixing backends.
        let err = dispatch_devices(&DeviceList::Listed(vec![]), One(Sum)).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        let mixed = DeviceList::Listed(vec![DeviceSpec::Cpu, DeviceSpec::Flex]);
        let err = dispatch_devices(&mixed, One(Sum)).unwrap_err();
        assert!(err.to_string().contains("mixes backends"), "{err}");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn missing_backend_is_a_clear_error() {
        let err = dispatch(DeviceSpec::Cuda(0), Sum).unwrap_err().to_string();
        assert!(err.contains("--features cuda"), "{err}");
    }

    #[cfg(feature = "cuda")]
    #[test]
    fn cuda_without_driver_is_a_clear_error() {
        // CI machines have no NVIDIA driver: the probe must refuse before burn-cuda panics.
        if probe_cuda().is_ok() {
            return; // a machine with CUDA: nothing to check here
        }
        let err = dispatch(DeviceSpec::Cuda(0), Sum).unwrap_err().to_string();
        assert!(err.contains("libcuda") || err.contains("NVRTC"), "{err}");
    }

    /// The same SALT layer (weights and input made on the CPU) gives the same output on wgpu.
    #[cfg(feature = "wgpu")]
    #[test]
    fn wgpu_matches_ndarray_on_a_salt_layer() {
        use burn::backend::{NdArray, Wgpu};
        use burn::tensor::{Tensor, TensorData};
        use salt_core::{inject, AdaptableLinearConfig, AdapterConfig, Method, SaltInit};

        /// f32 matmuls on two backends (different summation orders).
        const BACKEND_TOL: f32 = 1e-4;
        let device = wgpu_device(None);
        if let Err(e) = probe_wgpu(&device) {
            let required =
                std::env::var_os("CI").is_some() || std::env::var_os("SALT_REQUIRE_WGPU").is_some();
            assert!(
                !required,
                "wgpu is required here (CI / SALT_REQUIRE_WGPU) but: {e:#}"
            );
            eprintln!("skipped: no wgpu adapter on this machine ({e:#})");
            return;
        }
        let config = AdapterConfig {
            method: Method::Salt {
                svd_rank: 3,
                lora_rank: 2,
                init: SaltInit::Reference,
            },
            targets: vec!["**".into()],
            seed: 1,
        };
        let cpu = Default::default();
        let mut a = AdaptableLinearConfig::new(12, 20).init::<NdArray<f32>>(&cpu);
        let w = a.weight.val().into_data();
        let b = a.bias.as_ref().unwrap().val().into_data();
        inject(&mut a, &config).unwrap();
        let mut g = AdaptableLinearConfig::new(12, 20).init::<Wgpu>(&device);
        g.weight = burn::module::Param::from_tensor(Tensor::from_data(w, &device));
        g.bias = Some(burn::module::Param::from_tensor(Tensor::from_data(
            b, &device,
        )));
        inject(&mut g, &config).unwrap();
        let x: Vec<f32> = (0..36)
            .map(|i| ((i * 37 % 17) as f32 - 8.0) / 8.0)
            .collect();
        let ya = a.forward(Tensor::<NdArray<f32>, 2>::from_data(
            TensorData::new(x.clone(), [3, 12]),
            &cpu,
        ));
        let yg = g.forward(Tensor::<Wgpu, 2>::from_data(
            TensorData::new(x, [3, 12]),
            &device,
        ));
        let ya: Vec<f32> = ya.into_data().convert::<f32>().into_vec().unwrap();
        let yg: Vec<f32> = yg.into_data().convert::<f32>().into_vec().unwrap();
        let d = ya
            .iter()
            .zip(&yg)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0, f32::max);
        assert!(d < BACKEND_TOL, "wgpu and ndarray differ by {d}");
    }
}
