//! Multi-head softmax attention over host buffers, forward and backward (the op around it:
//! `model::fused::attention`).
//!
//! Input `qkv` is `[B, N, 3·D]` in the reference layout (`[q | k | v]`, each head-major, so
//! head h's query is columns `h·d .. (h+1)·d`); output is `[B, N, D]` with the heads merged,
//! ready for the output projection. Per image and head: `S = scale·Q·Kᵀ`, `P = softmax(S)` by
//! row, `O = P·V`, with Q, K and V read in place through strides. The backward pass, with `dO`
//! given: `dV = Pᵀ·dO`, `dP = dO·Vᵀ`, `dS = P ⊙ (dP − rowsum(P ⊙ dP))`, `dQ = scale·dS·K`,
//! `dK = scale·dSᵀ·Q`, written straight into `dqkv`'s columns.

use super::matmul::{gemm_parallelism, matmul, Strided};
use super::{exp, lane_dot, lane_sum, out_ptr, written};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// The sizes of one call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dims {
    pub batch: usize,
    pub tokens: usize,
    pub heads: usize,
    pub head_dim: usize,
}

impl Dims {
    pub fn dim(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Elements per token in `qkv`: the row stride of Q, K and V.
    pub fn qkv_row(&self) -> usize {
        3 * self.dim()
    }

    pub fn out_shape(&self) -> Vec<usize> {
        vec![self.batch, self.tokens, self.dim()]
    }

    pub fn scale(&self) -> f32 {
        (self.head_dim as f32).powf(-0.5)
    }

    fn qkv_len(&self) -> usize {
        self.batch * self.tokens * self.qkv_row()
    }

    fn probs_len(&self) -> usize {
        self.batch * self.heads * self.tokens * self.tokens
    }
}

/// The forward pass: the output `[B, N, D]` from `qkv` `[B, N, 3·D]` and, when `keep`, `P`
/// `[B, heads, N, N]` (else nothing).
pub fn forward(qkv: &[f32], dims: Dims, keep: bool) -> (Vec<f32>, Vec<f32>) {
    assert_eq!(
        qkv.len(),
        dims.qkv_len(),
        "attention: qkv is not [B, N, 3·D]"
    );
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
            // SAFETY: each operand's extent at its strides stays inside the
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
            // SAFETY: as above; `p` is now read, and head h's columns of the output rows are
            // written (an `[N, head_dim]` block at row stride D inside the image's `[N, D]`).
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

/// The backward pass: `dqkv` `[B, N, 3·D]` from the forward's `qkv` and `P` and the output's
/// gradient `dO` `[B, N, D]`.
pub fn backward(qkv: &[f32], probs: &[f32], grad_out: &[f32], dims: Dims) -> Vec<f32> {
    let Dims { batch, tokens, .. } = dims;
    assert_eq!(
        qkv.len(),
        dims.qkv_len(),
        "attention: qkv is not [B, N, 3·D]"
    );
    assert_eq!(
        probs.len(),
        dims.probs_len(),
        "attention: P is not [B, heads, N, N]"
    );
    assert_eq!(
        grad_out.len(),
        batch * tokens * dims.dim(),
        "attention: dO is not [B, N, D]"
    );
    let len = dims.batch * dims.tokens * dims.qkv_row();
    // SAFETY: each image's task writes dQ, dK and dV's `head_dim` columns of all its N rows
    // for every head, which covers the image's `[N, 3·D]` block of the output.
    unsafe {
        written(len, |grad_qkv| {
            backward_images(grad_qkv, qkv, probs, grad_out, dims)
        })
    }
}

/// [`backward`]'s work, one task per image, into `grad_qkv` (written, never read).
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
                    // SAFETY: as in `forward`; `ds` is this task's own N × N scratch
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
                    // SAFETY: as above: each product writes its own `head_dim` columns of the
                    // image's `[N, 3·D]` block of `dqkv` and reads `ds`, `p`, `qkv` and `dO`.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::on_threads;

    /// Attention by the definition, one image and head at a time: `(O, P, dqkv)`.
    fn naive(qkv: &[f32], dout: &[f32], dims: Dims) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let Dims {
            batch,
            tokens: n,
            heads,
            head_dim: d,
        } = dims;
        let (dim, row) = (dims.dim(), dims.qkv_row());
        let at = |b: usize, t: usize, part: usize, h: usize, c: usize| {
            (b * n + t) * row + part * dim + h * d + c
        };
        let mut out = vec![0.0f32; batch * n * dim];
        let mut probs = vec![0.0f32; dims.probs_len()];
        let mut grad = vec![0.0f32; qkv.len()];
        for b in 0..batch {
            for h in 0..heads {
                let p = &mut probs[(b * heads + h) * n * n..][..n * n];
                for i in 0..n {
                    let s: Vec<f32> = (0..n)
                        .map(|j| {
                            let dot: f32 = (0..d)
                                .map(|c| qkv[at(b, i, 0, h, c)] * qkv[at(b, j, 1, h, c)])
                                .sum();
                            dot * dims.scale()
                        })
                        .collect();
                    let max = s.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                    let total: f32 = s.iter().map(|v| (v - max).exp()).sum();
                    for j in 0..n {
                        p[i * n + j] = (s[j] - max).exp() / total;
                    }
                }
                let o = |t: usize, c: usize| (b * n + t) * dim + h * d + c;
                for i in 0..n {
                    for c in 0..d {
                        out[o(i, c)] = (0..n).map(|j| p[i * n + j] * qkv[at(b, j, 2, h, c)]).sum();
                    }
                }
                // dP = dO Vᵀ, dS = P ⊙ (dP − rowsum(P ⊙ dP)), then dQ, dK, dV.
                for i in 0..n {
                    let dp: Vec<f32> = (0..n)
                        .map(|j| (0..d).map(|c| dout[o(i, c)] * qkv[at(b, j, 2, h, c)]).sum())
                        .collect();
                    let dot: f32 = (0..n).map(|j| p[i * n + j] * dp[j]).sum();
                    for j in 0..n {
                        let ds = p[i * n + j] * (dp[j] - dot) * dims.scale();
                        for c in 0..d {
                            grad[at(b, i, 0, h, c)] += ds * qkv[at(b, j, 1, h, c)];
                            grad[at(b, j, 1, h, c)] += ds * qkv[at(b, i, 0, h, c)];
                            grad[at(b, j, 2, h, c)] += p[i * n + j] * dout[o(i, c)];
                        }
                    }
                }
            }
        }
        (out, probs, grad)
    }

