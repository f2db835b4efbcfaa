//! The student side of the DINO loss as one CPU op: log-softmax of the student's logits and the
//! cross-entropy against every paired teacher row, forward and backward.
//!
//! burn composes it from a log-softmax over all `[crops·B, K]` logits and, per pair (teacher
//! global crop `i`, student crop `v ≠ i`), a slice, a product, a row sum and a mean: 18 terms
//! for 10 crops, each several single-threaded passes over `[B, K]` with fresh buffers and each
//! differentiated on its own. That was the ViT-S/16 step's widest phase gap to PyTorch (K =
//! 65 536). Here each student row `r` (crop `v`, image `b`) meets `Q_r = Σ_{i≠v} q_{i,b}`, the
//! sum of the teacher rows it is paired with, once:
//! `loss = Σ_r −Σ_k Q_r[k]·log p_r[k] / (B·terms)`, with `log p_r = z_r − lse(z_r)`, `z = s/τ`;
//! its gradient is `∂loss/∂s_r = (p_r·ΣQ_r − Q_r) / (τ·B·terms)`. Rows run in parallel; the
//! row losses are added in row order, so a seed repeats exactly.

use crate::model::activation::exp;
use crate::model::fused::{flex, host, lane_sum, values, vectorized, written, Host};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use rayon::prelude::*;

/// The shape of one loss: `crops·batch` student rows and `2·batch` teacher rows of `classes`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Pairing {
    crops: usize,
    batch: usize,
    classes: usize,
    /// The student temperature.
    temperature: f32,
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

    /// `1 / (B · terms)`: each term is a mean over the batch, the loss their mean.
    fn weight(&self) -> f32 {
        1.0 / (self.batch * self.terms().max(1)) as f32
    }
}

/// The mean cross-entropy of the student's `[crops·B, K]` logits (autodiff, CPU backend)
/// against the teacher's `[2·B, K]` probabilities, as a `[1]` tensor; `None` where the fused
/// kernel does not apply (the caller then composes it from burn's ops).
pub fn student_cross_entropy(
    student_logits: &Tensor<2>,
    teacher_probs: &Tensor<2>,
    crops: usize,
    temperature: f64,
) -> Option<Tensor<1>> {
    let [rows, classes] = student_logits.dims();
    let [teacher_rows, teacher_classes] = teacher_probs.dims();
    let batch = teacher_rows / 2;
    let fits = batch > 0
        && crops > 0
        && teacher_rows == 2 * batch
        && rows == crops * batch
        && classes == teacher_classes
        && classes > 0;
    if !fits {
        return None;
    }
    let (Some(Host::Tracked(logits)), Some(Host::Plain(q))) =
        (host(student_logits), host(teacher_probs))
    else {
        return None;
    };
    let pairing = Pairing {
        crops,
        batch,
        classes,
        temperature: temperature as f32,
    };
    let (logits, guard) = logits.into_parts();
    let (loss, lse) = forward_host(&values(&logits), &values(&q), pairing);
    let loss = flex(vec![loss], vec![1]);
    let out = match CrossEntropyBackward
        .prepare::<NoCheckpointing>([guard])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((logits, q, lse, pairing), loss),
        OpsKind::UnTracked(prep) => prep.finish(loss),
    };
    Some(Tensor::from_primitive::<Autodiff<Flex>>(out))
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

/// A sum in 16 independent lanes (vectorises; the order is fixed): `fused::lane_sum` for
/// values computed on the fly rather than held in a slice.
#[inline(always)]
fn sum_in_lanes(values: impl Iterator<Item = f32>) -> f32 {
    let mut lanes = [0.0f32; 16];
    for (i, v) in values.enumerate() {
        lanes[i % 16] += v;
    }
    lanes.iter().sum()
}

/// The loss and each student row's `lse(z)`.
fn forward_host(logits: &[f32], q: &[f32], pairing: Pairing) -> (f32, Vec<f32>) {
    let k = pairing.classes;
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
fn backward_host(
    logits: &[f32],
    q: &[f32],
    lse: &[f32],
    pairing: Pairing,
    upstream: f32,
) -> Vec<f32> {
    let k = pairing.classes;
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

/// The backward step in burn's autodiff graph; state: the logits, the teacher probabilities,
/// each row's `lse` and the pairing.
#[derive(Debug)]
struct CrossEntropyBackward;

impl Backward<Flex, 1> for CrossEntropyBackward {
    type State = (FlexTensor, FlexTensor, Vec<f32>, Pairing);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (logits, q, lse, pairing) = ops.state;
        let upstream = grads.consume::<Flex>(&ops.node);
        let upstream = values(&upstream).first().copied().unwrap_or(0.0);
        let [parent] = ops.parents;
        if let Some(parent) = parent {
            let grad = backward_host(&values(&logits), &values(&q), &lse, pairing, upstream);
            let shape = logits.layout().shape().to_vec();
            grads.register::<Flex>(parent.id, flex(grad, shape));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fused::test_support::{host_values, random};
    use crate::train::loss::{composed_cross_entropy, LossOptions, TeacherCentering};
    use burn::tensor::activation::softmax;

    /// Loss and gradient against burn's composition of the reference, for 2 globals alone
    /// (one pairing per row) and with local crops (two), with an upstream factor ≠ 1.
    #[test]
    fn matches_the_composed_loss_and_its_gradient() {
        let device = Device::flex().autodiff();
        let (batch, classes) = (3, 77);
        for crops in [2, 5] {
            let teacher = softmax(random([2 * batch, classes], 2, 3.0, &Device::flex()), 1);
            let options = LossOptions {
                student_temp: 0.1,
                teacher_temp: 0.04,
                centering: TeacherCentering::Ema,
            };
            let run = |fused: bool| {
                let logits = random([crops * batch, classes], 1, 0.5, &device).require_grad();
                let loss = if fused {
                    student_cross_entropy(&logits, &teacher, crops, options.student_temp)
                        .unwrap_or_else(|| panic!("the CPU op did not apply"))
                } else {
                    composed_cross_entropy(logits.clone(), teacher.clone(), crops, batch, options)
                };
                let grads = (loss.clone() * 2.5).backward();
                let grad = logits.grad(&grads).map(host_values).unwrap_or_default();
                (host_values(loss), grad)
            };
            let ((loss, grad), (loss_ref, grad_ref)) = (run(true), run(false));
            assert!(
                (loss[0] - loss_ref[0]).abs() <= 2e-6 * (1.0 + loss_ref[0].abs()),
                "{crops} crops: loss {} vs {}",
                loss[0],
                loss_ref[0]
            );
            assert_eq!(grad.len(), grad_ref.len());
            for (i, (a, b)) in grad.iter().zip(&grad_ref).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-6 + 1e-4 * b.abs(),
                    "{crops} crops, ds[{i}]: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn shapes_that_do_not_pair_take_the_composed_path() {
        let device = Device::flex().autodiff();
        let teacher = softmax(random([6, 10], 2, 1.0, &Device::flex()), 1);
        // 7 student rows are no whole number of crops of 3 images.
        let logits = random([7, 10], 1, 1.0, &device).require_grad();
        assert!(student_cross_entropy(&logits, &teacher, 2, 0.1).is_none());
        // Plain (no autodiff) logits: the probe's evaluation, composed as well.
        let plain = random([6, 10], 1, 1.0, &Device::flex());
        assert!(student_cross_entropy(&plain, &teacher, 2, 0.1).is_none());
    }
}
