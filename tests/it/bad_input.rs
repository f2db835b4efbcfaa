//! Bad input gives clear errors naming the file/key and the fix, never a panic.

use burn::prelude::*;
use dinoscope::config::{Config, DataSource};
use dinoscope::train::trainer::{TrainError, Trainer};
use std::path::Path;

#[test]
fn missing_config_file_names_it() {
    let err = Config::from_file(Path::new("no/such/dino.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no/such/dino.toml") && err.contains("cannot read"),
        "{err}"
    );
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.toml");
    std::fs::write(&path, "seed = 1\n\n[optim]\nlr = 0.001\nwarmup_epoch = 3\n").unwrap();
    let err = Config::from_file(&path).unwrap_err().to_string();
    assert!(err.contains("typo.toml:5"), "{err}");
    assert!(err.contains("warmup_epoch"), "{err}");
}

#[test]
fn out_of_range_names_key_and_allowed_range() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("range.toml");
    std::fs::write(&path, "[dino]\nmomentum_teacher = 1.5\n").unwrap();
    let err = Config::from_file(&path).unwrap_err().to_string();
    assert!(err.contains("range.toml:2"), "{err}");
    assert!(
        err.contains("dino.momentum_teacher") && err.contains("0 ..= 1"),
        "{err}"
    );
}

fn folder_config(path: &Path) -> Config {
    let mut config = Config::preset("tiny").unwrap();
    config.data.source = DataSource::Folder;
    config.data.path = path.display().to_string();
    config.optim.batch_size_per_gpu = 2;
    config.dino.local_crops_number = 1;
    config.model.embed_dim = Some(16);
    config.model.depth = Some(1);
    config.model.num_heads = Some(2);
    config.dino.out_dim = 16;
    config.dino.hidden_dim = 16;
    config.dino.bottleneck_dim = 8;
    config
}

#[test]
fn empty_image_folder_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("cats")).unwrap();
    let err = Trainer::new(folder_config(dir.path()), Device::flex(), Some(1))
        .err()
        .expect("an empty folder must not train");
    assert!(matches!(err, TrainError::Data(_)), "{err}");
    assert!(
        err.to_string().to_lowercase().contains("empty") || err.to_string().contains("no image"),
        "{err}"
    );
}

#[test]
fn corrupt_image_is_skipped_with_a_warning_and_training_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    for class in ["a", "b"] {
        let class_dir = dir.path().join(class);
        std::fs::create_dir(&class_dir).unwrap();
        for i in 0..3u8 {
            let img = image::RgbImage::from_fn(40, 40, |x, y| {
                image::Rgb([x as u8 * 6, y as u8 * 6, i * 80])
            });
            img.save(class_dir.join(format!("{i}.png"))).unwrap();
        }
    }
    std::fs::write(
        dir.path().join("a").join("broken.jpg"),
        b"definitely not a jpeg",
    )
    .unwrap();
    let mut trainer = Trainer::new(folder_config(dir.path()), Device::flex(), Some(8)).unwrap();
    let mut warnings = Vec::new();
    for _ in 0..6 {
        let m = trainer
            .step()
            .expect("training goes on past a corrupt image");
        assert!(m.loss.is_finite());
        warnings.extend(m.warnings);
    }
    assert!(
        warnings.iter().any(|w| w.contains("broken.jpg")),
        "{warnings:?}"
    );
}

#[test]
fn missing_image_folder_names_it() {
    let err = Trainer::new(
        folder_config(Path::new("/no/such/folder")),
        Device::flex(),
        Some(1),
    )
    .err()
    .expect("must fail");
    assert!(err.to_string().contains("/no/such/folder"), "{err}");
}
