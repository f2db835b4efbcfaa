//! Range checks of a parsed config (`Config::validate`): the first violation names its dotted
//! key, the allowed range and a fix; `with_line` and `key_offset` locate it as `file:line`.

use super::{live, Config, DataSource, VitArch};

impl Config {
    /// Checks every range; the first violation is returned with its dotted key.
    ///
    /// Long: one range check per key, in the order of the config file, so a reader finds a key's
    /// rule where the file has it.
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
            arch.embed_dim.is_multiple_of(arch.num_heads),
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
        in_range_usize(
            "dino.sinkhorn_iterations",
            d.sinkhorn_iterations,
            *live::SINKHORN_ITERATIONS.start(),
            *live::SINKHORN_ITERATIONS.end(),
        )?;
        live_f64("dino.koleo_weight", d.koleo_weight, &live::KOLEO_WEIGHT)?;
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
                (size as usize).is_multiple_of(m.patch_size),
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
pub(super) fn with_line(origin: &str, text: &str, offset: Option<usize>) -> String {
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
pub(super) fn key_offset(text: &str, key: &str) -> Option<usize> {
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
}
