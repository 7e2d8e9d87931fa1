//! salt-core's invariant suite over a table of layer shapes (tall, wide, square, conv):
//! formula = independent f64 reconstruction, identity at init, gradients only on trainable
//! tensors, merged == unmerged, save → load round trip, typed errors, parameter counts.

use burn::backend::{Autodiff, NdArray};
use burn::module::{Module, ModuleMapper, Param};
use burn::nn::{LayerNorm, LayerNormConfig};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::{backend::Backend, Tensor, TensorData};
use rand::{rngs::StdRng, Rng, SeedableRng};
use salt_core::*;

type TestBackend = NdArray<f32>;
type TestAutodiffBackend = Autodiff<TestBackend>;

/// f32 forward vs f64 reference of `U·ReLU(Σ′)·Vᵀ` (values of order 1, k ≤ 18).
const FORMULA_TOL: f64 = 2e-5;

/// One layer shape of the table.
#[derive(Debug, Clone, Copy)]
enum Shape {
    Linear { d_in: usize, d_out: usize },
    Conv { ci: usize, co: usize, k: usize },
}

const SHAPES: [(&str, Shape); 4] = [
    ("tall", Shape::Linear { d_in: 5, d_out: 12 }),
    ("wide", Shape::Linear { d_in: 12, d_out: 5 }),
    ("square", Shape::Linear { d_in: 8, d_out: 8 }),
    ("conv", Shape::Conv { ci: 2, co: 6, k: 3 }),
];

/// A layer of either kind behind one interface for the tests.
#[derive(Module, Debug)]
struct Layer<B: Backend> {
    linear: Option<AdaptableLinear<B>>,
    conv: Option<AdaptableConv2d<B>>,
}
visit_adaptable_fields!(Layer { linear, conv });

impl<B: Backend> Layer<B> {
    fn new(shape: Shape, device: &B::Device) -> Self {
        match shape {
            Shape::Linear { d_in, d_out } => Self {
                linear: Some(AdaptableLinearConfig::new(d_in, d_out).init(device)),
                conv: None,
            },
            Shape::Conv { ci, co, k } => Self {
                linear: None,
                conv: Some(
                    AdaptableConv2dConfig::new([ci, co], [k, k])
                        .with_padding([1, 1])
                        .init(device),
                ),
            },
        }
    }

    /// Input of the layer: `[3, d_in]` or `[2, ci, 5, 4]`, seeded.
    fn input(shape: Shape, device: &B::Device) -> Tensor<B, 4> {
        let mut rng = StdRng::seed_from_u64(7);
        let (dims, n) = match shape {
            Shape::Linear { d_in, .. } => ([1, 1, 3, d_in], 3 * d_in),
            Shape::Conv { ci, .. } => ([2, ci, 5, 4], 2 * ci * 20),
        };
        let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        Tensor::from_data(TensorData::new(v, dims), device)
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match (&self.linear, &self.conv) {
            (Some(l), _) => l.forward(x),
            (_, Some(c)) => c.forward(x),
            _ => unreachable!(),
        }
    }

    fn weight_matrix(&self) -> Vec<f32> {
        let w = match (&self.linear, &self.conv) {
            (Some(l), _) => l.weight_matrix(),
            (_, Some(c)) => c.weight_matrix(),
            _ => unreachable!(),
        };
        w.into_data().into_vec().unwrap()
    }

    fn effective_matrix(&self) -> Vec<f32> {
        match (&self.linear, &self.conv) {
            (Some(l), _) => l.effective_weight().into_data().into_vec().unwrap(),
            (_, Some(c)) => c.effective_weight().into_data().into_vec().unwrap(),
            _ => unreachable!(),
        }
    }
}

fn rows_cols(shape: Shape) -> (usize, usize) {
    match shape {
        Shape::Linear { d_in, d_out } => (d_out, d_in),
        Shape::Conv { ci, co, k } => (co, ci * k * k),
    }
}

fn all_targets(method: Method) -> AdapterConfig {
    AdapterConfig {
        method,
        targets: vec!["**".into()],
        seed: 3,
    }
}

fn salt_method(init: SaltInit) -> Method {
    Method::Salt {
        svd_rank: 2,
        lora_rank: 2,
        init,
    }
}

