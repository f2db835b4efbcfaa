//! Vision Transformer backbone and DINO projection head, as in facebookresearch/dino's
//! `vision_transformer.py` (reference §1–§2).
//!
//! Weights are initialised on the host from a seeded ChaCha stream, so the same seed gives the
//! same network on the CPU and the GPU backends.

use crate::model::activation::gelu;
use crate::model::fused::attention::{attention, attention_with_probabilities};
use crate::model::fused::layer_norm::layer_norm_eps;
use crate::model::fused::linear::linear as fused_linear;
use burn::module::Param;
use burn::nn::{LayerNorm, Linear};
use burn::prelude::*;
use burn::tensor::activation::{silu, softmax};
use burn::tensor::module::linear;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

pub use super::family::{Family, Ffn, LayerScale, PosInterpolation};
pub use super::init::HostInit;
pub use super::interpolate::{bicubic_antialias_resize_matrix, bicubic_resize_matrix};
pub use super::rope::{RopeEmbed, RopeTables};
pub use crate::config::arch::{VitArch, VitConfig};

/// Patch embedding: the reference's Conv2d(3, D, kernel = stride = p), computed as
/// patchify + matmul, which is the same operation and cheaper than a generic convolution.
/// The weight keeps Conv2d's `[D, 3, p, p]` layout so official weights load unchanged.
#[derive(Module, Debug)]
pub struct PatchEmbed {
    pub weight: Param<Tensor<4>>,
    pub bias: Param<Tensor<1>>,
    #[module(skip)]
    pub patch_size: usize,
}

impl PatchEmbed {
    fn new(init: &mut HostInit, dim: usize, patch_size: usize, device: &Device) -> Self {
        let fan_in = 3 * patch_size * patch_size;
        let weight = HostInit::tensor(
            init.kaiming_uniform(dim * fan_in, fan_in),
            [dim, 3, patch_size, patch_size],
            device,
        );
        let bias = HostInit::tensor(init.kaiming_uniform(dim, fan_in), [dim], device);
        Self {
            weight: Param::from_tensor(weight),
            bias: Param::from_tensor(bias),
            patch_size,
        }
    }

    /// `[B, 3, H, W]` → `[B, (H/p)(W/p), D]`, tokens row-major over the patch grid.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<3> {
        let [batch, channels, height, width] = images.dims();
        let p = self.patch_size;
        let (rows, cols) = (height / p, width / p);
        let patches = images
            .slice(s![.., .., 0..rows * p, 0..cols * p])
            .reshape([batch, channels, rows, p, cols, p])
            .permute([0, 2, 4, 1, 3, 5])
            .reshape([batch * rows * cols, channels * p * p]);
        let [dim, _, _, _] = self.weight.dims();
        let weight = self
            .weight
            .val()
            .reshape([dim, channels * p * p])
            .transpose();
        // One 2-D matmul over all patches of all images (see `linear_tokens`).
        linear(patches, weight, Some(self.bias.val())).reshape([batch, rows * cols, dim])
    }
}

/// A `Linear` over every token as one `[B·N, D] × [D, O]` matmul (the fused op on the CPU
/// backend). burn's `linear`, which other devices run, keeps a 3-D input as a batched matmul
/// unless merging makes the output squarer, which for ViT widths it never does; the CPU
/// backend then ran one small gemm per image and packed the weight again for each.
fn linear_tokens(layer: &Linear, x: Tensor<3>) -> Tensor<3> {
    let [batch, tokens, dim] = x.dims();
    let out = fused_linear(layer, x.reshape([batch * tokens, dim]));
    let [_, out_dim] = out.dims();
    out.reshape([batch, tokens, out_dim])
}

#[derive(Module, Debug)]
pub struct Attention {
    pub qkv: Linear,
    pub proj: Linear,
    #[module(skip)]
    pub num_heads: usize,
}

impl Attention {
    /// q, k, v of every token, with RoPE applied when the model has it (DINOv3).
    fn qkv(&self, x: Tensor<3>, rope: Option<&RopeTables>) -> Tensor<3> {
        let qkv = linear_tokens(&self.qkv, x);
        match rope {
            Some(rope) => rope.apply(qkv),
            None => qkv,
        }
    }

