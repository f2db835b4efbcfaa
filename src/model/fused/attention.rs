//! Multi-head softmax attention from the QKV projection's output, as one op of burn's graph
//! (the kernel, forward and backward, is `kernels::attention`).
//!
//! Input `qkv` is `[B, N, 3·D]` in the reference layout; output is `[B, N, D]` with the heads
//! merged, ready for the output projection. `P = softmax(scale·Q·Kᵀ)` is kept from the forward
//! pass for the backward one (the decomposed graph keeps it too).

use super::{flex, host, untracked, values, Host};
use crate::kernels::attention::{self as kernel, Dims};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::activation::softmax;

/// Attention of `qkv` (`[B, N, 3·D]`) with `heads` heads: the heads-merged output `[B, N, D]`
/// and the softmax probabilities `[B, heads, N, N]` (never differentiated: a view for the
/// attention maps).
pub fn attention_with_probabilities(qkv: Tensor<3>, heads: usize) -> (Tensor<3>, Tensor<4>) {
    let Some(dims) = dims_of(&qkv, heads) else {
        return decomposed_with_probabilities(qkv, heads);
    };
    let probs_shape = vec![dims.batch, heads, dims.tokens, dims.tokens];
    match host(&qkv) {
        Some(Host::Plain(qkv)) => {
            let (out, probs) = kernel::forward(&values(&qkv), dims, true);
            (
                Tensor::from_primitive::<Flex>(flex(out, dims.out_shape())),
                Tensor::from_primitive::<Flex>(flex(probs, probs_shape)),
            )
        }
        Some(Host::Tracked(qkv)) => {
            let (out, probs) = tracked(qkv, dims);
            (
                Tensor::from_primitive::<Autodiff<Flex>>(out),
                Tensor::from_primitive::<Autodiff<Flex>>(untracked(probs)),
            )
        }
        None => decomposed_with_probabilities(qkv, heads),
    }
}

/// As [`attention_with_probabilities`], the output alone: without autodiff the probabilities
/// live in one N × N scratch per task instead of a `[B, heads, N, N]` tensor.
pub fn attention(qkv: Tensor<3>, heads: usize) -> Tensor<3> {
    let Some(dims) = dims_of(&qkv, heads) else {
        return decomposed(qkv, heads);
    };
    match host(&qkv) {
        Some(Host::Plain(qkv)) => {
            let (out, _) = kernel::forward(&values(&qkv), dims, false);
            Tensor::from_primitive::<Flex>(flex(out, dims.out_shape()))
        }
        Some(Host::Tracked(qkv)) => Tensor::from_primitive::<Autodiff<Flex>>(tracked(qkv, dims).0),
        None => decomposed(qkv, heads),
    }
}

/// The sizes of `qkv` with `heads` heads, `None` where they do not fit the layout.
fn dims_of(qkv: &Tensor<3>, heads: usize) -> Option<Dims> {
    let [batch, tokens, width] = qkv.dims();
    let dims = Dims {
        batch,
        tokens,
        heads,
        head_dim: width / (3 * heads.max(1)),
    };
    (heads > 0 && tokens > 0 && dims.head_dim > 0 && width == dims.qkv_row()).then_some(dims)
}