fn methods() -> Vec<Method> {
    vec![
        salt_method(SaltInit::Reference),
        Method::Svd,
        Method::Lora {
            rank: 2,
            scale: 0.5,
            dropout: 0.0,
        },
    ]
}

/// Replaces every adapter parameter by seeded values of order 1 (shifts negative enough that
/// the ReLU clips some singular values), so the formula is exercised away from its init.
struct Perturb(StdRng, Vec<String>);

impl<B: Backend> ModuleMapper<B> for Perturb {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.1.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.1.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if !is_adapter_key(&param_key(&self.1)) {
            return param;
        }
        let dims = param.shape().dims::<D>();
        let n: usize = dims.iter().product();
        let v: Vec<f32> = (0..n).map(|_| self.0.random_range(-1.5..1.5)).collect();
        param.map(|t| Tensor::from_data(TensorData::new(v, dims), &t.device()))
    }
}

fn perturbed<B: Backend>(layer: Layer<B>) -> Layer<B> {
    layer.map(&mut Perturb(StdRng::seed_from_u64(11), Vec::new()))
}

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec().unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Named adapter tensors of the single adapted layer: `(name, values)`.
fn adapter_values<B: Backend>(layer: &Layer<B>) -> Vec<(String, Vec<f32>)> {
    trainable_tensors::<B, _>(layer, &TrainablePolicy::adapters_only())
        .into_iter()
        .map(|(k, _, v)| (k.rsplit('.').next().unwrap().to_string(), v))
        .collect()
}

#[test]
fn salt_equals_independent_f64_reconstruction() {
    let device = Default::default();
    for (name, shape) in SHAPES {
        for svd_rank in [0, 2, rows_cols(shape).0.min(rows_cols(shape).1)] {
            let (rows, cols) = rows_cols(shape);
            let k = rows.min(cols);
            let q = if svd_rank < k { 2 } else { 1 };
            let mut layer = Layer::<TestBackend>::new(shape, &device);
            let method = Method::Salt {
                svd_rank,
                lora_rank: q,
                init: SaltInit::Reference,
            };
            inject(&mut layer, &all_targets(method)).unwrap();
            let layer = perturbed(layer);

            // Independent reference: f64 SVD of the base weight, dense k×k Σ′, ReLU, U·Σ′·Vᵀ.
            let w = layer.weight_matrix();
            let f = SvdFactors::compute("ref", &w, rows, cols).unwrap();
            let p: std::collections::HashMap<_, _> = adapter_values(&layer).into_iter().collect();
            let r = svd_rank;
            let mut sigma = vec![0.0f64; k * k];
            for i in 0..r {
                sigma[i * k + i] = f64::from(p["scale"][i]) * f.s[i] + f64::from(p["shift"][i]);
            }
            if r < k {
                let (x, y) = (&p["x"], &p["y"]);
                for i in 0..k - r {
                    for j in 0..k - r {
                        let mut acc = if i == j { f.s[r + i] } else { 0.0 };
                        for c in 0..q {
                            acc += f64::from(x[i * q + c]) * f64::from(y[c * (k - r) + j]);
                        }
                        sigma[(r + i) * k + r + j] = acc;
                    }
                }
            }
            let clipped = sigma.iter().filter(|v| **v < 0.0).count();
            sigma.iter_mut().for_each(|v| *v = v.max(0.0));
            let mut expected = vec![0.0f64; rows * cols];
            for a in 0..rows {
                for b in 0..cols {
                    let mut acc = 0.0;
                    for i in 0..k {
                        for j in 0..k {
                            acc += f.u[a * k + i] * sigma[i * k + j] * f.vt[j * cols + b];
                        }
                    }
                    expected[a * cols + b] = acc;
                }
            }
            let got = layer.effective_matrix();
            let err = got
                .iter()
                .zip(&expected)
                .map(|(g, e)| (f64::from(*g) - e).abs())
                .fold(0.0, f64::max);
            assert!(
                err < FORMULA_TOL,
                "{name} r={svd_rank}: max |W′ − ref| = {err}"
            );
            assert!(
                r == k || clipped > 0,
                "{name} r={svd_rank}: the ReLU was never active"
            );
        }
    }
}

