//! MONAI's residual `UNet` (`monai.networks.nets.UNet`, 2-D, `num_res_units ≥ 1`): strided
//! residual units down, transposed convolutions and residual units up, a skip concatenation at
//! every level.
//!
//! MONAI builds the network recursively: each level is
//! `nn.Sequential(down, SkipConnection(subblock), up)`, the innermost subblock being the
//! bottleneck unit, so a level's keys start with `model.` and one `1.submodule.` per level above
//! it. burn's derived records cannot be recursive, so [`UNet`] keeps the levels in a flat `Vec`
//! (top first) and [`KEY_MAP`] turns the nesting depth into the `Vec` index, for up to
//! [`MAX_LEVELS`] levels.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};

use crate::checkpoint::KeyMap;
use crate::error::Error;
use crate::monai_blocks::{
    ActKind, AdnConfig, AdnOp, ConvolutionConfig, NormKind, ResidualUnit, ResidualUnitConfig,
    TransposedConvolution,
};

/// The most levels (`channels.len() − 1`) a [`UNet`] may have: the depths [`KEY_MAP`] spells out.
pub const MAX_LEVELS: usize = 8;

/// How MONAI's `UNet` state_dict keys and our burn paths correspond.
///
/// Load rules, applied in order to each MONAI key:
/// - `conv.unit{i}` (a `ResidualUnit`'s `nn.Sequential` children) → `conv.{i}` (a `Vec`);
/// - `adn.A.weight` (PReLU's slope) → `adn.act.alpha`;
/// - the `1.submodule` right before `conv`/`residual` is the innermost level's bottleneck unit
///   → `bottom`;
/// - `model.` followed by `i` × `1.submodule.` is level `i` → `levels.{i}.` (deepest first);
/// - in a level, `nn.Sequential(down, SkipConnection, up)`'s children: `0` → `down`,
///   `2.0` (the transposed `Convolution`) → `up.conv`, `2.1` (the `ResidualUnit`) → `up.ru`.
///
/// So `model.1.submodule.1.submodule.conv.unit0.adn.A.weight` (a 2-level net's bottleneck)
/// becomes `levels.1.bottom.conv.0.adn.act.alpha`. The save rules are the inverse. Instance
/// norms (`affine=False`) and dropout have no tensors and MONAI's UNet has no buffers: nothing
/// is ignored.
pub const KEY_MAP: KeyMap = KeyMap {
    model: "unet",
    load: &[
        (r"\.conv\.unit(\d+)\.", ".conv.${1}."),
        (r"\.adn\.A\.weight$", ".adn.act.alpha"),
        (r"\b1\.submodule\.(conv|residual)\.", "bottom.${1}."),
        (r"^model\.(?:1\.submodule\.){7}", "levels.7."),
        (r"^model\.(?:1\.submodule\.){6}", "levels.6."),
        (r"^model\.(?:1\.submodule\.){5}", "levels.5."),
        (r"^model\.(?:1\.submodule\.){4}", "levels.4."),
        (r"^model\.(?:1\.submodule\.){3}", "levels.3."),
        (r"^model\.(?:1\.submodule\.){2}", "levels.2."),
        (r"^model\.1\.submodule\.", "levels.1."),
        (r"^model\.", "levels.0."),
        (r"^levels\.(\d+)\.0\.", "levels.${1}.down."),
        (r"^levels\.(\d+)\.2\.0\.", "levels.${1}.up.conv."),
        (r"^levels\.(\d+)\.2\.1\.", "levels.${1}.up.ru."),
    ],
    save: &[
        (r"\.bottom\.", ".1.submodule."),
        (r"\.down\.", ".0."),
        (r"\.up\.conv\.", ".2.0."),
        (r"\.up\.ru\.", ".2.1."),
        (r"\.conv\.(\d+)\.", ".conv.unit${1}."),
        (r"\.adn\.act\.alpha$", ".adn.A.weight"),
        (r"^levels\.0\.", "model."),
        (r"^levels\.1\.", "model.1.submodule."),
        (r"^levels\.2\.", "model.1.submodule.1.submodule."),
        (
            r"^levels\.3\.",
            "model.1.submodule.1.submodule.1.submodule.",
        ),
        (
            r"^levels\.4\.",
            "model.1.submodule.1.submodule.1.submodule.1.submodule.",
        ),
        (
            r"^levels\.5\.",
            "model.1.submodule.1.submodule.1.submodule.1.submodule.1.submodule.",
        ),
        (
            r"^levels\.6\.",
            "model.1.submodule.1.submodule.1.submodule.1.submodule.1.submodule.1.submodule.",
        ),
        (
            r"^levels\.7\.",
            "model.1.submodule.1.submodule.1.submodule.1.submodule.1.submodule.1.submodule.\
             1.submodule.",
        ),
    ],
    ignored: &[],
};

