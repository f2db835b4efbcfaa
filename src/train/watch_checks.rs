//! What `watch` refuses, with the input named: settings from any source (flags or the app's
//! fields, `DIR.watch.toml`, the checkpoint's pickled `args`) through the ranges of `train`'s
//! config; probe crops that cannot fit the network; a probe that cannot fit in memory; a
//! non-finite probe result; and the inputs that cannot be read at all (said once, not
//! skipped in silence).

use super::probe::ProbeBatch;
use super::watch_settings::{WatchOverrides, WatchSettings};
use crate::config::Config;
use crate::store::official_args::OfficialArgs;
use crate::train::loss::LossStats;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Where the values `WatchSettings::resolve` chose from came from, to name the one at fault.
pub struct SettingSources<'a> {
    /// CLI flags, or the app's fields.
    pub flags: &'a WatchOverrides,
    /// `DIR.watch.toml` and its values.
    pub file: Option<(&'a Path, &'a WatchOverrides)>,
    /// The checkpoint holding the run's `args`, and them.
    pub args: Option<(&'a Path, &'a OfficialArgs)>,
}

/// One watch setting: its key in `DIR.watch.toml`, its flag, its name in `args` and the key of
/// `train`'s config whose range it shares.
struct Setting {
    field: &'static str,
    flag: &'static str,
    arg: Option<&'static str>,
    config_key: &'static str,
}

const SETTINGS: [Setting; 8] = [
    Setting {
        field: "teacher_temp",
        flag: "--teacher-temp",
        arg: Some("teacher_temp"),
        config_key: "dino.teacher_temp",
    },
    Setting {
        field: "warmup_teacher_temp",
        flag: "--warmup-teacher-temp",
        arg: Some("warmup_teacher_temp"),
        config_key: "dino.warmup_teacher_temp",
    },
    Setting {
        field: "momentum_teacher",
        flag: "--momentum-teacher",
        arg: Some("momentum_teacher"),
        config_key: "dino.momentum_teacher",
    },
    Setting {
        field: "local_crops",
        flag: "--local-crops",
        arg: Some("local_crops_number"),
        config_key: "dino.local_crops_number",
    },
    Setting {
        field: "global_crop_px",
        flag: "--global-crop",
        arg: None,
        config_key: "data.global_crop_size",
    },
    Setting {
        field: "local_crop_px",
        flag: "--local-crop",
        arg: None,
        config_key: "data.local_crop_size",
    },
    Setting {
        field: "global_crops_scale",
        flag: "",
        arg: Some("global_crops_scale"),
        config_key: "dino.global_crops_scale",
    },
    Setting {
        field: "local_crops_scale",
        flag: "",
        arg: Some("local_crops_scale"),
        config_key: "dino.local_crops_scale",
    },
];

/// The longest teacher-temperature warm-up taken (train's `optim.epochs` limit).
const MAX_EPOCHS: usize = 100_000;
/// `train`'s `model.num_heads` limit.
const MAX_HEADS: usize = 128;

/// A value the user gave, as text: `None` where `overrides` leaves the setting open.
fn given(overrides: &WatchOverrides, field: &str) -> Option<String> {
    let text = |v: Option<f64>| v.map(|v| v.to_string());
    match field {
        "teacher_temp" => text(overrides.teacher_temp),
        "warmup_teacher_temp" => text(overrides.warmup_teacher_temp),
        "warmup_teacher_temp_epochs" => overrides.warmup_teacher_temp_epochs.map(|v| v.to_string()),
        "momentum_teacher" => text(overrides.momentum_teacher),
        "local_crops" => overrides.local_crops.map(|v| v.to_string()),
        "global_crop_px" => overrides.global_crop_px.map(|v| v.to_string()),
        "local_crop_px" => overrides.local_crop_px.map(|v| v.to_string()),
        "heads" => overrides.heads.map(|v| v.to_string()),
        _ => None,
    }
}