#[test]
fn linear_forward_follows_pytorch_orientation() {
    // weight is [out, in] as PyTorch: y = x·Wᵀ + b, checked by hand.
    let device = Default::default();
    let mut l = AdaptableLinearConfig::new(2, 3).init::<TestBackend>(&device);
    l.weight = Param::from_tensor(Tensor::from_floats(
        [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]],
        &device,
    ));
    l.bias = Some(Param::from_tensor(Tensor::from_floats(
        [0.5, -0.5, 1.0],
        &device,
    )));
    let y = l.forward(Tensor::<TestBackend, 2>::from_floats(
        [[1.0, -1.0]],
        &device,
    ));
    assert_eq!(values(y), vec![-0.5, -1.5, 0.0]);
}

#[test]
fn identity_at_init_where_promised() {
    let device = Default::default();
    for (name, shape) in SHAPES {
        for method in [
            salt_method(SaltInit::Zero),
            Method::Svd,
            Method::Lora {
                rank: 2,
                scale: 1.0,
                dropout: 0.0,
            },
        ] {
            let x = Layer::<TestBackend>::input(shape, &device);
            let mut layer = Layer::<TestBackend>::new(shape, &device);
            let before = values(layer.forward(x.clone()));
            inject(&mut layer, &all_targets(method.clone())).unwrap();
            let after = values(layer.forward(x));
            assert_eq!(
                before,
                after,
                "{name} {}: not the identity at init",
                method.name()
            );
        }
        // The reference init moves W′ a little (X·Y ≠ 0), as the authors' code does.
        let mut layer = Layer::<TestBackend>::new(shape, &device);
        let w = layer.weight_matrix();
        inject(&mut layer, &all_targets(salt_method(SaltInit::Reference))).unwrap();
        let d = max_abs_diff(&w, &layer.effective_matrix());
        assert!(d > 0.0 && d < 1e-2, "{name}: reference init moved W by {d}");
    }
}

#[test]
fn merged_equals_unmerged() {
    /// Merging reassociates f32 sums.
    const MERGE_TOL: f32 = 1e-5;
    let device = Default::default();
    for (name, shape) in SHAPES {
        for method in methods() {
            let x = Layer::<TestBackend>::input(shape, &device);
            let mut layer = Layer::<TestBackend>::new(shape, &device);
            inject(&mut layer, &all_targets(method.clone())).unwrap();
            let mut layer = perturbed(layer);
            let unmerged = values(layer.forward(x.clone()));
            assert_eq!(merge(&mut layer), 1);
            assert_eq!(adapter_values(&layer).len(), 0, "adapter left after merge");
            let merged = values(layer.forward(x));
            let d = max_abs_diff(&unmerged, &merged);
            assert!(
                d < MERGE_TOL,
                "{name} {}: merged differs by {d}",
                method.name()
            );
        }
    }
}

#[test]
fn parameter_counts_match_hand_computed_values() {
    let device = Default::default();
    for (name, shape) in SHAPES {
        let (rows, cols) = rows_cols(shape);
        let k = rows.min(cols);
        let base = rows * cols + rows; // weight + bias
        for (method, expected) in [
            (salt_method(SaltInit::Reference), 2 * 2 + 2 * (k - 2) * 2),
            (Method::Svd, 2 * k),
            (
                Method::Lora {
                    rank: 2,
                    scale: 1.0,
                    dropout: 0.1,
                },
                2 * (rows + cols),
            ),
        ] {
            let mut layer = Layer::<TestBackend>::new(shape, &device);
            // The SVD-free count (`salt models`) equals what inject builds.
            let counted =
                salt_core::adapter_param_count(&mut layer, &all_targets(method.clone())).unwrap();
            assert_eq!(counted, expected, "{name} {} counted", method.name());
            let adapted = inject(&mut layer, &all_targets(method.clone())).unwrap();
            assert_eq!(adapted.len(), 1);
            assert_eq!(
                adapted[0].adapter_params,
                expected,
                "{name} {}",
                method.name()
            );
            let report =
                ParamReport::new::<TestBackend, _>(&layer, &TrainablePolicy::adapters_only(), 0);
            assert_eq!(report.trainable, expected);
            assert_eq!(report.adapter, expected);
            assert_eq!(report.total, base + expected);
            let pct = 100.0 * expected as f64 / (base + expected) as f64;
            assert!((report.trainable_percent - pct).abs() < 1e-12);
            let full = ParamReport::new::<TestBackend, _>(&layer, &TrainablePolicy::full(), 1000);
            assert_eq!(full.trainable, base + expected);
            assert!(
                (full.trainable_percent
                    - 100.0 * (base + expected) as f64 / (base + expected + 1000) as f64)
                    .abs()
                    < 1e-12
            );
        }
    }
}

