//! Attention, LayerNorm, Linear and the head's weight normalisation as single CPU ops, forward
//! and backward.
//!
//! burn composes each from several tensor ops, and under autodiff differentiates each: on the
//! CPU backend every one allocates (zero-filled, then copied to an aligned buffer), and the
//! permutes around attention copy the Q, K, V and output tensors once more. Here each runs as
//! one kernel over host slices: attention reads Q, K and V in place from the QKV projection's
//! output with strided `gemm` calls and writes its output already in the heads-merged layout;
//! LayerNorm keeps its normalised input and per-row scale for a one-pass backward; Linear
//! writes its bias once and lets `gemm` accumulate onto it, and reads transposes through
//! strides in its backward. Under autodiff each is one node of burn's graph with a
//! hand-written backward (`Backward`), so nothing else of the training step changes.
//!
//! Only float32 tensors of the CPU backend (`Flex`, with or without autodiff) take this path;
//! every other device or dtype runs burn's own ops, which give the same values up to rounding.
//! The sums written here (softmax rows, LayerNorm's and Linear's column sums) are split into
//! fixed blocks and added in block order, and the products are gemm's, as in burn's matmul: a
//! seeded run repeats exactly on the same machine and thread count.

pub mod attention;
pub mod layer_norm;
pub mod linear;
pub mod weight_norm;

use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// A float32 tensor of the CPU backend, unwrapped to its primitive.
pub(crate) enum Host {
    /// No autodiff: the plain buffer.
    Plain(FlexTensor),
    /// Under autodiff: the graph node and its buffer.
    Tracked(FloatTensor<Autodiff<Flex>>),
}

impl Host {
    /// The buffer alone, tracked or not (for operands that are only read).
    pub(crate) fn into_buffer(self) -> FlexTensor {
        match self {
            Host::Plain(x) => x,
            Host::Tracked(x) => x.into_primitive(),
        }
    }
}

/// `tensor` as a CPU-backend primitive (sharing its buffer), or `None` where the fused kernels
/// do not apply.
pub(crate) fn host<const D: usize>(tensor: &Tensor<D>) -> Option<Host> {
    if tensor.dtype() != burn::tensor::DType::F32 {
        return None;
    }
    // The conversions consume their input: a clone is a reference count.
    if tensor.is_autodiff() {
        tensor
            .clone()
            .try_into_primitive::<Autodiff<Flex>>()
            .ok()
            .map(Host::Tracked)
    } else {
        tensor
            .clone()
            .try_into_primitive::<Flex>()
            .ok()
            .map(Host::Plain)
    }
}

/// `tensor`'s CPU buffer, taken over (a float32 tensor of the CPU backend without autodiff),
/// or `tensor` back. The handle given up is dropped here, so the buffer is unique when
/// `tensor` was its only owner and can be written in place ([`unique_values_mut`]).
pub(crate) fn into_plain<const D: usize>(tensor: Tensor<D>) -> Result<FlexTensor, Box<Tensor<D>>> {
    match host(&tensor) {
        Some(Host::Plain(buffer)) => Ok(buffer),
        _ => Err(Box::new(tensor)),
    }
}

/// The float32 values of a CPU tensor, row-major (copied only when it is a strided view).
pub(crate) fn values(tensor: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match tensor.as_slice::<f32>() {
        Some(values) => std::borrow::Cow::Borrowed(values),
        None => std::borrow::Cow::Owned(tensor.clone().into_data().iter::<f32>().collect()),
    }
}

/// The values of a CPU tensor to overwrite in place: `Some` when its buffer is not shared and
/// its elements are contiguous (a gradient handed to a backward step usually is).
pub(crate) fn unique_values_mut(tensor: &mut FlexTensor) -> Option<&mut [f32]> {
    if tensor.dtype() != burn::tensor::DType::F32 {
        return None;
    }
    let (start, end) = tensor.layout().contiguous_offsets()?;
    tensor
        .try_storage_mut::<f32>()
        .and_then(|storage| storage.get_mut(start..end))
}

