//! Saving and loading our own models and training state.
//!
//! - `teacher.bpk` next to the run's `config.toml`: the teacher alone, for the attention view.
//! - `checkpoint-<step>/` directories: everything a run needs to continue exactly (student,
//!   teacher, optimiser state, center, config, step, live settings, random streams, and the
//!   rows of the representation readings' windows so those resume exactly too). Each is
//!   written into a hidden temporary directory, fsynced, then renamed into place, so a kill at
//!   any moment leaves the previous checkpoints intact; `state.toml` is written last and marks
//!   a complete one. The last `keep_last` are kept.

use crate::analysis::geometry::WindowRows;
use crate::config::{Config, ConfigError, LiveSettings};
use crate::model::DinoModel;
use crate::store::run::CONFIG_FILE;
use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::prelude::*;
use std::path::{Path, PathBuf};

/// The teacher's weights inside a run directory.
pub const TEACHER_FILE: &str = "teacher.bpk";
/// A checkpoint's step, schedules and live settings (beside its weights).
pub const STATE_FILE: &str = "state.toml";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot write checkpoint {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error("cannot read weights {path}: {reason}. Pass a run directory written by `dinoscope train` (it holds config.toml and teacher.bpk) or its teacher.bpk")]
    Read { path: PathBuf, reason: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{path}: {what}")]
    Mismatch { path: PathBuf, what: String },
    /// A file of a checkpoint directory that cannot be read back (the directory itself was
    /// found, so the generic "pass a run directory" hint would only mislead).
    #[error("checkpoint file {path} is damaged or incomplete: {reason}")]
    Damaged { path: PathBuf, reason: String },
    #[error("no complete checkpoint in {path}; pass a run directory that holds checkpoint-<step>/ directories (written by `train --checkpoint-every N` or the app's Save checkpoint) or one of them")]
    NoCheckpoint { path: PathBuf },
}

/// The files of one checkpoint directory.
pub struct CheckpointFiles {
    pub student: PathBuf,
    pub teacher: PathBuf,
    pub optimizer: PathBuf,
    pub center: PathBuf,
    pub config: PathBuf,
    pub state: PathBuf,
    /// The representation windows' rows: teacher backbone features, head bottleneck.
    pub representation: [PathBuf; 2],
}

impl CheckpointFiles {
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            student: dir.join("student.bpk"),
            teacher: dir.join(TEACHER_FILE),
            optimizer: dir.join("optimizer.bpk"),
            center: dir.join("center.npy"),
            config: dir.join(CONFIG_FILE),
            state: dir.join(STATE_FILE),
            representation: [
                dir.join("representation_backbone.npy"),
                dir.join("representation_head.npy"),
            ],
        }
    }
}

/// A ChaCha stream position, exact (the word position does not fit an f64 or TOML integer).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RngState {
    pub seed_hex: String,
    pub stream: u64,
    pub word_pos: String,
}

impl RngState {
    pub fn capture(rng: &rand_chacha::ChaCha8Rng) -> Self {
        Self {
            seed_hex: rng.get_seed().iter().map(|b| format!("{b:02x}")).collect(),
            stream: rng.get_stream(),
            word_pos: rng.get_word_pos().to_string(),
        }
    }

    fn parse(&self) -> Option<([u8; 32], u128)> {
        let bytes: Vec<u8> = (0..self.seed_hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(self.seed_hex.get(i..i + 2)?, 16).ok())
            .collect::<Option<_>>()?;
        Some((bytes.try_into().ok()?, self.word_pos.parse().ok()?))
    }

    /// The stream at the captured position (validated when the state was read).
    pub fn restore(&self) -> rand_chacha::ChaCha8Rng {
        use rand::SeedableRng;
        let (seed, word_pos) = self.parse().unwrap_or(([0; 32], 0));
        let mut rng = rand_chacha::ChaCha8Rng::from_seed(seed);
        rng.set_stream(self.stream);
        rng.set_word_pos(word_pos);
        rng
    }
}

