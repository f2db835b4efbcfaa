//! How a watched run was trained, as the probe needs it: the temperatures, the teacher momentum
//! and the crops. The user's values win; then the `args` Namespace `main_dino.py` pickles into
//! every checkpoint; then `main_dino.py`'s defaults, each one named as assumed so the user can
//! check it.

use crate::augment::AugmentConfig;
use crate::store::official_args::OfficialArgs;
use std::path::{Path, PathBuf};

/// How the watched run was trained, as far as the probe needs it: from the user, else from the
/// checkpoint's pickled `args`, else main_dino.py's defaults (see [`WatchSettings::resolve`]).
#[derive(Clone, Debug)]
pub struct WatchSettings {
    pub warmup_teacher_temp: f64,
    pub teacher_temp: f64,
    pub warmup_teacher_temp_epochs: usize,
    pub student_temp: f64,
    /// main_dino.py's --momentum_teacher (the base of its cosine schedule to 1).
    pub momentum_teacher: f64,
    /// main_dino.py's --epochs: the length of that schedule.
    pub epochs: usize,
    pub heads: Option<usize>,
    pub augment: AugmentConfig,
    /// Images in the probe batch and the seed of their crops.
    pub probe_images: usize,
    pub seed: u64,
}

impl Default for WatchSettings {
    fn default() -> Self {
        Self {
            warmup_teacher_temp: 0.04,
            teacher_temp: 0.04,
            warmup_teacher_temp_epochs: 0,
            student_temp: 0.1,
            momentum_teacher: 0.996,
            epochs: 100,
            heads: None,
            augment: AugmentConfig::default(),
            probe_images: 16,
            seed: 0,
        }
    }
}

impl WatchSettings {
    /// `DINOLoss.teacher_temp_schedule[epoch]`: linear warm-up, then constant.
    pub fn teacher_temp_at(&self, epoch: usize) -> f64 {
        crate::train::schedule::teacher_temp_at_epoch(
            self.warmup_teacher_temp,
            self.teacher_temp,
            self.warmup_teacher_temp_epochs,
            epoch,
        )
    }

    /// These settings in a `train` config, the rest at its defaults: what `watch_checks` holds
    /// against train's ranges, and the base of the watch's `config.toml`.
    pub fn config(&self) -> crate::config::Config {
        let mut config = crate::config::Config::default();
        let d = &mut config.dino;
        d.teacher_temp = self.teacher_temp;
        d.warmup_teacher_temp = self.warmup_teacher_temp;
        d.warmup_teacher_temp_epochs = self.warmup_teacher_temp_epochs;
        d.momentum_teacher = self.momentum_teacher;
        d.student_temp = self.student_temp;
        d.local_crops_number = self.augment.local_crops_number;
        let (low, high) = self.augment.global_crops_scale;
        d.global_crops_scale = [f64::from(low), f64::from(high)];
        let (low, high) = self.augment.local_crops_scale;
        d.local_crops_scale = [f64::from(low), f64::from(high)];
        config.data.global_crop_size = self.augment.global_crop_size_px;
        config.data.local_crop_size = self.augment.local_crop_size_px;
        config
    }

    /// The teacher momentum of the last update before the checkpoint of `epoch`: main_dino.py's
    /// `cosine_scheduler(momentum_teacher, 1, epochs, iters)` at the end of that epoch (the
    /// iteration count cancels out but for the last update's one-iteration offset).
    pub fn momentum_at(&self, epoch: usize) -> f64 {
        let epochs = self.epochs.max(1);
        let done = (epoch + 1).min(epochs) as f64 / epochs as f64;
        1.0 - (1.0 - self.momentum_teacher) * 0.5 * (1.0 + (std::f64::consts::PI * done).cos())
    }
}

/// Values the user gave (CLI flags, the app's fields, or `DIR.watch.toml` beside the run
/// folder with these keys); `None` = the run's own.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchOverrides {
    pub teacher_temp: Option<f64>,
    pub warmup_teacher_temp: Option<f64>,
    pub warmup_teacher_temp_epochs: Option<usize>,
    pub momentum_teacher: Option<f64>,
    pub epochs: Option<usize>,
    pub global_crop_px: Option<u32>,
    pub local_crop_px: Option<u32>,
    pub local_crops: Option<usize>,
    pub heads: Option<usize>,
}

impl WatchOverrides {
    /// The user's settings file for a watched folder: `DIR.watch.toml` beside it (the
    /// training job's folder is never written to).
    pub fn file_for(dir: &Path) -> PathBuf {
        let mut name = dir.file_name().unwrap_or_default().to_os_string();
        name.push(".watch.toml");
        dir.with_file_name(name)
    }

