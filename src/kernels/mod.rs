//! The hand-written host kernels, and the only folder (with the allocator, `crate::alloc`)
//! where `unsafe` is allowed (`Cargo.toml`'s `[lints]`; `tests/it/layers.rs` checks it).
//!
//! Each kernel takes and returns plain slices and `Vec`s and is safe to call; the burn ops
//! around them (`model::fused`, `model::activation`, `train::cross_entropy`, `train::optim`,
//! `train::ema`: tensors in, autodiff nodes with their `Backward` steps out) hold no `unsafe`.
//! Inside, `unsafe` does two things only: `written` hands a kernel a fresh buffer without
//! zero-filling it, and `matmul::matmul` passes raw, strided operands to `gemm`. Every
//! `unsafe` block says in a `// SAFETY:` comment why it holds (clippy's
//! `undocumented_unsafe_blocks`).
//!
//! Sums are split into fixed blocks and lanes and added in a fixed order, and the products
//! are gemm's, so a seeded run repeats exactly on the same machine and thread count. The
//! loops run inside `vectorized` (pulp's run-time AVX2/AVX-512 dispatch); where no such
//! feature is found (an old CPU, or Miri, which reports none) pulp runs the same closure
//! compiled for the baseline: the scalar path `scripts/miri` checks these kernels on.
//!
//! This folder imports nothing of the crate: `tests/miri/` builds it alone as a library.

#![allow(unsafe_code)]

pub mod adamw;
pub mod attention;
pub mod cross_entropy;
pub mod ema;
pub mod gelu;
pub mod layer_norm;
pub mod linear;
mod matmul;
pub mod weight_norm;

use std::mem::MaybeUninit;

/// A fresh buffer of `len` floats filled by `write`, without zero-filling it first: glibc's
/// `calloc` behind `vec![0.0; len]` clears a reused block (or faults in and clears a fresh
/// one) on the calling thread alone, and the kernels overwrite every element anyway. Those
/// serial clears, with the copies they replaced, were a sixth of the `tiny` step (perf).
///
/// # Safety
/// `write` must initialise every element of the slice it is given (through it or through
/// its pointer) before it returns.
unsafe fn written(len: usize, write: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut buffer = Vec::with_capacity(len);
    write(&mut buffer.spare_capacity_mut()[..len]);
    // SAFETY: the capacity is `len` and the caller's `write` initialised all of it.
    unsafe { buffer.set_len(len) };
    buffer
}

/// The first element's address of an output slice, for `gemm`.
fn out_ptr(buffer: &mut [MaybeUninit<f32>]) -> *mut f32 {
    buffer.as_mut_ptr().cast::<f32>()
}

/// Runs `f` compiled for the CPU found at run time (AVX2 or AVX-512, through `pulp`): mark the
/// closure `#[inline(always)]` so it is inlined into pulp's `#[target_feature]` entry point,
/// where its loops vectorise and `mul_add` is one FMA instruction (compiled for baseline
/// x86-64 it stays scalar and `mul_add` is a libm call).
fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    struct Run<F>(F);
    impl<R, F: FnOnce() -> R> pulp::WithSimd for Run<F> {
        type Output = R;

        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _simd: S) -> R {
            (self.0)()
        }
    }
    pulp::Arch::new().dispatch(Run(f))
}

/// Lanes of the partial sums below: 16 independent accumulators vectorise (one AVX-512
/// register, two AVX2 ones) where a single running sum is a serial chain. Inlined into
/// [`vectorized`] callers.
const LANES: usize = 16;

#[inline(always)]
fn lane_sum(values: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let mut chunks = values.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (l, v) in lanes.iter_mut().zip(chunk) {
            *l += v;
        }
    }
    lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// `Σ (v − mean)²`.
#[inline(always)]
fn lane_square_sum(values: &[f32], mean: f32) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let mut chunks = values.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (l, v) in lanes.iter_mut().zip(chunk) {
            let d = v - mean;
            *l = d.mul_add(d, *l);
        }
    }
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|v| (v - mean) * (v - mean))
        .sum();
    lanes.iter().sum::<f32>() + tail
}

#[inline(always)]
fn lane_dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let mut a_chunks = a.chunks_exact(LANES);
    let mut b_chunks = b.chunks_exact(LANES);
    for (x, y) in (&mut a_chunks).zip(&mut b_chunks) {
        for ((l, u), v) in lanes.iter_mut().zip(x).zip(y) {
            *l = u.mul_add(*v, *l);
        }
    }
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(u, v)| u * v)
        .sum();
    lanes.iter().sum::<f32>() + tail
}

/// Cephes `expf` without branches (relative error < 1e-7): 2ⁿ · e^r with |r| ≤ ln2/2. Inputs
/// below −87.3 (results under f32's normal range) are clamped, which GELU never notices.
#[inline(always)]
fn exp(x: f32) -> f32 {
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

/// `work` on a rayon pool of `threads` threads (the kernels' results must not depend on it).
#[cfg(test)]
pub(crate) fn on_threads<R: Send>(threads: usize, work: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(work)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore = "17 500 points: seconds natively, minutes under Miri")]
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
    fn a_written_buffer_holds_what_was_written() {
        // SAFETY: the closure writes all 37 elements.
        let values = unsafe {
            written(37, |out| {
                for (i, v) in out.iter_mut().enumerate() {
                    v.write(i as f32);
                }
            })
        };
        assert_eq!(values, (0..37).map(|i| i as f32).collect::<Vec<_>>());
        // SAFETY: nothing to write.
        assert!(unsafe { written(0, |_| {}) }.is_empty());
    }

    #[test]
    fn lane_sums_match_plain_sums_on_lengths_around_the_lanes() {
        for len in [0, 1, 15, 16, 17, 33] {
            let a: Vec<f32> = (0..len).map(|i| (i % 5) as f32 - 2.0).collect();
            let b: Vec<f32> = (0..len).map(|i| (i % 3) as f32 * 0.5).collect();
            assert_eq!(vectorized(|| lane_sum(&a)), a.iter().sum::<f32>(), "{len}");
            let dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert_eq!(vectorized(|| lane_dot(&a, &b)), dot, "{len}");
            let squares: f32 = a.iter().map(|x| (x - 0.5) * (x - 0.5)).sum();
            assert_eq!(vectorized(|| lane_square_sum(&a, 0.5)), squares, "{len}");
        }
    }
}