/// Configuration of a [`UNet`]: the arguments of MONAI's `UNet(spatial_dims=2, ...)`.
///
/// Activation and norm are MONAI's defaults, fixed: PReLU (one slope per layer) and instance
/// norm without affine parameters.
#[derive(Config, Debug)]
pub struct UNetConfig {
    /// Channels per level, top first, the last the bottleneck's: 2 to [`MAX_LEVELS`] + 1 values.
    pub channels: Vec<usize>,
    /// Stride of each level's down / up sampling (`channels.len() − 1` values, each ≥ 1).
    pub strides: Vec<usize>,
    /// Residual units per down layer (`num_res_units`); at least 1: MONAI's plain-convolution
    /// variant (`num_res_units=0`) is not ported.
    pub num_res_units: usize,
    /// Input channels.
    #[config(default = 3)]
    pub in_channels: usize,
    /// Output channels (logits).
    #[config(default = 1)]
    pub out_channels: usize,
    /// Kernel of the (residual) convolutions; odd.
    #[config(default = 3)]
    pub kernel_size: usize,
    /// Kernel of the transposed convolutions; odd.
    #[config(default = 3)]
    pub up_kernel_size: usize,
    /// Dropout probability in every ADN block, in `[0, 1)`.
    #[config(default = 0.0)]
    pub dropout: f64,
    /// Bias in every convolution.
    #[config(default = true)]
    pub bias: bool,
    /// Order of norm (`N`), dropout (`D`) and activation (`A`) after each convolution.
    #[config(default = "String::from(\"NDA\")")]
    pub adn_ordering: String,
}

impl UNetConfig {
    /// The paper's Table-1 row: `UNet(spatial_dims=2, in_channels=3, out_channels=1,
    /// channels=(32, 64, 128, 256, 512), strides=(2, 2, 2, 2), num_res_units=2)`,
    /// 6,495,868 parameters. Inputs: multiples of 16.
    pub fn paper() -> Self {
        Self::new(vec![32, 64, 128, 256, 512], vec![2, 2, 2, 2], 2)
    }

    /// A small model for fast tests and the smoke table (widths / 4: 407,092 parameters, same
    /// depth, so the same inputs as [`paper`](Self::paper): multiples of 16).
    pub fn smoke() -> Self {
        Self::new(vec![8, 16, 32, 64, 128], vec![2, 2, 2, 2], 2)
    }

    /// What the input height and width must be multiples of: the product of the strides.
    pub fn size_multiple(&self) -> usize {
        self.strides.iter().product()
    }