#[test]
fn salt_count_for_vit_b_qkv() {
    // SALT adds 2r + 2(k − r)q per layer: qkv of ViT-B is 2304×768, r = 48, q = 256.
    let device = Default::default();
    let mut layer = Layer::<TestBackend> {
        linear: Some(AdaptableLinearConfig::new(96, 288).init(&device)),
        conv: None,
    };
    let adapted = inject(
        &mut layer,
        &all_targets(Method::Salt {
            svd_rank: 6,
            lora_rank: 32,
            init: SaltInit::Zero,
        }),
    )
    .unwrap();
    assert_eq!(adapted[0].adapter_params, 2 * 6 + 2 * (96 - 6) * 32);
}

/// A model with a frozen and a trainable non-adapter parameter, for the gradient tests.
#[derive(Module, Debug)]
struct Toy<B: Backend> {
    proj: AdaptableLinear<B>,
    conv: AdaptableConv2d<B>,
    norm: LayerNorm<B>,
    head: AdaptableLinear<B>,
}
visit_adaptable_fields!(Toy { proj, conv, head });

impl<B: Backend> Toy<B> {
    fn new(device: &B::Device) -> Self {
        Self {
            proj: AdaptableLinearConfig::new(4, 8).init(device),
            conv: AdaptableConv2dConfig::new([2, 2], [3, 3])
                .with_padding([1, 1])
                .init(device),
            norm: LayerNormConfig::new(8).init(device),
            head: AdaptableLinearConfig::new(8, 4).init(device),
        }
    }

    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let h = self.proj.forward(x); // [n, 8]
        let [n, _] = h.dims();
        let h = self.conv.forward(h.reshape([n, 2, 2, 2])).reshape([n, 8]);
        self.head.forward(self.norm.forward(h).tanh())
    }
}

fn toy_input<B: Backend>(device: &B::Device) -> Tensor<B, 2> {
    Tensor::from_floats([[0.3, -1.0, 0.5, 2.0], [1.0, 0.2, -0.4, 0.1]], device)
}

#[test]
fn only_trainable_tensors_get_gradients_and_frozen_ones_stay_bit_identical() {
    let device = Default::default();
    let policy = TrainablePolicy::with_patterns(["norm.*"]);
    for method in methods() {
        let mut toy = Toy::<TestAutodiffBackend>::new(&device);
        let mut config = all_targets(method.clone());
        config.targets = vec!["proj".into(), "conv".into()];
        inject(&mut toy, &config).unwrap();
        let toy = apply_trainable(toy, &policy).unwrap();
        let before = trainable_tensors::<TestAutodiffBackend, _>(&toy, &TrainablePolicy::full());

        let loss = toy.forward(toy_input(&device)).powi_scalar(2).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &toy);
        let mut with_grad = Vec::new();
        struct Ids<'a>(&'a GradientsParams, &'a mut Vec<String>, Vec<String>);
        impl<B: burn::tensor::backend::AutodiffBackend> burn::module::ModuleVisitor<B> for Ids<'_> {
            fn enter_module(&mut self, n: &str, _: &str) {
                self.2.push(n.into());
            }
            fn exit_module(&mut self, _: &str, _: &str) {
                self.2.pop();
            }
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
                if self.0.get::<B::InnerBackend, D>(p.id).is_some() {
                    self.1.push(param_key(&self.2));
                }
            }
        }
        toy.visit(&mut Ids(&grads, &mut with_grad, Vec::new()));
        let mut expected: Vec<String> = before
            .iter()
            .map(|(k, _, _)| k.clone())
            .filter(|k| is_trainable(k, &policy))
            .collect();
        with_grad.sort();
        expected.sort();
        assert_eq!(
            with_grad,
            expected,
            "{}: gradients on the wrong tensors",
            method.name()
        );
        assert!(expected.iter().any(|k| k.starts_with("norm.")));

        let mut optim = AdamWConfig::new().with_weight_decay(0.01).init();
        let toy = optim.step(1e-2, toy, grads);
        let after = trainable_tensors::<TestAutodiffBackend, _>(&toy, &TrainablePolicy::full());
        for ((key, _, b), (_, _, a)) in before.iter().zip(&after) {
            if is_trainable(key, &policy) {
                assert_ne!(a, b, "{}: trainable `{key}` did not move", method.name());
            } else {
                assert_eq!(a, b, "{}: frozen `{key}` changed", method.name());
            }
        }
    }
}

