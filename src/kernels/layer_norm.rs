//! LayerNorm over the last dimension, forward and backward (the op around it:
//! `model::fused::layer_norm`): `y = γ ⊙ x̂ + β`, `x̂ = (x − μ)·r`, `r = 1/√(σ² + ε)`.
//!
//! The backward pass, with `dy` given and `g = dy ⊙ γ` (means over the row):
//! `dx = r·(g − mean(g) − x̂·mean(g ⊙ x̂))`, `dγ = Σ_rows dy ⊙ x̂`, `dβ = Σ_rows dy`.
//! The column sums are taken per fixed block of rows and added in block order, so they do
//! not depend on how rayon splits the work.

use super::{lane_dot, lane_square_sum, lane_sum, vectorized, written};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Rows per task and per partial sum of `dγ`, `dβ`.
const ROWS_PER_BLOCK: usize = 64;

/// `y` of the rows of `x` (each `γ.len()` wide), and with `keep` the normalised input `x̂` and
/// each row's `r` for the backward pass.
#[allow(clippy::type_complexity)]
pub fn forward(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    epsilon: f32,
    keep: bool,
) -> (Vec<f32>, Option<(Vec<f32>, Vec<f32>)>) {
    let width = gamma.len();
    assert!(
        width > 0 && beta.len() == width,
        "layer norm: γ and β of one width"
    );
    assert_eq!(x.len() % width, 0, "layer norm: x is not rows of γ's width");
    let rows = x.len() / width;
    let mut inverse_std = vec![0.0f32; rows];
    let block = ROWS_PER_BLOCK * width;
    let mut normalised = Vec::new();
    // SAFETY: the blocks of `y`, `x`, `x̂` and `r` pair up one to one (same rows per block),
    // and `normalise_row` writes every element of its row of `y` and, with `keep`, of `x̂`.
    let y = unsafe {
        written(x.len(), |y| {
            let blocks = y
                .par_chunks_mut(block)
                .zip(x.par_chunks(block))
                .zip(inverse_std.par_chunks_mut(ROWS_PER_BLOCK));
            if keep {
                normalised = written(x.len(), |normalised| {
                    blocks.zip(normalised.par_chunks_mut(block)).for_each(
                        |(((y_b, x_b), r_b), xhat_b)| {
                            vectorized(
                                #[inline(always)]
                                || {
                                    let rows = y_b
                                        .chunks_exact_mut(width)
                                        .zip(x_b.chunks_exact(width))
                                        .zip(xhat_b.chunks_exact_mut(width));
                                    for (((y, x), xhat), r) in rows.zip(r_b.iter_mut()) {
                                        *r = normalise_row(x, y, Some(xhat), gamma, beta, epsilon);
                                    }
                                },
                            )
                        },
                    )
                });
            } else {
                blocks.for_each(|((y_b, x_b), r_b)| {
                    vectorized(
                        #[inline(always)]
                        || {
                            let rows = y_b.chunks_exact_mut(width).zip(x_b.chunks_exact(width));
                            for ((y, x), r) in rows.zip(r_b.iter_mut()) {
                                *r = normalise_row(x, y, None, gamma, beta, epsilon);
                            }
                        },
                    )
                });
            }
        })
    };
    (y, keep.then_some((normalised, inverse_std)))
}

