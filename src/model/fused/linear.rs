//! `Linear` over the last dimension as one op of burn's graph: `y = x·W + b` (burn's
//! `[d_in, d_out]` weight, or a `[d_out, d_in]` one read transposed: [`matmul_transposed`]).
//! The kernel, forward and backward, is `kernels::linear`: the output starts as the bias rows
//! and `gemm` accumulates onto them; the backward reads transposes through strides.

use super::{flex, host, values, Host};
use crate::kernels::linear::{self as kernel, Sizes, WeightLayout};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, NodeGuard, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::nn::Linear;
use burn::prelude::*;

/// `layer` applied to `x` (`[..., d_in]` → `[..., d_out]`); burn's own op where the fused
/// kernel does not apply.
pub fn linear<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    let weight = layer.weight.val();
    let [d_in, d_out] = weight.dims();
    let bias = layer.bias.as_ref().map(|b| b.val());
    let layout = WeightLayout::InOut;
    fused(x, weight, bias, (d_in, d_out), layout).unwrap_or_else(|x| layer.forward(*x))
}

/// `x · weightᵀ` for a weight stored `[d_out, d_in]` (PyTorch's layout, as the head's
/// weight-normed last layer keeps it); burn's matmul where the fused kernel does not apply.
pub fn matmul_transposed(x: Tensor<2>, weight: Tensor<2>) -> Tensor<2> {
    let [d_out, d_in] = weight.dims();
    let layout = WeightLayout::OutIn;
    fused(x, weight.clone(), None, (d_in, d_out), layout)
        .unwrap_or_else(|x| (*x).matmul(weight.transpose()))
}

/// The fused op, or `x` back where it does not apply.
fn fused<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
    (d_in, d_out): (usize, usize),
    layout: WeightLayout,
) -> Result<Tensor<D>, Box<Tensor<D>>> {
    let shape = x.dims();
    let bias_fits = bias.as_ref().is_none_or(|b| b.dims() == [d_out]);
    if shape[D - 1] != d_in || d_in == 0 || d_out == 0 || !bias_fits {
        // burn's op says what does not fit.
        return Err(Box::new(x));
    }
    let rows = shape[..D - 1].iter().product::<usize>();
    let mut out_shape = shape.to_vec();
    out_shape[D - 1] = d_out;
    let sizes = Sizes {
        rows,
        d_in,
        d_out,
        layout,
    };
    let (Some(x_host), Some(w_host)) = (host(&x), host(&weight)) else {
        return Err(Box::new(x));
    };
    let b_host = match bias.as_ref().map(host) {
        None => None,
        Some(Some(b)) => Some(b),
        Some(None) => return Err(Box::new(x)),
    };
    Ok(match (x_host, w_host, b_host) {
        (Host::Plain(x), Host::Plain(w), b @ (None | Some(Host::Plain(_)))) => {
            let b = b.map(Host::into_buffer);
            let b = b.as_ref().map(values);
            let y = kernel::forward(&values(&x), &values(&w), b.as_deref(), sizes);
            Tensor::from_primitive::<Flex>(flex(y, out_shape))
        }
        (Host::Tracked(x), Host::Tracked(w), None) => {
            let ((x, x_guard), (w, w_guard)) = (x.into_parts(), w.into_parts());
            let y = kernel::forward(&values(&x), &values(&w), None, sizes);
            record([x_guard, w_guard], (x, w, sizes), flex(y, out_shape))
        }
        (Host::Tracked(x), Host::Tracked(w), Some(Host::Tracked(b))) => {
            let ((x, x_guard), (w, w_guard)) = (x.into_parts(), w.into_parts());
            let (b, b_guard) = b.into_parts();
            let y = kernel::forward(&values(&x), &values(&w), Some(&values(&b)), sizes);
            record(
                [x_guard, w_guard, b_guard],
                (x, w, sizes),
                flex(y, out_shape),
            )
        }
        // Tracked and plain operands mixed: not in the model; burn's op handles it.
        _ => return Err(Box::new(x)),
    })
}

