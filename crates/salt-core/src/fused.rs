//! Fused operations with a fast path on the CPU backend.
//!
//! Model code calls [`linear`] and [`attention`] on any backend. On burn's ndarray backend
//! (`NdArray<f32>` and `Autodiff<NdArray<f32>>`, the CLI's `cpu` device) they run the kernels of
//! [`crate::kernels`] as one burn autodiff node each, with a hand-written backward:
//!
//! - `linear`: burn-ndarray materialises every transposed operand before its GEMM (the weight in
//!   each forward; the weight, the input and the 4 MB–100 MB attention blocks in backward) with a
//!   single-threaded strided copy; here the GEMMs read the transposes in place, and the bias
//!   gradient is one column sum.
//! - `attention`: `softmax(scale·q·kᵀ)·v` saves only q, k, v, the output and one log-sum-exp
//!   per row; backward recomputes the probabilities head by head. burn's composition keeps the
//!   `[heads, n, n]` logits and probabilities of every block alive until backward.
//!
//! Every other backend (flex, wgpu, cuda) gets burn's own composition, so the numbers are the
//! same up to f32 summation order (tests below, and salt-sam's parity tests); there the
//! matmuls run in the thread's [`crate::precision`] (f32, bf16 or f16), softmax in f32.
//!
//! The backend is recognised by `TypeId` and the tensors are moved across with `Box<dyn Any>`
//! downcasts: safe code, no trait bound that would spread through every generic model type.

use std::any::{Any, TypeId};
use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, NdArray};
use burn::tensor::activation::softmax;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{backend::Backend, Tensor, TensorPrimitive};
use burn_ndarray::NdArrayTensor;

use crate::kernels::{self, AttnDims, Mat};
use crate::precision::{lower, raise};

type Nd = NdArray<f32>;
type AdNd = Autodiff<Nd>;
type NdPrim = FloatTensor<Nd>;
type AdPrim = FloatTensor<AdNd>;

/// `x·wᵀ + b` for a weight in PyTorch orientation.
///
/// # Shapes
/// `x: [..., d_in]`, `weight: [d_out, d_in]`, `bias: [d_out]` → `[..., d_out]`.
pub fn linear<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, D> {
    let dims = x.dims();
    let (d_in, d_out) = (dims[D - 1], weight.dims()[0]);
    let rows = dims[..D - 1].iter().product::<usize>();
    let mut out_dims = dims;
    out_dims[D - 1] = d_out;
    let id = TypeId::of::<B>();
    if id == TypeId::of::<AdNd>() {
        let x = cast::<B, AdNd, 2>(x.reshape([rows, d_in]));
        let w = cast::<B, AdNd, 2>(weight);
        let b = bias.map(cast::<B, AdNd, 1>);
        return cast::<AdNd, B, 2>(linear_autodiff(x, w, b)).reshape(out_dims);
    }
    if id == TypeId::of::<Nd>() {
        let x = cast::<B, Nd, 2>(x.reshape([rows, d_in]));
        let w = cast::<B, Nd, 2>(weight);
        let b = bias.map(cast::<B, Nd, 1>);
        // Inference reads the input and the weight where they are stored (no copies).
        let b = b.map(vec_of);
        let (x, w) = (x.into_primitive().tensor(), w.into_primitive().tensor());
        let y = with_row_major(x, |x| {
            with_row_major(w, |w| linear_values(x, w, b.as_deref(), rows, d_in, d_out))
        });
        return cast::<Nd, B, 2>(tensor(y, [rows, d_out])).reshape(out_dims);
    }
    let y = burn::tensor::module::linear(lower(x), lower(weight).transpose(), bias.map(lower));
    raise(y)
}

/// Scaled dot-product attention `softmax(scale·q·kᵀ)·v` over independent heads.
///
/// # Shapes
/// `q: [heads, nq, d]`, `k, v: [heads, nk, d]` → `[heads, nq, d]`.
pub fn attention<B: Backend>(
    q: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    scale: f64,
) -> Tensor<B, 3> {
    let id = TypeId::of::<B>();
    if id == TypeId::of::<AdNd>() {
        let (q, k, v) = (cast::<B, AdNd, 3>(q), cast(k), cast(v));
        return cast::<AdNd, B, 3>(attention_autodiff(q, k, v, scale as f32));
    }
    if id == TypeId::of::<Nd>() {
        let (q, k, v) = (
            cast::<B, Nd, 3>(q),
            cast::<B, Nd, 3>(k),
            cast::<B, Nd, 3>(v),
        );
        let dims = attn_dims(&q, &k);
        let (o, _) =
            kernels::attention_forward(&vec_of(q), &vec_of(k), &vec_of(v), dims, scale as f32);
        return cast::<Nd, B, 3>(tensor(o, [dims.heads, dims.nq, dims.d]));
    }
    if let Some(out) = gpu_attention(q.clone(), k.clone(), v.clone(), scale) {
        return out;
    }
    // Reduced precision: the logits are cast up for the softmax, the probabilities down again.
    let logits = raise(lower(q.mul_scalar(scale)).matmul(lower(k).swap_dims(1, 2)));
    raise(lower(softmax(logits, 2)).matmul(lower(v)))
}

/// [`attention`] with SAM's decomposed relative positions added to the scaled logits:
/// `softmax(scale·q·kᵀ + rel_h[i, y(j)] + rel_w[i, x(j)])·v`, keys on a `gh × gw` grid
/// (`j = y·gw + x`). On ndarray (inference and autodiff) the logits exist one head at a time
/// and backward recomputes the biased probabilities, as [`attention`] does; the other backends
/// use burn's composition.
///
/// # Shapes
/// `q: [heads, nq, d]`, `k, v: [heads, gh·gw, d]`, `rel_h: [heads, nq, gh]`,
/// `rel_w: [heads, nq, gw]` → `[heads, nq, d]`.
pub fn attention_rel_pos<B: Backend>(
    q: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    scale: f64,
    rel_h: Tensor<B, 3>,
    rel_w: Tensor<B, 3>,
) -> Tensor<B, 3> {
    let [heads, nq, gh] = rel_h.dims();
    let gw = rel_w.dims()[2];
    if TypeId::of::<B>() == TypeId::of::<AdNd>() {
        let out = attention_rel_autodiff(
            cast(q),
            cast(k),
            cast(v),
            cast(rel_h),
            cast(rel_w),
            scale as f32,
        );
        return cast::<AdNd, B, 3>(out);
    }
    if TypeId::of::<B>() == TypeId::of::<Nd>() {
        let (q, k, v) = (
            cast::<B, Nd, 3>(q),
            cast::<B, Nd, 3>(k),
            cast::<B, Nd, 3>(v),
        );
        let dims = attn_dims(&q, &k);
        let (bh, bw) = (
            vec_of(cast::<B, Nd, 3>(rel_h)),
            vec_of(cast::<B, Nd, 3>(rel_w)),
        );
        let bias = kernels::RelBias {
            h: &bh,
            w: &bw,
            gh,
            gw,
        };
        let (o, _) = kernels::attention_forward_biased(
            &vec_of(q),
            &vec_of(k),
            &vec_of(v),
            dims,
            scale as f32,
            Some(bias),
        );
        return cast::<Nd, B, 3>(tensor(o, [dims.heads, dims.nq, dims.d]));
    }
    let nk = k.dims()[1];
    let attn = raise(lower(q.mul_scalar(scale)).matmul(lower(k).swap_dims(1, 2)))
        .reshape([heads, nq, gh, gw])
        + rel_h.reshape([heads, nq, gh, 1])
        + rel_w.reshape([heads, nq, 1, gw]);
    raise(lower(softmax(attn.reshape([heads, nq, nk]), 2)).matmul(lower(v)))
}

