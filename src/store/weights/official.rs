//! The official DINO, DINOv2 and DINOv3 releases and checkpoints (`.pth`) and safetensors in
//! the same key layouts: the prefixes the official loaders strip, PyTorch layout to burn's
//! with every float cast to f32, DINOv3's qkv bias mask folded in, and what a file holds
//! besides the backbone.

use super::shapes::{infer_config, summarise_keys, Inferred};
use super::{ArchOverrides, BackboneInfo, LoadedBackbone, Network, WeightsError, WeightsFormat};
use crate::model::{Family, Ffn, HostInit, VisionTransformer};
use burn::prelude::*;
use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::{
    ChainAdapter, FloatCastAdapter, ModuleAdapter, ModuleSnapshot, ModuleStore,
    PyTorchToBurnAdapter, PytorchStore, SafetensorsStore,
};
use burn::tensor::DType;
use std::collections::BTreeMap;
use std::path::Path;

/// The prefixes the official loaders strip, and our naming differences: the patch embedding
/// is a plain parameter pair, not a Conv2d called `proj`; DINOv3's storage tokens are our
/// registers; DINOv2's chunked blocks (`blocks.<chunk>.<i>.`, FSDP training of ViT-L/g)
/// are numbered as one list.
fn official_remaps<S>(store: S, remap: impl Fn(S, &str, &str) -> S) -> S {
    let store = remap(store, r"^module\.", "");
    let store = remap(store, r"^backbone\.", "");
    let store = remap(store, r"^storage_tokens$", "register_tokens");
    let store = remap(store, r"^blocks\.\d+\.(\d+)\.", "blocks.${1}.");
    remap(store, r"^patch_embed\.proj\.", "patch_embed.")
}

/// DINOv3's `attn.qkv.bias_mask` of every block (1 on q and v, 0 on k): the bias the official
/// model uses is `bias * bias_mask`.
fn bias_masks(
    path: &Path,
    family: Family,
    depth: usize,
    tensors: &BTreeMap<String, PackTensor>,
) -> Result<Vec<TensorData>, WeightsError> {
    if !matches!(family, Family::DinoV3 { .. }) {
        return Ok(Vec::new());
    }
    (0..depth)
        .map(|i| {
            let key = format!("blocks.{i}.attn.qkv.bias_mask");
            tensors
                .get(&key)
                .ok_or_else(|| WeightsError::Missing {
                    path: path.to_path_buf(),
                    count: 1,
                    first: key.clone(),
                })
                .and_then(|tensor| {
                    burn::store::bridge::to_data(tensor).map_err(|err| WeightsError::Read {
                        path: path.to_path_buf(),
                        reason: format!("`{key}`: {err}"),
                    })
                })
                .map(|data| data.convert::<f32>())
        })
        .collect()
}

/// `bias ← bias · bias_mask` in every block (a no-op list for the other families).
fn fold_bias_masks(backbone: &mut VisionTransformer, masks: Vec<TensorData>) {
    for (block, mask) in backbone.blocks.iter_mut().zip(masks) {
        if let Some(bias) = block.attn.qkv.bias.take() {
            let mask = Tensor::<1>::from_data(mask, &bias.device());
            block.attn.qkv.bias = Some(bias.map(|b| b * mask));
        }
    }
}

pub(super) fn load_pytorch(
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
        let prefix = network_prefix(path, &top_keys, network)?;
        ignored_entries = top_keys.iter().filter(|k| !k.starts_with(&prefix)).count();
        store = store.with_top_level_key(network.label());
    }
    let mut store = official_remaps(store, |s, from, to| s.with_key_remapping(from, to));
    let tensors = store.get_all_tensors().map_err(read_error)?;
    let shapes = shapes_of(tensors);
    let inferred = infer_config(path, &shapes, overrides)?;
    ignored_entries += inferred.unused.len();
    let converted_from = converted_from(tensors);
    let (backbone, masks) = applied(path, &inferred, tensors, device)?;
    let info = external_info(
        path,
        WeightsFormat::Pytorch,
        network,
        &inferred,
        ignored_entries,
    );
    Ok(loaded(backbone, masks, info, converted_from))
}

