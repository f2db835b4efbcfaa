//! The head's weight normalisation over host buffers, forward and backward (the op around it:
//! `model::fused::weight_norm`).
//!
//! For the paper head (K = 65 536, 256 inputs: 16.8 M weights) burn's five single-threaded
//! passes ran in the teacher's and the student's forward pass and again in the backward pass,
//! every step. Here the forward pass is one parallel pass per row block that keeps each row's
//! `‖v‖`, and the backward pass is another, with `s = g/‖v‖` and `v̂ = v/‖v‖`:
//! `dv = s·(dW − (dW·v̂)·v̂)`, `dg = dW·v̂`.

use super::{lane_dot, lane_square_sum, vectorized, written};
use rayon::prelude::*;

/// Rows per parallel task.
pub const ROWS_PER_BLOCK: usize = 256;

/// `(W, ‖v‖ per row)` of `v`'s rows of `width` and one `g` per row.
pub fn forward(v: &[f32], g: &[f32], width: usize) -> (Vec<f32>, Vec<f32>) {
    assert!(width > 0, "weight norm: rows are empty");
    assert_eq!(v.len(), g.len() * width, "weight norm: one g per row of v");
    let mut norms = vec![0.0f32; g.len()];
    let block = ROWS_PER_BLOCK * width;
    // SAFETY: the blocks of `W`, `v`, `g` and the norms pair up one to one (same rows per
    // block), and each row of a block's `W` is written in full.
    let w = unsafe {
        written(v.len(), |w| {
            w.par_chunks_mut(block)
                .zip(v.par_chunks(block))
                .zip(g.par_chunks(ROWS_PER_BLOCK))
                .zip(norms.par_chunks_mut(ROWS_PER_BLOCK))
                .for_each(|(((w_b, v_b), g_b), norms_b)| {
                    vectorized(
                        #[inline(always)]
                        || {
                            let rows = w_b.chunks_exact_mut(width).zip(v_b.chunks_exact(width));
                            for ((w, v), (&g, norm)) in rows.zip(g_b.iter().zip(norms_b)) {
                                *norm = lane_square_sum(v, 0.0).sqrt();
                                let scale = g / *norm;
                                for (w, &v) in w.iter_mut().zip(v) {
                                    w.write(v * scale);
                                }
                            }
                        },
                    )
                })
        })
    };
    (w, norms)
}

/// `(dv, dg)` from `dW`, `v`, `g` and the rows' norms.
pub fn backward(
    grad_w: &[f32],
    v: &[f32],
    g: &[f32],
    norms: &[f32],
    width: usize,
) -> (Vec<f32>, Vec<f32>) {
    assert!(width > 0, "weight norm: rows are empty");
    assert_eq!(v.len(), g.len() * width, "weight norm: one g per row of v");
    assert!(
        grad_w.len() == v.len() && norms.len() == g.len(),
        "weight norm: dW or ‖v‖"
    );
    let mut grad_g = vec![0.0f32; g.len()];
    let block = ROWS_PER_BLOCK * width;
    // SAFETY: as in `forward`; each row of a block's `dv` is written in full.
    let grad_v = unsafe {
        written(v.len(), |dv| {
            dv.par_chunks_mut(block)
                .zip(grad_w.par_chunks(block).zip(v.par_chunks(block)))
                .zip(
                    g.par_chunks(ROWS_PER_BLOCK)
                        .zip(norms.par_chunks(ROWS_PER_BLOCK)),
                )
                .zip(grad_g.par_chunks_mut(ROWS_PER_BLOCK))
                .for_each(|(((dv_b, (dw_b, v_b)), (g_b, norms_b)), dg_b)| {
                    vectorized(
                        #[inline(always)]
                        || {
                            let rows = dv_b
                                .chunks_exact_mut(width)
                                .zip(dw_b.chunks_exact(width).zip(v_b.chunks_exact(width)));
                            let scalars = g_b.iter().zip(norms_b).zip(dg_b.iter_mut());
                            for ((dv, (dw, v)), ((&g, &norm), dg)) in rows.zip(scalars) {
                                let inverse = 1.0 / norm;
                                // dW·v̂, then dv = s·dW − (s·(dW·v̂)/‖v‖)·v
                                let along = lane_dot(dw, v) * inverse;
                                let scale = g * inverse;
                                let radial = scale * along * inverse;
                                *dg = along;
                                for ((dv, &dw), &v) in dv.iter_mut().zip(dw).zip(v) {
                                    dv.write(scale * dw - radial * v);
                                }
                            }
                        },
                    )
                })
        })
    };
    (grad_v, grad_g)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small enough for Miri: three rows of 5 (no multiple of the lanes), against the
    /// definition.
    #[test]
    fn forward_and_backward_match_the_definition() {
        let width = 5;
        let v: Vec<f32> = (0..15).map(|i| ((i * 7) % 11) as f32 * 0.2 - 0.9).collect();
        let g = [1.5f32, 0.5, 2.0];
        let dw: Vec<f32> = (0..15).map(|i| ((i * 3) % 5) as f32 - 2.0).collect();
        let (w, norms) = forward(&v, &g, width);
        let (dv, dg) = backward(&dw, &v, &g, &norms, width);
        let close = |a: f32, b: f32| (a - b).abs() <= 1e-5 * (1.0 + b.abs());
        for (r, &g_r) in g.iter().enumerate() {
            let row = &v[r * width..(r + 1) * width];
            let grad = &dw[r * width..(r + 1) * width];
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!(close(norms[r], norm), "‖v[{r}]‖");
            let along: f32 = grad.iter().zip(row).map(|(d, x)| d * x / norm).sum();
            assert!(close(dg[r], along), "dg[{r}]");
            for i in 0..width {
                assert!(close(w[r * width + i], row[i] * g_r / norm), "W[{r}, {i}]");
                let want = g_r / norm * (grad[i] - along * row[i] / norm);
                assert!(close(dv[r * width + i], want), "dv[{r}, {i}]");
            }
        }
    }
}
