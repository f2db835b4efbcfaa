//! What the registers (DINOv2 `_reg4`) or storage tokens (DINOv3) do for one image: how much of
//! the CLS query's attention goes to each of them in every block and head (the share the maps
//! leave out, since a register is not a place in the image), and their norms before the final
//! norm beside the patches' ("Vision Transformers Need Registers": the high-norm tokens that
//! appear among the patches of a model without registers move into them).

use burn::prelude::*;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct RegisterStats {
    /// `[block][head][register]`: the CLS query's softmax weight on each register.
    pub cls_share: Vec<Vec<Vec<f32>>>,
    /// ℓ2 norm of each register leaving the last block (before the final norm).
    pub norms: Vec<f32>,
}

impl RegisterStats {
    /// From every block's CLS row `[1, heads, T]` and the last block's output `[1, T, D]`;
    /// tokens 1..prefix are the registers. Empty for a model without them.
    pub fn from_rows(cls_rows: &[Tensor<3>], pre_norm: &Tensor<3>, prefix: usize) -> Self {
        if prefix <= 1 {
            return Self::default();
        }
        let count = prefix - 1;
        let cls_share = cls_rows
            .iter()
            .filter_map(|row| {
                let [_, heads, _] = row.dims();
                let values = row
                    .clone()
                    .slice(s![0..1, .., 1..prefix])
                    .into_data()
                    .try_to_vec::<f32>()
                    .ok()?;
                Some(
                    (0..heads)
                        .map(|h| values[h * count..(h + 1) * count].to_vec())
                        .collect(),
                )
            })
            .collect();
        let norms = pre_norm
            .clone()
            .slice(s![0..1, 1..prefix, ..])
            .powi_scalar(2)
            .sum_dim(2)
            .sqrt()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap_or_default();
        Self { cls_share, norms }
    }

    pub fn is_empty(&self) -> bool {
        self.norms.is_empty()
    }

    /// `[block][head]`: the CLS query's total share on all registers.
    pub fn total_share(&self) -> Vec<Vec<f32>> {
        self.cls_share
            .iter()
            .map(|heads| heads.iter().map(|r| r.iter().sum()).collect())
            .collect()
    }
}
