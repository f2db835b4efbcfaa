//! The presets shipped in `configs/`, embedded in the binary so the app and the tests need no
//! file system.

use super::{Config, ConfigError};

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

impl Config {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DataSource;

    #[test]
    fn every_preset_parses_and_validates() {
        for (name, _) in PRESETS {
            let config = Config::preset(name);
            assert!(config.is_ok(), "{name}: {config:?}");
        }
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
    fn resolved_config_round_trips() {
        let config = Config::preset("vit-s16-paper").unwrap();
        let again = Config::from_toml_str(&config.to_toml(), "resolved").unwrap();
        assert_eq!(config, again);
    }
}