#[test]
fn save_then_load_reproduces_outputs_exactly() {
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let policy = TrainablePolicy::with_patterns(["norm.*"]);
    for method in methods() {
        let mut config = all_targets(method.clone());
        config.targets = vec!["proj".into(), "conv".into(), "head".into()];
        // "Trained" model: adapters perturbed, norm changed.
        let mut trained = Toy::<TestBackend>::new(&device);
        inject(&mut trained, &config).unwrap();
        let mut trained = trained.map(&mut Perturb(StdRng::seed_from_u64(5), Vec::new()));
        trained.norm.gamma = trained.norm.gamma.clone().map(|g| g.mul_scalar(1.5));
        let manifest = AdapterManifest::new(Some(config.clone()), policy.clone(), "toy", None);
        let out = dir.path().join(method.name());
        save_adapter::<TestBackend, _>(&trained, &manifest, &out).unwrap();

        // A fresh base with the same base weights: copy them from the trained model.
        let mut fresh = Toy::<TestBackend>::new(&device);
        fresh.proj.weight = trained.proj.weight.clone();
        fresh.proj.bias = trained.proj.bias.clone();
        fresh.conv.weight = trained.conv.weight.clone();
        fresh.conv.bias = trained.conv.bias.clone();
        fresh.head.weight = trained.head.weight.clone();
        fresh.head.bias = trained.head.bias.clone();
        fresh.norm.beta = trained.norm.beta.clone();
        let read = AdapterManifest::read(&out).unwrap();
        assert_eq!(read, manifest);
        inject(&mut fresh, read.adapter.as_ref().unwrap()).unwrap();
        let tensors = AdapterTensors::read(&out).unwrap();
        let loaded =
            load_adapter_tensors::<TestBackend, _>(fresh, &read.trainable, &tensors).unwrap();
        let x = toy_input(&device);
        let ta = trainable_tensors::<TestBackend, _>(&trained, &TrainablePolicy::full());
        let tb = trainable_tensors::<TestBackend, _>(&loaded, &TrainablePolicy::full());
        for (a, b) in ta.iter().zip(&tb) {
            assert_eq!(a, b, "{}: tensor {} differs after load", method.name(), a.0);
        }
        assert_eq!(
            values(trained.forward(x.clone())),
            values(loaded.forward(x)),
            "{}: outputs differ after save → load",
            method.name()
        );
    }
}

#[test]
fn adapter_files_hold_no_svd_factors() {
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let mut toy = Toy::<TestBackend>::new(&device);
    let config = AdapterConfig {
        targets: vec!["proj".into()],
        ..all_targets(salt_method(SaltInit::Reference))
    };
    inject(&mut toy, &config).unwrap();
    let manifest =
        AdapterManifest::new(Some(config), TrainablePolicy::adapters_only(), "toy", None);
    save_adapter::<TestBackend, _>(&toy, &manifest, dir.path()).unwrap();
    let keys: Vec<String> = AdapterTensors::read(dir.path())
        .unwrap()
        .keys()
        .map(String::from)
        .collect();
    assert_eq!(
        keys,
        vec![
            "proj.salt.scale",
            "proj.salt.shift",
            "proj.salt.x",
            "proj.salt.y"
        ]
    );
}

