//! Saving and loading our own models: the teacher as a burnpack file next to the run's
//! resolved `config.toml`, written atomically (temporary file, then rename).

use crate::config::{Config, ConfigError};
use crate::model::{DinoModel, VitConfig};
use burn::module::Module;
use burn::prelude::*;
use std::path::{Path, PathBuf};

/// The teacher's weights inside a run directory.
pub const TEACHER_FILE: &str = "teacher.bpk";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot write checkpoint {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error("cannot read weights {path}: {reason}. Pass a run directory written by `dinoscope train` (it holds config.toml and teacher.bpk) or its teacher.bpk")]
    Read { path: PathBuf, reason: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Writes `model` to `path` atomically.
pub fn save_model(model: &DinoModel, path: &Path) -> Result<(), CheckpointError> {
    let write_error = |reason: String| CheckpointError::Write {
        path: path.to_path_buf(),
        reason,
    };
    let tmp = path.with_extension("bpk.tmp");
    model
        .clone()
        .save_file(&tmp)
        .map_err(|err| write_error(format!("{err:?}")))?;
    std::fs::rename(&tmp, path).map_err(|err| write_error(err.to_string()))
}

/// Resolves a run directory or a `teacher.bpk` inside one to (weights, config).
pub fn run_files(weights: &Path) -> (PathBuf, PathBuf) {
    if weights.is_dir() {
        (weights.join(TEACHER_FILE), weights.join("config.toml"))
    } else {
        let dir = weights.parent().unwrap_or(Path::new("."));
        (weights.to_path_buf(), dir.join("config.toml"))
    }
}

/// Loads a teacher saved by `dinoscope train`, with the config it was trained with.
pub fn load_run_teacher(
    weights: &Path,
    device: &Device,
) -> Result<(DinoModel, Config), CheckpointError> {
    let (model_path, config_path) = run_files(weights);
    let config = Config::from_file(&config_path)?;
    let vit = VitConfig {
        arch: config.vit_arch(),
        patch_size: config.model.patch_size,
        img_size: config.data.global_crop_size as usize,
        drop_path_rate: 0.0,
    };
    let skeleton = DinoModel::new(
        &vit,
        config.dino.hidden_dim,
        config.dino.bottleneck_dim,
        config.dino.out_dim,
        config.seed,
        device,
    );
    if !model_path.is_file() {
        return Err(CheckpointError::Read {
            path: model_path,
            reason: "no such file".into(),
        });
    }
    let model = skeleton
        .try_load_file(&model_path)
        .map_err(|err| CheckpointError::Read {
            path: model_path.clone(),
            reason: format!("{err:?}"),
        })?;
    let mut model = model;
    model.backbone = model.backbone.without_drop_path();
    Ok((model, config))
}
