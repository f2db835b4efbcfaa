//! Attention, LayerNorm, Linear and the head's weight normalisation as single CPU ops of
//! burn's graph, forward and backward, over the host kernels of `crate::kernels`.
//!
//! burn composes each from several tensor ops, and under autodiff differentiates each: on the
//! CPU backend every one allocates (zero-filled, then copied to an aligned buffer), and the
//! permutes around attention copy the Q, K, V and output tensors once more. Here each op hands
//! its tensors' host buffers to one kernel (`kernels::attention`, `layer_norm`, `linear`,
//! `weight_norm`) and, under autodiff, is one node of burn's graph with a hand-written backward
//! (`Backward`) that calls the kernel's backward pass, so nothing else of the training step
//! changes. This module holds what the ops share: unwrapping a tensor to its CPU buffer and
//! wrapping a buffer back.
//!
//! Only float32 tensors of the CPU backend (`Flex`, with or without autodiff) take this path;
//! every other device or dtype runs burn's own ops, which give the same values up to rounding.
//! The kernels' sums are split into fixed blocks added in block order, and the products are
//! gemm's, as in burn's matmul: a seeded run repeats exactly on the same machine and thread
//! count.

pub mod attention;
pub mod layer_norm;
pub mod linear;
pub mod weight_norm;

use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;

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

/// A constant (never differentiated) autodiff tensor over `tensor`'s buffer.
pub(crate) fn untracked(tensor: FlexTensor) -> FloatTensor<Autodiff<Flex>> {
    FloatTensor::<Autodiff<Flex>>::new(tensor)
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

    pub(crate) use crate::kernels::on_threads;

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