/// `state.toml` of a checkpoint.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CheckpointState {
    pub format: u32,
    /// Completed steps: the resumed run continues with this step.
    pub step: usize,
    pub epoch: usize,
    pub total_iters: usize,
    /// What the data loader opened, to refuse resuming on other data.
    pub dataset: String,
    pub live: LiveSettings,
    pub drop_path_rng: RngState,
    /// Rows each step added to the representation windows, oldest first (the `.npy` files
    /// hold the rows); empty in checkpoints written before the readings existed.
    #[serde(default)]
    pub representation_rows_per_step: Vec<usize>,
    /// The run's checkpoint policy, which a resumed run keeps (older checkpoints: none
    /// periodic, 3 kept).
    #[serde(default)]
    pub checkpoint_every_steps: usize,
    #[serde(default = "default_keep_last")]
    pub keep_last: usize,
    /// `Config::architecture_line` of the run (empty in older checkpoints).
    #[serde(default)]
    pub architecture: String,
}

fn default_keep_last() -> usize {
    3
}

impl CheckpointState {
    pub const FORMAT: u32 = 1;

    pub fn write(&self, path: &Path) -> Result<(), CheckpointError> {
        let text = toml::to_string(self).map_err(|err| CheckpointError::Write {
            path: path.to_path_buf(),
            reason: err.to_string(),
        })?;
        std::fs::write(path, text).map_err(|err| CheckpointError::Write {
            path: path.to_path_buf(),
            reason: err.to_string(),
        })
    }
}

/// Reads and checks `state.toml` of a checkpoint directory.
pub fn read_checkpoint_state(dir: &Path) -> Result<CheckpointState, CheckpointError> {
    let path = CheckpointFiles::in_dir(dir).state;
    let read_error = |reason: String| CheckpointError::Damaged {
        path: path.clone(),
        reason,
    };
    let text = std::fs::read_to_string(&path).map_err(|err| read_error(err.to_string()))?;
    let state: CheckpointState =
        toml::from_str(&text).map_err(|err| read_error(err.message().to_string()))?;
    if state.format != CheckpointState::FORMAT {
        return Err(read_error(format!(
            "format {} is not the supported {}",
            state.format,
            CheckpointState::FORMAT
        )));
    }
    if state.drop_path_rng.parse().is_none() {
        return Err(read_error("drop_path_rng is damaged".into()));
    }
    Ok(state)
}

const CHECKPOINT_PREFIX: &str = "checkpoint-";

/// Complete checkpoints of a run directory, oldest first, as (step, dir).
pub fn list_checkpoints(run_dir: &Path) -> Vec<(usize, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return Vec::new();
    };
    let mut found: Vec<(usize, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let step = name
                .strip_prefix(CHECKPOINT_PREFIX)?
                .parse::<usize>()
                .ok()?;
            let dir = entry.path();
            CheckpointFiles::in_dir(&dir)
                .state
                .is_file()
                .then_some((step, dir))
        })
        .collect();
    found.sort();
    found
}

/// `path` itself when it is a checkpoint, else the newest complete one inside the run `path`.
pub fn resolve_checkpoint(path: &Path) -> Result<PathBuf, CheckpointError> {
    if CheckpointFiles::in_dir(path).state.is_file() {
        return Ok(path.to_path_buf());
    }
    list_checkpoints(path)
        .pop()
        .map(|(_, dir)| dir)
        .ok_or_else(|| CheckpointError::NoCheckpoint {
            path: path.to_path_buf(),
        })
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() {
            std::fs::File::open(&path)?.sync_all()?;
        }
    }
    std::fs::File::open(dir)?.sync_all()
}

/// Everything a checkpoint holds, borrowed from the trainer (`Trainer::snapshot`).
pub struct Snapshot<'a> {
    pub student: &'a DinoModel,
    pub teacher: &'a DinoModel,
    pub optimizer: &'a ModuleOptimizer,
    pub center: Vec<f32>,
    pub config: &'a Config,
    pub state: CheckpointState,
    /// Backbone and head windows (their `rows_per_step` equal the state's).
    pub representation: [WindowRows; 2],
}

