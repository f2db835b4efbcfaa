//! DINOv3's rotary position embedding (`dinov3/layers/rope_position_encoding.py`,
//! `layers/attention.py`): axial RoPE on the queries and keys of the patch tokens only.
//! Patch centres are mapped to [-1, 1] per axis ("separate"), angle = 2π·coord/period for each
//! of the `head_dim/4` periods and both axes, tiled twice, and `x·cos + rotate_half(x)·sin`
//! with `rotate_half([a|b]) = [-b|a]` inside each head. `rescale_coords` is a training-time
//! augmentation and is not applied in evaluation, as here.

use burn::module::Param;
use burn::prelude::*;

/// `rope_embed` of the hub file: its one tensor, the periods (`[head_dim / 4]`, base 100).
#[derive(Module, Debug)]
pub struct RopeEmbed {
    pub periods: Param<Tensor<1>>,
}

/// cos and sin over the rows of the fused `qkv` output `[1, tokens, 3·dim]`: the rotation on
/// the q and k thirds of the patch tokens, the identity (cos 1, sin 0) on the prefix tokens
/// and on v.
#[derive(Clone, Debug)]
pub struct RopeTables {
    cos: Tensor<3>,
    sin: Tensor<3>,
    heads: usize,
}

impl RopeEmbed {
    /// Periods `base^(2i / (head_dim/2))`, as `_init_weights` (the loaded file replaces them).
    pub fn new(head_dim: usize, base: f64, device: &Device) -> Self {
        let quarter = head_dim / 4;
        let periods: Vec<f32> = (0..quarter)
            .map(|i| base.powf(2.0 * i as f64 / (head_dim / 2) as f64) as f32)
            .collect();
        Self {
            periods: Param::from_tensor(Tensor::from_data(
                TensorData::new(periods, [quarter]),
                device,
            )),
        }
    }

    /// The tables for a `rows × cols` grid after `prefix` tokens, with `heads` heads of a
    /// `dim`-wide model. Computed in f32 in the reference's order of operations.
    pub fn tables(
        &self,
        grid: (usize, usize),
        prefix: usize,
        heads: usize,
        dim: usize,
    ) -> RopeTables {
        let periods: Vec<f32> = self
            .periods
            .val()
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap_or_default();
        let device = self.periods.device();
        let (rows, cols) = grid;
        let head_dim = dim / heads.max(1);
        let quarter = periods.len();
        let tokens = prefix + rows * cols;
        let width = 3 * dim;
        let mut cos = vec![1f32; tokens * width];
        let mut sin = vec![0f32; tokens * width];
        let two_pi = (2.0 * std::f64::consts::PI) as f32;
        for r in 0..rows {
            for c in 0..cols {
                // arange(0.5, H) / H, then 2c − 1.
                let coords = [
                    2.0 * ((r as f32 + 0.5) / rows as f32) - 1.0,
                    2.0 * ((c as f32 + 0.5) / cols as f32) - 1.0,
                ];
                // [2, D/4] flattened to D/2, tiled twice to the head dimension.
                let angles: Vec<f32> = coords
                    .iter()
                    .flat_map(|&coord| periods.iter().map(move |&p| two_pi * coord / p))
                    .collect();
                let row = (prefix + r * cols + c) * width;
                for part in 0..2 {
                    for h in 0..heads {
                        let start = row + part * dim + h * head_dim;
                        for j in 0..head_dim.min(4 * quarter) {
                            let angle = angles[j % (2 * quarter)];
                            cos[start + j] = angle.cos();
                            sin[start + j] = angle.sin();
                        }
                    }
                }
            }
        }
        let table = |values: Vec<f32>| {
            Tensor::<3>::from_data(TensorData::new(values, [1, tokens, width]), &device)
        };
        RopeTables {
            cos: table(cos),
            sin: table(sin),
            heads,
        }
    }
}

impl RopeTables {
    /// The rotated `qkv` `[B, tokens, 3·dim]` (q and k of the patch tokens).
    pub fn apply(&self, qkv: Tensor<3>) -> Tensor<3> {
        let [batch, tokens, width] = qkv.dims();
        let half = width / (3 * self.heads * 2);
        let split = qkv
            .clone()
            .reshape([batch, tokens, 3 * self.heads, 2, half]);
        let first = split.clone().slice(s![.., .., .., 0..1, ..]);
        let second = split.slice(s![.., .., .., 1..2, ..]);
        let rotated = Tensor::cat(vec![second.neg(), first], 3).reshape([batch, tokens, width]);
        qkv * self.cos.clone() + rotated * self.sin.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_tokens_and_values_are_untouched_and_norms_kept() {
        let device = Device::flex();
        let (heads, dim) = (2, 16);
        let rope = RopeEmbed::new(dim / heads, 100.0, &device);
        let tables = rope.tables((2, 3), 1, heads, dim);
        let qkv = Tensor::<3>::random(
            [1, 7, 3 * dim],
            burn::tensor::Distribution::Default,
            &device,
        );
        let out = tables.apply(qkv.clone());
        let (a, b) = (
            qkv.into_data().try_to_vec::<f32>().unwrap(),
            out.into_data().try_to_vec::<f32>().unwrap(),
        );
        // Token 0 (CLS) and every v third are unchanged.
        assert_eq!(a[..3 * dim], b[..3 * dim]);
        for t in 0..7 {
            let v = t * 3 * dim + 2 * dim;
            assert_eq!(a[v..v + dim], b[v..v + dim]);
        }
        // A rotation keeps each (x_j, x_{j+half}) pair's norm within a head.
        let t = 4 * 3 * dim;
        for j in 0..4 {
            let n = |x: &[f32]| x[t + j].hypot(x[t + j + 4]);
            assert!((n(&a) - n(&b)).abs() < 1e-5);
        }
    }
}