impl SettingSources<'_> {
    /// `--teacher-temp 0`, `DIR.watch.toml: teacher_temp = 0`, `the run's args
    /// (checkpoint.pth): teacher_temp = nan`: the source of the value the watch uses.
    fn source(&self, field: &str, flag: &str, arg: Option<&str>) -> String {
        if let (Some(value), false) = (given(self.flags, field), flag.is_empty()) {
            return format!("{flag} {value}");
        }
        if let Some((path, file)) = self.file {
            if let Some(value) = given(file, field) {
                return format!("{}: {field} = {value}", path.display());
            }
        }
        if let (Some((path, args)), Some(arg)) = (self.args, arg) {
            if let Some(value) = args.get(arg) {
                let value = match (value.as_f64(), value.as_pair()) {
                    (Some(number), _) => number.to_string(),
                    (_, Some((low, high))) => format!("({low}, {high})"),
                    _ => format!("{value:?}"),
                };
                return format!(
                    "the run's args ({}): {arg} = {value}",
                    path.file_name().unwrap_or_default().to_string_lossy()
                );
            }
        }
        format!("{flag} (main_dino.py's default)")
    }

    /// Whether the user's flags or file give `field` (then `args` is not read for it).
    fn user_gives(&self, field: &str) -> bool {
        given(self.flags, field).is_some()
            || self
                .file
                .is_some_and(|(_, file)| given(file, field).is_some())
    }
}

/// Every setting the watch uses, through the ranges of `train`'s config (`Config::validate`,
/// `LiveSettings`' ranges); `patch_px` (the run's `args` `patch_size`, when known) also checks
/// the crops are whole patches. The error names the value's source and the allowed range.
pub fn check_settings(
    settings: &WatchSettings,
    sources: &SettingSources<'_>,
    patch_px: Option<usize>,
) -> Result<(), String> {
    // Counts in `args` must be whole and non-negative (`resolve` reads them as numbers).
    if let Some((_, args)) = sources.args {
        for (field, arg, flag) in [
            (
                "warmup_teacher_temp_epochs",
                "warmup_teacher_temp_epochs",
                "--warmup-teacher-temp-epochs",
            ),
            ("local_crops", "local_crops_number", "--local-crops"),
        ] {
            let Some(value) = args.get(arg).filter(|_| !sources.user_gives(field)) else {
                continue;
            };
            let whole = value
                .as_f64()
                .is_some_and(|v| v.is_finite() && v >= 0.0 && v.fract() == 0.0);
            if !whole {
                return Err(format!(
                    "{} is not a whole number of {}; give the run's value with {flag}",
                    sources.source(field, flag, Some(arg)),
                    if field == "local_crops" {
                        "crops"
                    } else {
                        "epochs"
                    }
                ));
            }
        }
    }
    if settings.warmup_teacher_temp_epochs > MAX_EPOCHS {
        return Err(format!(
            "{} is out of range; allowed 0 ..= {MAX_EPOCHS}",
            sources.source(
                "warmup_teacher_temp_epochs",
                "--warmup-teacher-temp-epochs",
                Some("warmup_teacher_temp_epochs")
            )
        ));
    }
    if settings
        .heads
        .is_some_and(|h| !(1..=MAX_HEADS).contains(&h))
    {
        return Err(format!(
            "{} is out of range; allowed 1 ..= {MAX_HEADS} (a divisor of the network's width)",
            sources.source("heads", "--heads", None)
        ));
    }
    let mut config = settings.config();
    config.model.patch_size = patch_px.unwrap_or(1);
    let Err(invalid) = config.validate() else {
        return Ok(());
    };
    let Some(setting) = SETTINGS.iter().find(|s| s.config_key == invalid.key) else {
        return Err(format!(
            "watch settings: `{}` {}",
            invalid.key, invalid.message
        ));
    };
    let source = sources.source(setting.field, setting.flag, setting.arg);
    let is_crop = setting.config_key.starts_with("data.");
    if let (true, Some(patch)) = (invalid.message.contains("not a multiple"), patch_px) {
        return Err(format!(
            "{source} is not a multiple of the run's patch size {patch} px (its args' patch_size); pick a multiple, at least {patch}"
        ));
    }
    if is_crop && invalid.message.contains("larger than") {
        // main_dino.py's 96 px beside a smaller global crop the user gave (a run on small
        // images): an odd probe, not a wrong one; the user's own pair is checked.
        if !sources.user_gives("local_crop_px") {
            return Ok(());
        }
        return Err(format!(
            "{source} is larger than the global crop ({} px); local crops are the small views (main_dino.py: 96 vs 224)",
            settings.augment.global_crop_size_px
        ));
    }
    // "= 0 is out of range; allowed …": the value is in `source` already.
    let rule = invalid
        .message
        .find(" is ")
        .map_or(invalid.message.as_str(), |at| &invalid.message[at + 1..]);
    let fix = if sources.user_gives(setting.field) || setting.flag.is_empty() {
        String::new()
    } else {
        format!("; give the run's value with {}", setting.flag)
    };
    Err(format!(
        "{source} {rule} (as train's {}){fix}",
        setting.config_key
    ))
}

