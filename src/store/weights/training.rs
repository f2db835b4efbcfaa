//! A full training checkpoint of the official code (`main_dino.py`'s `checkpoint.pth`): both
//! networks with their heads and the loss's `center`, everything needed to evaluate the DINO
//! loss and its decomposition on a probe batch as the run's own trainer saw it.

use super::official::{read_official_shapes, to_f32_adapter};
use super::shapes::infer_config;
use super::{first_non_finite, ArchOverrides, Network, WeightsError};
use crate::model::DinoModel;
use burn::prelude::*;
use burn::store::{ModuleSnapshot, ModuleStore, PytorchStore};
use std::collections::BTreeMap;
use std::path::Path;

/// Both networks and the center of one official checkpoint.
pub struct TrainingCheckpoint {
    pub student: DinoModel,
    pub teacher: DinoModel,
    /// `dino_loss.center`, `[K]`.
    pub center: Vec<f32>,
    /// Head sizes read from the tensor shapes: (hidden, bottleneck, K).
    pub head_dims: (usize, usize, usize),
    /// The backbone read from the tensor shapes.
    pub vit: crate::model::VitConfig,
}

/// Loads `student` (DDP `module.` keys) and `teacher` with their heads, and the center. The
/// architecture comes from the teacher's tensor shapes (`overrides` checks or completes it).
pub fn load_training_checkpoint(
    path: &Path,
    overrides: &ArchOverrides,
    device: &Device,
) -> Result<TrainingCheckpoint, WeightsError> {
    // The pickle reader sees hostile bytes first: a panic inside it is contained here and
    // named like any unreadable file (as `load_backbone` does).
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        load_unguarded(path, overrides, device)
    }))
    .unwrap_or_else(|_| {
        Err(WeightsError::Read {
            path: path.to_path_buf(),
            reason: "its reader panicked on this file; it is damaged or not a checkpoint".into(),
        })
    })
}

fn load_unguarded(
    path: &Path,
    overrides: &ArchOverrides,
    device: &Device,
) -> Result<TrainingCheckpoint, WeightsError> {
    let read_error = |reason: String| WeightsError::Read {
        path: path.to_path_buf(),
        reason,
    };
    let shapes = read_official_shapes(path, Network::Teacher)?;
    let backbone_shapes: BTreeMap<String, Vec<usize>> = shapes
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("backbone.")?.to_string(), v.clone())))
        .collect();
    let inferred = infer_config(path, &backbone_shapes, overrides)?;
    if inferred.family != crate::model::Family::Dino {
        return Err(WeightsError::Layout {
            path: path.to_path_buf(),
            what: format!(
                "a {} training checkpoint: following a run reads main_dino.py's checkpoints; open its backbone in the attention view instead",
                inferred.family.label()
            ),
        });
    }
    let vit = inferred.config;
    let dim = |key: &str, axis: usize| {
        shapes
            .get(key)
            .and_then(|s| s.get(axis).copied())
            .ok_or_else(|| WeightsError::Missing {
                path: path.to_path_buf(),
                count: 1,
                first: format!("teacher.{key}"),
            })
    };
    let head_dims = (
        dim("head.mlp.0.weight", 0)?,
        dim("head.mlp.4.weight", 0)?,
        dim("head.last_layer.weight_v", 0)?,
    );
    let load = |network: Network| -> Result<DinoModel, WeightsError> {
        let (hidden, bottleneck, k) = head_dims;
        let mut model = DinoModel::new(&vit, hidden, bottleneck, k, 0, device);
        let mut store = PytorchStore::from_file(path)
            .with_top_level_key(network.label())
            .with_key_remapping(r"^module\.", "")
            .with_key_remapping(r"^backbone\.patch_embed\.proj\.", "backbone.patch_embed.");
        // As `PytorchStore::apply_to`, with every float cast to f32 after the layout change
        // (`attention` reads the same half-precision files): an f16 parameter would otherwise
        // keep its dtype and fail the probe's first f32 matmul.
        let tensors = store
            .get_all_tensors()
            .map_err(|err| read_error(err.to_string()))?
            .values()
            .cloned()
            .collect();
        let result = model.apply(tensors, None, Some(Box::new(to_f32_adapter())), true);
        if let Some(first) = result.missing.first() {
            return Err(WeightsError::Missing {
                path: path.to_path_buf(),
                count: result.missing.len(),
                first: format!("{}.{}", network.label(), first.0),
            });
        }
        if let Some(error) = result.errors.first() {
            return Err(read_error(format!("{}: {error}", network.label())));
        }
        Ok(model)
    };
    let student = load(Network::Student)?;
    let teacher = load(Network::Teacher)?;
    // NaN weights would give a row of NaN that reads as a verdict; refused as `attention`
    // refuses them, naming the tensor.
    for (network, model) in [(Network::Student, &student), (Network::Teacher, &teacher)] {
        if let Some(key) = first_non_finite(model) {
            return Err(WeightsError::NonFinite {
                path: path.to_path_buf(),
                key: format!("{}.{key}", network.label()),
            });
        }
    }
    let mut store = PytorchStore::from_file(path).with_top_level_key("dino_loss");
    let tensors = store
        .get_all_tensors()
        .map_err(|err| read_error(err.to_string()))?;
    let center = tensors
        .get("center")
        .ok_or_else(|| WeightsError::Missing {
            path: path.to_path_buf(),
            count: 1,
            first: "dino_loss.center".into(),
        })
        .and_then(|tensor| {
            burn::store::bridge::to_data(tensor)
                .map_err(|err| read_error(format!("dino_loss.center: {err:?}")))
        })?
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|err| read_error(format!("dino_loss.center: {err:?}")))?;
    if center.iter().any(|v| !v.is_finite()) {
        return Err(WeightsError::NonFinite {
            path: path.to_path_buf(),
            key: "dino_loss.center".into(),
        });
    }
    if center.len() != head_dims.2 {
        return Err(WeightsError::Mismatch {
            path: path.to_path_buf(),
            what: format!(
                "dino_loss.center has {} values but the head has K = {}",
                center.len(),
                head_dims.2
            ),
        });
    }
    Ok(TrainingCheckpoint {
        student,
        teacher,
        center,
        head_dims,
        vit,
    })
}
