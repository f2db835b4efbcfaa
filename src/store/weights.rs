//! Backbone weights from any source the attention view accepts: the official DINO releases
//! (`dino_deitsmall16_pretrain.pth` and siblings), full training checkpoints (`checkpoint.pth`),
//! safetensors in the same key layout (timm's DINO exports), and our own runs (reference §9).
//!
//! The architecture is read from the tensor shapes: width from `cls_token`, patch size from the
//! patch-embedding kernel, depth from the block indices, the position table's grid from
//! `pos_embed`; heads follow the official convention (64 channels per head: 192→3, 384→6,
//! 768→12) unless overridden.

use crate::model::{HostInit, VisionTransformer, VitArch, VitConfig};
use crate::store::checkpoint::{load_run_student, load_run_teacher, CheckpointError};
use burn::prelude::*;
use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::{
    ChainAdapter, FloatCastAdapter, ModuleAdapter, ModuleSnapshot, ModuleStore,
    PyTorchToBurnAdapter, PytorchStore, SafetensorsStore,
};
use burn::tensor::DType;
use std::collections::BTreeMap;
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
    /// `vit_tiny`, `vit_small`, `vit_base`, `vit_micro`: checked against the shapes.
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
    pub arch: VitArch,
    pub patch_size: usize,
    /// Side of the image the position table was learned for.
    pub img_size: usize,
    /// Default short side for attention images: 480 as the official script for external
    /// weights, the training crop size for our runs.
    pub default_short_side_px: u32,
    /// Entries of the file that are not backbone weights (head, optimiser, ...), ignored.
    pub ignored_entries: usize,
    /// The float precision of the file's backbone tensors when it was not f32 ("f16",
    /// "bf16", "f64"): they were converted to f32 on load.
    pub converted_from: Option<String>,
}

impl BackboneInfo {
    /// "ViT-S/16", or "ViT-96x4/4" (width × depth) for non-standard sizes.
    pub fn short_name(&self) -> String {
        let family = match (self.arch.embed_dim, self.arch.depth) {
            (192, 12) => "ViT-T".to_string(),
            (384, 12) => "ViT-S".to_string(),
            (768, 12) => "ViT-B".to_string(),
            (dim, depth) => format!("ViT-{dim}x{depth}"),
        };
        format!("{family}/{}", self.patch_size)
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
        format!(
            "{} · {} heads · {} · {file}{converted}",
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
        "{path}: width {embed_dim} has no official head count (192→3, 384→6, 768→12); give the head count (--heads, or the heads box of the attention view)"
    )]
    UnknownHeads { path: PathBuf, embed_dim: usize },
    #[error("{path}: {what}")]
    Mismatch { path: PathBuf, what: String },
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
    match detect_format(path)? {
        WeightsFormat::DinoscopeRun => load_run(path, network, overrides, device),
        WeightsFormat::Pytorch => load_pytorch(path, network, overrides, device),
        WeightsFormat::Safetensors => load_safetensors(path, overrides, device),
    }
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
        arch,
        patch_size: config.model.patch_size,
        img_size: config.data.global_crop_size as usize,
        default_short_side_px: config.data.global_crop_size,
        ignored_entries: 0,
        converted_from: None,
    };
    Ok(LoadedBackbone { backbone, info })
}

/// The prefixes the official loaders strip, and our one naming difference: the patch
/// embedding is a plain parameter pair, not a Conv2d called `proj`.
fn official_remaps<S>(store: S, remap: impl Fn(S, &str, &str) -> S) -> S {
    let store = remap(store, r"^module\.", "");
    let store = remap(store, r"^backbone\.", "");
    remap(store, r"^patch_embed\.proj\.", "patch_embed.")
}

