//! Attention beyond the last block: one forward pass that keeps the softmax probabilities of
//! the requested blocks only (the others use fused attention, so asking for the last block
//! costs what `last_cls_attention` costs) and stops after the deepest one unless the final
//! tokens are wanted too.

use super::vit::VisionTransformer;
use burn::prelude::*;

/// What [`VisionTransformer::attention_of_layers`] returns.
pub struct LayersOutput {
    /// `(block index, softmax attention [B, heads, T, T])`, in the order asked (T: CLS, the
    /// registers, then the N patches).
    pub attentions: Vec<(usize, Tensor<4>)>,
    /// Final-norm tokens `[B, T, D]` when asked for (all blocks then run).
    pub tokens: Option<Tensor<3>>,
    /// The last block's output before the final norm, with `tokens` (where high-norm outlier
    /// tokens show; the norm equalises them).
    pub pre_norm_tokens: Option<Tensor<3>>,
    /// Patch grid (rows, cols).
    pub grid: (usize, usize),
    /// Every block's CLS row `[B, heads, T]`, when asked for (the registers panel).
    pub cls_rows: Vec<Tensor<3>>,
}

impl VisionTransformer {
    /// Patch embedding, CLS token and (interpolated) position table, then the registers
    /// between CLS and the patches (DINOv2's `prepare_tokens_with_masks`; DINOv3 has no table,
    /// so its order is the same): the blocks' input.
    pub fn prepare_tokens(&self, images: Tensor<4>) -> (Tensor<3>, (usize, usize)) {
        let [batch, _, height, width] = images.dims();
        let p = self.patch_size();
        let grid = (height / p, width / p);
        let dim = self.embed_dim();
        let patches = self.patch_embed.forward(images);
        let cls = self.cls_token.val().expand([batch, 1, dim]);
        let mut x = Tensor::cat(vec![cls, patches], 1);
        if let Some(pos) = self.interpolate_pos_encoding(grid.0, grid.1) {
            x = x + pos;
        }
        if let Some(registers) = &self.register_tokens {
            let [_, count, _] = registers.dims();
            x = Tensor::cat(
                vec![
                    x.clone().slice(s![.., 0..1, ..]),
                    registers.val().expand([batch, count, dim]),
                    x.slice(s![.., 1.., ..]),
                ],
                1,
            );
        }
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
        self.attention_of_layers_and_cls(images, layers, final_tokens, false)
    }

    /// [`Self::attention_of_layers`], with `cls_rows` also every block's CLS row (the
    /// blocks not asked for compute it from their qkv: no `T × T` map is kept).
    pub fn attention_of_layers_and_cls(
        &self,
        images: Tensor<4>,
        layers: &[usize],
        final_tokens: bool,
        cls_rows: bool,
    ) -> LayersOutput {
        let (mut x, grid) = self.prepare_tokens(images);
        let rope = self.rope_tables(grid);
        let wanted = |i: usize| layers.contains(&i);
        let deepest = layers.iter().copied().filter(|&i| i < self.depth()).max();
        let last_run = if final_tokens || cls_rows {
            self.depth()
        } else {
            deepest.map_or(0, |i| i + 1)
        };
        let mut kept = Vec::new();
        let mut rows = Vec::new();
        for (i, block) in self.blocks.iter().enumerate().take(last_run) {
            if wanted(i) {
                let (next, attn) = block.forward(x, rope.as_ref(), None);
                x = next;
                if cls_rows {
                    let [batch, heads, tokens, _] = attn.dims();
                    let row = attn.clone().slice(s![.., .., 0..1, ..]);
                    rows.push(row.reshape([batch, heads, tokens]));
                }
                kept.push((i, attn));
            } else if cls_rows {
                let (next, row) = block.forward_fused_with_cls(x, rope.as_ref());
                x = next;
                rows.push(row);
            } else {
                x = block.forward_fused(x, rope.as_ref(), None);
            }
        }
        // In the order asked, as the caller listed them.
        let attentions = layers
            .iter()
            .filter_map(|i| kept.iter().find(|(j, _)| j == i).cloned())
            .collect();
        let pre_norm_tokens = final_tokens.then(|| x.clone());
        let tokens = final_tokens.then(|| self.final_norm(x));
        LayersOutput {
            attentions,
            tokens,
            pre_norm_tokens,
            grid,
            cls_rows: rows,
        }
    }

    /// Every block with its softmax attention `[B, heads, T, T]` handed to
    /// `each(block index, attention)` as soon as it is computed and dropped after: one block's
    /// probabilities alive at a time, whatever the depth (ViT-L/14 at 518 px: 16 × 1370² floats,
    /// 120 MB, where all 24 blocks' would be 2.9 GB). Returns the patch grid.
    pub fn each_block_attention(
        &self,
        images: Tensor<4>,
        mut each: impl FnMut(usize, Tensor<4>),
    ) -> (usize, usize) {
        let (mut x, grid) = self.prepare_tokens(images);
        let rope = self.rope_tables(grid);
        for (i, block) in self.blocks.iter().enumerate() {
            let (next, attention) = block.forward(x, rope.as_ref(), None);
            x = next;
            each(i, attention);
        }
        grid
    }
}
