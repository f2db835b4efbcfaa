//! Run configuration: TOML with sections `model`, `dino`, `optim`, `data` and a top-level `seed`.
//!
//! Keys follow the official `main_dino.py` argparse names where one exists
//! (`dino.out_dim`, `dino.teacher_temp`, `optim.warmup_epochs`, ...). Unknown keys and values out
//! of range are errors that name the key, the file and line, and the allowed range.

pub mod arch;
pub mod live;
pub mod memory;
mod overrides;

pub use arch::{VitArch, VitConfig};

pub use live::{LiveSettings, Toggle};

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The preset used when no `--config` is given (the contents of `configs/tiny.toml`).
pub const DEFAULT_PRESET: &str = include_str!("../../configs/tiny.toml");

/// Every preset shipped in `configs/`, by name, so the app and tests need no file system.
pub const PRESETS: [(&str, &str); 7] = [
    ("tiny", include_str!("../../configs/tiny.toml")),
    (
        "collapse-no-centering",
        include_str!("../../configs/collapse-no-centering.toml"),
    ),
    (
        "collapse-no-sharpening",
        include_str!("../../configs/collapse-no-sharpening.toml"),
    ),
    (
        "collapse-dimensional",
        include_str!("../../configs/collapse-dimensional.toml"),
    ),
    (
        "vit-s16-paper",
        include_str!("../../configs/vit-s16-paper.toml"),
    ),
    ("cifar10", include_str!("../../configs/cifar10.toml")),
    ("stl10", include_str!("../../configs/stl10.toml")),
];

/// Keys that may be absent from a resolved config (unset overrides) yet can be `--set`.
const OPTIONAL_KEYS: [&str; 5] = [
    "model.embed_dim",
    "model.depth",
    "model.num_heads",
    "data.knn_train_path",
    "data.knn_val_path",
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}. Check the path, or omit --config to use the built-in tiny preset")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("{origin}: `{key}` {message}")]
    Invalid {
        origin: String,
        key: String,
        message: String,
    },
    #[error("--set {assignment}: {message}")]
    Override { assignment: String, message: String },
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Seeds weights, data order, augmentation and stochastic depth.
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub model: ModelConfig,
    #[serde(default)]
    pub dino: DinoConfig,
    #[serde(default)]
    pub optim: OptimConfig,
    #[serde(default)]
    pub data: DataConfig,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// `vit_micro`, `vit_tiny`, `vit_small` or `vit_base`.
    pub arch: String,
    pub patch_size: usize,
    /// Stochastic depth of the student's last block (linear from 0 at block 0).
    pub drop_path_rate: f64,
    /// Optional overrides of the architecture's width, depth and heads (for custom sizes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embed_dim: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depth: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_heads: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DinoConfig {
    /// K, the number of prototypes (the reference line ln K on the plots).
    pub out_dim: usize,
    pub hidden_dim: usize,
    pub bottleneck_dim: usize,
    /// Freeze the last layer's weight_g at 1 (every logit is a cosine similarity).
    pub norm_last_layer: bool,
    /// Base EMA momentum, cosine-scheduled to 1. 0 means no momentum teacher (copy the student).
    pub momentum_teacher: f64,
    pub warmup_teacher_temp: f64,
    pub teacher_temp: f64,
    pub warmup_teacher_temp_epochs: usize,
    pub student_temp: f64,
    pub center_momentum: f64,
    /// Ablation: subtract the running center from the teacher logits.
    pub centering: bool,
    /// Ablation: off means the teacher uses the student's temperature (no sharpening).
    pub sharpening: bool,
    pub local_crops_number: usize,
    pub global_crops_scale: [f64; 2],
    pub local_crops_scale: [f64; 2],
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    pub epochs: usize,
    pub batch_size_per_gpu: usize,
    /// Base lr at batch 256; the peak is `lr * batch / 256` as in the reference.
    pub lr: f64,
    /// Live multiplier on the whole lr schedule (1 = the reference schedule).
    pub lr_scale: f64,
    pub min_lr: f64,
    pub warmup_epochs: usize,
    pub weight_decay: f64,
    pub weight_decay_end: f64,
    /// Per-tensor gradient norm clip; 0 disables clipping.
    pub clip_grad: f64,
    pub freeze_last_layer: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataSource {
    /// The embedded procedural shapes dataset.
    Synthetic,
    /// A torchvision-style ImageFolder at `data.path`.
    Folder,
    /// CIFAR-10 binary version: `data.path` is the extracted `cifar-10-batches-bin`.
    Cifar10,
    /// CIFAR-100 binary version (fine labels): `data.path` is the extracted `cifar-100-binary`.
    Cifar100,
    /// STL-10 binary: `data.path` is the extracted `stl10_binary`; trains on the unlabelled split.
    Stl10,
}