    /// Returns the output and the post-softmax attention `[B, heads, N, N]`.
    pub fn forward(&self, x: Tensor<3>, rope: Option<&RopeTables>) -> (Tensor<3>, Tensor<4>) {
        let qkv = self.qkv(x, rope);
        let (out, probs) = attention_with_probabilities(qkv, self.num_heads);
        (linear_tokens(&self.proj, out), probs)
    }
}

/// The block's feed-forward: an MLP, or SwiGLU with `fc1` = [w1; w2] (one matmul for both
/// halves) and `fc2` = w3 (see [`Ffn`]).
#[derive(Module, Debug)]
pub struct Mlp {
    pub fc1: Linear,
    pub fc2: Linear,
    #[module(skip)]
    pub swiglu: bool,
}

impl Mlp {
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let hidden = linear_tokens(&self.fc1, x);
        let hidden = if self.swiglu {
            // `x1, x2 = x12.chunk(2, dim=-1); silu(x1) * x2`, as both repositories' SwiGLU.
            let [_, _, packed] = hidden.dims();
            let half = packed / 2;
            let gate = hidden.clone().slice(s![.., .., 0..half]);
            silu(gate) * hidden.slice(s![.., .., half..packed])
        } else {
            // GELU in its exact erf form, as PyTorch's default (`crate::model::activation`).
            gelu(hidden)
        };
        linear_tokens(&self.fc2, hidden)
    }
}

#[derive(Module, Debug)]
pub struct Block {
    pub norm1: LayerNorm,
    pub attn: Attention,
    /// LayerScale of the attention branch (DINOv2/v3).
    pub ls1: Option<LayerScale>,
    pub norm2: LayerNorm,
    pub mlp: Mlp,
    pub ls2: Option<LayerScale>,
    #[module(skip)]
    pub drop_path_prob: f64,
    /// ε of `norm1` and `norm2` (the family's).
    #[module(skip)]
    pub layer_norm_eps: f64,
}

fn scaled(layer_scale: &Option<LayerScale>, x: Tensor<3>) -> Tensor<3> {
    match layer_scale {
        Some(ls) => ls.forward(x),
        None => x,
    }
}

/// Per-sample stochastic depth: a `[B, 1, 1]` keep mask scaled by 1/keep_prob (timm's
/// `drop_path`), drawn on the host so a seed reproduces it on any device.
fn drop_path(branch: Tensor<3>, drop_prob: f64, rng: Option<&mut ChaCha8Rng>) -> Tensor<3> {
    let Some(rng) = rng else { return branch };
    if drop_prob <= 0.0 {
        return branch;
    }
    let keep_prob = 1.0 - drop_prob;
    let [batch, _, _] = branch.dims();
    let mask: Vec<f32> = (0..batch)
        .map(|_| {
            if rng.random::<f64>() < keep_prob {
                (1.0 / keep_prob) as f32
            } else {
                0.0
            }
        })
        .collect();
    let mask = Tensor::<3>::from_data(TensorData::new(mask, [batch, 1, 1]), &branch.device());
    branch.mul(mask)
}

impl Block {
    /// As [`Block::forward`] without the attention probabilities (fused attention).
    pub fn forward_fused(
        &self,
        x: Tensor<3>,
        rope: Option<&RopeTables>,
        rng: Option<&mut ChaCha8Rng>,
    ) -> Tensor<3> {
        let attended = self.attn.forward_fused(
            layer_norm_eps(&self.norm1, x.clone(), self.layer_norm_eps),
            rope,
        );
        self.residuals(x, attended, rng)
    }

    /// As [`Block::forward_fused`], with the CLS query's attention over all tokens
    /// `[B, heads, T]` from the same q, k (no `T × T` probabilities kept).
    pub fn forward_fused_with_cls(
        &self,
        x: Tensor<3>,
        rope: Option<&RopeTables>,
    ) -> (Tensor<3>, Tensor<3>) {
        let (attended, cls) = self.attn.forward_fused_with_cls(
            layer_norm_eps(&self.norm1, x.clone(), self.layer_norm_eps),
            rope,
        );
        (self.residuals(x, attended, None), cls)
    }

    pub fn forward(
        &self,
        x: Tensor<3>,
        rope: Option<&RopeTables>,
        rng: Option<&mut ChaCha8Rng>,
    ) -> (Tensor<3>, Tensor<4>) {
        let (attended, attn) = self.attn.forward(
            layer_norm_eps(&self.norm1, x.clone(), self.layer_norm_eps),
            rope,
        );
        (self.residuals(x, attended, rng), attn)
    }

