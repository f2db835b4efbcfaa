//! The student side of the DINO loss over host buffers, forward and backward (the op around
//! it: `train::cross_entropy`).
//!
//! Each student row `r` (crop `v`, image `b`) meets `Q_r = Σ_{i≠v} q_{i,b}`, the sum of the
//! teacher rows it is paired with, once:
//! `loss = Σ_r −Σ_k Q_r[k]·log p_r[k] / (B·terms)`, with `log p_r = z_r − lse(z_r)`, `z = s/τ`;
//! its gradient is `∂loss/∂s_r = (p_r·ΣQ_r − Q_r) / (τ·B·terms)`. Rows run in parallel; the
//! row losses are added in row order, so a seed repeats exactly.

use super::{exp, lane_sum, vectorized, written};
use rayon::prelude::*;

/// The shape of one loss: `crops·batch` student rows and `2·batch` teacher rows of `classes`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pairing {
    pub crops: usize,
    pub batch: usize,
    pub classes: usize,
    /// The student temperature.
    pub temperature: f32,
}

impl Pairing {
    /// The teacher rows paired with student row `r`: its image's global crops other than
    /// its own crop.
    fn teacher_rows(&self, r: usize) -> impl Iterator<Item = usize> {
        let (crop, image) = (r / self.batch, r % self.batch);
        let batch = self.batch;
        (0..2)
            .filter(move |&i| i != crop)
            .map(move |i| i * batch + image)
    }

    /// The number of (teacher crop, student crop) terms the reference averages over.
    fn terms(&self) -> usize {
        (0..self.crops).map(|v| if v < 2 { 1 } else { 2 }).sum()
    }

    /// Panics unless the logits are `[crops·B, K]` and `q` is `[2·B, K]`, `K > 0`.
    fn check(&self, logits: &[f32], q: &[f32]) {
        let (rows, k) = (self.crops * self.batch, self.classes);
        assert!(k > 0, "cross-entropy: no classes");
        assert_eq!(
            logits.len(),
            rows * k,
            "cross-entropy: logits are not [crops·B, K]"
        );
        assert_eq!(
            q.len(),
            2 * self.batch * k,
            "cross-entropy: q is not [2·B, K]"
        );
    }

    /// `1 / (B · terms)`: each term is a mean over the batch, the loss their mean.
    fn weight(&self) -> f32 {
        1.0 / (self.batch * self.terms().max(1)) as f32
    }
}

/// `lse(z)` of one row, `z = s/τ` as burn's `div_scalar` rounds it.
#[inline(always)]
fn log_sum_exp(logits: &[f32], temperature: f32) -> f32 {
    let max = logits
        .iter()
        .fold(f32::NEG_INFINITY, |m, &s| m.max(s / temperature));
    let sum: f32 = sum_in_lanes(logits.iter().map(|&s| exp(s / temperature - max)));
    max + sum.ln()
}

/// A sum in 16 independent lanes (vectorises; the order is fixed): [`lane_sum`] for
/// values computed on the fly rather than held in a slice.
#[inline(always)]
fn sum_in_lanes(values: impl Iterator<Item = f32>) -> f32 {
    let mut lanes = [0.0f32; 16];
    for (i, v) in values.enumerate() {
        lanes[i % 16] += v;
    }
    lanes.iter().sum()
}

/// The loss and each student row's `lse(z)`, from the student's `[crops·B, K]` logits and the
/// teacher's `[2·B, K]` probabilities.
pub fn forward(logits: &[f32], q: &[f32], pairing: Pairing) -> (f32, Vec<f32>) {
    let k = pairing.classes;
    pairing.check(logits, q);
    let per_row: Vec<(f32, f32)> = logits
        .par_chunks(k)
        .enumerate()
        .map(|(r, s)| {
            vectorized(
                #[inline(always)]
                || {
                    let lse = log_sum_exp(s, pairing.temperature);
                    // −Σ_k Q[k]·(z_k − lse), one paired teacher row at a time.
                    let mut row_loss = 0.0f32;
                    for t in pairing.teacher_rows(r) {
                        let q_row = &q[t * k..(t + 1) * k];
                        row_loss -= sum_in_lanes(
                            q_row
                                .iter()
                                .zip(s)
                                .map(|(&q, &s)| q * (s / pairing.temperature - lse)),
                        );
                    }
                    (row_loss, lse)
                },
            )
        })
        .collect();
    let loss = per_row.iter().map(|(l, _)| l).sum::<f32>() * pairing.weight();
    (loss, per_row.into_iter().map(|(_, lse)| lse).collect())
}

