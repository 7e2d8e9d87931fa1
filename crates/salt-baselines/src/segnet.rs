//! SegNet (Badrinarayanan, Kendall, Cipolla, "SegNet: A Deep Convolutional Encoder-Decoder
//! Architecture for Image Segmentation", TPAMI 2017).
//!
//! There is no library implementation in the paper's comparison; the reference is the PyTorch
//! module in `scripts/baselines_reference_smp.py`, written from the paper:
//!
//! - encoder: VGG16-BN's 13 `conv3×3 (bias) + BatchNorm + ReLU` in 5 stages of 2, 2, 3, 3, 3
//!   convolutions (64, 128, 256, 512, 512 channels), each stage followed by a 2×2 / 2 max-pool
//!   that keeps its argmax indices;
//! - decoder: the mirror image; each stage, deepest first, max-unpools with the indices of the
//!   matching encoder stage and applies as many `conv3×3 + BatchNorm + ReLU` as that stage has,
//!   the last one narrowing to the next shallower stage's width;
//! - in the shallowest decoder stage the last block is replaced by the classifier, a plain
//!   `conv3×3` (bias) to the classes (logits; the paper's soft-max is the loss's job).
//!
//! Layer list for VGG16-BN widths, 3 input channels, 1 class (25 conv + BN blocks and the
//! classifier, 29,443,585 parameters):
//!
//! ```text
//! encoder     3→64, 64→64 | 64→128, 128→128 | 128→256, 256→256 ×2 | 256→512, 512→512 ×2 | 512→512 ×3
//! decoder     512→512 ×3 | 512→512 ×2, 512→256 | 256→256 ×2, 256→128 | 128→128, 128→64 | 64→64
//! classifier  64→1
//! ```
//!
//! Keys (`encoder.{stage}.{layer}.conv.weight`, `decoder.{stage}.{layer}.bn.running_mean`,
//! `classifier.weight`) are the field paths; [`KEY_MAP`] only skips `num_batches_tracked`.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::module::max_pool2d_with_indices;
use burn::tensor::{backend::Backend, IndexingUpdateOp, Int, Tensor};

use crate::checkpoint::KeyMap;
use crate::conv_bn::{ConvBnRelu, ConvBnReluConfig, ConvSpec, KAIMING_NORMAL_FAN_OUT};
use crate::error::Error;
use crate::fast::FastConv;

/// The reference SegNet's `state_dict` ↔ [`SegNet`]: same names.
pub const KEY_MAP: KeyMap = KeyMap {
    model: "segnet",
    load: &[],
    save: &[],
    // BatchNorm's step counter.
    ignored: &[r"num_batches_tracked$"],
};

/// Number of encoder (and decoder) stages.
pub const STAGES: usize = 5;

/// Configuration of a [`SegNet`].
#[derive(Config, Debug)]
pub struct SegNetConfig {
    /// Channels of the encoder stages (VGG16: 64, 128, 256, 512, 512).
    #[config(default = "[64, 128, 256, 512, 512]")]
    pub channels: [usize; STAGES],
    /// `conv3×3 + BN + ReLU` blocks per encoder stage (VGG16: 2, 2, 3, 3, 3).
    #[config(default = "[2, 2, 3, 3, 3]")]
    pub convs: [usize; STAGES],
    /// Input channels.
    #[config(default = 3)]
    pub in_channels: usize,
    /// Output channels of the classifier.
    #[config(default = 1)]
    pub classes: usize,
}

impl SegNetConfig {
    /// The paper's Table-1 row: VGG16-BN widths, 29,443,585 parameters.
    pub fn paper() -> Self {
        Self::new()
    }

    /// A ~0.5M-parameter SegNet of the same structure (1/8 of the widths) for tests and the
    /// smoke table.
    pub fn smoke() -> Self {
        Self::new().with_channels([8, 16, 32, 64, 64])
    }