    /// Checks every field.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |field, value: String, expected: &str| {
            Err(Error::InvalidConfig {
                model: "unet",
                field,
                value,
                expected: expected.to_string(),
            })
        };
        if !(2..=MAX_LEVELS + 1).contains(&self.channels.len()) || self.channels.contains(&0) {
            return bad(
                "channels",
                format!("{:?}", self.channels),
                "2 to MAX_LEVELS + 1 (9) positive channel counts",
            );
        }
        if self.strides.len() != self.channels.len() - 1 || self.strides.contains(&0) {
            return bad(
                "strides",
                format!("{:?}", self.strides),
                "channels.len() - 1 strides, each at least 1",
            );
        }
        if self.num_res_units == 0 {
            return bad("num_res_units", "0".into(), "at least 1");
        }
        if self.in_channels == 0 {
            return bad("in_channels", "0".into(), "at least 1");
        }
        if self.out_channels == 0 {
            return bad("out_channels", "0".into(), "at least 1");
        }
        if self.kernel_size.is_multiple_of(2) {
            return bad("kernel_size", self.kernel_size.to_string(), "an odd size");
        }
        if self.up_kernel_size.is_multiple_of(2) {
            return bad(
                "up_kernel_size",
                self.up_kernel_size.to_string(),
                "an odd size",
            );
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(
                "dropout",
                self.dropout.to_string(),
                "a probability in [0, 1)",
            );
        }
        if AdnOp::parse_ordering(&self.adn_ordering).is_none() {
            return bad(
                "adn_ordering",
                format!("{:?}", self.adn_ordering),
                "letters N, D, A, each at most once",
            );
        }
        Ok(())
    }

    /// Validates the configuration and builds the model with burn's default initialisation
    /// (load a checkpoint for MONAI's weights).
    pub fn init<B: Backend>(&self, device: &B::Device) -> crate::Result<UNet<B>> {
        self.validate()?;
        let adn = AdnConfig {
            channels: 0, // set per layer
            ordering: AdnOp::parse_ordering(&self.adn_ordering).unwrap_or_default(),
            norm: Some(NormKind::Instance),
            dropout: Some(self.dropout),
            act: Some(ActKind::PRelu),
        };
        let n = self.channels.len() - 1;
        let levels = (0..n)
            .map(|i| {
                let c = self.channels[i];
                let s = self.strides[i];
                let is_top = i == 0;
                let inc = if is_top {
                    self.in_channels
                } else {
                    self.channels[i - 1]
                };
                // A level's up path returns what its down path took (the top: the logits).
                let outc = if is_top { self.out_channels } else { inc };
                let innermost = i == n - 1;
                // MONAI's `upc`: the down output concatenated with the inner level's output.
                let upc = if innermost {
                    c + self.channels[n]
                } else {
                    2 * c
                };
                let mut up_adn = adn.clone();
                up_adn.channels = outc;
                UNetLevel {
                    down: self.residual_unit(&adn, inc, c, s, device),
                    bottom: innermost
                        .then(|| self.residual_unit(&adn, c, self.channels[n], 1, device)),
                    up: UpLayer {
                        conv: ConvolutionConfig::new(upc, outc, self.up_kernel_size, s)
                            .with_output_padding(s - 1)
                            .with_bias(self.bias)
                            .with_adn(Some(up_adn))
                            .init_transposed(device),
                        ru: ResidualUnitConfig {
                            in_channels: outc,
                            out_channels: outc,
                            stride: 1,
                            kernel_size: self.kernel_size,
                            subunits: 1,
                            bias: self.bias,
                            adn: adn.clone(),
                            last_conv_only: is_top,
                        }
                        .init(device),
                    },
                }
            })
            .collect();
        Ok(UNet {
            levels,
            size_multiple: self.size_multiple(),
        })
    }

    fn residual_unit<B: Backend>(
        &self,
        adn: &AdnConfig,
        inc: usize,
        outc: usize,
        stride: usize,
        device: &B::Device,
    ) -> ResidualUnit<B> {
        ResidualUnitConfig {
            in_channels: inc,
            out_channels: outc,
            stride,
            kernel_size: self.kernel_size,
            subunits: self.num_res_units,
            bias: self.bias,
            adn: adn.clone(),
            last_conv_only: false,
        }
        .init(device)
    }
}

