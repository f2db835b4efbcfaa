//! GELU, the exact (erf) form that PyTorch's `nn.GELU` and the official ViT use, as one op of
//! burn's graph on the CPU backend (the kernel: `kernels::gelu`); other devices run burn's.
//!
//! burn's CPU backend evaluates it one element at a time through libm's scalar `erff`, forward
//! and again in the backward pass: that was a quarter of a `tiny` train step. Under autodiff
//! it is one node of burn's graph (`Backward`): the forward pass writes `g(x)` and keeps
//! `g'(x)` from the same pass; the backward pass multiplies `dy` by it.

use crate::kernels::gelu::{gelu_and_slope, gelu_in_place, times_slope};
use crate::model::fused::{flex, host, unique_values_mut, values, Host};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;

/// `x · Φ(x)`, Φ the standard normal CDF; shape and device are kept.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    // The plain buffer's handle is dropped before `into_data`, which copies a shared buffer.
    let tracked = match host(&x) {
        None => return burn::tensor::activation::gelu(x),
        Some(Host::Plain(_)) => None,
        Some(Host::Tracked(tracked)) => Some(tracked),
    };
    let Some(tracked) = tracked else {
        let device = x.device();
        // In place and zero-copy when `x` is not shared (a fresh matmul output usually is not).
        let mut data = x.into_data();
        if let Ok(values) = data.as_mut_slice::<f32>() {
            gelu_in_place(values);
            return Tensor::from_data(data, &device);
        }
        return burn::tensor::activation::gelu(Tensor::from_data(data, &device));
    };
    let shape = x.dims().to_vec();
    let (input, guard) = tracked.into_parts();
    let (y, slope) = gelu_and_slope(&values(&input));
    let y = flex(y, shape.clone());
    let out = match GeluBackward
        .prepare::<NoCheckpointing>([guard])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(flex(slope, shape), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Tensor::from_primitive::<Autodiff<Flex>>(out)
}

/// GELU's step in burn's autodiff graph; its state is `g'(x)` from the forward pass.
#[derive(Debug)]
struct GeluBackward;

impl Backward<Flex, 1> for GeluBackward {
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let slope = ops.state;
        let mut grad = grads.consume::<Flex>(&ops.node);
        let [parent] = ops.parents;
        let Some(parent) = parent else { return };
        let slope = values(&slope);
        // In place when the incoming gradient's buffer is ours alone, as burn's `mul` does.
        if let Some(in_place) = unique_values_mut(&mut grad) {
            times_slope(in_place, &slope);
            grads.register::<Flex>(parent.id, grad);
        } else {
            let mut copy = values(&grad).into_owned();
            times_slope(&mut copy, &slope);
            let shape = grad.layout().shape().to_vec();
            grads.register::<Flex>(parent.id, flex(copy, shape));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> Vec<f32> {
        (-1200..=1200).map(|i| i as f32 * 0.01).collect()
    }

    /// burn's GELU and its gradient in f64 (libm's `erf` on the CPU backend).
    fn reference(xs: &[f32]) -> (Vec<f64>, Vec<f64>) {
        let device = Device::flex().autodiff();
        let x = Tensor::<1>::from_data(
            TensorData::new(xs.iter().map(|&v| v as f64).collect::<Vec<_>>(), [xs.len()]),
            &device,
        )
        .require_grad();
        let y = burn::tensor::activation::gelu(x.clone());
        let grads = y.clone().sum().backward();
        let slope = x
            .grad(&grads)
            .map(|g| g.into_data().iter::<f64>().collect())
            .unwrap_or_default();
        (y.into_data().iter::<f64>().collect(), slope)
    }

    #[test]
    fn values_and_slopes_match_the_erf_definition() {
        let xs = grid();
        let (values, slopes) = reference(&xs);
        assert_eq!(values.len(), xs.len());
        assert_eq!(slopes.len(), xs.len());
        let mut ours = xs.clone();
        gelu_in_place(&mut ours);
        let (both, our_slopes) = gelu_and_slope(&xs);
        assert_eq!(both, ours, "one pass gives the in-place values");
        for i in 0..xs.len() {
            let tolerance = 3e-7 * (1.0 + values[i].abs());
            assert!(
                (ours[i] as f64 - values[i]).abs() < tolerance,
                "gelu({}) = {}, want {}",
                xs[i],
                ours[i],
                values[i]
            );
            assert!(
                (our_slopes[i] as f64 - slopes[i]).abs() < 3e-7 * (1.0 + xs[i].abs() as f64),
                "gelu'({}) = {}, want {}",
                xs[i],
                our_slopes[i],
                slopes[i]
            );
        }
        // The left tail keeps relative precision: GELU(−8) ≈ −8·6.2e-16.
        let mut tail = [-8.0f32];
        gelu_in_place(&mut tail);
        let want = -8.0 * 6.220_960_574_271_785e-16;
        assert!(((tail[0] as f64 - want) / want).abs() < 1e-5, "{}", tail[0]);
    }

    #[test]
    fn tensor_gelu_and_its_gradient_match_burns() {
        let device = Device::flex().autodiff();
        let xs: Vec<f32> = grid().into_iter().step_by(7).collect();
        let n = xs.len();
        let make =
            || Tensor::<2>::from_data(TensorData::new(xs.clone(), [1, n]), &device).require_grad();
        let upstream = Tensor::<2>::from_data(
            TensorData::new(
                (0..n).map(|i| (i % 5) as f32 - 2.0).collect::<Vec<_>>(),
                [1, n],
            ),
            &device,
        );
        let x_ours = make();
        let y_ours = gelu(x_ours.clone());
        let g_ours = x_ours
            .grad(&(y_ours.clone() * upstream.clone()).sum().backward())
            .map(|g| g.into_data());
        let x_burn = make();
        let y_burn = burn::tensor::activation::gelu(x_burn.clone());
        let g_burn = x_burn
            .grad(&(y_burn.clone() * upstream).sum().backward())
            .map(|g| g.into_data());
        y_ours
            .into_data()
            .assert_approx_eq::<f32>(&y_burn.into_data(), burn::tensor::Tolerance::absolute(1e-6));
        let (Some(g_ours), Some(g_burn)) = (g_ours, g_burn) else {
            panic!("no gradient reached x");
        };
        g_ours.assert_approx_eq::<f32>(&g_burn, burn::tensor::Tolerance::absolute(2e-6));

        // Without autodiff the in-place path gives the same values.
        let plain = Tensor::<2>::from_data(TensorData::new(xs.clone(), [1, n]), &Device::flex());
        gelu(plain).into_data().assert_approx_eq::<f32>(
            &burn::tensor::activation::gelu(Tensor::<2>::from_data(
                TensorData::new(xs, [1, n]),
                &Device::flex(),
            ))
            .into_data(),
            burn::tensor::Tolerance::absolute(1e-6),
        );
    }
}
