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

fn official_vit(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/official_vit")
        .join(name)
}

fn three_heads() -> dinoscope::store::weights::ArchOverrides {
    dinoscope::store::weights::ArchOverrides {
        num_heads: Some(3),
        ..Default::default()
    }
}

/// The attention maps of `weights` on the fixture image at its own size, heads concatenated.
fn fixture_maps(weights: &Path) -> (Vec<f32>, dinoscope::store::weights::BackboneInfo) {
    use dinoscope::store::weights::{load_backbone, Network};
    let device = Device::flex();
    let loaded = load_backbone(weights, Network::Teacher, &three_heads(), &device)
        .unwrap_or_else(|err| panic!("{}: {err}", weights.display()));
    let image = dinoscope::data::load_rgb(&official_vit("image.png")).unwrap();
    let maps =
        dinoscope::analysis::attention::attention_maps(&loaded.backbone, &image, (56, 40), &device)
            .unwrap();
    (maps.heads.concat(), loaded.info)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// `backbone_f16.pth` is backbone.pth after `.half()` (scripts/make_half_fixture.py): it
/// used to load as f16 parameters and panic in the first f32 matmul.
#[test]
fn half_precision_pth_is_converted_to_f32_on_load() {
    let (reference, info) = fixture_maps(&official_vit("backbone.pth"));
    assert_eq!(info.converted_from, None);
    assert!(
        !info.describe().contains("converted"),
        "{}",
        info.describe()
    );
    let (half, info) = fixture_maps(&official_vit("backbone_f16.pth"));
    assert_eq!(info.converted_from.as_deref(), Some("f16"));
    assert!(
        info.describe().contains("converted f16 → f32"),
        "{}",
        info.describe()
    );
    let diff = max_abs_diff(&half, &reference);
    assert!(diff < 1e-3, "f16 maps differ from f32 by {diff}");
}

/// f16 and bf16 safetensors in the official layout, written from the f32 fixture by burn's
/// own store (BurnToPyTorchAdapter, then a cast), load and give the f32 maps.
#[test]
fn half_precision_safetensors_are_converted_to_f32_on_load() {
    use burn::store::{
        BurnToPyTorchAdapter, FloatCastAdapter, ModuleAdapter, ModuleSnapshot, ModuleStore,
        SafetensorsStore,
    };
    use burn::tensor::DType;
    use dinoscope::store::weights::{load_backbone, Network};
    let (reference, _) = fixture_maps(&official_vit("backbone.safetensors"));
    let f32_backbone = load_backbone(
        &official_vit("backbone.safetensors"),
        Network::Teacher,
        &three_heads(),
        &Device::flex(),
    )
    .unwrap()
    .backbone;
    let dir = tempfile::tempdir().unwrap();
    // bf16 keeps 8 bits of mantissa against f16's 11.
    for (dtype, label, tolerance) in [(DType::F16, "f16", 1e-3), (DType::BF16, "bf16", 1e-2)] {
        let path = dir.path().join(format!("backbone_{label}.safetensors"));
        let mut store = SafetensorsStore::from_file(&path)
            .with_to_adapter(BurnToPyTorchAdapter.chain(FloatCastAdapter::to(dtype)));
        f32_backbone.save_into(&mut store).unwrap();
        let mut written = SafetensorsStore::from_file(&path);
        let tensors = written.get_all_tensors().unwrap();
        assert!(
            tensors.values().all(|t| t.dtype == dtype),
            "{label}: the file must really hold {dtype:?}"
        );
        let (maps, info) = fixture_maps(&path);
        assert_eq!(info.converted_from.as_deref(), Some(label));
        let diff = max_abs_diff(&maps, &reference);
        assert!(diff < tolerance, "{label} maps differ from f32 by {diff}");
    }
}

fn dinoscope_bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_dinoscope"))
}

#[test]
fn attention_cli_loads_half_precision_weights_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let output = dinoscope_bin()
        .args(["attention", "--heads", "3", "--size", "32", "--weights"])
        .arg(official_vit("backbone_f16.pth"))
        .arg("--image")
        .arg(official_vit("image.png"))
        .arg("--out")
        .arg(dir.path().join("maps"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.contains("converted f16 → f32"), "{stdout}");
    assert!(dir.path().join("maps/attention.npy").is_file());
}