    /// Checks the widths and block counts.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |field, value: String, expected: &str| {
            Err(Error::InvalidConfig {
                model: "segnet",
                field,
                value,
                expected: expected.to_string(),
            })
        };
        if self.channels.contains(&0) || self.in_channels == 0 || self.classes == 0 {
            return bad(
                "channels / in_channels / classes",
                format!(
                    "{:?} / {} / {}",
                    self.channels, self.in_channels, self.classes
                ),
                "> 0",
            );
        }
        if self.convs.contains(&0) {
            return bad(
                "convs",
                format!("{:?}", self.convs),
                "at least 1 block per stage",
            );
        }
        Ok(())
    }

    /// Builds the model with torchvision's VGG initialisation (convolutions
    /// `kaiming_normal_(fan_out, relu)`, BatchNorm 1 / 0).
    pub fn init<B: Backend>(&self, device: &B::Device) -> crate::Result<SegNet<B>> {
        self.validate()?;
        let block = |cin, cout| {
            ConvBnReluConfig::new([cin, cout], 3)
                .with_padding(1)
                .with_bias(true)
                .with_initializer(KAIMING_NORMAL_FAN_OUT)
                .init(device)
        };
        let mut cin = self.in_channels;
        let encoder = self
            .channels
            .iter()
            .zip(&self.convs)
            .map(|(&c, &n)| {
                let stage = (0..n)
                    .map(|j| block(if j == 0 { cin } else { c }, c))
                    .collect();
                cin = c;
                stage
            })
            .collect();
        let decoder = (0..STAGES)
            .rev()
            .map(|i| {
                let (c, n) = (self.channels[i], self.convs[i]);
                let mut stage: Vec<ConvBnRelu<B>> = (0..n - 1).map(|_| block(c, c)).collect();
                if i > 0 {
                    stage.push(block(c, self.channels[i - 1]));
                }
                stage
            })
            .collect();
        Ok(SegNet {
            encoder,
            decoder,
            classifier: ConvSpec {
                padding: 1,
                bias: true,
                ..ConvSpec::new([self.channels[0], self.classes], 3, KAIMING_NORMAL_FAN_OUT)
            }
            .init(device),
        })
    }
}

/// SegNet: VGG-style encoder, max-unpooling decoder.
///
/// # Training and inference
/// BatchNorm trains under an `Autodiff` backend and is in inference mode otherwise (see
/// [`crate::conv_bn`]). There is no dropout (the paper's Bayesian variant is not part of the
/// comparison).
#[derive(Module, Debug)]
pub struct SegNet<B: Backend> {
    /// `encoder.{stage}.{layer}`: the 13 VGG blocks (for VGG16).
    pub encoder: Vec<Vec<ConvBnRelu<B>>>,
    /// `decoder.{stage}.{layer}`, deepest stage first.
    pub decoder: Vec<Vec<ConvBnRelu<B>>>,
    /// Final 3×3 convolution to the classes.
    pub classifier: Conv2d<B>,
}

/// Activations of [`SegNet::forward_intermediates`].
#[derive(Debug, Clone)]
pub struct SegNetIntermediates<B: Backend> {
    /// After the last max-pool: `[n, channels[4], h/32, w/32]`.
    pub encoder: Tensor<B, 4>,
    /// Each decoder stage's output, deepest first (stage `k` at stride `2^(4-k)`).
    pub decoder: Vec<Tensor<B, 4>>,
    /// `[n, classes, h, w]`.
    pub logits: Tensor<B, 4>,
}

impl<B: Backend> SegNet<B> {
    /// # Shapes
    /// `images: [n, in_channels, h, w]` → logits `[n, classes, h, w]`. Any `h, w ≥ 32` works,
    /// as in PyTorch: pooling floors, and unpooling restores each stage's size (a row or
    /// column a pool dropped comes back as zeros); multiples of 32 pool without remainder.
    ///
    /// # Panics
    /// If `h` or `w` is below 32 (a stage would pool a single row or column away).
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 4> {
        self.forward_intermediates(images).logits
    }

    /// [`SegNet::forward`], keeping the encoder output and every decoder stage's output.
    ///
    /// # Panics
    /// As [`SegNet::forward`].
    pub fn forward_intermediates(&self, images: Tensor<B, 4>) -> SegNetIntermediates<B> {
        let [_, _, h, w] = images.dims();
        let min = 1 << STAGES;
        assert!(
            h >= min && w >= min,
            "SegNet: input {h}×{w} is smaller than {min}×{min}"
        );
        let mut x = images;
        let mut pools = Vec::with_capacity(STAGES);
        for stage in &self.encoder {
            x = stage.iter().fold(x, |x, layer| layer.forward(x));
            let [_, _, sh, sw] = x.dims();
            let (pooled, indices) =
                max_pool2d_with_indices(x, [2, 2], [2, 2], [0, 0], [1, 1], false);
            pools.push((indices, [sh, sw]));
            x = pooled;
        }
        let encoder = x.clone();
        let mut decoder = Vec::with_capacity(STAGES);
        for stage in &self.decoder {
            let (indices, size) = pools.pop().expect("one pool per stage");
            x = max_unpool2d(x, indices, size);
            x = stage.iter().fold(x, |x, layer| layer.forward(x));
            decoder.push(x.clone());
        }
        SegNetIntermediates {
            encoder,
            decoder,
            logits: self.classifier.fast(x),
        }
    }
}