impl Snapshot<'_> {
    /// Writes every file of a checkpoint into `dir` (the caller makes it atomic).
    fn write_files(&self, dir: &Path) -> Result<(), CheckpointError> {
        let files = CheckpointFiles::in_dir(dir);
        let write_error = |path: &Path, reason: String| CheckpointError::Write {
            path: path.to_path_buf(),
            reason,
        };
        self.student
            .clone()
            .save_file(&files.student)
            .map_err(|err| write_error(&files.student, format!("{err:?}")))?;
        self.teacher
            .clone()
            .save_file(&files.teacher)
            .map_err(|err| write_error(&files.teacher, format!("{err:?}")))?;
        self.optimizer
            .save(&files.optimizer)
            .map_err(|err| write_error(&files.optimizer, format!("{err:?}")))?;
        crate::store::npy::write_npy_f32(&files.center, &[self.center.len()], &self.center)
            .map_err(|err| write_error(&files.center, err.to_string()))?;
        std::fs::write(&files.config, self.config.to_toml())
            .map_err(|err| write_error(&files.config, err.to_string()))?;
        for (path, window) in files.representation.iter().zip(&self.representation) {
            let rows = window.values.len() / window.dim.max(1);
            crate::store::npy::write_npy_f32(path, &[rows, window.dim], &window.values)
                .map_err(|err| write_error(path, err.to_string()))?;
        }
        // Written last: its presence marks a complete checkpoint.
        self.state.write(&files.state)
    }
}

/// The tensors of a checkpoint loaded into the trainer's freshly built modules.
pub struct Restored {
    pub student: DinoModel,
    pub teacher: DinoModel,
    pub optimizer: ModuleOptimizer,
    pub center: Vec<f32>,
    /// The representation windows, when the checkpoint has readable ones of the skeleton's
    /// widths (`dims`); `None` otherwise (the readings start afresh).
    pub representation: Option<[WindowRows; 2]>,
}

/// Loads a checkpoint's student, teacher, optimiser state and center into `skeleton` (modules
/// of the architecture its config describes); every file is named when it cannot be read.
pub fn restore(dir: &Path, skeleton: Restored) -> Result<Restored, CheckpointError> {
    let files = CheckpointFiles::in_dir(dir);
    let read_error = |path: &Path, reason: String| CheckpointError::Damaged {
        path: path.to_path_buf(),
        reason,
    };
    let out_dim = skeleton.center.len();
    let student = skeleton
        .student
        .try_load_file(&files.student)
        .map_err(|err| read_error(&files.student, recorder_reason(&err)))?;
    let mut teacher = skeleton
        .teacher
        .try_load_file(&files.teacher)
        .map_err(|err| read_error(&files.teacher, recorder_reason(&err)))?;
    teacher.backbone = teacher.backbone.without_drop_path();
    let optimizer = skeleton
        .optimizer
        .load(&files.optimizer)
        .map_err(|err| read_error(&files.optimizer, recorder_reason(&err)))?;
    let center = crate::store::npy::read_npy(&files.center)
        .ok()
        .and_then(|npy| npy.to_f32())
        .filter(|values| values.len() == out_dim)
        .ok_or_else(|| {
            read_error(
                &files.center,
                format!("expected {out_dim} float32 values (dino.out_dim)"),
            )
        })?;
    let representation = read_windows(&files, skeleton.representation.as_ref());
    Ok(Restored {
        student,
        teacher,
        optimizer,
        center,
        representation,
    })
}

/// The saved windows, shaped like `widths` (the skeleton's empty windows name their dims).
/// Diagnostics only: a missing or damaged file gives `None`, never an error.
fn read_windows(
    files: &CheckpointFiles,
    widths: Option<&[WindowRows; 2]>,
) -> Option<[WindowRows; 2]> {
    let widths = widths?;
    let state = read_checkpoint_state(files.state.parent()?).ok()?;
    let rows: usize = state.representation_rows_per_step.iter().sum();
    let mut windows = [WindowRows::default(), WindowRows::default()];
    for ((path, width), window) in files.representation.iter().zip(widths).zip(&mut windows) {
        let values = crate::store::npy::read_npy(path).ok()?.to_f32()?;
        if values.len() != rows * width.dim {
            return None;
        }
        *window = WindowRows {
            dim: width.dim,
            rows_per_step: state.representation_rows_per_step.clone(),
            values,
        };
    }
    Some(windows)
}

/// A recorder error as one readable phrase: burn's errors print as `Io("I/O error: …")`.
fn recorder_reason(err: &impl std::fmt::Debug) -> String {
    let text = format!("{err:?}");
    let inner = text
        .split_once("(\"")
        .and_then(|(_, rest)| rest.strip_suffix("\")"))
        .unwrap_or(&text);
    inner
        .trim_start_matches("I/O error: ")
        .replace("\\\"", "\"")
}

