//! The DINO head's weight normalisation as one op of burn's graph: `W = v ⊙ (g / ‖v‖)` per row
//! (`v` `[K, in]`, `g` `[K, 1]`), PyTorch's `weight_norm(dim=0)`. burn computes it as five
//! single-threaded tensor ops with fresh buffers, differentiating each; the kernel
//! (`kernels::weight_norm`) is one parallel pass per row block each way.

use super::{flex, host, values, Host};
use crate::kernels::weight_norm as kernel;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;

/// `v ⊙ (g / ‖v‖)` by row; burn's ops where the fused kernels do not apply.
pub fn weight_norm(v: Tensor<2>, g: Tensor<2>) -> Tensor<2> {
    let [rows, width] = v.dims();
    if g.dims() != [rows, 1] || width == 0 {
        return composed(v, g);
    }
    let (Some(v_host), Some(g_host)) = (host(&v), host(&g)) else {
        return composed(v, g);
    };
    match (v_host, g_host) {
        (Host::Plain(v), Host::Plain(g)) => {
            let (w, _) = kernel::forward(&values(&v), &values(&g), width);
            Tensor::from_primitive::<Flex>(flex(w, vec![rows, width]))
        }
        (Host::Tracked(v), Host::Tracked(g)) => {
            let ((v, v_guard), (g, g_guard)) = (v.into_parts(), g.into_parts());
            let (w, norms) = kernel::forward(&values(&v), &values(&g), width);
            let w = flex(w, vec![rows, width]);
            let out = match WeightNormBackward
                .prepare::<NoCheckpointing>([v_guard, g_guard])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish((v, g, norms), w),
                OpsKind::UnTracked(prep) => prep.finish(w),
            };
            Tensor::from_primitive::<Autodiff<Flex>>(out)
        }
        // Tracked and plain operands mixed: not in the model; burn's ops handle it.
        _ => composed(v, g),
    }
}

/// burn's composition (other devices and dtypes).
fn composed(v: Tensor<2>, g: Tensor<2>) -> Tensor<2> {
    let norm = v.clone().powf_scalar(2.0).sum_dim(1).sqrt();
    v.mul(g.div(norm))
}

/// The backward step in burn's autodiff graph; parents `[v, g]`, state `(v, g, ‖v‖ per row)`.
#[derive(Debug)]
struct WeightNormBackward;

impl Backward<Flex, 2> for WeightNormBackward {
    type State = (FlexTensor, FlexTensor, Vec<f32>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (v, g, norms) = ops.state;
        let grad_w = grads.consume::<Flex>(&ops.node);
        let shape = v.layout().shape().to_vec();
        let width = shape.get(1).copied().unwrap_or(0);
        let (dv, dg) = kernel::backward(&values(&grad_w), &values(&v), &values(&g), &norms, width);
        let [v_node, g_node] = ops.parents;
        if let Some(node) = v_node {
            grads.register::<Flex>(node.id, flex(dv, shape));
        }
        if let Some(node) = g_node {
            let rows = dg.len();
            grads.register::<Flex>(node.id, flex(dg, vec![rows, 1]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fused::test_support::{assert_close, host_values, on_threads, random};

    /// Values and both gradients against burn's composition, over more rows than one block
    /// and a width that is no multiple of the SIMD lanes.
    #[test]
    fn matches_burns_composition_values_and_gradients() {
        let device = Device::flex().autodiff();
        let shape = [2 * kernel::ROWS_PER_BLOCK + 37, 45];
        let upstream = random(shape, 3, 1.0, &device);
        let run = |fused: bool| {
            let v = random(shape, 1, 0.5, &device).require_grad();
            let g = (random([shape[0], 1], 2, 0.3, &device) + 1.0).require_grad();
            let w = if fused {
                weight_norm(v.clone(), g.clone())
            } else {
                composed(v.clone(), g.clone())
            };
            let grads = (w.clone() * upstream.clone()).sum().backward();
            let dv = v.grad(&grads).map(host_values).unwrap_or_default();
            let dg = g.grad(&grads).map(host_values).unwrap_or_default();
            (host_values(w), dv, dg)
        };
        let (w, dv, dg) = run(true);
        let (w_ref, dv_ref, dg_ref) = run(false);
        assert_close(&w, &w_ref, 1e-6, "W");
        assert_close(&dv, &dv_ref, 1e-5, "dv");
        assert_close(&dg, &dg_ref, 1e-5, "dg");

        // Without autodiff the same values, and rows of unit norm when g = 1.
        let plain = Device::flex();
        let v = random(shape, 1, 0.5, &plain);
        let ones = Tensor::<2>::ones([shape[0], 1], &plain);
        let w = host_values(weight_norm(v, ones));
        for row in w.chunks_exact(shape[1]) {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "row norm {norm}");
        }
    }

    #[test]
    fn same_values_on_one_and_several_threads() {
        let device = Device::flex();
        let shape = [3 * kernel::ROWS_PER_BLOCK + 5, 64];
        let run = || {
            let v = random(shape, 4, 0.5, &device);
            let g = Tensor::<2>::ones([shape[0], 1], &device);
            host_values(weight_norm(v, g))
        };
        assert_eq!(on_threads(1, run), on_threads(4, run));
    }
}