/// Whether [`packed_attention`] has a fused kernel for backend `B` (ndarray without autodiff:
/// inference on the CPU). Callers skip preparing its inputs otherwise.
pub fn has_packed_attention<B: Backend>() -> bool {
    TypeId::of::<B>() == TypeId::of::<Nd>()
}

/// Multi-head self-attention read straight from a fused qkv projection, for inference on the
/// CPU: `qkv: [b, n, 3·d]` holds, per token, the queries, keys and values of all `heads` heads
/// (`nn.Linear(d, 3·d)` followed by SAM's `reshape(b, n, 3, heads, d / heads)`), and the result
/// is `[b, n, d]` with the heads side by side, ready for the output projection. No head is
/// split off or permuted into a copy: the kernel reads each head where the projection wrote it
/// and writes its output in place.
///
/// `rel`: SAM's gathered relative-position tables `r_h: [gh, gh, d / heads]` and
/// `r_w: [gw, gw, d / heads]` (row `y` (`x`) of the query grid against every key row (column);
/// `n = gh·gw`); the bias `q·r_h[y, ky] + q·r_w[x, kx]` uses the unscaled queries, as
/// `add_decomposed_rel_pos` does.
///
/// Returns `None` when `B` has no such kernel ([`has_packed_attention`]): the caller then uses
/// [`attention`] / [`attention_rel_pos`] on split heads.
pub fn packed_attention<B: Backend>(
    qkv: Tensor<B, 3>,
    heads: usize,
    scale: f64,
    rel: Option<(Tensor<B, 3>, Tensor<B, 3>)>,
) -> Option<Tensor<B, 3>> {
    if !has_packed_attention::<B>() {
        return None;
    }
    let [b, n, three_d] = qkv.dims();
    assert!(
        heads > 0 && three_d % (3 * heads) == 0,
        "qkv width {three_d} is not 3 × {heads} heads"
    );
    let d = three_d / 3;
    let hd = d / heads;
    let tables = rel.map(|(rh, rw)| {
        let ([gh, gh2, c], [gw, gw2, c2]) = (rh.dims(), rw.dims());
        assert!(
            gh == gh2 && gw == gw2 && c == hd && c2 == hd && gh * gw == n,
            "relative-position tables {:?} and {:?} for {n} tokens of {hd} channels",
            [gh, gh2, c],
            [gw, gw2, c2]
        );
        (
            vec_of(cast::<B, Nd, 3>(rh)),
            vec_of(cast::<B, Nd, 3>(rw)),
            gh,
            gw,
        )
    });
    let qkv = cast::<B, Nd, 3>(qkv).into_primitive().tensor();
    let o = with_row_major(qkv, |data| {
        let part = |i: usize| kernels::Heads {
            data: &data[i * d..],
            seq_stride: n * three_d,
            head_stride: hd,
            ld: three_d,
        };
        let shape = kernels::HeadsShape {
            seqs: b,
            heads,
            nq: n,
            nk: n,
            d: hd,
        };
        let bias = match &tables {
            Some((rh, rw, gh, gw)) => kernels::Bias::FromQueries(kernels::RelTables {
                rh,
                rw,
                gh: *gh,
                gw: *gw,
            }),
            None => kernels::Bias::None,
        };
        kernels::attention_heads(part(0), part(1), part(2), shape, scale as f32, bias).0
    });
    Some(cast::<Nd, B, 3>(tensor(o, [b, n, d])))
}

/// Calls `f` with the row-major values of `p`: its own storage when that is already row-major
/// and contiguous, else a copy.
fn with_row_major<R>(p: NdPrim, f: impl FnOnce(&[f32]) -> R) -> R {
    if let NdArrayTensor::F32(storage) = &p {
        if let Some(values) = storage.view().to_slice() {
            return f(values);
        }
    }
    f(&prim_vec(p))
}

/// Training attention on the other compiled-in backends: [`crate::recompute`]'s node, unless
/// `SALT_ATTENTION=composed`. `None`: not one of them (burn's composition follows).
fn gpu_attention<B: Backend>(
    q: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    scale: f64,
) -> Option<Tensor<B, 3>> {
    #[cfg_attr(
        not(any(feature = "flex", feature = "wgpu", feature = "cuda")),
        allow(dead_code)
    )]
    fn via<B: Backend, I: Backend>(
        q: Tensor<B, 3>,
        k: Tensor<B, 3>,
        v: Tensor<B, 3>,
        scale: f64,
    ) -> Option<Tensor<B, 3>> {
        if TypeId::of::<B>() != TypeId::of::<Autodiff<I>>()
            || !crate::recompute::recompute_enabled()
        {
            return None;
        }
        let out = crate::recompute::attention_recompute::<I>(cast(q), cast(k), cast(v), scale);
        Some(cast::<Autodiff<I>, B, 3>(out))
    }
    let _ = (&q, &k, &v, scale);
    #[cfg(feature = "flex")]
    if let Some(o) = via::<B, burn::backend::Flex>(q.clone(), k.clone(), v.clone(), scale) {
        return Some(o);
    }
    #[cfg(feature = "wgpu")]
    if let Some(o) = via::<B, burn::backend::Wgpu>(q.clone(), k.clone(), v.clone(), scale) {
        return Some(o);
    }
    #[cfg(feature = "cuda")]
    if let Some(o) = via::<B, burn::backend::Cuda>(q.clone(), k.clone(), v.clone(), scale) {
        return Some(o);
    }
    None
}

/// Moves a tensor between two names of the same backend type.
///
/// # Panics
/// If `A` and `B` are different types (the callers check `TypeId` first).
fn cast<A: Backend, B: Backend, const D: usize>(t: Tensor<A, D>) -> Tensor<B, D> {
    let any: Box<dyn Any> = Box::new(t);
    *any.downcast::<Tensor<B, D>>()
        .unwrap_or_else(|_| unreachable!("cast between different backends"))
}

