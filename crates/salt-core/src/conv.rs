//! `AdaptableConv2d`: a 2-D convolution that may hold an adapter on its `co × ci·kh·kw` matrix view.

use burn::config::Config;
use burn::module::{Initializer, Module, Param};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{backend::Backend, Tensor};

use crate::adapter::{eager, AdaptableLayer, Adapter, LayerKind, VisitAdaptable};
use crate::matconv::conv2d_matmul as conv2d;

/// Configuration of an [`AdaptableConv2d`].
#[derive(Config, Debug)]
pub struct AdaptableConv2dConfig {
    /// `[in_channels, out_channels]`.
    pub channels: [usize; 2],
    /// `[kh, kw]`.
    pub kernel_size: [usize; 2],
    /// Stride.
    #[config(default = "[1, 1]")]
    pub stride: [usize; 2],
    /// Symmetric zero padding.
    #[config(default = "[0, 0]")]
    pub padding: [usize; 2],
    /// Dilation.
    #[config(default = "[1, 1]")]
    pub dilation: [usize; 2],
    /// Groups (adapters attach only to `groups = 1`).
    #[config(default = 1)]
    pub groups: usize,
    /// Whether the layer has a bias.
    #[config(default = true)]
    pub bias: bool,
}

/// A 2-D convolution whose weight `[co, ci/groups, kh, kw]` (PyTorch's layout) may carry an adapter.
#[derive(Module, Debug)]
pub struct AdaptableConv2d<B: Backend> {
    /// `[co, ci/groups, kh, kw]`.
    pub weight: Param<Tensor<B, 4>>,
    /// `[co]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// The adapter, if one is attached.
    pub adapter: Option<Adapter<B>>,
    /// Stride.
    #[module(skip)]
    pub stride: [usize; 2],
    /// Padding.
    #[module(skip)]
    pub padding: [usize; 2],
    /// Dilation.
    #[module(skip)]
    pub dilation: [usize; 2],
    /// Groups.
    #[module(skip)]
    pub groups: usize,
}

impl AdaptableConv2dConfig {
    /// A plain convolution with PyTorch's default initialisation.
    pub fn init<B: Backend>(&self, device: &B::Device) -> AdaptableConv2d<B> {
        let [ci, co] = self.channels;
        let [kh, kw] = self.kernel_size;
        let fan_in = ci / self.groups * kh * kw;
        let bound = 1.0 / (fan_in as f64).sqrt();
        let init = Initializer::Uniform {
            min: -bound,
            max: bound,
        };
        AdaptableConv2d {
            weight: eager(init.init_with(
                [co, ci / self.groups, kh, kw],
                Some(fan_in),
                None,
                device,
            )),
            bias: self
                .bias
                .then(|| eager(init.init_with([co], Some(fan_in), None, device))),
            adapter: None,
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
            groups: self.groups,
        }
    }
}

impl<B: Backend> AdaptableConv2d<B> {
    fn options(&self) -> ConvOptions<2> {
        ConvOptions::new(self.stride, self.padding, self.dilation, self.groups)
    }

    /// # Shapes
    /// `x: [n, ci, h, w]` → `[n, co, h′, w′]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let bias = self.bias.as_ref().map(|b| b.val());
        match &self.adapter {
            None => conv2d(x, self.weight.val(), bias, self.options()),
            // peft's conv LoRA: a kh×kw down convolution to r channels, then a 1×1 up convolution.
            Some(Adapter::Lora(lora)) => {
                let [co, ci, kh, kw] = self.weight.val().dims();
                let [r, _] = lora.down.val().dims();
                let base = conv2d(x.clone(), self.weight.val(), bias, self.options());
                let down = lora.down.val().reshape([r, ci, kh, kw]);
                let up = lora.up.val().reshape([co, r, 1, 1]);
                let h = conv2d(
                    crate::fused::dropout(x, lora.dropout.prob),
                    down,
                    None,
                    self.options(),
                );
                let h = conv2d(h, up, None, ConvOptions::new([1, 1], [0, 0], [1, 1], 1));
                base + h.mul_scalar(lora.scale)
            }
            Some(_) => conv2d(x, self.effective_weight(), bias, self.options()),
        }
    }

    /// The effective weight `W′`, `[co, ci, kh, kw]`.
    pub fn effective_weight(&self) -> Tensor<B, 4> {
        let w = self.weight.val();
        match &self.adapter {
            None => w,
            Some(a) => {
                let dims = w.dims();
                (w.reshape([dims[0], dims[1] * dims[2] * dims[3]]) + a.delta()).reshape(dims)
            }
        }
    }
}

impl<B: Backend> AdaptableLayer<B> for AdaptableConv2d<B> {
    fn kind(&self) -> LayerKind {
        LayerKind::Conv2d
    }

    fn matrix_shape(&self) -> [usize; 2] {
        let [co, ci, kh, kw] = self.weight.shape().dims();
        [co, ci * kh * kw]
    }

    fn weight_matrix(&self) -> Tensor<B, 2> {
        let [rows, cols] = self.matrix_shape();
        self.weight.val().reshape([rows, cols])
    }

    fn adapter(&self) -> Option<&Adapter<B>> {
        self.adapter.as_ref()
    }

    fn set_adapter(&mut self, adapter: Option<Adapter<B>>) {
        self.adapter = adapter;
    }

    fn supports_adapter(&self) -> bool {
        self.groups == 1
    }

    fn merge(&mut self) {
        if self.adapter.is_some() {
            let w = self.effective_weight().detach();
            self.adapter = None;
            let id = self.weight.id;
            let require_grad = self.weight.is_require_grad();
            self.weight = Param::initialized(id, w.set_require_grad(require_grad));
        }
    }

    fn device(&self) -> B::Device {
        self.weight.val().device()
    }
}

impl<B: Backend> VisitAdaptable<B> for AdaptableConv2d<B> {
    fn visit_adaptable(
        &mut self,
        prefix: &str,
        f: &mut dyn FnMut(&str, &mut dyn AdaptableLayer<B>),
    ) {
        f(prefix, self);
    }
}