/// `(dx, dγ, dβ)` from `dy`, `x̂`, `r` and `γ`.
pub fn backward(
    grad_y: &[f32],
    normalised: &[f32],
    inverse_std: &[f32],
    gamma: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let width = gamma.len();
    assert!(width > 0, "layer norm: γ is empty");
    assert_eq!(
        grad_y.len(),
        normalised.len(),
        "layer norm: dy and x̂ differ"
    );
    assert_eq!(
        normalised.len(),
        inverse_std.len() * width,
        "layer norm: one r per row"
    );
    let block = ROWS_PER_BLOCK * width;
    let blocks = grad_y.len().div_ceil(block.max(1));
    // Per block: its dγ partial then its dβ partial.
    let mut partials = vec![0.0f32; blocks * 2 * width];
    // SAFETY: the blocks pair up one to one, and `backward_block` writes every element of
    // its block of `dx`.
    let grad_x = unsafe {
        written(grad_y.len(), |grad_x| {
            grad_x
                .par_chunks_mut(block)
                .zip(grad_y.par_chunks(block))
                .zip(normalised.par_chunks(block))
                .zip(inverse_std.par_chunks(ROWS_PER_BLOCK))
                .zip(partials.par_chunks_mut(2 * width))
                .for_each(|((((dx_b, dy_b), xhat_b), r_b), partial)| {
                    vectorized(
                        #[inline(always)]
                        || backward_block(dx_b, dy_b, xhat_b, r_b, partial, gamma),
                    )
                })
        })
    };
    let mut grad_gamma = vec![0.0f32; width];
    let mut grad_beta = vec![0.0f32; width];
    for partial in partials.chunks_exact(2 * width) {
        let (dgamma, dbeta) = partial.split_at(width);
        for (total, v) in grad_gamma.iter_mut().zip(dgamma) {
            *total += v;
        }
        for (total, v) in grad_beta.iter_mut().zip(dbeta) {
            *total += v;
        }
    }
    (grad_x, grad_gamma, grad_beta)
}

/// One row of the forward pass: `y` (and `x̂`), returning `r`.
#[inline(always)]
fn normalise_row(
    x: &[f32],
    y: &mut [MaybeUninit<f32>],
    xhat: Option<&mut [MaybeUninit<f32>]>,
    gamma: &[f32],
    beta: &[f32],
    epsilon: f32,
) -> f32 {
    let width = x.len() as f32;
    let mean = lane_sum(x) / width;
    let variance = lane_square_sum(x, mean) / width;
    let r = 1.0 / (variance + epsilon).sqrt();
    let params = gamma.iter().zip(beta);
    match xhat {
        Some(xhat) => {
            let rows = xhat.iter_mut().zip(y.iter_mut()).zip(x);
            for (((h, y), &v), (&g, &b)) in rows.zip(params) {
                let normalised = (v - mean) * r;
                h.write(normalised);
                y.write(g.mul_add(normalised, b));
            }
        }
        None => {
            for ((y, &v), (&g, &b)) in y.iter_mut().zip(x).zip(params) {
                y.write(g.mul_add((v - mean) * r, b));
            }
        }
    }
    r
}