fn vec_of<const D: usize>(t: Tensor<Nd, D>) -> Vec<f32> {
    prim_vec(t.into_primitive().tensor())
}

fn tensor<const D: usize>(data: Vec<f32>, shape: [usize; D]) -> Tensor<Nd, D> {
    Tensor::from_primitive(TensorPrimitive::Float(prim(data, shape)))
}

/// The values of an ndarray float primitive, row-major (one memcpy when it is contiguous).
fn prim_vec(p: NdPrim) -> Vec<f32> {
    match p {
        NdArrayTensor::F32(storage) => {
            let view = storage.view();
            match view.as_slice() {
                Some(slice) => slice.to_vec(),
                None => view.iter().copied().collect(),
            }
        }
        other => {
            let t = Tensor::<Nd, 1>::from_primitive(TensorPrimitive::Float(other));
            t.into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .expect("converted to f32")
        }
    }
}

/// An ndarray float primitive owning `data` (no copy).
fn prim<const D: usize>(data: Vec<f32>, shape: [usize; D]) -> NdPrim {
    ndarray::ArcArray::from_shape_vec(ndarray::IxDyn(&shape), data)
        .expect("buffer matches its shape")
        .into()
}

/// [`prim`] for a shape known at run time.
fn prim_dyn(data: Vec<f32>, shape: &[usize]) -> NdPrim {
    ndarray::ArcArray::from_shape_vec(ndarray::IxDyn(shape), data)
        .expect("buffer matches its shape")
        .into()
}

fn ad_prim<const D: usize>(t: Tensor<AdNd, D>) -> AdPrim {
    t.into_primitive().tensor()
}

fn from_ad_prim<const D: usize>(p: AdPrim) -> Tensor<AdNd, D> {
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

// --- linear -----------------------------------------------------------------------------------

/// `y = x·wᵀ + b` on buffers; returns `(y, x, w)` so that the caller can keep the inputs.
fn linear_forward(
    x: Vec<f32>,
    w: Vec<f32>,
    b: Option<Vec<f32>>,
    rows: usize,
    d_in: usize,
    d_out: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let y = linear_values(&x, &w, b.as_deref(), rows, d_in, d_out);
    (y, x, w)
}

/// `y = x·wᵀ + b` on borrowed buffers.
fn linear_values(
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    rows: usize,
    d_in: usize,
    d_out: usize,
) -> Vec<f32> {
    let mut y = match b {
        Some(b) => {
            let mut y = Vec::with_capacity(rows * d_out);
            for _ in 0..rows {
                y.extend_from_slice(b);
            }
            y
        }
        None => vec![0.0f32; rows * d_out],
    };
    let beta = if b.is_some() { 1.0 } else { 0.0 };
    kernels::gemm(
        1.0,
        Mat::new(x, rows, d_in),
        Mat::new(w, d_out, d_in).t(),
        beta,
        &mut y,
        rows,
        d_out,
    );
    y
}

#[derive(Debug, Clone)]
struct LinearSaved {
    x: Arc<Vec<f32>>,
    w: Arc<Vec<f32>>,
    rows: usize,
    d_in: usize,
    d_out: usize,
}

#[derive(Debug)]
struct LinearBackward<const N: usize>;

impl<const N: usize> Backward<Nd, N> for LinearBackward<N> {
    type State = LinearSaved;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let s = ops.state;
        let dy = prim_vec(grads.consume::<Nd>(&ops.node));
        let parents = ops.parents;
        if let Some(node) = &parents[0] {
            // dx = dy·w
            let mut dx = vec![0.0f32; s.rows * s.d_in];
            kernels::gemm(
                1.0,
                Mat::new(&dy, s.rows, s.d_out),
                Mat::new(&s.w, s.d_out, s.d_in),
                0.0,
                &mut dx,
                s.rows,
                s.d_in,
            );
            grads.register::<Nd>(node.id, prim(dx, [s.rows, s.d_in]));
        }
        if let Some(node) = &parents[1] {
            // dw = dyᵀ·x
            let mut dw = vec![0.0f32; s.d_out * s.d_in];
            kernels::gemm(
                1.0,
                Mat::new(&dy, s.rows, s.d_out).t(),
                Mat::new(&s.x, s.rows, s.d_in),
                0.0,
                &mut dw,
                s.d_out,
                s.d_in,
            );
            grads.register::<Nd>(node.id, prim(dw, [s.d_out, s.d_in]));
        }
        if N == 3 {
            if let Some(node) = &parents[2] {
                grads.register::<Nd>(node.id, prim(kernels::col_sums(&dy, s.d_out), [s.d_out]));
            }
        }
    }
}

fn linear_autodiff(
    x: Tensor<AdNd, 2>,
    w: Tensor<AdNd, 2>,
    b: Option<Tensor<AdNd, 1>>,
) -> Tensor<AdNd, 2> {
    let [rows, d_in] = x.dims();
    let d_out = w.dims()[0];
    let (x, w) = (ad_prim(x), ad_prim(w));
    let b = b.map(ad_prim);
    let run = |xp: NdPrim, wp: NdPrim, bp: Option<NdPrim>| {
        linear_forward(
            prim_vec(xp),
            prim_vec(wp),
            bp.map(prim_vec),
            rows,
            d_in,
            d_out,
        )
    };
    let saved = |xv: Vec<f32>, wv: Vec<f32>| LinearSaved {
        x: Arc::new(xv),
        w: Arc::new(wv),
        rows,
        d_in,
        d_out,
    };
    let out = match b {
        Some(b) => {
            match LinearBackward::<3>
                .prepare::<burn::backend::autodiff::checkpoint::strategy::NoCheckpointing>([
                    x.node.clone(),
                    w.node.clone(),
                    b.node.clone(),
                ])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => {
                    let (y, xv, wv) = run(x.primitive, w.primitive, Some(b.primitive));
                    prep.finish(saved(xv, wv), prim(y, [rows, d_out]))
                }
                OpsKind::UnTracked(prep) => {
                    let (y, _, _) = run(x.primitive, w.primitive, Some(b.primitive));
                    prep.finish(prim(y, [rows, d_out]))
                }
            }
        }
        None => {
            match LinearBackward::<2>
                .prepare::<burn::backend::autodiff::checkpoint::strategy::NoCheckpointing>([
                    x.node.clone(),
                    w.node.clone(),
                ])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => {
                    let (y, xv, wv) = run(x.primitive, w.primitive, None);
                    prep.finish(saved(xv, wv), prim(y, [rows, d_out]))
                }
                OpsKind::UnTracked(prep) => {
                    let (y, _, _) = run(x.primitive, w.primitive, None);
                    prep.finish(prim(y, [rows, d_out]))
                }
            }
        }
    };
    from_ad_prim(out)
}