    /// That file's values; `Ok(None)` without one, an error naming the file and the key
    /// otherwise.
    pub fn read_file(dir: &Path) -> Result<Option<Self>, String> {
        let path = Self::file_for(dir);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(None);
        };
        toml::from_str(&text).map(Some).map_err(|err| {
            format!(
                "{}: {err}; keys: teacher_temp, warmup_teacher_temp, warmup_teacher_temp_epochs, momentum_teacher, epochs, global_crop_px, local_crop_px, local_crops, heads",
                path.display()
            )
        })
    }

    /// These values, and `fallback`'s where these have none.
    pub fn or(self, fallback: WatchOverrides) -> WatchOverrides {
        WatchOverrides {
            teacher_temp: self.teacher_temp.or(fallback.teacher_temp),
            warmup_teacher_temp: self.warmup_teacher_temp.or(fallback.warmup_teacher_temp),
            warmup_teacher_temp_epochs: self
                .warmup_teacher_temp_epochs
                .or(fallback.warmup_teacher_temp_epochs),
            momentum_teacher: self.momentum_teacher.or(fallback.momentum_teacher),
            epochs: self.epochs.or(fallback.epochs),
            global_crop_px: self.global_crop_px.or(fallback.global_crop_px),
            local_crop_px: self.local_crop_px.or(fallback.local_crop_px),
            local_crops: self.local_crops.or(fallback.local_crops),
            heads: self.heads.or(fallback.heads),
        }
    }
}

/// The settings and where each came from, for the user to read.
#[derive(Clone, Debug)]
pub struct ResolvedSettings {
    pub settings: WatchSettings,
    /// `name value` read from the checkpoint's `args`.
    pub from_args: Vec<String>,
    /// `flag value` taken from main_dino.py because neither the user nor `args` said.
    pub assumed: Vec<String>,
}

