//! LayerNorm over the last dimension as one op: `y = γ ⊙ x̂ + β`, `x̂ = (x − μ)·r`,
//! `r = 1/√(σ² + ε)` with the biased variance, as `torch.nn.LayerNorm`.
//!
//! The backward pass, with `dy` given and `g = dy ⊙ γ` (means over the row):
//! `dx = r·(g − mean(g) − x̂·mean(g ⊙ x̂))`, `dγ = Σ_rows dy ⊙ x̂`, `dβ = Σ_rows dy`.
//! The column sums are taken per fixed block of rows and added in block order, so they do
//! not depend on how rayon splits the work.

use super::{flex, host, lane_dot, lane_square_sum, lane_sum, values, vectorized, written, Host};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::nn::LayerNorm;
use burn::prelude::*;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// ε of every LayerNorm in the model (the official ViT's `partial(nn.LayerNorm, eps=1e-6)`).
pub const LAYER_NORM_EPSILON: f64 = 1e-6;

/// Rows per task and per partial sum of `dγ`, `dβ`.
const ROWS_PER_BLOCK: usize = 64;

/// `layer` (built with [`LAYER_NORM_EPSILON`]) applied to `x`; burn's own op where the fused
/// kernels do not apply.
pub fn layer_norm<const D: usize>(layer: &LayerNorm, x: Tensor<D>) -> Tensor<D> {
    layer_norm_eps(layer, x, LAYER_NORM_EPSILON)
}

/// [`layer_norm`] for a layer built with ε `epsilon` (burn keeps its ε private, so the model
/// passes the one it built the layer with).
pub fn layer_norm_eps<const D: usize>(layer: &LayerNorm, x: Tensor<D>, epsilon: f64) -> Tensor<D> {
    let Some(beta) = layer.beta.as_ref() else {
        return layer.forward(x);
    };
    let shape = x.dims().to_vec();
    let width = shape.last().copied().unwrap_or(0);
    if width == 0 || layer.gamma.val().dims() != [width] {
        return layer.forward(x);
    }
    let (gamma, beta) = (layer.gamma.val(), beta.val());
    let (Some(x_host), Some(gamma), Some(beta)) = (host(&x), host(&gamma), host(&beta)) else {
        return layer.forward(x);
    };
    let epsilon = epsilon as f32;
    match (x_host, gamma, beta) {
        (Host::Plain(x), gamma, beta) => {
            let (gamma, beta) = (gamma.into_buffer(), beta.into_buffer());
            let (y, _) = forward_host(&values(&x), &values(&gamma), &values(&beta), epsilon, false);
            Tensor::from_primitive::<Flex>(flex(y, shape))
        }
        (Host::Tracked(x), Host::Tracked(gamma), Host::Tracked(beta)) => {
            let (x, x_guard) = x.into_parts();
            let (gamma, gamma_guard) = gamma.into_parts();
            let (beta, beta_guard) = beta.into_parts();
            let (y, saved) =
                forward_host(&values(&x), &values(&gamma), &values(&beta), epsilon, true);
            let y = flex(y, shape.clone());
            let out = match LayerNormBackward
                .prepare::<NoCheckpointing>([x_guard, gamma_guard, beta_guard])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => {
                    let (normalised, inverse_std) = saved.unwrap_or_default();
                    let state = Saved {
                        normalised: flex(normalised, shape),
                        inverse_std,
                        gamma,
                    };
                    prep.finish(state, y)
                }
                OpsKind::UnTracked(prep) => prep.finish(y),
            };
            Tensor::from_primitive::<Autodiff<Flex>>(out)
        }
        // An autodiff input with plain parameters (or the reverse) does not occur in the
        // model; burn's op handles it.
        _ => layer.forward(x),
    }
}