    fn close(ours: &[f32], reference: &[f32], what: &str) {
        assert_eq!(ours.len(), reference.len(), "{what}");
        for (i, (a, b)) in ours.iter().zip(reference).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                "{what}[{i}]: {a} vs {b}"
            );
        }
    }

    /// Small enough for Miri: every strided read of Q, K, V and dO and every column block
    /// written into the merged output and `dqkv`, against the definition.
    #[test]
    fn forward_and_backward_match_the_definition() {
        let dims = Dims {
            batch: 2,
            tokens: 3,
            heads: 2,
            head_dim: 2,
        };
        let qkv: Vec<f32> = (0..dims.qkv_len())
            .map(|i| ((i * 7) % 11) as f32 * 0.2 - 1.0)
            .collect();
        let dout: Vec<f32> = (0..2 * 3 * 4)
            .map(|i| ((i * 5) % 7) as f32 * 0.3 - 0.9)
            .collect();
        let (want_out, want_probs, want_grad) = naive(&qkv, &dout, dims);
        let (out, probs) = forward(&qkv, dims, true);
        close(&out, &want_out, "O");
        close(&probs, &want_probs, "P");
        // Not bit for bit: Miri gives `powf` (the scale) a random last bit on each call.
        let (unkept, none) = forward(&qkv, dims, false);
        close(&unkept, &want_out, "O from the scratch path");
        assert!(none.is_empty());
        close(&backward(&qkv, &probs, &dout, dims), &want_grad, "dqkv");
    }

    #[test]
    #[cfg_attr(miri, ignore = "the small case above covers the same code under Miri")]
    fn results_do_not_depend_on_the_thread_count() {
        let dims = Dims {
            batch: 5,
            tokens: 17,
            heads: 4,
            head_dim: 4,
        };
        let values: Vec<f32> = (0..dims.qkv_len())
            .map(|i| ((i * 13) % 29) as f32 * 0.1 - 1.4)
            .collect();
        let grad_out: Vec<f32> = (0..5 * 17 * 16).map(|i| (i % 7) as f32 - 3.0).collect();
        let run = |threads: usize| {
            on_threads(threads, || {
                let (out, probs) = forward(&values, dims, true);
                let grad = backward(&values, &probs, &grad_out, dims);
                (out, grad)
            })
        };
        assert_eq!(run(1), run(3));
    }
}