// --- matmul -----------------------------------------------------------------------------------

/// `a · b` over the last two dimensions, as burn's `matmul`, with leading (batch) dimensions that
/// are equal or all 1 on one side (broadcast).
///
/// On ndarray the products run through [`kernels::gemm`] (AVX-512 where the CPU has it; burn's
/// own matmul uses matrixmultiply's AVX2 kernels) as one autodiff node, and a transposed operand
/// (`swap_dims` of the last two) is read as it is stored. Other broadcasts, and every other
/// backend, use burn's `matmul` in f32 (callers that want the thread's reduced precision on the
/// GPU backends wrap it in [`crate::precision`] themselves).
///
/// # Shapes
/// `a: [..., m, k]`, `b: [..., k, n]` → `[..., m, n]`.
pub fn matmul<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> Tensor<B, D> {
    let id = TypeId::of::<B>();
    if id != TypeId::of::<AdNd>() && id != TypeId::of::<Nd>() {
        return a.matmul(b);
    }
    let Some(dims) = MatmulDims::of(&a.dims(), &b.dims()) else {
        return a.matmul(b);
    };
    let mut out_dims = if dims.ba >= dims.bb {
        a.dims()
    } else {
        b.dims()
    };
    out_dims[D - 2] = dims.m;
    out_dims[D - 1] = dims.n;
    if id == TypeId::of::<AdNd>() {
        let (a, b) = (cast::<B, AdNd, D>(a), cast::<B, AdNd, D>(b));
        return cast::<AdNd, B, D>(matmul_autodiff(a, b, dims, out_dims));
    }
    let (a, b) = (cast::<B, Nd, D>(a), cast::<B, Nd, D>(b));
    let a = Operand::of(a.into_primitive().tensor());
    let b = Operand::of(b.into_primitive().tensor());
    let y = matmul_forward(&a, &b, dims);
    cast::<Nd, B, 3>(tensor(y, [dims.batch(), dims.m, dims.n])).reshape(out_dims)
}

/// Sizes of a (broadcast) batched matrix product.
#[derive(Debug, Clone, Copy)]
struct MatmulDims {
    /// Matrices in `a` and in `b` (1 or the batch).
    ba: usize,
    bb: usize,
    m: usize,
    k: usize,
    n: usize,
}

impl MatmulDims {
    /// `None` when the shapes need a broadcast other than "equal, or all ones on one side", or
    /// the inner sizes differ (burn's `matmul` then reports it).
    fn of(a: &[usize], b: &[usize]) -> Option<Self> {
        let d = a.len();
        let (m, k, kb, n) = (a[d - 2], a[d - 1], b[d - 2], b[d - 1]);
        let (lead_a, lead_b) = (&a[..d - 2], &b[..d - 2]);
        let ones = |l: &[usize]| l.iter().all(|&x| x == 1);
        if k != kb || !(lead_a == lead_b || ones(lead_a) || ones(lead_b)) {
            return None;
        }
        let (ba, bb) = (lead_a.iter().product(), lead_b.iter().product());
        Some(Self { ba, bb, m, k, n })
    }

    fn batch(&self) -> usize {
        self.ba.max(self.bb)
    }
}

/// A matmul operand read in place: the primitive itself (a cheap clone of shared storage, kept
/// for backward the way burn keeps a tensor) when its values are one row-major block of
/// matrices (`t = false`) or of their transposes (`t = true`, a `swap_dims` of the last two);
/// otherwise a row-major copy.
#[derive(Debug, Clone)]
enum Operand {
    Stored(NdPrim, bool),
    Owned(Arc<Vec<f32>>),
}

impl Operand {
    fn of(p: NdPrim) -> Self {
        let layout = match &p {
            NdArrayTensor::F32(storage) => {
                let view = storage.view();
                let nd = view.ndim();
                let mut swapped = view.clone();
                if nd >= 2 {
                    swapped.swap_axes(nd - 2, nd - 1);
                }
                if view.is_standard_layout() {
                    Some(false)
                } else if nd >= 2 && swapped.is_standard_layout() {
                    Some(true)
                } else {
                    None
                }
            }
            _ => None,
        };
        match layout {
            Some(t) => Self::Stored(p, t),
            None => Self::Owned(Arc::new(prim_vec(p))),
        }
    }

    /// Calls `f` with the values as stored and whether they hold the transposes.
    fn with<R>(&self, f: impl FnOnce(&[f32], bool) -> R) -> R {
        match self {
            Self::Stored(NdArrayTensor::F32(storage), t) => {
                let mut view = storage.view();
                if *t {
                    let nd = view.ndim();
                    view.swap_axes(nd - 2, nd - 1);
                }
                let values = view.to_slice().expect("layout checked by `Operand::of`");
                f(values, *t)
            }
            Self::Stored(..) => unreachable!("only f32 storage is kept as stored"),
            Self::Owned(v) => f(v, false),
        }
    }
}

/// Matrix `i` of a batch of `rows × cols` matrices (stored transposed when `t`), or its only
/// matrix when the batch is 1 (broadcast).
fn batch_mat(data: &[f32], t: bool, count: usize, i: usize, rows: usize, cols: usize) -> Mat<'_> {
    let size = rows * cols;
    let block = &data[if count == 1 { 0 } else { i * size }..][..size];
    if t {
        Mat::new(block, cols, rows).t()
    } else {
        Mat::new(block, rows, cols)
    }
}

fn matmul_forward(a: &Operand, b: &Operand, d: MatmulDims) -> Vec<f32> {
    let mut y = vec![0.0f32; d.batch() * d.m * d.n];
    a.with(|av, at| {
        b.with(|bv, bt| {
            for (i, yi) in y.chunks_mut(d.m * d.n).enumerate() {
                let ai = batch_mat(av, at, d.ba, i, d.m, d.k);
                let bi = batch_mat(bv, bt, d.bb, i, d.k, d.n);
                kernels::gemm(1.0, ai, bi, 0.0, yi, d.m, d.n);
            }
        })
    });
    y
}

#[derive(Debug, Clone)]
struct MatmulSaved {
    a: Operand,
    b: Operand,
    dims: MatmulDims,
    /// The operands' own shapes (their gradients' shapes).
    a_shape: Vec<usize>,
    b_shape: Vec<usize>,
}

#[derive(Debug)]
struct MatmulBackward;