impl WatchSettings {
    /// The user's values, else the run's `args`, else main_dino.py's defaults. The crop sizes
    /// are not in `args` (main_dino.py fixes 224 and 96 px): they are assumed unless given.
    pub fn resolve(given: &WatchOverrides, args: Option<&OfficialArgs>) -> ResolvedSettings {
        let defaults = WatchSettings::default();
        let mut from_args = Vec::new();
        let mut assumed = Vec::new();
        let mut number = |given: Option<f64>, key: &str, flag: &str, default: f64| -> f64 {
            if let Some(value) = given {
                return value;
            }
            match args.and_then(|a| a.get(key)).and_then(|v| v.as_f64()) {
                Some(value) => {
                    from_args.push(format!("{key} {value}"));
                    value
                }
                None => {
                    assumed.push(format!("{flag} {default}"));
                    default
                }
            }
        };
        let teacher_temp = number(
            given.teacher_temp,
            "teacher_temp",
            "--teacher-temp",
            defaults.teacher_temp,
        );
        let warmup_teacher_temp = number(
            given.warmup_teacher_temp,
            "warmup_teacher_temp",
            "--warmup-teacher-temp",
            defaults.warmup_teacher_temp,
        );
        let warmup_teacher_temp_epochs = number(
            given.warmup_teacher_temp_epochs.map(|e| e as f64),
            "warmup_teacher_temp_epochs",
            "--warmup-teacher-temp-epochs",
            defaults.warmup_teacher_temp_epochs as f64,
        ) as usize;
        let momentum_teacher = number(
            given.momentum_teacher,
            "momentum_teacher",
            "--momentum-teacher",
            defaults.momentum_teacher,
        );
        let epochs = number(
            given.epochs.map(|e| e as f64),
            "epochs",
            "--epochs",
            defaults.epochs as f64,
        ) as usize;
        let augment_defaults = AugmentConfig::default();
        let local_crops_number = number(
            given.local_crops.map(|n| n as f64),
            "local_crops_number",
            "--local-crops",
            augment_defaults.local_crops_number as f64,
        ) as usize;
        let mut crop = |given: Option<u32>, flag: &str, default: u32| {
            given.unwrap_or_else(|| {
                assumed.push(format!("{flag} {default}"));
                default
            })
        };
        let global_crop_size_px = crop(given.global_crop_px, "--global-crop", 224);
        let local_crop_size_px = crop(given.local_crop_px, "--local-crop", 96);
        // The scales only shape the probe's crops: the run's when known, silently the
        // official defaults otherwise.
        let mut scale = |key: &str, default: (f32, f32)| match args
            .and_then(|a| a.get(key))
            .and_then(|v| v.as_pair())
        {
            Some((low, high)) => {
                from_args.push(format!("{key} ({low}, {high})"));
                (low as f32, high as f32)
            }
            None => default,
        };
        let global_crops_scale = scale("global_crops_scale", augment_defaults.global_crops_scale);
        let local_crops_scale = scale("local_crops_scale", augment_defaults.local_crops_scale);
        ResolvedSettings {
            settings: WatchSettings {
                teacher_temp,
                warmup_teacher_temp,
                warmup_teacher_temp_epochs,
                momentum_teacher,
                epochs,
                heads: given.heads,
                augment: AugmentConfig {
                    global_crop_size_px,
                    local_crop_size_px,
                    global_crops_scale,
                    local_crops_scale,
                    local_crops_number,
                },
                ..defaults
            },
            from_args,
            assumed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::official_args::ArgValue;

    #[test]
    fn the_users_values_win_then_args_then_defaults() {
        let args: OfficialArgs = [
            ("teacher_temp", ArgValue::Float(0.07)),
            ("warmup_teacher_temp_epochs", ArgValue::Int(30)),
            ("local_crops_number", ArgValue::Int(10)),
            (
                "local_crops_scale",
                ArgValue::Seq(vec![ArgValue::Float(0.05), ArgValue::Float(0.4)]),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let given = WatchOverrides {
            warmup_teacher_temp_epochs: Some(5),
            global_crop_px: Some(160),
            ..WatchOverrides::default()
        };
        let resolved = WatchSettings::resolve(&given, Some(&args));
        let s = &resolved.settings;
        assert_eq!(s.teacher_temp, 0.07);
        assert_eq!(s.warmup_teacher_temp_epochs, 5, "given beats args");
        assert_eq!(s.augment.local_crops_number, 10);
        assert_eq!(s.augment.local_crops_scale, (0.05, 0.4));
        assert_eq!(s.augment.global_crop_size_px, 160);
        assert_eq!(s.momentum_teacher, 0.996);
        assert!(resolved
            .from_args
            .contains(&"teacher_temp 0.07".to_string()));
        assert!(resolved
            .assumed
            .contains(&"--momentum-teacher 0.996".to_string()));
        assert!(resolved.assumed.contains(&"--local-crop 96".to_string()));
        assert!(!resolved
            .assumed
            .iter()
            .any(|a| a.starts_with("--global-crop")));
        // Without args everything not given is assumed.
        let bare = WatchSettings::resolve(&WatchOverrides::default(), None);
        assert!(bare.from_args.is_empty());
        assert_eq!(bare.assumed.len(), 8);
    }

    #[test]
    fn the_momentum_follows_main_dinos_cosine_schedule_by_epoch() {
        let settings = WatchSettings {
            momentum_teacher: 0.996,
            epochs: 100,
            ..WatchSettings::default()
        };
        assert!((settings.momentum_at(49) - 0.998).abs() < 1e-12);
        assert!((settings.momentum_at(0) - 0.996).abs() < 1e-5);
        assert!(settings.momentum_at(0) > 0.996);
        assert_eq!(settings.momentum_at(99), 1.0);
        assert_eq!(settings.momentum_at(500), 1.0, "past the end it holds");
    }

    #[test]
    fn the_settings_file_beside_the_folder_fills_what_flags_leave_open() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("output_dir");
        std::fs::create_dir(&run).unwrap();
        assert_eq!(WatchOverrides::read_file(&run), Ok(None));
        let file = WatchOverrides::file_for(&run);
        assert_eq!(file, dir.path().join("output_dir.watch.toml"));
        std::fs::write(&file, "teacher_temp = 0.07\nglobal_crop_px = 160\n").unwrap();
        let from_file = WatchOverrides::read_file(&run).unwrap().unwrap();
        let flags = WatchOverrides {
            teacher_temp: Some(0.05),
            ..WatchOverrides::default()
        };
        let merged = flags.or(from_file);
        assert_eq!(merged.teacher_temp, Some(0.05), "a flag beats the file");
        assert_eq!(merged.global_crop_px, Some(160));
        std::fs::write(&file, "teacher_tmp = 0.07\n").unwrap();
        let err = WatchOverrides::read_file(&run).unwrap_err();
        assert!(
            err.contains("output_dir.watch.toml") && err.contains("teacher_tmp"),
            "{err}"
        );
    }
}