    /// The block after its attention: LayerScale and drop path on both residual branches,
    /// the MLP's between them.
    fn residuals(
        &self,
        x: Tensor<3>,
        attended: Tensor<3>,
        mut rng: Option<&mut ChaCha8Rng>,
    ) -> Tensor<3> {
        let attended = scaled(&self.ls1, attended);
        let x = x + drop_path(attended, self.drop_path_prob, rng.as_deref_mut());
        let mlp = scaled(
            &self.ls2,
            self.mlp
                .forward(layer_norm_eps(&self.norm2, x.clone(), self.layer_norm_eps)),
        );
        x + drop_path(mlp, self.drop_path_prob, rng)
    }
}

/// Output of one backbone pass.
pub struct BackboneOutput {
    /// Final-LayerNorm CLS token, `[B, D]`: the feature for the head and for k-NN.
    pub cls: Tensor<2>,
    /// Last block's softmax attention `[B, heads, T, T]` (T = prefix tokens + N), from the
    /// same pass.
    pub last_attention: Tensor<4>,
    /// Patch grid (rows, cols) of this input.
    pub grid: (usize, usize),
    /// Final-LayerNorm tokens `[B, T, D]` (CLS, registers, patches), for the patch-feature PCA; shares the
    /// pass's buffer, so training pays nothing for it.
    pub tokens: Tensor<3>,
}

#[derive(Module, Debug)]
pub struct VisionTransformer {
    pub patch_embed: PatchEmbed,
    pub cls_token: Param<Tensor<3>>,
    /// The learned position table `[1, 1 + side², D]`; none in DINOv3 (RoPE).
    pub pos_embed: Option<Param<Tensor<3>>>,
    /// DINOv2's `register_tokens` or DINOv3's `storage_tokens`, `[1, R, D]`, placed between
    /// CLS and the patches.
    pub register_tokens: Option<Param<Tensor<3>>>,
    /// DINOv3's RoPE periods.
    pub rope_embed: Option<RopeEmbed>,
    pub blocks: Vec<Block>,
    pub norm: LayerNorm,
    #[module(skip)]
    pub num_heads: usize,
    #[module(skip)]
    pub family: Family,
}

impl VisionTransformer {
    /// A DINO (v1) ViT with seeded weights, as training builds it.
    pub fn new(config: &VitConfig, init: &mut HostInit, device: &Device) -> Self {
        let ffn = Ffn::mlp_of_width(config.arch.embed_dim);
        Self::new_family(config, Family::Dino, ffn, init, device)
    }

    /// A backbone of `family` to load weights into. DINO's seeded stream is drawn exactly as
    /// [`VisionTransformer::new`] always did; the later families' extra tensors (LayerScale
    /// ones, zero registers, RoPE's default periods) take nothing from it.
    pub fn new_family(
        config: &VitConfig,
        family: Family,
        ffn: Ffn,
        init: &mut HostInit,
        device: &Device,
    ) -> Self {
        let VitArch {
            embed_dim: dim,
            depth,
            num_heads,
        } = config.arch;
        let grid = config.img_size / config.patch_size;
        let patch_embed = PatchEmbed::new(init, dim, config.patch_size, device);
        let cls_token = HostInit::tensor(init.trunc_normal(dim, 0.02), [1, 1, dim], device);
        let tokens = 1 + grid * grid;
        let pos_embed = HostInit::tensor(
            init.trunc_normal(tokens * dim, 0.02),
            [1, tokens, dim],
            device,
        );
        let blocks = (0..depth)
            .map(|i| {
                // Stochastic depth grows linearly from 0 at block 0 to the rate at the last.
                let drop_path_prob = if depth > 1 {
                    config.drop_path_rate * i as f64 / (depth - 1) as f64
                } else {
                    config.drop_path_rate
                };
                let layer_scale = || {
                    family
                        .has_layer_scale()
                        .then(|| LayerScale::ones(dim, device))
                };
                Block {
                    norm1: init.layer_norm_eps(dim, family.layer_norm_eps(), device),
                    attn: Attention {
                        qkv: init.linear(dim, 3 * dim, device),
                        proj: init.linear(dim, dim, device),
                        num_heads,
                    },
                    ls1: layer_scale(),
                    norm2: init.layer_norm_eps(dim, family.layer_norm_eps(), device),
                    mlp: match ffn {
                        Ffn::Mlp { hidden } => Mlp {
                            fc1: init.linear(dim, hidden, device),
                            fc2: init.linear(hidden, dim, device),
                            swiglu: false,
                        },
                        Ffn::SwiGlu { hidden } => Mlp {
                            fc1: init.linear(dim, 2 * hidden, device),
                            fc2: init.linear(hidden, dim, device),
                            swiglu: true,
                        },
                    },
                    ls2: layer_scale(),
                    drop_path_prob,
                    layer_norm_eps: family.layer_norm_eps(),
                }
            })
            .collect();
        let norm = init.layer_norm_eps(dim, family.layer_norm_eps(), device);
        let registers = family.registers();
        let is_v3 = matches!(family, Family::DinoV3 { .. });
        Self {
            patch_embed,
            cls_token: Param::from_tensor(cls_token),
            pos_embed: (!is_v3).then(|| Param::from_tensor(pos_embed)),
            register_tokens: (registers > 0)
                .then(|| Param::from_tensor(Tensor::zeros([1, registers, dim], device))),
            rope_embed: is_v3.then(|| RopeEmbed::new(dim / num_heads.max(1), 100.0, device)),
            blocks,
            norm,
            num_heads,
            family,
        }
    }