impl Backward<Nd, 2> for MatmulBackward {
    type State = MatmulSaved;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let MatmulSaved {
            a,
            b,
            dims: d,
            a_shape,
            b_shape,
        } = ops.state;
        let dy = prim_vec(grads.consume::<Nd>(&ops.node));
        let batch = d.batch();
        let dyi = |i: usize| Mat::new(&dy[i * d.m * d.n..(i + 1) * d.m * d.n], d.m, d.n);
        let [pa, pb] = &ops.parents;
        if let Some(node) = pa {
            // da_i = dy_i·b_iᵀ, summed over the batch where `a` was broadcast.
            let mut da = vec![0.0f32; d.ba * d.m * d.k];
            b.with(|bv, bt| {
                for i in 0..batch {
                    let bi = batch_mat(bv, bt, d.bb, i, d.k, d.n).t();
                    let (out, beta) = if d.ba == 1 {
                        (&mut da[..], if i == 0 { 0.0 } else { 1.0 })
                    } else {
                        (&mut da[i * d.m * d.k..(i + 1) * d.m * d.k], 0.0)
                    };
                    kernels::gemm(1.0, dyi(i), bi, beta, out, d.m, d.k);
                }
            });
            grads.register::<Nd>(node.id, prim_dyn(da, &a_shape));
        }
        if let Some(node) = pb {
            // db_i = a_iᵀ·dy_i, summed over the batch where `b` was broadcast.
            let mut db = vec![0.0f32; d.bb * d.k * d.n];
            a.with(|av, at| {
                for i in 0..batch {
                    let ai = batch_mat(av, at, d.ba, i, d.m, d.k).t();
                    let (out, beta) = if d.bb == 1 {
                        (&mut db[..], if i == 0 { 0.0 } else { 1.0 })
                    } else {
                        (&mut db[i * d.k * d.n..(i + 1) * d.k * d.n], 0.0)
                    };
                    kernels::gemm(1.0, ai, dyi(i), beta, out, d.k, d.n);
                }
            });
            grads.register::<Nd>(node.id, prim_dyn(db, &b_shape));
        }
    }
}

/// The autodiff node of [`matmul`]: `a`, `b` read as `[ba, m, k]` and `[bb, k, n]` batches
/// (no reshape: burn-ndarray would copy a transposed view into row-major order).
fn matmul_autodiff<const D: usize>(
    a: Tensor<AdNd, D>,
    b: Tensor<AdNd, D>,
    dims: MatmulDims,
    out_dims: [usize; D],
) -> Tensor<AdNd, D> {
    let (a_shape, b_shape) = (a.dims().to_vec(), b.dims().to_vec());
    let (a, b) = (ad_prim(a), ad_prim(b));
    let out = match MatmulBackward
        .prepare::<burn::backend::autodiff::checkpoint::strategy::NoCheckpointing>([
            a.node.clone(),
            b.node.clone(),
        ])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (av, bv) = (Operand::of(a.primitive), Operand::of(b.primitive));
            let y = matmul_forward(&av, &bv, dims);
            let saved = MatmulSaved {
                a: av,
                b: bv,
                dims,
                a_shape,
                b_shape,
            };
            prep.finish(saved, prim(y, out_dims))
        }
        OpsKind::UnTracked(prep) => {
            let (av, bv) = (Operand::of(a.primitive), Operand::of(b.primitive));
            prep.finish(prim(matmul_forward(&av, &bv, dims), out_dims))
        }
    };
    from_ad_prim(out)
}

/// Exact (erf) GELU, as PyTorch's `nn.GELU()`, with its exact gradient `Φ(x) + x·φ(x)`.
///
/// burn 0.21's own `gelu` computes the erf forward but differentiates the tanh approximation
/// (`ActivationOps::gelu_backward`): gradients off by up to ~1e-3 relative, unlike PyTorch. So
/// the other backends get the same formula composed of `erf` and products, which autodiff
/// differentiates exactly.
///
/// # Shapes
/// Any; element-wise.
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let dims = x.dims();
    let n = dims.iter().product::<usize>();
    let id = TypeId::of::<B>();
    if id == TypeId::of::<AdNd>() {
        let x = cast::<B, AdNd, 1>(x.reshape([n]));
        return cast::<AdNd, B, 1>(gelu_autodiff(x)).reshape(dims);
    }
    if id == TypeId::of::<Nd>() {
        let x = vec_of(cast::<B, Nd, 1>(x.reshape([n])));
        return cast::<Nd, B, 1>(tensor(kernels::gelu_forward(&x), [n])).reshape(dims);
    }
    gelu_composed(x)
}

/// Dropout as burn's `Dropout` computes it, `x · m / (1 − p)` with `m ~ Bernoulli(1 − p)`, and
/// only where autodiff is on (training); `p = 0` or inference returns `x`.
///
/// On ndarray the scaled mask (`0` or `1/(1 − p)`) is drawn on the host in parallel, by a
/// counter-based hash (splitmix64) of one 48-bit seed per call that comes from the backend's
/// generator, so `B::seed` makes runs reproducible exactly as with burn's `Dropout`: one
/// multiply forward and one backward, instead of a mask from burn-ndarray's sequential
/// generator and two multiplies. Every other backend runs burn's `Dropout` (its masks stay on the
/// device).
///
/// # Shapes
/// Any; element-wise.
pub fn dropout<B: Backend, const D: usize>(x: Tensor<B, D>, prob: f64) -> Tensor<B, D> {
    let device = x.device();
    if prob == 0.0 || !B::ad_enabled(&device) {
        return x;
    }
    if TypeId::of::<B>() != TypeId::of::<AdNd>() {
        return burn::nn::DropoutConfig::new(prob).init().forward(x);
    }
    let dims = x.dims();
    let n = dims.iter().product::<usize>();
    let draws: Vec<f32> = Tensor::<B, 1>::random([2], burn::tensor::Distribution::Default, &device)
        .into_data()
        .convert::<f32>()
        .into_vec()
        .unwrap_or_default();
    let bits = |v: Option<&f32>| (f64::from(v.copied().unwrap_or(0.0)) * 16_777_216.0) as u64;
    let seed = (bits(draws.first()) << 24) | bits(draws.get(1));
    let mask = kernels::dropout_mask(n, 1.0 - prob, seed);
    x * Tensor::from_data(burn::tensor::TensorData::new(mask, dims), &device)
}

fn gelu_composed<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let cdf = x
        .clone()
        .mul_scalar(std::f64::consts::FRAC_1_SQRT_2)
        .erf()
        .add_scalar(1.0)
        .mul_scalar(0.5);
    x * cdf
}

#[derive(Debug)]
struct GeluBackward;