/// PyTorch's `F.max_unpool2d` for a 2×2 / 2 pool: each value goes back to the position its
/// index names in the `size` plane (`index = row · size[1] + col`, as burn's and PyTorch's
/// `max_pool2d_with_indices`), zeros elsewhere. A scatter, so gradients flow to the values.
///
/// # Shapes
/// `x, indices: [n, c, h, w]` → `[n, c, size[0], size[1]]`.
pub fn max_unpool2d<B: Backend>(
    x: Tensor<B, 4>,
    indices: Tensor<B, 4, Int>,
    size: [usize; 2],
) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    let [oh, ow] = size;
    let plane = Tensor::<B, 3>::zeros([n, c, oh * ow], &x.device());
    plane
        .scatter(
            2,
            indices.reshape([n, c, h * w]),
            x.reshape([n, c, h * w]),
            IndexingUpdateOp::Add,
        )
        .reshape([n, c, oh, ow]) // [n, c, oh, ow]
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::optim::{AdamConfig, GradientsParams, Optimizer};
    use burn::tensor::TensorData;

    type TestBackend = burn::backend::NdArray<f32>;
    type TestAutodiffBackend = burn::backend::Autodiff<TestBackend>;

    /// The issue's hand count, reproduced by the layer list in the module docs.
    const PAPER_PARAMS: usize = 29_443_585;
    /// Upper bound for the smoke preset ("a few M").
    const SMOKE_MAX_PARAMS: usize = 3_000_000;

    #[test]
    fn paper_parameter_count() {
        let model = SegNetConfig::paper()
            .init::<TestBackend>(&Default::default())
            .unwrap();
        assert_eq!(crate::parameter_count(&model), PAPER_PARAMS);
        let running = crate::params::running_stat_count(&model);
        assert_eq!(model.num_params(), PAPER_PARAMS + running);
        // 13 encoder + 12 decoder blocks.
        let blocks: usize = model
            .encoder
            .iter()
            .chain(&model.decoder)
            .map(Vec::len)
            .sum();
        assert_eq!(blocks, 25);
    }

    #[test]
    fn smoke_is_small_and_keeps_the_input_size() {
        let device = Default::default();
        let model = SegNetConfig::smoke().init::<TestBackend>(&device).unwrap();
        let params = crate::parameter_count(&model);
        assert!(params <= SMOKE_MAX_PARAMS, "{params}");
        for [h, w] in [[64, 64], [512, 512], [40, 70]] {
            let x = Tensor::<TestBackend, 4>::ones([1, 3, h, w], &device);
            assert_eq!(model.forward(x).dims(), [1, 1, h, w]);
        }
    }

    #[test]
    #[should_panic(expected = "smaller than 32×32")]
    fn too_small_input_panics() {
        let device = Default::default();
        let model = SegNetConfig::smoke().init::<TestBackend>(&device).unwrap();
        model.forward(Tensor::zeros([1, 3, 16, 64], &device));
    }

    /// Hand case: pool a 4×4 plane, unpool: the maxima return to their places.
    #[test]
    fn unpool_puts_maxima_back() {
        let device = Default::default();
        #[rustfmt::skip]
        let v = vec![
            1.0f32, 5.0, 0.0, 2.0,
            3.0, 4.0, 7.0, 1.0,
            0.0, 0.0, 1.0, 1.0,
            9.0, 0.0, 0.0, 8.0,
        ];
        let x = Tensor::<TestBackend, 4>::from_data(TensorData::new(v, [1, 1, 4, 4]), &device);
        let (p, i) = max_pool2d_with_indices(x, [2, 2], [2, 2], [0, 0], [1, 1], false);
        let y = max_unpool2d(p, i, [4, 4])
            .into_data()
            .into_vec::<f32>()
            .unwrap();
        #[rustfmt::skip]
        let expected = vec![
            0.0f32, 5.0, 0.0, 0.0,
            0.0, 0.0, 7.0, 0.0,
            0.0, 0.0, 0.0, 0.0,
            9.0, 0.0, 0.0, 8.0,
        ];
        assert_eq!(y, expected);
    }

    #[test]
    fn trains_under_autodiff() {
        let device = Default::default();
        let mut model = SegNetConfig::smoke()
            .init::<TestAutodiffBackend>(&device)
            .unwrap();
        let x = Tensor::<TestAutodiffBackend, 4>::random(
            [2, 3, 32, 32],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let before = model.classifier.weight.val().into_data();
        let loss = model.forward(x).powi_scalar(2).mean();
        let grads = loss.backward();
        // The first block's gradient went through every pool and unpool (scatter).
        let first = model.encoder[0][0].conv.weight.val().grad(&grads).unwrap();
        assert!(first.abs().sum().into_scalar() > 0.0);
        let grads = GradientsParams::from_grads(grads, &model);
        model = AdamConfig::new().init().step(1e-3, model, grads);
        assert_ne!(before, model.classifier.weight.val().into_data());
    }

    #[test]
    fn invalid_configs_are_typed_errors() {
        let device = Default::default();
        for cfg in [
            SegNetConfig::new().with_convs([2, 2, 0, 3, 3]),
            SegNetConfig::new().with_classes(0),
        ] {
            let err = cfg.init::<TestBackend>(&device).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::InvalidConfig {
                        model: "segnet",
                        ..
                    }
                ),
                "{err}"
            );
        }
    }
}
