//! Which DINO generation a backbone belongs to, and what that changes in the ViT: LayerScale,
//! register (storage) tokens between CLS and the patches, the LayerNorm ε, and how positions
//! enter (a learned table interpolated as each hub model does it, or RoPE on the patches).

use burn::module::Param;
use burn::prelude::*;

/// The backbone's generation, read from its keys by the weights loader.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Family {
    /// facebookresearch/dino: pre-norm blocks, learned position table.
    #[default]
    Dino,
    /// facebookresearch/dinov2: LayerScale; `registers` tokens after the position table
    /// (`dinov2_vit*14_reg4`: 4).
    DinoV2 { registers: usize },
    /// facebookresearch/dinov3: LayerScale, `storage` tokens, RoPE on the patch tokens, no
    /// position table, LayerNorm ε 1e-5 (`layernormbf16`).
    DinoV3 { storage: usize },
}

/// How a learned position table reaches another patch grid: the arguments each hub model
/// passes to `nn.functional.interpolate(mode="bicubic")` in `interpolate_pos_encoding`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PosInterpolation {
    /// DINO and plain DINOv2 (`interpolate_offset=0.1`): scale factor (n + 0.1)/side, no
    /// antialias.
    OffsetScale,
    /// DINOv2 with registers (`interpolate_antialias=True, interpolate_offset=0.0`): an
    /// explicit output size, antialiased (PyTorch's `_upsample_bicubic2d_aa`).
    SizeAntialias,
}

impl Family {
    /// Tokens before the patches: CLS and the registers.
    pub fn prefix_tokens(self) -> usize {
        1 + self.registers()
    }

    /// Register (DINOv2) or storage (DINOv3) tokens.
    pub fn registers(self) -> usize {
        match self {
            Family::Dino => 0,
            Family::DinoV2 { registers } => registers,
            Family::DinoV3 { storage } => storage,
        }
    }

    pub fn layer_norm_eps(self) -> f64 {
        match self {
            Family::DinoV3 { .. } => 1e-5,
            _ => crate::model::fused::layer_norm::LAYER_NORM_EPSILON,
        }
    }

    pub fn has_layer_scale(self) -> bool {
        !matches!(self, Family::Dino)
    }

    /// `None`: positions are RoPE in the attention (DINOv3).
    pub fn pos_interpolation(self) -> Option<PosInterpolation> {
        match self {
            Family::Dino | Family::DinoV2 { registers: 0 } => Some(PosInterpolation::OffsetScale),
            Family::DinoV2 { .. } => Some(PosInterpolation::SizeAntialias),
            Family::DinoV3 { .. } => None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Family::Dino => "DINO",
            Family::DinoV2 { .. } => "DINOv2",
            Family::DinoV3 { .. } => "DINOv3",
        }
    }

    /// What the prefix tokens after CLS are called in the family's own code.
    pub fn register_noun(self) -> &'static str {
        match self {
            Family::DinoV3 { .. } => "storage tokens",
            _ => "registers",
        }
    }
}

/// The feed-forward of each block, read from the weights' keys and shapes (the hidden width is
/// the file's: each repository rounds its own way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ffn {
    /// `fc1` → exact GELU → `fc2` (DINO, DINOv2/v3 ViT-S/B/L: `hidden` = 4 × width).
    Mlp { hidden: usize },
    /// SwiGLU: `w3(silu(w1 x) · w2 x)`. DINOv2's ViT-g stores `w1` and `w2` packed as `w12`
    /// (`SwiGLUFFNFused`: hidden = (⌊4d · 2/3⌋ + 7) / 8 · 8); DINOv3's ViT-S+/H+ store them apart
    /// (`SwiGLUFFN`: ⌊6d · 2/3⌋ rounded up to 8). Loaded packed: `fc1` = [w1; w2], `fc2` = w3.
    SwiGlu { hidden: usize },
}

impl Ffn {
    /// DINO's MLP at ratio 4, as training builds it.
    pub fn mlp_of_width(dim: usize) -> Self {
        Ffn::Mlp { hidden: 4 * dim }
    }

    pub fn is_swiglu(self) -> bool {
        matches!(self, Ffn::SwiGlu { .. })
    }
}

/// LayerScale: a learned per-channel factor on a residual branch (`ls1`, `ls2`).
#[derive(Module, Debug)]
pub struct LayerScale {
    pub gamma: Param<Tensor<1>>,
}

impl LayerScale {
    pub fn ones(dim: usize, device: &Device) -> Self {
        Self {
            gamma: Param::from_tensor(Tensor::ones([dim], device)),
        }
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [dim] = self.gamma.dims();
        x * self.gamma.val().reshape([1, 1, dim])
    }
}