impl Backward<Nd, 1> for GeluBackward {
    type State = Arc<Vec<f32>>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = prim_vec(grads.consume::<Nd>(&ops.node));
        if let [Some(node)] = &ops.parents {
            let n = dy.len();
            grads.register::<Nd>(node.id, prim(kernels::gelu_backward(&ops.state, &dy), [n]));
        }
    }
}

fn gelu_autodiff(x: Tensor<AdNd, 1>) -> Tensor<AdNd, 1> {
    let [n] = x.dims();
    let x = ad_prim(x);
    let out = match GeluBackward
        .prepare::<burn::backend::autodiff::checkpoint::strategy::NoCheckpointing>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let xv = prim_vec(x.primitive);
            let y = kernels::gelu_forward(&xv);
            prep.finish(Arc::new(xv), prim(y, [n]))
        }
        OpsKind::UnTracked(prep) => {
            prep.finish(prim(kernels::gelu_forward(&prim_vec(x.primitive)), [n]))
        }
    };
    from_ad_prim(out)
}

// --- attention --------------------------------------------------------------------------------

fn attn_dims<B: Backend>(q: &Tensor<B, 3>, k: &Tensor<B, 3>) -> AttnDims {
    let [heads, nq, d] = q.dims();
    let [hk, nk, dk] = k.dims();
    assert!(
        hk == heads && dk == d,
        "attention of q {:?} and k {:?}",
        q.dims(),
        k.dims()
    );
    AttnDims { heads, nq, nk, d }
}

#[derive(Debug, Clone)]
struct AttnSaved {
    q: Arc<Vec<f32>>,
    k: Arc<Vec<f32>>,
    v: Arc<Vec<f32>>,
    o: Arc<Vec<f32>>,
    lse: Arc<Vec<f32>>,
    dims: AttnDims,
    scale: f32,
    /// Only in the 5-parent node of [`attention_rel_pos`].
    rel: Option<RelSaved>,
}

/// The relative-position terms of [`attention_rel_pos`] as saved for backward.
#[derive(Debug, Clone)]
struct RelSaved {
    /// `[heads, nq, gh]`.
    h: Arc<Vec<f32>>,
    /// `[heads, nq, gw]`.
    w: Arc<Vec<f32>>,
    /// The key grid.
    gh: usize,
    gw: usize,
}

/// The node of [`attention`] (`N = 3`: q, k, v) and of [`attention_rel_pos`] (`N = 5`: also
/// `rel_h`, `rel_w`).
#[derive(Debug)]
struct AttentionBackward<const N: usize>;

impl<const N: usize> Backward<Nd, N> for AttentionBackward<N> {
    type State = AttnSaved;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let s = ops.state;
        let d_o = prim_vec(grads.consume::<Nd>(&ops.node));
        let bias = s.rel.as_ref().map(|r| kernels::RelBias {
            h: &r.h,
            w: &r.w,
            gh: r.gh,
            gw: r.gw,
        });
        let (dq, dk, dv, dbias) = kernels::attention_backward_biased(
            &s.q, &s.k, &s.v, &s.o, &s.lse, &d_o, s.dims, s.scale, bias,
        );
        let AttnDims { heads, nq, nk, d } = s.dims;
        let parents = ops.parents;
        if let Some(node) = &parents[0] {
            grads.register::<Nd>(node.id, prim(dq, [heads, nq, d]));
        }
        if let Some(node) = &parents[1] {
            grads.register::<Nd>(node.id, prim(dk, [heads, nk, d]));
        }
        if let Some(node) = &parents[2] {
            grads.register::<Nd>(node.id, prim(dv, [heads, nk, d]));
        }
        if let (Some((dh, dw)), Some(r)) = (dbias, &s.rel) {
            if let Some(node) = parents.get(3).and_then(Option::as_ref) {
                grads.register::<Nd>(node.id, prim(dh, [heads, nq, r.gh]));
            }
            if let Some(node) = parents.get(4).and_then(Option::as_ref) {
                grads.register::<Nd>(node.id, prim(dw, [heads, nq, r.gw]));
            }
        }
    }
}

fn attention_autodiff(
    q: Tensor<AdNd, 3>,
    k: Tensor<AdNd, 3>,
    v: Tensor<AdNd, 3>,
    scale: f32,
) -> Tensor<AdNd, 3> {
    let dims = attn_dims(&q, &k);
    let (q, k, v) = (ad_prim(q), ad_prim(k), ad_prim(v));
    let shape = [dims.heads, dims.nq, dims.d];
    let out = match AttentionBackward::<3>
        .prepare::<burn::backend::autodiff::checkpoint::strategy::NoCheckpointing>([
            q.node.clone(),
            k.node.clone(),
            v.node.clone(),
        ])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (qv, kv, vv) = (
                prim_vec(q.primitive),
                prim_vec(k.primitive),
                prim_vec(v.primitive),
            );
            let (o, lse) = kernels::attention_forward(&qv, &kv, &vv, dims, scale);
            let o = Arc::new(o);
            let out = prim((*o).clone(), shape);
            let state = AttnSaved {
                q: Arc::new(qv),
                k: Arc::new(kv),
                v: Arc::new(vv),
                o,
                lse: Arc::new(lse),
                dims,
                scale,
                rel: None,
            };
            prep.finish(state, out)
        }
        OpsKind::UnTracked(prep) => {
            let (o, _) = kernels::attention_forward(
                &prim_vec(q.primitive),
                &prim_vec(k.primitive),
                &prim_vec(v.primitive),
                dims,
                scale,
            );
            prep.finish(prim(o, shape))
        }
    };
    from_ad_prim(out)
}