    /// CLS and the registers: the patch tokens start at this index.
    pub fn prefix_tokens(&self) -> usize {
        1 + self
            .register_tokens
            .as_ref()
            .map_or(0, |registers| registers.dims()[1])
    }

    /// RoPE's tables for this grid (DINOv3), else `None`.
    pub fn rope_tables(&self, grid: (usize, usize)) -> Option<RopeTables> {
        self.rope_embed
            .as_ref()
            .map(|rope| rope.tables(grid, self.prefix_tokens(), self.num_heads, self.embed_dim()))
    }

    /// The final LayerNorm with the family's ε.
    pub fn final_norm(&self, x: Tensor<3>) -> Tensor<3> {
        layer_norm_eps(&self.norm, x, self.family.layer_norm_eps())
    }

    pub fn embed_dim(&self) -> usize {
        let [_, _, dim] = self.cls_token.dims();
        dim
    }

    pub fn patch_size(&self) -> usize {
        self.patch_embed.patch_size
    }

    /// Drops stochastic depth (the teacher and inference never use it).
    pub fn without_drop_path(mut self) -> Self {
        for block in &mut self.blocks {
            block.drop_path_prob = 0.0;
        }
        self
    }

    /// The position table for a `rows × cols` patch grid (reference §1.5), resized as the
    /// family's hub model does it; `None` without a table (DINOv3).
    pub fn interpolate_pos_encoding(&self, rows: usize, cols: usize) -> Option<Tensor<3>> {
        let pos_embed = self.pos_embed.as_ref()?.val();
        let [_, tokens, dim] = pos_embed.dims();
        let n0 = tokens - 1;
        if rows * cols == n0 && rows == cols {
            return Some(pos_embed);
        }
        let side = (n0 as f64).sqrt().round() as usize;
        let class_pos = pos_embed.clone().slice(s![.., 0..1, ..]);
        let patch_pos = pos_embed.slice(s![.., 1.., ..]).reshape([n0, dim]);
        let matrix = match self.family.pos_interpolation() {
            Some(PosInterpolation::SizeAntialias) => {
                bicubic_antialias_resize_matrix(side, rows, cols)
            }
            _ => bicubic_resize_matrix(side, rows, cols),
        };
        let matrix = Tensor::<2>::from_data(
            TensorData::new(matrix, [rows * cols, side * side]),
            &patch_pos.device(),
        );
        let resized = matrix.matmul(patch_pos).reshape([1, rows * cols, dim]);
        Some(Tensor::cat(vec![class_pos, resized], 1))
    }

    /// The final-norm CLS feature `[B, D]` alone (training, k-NN): every block uses fused
    /// attention, since no attention map is wanted.
    pub fn forward_cls(&self, images: Tensor<4>, mut rng: Option<&mut ChaCha8Rng>) -> Tensor<2> {
        let [batch, ..] = images.dims();
        let dim = self.embed_dim();
        let (mut x, grid) = self.prepare_tokens(images);
        let rope = self.rope_tables(grid);
        for block in &self.blocks {
            x = block.forward_fused(x, rope.as_ref(), rng.as_deref_mut());
        }
        self.norm
            .forward(x.slice(s![.., 0..1, ..]))
            .reshape([batch, dim])
    }

