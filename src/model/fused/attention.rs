//! Multi-head softmax attention from the QKV projection's output, as one op.
//!
//! Input `qkv` is `[B, N, 3·D]` in the reference layout (`[q | k | v]`, each head-major, so
//! head h's query is columns `h·d .. (h+1)·d`); output is `[B, N, D]` with the heads merged,
//! ready for the output projection. Per image and head: `S = scale·Q·Kᵀ`, `P = softmax(S)` by
//! row, `O = P·V`. The backward pass, with `dO` given:
//! `dV = Pᵀ·dO`, `dP = dO·Vᵀ`, `dS = P ⊙ (dP − rowsum(P ⊙ dP))`, `dQ = scale·dS·K`,
//! `dK = scale·dSᵀ·Q`, written straight into `dqkv`'s columns. `P` is kept from the forward
//! pass (the decomposed graph keeps it too).

use super::{
    flex, gemm_parallelism, host, lane_dot, lane_sum, matmul, out_ptr, untracked, values, written,
    Host, Strided,
};
use crate::model::activation::exp;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// The sizes of one call.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Dims {
    batch: usize,
    tokens: usize,
    heads: usize,
    head_dim: usize,
}

impl Dims {
    fn dim(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Elements per token in `qkv`: the row stride of Q, K and V.
    fn qkv_row(&self) -> usize {
        3 * self.dim()
    }

    fn out_shape(&self) -> Vec<usize> {
        vec![self.batch, self.tokens, self.dim()]
    }

    fn scale(&self) -> f32 {
        (self.head_dim as f32).powf(-0.5)
    }
}

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
            let (out, probs) = forward_host(&values(&qkv), dims, true);
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
            let (out, _) = forward_host(&values(&qkv), dims, false);
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
    let (out, probs) = forward_host(&values(&qkv), dims, true);
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

/// The forward pass over host buffers: the output `[B, N, D]` and, when `keep`, `P` (else
/// nothing).
fn forward_host(qkv: &[f32], dims: Dims, keep: bool) -> (Vec<f32>, Vec<f32>) {
    let Dims {
        batch,
        tokens: n,
        heads,
        head_dim,
    } = dims;
    let (dim, row) = (dims.dim(), dims.qkv_row());
    let scale = dims.scale();
    let parallelism = gemm_parallelism(batch);
    // Kept: one [heads, N, N] block per image. Not kept: one N × N scratch per task.
    let image = |(out_b, qkv_b): (&mut [MaybeUninit<f32>], &[f32]),
                 probs_b: &mut [MaybeUninit<f32>]| {
        for h in 0..heads {
            let p = if keep {
                &mut probs_b[h * n * n..(h + 1) * n * n]
            } else {
                &mut probs_b[..]
            };
            let q = qkv_b[h * head_dim..].as_ptr();
            let k = qkv_b[dim + h * head_dim..].as_ptr();
            let v = qkv_b[2 * dim + h * head_dim..].as_ptr();
            // SAFETY (both products): each operand's extent at its strides stays inside the
            // slice its pointer came from (one image's rows of `qkv` or `out`, or an N × N
            // block), and the destination is neither input. gemm writes all of `p` (not
            // reading it), so `p` is initialised when it is read as floats.
            let p = unsafe {
                // S = scale · Q Kᵀ
                let s = Strided::rows(out_ptr(p), n);
                let (q, kt) = (Strided::rows(q, row), Strided::transposed(k, row));
                matmul((n, n, head_dim), s, false, q, kt, scale, parallelism);
                p.assume_init_mut()
            };
            softmax_rows(p, n);
            unsafe {
                // O_h = P V, into head h's columns of the merged output.
                let o = Strided::rows(out_ptr(&mut out_b[h * head_dim..]), dim);
                let (p, v) = (Strided::rows(p.as_ptr(), n), Strided::rows(v, row));
                matmul((n, head_dim, n), o, false, p, v, 1.0, parallelism);
            }
        }
    };
    let mut probs = Vec::new();
    // SAFETY: each image's task writes head h's `head_dim` columns of all its N output rows
    // for every h, which covers the image's `[N, D]` block; with `keep` it writes each
    // head's N × N block of `probs` (`image` above).
    let out = unsafe {
        written(batch * n * dim, |out| {
            let images = out
                .par_chunks_mut(n * dim)
                .zip(qkv.par_chunks(n * dims.qkv_row()));
            if keep {
                probs = written(batch * heads * n * n, |probs| {
                    images
                        .zip(probs.par_chunks_mut(heads * n * n))
                        .for_each(|(pair, probs_b)| image(pair, probs_b))
                });
            } else {
                images.for_each_init(
                    || vec![MaybeUninit::uninit(); n * n],
                    |scratch, pair| image(pair, scratch),
                );
            }
        })
    };
    (out, probs)
}

/// The backward pass over host buffers: `dqkv` `[B, N, 3·D]`.
fn backward_host(qkv: &[f32], probs: &[f32], grad_out: &[f32], dims: Dims) -> Vec<f32> {
    let len = dims.batch * dims.tokens * dims.qkv_row();
    // SAFETY: each image's task writes dQ, dK and dV's `head_dim` columns of all its N rows
    // for every head, which covers the image's `[N, 3·D]` block of the output.
    unsafe {
        written(len, |grad_qkv| {
            backward_images(grad_qkv, qkv, probs, grad_out, dims)
        })
    }
}

/// [`backward_host`]'s work, one task per image, into `grad_qkv` (written, never read).
fn backward_images(
    grad_qkv: &mut [MaybeUninit<f32>],
    qkv: &[f32],
    probs: &[f32],
    grad_out: &[f32],
    dims: Dims,
) {
    let Dims {
        batch,
        tokens: n,
        heads,
        head_dim,
    } = dims;
    let (dim, row) = (dims.dim(), dims.qkv_row());
    let scale = dims.scale();
    let parallelism = gemm_parallelism(batch);
    grad_qkv
        .par_chunks_mut(n * dims.qkv_row())
        .zip(qkv.par_chunks(n * dims.qkv_row()))
        .zip(probs.par_chunks(heads * n * n))
        .zip(grad_out.par_chunks(n * dim))
        .for_each_init(
            || vec![0.0f32; n * n],
            |ds, (((dqkv_b, qkv_b), probs_b), dout_b)| {
                for h in 0..heads {
                    let p = &probs_b[h * n * n..(h + 1) * n * n];
                    let col = h * head_dim;
                    let q = qkv_b[col..].as_ptr();
                    let k = qkv_b[dim + col..].as_ptr();
                    let v = qkv_b[2 * dim + col..].as_ptr();
                    let dout = dout_b[col..].as_ptr();
                    // SAFETY: as in `forward_host`; `ds` is this task's own N × N scratch
                    // and the three destinations are disjoint column blocks of `dqkv_b`.
                    unsafe {
                        // dP = dO Vᵀ
                        let dp = Strided::rows(ds.as_mut_ptr(), n);
                        let (dout, vt) = (Strided::rows(dout, dim), Strided::transposed(v, row));
                        matmul((n, n, head_dim), dp, false, dout, vt, 1.0, parallelism);
                    }
                    softmax_backward_rows(p, ds, n);
                    let mut grad =
                        |offset: usize| Strided::rows(out_ptr(&mut dqkv_b[offset..]), row);
                    let (ds_m, ds_t) = (
                        Strided::rows(ds.as_ptr(), n),
                        Strided::transposed(ds.as_ptr(), n),
                    );
                    let pt = Strided::transposed(p.as_ptr(), n);
                    let (q, k, dout) = (
                        Strided::rows(q, row),
                        Strided::rows(k, row),
                        Strided::rows(dout, dim),
                    );
                    let size = (n, head_dim, n);
                    unsafe {
                        // dQ = scale · dS K, dK = scale · dSᵀ Q, dV = Pᵀ dO
                        matmul(size, grad(col), false, ds_m, k, scale, parallelism);
                        matmul(size, grad(dim + col), false, ds_t, q, scale, parallelism);
                        matmul(size, grad(2 * dim + col), false, pt, dout, 1.0, parallelism);
                    }
                }
            },
        );
}

/// Row-wise softmax of an `n`-wide matrix, in place.
fn softmax_rows(values: &mut [f32], n: usize) {
    pulp::Arch::new().dispatch(SoftmaxRows { values, n });
}

/// `dp ← p ⊙ (dp − rowsum(p ⊙ dp))`, row by row: the softmax's backward.
fn softmax_backward_rows(p: &[f32], dp: &mut [f32], n: usize) {
    pulp::Arch::new().dispatch(SoftmaxBackwardRows { p, dp, n });
}

// As in `activation`: the loops sit in `with_simd` so they are compiled for the CPU found at
// run time (AVX2 or AVX-512) and vectorised there.
struct SoftmaxRows<'a> {
    values: &'a mut [f32],
    n: usize,
}