/// A CPU tensor that owns `values` (no copy).
pub(crate) fn flex(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// A fresh buffer of `len` floats filled by `write`, without zero-filling it first: glibc's
/// `calloc` behind `vec![0.0; len]` clears a reused block (or faults in and clears a fresh
/// one) on the calling thread alone, and the fused ops overwrite every element anyway. Those
/// serial clears, with the copies they replaced, were a sixth of the `tiny` step (perf).
///
/// # Safety
/// `write` must initialise every element of the slice it is given (through it or through
/// its pointer) before it returns.
pub(crate) unsafe fn written(len: usize, write: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut buffer = Vec::with_capacity(len);
    write(&mut buffer.spare_capacity_mut()[..len]);
    // SAFETY: the capacity is `len` and the caller's `write` initialised all of it.
    unsafe { buffer.set_len(len) };
    buffer
}

/// The first element's address of an output slice, for `gemm`.
pub(crate) fn out_ptr(buffer: &mut [MaybeUninit<f32>]) -> *mut f32 {
    buffer.as_mut_ptr().cast::<f32>()
}

/// A constant (never differentiated) autodiff tensor over `tensor`'s buffer.
pub(crate) fn untracked(tensor: FlexTensor) -> FloatTensor<Autodiff<Flex>> {
    FloatTensor::<Autodiff<Flex>>::new(tensor)
}

/// A matrix operand read or written in place: element (i, j) at `ptr + i·row + j·col`.
#[derive(Clone, Copy)]
pub(crate) struct Strided<P> {
    pub ptr: P,
    pub row: isize,
    pub col: isize,
}

impl<P> Strided<P> {
    /// Rows `row` elements apart, columns adjacent.
    pub(crate) fn rows(ptr: P, row: usize) -> Self {
        Self {
            ptr,
            row: row as isize,
            col: 1,
        }
    }

    /// The transpose of [`Strided::rows`]: element (i, j) at `ptr + j·row + i`.
    pub(crate) fn transposed(ptr: P, row: usize) -> Self {
        Self {
            ptr,
            row: 1,
            col: row as isize,
        }
    }
}

/// `dst ← scale · lhs · rhs` (`m × k` times `k × n`), or `dst + scale · lhs · rhs` with
/// `accumulate`.
///
/// # Safety
/// Every element (i, j) within each operand's extent (dst `m × n`, lhs `m × k`, rhs `k × n`)
/// at its strides must lie inside the allocation its pointer came from, and `dst` must not
/// overlap `lhs` or `rhs`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: Strided<*mut f32>,
    accumulate: bool,
    lhs: Strided<*const f32>,
    rhs: Strided<*const f32>,
    scale: f32,
    parallelism: gemm::Parallelism,
) {
    // SAFETY: the caller's contract is gemm's.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.ptr,
            dst.col,
            dst.row,
            accumulate,
            lhs.ptr,
            lhs.col,
            lhs.row,
            rhs.ptr,
            rhs.col,
            rhs.row,
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Below this many multiply-adds one product runs on one thread (burn's CPU backend uses the
/// same threshold): splitting a small product costs more than it saves.
const PARALLEL_MULTIPLY_ADDS: usize = 192 * 192 * 192;

/// Products with fewer rows than this split their columns over the threads themselves.
const SHORT_ROWS: usize = 256;

/// [`matmul`] on all threads when it is large enough. gemm splits a tall product over its
/// threads itself; a short, wide one (the head's 80 rows × 2048 or 65 536 columns) it left
/// mostly to one thread (measured: half of PyTorch's GFLOP/s), so there each thread takes one
/// block of columns.
///
/// # Safety
/// As [`matmul`].
pub(crate) unsafe fn matmul_parallel(
    (m, n, k): (usize, usize, usize),
    dst: Strided<*mut f32>,
    accumulate: bool,
    lhs: Strided<*const f32>,
    rhs: Strided<*const f32>,
    scale: f32,
) {
    let threads = rayon::current_num_threads();
    let size = (m, n, k);
    if m.saturating_mul(n).saturating_mul(k) < PARALLEL_MULTIPLY_ADDS {
        // SAFETY: the caller's contract.
        return unsafe {
            matmul(
                size,
                dst,
                accumulate,
                lhs,
                rhs,
                scale,
                gemm::Parallelism::None,
            )
        };
    }
    if m >= SHORT_ROWS || threads < 2 {
        let parallelism = gemm::Parallelism::Rayon(0);
        // SAFETY: the caller's contract.
        return unsafe { matmul(size, dst, accumulate, lhs, rhs, scale, parallelism) };
    }
    /// The operands, shared by the column tasks: each writes its own columns of `dst` and
    /// only reads the others.
    struct Operands {
        dst: Strided<*mut f32>,
        lhs: Strided<*const f32>,
        rhs: Strided<*const f32>,
    }
    // SAFETY: the tasks write disjoint column blocks of `dst` and read `lhs`, `rhs`, which
    // the caller keeps alive and unaliased by `dst` for the whole call.
    unsafe impl Sync for Operands {}
    let operands = Operands { dst, lhs, rhs };
    let columns = n.div_ceil(threads).next_multiple_of(16);
    (0..n.div_ceil(columns)).into_par_iter().for_each(|block| {
        let Operands { dst, lhs, rhs } = &operands;
        let first = block * columns;
        let width = columns.min(n - first);
        let dst = Strided {
            ptr: dst.ptr.wrapping_offset(first as isize * dst.col),
            ..*dst
        };
        let rhs = Strided {
            ptr: rhs.ptr.wrapping_offset(first as isize * rhs.col),
            ..*rhs
        };
        // SAFETY: columns `first .. first + width` of the caller's `dst` and `rhs` (inside
        // their extents), all rows of `lhs`.
        unsafe {
            matmul(
                (m, width, k),
                dst,
                accumulate,
                *lhs,
                rhs,
                scale,
                gemm::Parallelism::None,
            )
        };
    });
}

/// How `gemm` may use threads inside one task: the tasks themselves run in parallel, so the
/// products run single-threaded unless there are fewer tasks than threads.
pub(crate) fn gemm_parallelism(tasks: usize) -> gemm::Parallelism {
    if tasks >= rayon::current_num_threads() {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(0)
    }
}

/// Runs `f` compiled for the CPU found at run time (AVX2 or AVX-512, through `pulp`): mark the
/// closure `#[inline(always)]` so it is inlined into pulp's `#[target_feature]` entry point,
/// where its loops vectorise and `mul_add` is one FMA instruction (compiled for baseline
/// x86-64 it stays scalar and `mul_add` is a libm call).
pub(crate) fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    struct Run<F>(F);
    impl<R, F: FnOnce() -> R> pulp::WithSimd for Run<F> {
        type Output = R;

        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _simd: S) -> R {
            (self.0)()
        }
    }
    pulp::Arch::new().dispatch(Run(f))
}