/// `NETWORK.`, when the checkpoint's top-level keys hold that network; else an error naming
/// what the file holds.
fn network_prefix(
    path: &Path,
    top_keys: &[String],
    network: Network,
) -> Result<String, WeightsError> {
    let prefix = format!("{}.", network.label());
    if top_keys.iter().any(|k| k.starts_with(&prefix)) {
        return Ok(prefix);
    }
    Err(WeightsError::NoNetwork {
        path: path.to_path_buf(),
        network: network.label(),
        found: summarise_keys(top_keys),
    })
}

/// The backbone the file's shapes describe, before its weights are applied.
fn unloaded(inferred: &Inferred, device: &Device) -> VisionTransformer {
    VisionTransformer::new_family(
        &inferred.config,
        inferred.family,
        inferred.ffn,
        &mut HostInit::new(0),
        device,
    )
}

/// The backbone the shapes describe with the file's tensors applied (the f32 cast chained
/// after PyTorch's layout: PytorchStore has no adapter option of its own), and DINOv3's qkv
/// bias masks still to fold in.
fn applied(
    path: &Path,
    inferred: &Inferred,
    tensors: &BTreeMap<String, PackTensor>,
    device: &Device,
) -> Result<(VisionTransformer, Vec<TensorData>), WeightsError> {
    let masks = bias_masks(path, inferred.family, inferred.config.arch.depth, tensors)?;
    let mut backbone = unloaded(inferred, device);
    let result = backbone.apply(
        with_packed_ffn(path, tensors, inferred.ffn)?,
        None,
        Some(Box::new(to_f32_adapter())),
        false,
    );
    check_applied(path, &result)?;
    Ok((backbone, masks))
}

/// A backbone whose weights are applied: its qkv bias masks folded in, ready for inference.
fn loaded(
    mut backbone: VisionTransformer,
    masks: Vec<TensorData>,
    mut info: BackboneInfo,
    converted_from: Option<String>,
) -> LoadedBackbone {
    fold_bias_masks(&mut backbone, masks);
    info.converted_from = converted_from;
    LoadedBackbone {
        backbone: backbone.without_drop_path(),
        info,
    }
}

/// Tensor shapes of one network of a full training checkpoint, DDP's `module.` stripped and
/// the patch embedding named as ours (`backbone.patch_embed.weight`, `head.mlp.0.weight`, ...).
pub(super) fn read_official_shapes(
    path: &Path,
    network: Network,
) -> Result<BTreeMap<String, Vec<usize>>, WeightsError> {
    let read_error = |err: burn::store::PytorchStoreError| WeightsError::Read {
        path: path.to_path_buf(),
        reason: err.to_string(),
    };
    let top_keys: Vec<String> = PytorchStore::from_file(path).keys().map_err(read_error)?;
    network_prefix(path, &top_keys, network)?;
    // The file's own indices (`head.mlp.{0,2,4}`), not renumbered.
    let mut store = PytorchStore::from_file(path)
        .map_indices_contiguous(false)
        .with_top_level_key(network.label())
        .with_key_remapping(r"^module\.", "")
        .with_key_remapping(r"^backbone\.patch_embed\.proj\.", "backbone.patch_embed.");
    Ok(shapes_of(store.get_all_tensors().map_err(read_error)?))
}

pub(super) fn load_safetensors(
    path: &Path,
    overrides: &ArchOverrides,
    device: &Device,
) -> Result<LoadedBackbone, WeightsError> {
    let read_error = |err: burn::store::SafetensorsStoreError| WeightsError::Read {
        path: path.to_path_buf(),
        reason: err.to_string(),
    };
    let store = SafetensorsStore::from_file(path)
        .allow_partial(true)
        .map_indices_contiguous(false);
    let mut store = official_remaps(store, |s, from, to| s.with_key_remapping(from, to));
    let tensors = store.get_all_tensors().map_err(read_error)?;
    let shapes = shapes_of(tensors);
    let converted_from = converted_from(tensors);
    let inferred = infer_config(path, &shapes, overrides)?;
    let ignored_entries = inferred.unused.len();
    let (backbone, masks) = applied(path, &inferred, tensors, device)?;
    let info = external_info(
        path,
        WeightsFormat::Safetensors,
        Network::Teacher,
        &inferred,
        ignored_entries,
    );
    Ok(loaded(backbone, masks, info, converted_from))
}