/// Writes `checkpoint-<step>/` into `run_dir` atomically and keeps the newest `keep_last`.
pub fn write_checkpoint(
    snapshot: &Snapshot<'_>,
    run_dir: &Path,
    keep_last: usize,
) -> Result<PathBuf, CheckpointError> {
    let write_error = |path: &Path, err: std::io::Error| CheckpointError::Write {
        path: path.to_path_buf(),
        reason: err.to_string(),
    };
    std::fs::create_dir_all(run_dir).map_err(|err| write_error(run_dir, err))?;
    let step = snapshot.state.step;
    let name = format!("{CHECKPOINT_PREFIX}{step:08}");
    let final_dir = run_dir.join(&name);
    let tmp_dir = run_dir.join(format!(".{name}.tmp"));
    if tmp_dir.exists() {
        std::fs::remove_dir_all(&tmp_dir).map_err(|err| write_error(&tmp_dir, err))?;
    }
    std::fs::create_dir(&tmp_dir).map_err(|err| write_error(&tmp_dir, err))?;
    let written = snapshot
        .write_files(&tmp_dir)
        .and_then(|()| fsync_dir(&tmp_dir).map_err(|err| write_error(&tmp_dir, err)));
    if let Err(err) = written {
        let _ = std::fs::remove_dir_all(&tmp_dir);
        return Err(err);
    }
    if final_dir.exists() {
        // The same step saved twice (button, then exit): the new one replaces it.
        std::fs::remove_dir_all(&final_dir).map_err(|err| write_error(&final_dir, err))?;
    }
    std::fs::rename(&tmp_dir, &final_dir).map_err(|err| write_error(&final_dir, err))?;
    std::fs::File::open(run_dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|err| write_error(run_dir, err))?;
    let all = list_checkpoints(run_dir);
    let excess = all.len().saturating_sub(keep_last.max(1));
    for (_, old) in &all[..excess] {
        // Best effort: an old checkpoint left behind costs disk, not correctness.
        let _ = std::fs::remove_dir_all(old);
    }
    Ok(final_dir)
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
        (weights.join(TEACHER_FILE), weights.join(CONFIG_FILE))
    } else {
        let dir = weights.parent().unwrap_or(Path::new("."));
        (weights.to_path_buf(), dir.join(CONFIG_FILE))
    }
}

/// Loads a teacher saved by `dinoscope train`, with the config it was trained with.
pub fn load_run_teacher(
    weights: &Path,
    device: &Device,
) -> Result<(DinoModel, Config), CheckpointError> {
    let (model_path, config_path) = run_files(weights);
    load_model_file(&model_path, &config_path, device)
}

/// The student of the newest checkpoint of a run (or of the checkpoint directory given).
pub fn load_run_student(
    path: &Path,
    device: &Device,
) -> Result<(DinoModel, Config), CheckpointError> {
    let files = CheckpointFiles::in_dir(&resolve_checkpoint(path)?);
    load_model_file(&files.student, &files.config, device)
}

/// The teacher of one checkpoint directory (`checkpoint-<step>/`), with its config.
pub fn load_checkpoint_teacher(
    dir: &Path,
    device: &Device,
) -> Result<(DinoModel, Config), CheckpointError> {
    let files = CheckpointFiles::in_dir(dir);
    load_model_file(&files.teacher, &files.config, device)
}

/// A `DinoModel` burnpack next to the config that describes it, without drop path.
fn load_model_file(
    model_path: &Path,
    config_path: &Path,
    device: &Device,
) -> Result<(DinoModel, Config), CheckpointError> {
    let config = Config::from_file(config_path)?;
    let vit = config.vit_config(0.0);
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
            path: model_path.to_path_buf(),
            reason: "no such file".into(),
        });
    }
    let mut model = skeleton
        .try_load_file(model_path)
        .map_err(|err| CheckpointError::Read {
            path: model_path.to_path_buf(),
            reason: format!("{err:?}"),
        })?;
    model.backbone = model.backbone.without_drop_path();
    Ok((model, config))
}
