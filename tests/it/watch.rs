//! Watching an official run (issue 16): a checkpoint of the official training code loads with
//! both heads and its center, and the decomposition on a fixed probe batch matches what the
//! official code computes from it (tests/fixtures/official_run, written by
//! scripts/make_official_run_fixture.py with torch 2.15.0).

use burn::prelude::*;
use dinoscope::store::npy::read_npy;
use dinoscope::store::weights::training::load_training_checkpoint;
use dinoscope::store::weights::ArchOverrides;
use dinoscope::train::loss::LossOptions;
use dinoscope::train::probe::probe_decomposition;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/official_run")
        .join(name)
}

fn crops(name: &str, device: &Device) -> Tensor<4> {
    let array = read_npy(&fixture(name)).unwrap();
    let shape: [usize; 4] = array.shape.clone().try_into().unwrap();
    Tensor::<4>::from_data(TensorData::new(array.to_f32().unwrap(), shape), device)
}

/// The number after `"key": ` in the reference's entry for `file` (a flat JSON object each).
fn reference(file: &str, key: &str) -> f64 {
    let text = std::fs::read_to_string(fixture("probe_reference.json")).unwrap();
    let entry = &text[text.find(&format!("\"{file}\"")).unwrap()..];
    let entry = &entry[..entry.find('}').unwrap()];
    let value = &entry[entry.find(&format!("\"{key}\": ")).unwrap() + key.len() + 4..];
    let end = value.find([',', '\n']).unwrap_or(value.len());
    value[..end].trim().parse().unwrap()
}

#[test]
fn probe_decomposition_of_official_checkpoints_matches_pytorch() {
    let device = Device::flex();
    let globals = crops("probe_globals.npy", &device);
    let locals = crops("probe_locals.npy", &device);
    let overrides = ArchOverrides {
        num_heads: Some(2),
        ..Default::default()
    };
    for file in ["checkpoint0000.pth", "checkpoint0002.pth", "checkpoint.pth"] {
        let checkpoint = load_training_checkpoint(&fixture(file), &overrides, &device).unwrap();
        assert_eq!(checkpoint.head_dims, (32, 16, 64));
        let options = LossOptions {
            student_temp: 0.1,
            teacher_temp: reference(file, "teacher_temp"),
            centering: true,
        };
        let stats = probe_decomposition(
            &checkpoint.student,
            &checkpoint.teacher,
            globals.clone(),
            Some(locals.clone()),
            &checkpoint.center,
            options,
        )
        .unwrap();
        for (name, ours) in [
            ("loss", stats.loss),
            ("teacher_entropy", stats.teacher_entropy),
            ("kl", stats.kl),
            ("batch_mean_entropy", stats.batch_mean_entropy),
        ] {
            let expected = reference(file, name);
            let diff = (ours - expected).abs();
            println!("{file} {name}: {ours:.7} vs {expected:.7} (diff {diff:.1e})");
            assert!(diff < 1e-5, "{file}: {name} differs by {diff}");
        }
    }
    // Epoch 0 and 2 differ (the run trained), and the last two files are the same state.
    assert!(
        (reference("checkpoint0000.pth", "loss") - reference("checkpoint.pth", "loss")).abs() > 0.1
    );
}

#[test]
fn a_backbone_only_file_is_not_a_training_checkpoint() {
    let device = Device::flex();
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/official_vit/backbone.pth");
    let err = load_training_checkpoint(&path, &ArchOverrides::default(), &device)
        .err()
        .expect("a flat backbone has no teacher entry");
    assert!(err.to_string().contains("backbone.pth"), "{err}");
}
