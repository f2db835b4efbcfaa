//! Attention beyond the last block: one forward pass that keeps the softmax probabilities of
//! the requested blocks only (the others use fused attention, so asking for the last block
//! costs what `last_cls_attention` costs) and stops after the deepest one unless the final
//! tokens are wanted too.

use super::vit::VisionTransformer;
use crate::model::fused::layer_norm::layer_norm;
use burn::prelude::*;

/// What [`VisionTransformer::attention_of_layers`] returns.
pub struct LayersOutput {
    /// `(block index, softmax attention [B, heads, 1+N, 1+N])`, in the order asked.
    pub attentions: Vec<(usize, Tensor<4>)>,
    /// Final-norm tokens `[B, 1+N, D]` when asked for (all blocks then run).
    pub tokens: Option<Tensor<3>>,
    /// The last block's output before the final norm, with `tokens` (where high-norm outlier
    /// tokens show; the norm equalises them).
    pub pre_norm_tokens: Option<Tensor<3>>,
    /// Patch grid (rows, cols).
    pub grid: (usize, usize),
}

impl VisionTransformer {
    /// Patch embedding, CLS token and (interpolated) position table: the blocks' input.
    pub fn prepare_tokens(&self, images: Tensor<4>) -> (Tensor<3>, (usize, usize)) {
        let [batch, _, height, width] = images.dims();
        let p = self.patch_size();
        let grid = (height / p, width / p);
        let dim = self.embed_dim();
        let patches = self.patch_embed.forward(images);
        let cls = self.cls_token.val().expand([batch, 1, dim]);
        let x = Tensor::cat(vec![cls, patches], 1) + self.interpolate_pos_encoding(grid.0, grid.1);
        (x, grid)
    }

    pub fn depth(&self) -> usize {
        self.blocks.len()
    }

    /// The attention probabilities of blocks `layers` (indices out of range are skipped) in
    /// one pass; `final_tokens` also runs the remaining blocks and the final norm.
    pub fn attention_of_layers(
        &self,
        images: Tensor<4>,
        layers: &[usize],
        final_tokens: bool,
    ) -> LayersOutput {
        let (mut x, grid) = self.prepare_tokens(images);
        let wanted = |i: usize| layers.contains(&i);
        let deepest = layers.iter().copied().filter(|&i| i < self.depth()).max();
        let last_run = if final_tokens {
            self.depth()
        } else {
            deepest.map_or(0, |i| i + 1)
        };
        let mut kept = Vec::new();
        for (i, block) in self.blocks.iter().enumerate().take(last_run) {
            if wanted(i) {
                let (next, attn) = block.forward(x, None);
                x = next;
                kept.push((i, attn));
            } else {
                x = block.forward_fused(x, None);
            }
        }
        // In the order asked, as the caller listed them.
        let attentions = layers
            .iter()
            .filter_map(|i| kept.iter().find(|(j, _)| j == i).cloned())
            .collect();
        let pre_norm_tokens = final_tokens.then(|| x.clone());
        let tokens = final_tokens.then(|| layer_norm(&self.norm, x));
        LayersOutput {
            attentions,
            tokens,
            pre_norm_tokens,
            grid,
        }
    }
}
