//! LayerNorm over the last dimension as one op of burn's graph: `y = γ ⊙ x̂ + β`,
//! `x̂ = (x − μ)·r`, `r = 1/√(σ² + ε)` with the biased variance, as `torch.nn.LayerNorm`. The
//! kernel, forward and backward, is `kernels::layer_norm`; the forward keeps `x̂` and each row's
//! `r` for the backward.

use super::{flex, host, values, Host};
use crate::kernels::layer_norm as kernel;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::nn::LayerNorm;
use burn::prelude::*;

/// ε of every LayerNorm in the model (the official ViT's `partial(nn.LayerNorm, eps=1e-6)`).
pub const LAYER_NORM_EPSILON: f64 = 1e-6;

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
            let (y, _) =
                kernel::forward(&values(&x), &values(&gamma), &values(&beta), epsilon, false);
            Tensor::from_primitive::<Flex>(flex(y, shape))
        }
        (Host::Tracked(x), Host::Tracked(gamma), Host::Tracked(beta)) => {
            let (x, x_guard) = x.into_parts();
            let (gamma, gamma_guard) = gamma.into_parts();
            let (beta, beta_guard) = beta.into_parts();
            let (y, saved) =
                kernel::forward(&values(&x), &values(&gamma), &values(&beta), epsilon, true);
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
        let (dx, dgamma, dbeta) = kernel::backward(
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
    use crate::model::fused::test_support::{assert_close, host_values};
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
}