fn load_pytorch(
    path: &Path,
    network: Network,
    overrides: &ArchOverrides,
    device: &Device,
) -> Result<LoadedBackbone, WeightsError> {
    let read_error = |err: burn::store::PytorchStoreError| WeightsError::Read {
        path: path.to_path_buf(),
        reason: err.to_string(),
    };
    // A full checkpoint nests the networks under `teacher`/`student`; a released backbone is
    // a flat state dict.
    let top_keys: Vec<String> = PytorchStore::from_file(path).keys().map_err(read_error)?;
    let nested = top_keys
        .iter()
        .any(|k| k.starts_with("teacher.") || k.starts_with("student."));
    let mut ignored_entries = 0;
    let mut store = PytorchStore::from_file(path)
        .allow_partial(true)
        .map_indices_contiguous(false);
    if nested {
        let prefix = format!("{}.", network.label());
        if !top_keys.iter().any(|k| k.starts_with(&prefix)) {
            return Err(WeightsError::NoNetwork {
                path: path.to_path_buf(),
                network: network.label(),
                found: summarise_keys(&top_keys),
            });
        }
        ignored_entries = top_keys.iter().filter(|k| !k.starts_with(&prefix)).count();
        store = store.with_top_level_key(network.label());
    }
    let mut store = official_remaps(store, |s, from, to| s.with_key_remapping(from, to));
    let tensors = store.get_all_tensors().map_err(read_error)?;
    let shapes = shapes_of(tensors);
    let (config, backbone_keys) = infer_config(path, &shapes, overrides)?;
    ignored_entries += shapes.len() - backbone_keys;
    let converted_from = converted_from(tensors);
    let mut backbone = VisionTransformer::new(&config, &mut HostInit::new(0), device);
    // PytorchStore has no adapter option (its own is PyTorchToBurnAdapter alone), so the
    // tensors are applied directly with the f32 cast chained after it.
    let result = backbone.apply(
        tensors.values().cloned().collect(),
        None,
        Some(Box::new(to_f32_adapter())),
        false,
    );
    check_applied(path, &result)?;
    let mut info = external_info(
        path,
        WeightsFormat::Pytorch,
        network,
        &config,
        ignored_entries,
    );
    info.converted_from = converted_from;
    Ok(LoadedBackbone {
        backbone: backbone.without_drop_path(),
        info,
    })
}

fn load_safetensors(
    path: &Path,
    overrides: &ArchOverrides,
    device: &Device,
) -> Result<LoadedBackbone, WeightsError> {
    let read_error = |err: burn::store::SafetensorsStoreError| WeightsError::Read {
        path: path.to_path_buf(),
        reason: err.to_string(),
    };
    let store = SafetensorsStore::from_file(path)
        .with_from_adapter(to_f32_adapter())
        .allow_partial(true)
        .map_indices_contiguous(false);
    let mut store = official_remaps(store, |s, from, to| s.with_key_remapping(from, to));
    let tensors = store.get_all_tensors().map_err(read_error)?;
    let shapes = shapes_of(tensors);
    let converted_from = converted_from(tensors);
    let (config, backbone_keys) = infer_config(path, &shapes, overrides)?;
    let ignored_entries = shapes.len() - backbone_keys;
    let mut backbone = VisionTransformer::new(&config, &mut HostInit::new(0), device);
    let result = backbone.load_from(&mut store).map_err(read_error)?;
    check_applied(path, &result)?;
    let mut info = external_info(
        path,
        WeightsFormat::Safetensors,
        Network::Teacher,
        &config,
        ignored_entries,
    );
    info.converted_from = converted_from;
    Ok(LoadedBackbone {
        backbone: backbone.without_drop_path(),
        info,
    })
}

/// PyTorch layout to burn's, then every float tensor to f32: a loaded parameter keeps the
/// file's dtype otherwise, and an f16/bf16 weight then fails the first f32 matmul.
fn to_f32_adapter() -> ChainAdapter {
    PyTorchToBurnAdapter.chain(FloatCastAdapter::to(DType::F32))
}

fn shapes_of(tensors: &BTreeMap<String, PackTensor>) -> BTreeMap<String, Vec<usize>> {
    tensors
        .iter()
        .map(|(name, tensor)| (name.clone(), tensor.shape.to_vec()))
        .collect()
}