impl DataSource {
    /// The `data.source` spelling, for messages.
    pub fn name(self) -> &'static str {
        match self {
            DataSource::Synthetic => "synthetic",
            DataSource::Folder => "folder",
            DataSource::Cifar10 => "cifar10",
            DataSource::Cifar100 => "cifar100",
            DataSource::Stl10 => "stl10",
        }
    }

    /// What `data.path` must point at, or `None` when the source needs no path.
    pub fn path_hint(self) -> Option<&'static str> {
        match self {
            DataSource::Synthetic => None,
            DataSource::Folder => Some("an ImageFolder root (one sub-folder per class)"),
            DataSource::Cifar10 => Some("the extracted cifar-10-batches-bin folder"),
            DataSource::Cifar100 => Some("the extracted cifar-100-binary folder"),
            DataSource::Stl10 => Some("the extracted stl10_binary folder"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    pub source: DataSource,
    /// ImageFolder root (one sub-folder per class) for `source = "folder"`, the extracted
    /// dataset folder for `cifar10`, `cifar100` and `stl10`.
    pub path: String,
    /// Synthetic dataset size and image side in pixels.
    pub num_images: usize,
    pub image_size: u32,
    pub global_crop_size: u32,
    pub local_crop_size: u32,
    /// Data-loader threads producing crops.
    pub num_workers: usize,
    /// Batches kept ready ahead of the train step (bounded queue).
    pub prefetch_batches: usize,
    /// Labelled ImageFolders for the k-NN monitor when `source = "folder"` (both or neither).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub knn_train_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub knn_val_path: Option<String>,
    /// Run the k-NN monitor every this many epochs; 0 = off.
    pub knn_every_epochs: usize,
    /// Caps on the images the k-NN monitor embeds, so it stays cheap on a CPU.
    pub knn_max_train: usize,
    pub knn_max_val: usize,
}

/// Defaults are the official `main_dino.py` defaults, except where noted.
impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            arch: "vit_small".into(),
            patch_size: 16,
            drop_path_rate: 0.1,
            embed_dim: None,
            depth: None,
            num_heads: None,
        }
    }
}