/// MONAI's residual U-Net.
#[derive(Module, Debug)]
pub struct UNet<B: Backend> {
    /// The levels, top first (MONAI's nested `model`; see [`KEY_MAP`]).
    pub levels: Vec<UNetLevel<B>>,
    /// Input sides must be multiples of this (the product of the strides).
    #[module(skip)]
    pub size_multiple: usize,
}

/// Activations of [`UNet::forward_features`].
#[derive(Debug, Clone)]
pub struct UNetFeatures<B: Backend> {
    /// Output of each level's down unit, top level first: `[n, channels[i], h / s₀…sᵢ, …]`.
    pub down: Vec<Tensor<B, 4>>,
    /// Output of the bottleneck unit: `[n, channels[last], h / ∏s, w / ∏s]`.
    pub bottleneck: Tensor<B, 4>,
    /// `[n, out_channels, h, w]`.
    pub logits: Tensor<B, 4>,
}

impl<B: Backend> UNet<B> {
    /// Logits of the images.
    ///
    /// # Shapes
    /// `images: [n, in_channels, h, w]` → `[n, out_channels, h, w]`; `h` and `w` multiples of
    /// [`UNetConfig::size_multiple`] (16 for the presets).
    ///
    /// # Panics
    /// If `h` or `w` is not such a multiple (MONAI fails on the skip concatenation).
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 4> {
        self.forward_features(images).logits
    }

    /// [`forward`](Self::forward), also returning the down path's and bottleneck's activations
    /// (tensors are shared, not copied).
    ///
    /// # Panics
    /// As [`forward`](Self::forward).
    pub fn forward_features(&self, images: Tensor<B, 4>) -> UNetFeatures<B> {
        let [_, _, h, w] = images.dims();
        let m = self.size_multiple;
        assert!(
            h > 0 && w > 0 && h.is_multiple_of(m) && w.is_multiple_of(m),
            "UNet input {h}×{w}: height and width must be positive multiples of {m}"
        );
        let mut down = Vec::with_capacity(self.levels.len());
        let mut x = images;
        for level in &self.levels {
            x = level.down.forward(x); // [n, c_i, h_i, w_i]
            down.push(x.clone());
        }
        let bottleneck = self
            .levels
            .last()
            .and_then(|l| l.bottom.as_ref())
            .expect("the innermost level has the bottleneck unit")
            .forward(x);
        // Up from the innermost level; MONAI's SkipConnection is cat([x, submodule(x)], dim=1).
        let mut y = bottleneck.clone();
        for (level, skip) in self.levels.iter().zip(&down).rev() {
            y = level.up.forward(Tensor::cat(vec![skip.clone(), y], 1));
        }
        UNetFeatures {
            down,
            bottleneck,
            logits: y,
        }
    }
}

/// One level: the down unit, the up path and, in the innermost level, the bottleneck.
#[derive(Module, Debug)]
pub struct UNetLevel<B: Backend> {
    /// The strided residual unit (MONAI `0`).
    pub down: ResidualUnit<B>,
    /// The bottleneck unit, in the innermost level only (its `1.submodule`).
    pub bottom: Option<ResidualUnit<B>>,
    /// The up path (MONAI `2`).
    pub up: UpLayer<B>,
}

/// The up path of a level: `nn.Sequential(transposed Convolution, ResidualUnit)`.
#[derive(Module, Debug)]
pub struct UpLayer<B: Backend> {
    /// Transposed convolution with stride `s` and output padding `s − 1` (MONAI `0`).
    pub conv: TransposedConvolution<B>,
    /// One-unit residual unit; in the top level its convolution is bare (MONAI `1`).
    pub ru: ResidualUnit<B>,
}

impl<B: Backend> UpLayer<B> {
    /// # Shapes
    /// `x: [n, upc, h, w]` → `[n, outc, h·s, w·s]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.ru.forward(self.conv.forward(x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::module::AutodiffModule;
    use burn::tensor::Distribution;

    type TestBackend = burn::backend::NdArray<f32>;
    type TestAutodiffBackend = Autodiff<TestBackend>;