/// `y`, and with `keep` the normalised input `x̂` and each row's `r` for the backward pass.
#[allow(clippy::type_complexity)]
fn forward_host(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    epsilon: f32,
    keep: bool,
) -> (Vec<f32>, Option<(Vec<f32>, Vec<f32>)>) {
    let width = gamma.len();
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
fn backward_host(
    grad_y: &[f32],
    normalised: &[f32],
    inverse_std: &[f32],
    gamma: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let width = gamma.len();
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

/// What the backward pass needs from the forward one.
#[derive(Clone, Debug)]
struct Saved {
    normalised: FlexTensor,
    inverse_std: Vec<f32>,
    gamma: FlexTensor,
}

#[derive(Debug)]
struct LayerNormBackward;

impl Backward<Flex, 3> for LayerNormBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let saved = ops.state;
        let grad_y = grads.consume::<Flex>(&ops.node);
        let shape = saved.normalised.layout().shape().to_vec();
        let (dx, dgamma, dbeta) = backward_host(
            &values(&grad_y),
            &values(&saved.normalised),
            &saved.inverse_std,
            &values(&saved.gamma),
        );
        let width = dgamma.len();
        let [x, gamma, beta] = ops.parents;
        if let Some(x) = x {
            grads.register::<Flex>(x.id, flex(dx, shape));
        }
        if let Some(gamma) = gamma {
            grads.register::<Flex>(gamma.id, flex(dgamma, vec![width]));
        }
        if let Some(beta) = beta {
            grads.register::<Flex>(beta.id, flex(dbeta, vec![width]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fused::test_support::{assert_close, host_values, on_threads};
    use burn::module::Param;
    use burn::nn::LayerNormConfig;

    fn layer(width: usize, device: &Device) -> LayerNorm {
        let mut layer = LayerNormConfig::new(width)
            .with_epsilon(LAYER_NORM_EPSILON)
            .init(device);
        let gamma: Vec<f32> = (0..width).map(|i| 0.5 + 0.1 * i as f32).collect();
        let beta: Vec<f32> = (0..width).map(|i| 0.2 - 0.03 * i as f32).collect();
        layer.gamma =
            Param::from_tensor(Tensor::from_data(TensorData::new(gamma, [width]), device));
        layer.beta = Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(beta, [width]),
            device,
        )));
        layer
    }

    fn input(shape: [usize; 3]) -> TensorData {
        let mut init = crate::model::HostInit::new(9);
        let mut values = init.trunc_normal(shape.iter().product(), 2.0);
        // A row far from zero: the mean must be taken out before squaring.
        for v in values.iter_mut().take(shape[2]) {
            *v += 300.0;
        }
        TensorData::new(values, shape)
    }

    #[test]
    fn forward_matches_burns_layer_norm() {
        let device = Device::flex();
        let layer = layer(19, &device);
        let x = Tensor::<3>::from_data(input([3, 70, 19]), &device);
        let ours = host_values(layer_norm(&layer, x.clone()));
        let reference = host_values(layer.forward(x));
        assert_close(&ours, &reference, 2e-5, "y");
    }

    #[test]
    fn gradients_match_burns_autodiff() {
        let device = Device::flex().autodiff();
        // 150 rows of 21: three row blocks, the last one partial.
        let data = input([2, 75, 21]);
        let upstream: Vec<f32> = (0..2 * 75 * 21)
            .map(|i| ((i * 7) % 11) as f32 - 5.0)
            .collect();
        let upstream = Tensor::<3>::from_data(TensorData::new(upstream, [2, 75, 21]), &device);
        let run = |fused: bool| {
            let layer = layer(21, &device);
            let x = Tensor::<3>::from_data(data.clone(), &device).require_grad();
            let y = if fused {
                layer_norm(&layer, x.clone())
            } else {
                layer.forward(x.clone())
            };
            let grads = (y.clone() * upstream.clone()).sum().backward();
            let grad = |t: Tensor<1>| t.grad(&grads).map(host_values).unwrap_or_default();
            let beta = layer
                .beta
                .as_ref()
                .map(|b| grad(b.val()))
                .unwrap_or_default();
            (
                host_values(y),
                x.grad(&grads).map(host_values).unwrap_or_default(),
                grad(layer.gamma.val()),
                beta,
            )
        };
        let (y, dx, dgamma, dbeta) = run(true);
        let (y_ref, dx_ref, dgamma_ref, dbeta_ref) = run(false);
        assert_close(&y, &y_ref, 2e-5, "y");
        assert_close(&dx, &dx_ref, 2e-4, "dx");
        assert_close(&dgamma, &dgamma_ref, 2e-5, "dgamma");
        assert_close(&dbeta, &dbeta_ref, 1e-6, "dbeta");
        assert_eq!(dgamma.len(), 21);
        assert!(dx.iter().any(|g| g.abs() > 1e-2), "a gradient flows");
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let data = input([4, 50, 24]);
        let x: Vec<f32> = data.iter::<f32>().collect();
        let gamma: Vec<f32> = (0..24).map(|i| 1.0 + 0.01 * i as f32).collect();
        let beta = vec![0.1f32; 24];
        let dy: Vec<f32> = (0..x.len()).map(|i| ((i * 5) % 13) as f32 * 0.1).collect();
        let run = |threads: usize| {
            on_threads(threads, || {
                let (y, saved) = forward_host(&x, &gamma, &beta, 1e-6, true);
                let (xhat, r) = saved.unwrap();
                (y, backward_host(&dy, &xhat, &r, &gamma))
            })
        };
        assert_eq!(run(1), run(4));
    }
}