impl Default for DinoConfig {
    fn default() -> Self {
        Self {
            out_dim: 65536,
            hidden_dim: 2048,
            bottleneck_dim: 256,
            norm_last_layer: true,
            momentum_teacher: 0.996,
            warmup_teacher_temp: 0.04,
            teacher_temp: 0.04,
            warmup_teacher_temp_epochs: 0,
            student_temp: 0.1,
            center_momentum: 0.9,
            centering: true,
            sharpening: true,
            local_crops_number: 8,
            global_crops_scale: [0.4, 1.0],
            local_crops_scale: [0.05, 0.4],
        }
    }
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            epochs: 100,
            batch_size_per_gpu: 64,
            lr: 0.0005,
            lr_scale: 1.0,
            min_lr: 1e-6,
            warmup_epochs: 10,
            weight_decay: 0.04,
            weight_decay_end: 0.4,
            clip_grad: 3.0,
            freeze_last_layer: 1,
        }
    }
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            source: DataSource::Synthetic,
            path: String::new(),
            num_images: 2048,
            image_size: 224,
            global_crop_size: 224,
            local_crop_size: 96,
            num_workers: 2,
            prefetch_batches: 4,
            knn_train_path: None,
            knn_val_path: None,
            knn_every_epochs: 1,
            knn_max_train: 5000,
            knn_max_val: 1000,
        }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    /// The built-in preset of that name (see [`PRESETS`]).
    pub fn preset(name: &str) -> Result<Self, ConfigError> {
        let (_, text) = PRESETS
            .iter()
            .find(|(preset, _)| *preset == name)
            .ok_or_else(|| ConfigError::Parse {
                origin: format!("preset `{name}`"),
                message: format!(
                    "no such preset; choose one of: {}",
                    PRESETS.map(|(n, _)| n).join(", ")
                ),
            })?;
        Self::from_toml_str(text, &format!("configs/{name}.toml"))
    }

    /// Parses and validates TOML text; `origin` names it in errors (a file path).
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|err| ConfigError::Parse {
            origin: with_line(origin, text, err.span().map(|s| s.start)),
            message: err.message().to_string(),
        })?;
        config.validate().map_err(|invalid| ConfigError::Invalid {
            origin: with_line(origin, text, key_offset(text, &invalid.key)),
            key: invalid.key,
            message: invalid.message,
        })?;
        Ok(config)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|err| format!("# cannot serialise: {err}\n"))
    }

    /// Checks every range; the first violation is returned with its dotted key.
    pub fn validate(&self) -> Result<(), InvalidKey> {
        let m = &self.model;
        check(
            VitArch::from_name(&m.arch).is_some(),
            "model.arch",
            format!(
                "= \"{}\" is not a known architecture; allowed: vit_micro, vit_tiny, vit_small, vit_base",
                m.arch
            ),
        )?;
        in_range_usize("model.patch_size", m.patch_size, 1, 64)?;
        let arch = self.vit_arch();
        in_range_usize("model.embed_dim", arch.embed_dim, 1, 8192)?;
        in_range_usize("model.depth", arch.depth, 1, 64)?;
        in_range_usize("model.num_heads", arch.num_heads, 1, 128)?;
        check(
            arch.embed_dim % arch.num_heads == 0,
            "model.num_heads",
            format!(
                "= {} does not divide the width {}; pick a divisor",
                arch.num_heads, arch.embed_dim
            ),
        )?;
        in_range_f64("model.drop_path_rate", m.drop_path_rate, 0.0, 0.99)?;

        let d = &self.dino;
        in_range_usize("dino.out_dim", d.out_dim, 2, 262_144)?;
        in_range_usize("dino.hidden_dim", d.hidden_dim, 1, 65_536)?;
        in_range_usize("dino.bottleneck_dim", d.bottleneck_dim, 1, 65_536)?;
        live_f64(
            "dino.momentum_teacher",
            d.momentum_teacher,
            &live::MOMENTUM_TEACHER,
        )?;
        live_f64(
            "dino.warmup_teacher_temp",
            d.warmup_teacher_temp,
            &live::TEACHER_TEMP,
        )?;
        live_f64("dino.teacher_temp", d.teacher_temp, &live::TEACHER_TEMP)?;
        in_range_f64("dino.student_temp", d.student_temp, 1e-4, 1.0)?;
        in_range_f64("dino.center_momentum", d.center_momentum, 0.0, 0.9999)?;
        let crops = &live::LOCAL_CROPS.allowed;
        in_range_usize(
            "dino.local_crops_number",
            d.local_crops_number,
            *crops.start(),
            *crops.end(),
        )?;
        scale_range("dino.global_crops_scale", d.global_crops_scale)?;
        scale_range("dino.local_crops_scale", d.local_crops_scale)?;

        let o = &self.optim;
        in_range_usize("optim.epochs", o.epochs, 1, 100_000)?;
        in_range_usize("optim.batch_size_per_gpu", o.batch_size_per_gpu, 1, 4096)?;
        in_range_f64("optim.lr", o.lr, 0.0, 1.0)?;
        live_f64("optim.lr_scale", o.lr_scale, &live::LR_SCALE)?;
        in_range_f64("optim.min_lr", o.min_lr, 0.0, 1.0)?;
        in_range_usize("optim.warmup_epochs", o.warmup_epochs, 0, o.epochs)?;
        in_range_f64("optim.weight_decay", o.weight_decay, 0.0, 10.0)?;
        in_range_f64("optim.weight_decay_end", o.weight_decay_end, 0.0, 10.0)?;
        in_range_f64("optim.clip_grad", o.clip_grad, 0.0, 1e6)?;
        in_range_usize("optim.freeze_last_layer", o.freeze_last_layer, 0, o.epochs)?;

        let data = &self.data;
        if let Some(hint) = data.source.path_hint() {
            check(
                !data.path.trim().is_empty(),
                "data.path",
                format!(
                    "is empty but data.source = \"{}\"; set it to {hint}",
                    data.source.name()
                ),
            )?;
        }
        in_range_usize("data.num_images", data.num_images, 1, 10_000_000)?;
        in_range_u32("data.image_size", data.image_size, 8, 4096)?;
        in_range_u32("data.global_crop_size", data.global_crop_size, 8, 1024)?;
        in_range_u32("data.local_crop_size", data.local_crop_size, 4, 1024)?;
        in_range_usize("data.num_workers", data.num_workers, 1, 64)?;
        in_range_usize("data.prefetch_batches", data.prefetch_batches, 1, 256)?;
        in_range_usize("data.knn_every_epochs", data.knn_every_epochs, 0, 100_000)?;
        in_range_usize("data.knn_max_train", data.knn_max_train, 1, 10_000_000)?;
        in_range_usize("data.knn_max_val", data.knn_max_val, 1, 10_000_000)?;
        for (key, other, value, other_value) in [
            (
                "data.knn_train_path",
                "data.knn_val_path",
                &data.knn_train_path,
                &data.knn_val_path,
            ),
            (
                "data.knn_val_path",
                "data.knn_train_path",
                &data.knn_val_path,
                &data.knn_train_path,
            ),
        ] {
            if let Some(path) = value {
                check(
                    !path.trim().is_empty(),
                    key,
                    "is empty; set it to a labelled ImageFolder root or remove the key".into(),
                )?;
                check(
                    other_value.is_some(),
                    key,
                    format!("is set but {other} is not; the k-NN monitor needs both labelled ImageFolders (or neither)"),
                )?;
            }
        }
        for (key, size) in [
            ("data.global_crop_size", data.global_crop_size),
            ("data.local_crop_size", data.local_crop_size),
        ] {
            check(
                size as usize % m.patch_size == 0,
                key,
                format!(
                    "= {size} is not a multiple of model.patch_size = {}; pick a multiple",
                    m.patch_size
                ),
            )?;
        }
        // A local crop larger than the global one inverts multi-crop and costs its area
        // ratio in time (48 vs 32 px: 2.25× per crop, 8× with 2 + 6 crops).
        check(
            data.local_crop_size <= data.global_crop_size,
            "data.local_crop_size",
            format!(
                "= {} is larger than data.global_crop_size = {}; local crops are the small views (the paper: 96 vs 224), lower data.local_crop_size or raise data.global_crop_size",
                data.local_crop_size, data.global_crop_size
            ),
        )?;
        check(
            data.source != DataSource::Synthetic
                || data.num_images >= self.optim.batch_size_per_gpu,
            "data.num_images",
            format!(
                "= {} is smaller than optim.batch_size_per_gpu = {}; raise it or lower the batch",
                data.num_images, self.optim.batch_size_per_gpu
            ),
        )?;
        Ok(())
    }

    /// The architecture with any `model.embed_dim/depth/num_heads` overrides applied.
    pub fn vit_arch(&self) -> VitArch {
        let base = VitArch::from_name(&self.model.arch).unwrap_or(VitArch {
            embed_dim: 96,
            depth: 4,
            num_heads: 3,
        });
        VitArch {
            embed_dim: self.model.embed_dim.unwrap_or(base.embed_dim),
            depth: self.model.depth.unwrap_or(base.depth),
            num_heads: self.model.num_heads.unwrap_or(base.num_heads),
        }
    }

    /// The peak lr after linear scaling with the batch size (reference §5.2).
    pub fn peak_lr(&self) -> f64 {
        self.optim.lr * self.optim.batch_size_per_gpu as f64 / 256.0
    }
}