#[test]
fn missing_unexpected_and_misshapen_keys_are_named() {
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let policy = TrainablePolicy::adapters_only();
    let config = |q| AdapterConfig {
        targets: vec!["proj".into(), "head".into()],
        ..all_targets(Method::Salt {
            svd_rank: 2,
            lora_rank: q,
            init: SaltInit::Reference,
        })
    };
    let mut toy = Toy::<TestBackend>::new(&device);
    inject(&mut toy, &config(1)).unwrap();
    save_adapter::<TestBackend, _>(
        &toy,
        &AdapterManifest::new(Some(config(1)), policy.clone(), "toy", None),
        dir.path(),
    )
    .unwrap();
    let tensors = AdapterTensors::read(dir.path()).unwrap();

    // Misshapen: a model built with q = 2 expects x of [k − r, 2].
    let mut other = Toy::<TestBackend>::new(&device);
    inject(&mut other, &config(2)).unwrap();
    let err = load_adapter_tensors::<TestBackend, _>(other, &policy, &tensors).unwrap_err();
    assert!(
        matches!(&err, Error::ShapeMismatch { key, .. } if key == "proj.salt.x"),
        "{err}"
    );
    assert!(
        err.to_string().contains("[2, 1]") && err.to_string().contains("[2, 2]"),
        "{err}"
    );

    // Missing: the model also adapts `conv`, absent from the file.
    let mut more = Toy::<TestBackend>::new(&device);
    let mut c = config(1);
    c.targets.push("conv".into());
    inject(&mut more, &c).unwrap();
    let err = load_adapter_tensors::<TestBackend, _>(more, &policy, &tensors).unwrap_err();
    assert!(
        matches!(&err, Error::MissingKey { key, .. } if key.starts_with("conv.salt.")),
        "{err}"
    );

    // Unexpected: the model adapts only `proj`, the file also has `head`.
    let mut fewer = Toy::<TestBackend>::new(&device);
    let mut c = config(1);
    c.targets = vec!["proj".into()];
    inject(&mut fewer, &c).unwrap();
    let err = load_adapter_tensors::<TestBackend, _>(fewer, &policy, &tensors).unwrap_err();
    assert!(
        matches!(&err, Error::UnexpectedKey { key, .. } if key.starts_with("head.salt.")),
        "{err}"
    );
}

#[test]
fn configs_that_match_nothing_or_do_not_fit_are_errors() {
    let device = Default::default();
    let mut toy = Toy::<TestBackend>::new(&device);
    let config = AdapterConfig {
        targets: vec!["attn.qkv".into()],
        ..all_targets(Method::Svd)
    };
    let err = inject(&mut toy, &config).unwrap_err();
    assert!(matches!(err, Error::NoTargetMatched { .. }));
    assert!(
        err.to_string().contains("attn.qkv") && err.to_string().contains("proj"),
        "{err}"
    );

    let config = AdapterConfig {
        targets: vec!["head".into()],
        ..all_targets(Method::Salt {
            svd_rank: 5,
            lora_rank: 1,
            init: SaltInit::Zero,
        })
    };
    let err = inject(&mut toy, &config).unwrap_err();
    assert!(
        matches!(err, Error::RankTooLarge { ref path, .. } if path == "head"),
        "{err}"
    );

    let err = apply_trainable(toy, &TrainablePolicy::with_patterns(["pos_embed"])).unwrap_err();
    assert!(err.to_string().contains("pos_embed"), "{err}");
}

#[test]
fn layers_draw_distinct_values_from_one_seeded_generator() {
    let device = Default::default();
    let config = AdapterConfig {
        targets: vec!["proj".into(), "head".into()],
        ..all_targets(Method::Lora {
            rank: 2,
            scale: 1.0,
            dropout: 0.0,
        })
    };
    let draw = || {
        let mut toy = Toy::<TestBackend>::new(&device);
        inject(&mut toy, &config).unwrap();
        trainable_tensors::<TestBackend, _>(&toy, &TrainablePolicy::adapters_only())
    };
    let (a, b) = (draw(), draw());
    assert_eq!(a, b, "same seed, same values");
    let proj = &a.iter().find(|(k, _, _)| k == "proj.lora.down").unwrap().2;
    let head = &a.iter().find(|(k, _, _)| k == "head.lora.down").unwrap().2;
    assert_ne!(proj[..4], head[..4], "layers share their draws");
}