/// `--poll-secs`: long enough not to spin, short enough to be a poll (and a `Duration`).
pub fn check_poll_secs(secs: f64) -> Result<(), String> {
    const RANGE: std::ops::RangeInclusive<f64> = 0.1..=86_400.0;
    if secs.is_finite() && RANGE.contains(&secs) {
        Ok(())
    } else {
        Err(format!(
            "--poll-secs {} is out of range; allowed {} ..= {} seconds (a day)",
            if secs.is_finite() && secs.abs() >= 1e6 {
                format!("{secs:e}")
            } else {
                secs.to_string()
            },
            RANGE.start(),
            RANGE.end()
        ))
    }
}

/// Crops given as `.npy` (`what` names the file): `[N, 3, H, W]` of finite values, an even
/// number of global rows (2 per image), local rows a whole number per image.
pub fn check_probe(probe: &ProbeBatch, globals: &Path, locals: &Path) -> Result<(), String> {
    let (values, [rows, channels, h, w]) = &probe.globals;
    check_crops(globals, values, *channels, *h, *w)?;
    if *rows == 0 || rows % 2 != 0 {
        return Err(format!(
            "{}: {rows} global crops; expected 2 per image, crop-major ([2·B, 3, H, W])",
            globals.display()
        ));
    }
    if let Some((values, [local_rows, channels, h, w])) = &probe.locals {
        check_crops(locals, values, *channels, *h, *w)?;
        let images = rows / 2;
        if !local_rows.is_multiple_of(images) {
            return Err(format!(
                "{}: {local_rows} local crops for {images} images; expected a whole number per image ([L·B, 3, h, w])",
                locals.display()
            ));
        }
    }
    Ok(())
}

fn check_crops(
    path: &Path,
    values: &[f32],
    channels: usize,
    h: usize,
    w: usize,
) -> Result<(), String> {
    if channels != 3 {
        return Err(format!(
            "{}: {channels} channels; expected RGB crops [N, 3, H, W]",
            path.display()
        ));
    }
    if h == 0 || w == 0 {
        return Err(format!("{}: empty crops ({h} x {w})", path.display()));
    }
    if let Some(index) = values.iter().position(|v| !v.is_finite()) {
        return Err(format!(
            "{}: value {index} is not finite ({}); the probe would give NaN rows",
            path.display(),
            values[index]
        ));
    }
    Ok(())
}

/// The probe's crops against one network: whole patches, at least one per side. The error
/// names the flag (or file) and the smallest valid value.
pub fn check_probe_fits(
    probe: &ProbeBatch,
    patch_px: usize,
    checkpoint: &Path,
) -> Result<(), String> {
    let sides = std::iter::once(("--global-crop", &probe.globals))
        .chain(probe.locals.iter().map(|l| ("--local-crop", l)));
    for (flag, (_, [_, _, h, w])) in sides {
        if *h < patch_px || *w < patch_px || h % patch_px != 0 || w % patch_px != 0 {
            return Err(format!(
                "{}: probe crops of {h} x {w} px do not fit its patch size {patch_px} px; give {flag} as a multiple of {patch_px} (the smallest valid value is {patch_px})",
                checkpoint.display()
            ));
        }
    }
    Ok(())
}

/// The probe's peak memory (`Config::forward_memory_estimate` of the network and the probe's
/// crops) against the host's available memory; skipped off the host and where unknown.
pub fn check_probe_memory(config: &Config, checkpoint: &Path, on_host: bool) -> Result<(), String> {
    let Some(available) = crate::device::available_host_memory_bytes().filter(|_| on_host) else {
        return Ok(());
    };
    let estimate = config.forward_memory_estimate();
    if estimate.total_bytes() <= available {
        return Ok(());
    }
    Err(format!(
        "{}: not enough memory for the probe: {} needed, {} available; lower --local-crops ({}) or --global-crop ({} px), or give --probe fewer images ({}). Nothing was evaluated",
        checkpoint.display(),
        estimate.describe(),
        crate::config::memory::format_bytes(available),
        config.dino.local_crops_number,
        config.data.global_crop_size,
        config.optim.batch_size_per_gpu
    ))
}