/// A failed range check, before it is located in the source text.
#[derive(Debug, Clone)]
pub struct InvalidKey {
    pub key: String,
    pub message: String,
}

fn check(ok: bool, key: &str, message: String) -> Result<(), InvalidKey> {
    if ok {
        Ok(())
    } else {
        Err(InvalidKey {
            key: key.into(),
            message,
        })
    }
}

fn in_range_f64(key: &str, value: f64, min: f64, max: f64) -> Result<(), InvalidKey> {
    check(
        value.is_finite() && value >= min && value <= max,
        key,
        format!("= {value} is out of range; allowed {min} ..= {max}"),
    )
}

fn live_f64(key: &str, value: f64, range: &live::LiveRange<f64>) -> Result<(), InvalidKey> {
    in_range_f64(key, value, *range.allowed.start(), *range.allowed.end())
}

fn in_range_usize(key: &str, value: usize, min: usize, max: usize) -> Result<(), InvalidKey> {
    check(
        (min..=max).contains(&value),
        key,
        format!("= {value} is out of range; allowed {min} ..= {max}"),
    )
}

fn in_range_u32(key: &str, value: u32, min: u32, max: u32) -> Result<(), InvalidKey> {
    check(
        (min..=max).contains(&value),
        key,
        format!("= {value} is out of range; allowed {min} ..= {max}"),
    )
}

