//! DINOv2's Sinkhorn-Knopp centering of the teacher (`sinkhorn_knopp_teacher` in dinov2's
//! `loss/dino_clstoken_loss.py`): instead of subtracting a running center, the teacher's
//! probabilities are rescaled so that over the batch every prototype gets the same mass 1/K
//! while every row still sums to 1. One prototype cannot win for every image, whatever the
//! history; nothing is carried from step to step.
//!
//! Burn's tensor ops, so the CPU backend and wgpu run the same code; the teacher side never
//! needs a gradient.

use burn::prelude::*;

/// exp overflows f32 above this; the official code would turn such a batch into inf / NaN.
const EXP_SAFE: f32 = 80.0;

/// The smallest positive (subnormal) f32: a sum that is exactly 0 (every entry underflowed)
/// divides into zeros instead of 0 / 0. Larger sums, subnormal ones included, are untouched.
const TINY: f32 = 1e-45;

/// The teacher's probabilities `[N, K]` (rows sum to 1) for raw teacher logits `[N, K]` (both
/// global crops, N = 2B, stacked as dinov2 does) at temperature `teacher_temp`.
///
/// The official order of operations: Q = exp(t/τ), divided by its total, then `iterations`
/// times: each prototype's column to 1/K, each row to 1/N; finally × N. In the official
/// layout Q is K × N; here it stays N × K, so its "rows" are our columns.
///
/// Where exp(t/τ) would overflow (t/τ above 80, e.g. τ < 0.0125 with cosine logits), a common
/// shift is subtracted first; the total's division cancels it exactly. Below that it is 0 and
/// the result is the official one (to the summation order; tests/it/recipe_parity.rs).
pub fn sinkhorn_knopp(
    teacher_logits: Tensor<2>,
    teacher_temp: f64,
    iterations: usize,
) -> Tensor<2> {
    let [rows, prototypes] = teacher_logits.dims();
    let scaled = teacher_logits.div_scalar(teacher_temp);
    let shift = scaled
        .clone()
        .max()
        .sub_scalar(EXP_SAFE)
        .clamp_min(0.0)
        .reshape([1, 1]);
    let q = (scaled - shift).exp();
    let total = q.clone().sum().reshape([1, 1]);
    let mut q = q / total;
    for _ in 0..iterations {
        // Each prototype's total weight to 1/K.
        let per_prototype = q.clone().sum_dim(0).clamp_min(TINY);
        q = (q / per_prototype).div_scalar(prototypes as f64);
        // Each sample's total weight to 1/N.
        let per_sample = q.clone().sum_dim(1).clamp_min(TINY);
        q = (q / per_sample).div_scalar(rows as f64);
    }
    // The rows must sum to 1 so each is a distribution.
    q.mul_scalar(rows as f64)
}

/// ln q with 0 → ln(smallest normal f32), so q·ln q is 0 where q underflowed (h(Pt) of the
/// probabilities the loss used).
pub fn log_probs(probs: Tensor<2>) -> Tensor<2> {
    probs.clamp_min(f32::MIN_POSITIVE).log()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(t: Tensor<2>) -> Vec<f32> {
        t.into_data_as::<f32>().as_slice::<f32>().unwrap().to_vec()
    }

    #[test]
    fn rows_are_distributions_and_prototypes_share_the_mass() {
        let device = Device::flex();
        let (rows, k) = (8, 5);
        // Every row prefers prototype 0: a softmax would give it most of the batch's mass.
        let mut logits = vec![0f32; rows * k];
        for r in 0..rows {
            logits[r * k] = 1.0;
            logits[r * k + 1 + r % 4] = 0.5;
        }
        let t = Tensor::<2>::from_data(TensorData::new(logits, [rows, k]), &device);
        let q = host(sinkhorn_knopp(t, 0.1, 50));
        for r in 0..rows {
            let sum: f32 = q[r * k..(r + 1) * k].iter().sum();
            assert!((sum - 1.0).abs() < 1e-5, "row {r}: {sum}");
        }
        // After enough iterations each prototype holds N/K of the (×N) mass.
        for c in 0..k {
            let mass: f32 = (0..rows).map(|r| q[r * k + c]).sum();
            assert!(
                (mass - rows as f32 / k as f32).abs() < 1e-3,
                "prototype {c}: {mass}"
            );
        }
    }

    #[test]
    fn a_temperature_that_overflows_exp_stays_finite() {
        let device = Device::flex();
        let t = Tensor::<2>::from_data(
            TensorData::new(vec![1.0f32, -1.0, 0.5, -0.5, 0.9, 0.0], [3, 2]),
            &device,
        );
        // 1/0.001 = 1000: exp(1000) is inf in f32; the official code gives NaN here.
        let q = host(sinkhorn_knopp(t, 0.001, 3));
        assert!(q.iter().all(|v| v.is_finite()), "{q:?}");
        let logs = host(log_probs(Tensor::<2>::from_data(
            TensorData::new(vec![0.0f32, 1.0], [1, 2]),
            &device,
        )));
        assert!(logs[0].is_finite() && logs[1] == 0.0);
    }
}
