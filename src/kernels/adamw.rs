//! AdamW's update over host buffers: θ, m and v in one pass per parameter (the optimizer
//! around it: `train::optim::ScheduledAdamW`), rounding every element in burn's order.

use super::{vectorized, written};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// burn's AdamW defaults that DINO keeps (β₁, β₂), and PyTorch's ε.
pub const BETA_1: f32 = 0.9;
pub const BETA_2: f32 = 0.999;
pub const EPSILON: f32 = 1e-8;

/// The scalars of one update, each rounded to f32 as burn's tensor ops round them.
#[derive(Clone, Copy, Debug)]
pub struct Coefficients {
    /// `1 − lr·wd`, when the parameter is decayed this step.
    keep: Option<f32>,
    lr: f32,
    /// `1 − β₁ᵗ`, `1 − β₂ᵗ`: the bias corrections.
    correction_1: f32,
    correction_2: f32,
}

impl Coefficients {
    /// Step `time` (from 1) at learning rate `lr`, with `decay` = lr·wd (0: no decay).
    pub fn new(lr: f64, decay: f64, time: usize) -> Self {
        let time = i32::try_from(time).unwrap_or(i32::MAX);
        Self {
            keep: (decay != 0.0).then_some((1.0 - decay) as f32),
            lr: lr as f32,
            correction_1: 1.0 - BETA_1.powi(time),
            correction_2: 1.0 - BETA_2.powi(time),
        }
    }
}

/// Elements per parallel task.
pub const CHUNK_ELEMENTS: usize = 1 << 14;

/// `(θ', m', v')` from `θ`, the (clipped) gradient and the previous moments (none on the first
/// step), per element in the order burn's AdamW and our decay round them:
/// `m' = m·β₁ + g·(1−β₁)`, `v' = v·β₂ + (g·g)·(1−β₂)`,
/// `θ' = θ·keep − ((m'/c₁) / (√(v'/c₂) + ε))·lr`.
pub fn update(
    theta: &[f32],
    grad: &[f32],
    previous: Option<(&[f32], &[f32])>,
    c: Coefficients,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let len = theta.len();
    assert_eq!(
        grad.len(),
        len,
        "AdamW: the gradient is not the parameter's size"
    );
    assert!(
        previous.is_none_or(|(m, v)| m.len() == len && v.len() == len),
        "AdamW: the moments are not the parameter's size"
    );
    let (mut m, mut v) = (Vec::new(), Vec::new());
    // SAFETY: the chunks of the three outputs and of the inputs pair up one to one (same
    // length and chunk size), and `update_chunk` writes every element of its output chunks.
    let theta = unsafe {
        written(len, |theta_out| {
            m = written(len, |m_out| {
                v = written(len, |v_out| {
                    let outputs = theta_out
                        .par_chunks_mut(CHUNK_ELEMENTS)
                        .zip(m_out.par_chunks_mut(CHUNK_ELEMENTS))
                        .zip(v_out.par_chunks_mut(CHUNK_ELEMENTS));
                    let inputs = theta
                        .par_chunks(CHUNK_ELEMENTS)
                        .zip(grad.par_chunks(CHUNK_ELEMENTS))
                        .enumerate();
                    outputs.zip(inputs).for_each(|(out, (i, input))| {
                        let range = i * CHUNK_ELEMENTS..(i * CHUNK_ELEMENTS + input.0.len());
                        let before = previous.map(|(m, v)| (&m[range.clone()], &v[range]));
                        vectorized(
                            #[inline(always)]
                            || update_chunk(out, input, before, c),
                        )
                    })
                })
            })
        })
    };
    (theta, m, v)
}

/// One chunk of [`update`].
#[inline(always)]
#[allow(clippy::type_complexity)]
fn update_chunk(
    ((theta_out, m_out), v_out): (
        (&mut [MaybeUninit<f32>], &mut [MaybeUninit<f32>]),
        &mut [MaybeUninit<f32>],
    ),
    (theta, grad): (&[f32], &[f32]),
    previous: Option<(&[f32], &[f32])>,
    c: Coefficients,
) {
    let (factor_1, factor_2) = (1.0 - BETA_1, 1.0 - BETA_2);
    let finish = |theta: f32, m: f32, v: f32| {
        let delta = (m / c.correction_1) / ((v / c.correction_2).sqrt() + EPSILON);
        let decayed = match c.keep {
            Some(keep) => theta * keep,
            None => theta,
        };
        decayed - delta * c.lr
    };
    let outputs = theta_out.iter_mut().zip(m_out.iter_mut()).zip(v_out);
    let inputs = theta.iter().zip(grad);
    match previous {
        Some((m_before, v_before)) => {
            let before = m_before.iter().zip(v_before);
            for (((theta_out, m_out), v_out), ((&theta, &g), (&m, &v))) in
                outputs.zip(inputs.zip(before))
            {
                let m = m * BETA_1 + g * factor_1;
                let v = v * BETA_2 + (g * g) * factor_2;
                theta_out.write(finish(theta, m, v));
                m_out.write(m);
                v_out.write(v);
            }
        }
        None => {
            for (((theta_out, m_out), v_out), (&theta, &g)) in outputs.zip(inputs) {
                let (m, v) = (g * factor_1, (g * g) * factor_2);
                theta_out.write(finish(theta, m, v));
                m_out.write(m);
                v_out.write(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small enough for Miri: two steps on 21 elements against the formulas written out
    /// (burn's AdamW bit for bit is `train::optim`'s test). The coefficients are made once:
    /// Miri gives `powi` a random last bit on each call, as a libm may.
    #[test]
    fn two_steps_follow_the_formulas() {
        let theta: Vec<f32> = (0..21).map(|i| i as f32 * 0.1 - 1.0).collect();
        let grad: Vec<f32> = (0..21).map(|i| ((i * 3) % 7) as f32 * 0.2 - 0.6).collect();
        let steps = [1, 2].map(|time| Coefficients::new(1e-2, 1e-3, time));
        let (theta_1, m_1, v_1) = update(&theta, &grad, None, steps[0]);
        let (theta_2, m_2, v_2) = update(&theta_1, &grad, Some((&m_1, &v_1)), steps[1]);
        let (mut m, mut v, mut t) = (vec![0.0f32; 21], vec![0.0f32; 21], theta.clone());
        for (step, c) in steps.iter().enumerate() {
            for i in 0..21 {
                m[i] = m[i] * BETA_1 + grad[i] * (1.0 - BETA_1);
                v[i] = v[i] * BETA_2 + (grad[i] * grad[i]) * (1.0 - BETA_2);
                let delta = (m[i] / c.correction_1) / ((v[i] / c.correction_2).sqrt() + EPSILON);
                t[i] = t[i] * c.keep.unwrap_or(1.0) - delta * c.lr;
            }
            if step == 0 {
                assert_eq!((&theta_1, &m_1, &v_1), (&t, &m, &v), "step 1");
            }
        }
        assert_eq!((theta_2, m_2, v_2), (t, m, v), "step 2");
    }
}