    /// Tokens → blocks → final norm. `rng` enables stochastic depth (student only).
    pub fn forward(&self, images: Tensor<4>, mut rng: Option<&mut ChaCha8Rng>) -> BackboneOutput {
        let [batch, ..] = images.dims();
        let dim = self.embed_dim();
        let (mut x, grid) = self.prepare_tokens(images);
        let rope = self.rope_tables(grid);
        // Only the last block's probabilities are returned: the others use fused attention.
        let mut last_attention = None;
        let last = self.blocks.len().saturating_sub(1);
        for (i, block) in self.blocks.iter().enumerate() {
            if i < last {
                x = block.forward_fused(x, rope.as_ref(), rng.as_deref_mut());
            } else {
                let (next, attn) = block.forward(x, rope.as_ref(), rng.as_deref_mut());
                x = next;
                last_attention = Some(attn);
            }
        }
        let x = self.final_norm(x);
        let tokens = x.clone();
        let cls = x.slice(s![.., 0..1, ..]).reshape([batch, dim]);
        let last_attention = last_attention
            .unwrap_or_else(|| Tensor::zeros([batch, self.num_heads, 1, 1], &cls.device()));
        BackboneOutput {
            cls,
            last_attention,
            grid,
            tokens,
        }
    }
}

impl VisionTransformer {
    /// The last block's attention of the CLS query over all tokens, `[B, heads, T]`, as the
    /// official `get_last_selfattention`: blocks 0..L−1 run in full, the last one only as far
    /// as its softmax, and only for the CLS query (a 480-px image with patch 8 would otherwise
    /// need 6 × 3601² probabilities).
    pub fn last_cls_attention(&self, images: Tensor<4>) -> (Tensor<3>, (usize, usize)) {
        let [batch, ..] = images.dims();
        let (mut x, grid) = self.prepare_tokens(images);
        let rope = self.rope_tables(grid);
        let Some((last, earlier)) = self.blocks.split_last() else {
            let tokens = self.prefix_tokens() + grid.0 * grid.1;
            return (
                Tensor::zeros([batch, self.num_heads, tokens], &x.device()),
                grid,
            );
        };
        for block in earlier {
            x = block.forward_fused(x, rope.as_ref(), None);
        }
        let normed = layer_norm_eps(&last.norm1, x, last.layer_norm_eps);
        (last.attn.cls_attention(normed, rope.as_ref()), grid)
    }
}

impl Attention {
    /// The same output as [`Attention::forward`] without keeping the probabilities (on the
    /// CPU backend one N × N scratch per task instead of a `[B, heads, N, N]` tensor; burn's
    /// fused attention elsewhere), for passes that need no attention map.
    pub fn forward_fused(&self, x: Tensor<3>, rope: Option<&RopeTables>) -> Tensor<3> {
        let out = attention(self.qkv(x, rope), self.num_heads);
        linear_tokens(&self.proj, out)
    }

    /// [`Attention::forward_fused`] and [`Attention::cls_attention`] from one qkv product.
    pub fn forward_fused_with_cls(
        &self,
        x: Tensor<3>,
        rope: Option<&RopeTables>,
    ) -> (Tensor<3>, Tensor<3>) {
        let qkv = self.qkv(x, rope);
        let cls = cls_row_of_qkv(qkv.clone(), self.num_heads);
        let out = attention(qkv, self.num_heads);
        (linear_tokens(&self.proj, out), cls)
    }

    /// Softmax attention of the CLS query (token 0) over all keys, `[B, heads, tokens]`.
    pub fn cls_attention(&self, x: Tensor<3>, rope: Option<&RopeTables>) -> Tensor<3> {
        cls_row_of_qkv(self.qkv(x, rope), self.num_heads)
    }
}