/// `∂loss/∂s` `[crops·B, K]`, times the upstream gradient `upstream`.
pub fn backward(
    logits: &[f32],
    q: &[f32],
    lse: &[f32],
    pairing: Pairing,
    upstream: f32,
) -> Vec<f32> {
    let k = pairing.classes;
    pairing.check(logits, q);
    assert_eq!(
        lse.len(),
        pairing.crops * pairing.batch,
        "cross-entropy: one lse per row"
    );
    let scale = upstream * pairing.weight() / pairing.temperature;
    // SAFETY: row r of the output pairs with row r of the logits (same `k`), and every
    // element of it is written.
    unsafe {
        written(logits.len(), |grad| {
            grad.par_chunks_mut(k)
                .zip(logits.par_chunks(k))
                .enumerate()
                .for_each(|(r, (g, s))| {
                    vectorized(
                        #[inline(always)]
                        || {
                            let mut paired =
                                pairing.teacher_rows(r).map(|t| &q[t * k..(t + 1) * k]);
                            let (Some(first), second) = (paired.next(), paired.next()) else {
                                g.iter_mut().for_each(|g| {
                                    g.write(0.0);
                                });
                                return;
                            };
                            let mass = lane_sum(first) + second.map_or(0.0, lane_sum);
                            let lse_r = lse[r];
                            let p = |s: f32| exp(s / pairing.temperature - lse_r);
                            match second {
                                Some(second) => {
                                    let targets = first.iter().zip(second);
                                    for ((g, &s), (&a, &b)) in g.iter_mut().zip(s).zip(targets) {
                                        g.write(scale * (p(s) * mass - (a + b)));
                                    }
                                }
                                None => {
                                    for ((g, &s), &a) in g.iter_mut().zip(s).zip(first) {
                                        g.write(scale * (p(s) * mass - a));
                                    }
                                }
                            }
                        },
                    )
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small enough for Miri: 2 globals and 1 local crop of 2 images over 3 classes, loss and
    /// gradient against the definition (every pair's cross-entropy, mean over the terms).
    #[test]
    fn loss_and_gradient_match_the_definition() {
        let pairing = Pairing {
            crops: 3,
            batch: 2,
            classes: 3,
            temperature: 0.5,
        };
        let logits: Vec<f32> = (0..18).map(|i| ((i * 7) % 5) as f32 * 0.4 - 0.8).collect();
        let q: Vec<f32> = (0..4)
            .flat_map(|t| {
                let raw = [1.0 + t as f32, 2.0, 0.5 * t as f32 + 0.5];
                let total: f32 = raw.iter().sum();
                raw.map(|v| v / total)
            })
            .collect();
        let (loss, lse) = forward(&logits, &q, pairing);
        let grad = backward(&logits, &q, &lse, pairing, 2.0);
        // Crops 0 and 1 pair with the other global crop, crop 2 with both: 4 terms.
        let mut want = 0.0f64;
        let mut want_grad = vec![0.0f64; 18];
        for r in 0..6 {
            let (crop, image) = (r / 2, r % 2);
            let z: Vec<f64> = (0..3).map(|c| logits[r * 3 + c] as f64 / 0.5).collect();
            let lse_r = z.iter().map(|v| v.exp()).sum::<f64>().ln();
            assert!((lse[r] as f64 - lse_r).abs() < 1e-5, "lse[{r}]");
            for teacher in (0..2).filter(|&t| t != crop) {
                let q_row = &q[(teacher * 2 + image) * 3..][..3];
                for c in 0..3 {
                    want -= q_row[c] as f64 * (z[c] - lse_r) / (2.0 * 4.0);
                    let p = (z[c] - lse_r).exp();
                    want_grad[r * 3 + c] += 2.0 * (p - q_row[c] as f64) / (0.5 * 2.0 * 4.0);
                }
            }
        }
        assert!((loss as f64 - want).abs() < 1e-5, "loss {loss} vs {want}");
        for (i, (a, b)) in grad.iter().zip(&want_grad).enumerate() {
            assert!((*a as f64 - b).abs() < 1e-5, "ds[{i}]: {a} vs {b}");
        }
    }
}