/// `base` (the watched network and settings) with the probe's own batch, crops and crop sizes.
pub fn probe_config(mut base: Config, probe: &ProbeBatch) -> Config {
    let [rows, _, side, _] = probe.globals.1;
    let images = (rows / 2).max(1);
    base.optim.batch_size_per_gpu = images;
    base.data.global_crop_size = side as u32;
    if let Some((_, [local_rows, _, local_side, _])) = &probe.locals {
        base.dino.local_crops_number = local_rows / images;
        base.data.local_crop_size = *local_side as u32;
    } else {
        base.dino.local_crops_number = 0;
    }
    base
}

/// A probe result that is not finite is an error for that checkpoint, never a row.
pub fn check_stats(stats: &LossStats, checkpoint: &Path) -> Result<(), String> {
    let values = [
        ("loss", stats.loss),
        ("h(Pt)", stats.teacher_entropy),
        ("KL", stats.kl),
        ("h(mean Pt)", stats.batch_mean_entropy),
    ];
    match values.iter().find(|(_, v)| !v.is_finite()) {
        None => Ok(()),
        Some((name, value)) => Err(format!(
            "{}: the probe's {name} is {value}; no row written (the network's outputs overflow on this probe: check the probe crops and the checkpoint)",
            checkpoint.display()
        )),
    }
}

/// Inputs that cannot be read, each said once: a checkpoint that stays incomplete across
/// looks (cut short, or saved by torch < 1.6 as a plain pickle), one whose metadata cannot be
/// read (a symlink loop, no permission), and lines of `log.txt` that are not UTF-8.
#[derive(Debug, Default)]
pub struct UnreadableInputs {
    /// Size and time of incomplete checkpoints at the previous look.
    incomplete: HashMap<PathBuf, (u64, SystemTime)>,
    said: HashSet<String>,
}

impl UnreadableInputs {
    /// Warnings for what became unreadable since the last look (each at most once).
    pub fn look(
        &mut self,
        checkpoints: &[PathBuf],
        log: &Path,
        bad_log_lines: &[usize],
    ) -> Vec<String> {
        let mut warnings = Vec::new();
        for path in checkpoints {
            match std::fs::metadata(path) {
                Err(err) => self.say(
                    &mut warnings,
                    format!("cannot read {}: {err}; it is skipped", path.display()),
                ),
                Ok(meta) => {
                    let stamp = (
                        meta.len(),
                        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    );
                    if crate::store::official_run::zip_is_complete(path) {
                        self.incomplete.remove(path);
                        continue;
                    }
                    // Unchanged since the last look and still no zip end record.
                    if self.incomplete.insert(path.clone(), stamp) == Some(stamp) {
                        self.say(
                            &mut warnings,
                            format!(
                                "{} is not a complete checkpoint ({} bytes, unchanged, no zip end record): cut short, or saved by torch < 1.6 as a plain pickle; it is skipped until it changes",
                                path.display(),
                                stamp.0
                            ),
                        );
                    }
                }
            }
        }
        for line in bad_log_lines {
            self.say(
                &mut warnings,
                format!(
                    "{} line {line} is not UTF-8 text; that line is skipped, the others are read",
                    log.display()
                ),
            );
        }
        warnings
    }

    fn say(&mut self, warnings: &mut Vec<String>, message: String) {
        if self.said.insert(message.clone()) {
            warnings.push(message);
        }
    }
}

/// The watch's output folder: never inside the watched folder (the training job's), and
/// never a dinoscope training run (its rows and checkpoints are not the watch's).
pub fn check_out_dir(watched: &Path, out: &Path) -> Result<(), String> {
    let absolute = |path: &Path| -> PathBuf {
        // The deepest existing ancestor, resolved; the rest as given.
        let mut existing = path.to_path_buf();
        let mut rest = Vec::new();
        while !existing.exists() {
            match (existing.file_name(), existing.parent()) {
                (Some(name), Some(parent)) => {
                    rest.push(name.to_os_string());
                    existing = parent.to_path_buf();
                }
                _ => break,
            }
        }
        let base = if existing.as_os_str().is_empty() {
            std::env::current_dir().unwrap_or_default()
        } else {
            existing.canonicalize().unwrap_or(existing)
        };
        rest.iter().rev().fold(base, |path, name| path.join(name))
    };
    let (watched_abs, out_abs) = (absolute(watched), absolute(out));
    if out_abs.starts_with(&watched_abs) {
        return Err(format!(
            "--out {} is inside the watched folder {}: the training job's folder is never written to; pick a folder outside it (default: {}.dinoscope beside it)",
            out.display(),
            watched.display(),
            watched_abs.display()
        ));
    }
    let has_checkpoints = std::fs::read_dir(out).is_ok_and(|entries| {
        entries
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().starts_with("checkpoint-"))
    });
    if has_checkpoints {
        return Err(format!(
            "--out {} holds a dinoscope training run (checkpoint-*/); its rows are not a watch's. Pick another --out",
            out.display()
        ));
    }
    Ok(())
}

