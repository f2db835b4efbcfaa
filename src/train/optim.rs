//! AdamW as DINO uses it: PyTorch defaults (eps 1e-8), decoupled weight decay set every
//! iteration from a schedule, no decay on biases and LayerNorm parameters, and gradient
//! clipping per parameter tensor (reference §5.3–§5.5).

use burn::module::ParamGroup;
use burn::optim::grad_clipping::GradientClipping;
use burn::optim::{AdamW, AdamWConfig, AdamWState, LearningRate, ModuleOptimizer, Optimizer};
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
#[derive(Clone)]
pub struct ScheduledAdamW {
    inner: AdamW,
    weight_decay: SharedWeightDecay,
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
        let decay = lr * self.weight_decay.get();
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
        .with_epsilon(1e-8)
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
        weight_decay,
    };
    let no_decay_group = ParamGroup::from_any_regexes(NO_WEIGHT_DECAY_PATTERNS.to_vec())
        .map_err(|err| format!("invalid parameter-group pattern: {err:?}"))?;
    let mut optimizer = ModuleOptimizer::from(decayed);
    if let Some(clip) = clipping.clone() {
        optimizer = optimizer.with_grad_clipping(clip);
    }
    // The last group added wins, so biases and norms land in the no-decay group.
    Ok(optimizer.with_group(no_decay_group, adamw_without_decay(), clipping))
}