/// The non-f32 float precisions among the backbone's tensors ("f16", "bf16+f16"), if any.
fn converted_from(tensors: &BTreeMap<String, PackTensor>) -> Option<String> {
    let backbone = |name: &str| {
        ["cls_token", "pos_embed", "patch_embed.", "norm.", "blocks."]
            .iter()
            .any(|prefix| name.starts_with(prefix))
    };
    let labels: std::collections::BTreeSet<&str> = tensors
        .iter()
        .filter(|(name, tensor)| backbone(name) && tensor.dtype.is_float())
        .filter_map(|(_, tensor)| match tensor.dtype {
            DType::F32 => None,
            DType::F16 => Some("f16"),
            DType::BF16 => Some("bf16"),
            DType::F64 => Some("f64"),
            _ => Some("a reduced float format"),
        })
        .collect();
    (!labels.is_empty()).then(|| labels.into_iter().collect::<Vec<_>>().join("+"))
}

fn external_info(
    path: &Path,
    format: WeightsFormat,
    network: Network,
    config: &VitConfig,
    ignored_entries: usize,
) -> BackboneInfo {
    BackboneInfo {
        path: path.to_path_buf(),
        format,
        network,
        arch: config.arch,
        patch_size: config.patch_size,
        img_size: config.img_size,
        // visualize_attention.py's default image size.
        default_short_side_px: 480,
        ignored_entries,
        converted_from: None,
    }
}

fn summarise_keys(keys: &[String]) -> String {
    let mut tops: Vec<&str> = keys
        .iter()
        .map(|k| k.split('.').next().unwrap_or(k))
        .collect();
    tops.dedup();
    tops.truncate(8);
    if tops.is_empty() {
        "no tensors".into()
    } else {
        format!("`{}`", tops.join("`, `"))
    }
}