/// The op under autodiff: its output node and `P` (which the backward pass keeps).
fn tracked(
    qkv: FloatTensor<Autodiff<Flex>>,
    dims: Dims,
) -> (FloatTensor<Autodiff<Flex>>, FlexTensor) {
    let (qkv, guard) = qkv.into_parts();
    let (out, probs) = kernel::forward(&values(&qkv), dims, true);
    let probs = flex(
        probs,
        vec![dims.batch, dims.heads, dims.tokens, dims.tokens],
    );
    let out = flex(out, dims.out_shape());
    let out = match AttentionBackward
        .prepare::<NoCheckpointing>([guard])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((qkv, probs.clone(), dims), out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    (out, probs)
}

/// burn's fused attention, for other devices and dtypes.
fn decomposed(qkv: Tensor<3>, heads: usize) -> Tensor<3> {
    use burn::tensor::module::attention;
    use burn::tensor::ops::AttentionModuleOptions;
    let (parts, [batch, tokens, dim], scale) = split_heads(qkv, heads);
    let [q, k, v] = parts;
    let options = AttentionModuleOptions {
        scale: Some(scale),
        softcap: None,
        is_causal: false,
    };
    attention(q, k, v, None, None, options)
        .swap_dims(1, 2)
        .reshape([batch, tokens, dim])
}

/// burn's ops with the softmax materialised, for other devices and dtypes.
fn decomposed_with_probabilities(qkv: Tensor<3>, heads: usize) -> (Tensor<3>, Tensor<4>) {
    let (parts, [batch, tokens, dim], scale) = split_heads(qkv, heads);
    let [q, k, v] = parts;
    let probs = softmax(q.matmul(k.swap_dims(2, 3)).mul_scalar(scale), 3);
    let out = probs.clone().matmul(v);
    (out.swap_dims(1, 2).reshape([batch, tokens, dim]), probs)
}

/// Q, K, V as `[B, heads, N, d]` each, the output's `[B, N, D]` and the scale `d^-½`.
fn split_heads(qkv: Tensor<3>, heads: usize) -> ([Tensor<4>; 3], [usize; 3], f64) {
    let [batch, tokens, width] = qkv.dims();
    let dim = width / 3;
    let head_dim = dim / heads.max(1);
    let qkv = qkv
        .reshape([batch, tokens, 3, heads, head_dim])
        .permute([2, 0, 3, 1, 4]);
    let part = |i: usize| {
        qkv.clone()
            .slice(s![i..i + 1])
            .reshape([batch, heads, tokens, head_dim])
    };
    (
        [part(0), part(1), part(2)],
        [batch, tokens, dim],
        (head_dim as f64).powf(-0.5),
    )
}

/// The backward step registered in burn's autodiff graph.
#[derive(Debug)]
struct AttentionBackward;

impl Backward<Flex, 1> for AttentionBackward {
    /// The forward's `qkv` and `P` (shared buffers, not copies) and its sizes.
    type State = (FlexTensor, FlexTensor, Dims);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (qkv, probs, dims) = ops.state;
        let grad_out = grads.consume::<Flex>(&ops.node);
        let [parent] = ops.parents;
        if let Some(parent) = parent {
            let grad = kernel::backward(&values(&qkv), &values(&probs), &values(&grad_out), dims);
            let shape = vec![dims.batch, dims.tokens, dims.qkv_row()];
            grads.register::<Flex>(parent.id, flex(grad, shape));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fused::test_support::{self, assert_close, host_values};

    fn random(shape: [usize; 3], seed: u64, device: &Device) -> Tensor<3> {
        test_support::random(shape, seed, 1.0, device)
    }

    #[test]
    fn forward_and_probabilities_match_burns_ops() {
        let device = Device::flex();
        // Odd sizes: 13 tokens (no multiple of any SIMD width), 3 heads of 5.
        let qkv = random([4, 13, 45], 1, &device);
        let (reference, reference_probs) = decomposed_with_probabilities(qkv.clone(), 3);
        let (ours, probs) = attention_with_probabilities(qkv.clone(), 3);
        assert_close(
            &host_values(ours),
            &host_values(reference.clone()),
            2e-6,
            "out",
        );
        assert_eq!(probs.dims(), [4, 3, 13, 13]);
        assert_close(
            &host_values(probs),
            &host_values(reference_probs),
            2e-6,
            "P",
        );
        let unkept = attention(qkv.clone(), 3);
        assert_close(
            &host_values(unkept),
            &host_values(reference.clone()),
            2e-6,
            "out",
        );
        // burn's fused kernel (the other devices' path without probabilities) agrees too.
        let burns = decomposed(qkv, 3);
        assert_close(&host_values(burns), &host_values(reference), 2e-6, "burn");
    }

    #[test]
    fn gradient_matches_burns_autodiff() {
        let device = Device::flex().autodiff();
        let data = random([3, 11, 36], 2, &Device::flex()).into_data();
        let upstream = random([3, 11, 12], 3, &device);
        let run = |fused: bool| {
            let qkv = Tensor::<3>::from_data(data.clone(), &device).require_grad();
            let (out, probs) = if fused {
                attention_with_probabilities(qkv.clone(), 2)
            } else {
                decomposed_with_probabilities(qkv.clone(), 2)
            };
            assert_eq!(probs.dims(), [3, 2, 11, 11]);
            let grads = (out.clone() * upstream.clone()).sum().backward();
            let grad = qkv.grad(&grads).map(host_values).unwrap_or_default();
            (host_values(out), grad)
        };
        let (out, grad) = run(true);
        let (reference_out, reference_grad) = run(false);
        assert_close(&out, &reference_out, 2e-6, "out");
        assert_close(&grad, &reference_grad, 1e-5, "dqkv");
        assert!(grad.iter().any(|g| g.abs() > 1e-3), "a gradient flows");
    }
}
