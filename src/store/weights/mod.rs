//! Backbone weights from any source the attention view accepts: the official DINO releases
//! (`dino_deitsmall16_pretrain.pth` and siblings), full training checkpoints (`checkpoint.pth`),
//! safetensors in the same key layout (timm's DINO exports), and our own runs (reference §9).
//!
//! The architecture is read from the tensor shapes: width from `cls_token`, patch size from the
//! patch-embedding kernel, depth from the block indices, the position table's grid from
//! `pos_embed`; heads follow the official convention (64 channels per head: 192→3, 384→6,
//! 768→12) unless overridden.
//!
//! This file: what a load returns, the choice of reader and our own runs; `official.rs`: the
//! `.pth` and `.safetensors` readers; `shapes.rs`: the architecture read from the shapes.

mod layouts;
mod official;
mod shapes;
pub mod training;

use crate::model::{Family, Ffn, VisionTransformer, VitArch};
use crate::store::checkpoint::{load_run_student, load_run_teacher, CheckpointError};
use burn::prelude::*;
use official::{load_pytorch, load_safetensors};
use shapes::check_overrides;
use std::path::{Path, PathBuf};

/// Which network of a training checkpoint to take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Network {
    #[default]
    Teacher,
    Student,
}

impl Network {
    pub fn label(self) -> &'static str {
        match self {
            Network::Teacher => "teacher",
            Network::Student => "student",
        }
    }
}

/// User overrides for what the shapes cannot tell (or to check them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchOverrides {
    /// A name of `VitArch::from_loadable_name` (`vit_small` ... `vit_giant2`): its width is
    /// checked against the shapes.
    pub arch: Option<String>,
    /// Checked against the patch-embedding kernel.
    pub patch_size: Option<usize>,
    /// Heads of the attention; the only thing the shapes cannot tell.
    pub num_heads: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightsFormat {
    /// A run directory of `dinoscope train` or its `teacher.bpk`.
    DinoscopeRun,
    /// A PyTorch pickle: a released backbone state dict or a full training checkpoint.
    Pytorch,
    Safetensors,
}

/// What was loaded, for the UI and the CLI.
#[derive(Clone, Debug, PartialEq)]
pub struct BackboneInfo {
    pub path: PathBuf,
    pub format: WeightsFormat,
    pub network: Network,
    /// DINO, DINOv2 (with its registers) or DINOv3 (with its storage tokens).
    pub family: Family,
    /// The blocks' feed-forward (SwiGLU in DINOv2's ViT-g and DINOv3's ViT-S+/H+).
    pub ffn: Ffn,
    pub arch: VitArch,
    pub patch_size: usize,
    /// Side of the image the position table was learned for.
    pub img_size: usize,
    /// Default short side for attention images: 480 as the official script for external
    /// weights, the training crop size for our runs.
    pub default_short_side_px: u32,
    /// Entries of the file that are not backbone weights (head, optimiser, ...), ignored.
    pub ignored_entries: usize,
    /// Tensors of the network's own dict that the forward pass does not use (DINOv2/v3's
    /// `mask_token`, which only masked training reads), said when loading.
    pub unused_tensors: Vec<String>,
    /// The float precision of the file's backbone tensors when it was not f32 ("f16",
    /// "bf16", "f64"): they were converted to f32 on load.
    pub converted_from: Option<String>,
}

impl BackboneInfo {
    /// "ViT-S/16", "DINOv2 ViT-S/14+4reg", "DINOv3 ViT-S+/16+4reg", or "ViT-96x4/4" (width ×
    /// depth) for non-standard sizes.
    pub fn short_name(&self) -> String {
        let size = match (self.arch.embed_dim, self.arch.depth, self.ffn.is_swiglu()) {
            (384, 12, true) => "ViT-S+".to_string(),
            (1280, 32, true) => "ViT-H+".to_string(),
            (dim, depth, _) => Self::size_name(dim, depth),
        };
        let registers = match self.family.registers() {
            0 => String::new(),
            n => format!("+{n}reg"),
        };
        match self.family {
            Family::Dino => format!("{size}/{}", self.patch_size),
            family => format!("{} {size}/{}{registers}", family.label(), self.patch_size),
        }
    }