/// The file's tensors under our names for a SwiGLU feed-forward: DINOv2's `mlp.w12` is our
/// packed `mlp.fc1` as it is, DINOv3's `mlp.w1` and `mlp.w2` are stacked into it (rows of w1
/// first: `x1, x2 = x12.chunk(2)`), `mlp.w3` is `mlp.fc2`. Other files pass unchanged.
fn with_packed_ffn(
    path: &Path,
    tensors: &BTreeMap<String, PackTensor>,
    ffn: Ffn,
) -> Result<Vec<PackTensor>, WeightsError> {
    if !ffn.is_swiglu() {
        return Ok(tensors.values().cloned().collect());
    }
    // (rows, values as f32) of a stored weight or bias.
    let read = |key: &str| -> Result<(usize, Vec<usize>, Vec<f32>), WeightsError> {
        let tensor = tensors.get(key).ok_or_else(|| WeightsError::Missing {
            path: path.to_path_buf(),
            count: 1,
            first: key.to_string(),
        })?;
        let error = |err: String| WeightsError::Read {
            path: path.to_path_buf(),
            reason: format!("`{key}`: {err}"),
        };
        let data = burn::store::bridge::to_data(tensor)
            .map_err(|err| error(err.to_string()))?
            .convert::<f32>();
        let shape = tensor.shape.to_vec();
        let values = data
            .try_to_vec::<f32>()
            .map_err(|err| error(format!("{err:?}")))?;
        Ok((shape.first().copied().unwrap_or(0), shape, values))
    };
    let mut out = Vec::with_capacity(tensors.len());
    for (name, tensor) in tensors {
        let renamed = |from: &str, to: &str| name.replacen(from, to, 1);
        if name.contains(".mlp.w12.") {
            let mut tensor = tensor.clone();
            tensor.name = renamed(".mlp.w12.", ".mlp.fc1.");
            out.push(tensor);
        } else if name.contains(".mlp.w3.") {
            let mut tensor = tensor.clone();
            tensor.name = renamed(".mlp.w3.", ".mlp.fc2.");
            out.push(tensor);
        } else if name.contains(".mlp.w1.") {
            let (_, mut shape, mut values) = read(name)?;
            let (w2_rows, _, w2) = read(&renamed(".mlp.w1.", ".mlp.w2."))?;
            if let Some(rows) = shape.first_mut() {
                *rows += w2_rows;
            }
            values.extend(w2);
            let packed = TensorData::new(values, shape);
            out.push(burn::store::bridge::from_data(
                packed,
                renamed(".mlp.w1.", ".mlp.fc1."),
                None,
            ));
        } else if !name.contains(".mlp.w2.") {
            out.push(tensor.clone());
        }
    }
    Ok(out)
}

/// PyTorch layout to burn's, then every float tensor to f32: a loaded parameter keeps the
/// file's dtype otherwise, and an f16/bf16 weight then fails the first f32 matmul.
pub(super) fn to_f32_adapter() -> ChainAdapter {
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
        [
            "cls_token",
            "pos_embed",
            "register_tokens",
            "patch_embed.",
            "norm.",
            "blocks.",
        ]
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
    inferred: &Inferred,
    ignored_entries: usize,
) -> BackboneInfo {
    let config = &inferred.config;
    BackboneInfo {
        family: inferred.family,
        ffn: inferred.ffn,
        unused_tensors: inferred.unused.clone(),
        path: path.to_path_buf(),
        format,
        network,
        arch: config.arch,
        patch_size: config.patch_size,
        img_size: config.img_size,
        // visualize_attention.py's default image size; DINOv2's position table is learned
        // at 518 px (37 × 37 patches of 14), where its maps are meant to be read.
        default_short_side_px: match inferred.family {
            Family::DinoV2 { .. } => config.img_size as u32,
            _ => 480,
        },
        ignored_entries,
        converted_from: None,
    }
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
