//! The adapter a layer may hold, and the trait every adaptable layer implements.

use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};

use crate::lora::LoraAdapter;
use crate::salt::SaltAdapter;
use crate::ssam::SvdAdapter;

/// One of the adapters salt-core implements.
// One adapter per layer: the few hundred bytes of handles are not worth a Box (which burn's
// Module derive does not support).
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Adapter<B: Backend> {
    /// SALT.
    Salt(SaltAdapter<B>),
    /// S-SAM (SVD only).
    Svd(SvdAdapter<B>),
    /// LoRA.
    Lora(LoraAdapter<B>),
}

impl<B: Backend> Adapter<B> {
    /// What the adapter adds to the `[rows, cols]` weight matrix.
    pub fn delta(&self) -> Tensor<B, 2> {
        match self {
            Adapter::Salt(a) => a.delta(),
            Adapter::Svd(a) => a.delta(),
            Adapter::Lora(a) => a.delta(),
        }
    }

    /// The name used in adapter file keys: `salt`, `svd` or `lora`.
    pub fn key_name(&self) -> &'static str {
        match self {
            Adapter::Salt(_) => "salt",
            Adapter::Svd(_) => "svd",
            Adapter::Lora(_) => "lora",
        }
    }
}

/// Linear or 2-D convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// [`crate::AdaptableLinear`].
    Linear,
    /// [`crate::AdaptableConv2d`].
    Conv2d,
}

/// A layer that can hold an adapter: the one chokepoint through which adapters attach.
///
/// Its weight is seen as a `rows × cols` matrix in PyTorch orientation: `out × in` for a linear
/// layer, `co × ci·kh·kw` for a convolution.
pub trait AdaptableLayer<B: Backend> {
    /// Linear or convolution.
    fn kind(&self) -> LayerKind;
    /// `[rows, cols]` of the weight matrix.
    fn matrix_shape(&self) -> [usize; 2];
    /// The frozen base weight as a `[rows, cols]` matrix.
    fn weight_matrix(&self) -> Tensor<B, 2>;
    /// The adapter, if any.
    fn adapter(&self) -> Option<&Adapter<B>>;
    /// Attaches (or with `None` removes) an adapter.
    fn set_adapter(&mut self, adapter: Option<Adapter<B>>);
    /// Whether an adapter of this kind can attach (grouped convolutions cannot).
    fn supports_adapter(&self) -> bool;
    /// Folds the adapter into the base weight and removes it: a plain layer with the same output.
    fn merge(&mut self);
    /// The device of the weight.
    fn device(&self) -> B::Device;
}

/// Walks every adaptable layer of a module tree with its dotted path.
///
/// Implemented by hand (usually through [`crate::visit_adaptable_fields`]) for model structs:
/// burn 0.21 has no hook to swap a sub-module inside a mapper, so the walk gives `&mut` access.
/// Paths must equal burn's module paths (field names joined by `.`, vector indices as numbers)
/// so that adapter file keys and trainable-policy patterns agree.
pub trait VisitAdaptable<B: Backend> {
    /// Calls `f(path, layer)` for every adaptable layer under `self`, whose path is `prefix`.
    fn visit_adaptable(
        &mut self,
        prefix: &str,
        f: &mut dyn FnMut(&str, &mut dyn AdaptableLayer<B>),
    );
}

/// Materialises a lazily initialised parameter now.
///
/// burn 0.21 clones an uninitialised `Param` as an independent lazy initialiser, so a clone of a
/// never-used random layer would get other values than the original; adaptable layers
/// initialise eagerly to keep `clone()` an exact copy.
pub(crate) fn eager<B: Backend, const D: usize>(
    p: burn::module::Param<Tensor<B, D>>,
) -> burn::module::Param<Tensor<B, D>> {
    let value = p.val();
    burn::module::Param::initialized(p.id, value)
}

/// `prefix.name`, or `name` when the prefix is empty.
pub fn join_path(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

impl<B: Backend, T: VisitAdaptable<B>> VisitAdaptable<B> for Vec<T> {
    fn visit_adaptable(
        &mut self,
        prefix: &str,
        f: &mut dyn FnMut(&str, &mut dyn AdaptableLayer<B>),
    ) {
        for (i, item) in self.iter_mut().enumerate() {
            item.visit_adaptable(&join_path(prefix, &i.to_string()), f);
        }
    }
}

impl<B: Backend, T: VisitAdaptable<B>> VisitAdaptable<B> for Option<T> {
    fn visit_adaptable(
        &mut self,
        prefix: &str,
        f: &mut dyn FnMut(&str, &mut dyn AdaptableLayer<B>),
    ) {
        if let Some(item) = self {
            item.visit_adaptable(prefix, f);
        }
    }
}

/// Implements [`VisitAdaptable`] for a struct by visiting the listed fields in order.
///
/// ```ignore
/// salt_core::visit_adaptable_fields!(Attention { qkv, proj });
/// ```
#[macro_export]
macro_rules! visit_adaptable_fields {
    ($ty:ident { $($field:ident),* $(,)? }) => {
        impl<B: burn::tensor::backend::Backend> $crate::VisitAdaptable<B> for $ty<B> {
            fn visit_adaptable(
                &mut self,
                prefix: &str,
                f: &mut dyn FnMut(&str, &mut dyn $crate::AdaptableLayer<B>),
            ) {
                $( $crate::VisitAdaptable::<B>::visit_adaptable(
                    &mut self.$field,
                    &$crate::join_path(prefix, stringify!($field)),
                    f,
                ); )*
            }
        }
    };
}
