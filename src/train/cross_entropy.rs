//! The student side of the DINO loss as one CPU op of burn's graph: log-softmax of the
//! student's logits and the cross-entropy against every paired teacher row, forward and
//! backward (the kernel: `kernels::cross_entropy`).
//!
//! burn composes it from a log-softmax over all `[crops·B, K]` logits and, per pair (teacher
//! global crop `i`, student crop `v ≠ i`), a slice, a product, a row sum and a mean: 18 terms
//! for 10 crops, each several single-threaded passes over `[B, K]` with fresh buffers and each
//! differentiated on its own. That was the ViT-S/16 step's widest phase gap to PyTorch (K =
//! 65 536); the kernel meets each student row once.

use crate::kernels::cross_entropy::{self as kernel, Pairing};
use crate::model::fused::{flex, host, values, Host};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;

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
    let (loss, lse) = kernel::forward(&values(&logits), &values(&q), pairing);
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
            let grad = kernel::backward(&values(&logits), &values(&q), &lse, pairing, upstream);
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