/// One block of rows of the backward pass: `dx`, and this block's `dγ`, `dβ` partials
/// (`partial` = `[dγ | dβ]`).
#[inline(always)]
fn backward_block(
    dx_b: &mut [MaybeUninit<f32>],
    dy_b: &[f32],
    xhat_b: &[f32],
    r_b: &[f32],
    partial: &mut [f32],
    gamma: &[f32],
) {
    let width = gamma.len();
    let (dgamma, dbeta) = partial.split_at_mut(width);
    let mut g = vec![0.0f32; width];
    let rows = dx_b
        .chunks_exact_mut(width)
        .zip(dy_b.chunks_exact(width))
        .zip(xhat_b.chunks_exact(width));
    for (((dx, dy), xhat), &r) in rows.zip(r_b) {
        for (((g, &d), &gm), ((dg, db), &h)) in g
            .iter_mut()
            .zip(dy)
            .zip(gamma)
            .zip(dgamma.iter_mut().zip(dbeta.iter_mut()).zip(xhat))
        {
            *g = d * gm;
            *dg = d.mul_add(h, *dg);
            *db += d;
        }
        let mean_g = lane_sum(&g) / width as f32;
        let mean_gx = lane_dot(&g, xhat) / width as f32;
        for ((dx, &g), &h) in dx.iter_mut().zip(&g).zip(xhat) {
            dx.write(r * (g - mean_g - h * mean_gx));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::on_threads;

    fn rows(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7 + seed) % 13) as f32 * 0.3 - 1.7)
            .collect()
    }

    /// Small enough for Miri: three rows of 5 (no multiple of the lanes), forward and
    /// backward against the definition.
    #[test]
    fn forward_and_backward_match_the_definition() {
        let (width, count) = (5, 3);
        let (x, dy) = (rows(width * count, 1), rows(width * count, 4));
        let gamma: Vec<f32> = (0..width).map(|i| 0.5 + 0.1 * i as f32).collect();
        let beta: Vec<f32> = (0..width).map(|i| 0.2 - 0.03 * i as f32).collect();
        let (y, saved) = forward(&x, &gamma, &beta, 1e-6, true);
        let Some((xhat, r)) = saved else {
            panic!("kept values missing")
        };
        assert_eq!(r.len(), count, "one r per row");
        let (dx, dgamma, dbeta) = backward(&dy, &xhat, &r, &gamma);
        let mut want_dgamma = vec![0.0f32; width];
        let mut want_dbeta = vec![0.0f32; width];
        for (row, &r_row) in r.iter().enumerate() {
            let span = row * width..(row + 1) * width;
            let (x, dy) = (&x[span.clone()], &dy[span.clone()]);
            let mean = x.iter().sum::<f32>() / width as f32;
            let variance = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / width as f32;
            let inverse = 1.0 / (variance + 1e-6).sqrt();
            let h: Vec<f32> = x.iter().map(|v| (v - mean) * inverse).collect();
            let g: Vec<f32> = dy.iter().zip(&gamma).map(|(d, g)| d * g).collect();
            let mean_g = g.iter().sum::<f32>() / width as f32;
            let mean_gh = g.iter().zip(&h).map(|(g, h)| g * h).sum::<f32>() / width as f32;
            for i in 0..width {
                let at = row * width + i;
                let close = |a: f32, b: f32| (a - b).abs() <= 1e-5 * (1.0 + b.abs());
                assert!(close(xhat[at], h[i]), "x̂[{at}]");
                assert!(close(y[at], gamma[i] * h[i] + beta[i]), "y[{at}]");
                let want_dx = inverse * (g[i] - mean_g - h[i] * mean_gh);
                assert!(close(dx[at], want_dx), "dx[{at}]: {} vs {want_dx}", dx[at]);
                want_dgamma[i] += dy[i] * h[i];
                want_dbeta[i] += dy[i];
            }
            assert!((r_row - inverse).abs() <= 1e-5 * inverse, "r[{row}]");
        }
        for i in 0..width {
            assert!((dgamma[i] - want_dgamma[i]).abs() <= 1e-5, "dγ[{i}]");
            assert!((dbeta[i] - want_dbeta[i]).abs() <= 1e-5, "dβ[{i}]");
        }
        let (unkept, none) = forward(&x, &gamma, &beta, 1e-6, false);
        assert_eq!(unkept, y);
        assert!(none.is_none());
    }

    #[test]
    #[cfg_attr(miri, ignore = "the small case above covers the same code under Miri")]
    fn results_do_not_depend_on_the_thread_count() {
        let x = rows(4 * 50 * 24, 9);
        let gamma: Vec<f32> = (0..24).map(|i| 1.0 + 0.01 * i as f32).collect();
        let beta = vec![0.1f32; 24];
        let dy: Vec<f32> = (0..x.len()).map(|i| ((i * 5) % 13) as f32 * 0.1).collect();
        let run = |threads: usize| {
            on_threads(threads, || {
                let (y, saved) = forward(&x, &gamma, &beta, 1e-6, true);
                let (xhat, r) = saved.unwrap();
                (y, backward(&dy, &xhat, &r, &gamma))
            })
        };
        assert_eq!(run(1), run(4));
    }
}