/// `y` as the output node of a [`LinearBackward`] step over the guarded inputs `[x, W]` or
/// `[x, W, b]`; the step keeps `x`, `W` and the sizes.
fn record<const N: usize, const D: usize>(
    guards: [NodeGuard; N],
    state: (FlexTensor, FlexTensor, Sizes),
    y: FlexTensor,
) -> Tensor<D> {
    let out = match LinearBackward
        .prepare::<NoCheckpointing>(guards)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(state, y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Tensor::from_primitive::<Autodiff<Flex>>(out)
}

/// The backward step registered in burn's autodiff graph; parents `[x, W]` or `[x, W, b]`.
#[derive(Debug)]
struct LinearBackward;

impl<const N: usize> Backward<Flex, N> for LinearBackward {
    /// The forward's `x` and `W` (shared buffers, not copies) and its sizes.
    type State = (FlexTensor, FlexTensor, Sizes);

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, w, sizes) = ops.state;
        let grad_y = grads.consume::<Flex>(&ops.node);
        let dy = values(&grad_y);
        let mut parents = ops.parents.into_iter();
        let (x_node, w_node, b_node) = (
            parents.next().flatten(),
            parents.next().flatten(),
            parents.next().flatten(),
        );
        if let Some(node) = x_node {
            let shape = x.layout().shape().to_vec();
            grads.register::<Flex>(
                node.id,
                flex(kernel::grad_input(&dy, &values(&w), sizes), shape),
            );
        }
        if let Some(node) = w_node {
            let dw = kernel::grad_weight(&values(&x), &dy, sizes);
            grads.register::<Flex>(node.id, flex(dw, sizes.weight_shape()));
        }
        if let Some(node) = b_node {
            let db = kernel::grad_bias(&dy, sizes.d_out);
            grads.register::<Flex>(node.id, flex(db, vec![sizes.d_out]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fused::test_support::{assert_close, host_values};
    use burn::module::Param;
    use burn::nn::LinearConfig;

    fn layer(d_in: usize, d_out: usize, bias: bool, device: &Device) -> Linear {
        let mut init = crate::model::HostInit::new(5);
        let mut layer = LinearConfig::new(d_in, d_out).with_bias(bias).init(device);
        layer.weight = Param::from_tensor(Tensor::from_data(
            TensorData::new(init.trunc_normal(d_in * d_out, 0.5), [d_in, d_out]),
            device,
        ));
        if bias {
            layer.bias = Some(Param::from_tensor(Tensor::from_data(
                TensorData::new(init.trunc_normal(d_out, 0.5), [d_out]),
                device,
            )));
        }
        layer
    }

    fn input(shape: [usize; 3]) -> TensorData {
        let mut init = crate::model::HostInit::new(6);
        TensorData::new(init.trunc_normal(shape.iter().product(), 1.0), shape)
    }

    #[test]
    fn forward_matches_burns_linear_with_and_without_bias() {
        let device = Device::flex();
        for bias in [true, false] {
            let layer = layer(23, 17, bias, &device);
            let x = Tensor::<3>::from_data(input([3, 9, 23]), &device);
            let ours = linear(&layer, x.clone());
            assert_eq!(ours.dims(), [3, 9, 17]);
            assert_close(
                &host_values(ours),
                &host_values(layer.forward(x)),
                1e-5,
                "y",
            );
        }
    }

    #[test]
    fn gradients_match_burns_autodiff() {
        let device = Device::flex().autodiff();
        // 600 rows: three bias blocks, the last one partial.
        let data = input([4, 150, 13]);
        for bias in [true, false] {
            let run = |fused: bool| {
                let layer = layer(13, 11, bias, &device);
                let x = Tensor::<3>::from_data(data.clone(), &device).require_grad();
                let y = if fused {
                    linear(&layer, x.clone())
                } else {
                    layer.forward(x.clone())
                };
                let upstream = y.clone().sin();
                let grads = (y.clone() * upstream.detach()).sum().backward();
                let dx = x.grad(&grads).map(host_values).unwrap_or_default();
                let dw = layer.weight.val().grad(&grads).map(host_values);
                let db = layer
                    .bias
                    .as_ref()
                    .and_then(|b| b.val().grad(&grads))
                    .map(host_values);
                (host_values(y), dx, dw.unwrap_or_default(), db)
            };
            let (y, dx, dw, db) = run(true);
            let (y_ref, dx_ref, dw_ref, db_ref) = run(false);
            assert_close(&y, &y_ref, 1e-5, "y");
            assert_close(&dx, &dx_ref, 1e-5, "dx");
            assert_close(&dw, &dw_ref, 1e-4, "dW");
            assert_eq!(db.is_some(), bias);
            assert_close(
                &db.unwrap_or_default(),
                &db_ref.unwrap_or_default(),
                1e-4,
                "db",
            );
            assert_eq!(dw.len(), 13 * 11);
            assert!(dx.iter().any(|g| g.abs() > 1e-2), "a gradient flows");
        }
    }

    #[test]
    fn products_large_enough_to_split_match_burn() {
        let device = Device::flex().autodiff();
        // 40 rows × 1000 columns: the columns split over the threads; 600 rows: gemm's own
        // split. Both above the 192³ multiply-adds that keep a product on one thread.
        for (rows, d_in, d_out) in [(40, 200, 1000), (600, 128, 128)] {
            let mut init = crate::model::HostInit::new(rows as u64);
            let data = TensorData::new(init.trunc_normal(rows * d_in, 1.0), [rows, d_in]);
            let run = |fused: bool| {
                let layer = layer(d_in, d_out, true, &device);
                let x = Tensor::<2>::from_data(data.clone(), &device).require_grad();
                let y = if fused {
                    linear(&layer, x.clone())
                } else {
                    layer.forward(x.clone())
                };
                let grads = (y.clone() * y.clone().sin().detach()).sum().backward();
                let dx = x.grad(&grads).map(host_values).unwrap_or_default();
                let dw = layer.weight.val().grad(&grads).map(host_values);
                (host_values(y), dx, dw.unwrap_or_default())
            };
            let ((y, dx, dw), (y_ref, dx_ref, dw_ref)) = (run(true), run(false));
            assert_close(&y, &y_ref, 1e-4, "y");
            assert_close(&dx, &dx_ref, 1e-4, "dx");
            assert_close(&dw, &dw_ref, 1e-4, "dW");
            assert_eq!(dw.len(), d_in * d_out);
        }
    }

    #[test]
    fn transposed_weight_matches_burns_matmul_and_its_gradients() {
        let device = Device::flex().autodiff();
        let mut init = crate::model::HostInit::new(8);
        let x_data = TensorData::new(init.trunc_normal(37 * 19, 1.0), [37, 19]);
        let w_data = TensorData::new(init.trunc_normal(29 * 19, 1.0), [29, 19]);
        let run = |fused: bool| {
            let x = Tensor::<2>::from_data(x_data.clone(), &device).require_grad();
            let w = Tensor::<2>::from_data(w_data.clone(), &device).require_grad();
            let y = if fused {
                matmul_transposed(x.clone(), w.clone())
            } else {
                x.clone().matmul(w.clone().transpose())
            };
            let grads = (y.clone() * y.clone().cos().detach()).sum().backward();
            let grad = |t: &Tensor<2>| t.grad(&grads).map(host_values).unwrap_or_default();
            (host_values(y), grad(&x), grad(&w))
        };
        let (y, dx, dw) = run(true);
        let (y_ref, dx_ref, dw_ref) = run(false);
        assert_eq!(y.len(), 37 * 29);
        assert_close(&y, &y_ref, 1e-5, "y");
        assert_close(&dx, &dx_ref, 1e-5, "dx");
        assert_close(&dw, &dw_ref, 1e-5, "dW");
        assert_eq!(dw.len(), 29 * 19);
    }
}