    fn size_name(dim: usize, depth: usize) -> String {
        match (dim, depth) {
            (192, 12) => "ViT-T".to_string(),
            (384, 12) => "ViT-S".to_string(),
            (768, 12) => "ViT-B".to_string(),
            (1024, 24) => "ViT-L".to_string(),
            (1536, 40) => "ViT-g".to_string(),
            (dim, depth) => format!("ViT-{dim}x{depth}"),
        }
    }

    /// The unused tensors by their first path segment: "mask_token", "head (8 tensors)".
    pub fn unused_summary(&self) -> String {
        let mut groups: Vec<(&str, usize)> = Vec::new();
        for key in &self.unused_tensors {
            let top = key.split('.').next().unwrap_or(key);
            match groups.iter_mut().find(|(name, _)| *name == top) {
                Some((_, count)) => *count += 1,
                None => groups.push((top, 1)),
            }
        }
        groups
            .iter()
            .map(|(name, count)| match count {
                1 if self.unused_tensors.iter().any(|k| k == name) => name.to_string(),
                1 => format!("{name} (1 tensor)"),
                n => format!("{name} ({n} tensors)"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn describe(&self) -> String {
        let file = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.path.display().to_string());
        let converted = self
            .converted_from
            .as_ref()
            .map(|from| format!(" · converted {from} → f32"))
            .unwrap_or_default();
        let registers = match self.family.registers() {
            0 => String::new(),
            n => format!(" · {n} {}", self.family.register_noun()),
        };
        let unused = match self.unused_summary() {
            summary if summary.is_empty() => String::new(),
            summary => format!(" · not used: {summary}"),
        };
        format!(
            "{} · {} heads{registers} · {} · {file}{converted}{unused}",
            self.short_name(),
            self.arch.num_heads,
            self.network.label()
        )
    }
}

pub struct LoadedBackbone {
    pub backbone: VisionTransformer,
    pub info: BackboneInfo,
}

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("weights file {path} does not exist; pass a .pth/.safetensors file or a run directory of `dinoscope train`")]
    NotFound { path: PathBuf },
    #[error("cannot read weights {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path} holds no ViT backbone (no `cls_token`, `pos_embed` or `patch_embed.proj.weight`; found {found}). Pass a DINO backbone such as dino_deitsmall16_pretrain.pth or a checkpoint.pth with a `teacher` entry")]
    NotAVit { path: PathBuf, found: String },
    #[error("{path} has no `{network}` entry (it has {found}); pick the other network")]
    NoNetwork {
        path: PathBuf,
        network: &'static str,
        found: String,
    },
    #[error("{path}: tensor `{key}` has shape {shape:?}, expected {expected}; the file is damaged or not a DINO ViT")]
    Shape {
        path: PathBuf,
        key: String,
        shape: Vec<usize>,
        expected: String,
    },
    #[error("{path} lacks {count} backbone tensors (first: {first}); the file is truncated or uses other key names")]
    Missing {
        path: PathBuf,
        count: usize,
        first: String,
    },
    #[error(
        "{path}: width {embed_dim} has no official head count (64 channels per head: 3 heads at width 192, 6 at 384, 12 at 768); give the head count (--heads, or the heads box of the attention view)"
    )]
    UnknownHeads { path: PathBuf, embed_dim: usize },
    #[error("{path}: tensor `{key}` holds NaN or infinite values; the file is damaged or was saved from a diverged run. Use an earlier checkpoint")]
    NonFinite { path: PathBuf, key: String },
    #[error("{path}: {what}")]
    Mismatch { path: PathBuf, what: String },
    /// Another library's layout of DINO weights, or a variant not supported.
    #[error("{path}: {what}")]
    Layout { path: PathBuf, what: String },
    #[error(
        "{path} was trained by dinoscope, which saves the teacher only; the student is not in it"
    )]
    NoStudentInRun { path: PathBuf },
    #[error(transparent)]
    Run(#[from] CheckpointError),
}