/// The CLS query's softmax attention over all keys, `[B, heads, tokens]`, from the qkv
/// output `[B, tokens, 3 · dim]` (q, k, v, heads within each).
fn cls_row_of_qkv(qkv: Tensor<3>, heads: usize) -> Tensor<3> {
    let [batch, tokens, width] = qkv.dims();
    let head_dim = width / 3 / heads;
    let qkv = qkv
        .reshape([batch, tokens, 3, heads, head_dim])
        .permute([2, 0, 3, 1, 4]);
    let q_cls = qkv
        .clone()
        .slice(s![0..1, .., .., 0..1, ..])
        .reshape([batch, heads, 1, head_dim]);
    let k = qkv
        .slice(s![1..2])
        .reshape([batch, heads, tokens, head_dim]);
    let scale = (head_dim as f64).powf(-0.5);
    let scores = q_cls.matmul(k.swap_dims(2, 3)).mul_scalar(scale);
    softmax(scores, 3).reshape([batch, heads, tokens])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::head::*;
    use rand::SeedableRng;

    fn micro(patch: usize, img: usize) -> VitConfig {
        VitConfig {
            arch: VitArch {
                embed_dim: 24,
                depth: 2,
                num_heads: 3,
            },
            patch_size: patch,
            img_size: img,
            drop_path_rate: 0.1,
        }
    }

    #[test]
    fn shapes_of_every_module() {
        let device = Device::flex();
        let model = DinoModel::new(&micro(4, 16), 32, 16, 10, 0, &device);
        let images = Tensor::<4>::zeros([2, 3, 16, 16], &device);
        let patches = model.backbone.patch_embed.forward(images.clone());
        assert_eq!(patches.dims(), [2, 16, 24]);
        let tokens = Tensor::<3>::zeros([2, 17, 24], &device);
        let (out, attn) = model.backbone.blocks[0].attn.forward(tokens.clone(), None);
        assert_eq!(out.dims(), [2, 17, 24]);
        assert_eq!(attn.dims(), [2, 3, 17, 17]);
        assert_eq!(
            model.backbone.blocks[0].mlp.forward(tokens).dims(),
            [2, 17, 24]
        );
        let out = model.backbone.forward(images, None);
        assert_eq!(out.cls.dims(), [2, 24]);
        assert_eq!(out.last_attention.dims(), [2, 3, 17, 17]);
        assert_eq!(out.grid, (4, 4));
        let head = model.head.forward(out.cls);
        assert_eq!(head.dims(), [2, 10]);
        // Non-square and smaller inputs interpolate the position table.
        let out = model
            .backbone
            .forward(Tensor::<4>::zeros([1, 3, 8, 12], &device), None);
        assert_eq!(out.last_attention.dims(), [1, 3, 7, 7]);
        assert_eq!(out.grid, (2, 3));
    }

    #[test]
    fn attention_rows_are_distributions() {
        let device = Device::flex();
        let model = DinoModel::new(&micro(4, 16), 32, 16, 10, 1, &device);
        let images =
            Tensor::<4>::random([2, 3, 16, 16], burn::tensor::Distribution::Default, &device);
        let attn = model.backbone.forward(images, None).last_attention;
        let sums = attn.sum_dim(3).into_data_as::<f32>();
        for s in sums.as_slice::<f32>().unwrap() {
            assert!((s - 1.0).abs() < 1e-4);
        }
    }

    #[test]
    fn head_logits_are_cosines_when_g_is_one() {
        let device = Device::flex();
        let model = DinoModel::new(&micro(4, 16), 32, 16, 10, 2, &device);
        let x = Tensor::<2>::random([4, 24], burn::tensor::Distribution::Default, &device);
        let logits = model.head.forward(x).into_data_as::<f32>();
        for v in logits.as_slice::<f32>().unwrap() {
            assert!(v.abs() <= 1.0 + 1e-5);
        }
    }

    #[test]
    fn same_seed_same_weights() {
        let device = Device::flex();
        let a = DinoModel::new(&micro(4, 16), 32, 16, 10, 7, &device);
        let b = DinoModel::new(&micro(4, 16), 32, 16, 10, 7, &device);
        let ta = a.backbone.pos_embed.unwrap().val().into_data_as::<f32>();
        let tb = b.backbone.pos_embed.unwrap().val().into_data_as::<f32>();
        assert_eq!(ta.as_slice::<f32>().unwrap(), tb.as_slice::<f32>().unwrap());
    }

    #[test]
    fn drop_path_only_with_rng() {
        let device = Device::flex();
        let x = Tensor::<3>::ones([64, 2, 2], &device);
        let same = drop_path(x.clone(), 0.5, None);
        assert_eq!(same.sum().into_scalar::<f32>(), 256.0);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let dropped = drop_path(x, 0.5, Some(&mut rng)).into_data_as::<f32>();
        let values = dropped.as_slice::<f32>().unwrap();
        assert!(values.iter().all(|v| *v == 0.0 || (*v - 2.0).abs() < 1e-6));
        assert!(values.contains(&0.0));
    }
}