fn scale_range(key: &str, [low, high]: [f64; 2]) -> Result<(), InvalidKey> {
    check(
        low > 0.0 && low <= high && high <= 1.0,
        key,
        format!("= [{low}, {high}] is out of range; allowed 0 < low <= high <= 1"),
    )
}

/// `origin:line` for a byte offset into `text`.
fn with_line(origin: &str, text: &str, offset: Option<usize>) -> String {
    match offset {
        Some(offset) => {
            let line = text[..offset.min(text.len())].matches('\n').count() + 1;
            format!("{origin}:{line}")
        }
        None => origin.to_string(),
    }
}

/// Byte offset of the line that sets dotted `key` (`dino.teacher_temp`): either
/// `teacher_temp = ...` inside `[dino]`, or `dino.teacher_temp = ...` at top level.
fn key_offset(text: &str, key: &str) -> Option<usize> {
    let (section, leaf) = key.rsplit_once('.').unwrap_or(("", key));
    let mut current_section = String::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        if let Some(header) = trimmed.strip_prefix('[') {
            current_section = header.trim_end_matches(']').trim().to_string();
        } else if let Some((lhs, _)) = trimmed.split_once('=') {
            let lhs = lhs.trim();
            let full = if current_section.is_empty() {
                lhs.to_string()
            } else {
                format!("{current_section}.{lhs}")
            };
            if full == key || (section.is_empty() && lhs == leaf) {
                return Some(offset);
            }
        }
        offset += line.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_parses_and_validates() {
        for (name, _) in PRESETS {
            let config = Config::preset(name);
            assert!(config.is_ok(), "{name}: {config:?}");
        }
    }

    #[test]
    fn unknown_key_names_key_file_and_line() {
        let text = "seed = 1\n[dino]\nout_dim = 64\nteacher_tmp = 0.04\n";
        let err = Config::from_toml_str(text, "my.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("my.toml:4"), "{err}");
        assert!(err.contains("teacher_tmp"), "{err}");
    }

    #[test]
    fn out_of_range_value_names_key_line_and_range() {
        let text = "[model]\narch = \"vit_micro\"\npatch_size = 4\n\n[dino]\nout_dim = 64\nteacher_temp = 1.5\n";
        let err = Config::from_toml_str(text, "bad.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad.toml:7"), "{err}");
        assert!(err.contains("dino.teacher_temp"), "{err}");
        assert!(err.contains("allowed"), "{err}");
    }

    #[test]
    fn overrides_apply_and_validate() {
        let base = Config::preset("tiny").unwrap();
        let changed = base
            .clone()
            .with_overrides(&[
                "dino.teacher_temp=0.07".into(),
                "model.arch=vit_tiny".into(),
            ])
            .unwrap();
        assert_eq!(changed.dino.teacher_temp, 0.07);
        assert_eq!(changed.model.arch, "vit_tiny");
        let err = base
            .clone()
            .with_overrides(&["dino.nope=1".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("dino.nope"), "{err}");
        let err = base
            .with_overrides(&["optim.lr=-1".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("optim.lr"), "{err}");
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let err = Config::from_file(Path::new("/nonexistent/dino.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/dino.toml"), "{err}");
    }

    #[test]
    fn dataset_presets_parse_with_knn_defaults() {
        let cifar = Config::preset("cifar10").unwrap();
        assert_eq!(cifar.data.source, DataSource::Cifar10);
        assert_eq!(cifar.data.path, "data/cifar-10-batches-bin");
        assert_eq!(
            (
                cifar.model.patch_size,
                cifar.data.global_crop_size,
                cifar.data.local_crop_size
            ),
            (4, 32, 16)
        );
        assert_eq!(cifar.vit_arch().embed_dim, 192);
        let stl = Config::preset("stl10").unwrap();
        assert_eq!(stl.data.source, DataSource::Stl10);
        assert_eq!((stl.model.patch_size, stl.data.global_crop_size), (8, 96));
        for config in [&cifar, &stl] {
            assert_eq!(
                (
                    config.data.knn_every_epochs,
                    config.data.knn_max_train,
                    config.data.knn_max_val
                ),
                (1, 5000, 1000)
            );
            let again = Config::from_toml_str(&config.to_toml(), "resolved").unwrap();
            assert_eq!(config, &again);
        }
        let text = "[data]\nsource = \"cifar100\"\npath = \"x\"\n";
        let parsed = Config::from_toml_str(text, "c100.toml").unwrap();
        assert_eq!(parsed.data.source, DataSource::Cifar100);
        // Keys absent from a file take the defaults.
        assert_eq!(parsed.data.knn_max_val, 1000);
        assert_eq!(parsed.data.knn_train_path, None);
    }

    #[test]
    fn dataset_source_without_path_names_the_folder_to_extract() {
        let text = "[data]\nsource = \"cifar10\"\n";
        let err = Config::from_toml_str(text, "c.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("data.path") && err.contains("cifar-10-batches-bin"),
            "{err}"
        );
        let err = Config::preset("stl10")
            .unwrap()
            .with_overrides(&["data.path=".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("stl10_binary"), "{err}");
    }

    #[test]
    fn knn_keys_are_checked() {
        let text = "[data]\nknn_every_epochs = 0\nknn_max_train = 0\n";
        let err = Config::from_toml_str(text, "k.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("k.toml:3") && err.contains("data.knn_max_train"),
            "{err}"
        );
        let text = "[data]\nsource = \"folder\"\npath = \"a\"\nknn_val_path = \"v\"\n";
        let err = Config::from_toml_str(text, "k.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("k.toml:4") && err.contains("data.knn_train_path is not"),
            "{err}"
        );
        let err = Config::from_toml_str("[data]\nknn_evry_epochs = 2\n", "k.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("k.toml:2") && err.contains("knn_evry_epochs"),
            "{err}"
        );
        let both = Config::preset("tiny")
            .unwrap()
            .with_overrides(&[
                "data.knn_train_path=/a".into(),
                "data.knn_val_path=/b".into(),
                "data.knn_every_epochs=0".into(),
            ])
            .unwrap();
        assert_eq!(both.data.knn_val_path.as_deref(), Some("/b"));
        assert_eq!(both.data.knn_every_epochs, 0);
    }

    #[test]
    fn resolved_config_round_trips() {
        let config = Config::preset("vit-s16-paper").unwrap();
        let again = Config::from_toml_str(&config.to_toml(), "resolved").unwrap();
        assert_eq!(config, again);
    }
}
