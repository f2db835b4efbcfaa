//! GELU, the exact (erf) form that PyTorch's `nn.GELU` and the official ViT use.
//!
//! burn's CPU backend evaluates it one element at a time through libm's scalar `erff`, forward
//! and again in the backward pass: that was a quarter of a `tiny` train step. On the CPU backend
//! this module computes it with a branch-free erfc/exp that the compiler vectorises (AVX2 or
//! AVX-512, picked at run time by `pulp`), on all cores. On other devices burn's own kernel is
//! used.
//!
//! Under autodiff it is one node of burn's graph (`Backward`): the forward pass writes `g(x)`
//! and keeps `g'(x)` from the same pass; the backward pass multiplies `dy` by it.

use crate::model::fused::{flex, host, unique_values_mut, values, written, Host};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Elements per parallel task: large enough to amortise scheduling, small enough to balance.
const CHUNK_ELEMENTS: usize = 1 << 15;

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

/// `(g(x), g'(x))` per element, in one pass (Φ(x) serves both), written straight into the
/// two outputs (copying `x` into them first was 2.5 % of the `tiny` step, on one thread).
pub fn gelu_and_slope(values: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let len = values.len();
    let mut slope = Vec::new();
    // SAFETY: the chunks of `ys`, `slopes` and `values` pair up one to one (same length and
    // chunk size), and each task writes every element of its `ys` and `slopes` chunks.
    let y = unsafe {
        written(len, |ys| {
            slope = written(len, |slopes| {
                ys.par_chunks_mut(CHUNK_ELEMENTS)
                    .zip(slopes.par_chunks_mut(CHUNK_ELEMENTS))
                    .zip(values.par_chunks(CHUNK_ELEMENTS))
                    .for_each(|((ys, slopes), xs)| {
                        pulp::Arch::new().dispatch(GeluAndSlope { xs, ys, slopes })
                    })
            })
        })
    };
    (y, slope)
}

/// `values[i] ← gelu(values[i])`.
pub fn gelu_in_place(values: &mut [f32]) {
    values
        .par_chunks_mut(CHUNK_ELEMENTS)
        .for_each(|chunk| pulp::Arch::new().dispatch(GeluInPlace(chunk)));
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
        let times_slope = |grad: &mut [f32]| {
            grad.par_chunks_mut(CHUNK_ELEMENTS)
                .zip(slope.par_chunks(CHUNK_ELEMENTS))
                .for_each(|(g, s)| g.iter_mut().zip(s).for_each(|(g, s)| *g *= s));
        };
        // In place when the incoming gradient's buffer is ours alone, as burn's `mul` does.
        if let Some(in_place) = unique_values_mut(&mut grad) {
            times_slope(in_place);
            grads.register::<Flex>(parent.id, grad);
        } else {
            let mut copy = values(&grad).into_owned();
            times_slope(&mut copy);
            let shape = grad.layout().shape().to_vec();
            grads.register::<Flex>(parent.id, flex(copy, shape));
        }
    }
}

// The loops live in `WithSimd::with_simd` (inlined into pulp's `#[target_feature]` entry
// points), so the compiler vectorises them for the CPU found at run time; a plain closure is
// compiled once for the baseline x86-64 and stays scalar. The polynomials use `mul_add`, one
// FMA instruction per step there (only pre-AVX2 CPUs fall back to a libm call).
struct GeluInPlace<'a>(&'a mut [f32]);

impl pulp::WithSimd for GeluInPlace<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        for v in self.0.iter_mut() {
            *v *= normal_cdf(*v);
        }
    }
}

/// `ys[i] ← g(xs[i])`, `slopes[i] ← g'(xs[i])`.
struct GeluAndSlope<'a> {
    xs: &'a [f32],
    ys: &'a mut [MaybeUninit<f32>],
    slopes: &'a mut [MaybeUninit<f32>],
}

impl pulp::WithSimd for GeluAndSlope<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let outputs = self.ys.iter_mut().zip(self.slopes.iter_mut());
        for ((y, s), &x) in outputs.zip(self.xs) {
            let cdf = normal_cdf(x);
            y.write(x * cdf);
            // g'(x) = Φ(x) + x·φ(x)
            s.write(cdf + x * normal_pdf(x));
        }
    }
}

/// Φ(x) = erfc(−x/√2)/2 from the Numerical Recipes erfc (relative error < 1.2e-7), so the
/// left tail keeps its relative precision (GELU of negative inputs is x times a small Φ).
#[inline(always)]
fn normal_cdf(x: f32) -> f32 {
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * z);
    let mut p = 0.170_872_77_f32;
    p = p.mul_add(t, -0.822_152_23);
    p = p.mul_add(t, 1.488_515_9);
    p = p.mul_add(t, -1.135_204);
    p = p.mul_add(t, 0.278_868_07);
    p = p.mul_add(t, -0.186_288_06);
    p = p.mul_add(t, 0.096_784_18);
    p = p.mul_add(t, 0.374_091_96);
    p = p.mul_add(t, 1.000_023_7);
    p = p.mul_add(t, -1.265_512_2);
    let half_erfc = 0.5 * t * exp(p - z * z);
    if x >= 0.0 {
        1.0 - half_erfc
    } else {
        half_erfc
    }
}

/// φ(x) = exp(−x²/2)/√(2π).
#[inline(always)]
fn normal_pdf(x: f32) -> f32 {
    const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;
    FRAC_1_SQRT_2PI * exp(-0.5 * x * x)
}

/// Cephes `expf` without branches (relative error < 1e-7): 2ⁿ · e^r with |r| ≤ ln2/2. Inputs
/// below −87.3 (results under f32's normal range) are clamped, which GELU never notices.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    // Adding 1.5·2²³ rounds to an integer held in the low mantissa bits: n and 2ⁿ come from
    // plain float and integer lane arithmetic (`as i32` would be converted lane by lane).
    const ROUNDING_BIAS: f32 = 12_582_912.0;
    const ROUNDING_BIAS_BITS: u32 = 0x4B40_0000;
    let x = x.clamp(-87.3, 88.3);
    let biased = x * std::f32::consts::LOG2_E + ROUNDING_BIAS;
    let n = biased - ROUNDING_BIAS;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4_f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 0.166_666_65);
    p = p.mul_add(r, 0.5);
    let e_r = (p * r).mul_add(r, r) + 1.0;
    let exponent = biased
        .to_bits()
        .wrapping_sub(ROUNDING_BIAS_BITS)
        .wrapping_add(127);
    e_r * f32::from_bits(exponent << 23)
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
    fn exp_matches_std_to_a_few_ulp() {
        for i in -8700..=8800 {
            let x = i as f32 * 0.01;
            let ours = exp(x) as f64;
            let reference = (x as f64).exp();
            assert!(
                ((ours - reference) / reference).abs() < 2e-7,
                "exp({x}) = {ours}, want {reference}"
            );
        }
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