/// The default output folder: `DIR.dinoscope` beside the watched folder, from its resolved
/// path (so `watch .` does not write into the folder it watches).
pub fn default_out_dir(watched: &Path) -> PathBuf {
    let resolved = watched
        .canonicalize()
        .unwrap_or_else(|_| watched.to_path_buf());
    let mut name = resolved.file_name().unwrap_or_default().to_os_string();
    name.push(".dinoscope");
    resolved.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::official_args::ArgValue;

    fn sources<'a>(
        flags: &'a WatchOverrides,
        args: Option<(&'a Path, &'a OfficialArgs)>,
    ) -> SettingSources<'a> {
        SettingSources {
            flags,
            file: None,
            args,
        }
    }

    #[test]
    fn each_source_is_checked_against_trains_ranges_and_named() {
        let flags = WatchOverrides {
            teacher_temp: Some(0.0),
            ..WatchOverrides::default()
        };
        let resolved = WatchSettings::resolve(&flags, None);
        let err = check_settings(&resolved.settings, &sources(&flags, None), None).unwrap_err();
        assert!(
            err.contains("--teacher-temp 0") && err.contains("0.0001 ..= 1"),
            "{err}"
        );

        let args: OfficialArgs = [
            ("momentum_teacher", ArgValue::Float(f64::NAN)),
            ("local_crops_number", ArgValue::Int(5000)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let none = WatchOverrides::default();
        let file = Path::new("/run/checkpoint.pth");
        let resolved = WatchSettings::resolve(&none, Some(&args));
        let err = check_settings(
            &resolved.settings,
            &sources(&none, Some((file, &args))),
            None,
        )
        .unwrap_err();
        assert!(
            err.contains("checkpoint.pth")
                && err.contains("momentum_teacher")
                && err.contains("--momentum-teacher"),
            "{err}"
        );
        // A flag overrides the bad value in args; then the next bad one is named.
        let fixed = WatchOverrides {
            momentum_teacher: Some(0.996),
            ..WatchOverrides::default()
        };
        let resolved = WatchSettings::resolve(&fixed, Some(&args));
        let err = check_settings(
            &resolved.settings,
            &sources(&fixed, Some((file, &args))),
            None,
        )
        .unwrap_err();
        assert!(
            err.contains("local_crops_number") && err.contains("0 ..= 16"),
            "{err}"
        );

        let crops = WatchOverrides {
            global_crop_px: Some(0),
            ..WatchOverrides::default()
        };
        let resolved = WatchSettings::resolve(&crops, None);
        let err = check_settings(&resolved.settings, &sources(&crops, None), None).unwrap_err();
        assert!(
            err.contains("--global-crop 0") && err.contains("8 ..= 1024"),
            "{err}"
        );
        let crops = WatchOverrides {
            global_crop_px: Some(30),
            ..WatchOverrides::default()
        };
        let resolved = WatchSettings::resolve(&crops, None);
        let err = check_settings(&resolved.settings, &sources(&crops, None), Some(16)).unwrap_err();
        assert!(
            err.contains("--global-crop 30") && err.contains("at least 16"),
            "{err}"
        );
        // main_dino.py's defaults pass.
        let resolved = WatchSettings::resolve(&none, None);
        check_settings(&resolved.settings, &sources(&none, None), Some(16)).unwrap();
    }

    #[test]
    fn poll_secs_must_be_a_sane_duration() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e300, 0.001] {
            assert!(check_poll_secs(bad).unwrap_err().contains("--poll-secs"));
        }
        check_poll_secs(5.0).unwrap();
    }
}