/// Lanes of the partial sums below: 16 independent accumulators vectorise (one AVX-512
/// register, two AVX2 ones) where a single running sum is a serial chain. Inlined into
/// [`vectorized`] callers.
const LANES: usize = 16;

#[inline(always)]
pub(crate) fn lane_sum(values: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let mut chunks = values.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (l, v) in lanes.iter_mut().zip(chunk) {
            *l += v;
        }
    }
    lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// `Σ (v − mean)²`.
#[inline(always)]
pub(crate) fn lane_square_sum(values: &[f32], mean: f32) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let mut chunks = values.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (l, v) in lanes.iter_mut().zip(chunk) {
            let d = v - mean;
            *l = d.mul_add(d, *l);
        }
    }
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|v| (v - mean) * (v - mean))
        .sum();
    lanes.iter().sum::<f32>() + tail
}

#[inline(always)]
pub(crate) fn lane_dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let mut a_chunks = a.chunks_exact(LANES);
    let mut b_chunks = b.chunks_exact(LANES);
    for (x, y) in (&mut a_chunks).zip(&mut b_chunks) {
        for ((l, u), v) in lanes.iter_mut().zip(x).zip(y) {
            *l = u.mul_add(*v, *l);
        }
    }
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(u, v)| u * v)
        .sum();
    lanes.iter().sum::<f32>() + tail
}

/// What the CPU ops' tests share (here and in `train`): seeded inputs, host values and their
/// bits, a relative closeness check and a run on a pool of a given size.
#[cfg(test)]
pub(crate) mod test_support {
    use burn::prelude::*;

    /// Trunc-normal values (standard deviation `std`) from `seed`, as a tensor of `shape`.
    pub(crate) fn random<const D: usize>(
        shape: [usize; D],
        seed: u64,
        std: f64,
        device: &Device,
    ) -> Tensor<D> {
        let count = shape.iter().product();
        let values = crate::model::HostInit::new(seed).trunc_normal(count, std);
        crate::model::HostInit::tensor(values, shape, device)
    }

    pub(crate) fn host_values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().iter::<f32>().collect()
    }

    /// The values' bit patterns, for comparisons that must be exact.
    pub(crate) fn bits<const D: usize>(t: Tensor<D>) -> Vec<u32> {
        t.into_data().iter::<f32>().map(f32::to_bits).collect()
    }

    /// `work` on a rayon pool of `threads` threads (the results must not depend on it).
    pub(crate) fn on_threads<R: Send>(threads: usize, work: impl FnOnce() -> R + Send) -> R {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(work)
    }

    /// Every element within `tolerance · (1 + |reference|)`.
    pub(crate) fn assert_close(ours: &[f32], reference: &[f32], tolerance: f32, what: &str) {
        assert_eq!(ours.len(), reference.len(), "{what}: length");
        for (i, (a, b)) in ours.iter().zip(reference).enumerate() {
            assert!(
                (a - b).abs() <= tolerance * (1.0 + b.abs()),
                "{what}[{i}]: {a} vs {b}"
            );
        }
    }
}
