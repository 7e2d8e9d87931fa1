//! `AdaptableLinear`: a linear layer in PyTorch orientation that may hold an adapter.

use burn::config::Config;
use burn::module::{Initializer, Module, Param};
use burn::tensor::{backend::Backend, Tensor};

use crate::adapter::{eager, AdaptableLayer, Adapter, LayerKind, VisitAdaptable};
use crate::fused::linear;

/// Configuration of an [`AdaptableLinear`].
#[derive(Config, Debug)]
pub struct AdaptableLinearConfig {
    /// Input features.
    pub d_input: usize,
    /// Output features.
    pub d_output: usize,
    /// Whether the layer has a bias.
    #[config(default = true)]
    pub bias: bool,
}

/// `y = x·W′ᵀ + b` where `W′` is the weight with the adapter applied.
///
/// The weight is stored `[d_output, d_input]` as in PyTorch (burn's own `Linear` stores the
/// transpose), so checkpoint tensors load without transposition and the SVD factors are the
/// reference implementation's, not their transposes.
#[derive(Module, Debug)]
pub struct AdaptableLinear<B: Backend> {
    /// `[d_output, d_input]`.
    pub weight: Param<Tensor<B, 2>>,
    /// `[d_output]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// The adapter, if one is attached.
    pub adapter: Option<Adapter<B>>,
}

impl AdaptableLinearConfig {
    /// A plain layer with PyTorch's default initialisation (`U(−1/√in, 1/√in)`).
    pub fn init<B: Backend>(&self, device: &B::Device) -> AdaptableLinear<B> {
        let bound = 1.0 / (self.d_input as f64).sqrt();
        let init = Initializer::Uniform {
            min: -bound,
            max: bound,
        };
        AdaptableLinear {
            weight: eager(init.init_with(
                [self.d_output, self.d_input],
                Some(self.d_input),
                Some(self.d_output),
                device,
            )),
            bias: self.bias.then(|| {
                eager(init.init_with(
                    [self.d_output],
                    Some(self.d_input),
                    Some(self.d_output),
                    device,
                ))
            }),
            adapter: None,
        }
    }
}

impl<B: Backend> AdaptableLinear<B> {
    /// # Shapes
    /// `x: [..., d_input]` → `[..., d_output]`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let bias = self.bias.as_ref().map(|b| b.val());
        match &self.adapter {
            None => linear(x, self.weight.val(), bias),
            // LoRA's branch is cheaper on the activations than rebuilding the weight.
            Some(Adapter::Lora(lora)) => {
                let base = linear(x.clone(), self.weight.val(), bias);
                base + lora.forward_linear(x)
            }
            // SVD adapters rebuild W′ once per forward, independent of the batch size.
            Some(adapter) => {
                let w = self.weight.val() + adapter.delta();
                linear(x, w, bias)
            }
        }
    }

    /// The effective weight `W′`, `[d_output, d_input]`.
    pub fn effective_weight(&self) -> Tensor<B, 2> {
        match &self.adapter {
            None => self.weight.val(),
            Some(a) => self.weight.val() + a.delta(),
        }
    }
}

impl<B: Backend> AdaptableLayer<B> for AdaptableLinear<B> {
    fn kind(&self) -> LayerKind {
        LayerKind::Linear
    }

    fn matrix_shape(&self) -> [usize; 2] {
        self.weight.shape().dims()
    }

    fn weight_matrix(&self) -> Tensor<B, 2> {
        self.weight.val()
    }

    fn adapter(&self) -> Option<&Adapter<B>> {
        self.adapter.as_ref()
    }

    fn set_adapter(&mut self, adapter: Option<Adapter<B>>) {
        self.adapter = adapter;
    }

    fn supports_adapter(&self) -> bool {
        true
    }

    fn merge(&mut self) {
        if let Some(adapter) = self.adapter.take() {
            let w = (self.weight.val() + adapter.delta()).detach();
            let id = self.weight.id;
            let require_grad = self.weight.is_require_grad();
            self.weight = Param::initialized(id, w.set_require_grad(require_grad));
        }
    }

    fn device(&self) -> B::Device {
        self.weight.val().device()
    }
}

impl<B: Backend> VisitAdaptable<B> for AdaptableLinear<B> {
    fn visit_adaptable(
        &mut self,
        prefix: &str,
        f: &mut dyn FnMut(&str, &mut dyn AdaptableLayer<B>),
    ) {
        f(prefix, self);
    }
}
