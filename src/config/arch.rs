//! What a backbone is, as plain numbers: width, depth and heads of the named architectures,
//! and the full build description. Here (not in `model`) so configs can be checked and
//! checkpoints described without building a network.

use super::Config;

/// Width, depth and heads of one architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VitArch {
    pub embed_dim: usize,
    pub depth: usize,
    pub num_heads: usize,
}

impl VitArch {
    /// The reference factories plus `vit_micro`, ours, sized to train on two CPU cores.
    pub fn from_name(name: &str) -> Option<Self> {
        let (embed_dim, depth, num_heads) = match name {
            "vit_micro" => (96, 4, 3),
            "vit_tiny" => (192, 12, 3),
            "vit_small" => (384, 12, 6),
            "vit_base" => (768, 12, 12),
            _ => return None,
        };
        Some(Self {
            embed_dim,
            depth,
            num_heads,
        })
    }

    /// [`VitArch::from_name`], and the DINOv2/v3 factories of the official
    /// `vision_transformer.py` whose weights load for the attention view (`--arch`):
    /// `vit_large`, `vit_huge2` (DINOv3 ViT-H+) and `vit_giant2` (DINOv2 ViT-g).
    pub fn from_loadable_name(name: &str) -> Option<Self> {
        let (embed_dim, depth, num_heads) = match name {
            "vit_large" => (1024, 24, 16),
            "vit_huge2" => (1280, 32, 20),
            "vit_giant2" => (1536, 40, 24),
            _ => return Self::from_name(name),
        };
        Some(Self {
            embed_dim,
            depth,
            num_heads,
        })
    }
}

/// Every name [`VitArch::from_loadable_name`] knows, as the messages list them.
pub const LOADABLE_ARCH_NAMES: &str =
    "vit_micro, vit_tiny, vit_small, vit_base, vit_large, vit_huge2 or vit_giant2";

/// Everything needed to build a backbone.
#[derive(Clone, Debug, PartialEq)]
pub struct VitConfig {
    pub arch: VitArch,
    pub patch_size: usize,
    /// Side of the square image the position table is learned for (224 in the reference).
    pub img_size: usize,
    pub drop_path_rate: f64,
}

impl Config {
    /// The backbone this config trains; `drop_path_rate` is the config's for the student and
    /// 0 for a teacher, an evaluation or a loaded model.
    pub fn vit_config(&self, drop_path_rate: f64) -> VitConfig {
        VitConfig {
            arch: self.vit_arch(),
            patch_size: self.model.patch_size,
            img_size: self.data.global_crop_size as usize,
            drop_path_rate,
        }
    }

    /// The shape of the networks in one line, e.g. `vit_micro (96 wide, 4 blocks, 3 heads,
    /// patch 4), head 512 → 256 → K 1024`: what a checkpoint records, so resuming under a
    /// changed architecture is named in words instead of a tensor-shape dump.
    pub fn architecture_line(&self) -> String {
        let arch = self.vit_arch();
        format!(
            "{} ({} wide, {} blocks, {} heads, patch {}), head {} → {} → K {}",
            self.model.arch,
            arch.embed_dim,
            arch.depth,
            arch.num_heads,
            self.model.patch_size,
            self.dino.hidden_dim,
            self.dino.bottleneck_dim,
            self.dino.out_dim
        )
    }
}