/// Reads the architecture from the (remapped) tensor shapes and checks every backbone tensor.
/// Returns the config and how many of the tensors belong to the backbone.
fn infer_config(
    path: &Path,
    shapes: &BTreeMap<String, Vec<usize>>,
    overrides: &ArchOverrides,
) -> Result<(VitConfig, usize), WeightsError> {
    let shape_error = |key: &str, expected: String| WeightsError::Shape {
        path: path.to_path_buf(),
        key: key.to_string(),
        shape: shapes.get(key).cloned().unwrap_or_default(),
        expected,
    };
    let (Some(cls), Some(pos), Some(patch)) = (
        shapes.get("cls_token"),
        shapes.get("pos_embed"),
        shapes.get("patch_embed.weight"),
    ) else {
        let keys: Vec<String> = shapes.keys().cloned().collect();
        return Err(WeightsError::NotAVit {
            path: path.to_path_buf(),
            found: summarise_keys(&keys),
        });
    };
    let &[1, 1, dim] = cls.as_slice() else {
        return Err(shape_error("cls_token", "[1, 1, D]".into()));
    };
    let &[out, 3, p, q] = patch.as_slice() else {
        return Err(shape_error(
            "patch_embed.weight",
            format!("[{dim}, 3, p, p]"),
        ));
    };
    if out != dim || p != q || p == 0 {
        return Err(shape_error(
            "patch_embed.weight",
            format!("[{dim}, 3, p, p]"),
        ));
    }
    let &[1, tokens, pos_dim] = pos.as_slice() else {
        return Err(shape_error("pos_embed", format!("[1, 1 + N, {dim}]")));
    };
    let side = ((tokens.saturating_sub(1)) as f64).sqrt().round() as usize;
    if pos_dim != dim || side == 0 || side * side + 1 != tokens {
        return Err(shape_error(
            "pos_embed",
            format!("[1, 1 + s², {dim}] (a square grid)"),
        ));
    }
    let depth = shapes
        .keys()
        .filter_map(|k| {
            k.strip_prefix("blocks.")?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()
        .map_or(0, |last| last + 1);
    if depth == 0 {
        return Err(WeightsError::Missing {
            path: path.to_path_buf(),
            count: 1,
            first: "blocks.0.*".into(),
        });
    }
    check_overrides(path, overrides, dim, p)?;
    let num_heads = match overrides.num_heads {
        Some(h) => h,
        None if dim % 64 == 0 => dim / 64,
        None => {
            return Err(WeightsError::UnknownHeads {
                path: path.to_path_buf(),
                embed_dim: dim,
            })
        }
    };
    if num_heads == 0 || dim % num_heads != 0 {
        return Err(WeightsError::Mismatch {
            path: path.to_path_buf(),
            what: format!("{num_heads} heads do not divide the width {dim}"),
        });
    }
    // Every tensor the backbone needs, with its shape as stored (PyTorch layout).
    let mut expected: Vec<(String, Vec<usize>)> = vec![
        ("cls_token".into(), vec![1, 1, dim]),
        ("pos_embed".into(), vec![1, tokens, dim]),
        ("patch_embed.weight".into(), vec![dim, 3, p, p]),
        ("patch_embed.bias".into(), vec![dim]),
        ("norm.weight".into(), vec![dim]),
        ("norm.bias".into(), vec![dim]),
    ];
    for i in 0..depth {
        let b = |name: &str| format!("blocks.{i}.{name}");
        expected.extend([
            (b("norm1.weight"), vec![dim]),
            (b("norm1.bias"), vec![dim]),
            (b("attn.qkv.weight"), vec![3 * dim, dim]),
            (b("attn.qkv.bias"), vec![3 * dim]),
            (b("attn.proj.weight"), vec![dim, dim]),
            (b("attn.proj.bias"), vec![dim]),
            (b("norm2.weight"), vec![dim]),
            (b("norm2.bias"), vec![dim]),
            (b("mlp.fc1.weight"), vec![4 * dim, dim]),
            (b("mlp.fc1.bias"), vec![4 * dim]),
            (b("mlp.fc2.weight"), vec![dim, 4 * dim]),
            (b("mlp.fc2.bias"), vec![dim]),
        ]);
    }
    let missing: Vec<&String> = expected
        .iter()
        .map(|(k, _)| k)
        .filter(|k| !shapes.contains_key(*k))
        .collect();
    if let Some(first) = missing.first() {
        return Err(WeightsError::Missing {
            path: path.to_path_buf(),
            count: missing.len(),
            first: (*first).clone(),
        });
    }
    for (key, shape) in &expected {
        if shapes.get(key) != Some(shape) {
            return Err(shape_error(key, format!("{shape:?}")));
        }
    }
    let config = VitConfig {
        arch: VitArch {
            embed_dim: dim,
            depth,
            num_heads,
        },
        patch_size: p,
        img_size: side * p,
        drop_path_rate: 0.0,
    };
    Ok((config, expected.len()))
}

fn check_overrides(
    path: &Path,
    overrides: &ArchOverrides,
    embed_dim: usize,
    patch_size: usize,
) -> Result<(), WeightsError> {
    let mismatch = |what: String| WeightsError::Mismatch {
        path: path.to_path_buf(),
        what,
    };
    if let Some(name) = &overrides.arch {
        let arch = VitArch::from_name(name).ok_or_else(|| {
            mismatch(format!(
                "--arch {name} is unknown; use vit_tiny, vit_small, vit_base or vit_micro"
            ))
        })?;
        if arch.embed_dim != embed_dim {
            return Err(mismatch(format!(
                "--arch {name} has width {}, the weights have {embed_dim}",
                arch.embed_dim
            )));
        }
    }
    if let Some(p) = overrides.patch_size {
        if p != patch_size {
            return Err(mismatch(format!(
                "--patch-size {p} differs from the weights' patch size {patch_size}"
            )));
        }
    }
    Ok(())
}

fn check_applied(path: &Path, result: &burn::store::ApplyResult) -> Result<(), WeightsError> {
    if let Some((first, _)) = result.missing.first() {
        return Err(WeightsError::Missing {
            path: path.to_path_buf(),
            count: result.missing.len(),
            first: first.clone(),
        });
    }
    if let Some(error) = result.errors.first() {
        return Err(WeightsError::Read {
            path: path.to_path_buf(),
            reason: format!("{error:?}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn official_shapes(
        dim: usize,
        depth: usize,
        p: usize,
        side: usize,
    ) -> BTreeMap<String, Vec<usize>> {
        let mut shapes = BTreeMap::new();
        shapes.insert("cls_token".to_string(), vec![1, 1, dim]);
        shapes.insert("pos_embed".to_string(), vec![1, 1 + side * side, dim]);
        shapes.insert("patch_embed.weight".to_string(), vec![dim, 3, p, p]);
        shapes.insert("patch_embed.bias".to_string(), vec![dim]);
        shapes.insert("norm.weight".to_string(), vec![dim]);
        shapes.insert("norm.bias".to_string(), vec![dim]);
        for i in 0..depth {
            for (name, shape) in [
                ("norm1.weight", vec![dim]),
                ("norm1.bias", vec![dim]),
                ("attn.qkv.weight", vec![3 * dim, dim]),
                ("attn.qkv.bias", vec![3 * dim]),
                ("attn.proj.weight", vec![dim, dim]),
                ("attn.proj.bias", vec![dim]),
                ("norm2.weight", vec![dim]),
                ("norm2.bias", vec![dim]),
                ("mlp.fc1.weight", vec![4 * dim, dim]),
                ("mlp.fc1.bias", vec![4 * dim]),
                ("mlp.fc2.weight", vec![dim, 4 * dim]),
                ("mlp.fc2.bias", vec![dim]),
            ] {
                shapes.insert(format!("blocks.{i}.{name}"), shape);
            }
        }
        shapes
    }

    #[test]
    fn vit_s16_is_read_from_its_shapes() {
        let shapes = official_shapes(384, 12, 16, 14);
        let (config, count) =
            infer_config(Path::new("s16.pth"), &shapes, &ArchOverrides::default()).unwrap();
        assert_eq!(config.arch, VitArch::from_name("vit_small").unwrap());
        assert_eq!(
            (config.patch_size, config.img_size, count),
            (16, 224, 6 + 12 * 12)
        );
        let b8 = official_shapes(768, 12, 8, 28);
        let (config, _) =
            infer_config(Path::new("b8.pth"), &b8, &ArchOverrides::default()).unwrap();
        assert_eq!((config.arch.num_heads, config.patch_size), (12, 8));
    }

    #[test]
    fn odd_widths_need_heads_and_overrides_are_checked() {
        let shapes = official_shapes(48, 2, 8, 4);
        let path = Path::new("fixture.pth");
        let err = infer_config(path, &shapes, &ArchOverrides::default()).unwrap_err();
        assert!(err.to_string().contains("--heads"), "{err}");
        let heads = ArchOverrides {
            num_heads: Some(3),
            ..Default::default()
        };
        assert_eq!(
            infer_config(path, &shapes, &heads)
                .unwrap()
                .0
                .arch
                .num_heads,
            3
        );
        let wrong_patch = ArchOverrides {
            num_heads: Some(3),
            patch_size: Some(16),
            ..Default::default()
        };
        assert!(infer_config(path, &shapes, &wrong_patch)
            .unwrap_err()
            .to_string()
            .contains("--patch-size 16"));
        let wrong_arch = ArchOverrides {
            arch: Some("vit_small".into()),
            num_heads: Some(3),
            ..Default::default()
        };
        assert!(infer_config(path, &shapes, &wrong_arch).is_err());
    }

    #[test]
    fn missing_and_misshaped_tensors_are_named() {
        let mut shapes = official_shapes(384, 2, 16, 14);
        shapes.remove("blocks.1.mlp.fc2.bias");
        let err = infer_config(Path::new("cut.pth"), &shapes, &ArchOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("blocks.1.mlp.fc2.bias") && err.contains("cut.pth"),
            "{err}"
        );
        let mut shapes = official_shapes(384, 2, 16, 14);
        shapes.insert("blocks.0.attn.qkv.weight".into(), vec![384, 384]);
        let err = infer_config(Path::new("bad.pth"), &shapes, &ArchOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("blocks.0.attn.qkv.weight") && err.contains("[1152, 384]"),
            "{err}"
        );
        let mut shapes = BTreeMap::new();
        shapes.insert("fc.weight".to_string(), vec![10, 10]);
        let err = infer_config(Path::new("resnet.pth"), &shapes, &ArchOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no ViT backbone") && err.contains("`fc`"),
            "{err}"
        );
    }
}
