//! Run configuration: TOML with sections `model`, `dino`, `optim`, `data` and a top-level `seed`.
//!
//! Keys follow the official `main_dino.py` argparse names where one exists
//! (`dino.out_dim`, `dino.teacher_temp`, `optim.warmup_epochs`, ...). Unknown keys and values out
//! of range are errors that name the key, the file and line, and the allowed range.
//!
//! `presets.rs`: the presets embedded from `configs/`; `validate.rs`: the range checks and the
//! file and line of an offending key.

pub mod arch;
pub mod live;
pub mod memory;
pub mod official;
mod overrides;
mod presets;
pub mod study;
mod validate;

pub use arch::{VitArch, VitConfig};

pub use live::{CenteringMode, LiveSettings, Toggle};
pub use presets::{DEFAULT_PRESET, PRESETS};
pub use validate::InvalidKey;

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use validate::{key_offset, with_line};

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
    /// How the teacher's outputs are kept from collapsing onto one prototype: `ema` (DINO:
    /// subtract the running center), `sinkhorn` (DINOv2: Sinkhorn-Knopp equipartition) or
    /// `off`. `true` / `false` still read as `ema` / `off`, and are written so.
    #[serde(serialize_with = "live::serialize_centering_compat")]
    pub centering: CenteringMode,
    /// Sinkhorn-Knopp iterations when `centering = "sinkhorn"` (DINOv2: 3).
    pub sinkhorn_iterations: usize,
    /// Weight of the KoLeo regulariser on the student's CLS features of the global crops
    /// (DINOv2: 0.1); 0 = off.
    pub koleo_weight: f64,
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
            centering: CenteringMode::Ema,
            sinkhorn_iterations: 3,
            koleo_weight: 0.0,
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