impl pulp::WithSimd for SoftmaxRows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        for row in self.values.chunks_exact_mut(self.n) {
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            for v in row.iter_mut() {
                *v = exp(*v - max);
            }
            let inverse = 1.0 / lane_sum(row);
            for v in row.iter_mut() {
                *v *= inverse;
            }
        }
    }
}

struct SoftmaxBackwardRows<'a> {
    p: &'a [f32],
    dp: &'a mut [f32],
    n: usize,
}

impl pulp::WithSimd for SoftmaxBackwardRows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let rows = self.p.chunks_exact(self.n);
        for (p, dp) in rows.zip(self.dp.chunks_exact_mut(self.n)) {
            let dot = lane_dot(p, dp);
            for (d, &pv) in dp.iter_mut().zip(p) {
                *d = pv * (*d - dot);
            }
        }
    }
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
            let grad = backward_host(&values(&qkv), &values(&probs), &values(&grad_out), dims);
            let shape = vec![dims.batch, dims.tokens, dims.qkv_row()];
            grads.register::<Flex>(parent.id, flex(grad, shape));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fused::test_support::{self, assert_close, host_values, on_threads};

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

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let device = Device::flex();
        let qkv = random([5, 17, 48], 4, &device);
        let values = host_values(qkv);
        let dims = Dims {
            batch: 5,
            tokens: 17,
            heads: 4,
            head_dim: 4,
        };
        let grad_out: Vec<f32> = (0..5 * 17 * 16).map(|i| (i % 7) as f32 - 3.0).collect();
        let run = |threads: usize| {
            on_threads(threads, || {
                let (out, probs) = forward_host(&values, dims, true);
                let grad = backward_host(&values, &probs, &grad_out, dims);
                (out, grad)
            })
        };
        assert_eq!(run(1), run(3));
    }
}
