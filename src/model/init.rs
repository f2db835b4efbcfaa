//! `HostInit`: the reference's weight initialisers (`trunc_normal_`, PyTorch's default
//! `kaiming_uniform_`) drawn on the host from a seeded ChaCha stream, so the same seed gives
//! the same network on every backend.

use burn::module::Param;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Host-side initialisers matching the reference's `_init_weights` and PyTorch defaults.
pub struct HostInit {
    rng: ChaCha8Rng,
}

impl HostInit {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// `trunc_normal_(std=0.02)`: bounds are absolute ±2, i.e. effectively a plain normal.
    pub(crate) fn trunc_normal(&mut self, count: usize, std: f64) -> Vec<f32> {
        let mut values = Vec::with_capacity(count);
        while values.len() < count {
            // Box–Muller: two uniforms in (0,1] give one standard normal.
            let u1: f64 = 1.0 - self.rng.random::<f64>();
            let u2: f64 = self.rng.random::<f64>();
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * std;
            if z.abs() <= 2.0 {
                values.push(z as f32);
            }
        }
        values
    }

    /// PyTorch's default `kaiming_uniform_(a=√5)`, i.e. U(±1/√fan_in).
    pub(crate) fn kaiming_uniform(&mut self, count: usize, fan_in: usize) -> Vec<f32> {
        let bound = 1.0 / (fan_in as f64).sqrt();
        (0..count)
            .map(|_| self.rng.random_range(-bound..bound) as f32)
            .collect()
    }

    pub(crate) fn tensor<const D: usize>(
        values: Vec<f32>,
        shape: [usize; D],
        device: &Device,
    ) -> Tensor<D> {
        Tensor::from_data(TensorData::new(values, shape), device)
    }

    /// `nn.Linear` with weight trunc-normal(0.02) and bias 0 (burn layout `[in, out]`).
    pub fn linear(&mut self, d_in: usize, d_out: usize, device: &Device) -> Linear {
        let weight = Self::tensor(self.trunc_normal(d_in * d_out, 0.02), [d_in, d_out], device);
        let mut layer = LinearConfig::new(d_in, d_out).init(device);
        layer.weight = Param::from_tensor(weight);
        layer.bias = Some(Param::from_tensor(Tensor::zeros([d_out], device)));
        layer
    }

    pub fn layer_norm(&mut self, dim: usize, device: &Device) -> LayerNorm {
        self.layer_norm_eps(dim, super::fused::layer_norm::LAYER_NORM_EPSILON, device)
    }

    /// A LayerNorm with another ε (DINOv3's 1e-5).
    pub fn layer_norm_eps(&mut self, dim: usize, epsilon: f64, device: &Device) -> LayerNorm {
        LayerNormConfig::new(dim).with_epsilon(epsilon).init(device)
    }
}