    /// `sum(p.numel() for p in UNet(...).parameters())` printed by MONAI 1.6.1.
    const PAPER_PARAMS: usize = 6_495_868;
    /// The same for `smoke()`'s configuration.
    const SMOKE_PARAMS: usize = 407_092;

    #[test]
    fn paper_parameter_count_matches_monai() {
        let model = UNetConfig::paper()
            .init::<TestBackend>(&Default::default())
            .unwrap();
        assert_eq!(model.num_params(), PAPER_PARAMS);
    }

    #[test]
    fn smoke_parameter_count_matches_monai() {
        let model = UNetConfig::smoke()
            .init::<TestBackend>(&Default::default())
            .unwrap();
        assert_eq!(model.num_params(), SMOKE_PARAMS);
    }

    #[test]
    fn smoke_takes_64_by_48() {
        let device = Default::default();
        let model = UNetConfig::smoke().init::<TestBackend>(&device).unwrap();
        let x = Tensor::random([1, 3, 64, 48], Distribution::Normal(0.0, 1.0), &device);
        let f = model.forward_features(x);
        assert_eq!(f.logits.dims(), [1, 1, 64, 48]);
        assert_eq!(f.down.len(), 4);
        assert_eq!(f.down[0].dims(), [1, 8, 32, 24]);
        assert_eq!(f.bottleneck.dims(), [1, 128, 4, 3]);
    }

    #[test]
    #[should_panic(expected = "must be positive multiples of 16")]
    fn rejects_sizes_that_are_not_multiples_of_the_strides() {
        let device = Default::default();
        let model = UNetConfig::smoke().init::<TestBackend>(&device).unwrap();
        model.forward(Tensor::zeros([1, 3, 40, 64], &device));
    }

    #[test]
    fn invalid_configs_are_typed_errors() {
        let device = Default::default();
        let cases = [
            (
                UNetConfig {
                    strides: vec![2, 2],
                    ..UNetConfig::paper()
                },
                "strides",
            ),
            (UNetConfig::new(vec![8], vec![], 2), "channels"),
            (UNetConfig::new(vec![8; 10], vec![2; 9], 2), "channels"),
            (UNetConfig::new(vec![8, 16], vec![2], 0), "num_res_units"),
            (UNetConfig::paper().with_kernel_size(4), "kernel_size"),
            (UNetConfig::paper().with_dropout(1.0), "dropout"),
            (
                UNetConfig::paper().with_adn_ordering("NNA".into()),
                "adn_ordering",
            ),
        ];
        for (cfg, want) in cases {
            match cfg.init::<TestBackend>(&device) {
                Err(Error::InvalidConfig { field, .. }) => assert_eq!(field, want),
                other => panic!(
                    "{want}: expected InvalidConfig, got {:?}",
                    other.map(|_| ())
                ),
            }
        }
    }

    #[test]
    fn trains_under_autodiff() {
        let device = Default::default();
        let model = UNetConfig::new(vec![4, 8, 16], vec![2, 2], 2)
            .with_dropout(0.5)
            .init::<TestAutodiffBackend>(&device)
            .unwrap();
        let x = Tensor::random([2, 3, 16, 16], Distribution::Normal(0.0, 1.0), &device);
        let y = model.forward(x.clone());
        assert_eq!(y.dims(), [2, 1, 16, 16]);
        let grads = y.clone().powf_scalar(2.0).mean().backward();
        let w = &model.levels[0].down.conv[0].conv.weight;
        let g = w.grad(&grads).expect("gradient on the first convolution");
        assert!(g.abs().sum().into_scalar() > 0.0);
        // Dropout is active in training: two forwards differ; in inference they agree.
        let y2 = model.forward(x.clone());
        assert!((y.clone() - y2).abs().max().into_scalar() > 0.0);
        let valid = model.valid();
        let xi = x.inner();
        let d = (valid.forward(xi.clone()) - valid.forward(xi)).abs().max();
        assert_eq!(d.into_scalar(), 0.0);
    }
}