/// The 5-parent node of [`attention_rel_pos`] on `Autodiff<NdArray>`: saves q, k, v, the two
/// bias terms, the output and the log-sum-exp; backward recomputes the biased probabilities.
fn attention_rel_autodiff(
    q: Tensor<AdNd, 3>,
    k: Tensor<AdNd, 3>,
    v: Tensor<AdNd, 3>,
    rel_h: Tensor<AdNd, 3>,
    rel_w: Tensor<AdNd, 3>,
    scale: f32,
) -> Tensor<AdNd, 3> {
    let dims = attn_dims(&q, &k);
    let (gh, gw) = (rel_h.dims()[2], rel_w.dims()[2]);
    let (q, k, v) = (ad_prim(q), ad_prim(k), ad_prim(v));
    let (rh, rw) = (ad_prim(rel_h), ad_prim(rel_w));
    let shape = [dims.heads, dims.nq, dims.d];
    let forward = |qv: &[f32], kv: &[f32], vv: &[f32], bh: &[f32], bw: &[f32]| {
        let bias = kernels::RelBias {
            h: bh,
            w: bw,
            gh,
            gw,
        };
        kernels::attention_forward_biased(qv, kv, vv, dims, scale, Some(bias))
    };
    let out = match AttentionBackward::<5>
        .prepare::<burn::backend::autodiff::checkpoint::strategy::NoCheckpointing>([
            q.node.clone(),
            k.node.clone(),
            v.node.clone(),
            rh.node.clone(),
            rw.node.clone(),
        ])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (qv, kv, vv) = (
                prim_vec(q.primitive),
                prim_vec(k.primitive),
                prim_vec(v.primitive),
            );
            let (bh, bw) = (prim_vec(rh.primitive), prim_vec(rw.primitive));
            let (o, lse) = forward(&qv, &kv, &vv, &bh, &bw);
            let o = Arc::new(o);
            let out = prim((*o).clone(), shape);
            let state = AttnSaved {
                q: Arc::new(qv),
                k: Arc::new(kv),
                v: Arc::new(vv),
                o,
                lse: Arc::new(lse),
                dims,
                scale,
                rel: Some(RelSaved {
                    h: Arc::new(bh),
                    w: Arc::new(bw),
                    gh,
                    gw,
                }),
            };
            prep.finish(state, out)
        }
        OpsKind::UnTracked(prep) => {
            let (bh, bw) = (prim_vec(rh.primitive), prim_vec(rw.primitive));
            let (o, _) = forward(
                &prim_vec(q.primitive),
                &prim_vec(k.primitive),
                &prim_vec(v.primitive),
                &bh,
                &bw,
            );
            prep.finish(prim(o, shape))
        }
    };
    from_ad_prim(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tolerance};

    /// f32 sums of up to a few hundred products in another order.
    const FUSED_TOL: f32 = 1e-4;

    fn close<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) {
        a.into_data()
            .assert_approx_eq::<f32>(&b.into_data(), Tolerance::absolute(FUSED_TOL));
    }

    /// burn's composition of the same maths (what other backends run).
    fn reference_linear<B: Backend, const D: usize>(
        x: Tensor<B, D>,
        w: Tensor<B, 2>,
        b: Option<Tensor<B, 1>>,
    ) -> Tensor<B, D> {
        burn::tensor::module::linear(x, w.transpose(), b)
    }

    fn reference_attention<B: Backend>(
        q: Tensor<B, 3>,
        k: Tensor<B, 3>,
        v: Tensor<B, 3>,
        s: f64,
    ) -> Tensor<B, 3> {
        softmax(q.mul_scalar(s).matmul(k.swap_dims(1, 2)), 2).matmul(v)
    }

    fn rand<B: Backend, const D: usize>(shape: [usize; D], device: &B::Device) -> Tensor<B, D> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
    }

    #[test]
    fn fused_linear_and_attention_equal_burns_forward_and_gradients() {
        let device = Default::default();
        for bias in [true, false] {
            let x = rand::<AdNd, 3>([2, 5, 6], &device).require_grad();
            let w = rand::<AdNd, 2>([4, 6], &device).require_grad();
            let b = bias.then(|| rand::<AdNd, 1>([4], &device).require_grad());
            let probe = rand::<AdNd, 3>([2, 5, 4], &device);
            let fused = linear(x.clone(), w.clone(), b.clone());
            let plain = reference_linear(x.clone(), w.clone(), b.clone());
            close(fused.clone(), plain.clone());
            let g1 = (fused * probe.clone()).sum().backward();
            let g2 = (plain * probe).sum().backward();
            close(x.grad(&g1).unwrap(), x.grad(&g2).unwrap());
            close(w.grad(&g1).unwrap(), w.grad(&g2).unwrap());
            if let Some(b) = &b {
                close(b.grad(&g1).unwrap(), b.grad(&g2).unwrap());
            }
            // Inference backend.
            let (xi, wi) = (x.clone().inner(), w.clone().inner());
            let bi = b.map(|b| b.inner());
            close(
                linear(xi.clone(), wi.clone(), bi.clone()),
                reference_linear(xi, wi, bi),
            );
        }
        let q = rand::<AdNd, 3>([3, 7, 4], &device).require_grad();
        let k = rand::<AdNd, 3>([3, 9, 4], &device).require_grad();
        let v = rand::<AdNd, 3>([3, 9, 4], &device).require_grad();
        let probe = rand::<AdNd, 3>([3, 7, 4], &device);
        let fused = attention(q.clone(), k.clone(), v.clone(), 0.5);
        let plain = reference_attention(q.clone(), k.clone(), v.clone(), 0.5);
        close(fused.clone(), plain.clone());
        let g1 = (fused * probe.clone()).sum().backward();
        let g2 = (plain * probe).sum().backward();
        for t in [&q, &k, &v] {
            close(t.grad(&g1).unwrap(), t.grad(&g2).unwrap());
        }
        close(
            attention(q.clone().inner(), k.clone().inner(), v.clone().inner(), 0.5),
            reference_attention(q.inner(), k.inner(), v.inner(), 0.5),
        );
    }

    /// `fused::matmul` on one case: `a`, `b` built with shapes `sa`, `sb` (transposed views of
    /// the last two dims when `ta`, `tb`), forward and both gradients against burn's matmul.
    fn check_matmul<const D: usize>(sa: [usize; D], sb: [usize; D], ta: bool, tb: bool) {
        let device = Default::default();
        let leaf = |shape: [usize; D], t: bool| {
            let mut stored = shape;
            if t {
                stored.swap(D - 2, D - 1);
            }
            rand::<AdNd, D>(stored, &device).require_grad()
        };
        // A fresh view per graph: burn frees a shared intermediate node after one backward.
        let used = |x: &Tensor<AdNd, D>, t: bool| {
            if t {
                x.clone().swap_dims(D - 2, D - 1)
            } else {
                x.clone()
            }
        };
        let (a, b) = (leaf(sa, ta), leaf(sb, tb));
        let fused = matmul(used(&a, ta), used(&b, tb));
        let plain = used(&a, ta).matmul(used(&b, tb));
        assert_eq!(fused.dims(), plain.dims(), "{sa:?} x {sb:?}");
        let probe = rand::<AdNd, D>(plain.dims(), &device);
        close(fused.clone(), plain.clone());
        let g1 = (fused * probe.clone()).sum().backward();
        let g2 = (plain * probe).sum().backward();
        close(a.grad(&g1).unwrap(), a.grad(&g2).unwrap());
        close(b.grad(&g1).unwrap(), b.grad(&g2).unwrap());
        // Inference backend.
        let (ai, bi) = (used(&a, ta).inner(), used(&b, tb).inner());
        close(matmul(ai.clone(), bi.clone()), ai.matmul(bi));
    }

    #[test]
    fn fused_matmul_equals_burns_forward_and_gradients() {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            check_matmul([5, 7], [7, 3], ta, tb);
            check_matmul([2, 5, 7], [2, 7, 3], ta, tb);
            // Broadcast batches, on either side (matconv's weight, the decoder's conv).
            check_matmul([1, 5, 7], [3, 7, 4], ta, tb);
            check_matmul([3, 5, 7], [1, 7, 4], ta, tb);
            check_matmul([2, 3, 5, 7], [2, 3, 7, 4], ta, tb);
        }
        // A broadcast burn supports and the fast path does not: handed to burn.
        check_matmul([2, 1, 5, 7], [1, 3, 7, 4], false, false);
    }

    #[test]
    fn relative_position_attention_equals_the_composition() {
        let device = Default::default();
        type B = Nd;
        let (gh, gw) = (3, 4);
        let q = rand::<B, 3>([2, 12, 5], &device);
        let k = rand::<B, 3>([2, 12, 5], &device);
        let v = rand::<B, 3>([2, 12, 5], &device);
        let rh = rand::<B, 3>([2, 12, gh], &device);
        let rw = rand::<B, 3>([2, 12, gw], &device);
        let fused = attention_rel_pos(q.clone(), k.clone(), v.clone(), 0.3, rh.clone(), rw.clone());
        let logits = q
            .mul_scalar(0.3)
            .matmul(k.swap_dims(1, 2))
            .reshape([2, 12, gh, gw])
            + rh.reshape([2, 12, gh, 1])
            + rw.reshape([2, 12, 1, gw]);
        let want = softmax(logits.reshape([2, 12, 12]), 2).matmul(v);
        close(fused, want);
    }

    #[test]
    fn relative_position_attention_gradients_equal_the_composition() {
        let device = Default::default();
        type B = AdNd;
        let (gh, gw) = (3, 4);
        let q = rand::<B, 3>([2, 10, 5], &device).require_grad();
        let k = rand::<B, 3>([2, 12, 5], &device).require_grad();
        let v = rand::<B, 3>([2, 12, 5], &device).require_grad();
        let rh = rand::<B, 3>([2, 10, gh], &device).require_grad();
        let rw = rand::<B, 3>([2, 10, gw], &device).require_grad();
        let probe = rand::<B, 3>([2, 10, 5], &device);
        let fused = attention_rel_pos(q.clone(), k.clone(), v.clone(), 0.3, rh.clone(), rw.clone());
        let logits = q
            .clone()
            .mul_scalar(0.3)
            .matmul(k.clone().swap_dims(1, 2))
            .reshape([2, 10, gh, gw])
            + rh.clone().reshape([2, 10, gh, 1])
            + rw.clone().reshape([2, 10, 1, gw]);
        let plain = softmax(logits.reshape([2, 10, 12]), 2).matmul(v.clone());
        close(fused.clone(), plain.clone());
        let g1 = (fused * probe.clone()).sum().backward();
        let g2 = (plain * probe).sum().backward();
        for t in [&q, &k, &v, &rh, &rw] {
            close(t.grad(&g1).unwrap(), t.grad(&g2).unwrap());
        }
    }

    #[test]
    fn fused_gelu_equals_burns_forward_and_gradient() {
        let device = Default::default();
        let x = rand::<AdNd, 3>([2, 3, 50], &device)
            .mul_scalar(3.0)
            .require_grad();
        let probe = rand::<AdNd, 3>([2, 3, 50], &device);
        let fused = gelu(x.clone());
        let plain = gelu_composed(x.clone());
        // burn's own forward agrees; its gradient does not (see `gelu`).
        close(fused.clone(), burn::tensor::activation::gelu(x.clone()));
        close(fused.clone(), plain.clone());
        let g1 = (fused * probe.clone()).sum().backward();
        let g2 = (plain * probe).sum().backward();
        close(x.grad(&g1).unwrap(), x.grad(&g2).unwrap());
        close(gelu(x.clone().inner()), gelu_composed(x.inner()));
    }

    #[test]
    fn untracked_inputs_get_no_gradient_and_frozen_weights_none() {
        let device = Default::default();
        let x = rand::<AdNd, 2>([3, 4], &device).require_grad();
        let w = rand::<AdNd, 2>([2, 4], &device); // frozen
        let g = linear(x.clone(), w.clone(), None).sum().backward();
        assert!(x.grad(&g).is_some());
        assert!(w.grad(&g).is_none());
        // Nothing tracked: an untracked result.
        let y = linear(x.detach(), w, None);
        assert!(!y.is_require_grad());
    }

    #[test]
    fn fused_dropout_keeps_its_share_scales_and_differentiates_by_its_mask() {
        let device = Default::default();
        let n = 200_000;
        let (p, keep) = (0.1, 0.9);
        let x = Tensor::<AdNd, 2>::ones([n / 100, 100], &device).require_grad();
        let y = dropout(x.clone(), p);
        let g = y.clone().sum().backward();
        let out: Vec<f32> = y.into_data().to_vec().unwrap();
        let kept = out.iter().filter(|&&v| v != 0.0).count() as f64 / n as f64;
        // Binomial standard deviation of the kept share: sqrt(0.9 · 0.1 / n) ≈ 6.7e-4.
        assert!((kept - keep).abs() < 5e-3, "kept {kept}");
        let scale = (1.0 / keep) as f32;
        assert!(
            out.iter().all(|&v| v == 0.0 || v == scale),
            "values other than 0, 1/keep"
        );
        // d(sum)/dx is the scaled mask itself.
        let grad: Vec<f32> = x.grad(&g).unwrap().into_data().to_vec().unwrap();
        assert_eq!(grad, out);
        // Each call draws a new seed from the backend's generator (whose seeding makes runs
        // reproducible: salt-cli's resume test with LoRA dropout); a seed fixes the mask.
        let next: Vec<f32> = dropout(x.clone(), p).into_data().to_vec().unwrap();
        assert_ne!(next, out);
        assert_eq!(
            kernels::dropout_mask(1000, keep, 5),
            kernels::dropout_mask(1000, keep, 5)
        );
        assert_ne!(
            kernels::dropout_mask(1000, keep, 5),
            kernels::dropout_mask(1000, keep, 6)
        );
        // No dropout without autodiff or with p = 0.
        let plain = Tensor::<Nd, 1>::ones([8], &device);
        assert_eq!(
            dropout(plain, p).into_data().to_vec::<f32>().unwrap(),
            vec![1.0; 8]
        );
        let same: Vec<f32> = dropout(x, 0.0).into_data().to_vec().unwrap();
        assert!(same.iter().all(|&v| v == 1.0));
        // The mask does not depend on how rayon splits the work.
        assert_eq!(kernels::dropout_mask(1001, keep, 3), {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap();
            pool.install(|| kernels::dropout_mask(1001, keep, 3))
        });
    }
}
