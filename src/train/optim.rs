//! AdamW as DINO uses it: PyTorch defaults (eps 1e-8), decoupled weight decay set every
//! iteration from a schedule, no decay on biases and LayerNorm parameters, and gradient
//! clipping per parameter tensor (reference §5.3–§5.5).

use crate::kernels::adamw::{self as kernel, Coefficients, BETA_1, BETA_2, EPSILON};
use crate::model::fused::{flex, host, values, Host};
use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::module::ParamGroup;
use burn::optim::grad_clipping::GradientClipping;
use burn::optim::{
    AdamW, AdamWConfig, AdamWState, AdaptiveMomentumState, LearningRate, ModuleOptimizer, Optimizer,
};
use burn::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Module paths that are not weight-decayed: biases and LayerNorm gamma/beta (the reference's
/// "1-D or ends in .bias"). cls_token, pos_embed and weight_v are decayed, as in the reference.
pub const NO_WEIGHT_DECAY_PATTERNS: [&str; 2] = [r"bias$", r"norm\d*\.(gamma|beta)$"];

/// The live weight-decay value shared between the trainer and the optimiser.
#[derive(Clone, Debug, Default)]
pub struct SharedWeightDecay(Arc<AtomicU64>);

impl SharedWeightDecay {
    pub fn set(&self, weight_decay: f64) {
        self.0.store(weight_decay.to_bits(), Ordering::Relaxed);
    }
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// AdamW whose decoupled weight decay is read per step: `p ← p·(1 − lr·wd)`, then the Adam
/// update, which is exactly PyTorch's `AdamW` with `param_group["weight_decay"] = wd`.
/// Without `weight_decay` (the no-decay group) it is plain Adam.
///
/// On the CPU backend the whole update is one pass over each parameter (`kernels::adamw`):
/// burn's AdamW runs it as about fifteen single-threaded tensor ops, each a pass over the
/// parameter and most of them a fresh buffer, which made the optimizer the ViT-S/16 step's
/// largest phase gap to PyTorch. The pass rounds every element in burn's order, so the values
/// (and a resumed run's state) are the same bit for bit; other devices run burn's AdamW.
#[derive(Clone)]
pub struct ScheduledAdamW {
    inner: AdamW,
    weight_decay: Option<SharedWeightDecay>,
}

impl Optimizer for ScheduledAdamW {
    type State<const D: usize> = AdamWState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let decay = lr
            * self
                .weight_decay
                .as_ref()
                .map_or(0.0, SharedWeightDecay::get);
        let (tensor, grad, state) = match fused_step(lr, decay, tensor, grad, state) {
            Ok(updated) => return updated,
            Err(operands) => *operands,
        };
        let tensor = if decay == 0.0 {
            tensor
        } else {
            tensor.mul_scalar(1.0 - decay)
        };
        self.inner.step(lr, tensor, grad, state)
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        <AdamW as Optimizer>::to_device(state, device)
    }
}

fn adamw_without_decay() -> AdamW {
    AdamWConfig::new()
        .with_beta_1(BETA_1)
        .with_beta_2(BETA_2)
        .with_epsilon(EPSILON)
        .with_weight_decay(0.0)
        .build()
}

/// Builds the two-group optimiser; `clip_grad` 0 disables clipping.
pub fn build_optimizer(
    weight_decay: SharedWeightDecay,
    clip_grad: f64,
) -> Result<ModuleOptimizer, String> {
    let clipping = (clip_grad > 0.0).then_some(GradientClipping::Norm(clip_grad as f32));
    let decayed = ScheduledAdamW {
        inner: adamw_without_decay(),
        weight_decay: Some(weight_decay),
    };
    let not_decayed = ScheduledAdamW {
        inner: adamw_without_decay(),
        weight_decay: None,
    };
    let no_decay_group = ParamGroup::from_any_regexes(NO_WEIGHT_DECAY_PATTERNS.to_vec())
        .map_err(|err| format!("invalid parameter-group pattern: {err:?}"))?;
    let mut optimizer = ModuleOptimizer::from(decayed);
    if let Some(clip) = clipping.clone() {
        optimizer = optimizer.with_grad_clipping(clip);
    }
    // The last group added wins, so biases and norms land in the no-decay group.
    Ok(optimizer.with_group(no_decay_group, not_decayed, clipping))
}

/// What [`fused_step`] hands back where it does not apply: the step's operands, unchanged.
type Operands<const D: usize> = Box<(Tensor<D>, Tensor<D>, Option<AdamWState<D>>)>;

/// The update on the CPU backend in one pass, or the operands back for burn's AdamW.
fn fused_step<const D: usize>(
    lr: LearningRate,
    decay: f64,
    tensor: Tensor<D>,
    grad: Tensor<D>,
    state: Option<AdamWState<D>>,
) -> Result<(Tensor<D>, Option<AdamWState<D>>), Operands<D>> {
    let moments = state.as_ref().map(|s| &s.momentum);
    let fits = is_plain(&tensor)
        && is_plain(&grad)
        && grad.dims() == tensor.dims()
        && moments.is_none_or(|m| {
            m.max_moment_2.is_none()
                && [&m.moment_1, &m.moment_2]
                    .iter()
                    .all(|t| is_plain(t) && t.dims() == tensor.dims())
        });
    if !fits {
        return Err(Box::new((tensor, grad, state)));
    }
    let shape = tensor.dims().to_vec();
    let time = state.as_ref().map_or(1, |s| s.momentum.time + 1);
    let coefficients = Coefficients::new(lr, decay, time);
    let (theta, g) = (buffer(&tensor), buffer(&grad));
    let previous = state.map(|s| (buffer(&s.momentum.moment_1), buffer(&s.momentum.moment_2)));
    let previous_values = previous.as_ref().map(|(m, v)| (values(m), values(v)));
    let previous_slices = previous_values.as_ref().map(|(m, v)| (&m[..], &v[..]));
    let (theta, m, v) = kernel::update(&values(&theta), &values(&g), previous_slices, coefficients);
    let plain = |values: Vec<f32>| Tensor::<D>::from_primitive::<Flex>(flex(values, shape.clone()));
    let momentum = AdaptiveMomentumState {
        time,
        moment_1: plain(m),
        moment_2: plain(v),
        max_moment_2: None,
    };
    Ok((plain(theta), Some(AdamWState { momentum })))
}

/// Whether `tensor` is a float32 tensor of the CPU backend without autodiff (what the
/// optimizer is handed: the parameters' inner values and their gradients).
fn is_plain<const D: usize>(tensor: &Tensor<D>) -> bool {
    matches!(host(tensor), Some(Host::Plain(_)))
}

/// The CPU buffer of a tensor [`is_plain`] accepted (shared, not copied); an empty one
/// otherwise, which the callers rule out first.
fn buffer<const D: usize>(tensor: &Tensor<D>) -> FlexTensor {
    match host(tensor) {
        Some(host) => host.into_buffer(),
        None => flex(Vec::new(), vec![0]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fused::test_support::bits;

    fn tensor(values: Vec<f32>, device: &Device) -> Tensor<2> {
        let len = values.len();
        Tensor::from_data(TensorData::new(values, [len / 8, 8]), device)
    }

    /// Three steps of the one-pass update against burn's AdamW (with our decay), bit for bit:
    /// parameters, both moments and the step count, with and without weight decay, on a
    /// length that leaves a partial chunk.
    #[test]
    fn one_pass_update_equals_burns_adamw_bit_for_bit() {
        let device = Device::flex();
        let len = 8 * (2 * kernel::CHUNK_ELEMENTS / 8 + 37);
        let mut init = crate::model::HostInit::new(11);
        for weight_decay in [0.0, 0.04] {
            let shared = SharedWeightDecay::default();
            shared.set(weight_decay);
            let ours = ScheduledAdamW {
                inner: adamw_without_decay(),
                weight_decay: Some(shared.clone()),
            };
            let mut theta = tensor(init.trunc_normal(len, 1.0), &device);
            let mut theta_burn = theta.clone();
            let (mut state, mut state_burn) = (None, None);
            for step in 0..3 {
                let lr = 1e-3 * (step + 1) as f64;
                let grad = tensor(init.trunc_normal(len, 0.5), &device);
                let (next, next_state) = ours.step(lr, theta, grad.clone(), state);
                // burn's path: decay as `ScheduledAdamW` falls back to, then burn's AdamW.
                let decayed = if lr * weight_decay == 0.0 {
                    theta_burn
                } else {
                    theta_burn.mul_scalar(1.0 - lr * weight_decay)
                };
                let (next_burn, next_state_burn) =
                    adamw_without_decay().step(lr, decayed, grad, state_burn);
                assert_eq!(
                    bits(next.clone()),
                    bits(next_burn.clone()),
                    "θ, step {step}"
                );
                let (Some(a), Some(b)) = (next_state.clone(), next_state_burn.clone()) else {
                    panic!("no state after step {step}");
                };
                assert_eq!(a.momentum.time, b.momentum.time);
                assert_eq!(bits(a.momentum.moment_1), bits(b.momentum.moment_1), "m");
                assert_eq!(bits(a.momentum.moment_2), bits(b.momentum.moment_2), "v");
                (theta, theta_burn, state, state_burn) =
                    (next, next_burn, next_state, next_state_burn);
            }
        }
    }

    #[test]
    fn only_plain_cpu_tensors_take_the_one_pass_update() {
        let plain = Device::flex();
        let (theta, grad) = (tensor(vec![1.0; 16], &plain), tensor(vec![0.5; 16], &plain));
        assert!(fused_step(1e-3, 0.0, theta, grad, None).is_ok());
        // Autodiff tensors are not what the optimizer is handed; they fall back unchanged.
        let tracked = Device::flex().autodiff();
        let (theta, grad) = (
            tensor(vec![1.0; 16], &tracked),
            tensor(vec![0.5; 16], &tracked),
        );
        let Err(operands) = fused_step(1e-3, 0.0, theta, grad, None) else {
            panic!("autodiff tensors took the CPU pass");
        };
        assert_eq!(bits(operands.0), vec![1.0f32.to_bits(); 16]);
    }
}