/// Loads a backbone from `path`, choosing the reader by the file's content and extension.
pub fn load_backbone(
    path: &Path,
    network: Network,
    overrides: &ArchOverrides,
    device: &Device,
) -> Result<LoadedBackbone, WeightsError> {
    if !path.exists() {
        return Err(WeightsError::NotFound {
            path: path.to_path_buf(),
        });
    }
    let format = detect_format(path)?;
    // The pickle and safetensors readers see hostile bytes first: a panic inside them is
    // contained here and named like any unreadable file.
    let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match format {
        WeightsFormat::DinoscopeRun => load_run(path, network, overrides, device),
        WeightsFormat::Pytorch => load_pytorch(path, network, overrides, device),
        WeightsFormat::Safetensors => load_safetensors(path, overrides, device),
    }))
    .unwrap_or_else(|_| {
        Err(WeightsError::Read {
            path: path.to_path_buf(),
            reason: "its reader panicked on this file; it is damaged or not a weights file".into(),
        })
    })?;
    match first_non_finite(&loaded.backbone) {
        Some(key) => Err(WeightsError::NonFinite {
            path: path.to_path_buf(),
            key,
        }),
        None => Ok(loaded),
    }
}

/// The first parameter (by module path) holding NaN or ±∞: NaN weights would otherwise load
/// silently and give empty masks. A tensor's sum is non-finite exactly when one of its values
/// is (weights are far from f32's overflow), so this is one reduction per tensor.
pub fn first_non_finite<M: burn::module::Module>(module: &M) -> Option<String> {
    /// The module path is tracked through enter/exit (burn's derive names each field).
    struct FirstNonFinite {
        path: Vec<String>,
        found: Option<String>,
    }
    impl burn::module::ModuleVisitor for FirstNonFinite {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(
            &mut self,
            param: &burn::module::Param<burn::prelude::Tensor<D>>,
        ) {
            if self.found.is_some() {
                return;
            }
            let sum = param.val().sum().into_data_as::<f32>();
            let finite = sum
                .as_slice::<f32>()
                .ok()
                .and_then(|values| values.first())
                .is_some_and(|value| value.is_finite());
            if !finite {
                self.found = Some(self.path.join("."));
            }
        }
    }
    let mut visitor = FirstNonFinite {
        path: Vec::new(),
        found: None,
    };
    module.visit(&mut visitor);
    visitor.found
}

fn detect_format(path: &Path) -> Result<WeightsFormat, WeightsError> {
    if path.is_dir() {
        return Ok(WeightsFormat::DinoscopeRun);
    }
    let extension = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if extension == "bpk" {
        return Ok(WeightsFormat::DinoscopeRun);
    }
    if extension == "safetensors" {
        return Ok(WeightsFormat::Safetensors);
    }
    // A zip (new torch.save) or a pickle protocol marker (legacy torch.save).
    let mut head = [0u8; 2];
    let read = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .map_err(|err| WeightsError::Read {
            path: path.to_path_buf(),
            reason: err.to_string(),
        })?;
    if read == 2 && (&head == b"PK" || head[0] == 0x80) {
        return Ok(WeightsFormat::Pytorch);
    }
    Err(WeightsError::Read {
        path: path.to_path_buf(),
        reason: "neither a PyTorch file (.pth/.pt), a .safetensors file nor a run directory".into(),
    })
}

fn load_run(
    path: &Path,
    network: Network,
    overrides: &ArchOverrides,
    device: &Device,
) -> Result<LoadedBackbone, WeightsError> {
    // The teacher is saved at the end of every run; the student only in checkpoints.
    let (model, config) = match network {
        Network::Teacher => load_run_teacher(path, device)?,
        Network::Student => load_run_student(path, device).map_err(|err| match err {
            CheckpointError::NoCheckpoint { .. } => WeightsError::NoStudentInRun {
                path: path.to_path_buf(),
            },
            other => WeightsError::Run(other),
        })?,
    };
    let backbone = model.backbone;
    let arch = config.vit_arch();
    check_overrides(path, overrides, arch.embed_dim, config.model.patch_size)?;
    if let Some(heads) = overrides.num_heads {
        if heads != arch.num_heads {
            return Err(WeightsError::Mismatch {
                path: path.to_path_buf(),
                what: format!(
                    "--heads {heads} differs from the {} heads the run was trained with",
                    arch.num_heads
                ),
            });
        }
    }
    let info = BackboneInfo {
        path: path.to_path_buf(),
        format: WeightsFormat::DinoscopeRun,
        network,
        family: Family::Dino,
        ffn: Ffn::mlp_of_width(arch.embed_dim),
        unused_tensors: Vec::new(),
        arch,
        patch_size: config.model.patch_size,
        img_size: config.data.global_crop_size as usize,
        default_short_side_px: config.data.global_crop_size,
        ignored_entries: 0,
        converted_from: None,
    };
    Ok(LoadedBackbone { backbone, info })
}
