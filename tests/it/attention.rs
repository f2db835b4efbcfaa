//! Attention maps against PyTorch: a small ViT in the official key layout, its reference
//! attention, CLS feature and interpolated position table, written by
//! `scripts/make_attention_fixture.py` (tests/fixtures/official_vit/README.md). Plus the
//! weights loader's errors and the `attention` CLI end to end.

use burn::prelude::*;
use dinoscope::analysis::attention::{attention_maps, mass_mask};
use dinoscope::store::npy::read_npy;
use dinoscope::store::weights::{load_backbone, ArchOverrides, Network, WeightsFormat};
use std::path::{Path, PathBuf};

pub(crate) fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/official_vit")
        .join(name)
}

fn three_heads() -> ArchOverrides {
    ArchOverrides {
        num_heads: Some(3),
        ..Default::default()
    }
}

pub(crate) fn reference(name: &str) -> (Vec<usize>, Vec<f32>) {
    let array = read_npy(&fixture(name)).unwrap();
    let values = array.to_f32().unwrap();
    (array.shape, values)
}

pub(crate) fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn fixture_image() -> image::RgbImage {
    dinoscope::data::load_rgb(&fixture("image.png")).unwrap()
}

#[test]
fn official_backbone_matches_pytorch_to_1e5() {
    let device = Device::flex();
    let loaded = load_backbone(
        &fixture("backbone.pth"),
        Network::Teacher,
        &three_heads(),
        &device,
    )
    .unwrap();
    assert_eq!(loaded.info.format, WeightsFormat::Pytorch);
    assert_eq!(
        (
            loaded.info.arch.embed_dim,
            loaded.info.arch.depth,
            loaded.info.patch_size
        ),
        (48, 2, 8)
    );
    assert_eq!(loaded.info.img_size, 32);
    assert_eq!(loaded.info.default_short_side_px, 480);
    let image = fixture_image();
    assert_eq!(image.dimensions(), (56, 40));

    // 56 × 40 is already the requested size: no resampling, grid 5 × 7, position table
    // interpolated from 4 × 4 with the official +0.1 bicubic.
    let maps = attention_maps(&loaded.backbone, &image, (56, 40), &device).unwrap();
    assert_eq!(
        (maps.grid_rows, maps.grid_cols, maps.heads.len()),
        (5, 7, 3)
    );
    let (shape, expected) = reference("attention_56x40.npy");
    assert_eq!(shape, vec![3, 5, 7]);
    let ours: Vec<f32> = maps.heads.concat();
    let diff = max_abs_diff(&ours, &expected);
    assert!(diff < 1e-5, "attention differs from PyTorch by {diff}");

    let (_, expected_pos) = reference("pos_embed_5x7.npy");
    let pos = loaded.backbone.interpolate_pos_encoding(5, 7).unwrap();
    let pos: Vec<f32> = pos.into_data().try_to_vec::<f32>().unwrap();
    let diff = max_abs_diff(&pos, &expected_pos);
    assert!(diff < 1e-5, "position table differs by {diff}");

    // The same forward's CLS feature (final norm), not only the attention.
    let (chw, (w, h)) = dinoscope::analysis::attention::preprocess(&image, (56, 40), 8);
    let input = Tensor::<4>::from_data(TensorData::new(chw, [1, 3, h, w]), &device);
    let cls: Vec<f32> = loaded
        .backbone
        .forward(input, None)
        .cls
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let (_, expected_cls) = reference("cls_56x40.npy");
    let diff = max_abs_diff(&cls, &expected_cls);
    assert!(diff < 1e-5, "CLS feature differs by {diff}");

    // Masks at 0.6 of the mass, the official sort/cumsum rule.
    let masks = read_npy(&fixture("masks_56x40_t0.6.npy")).unwrap();
    let ours: Vec<u8> = maps.heads.iter().flat_map(|h| mass_mask(h, 0.6)).collect();
    assert_eq!(ours, masks.data);
}

#[test]
fn safetensors_in_the_official_layout_load_the_same_model() {
    let device = Device::flex();
    let loaded = load_backbone(
        &fixture("backbone.safetensors"),
        Network::Teacher,
        &three_heads(),
        &device,
    )
    .unwrap();
    assert_eq!(loaded.info.format, WeightsFormat::Safetensors);
    let maps = attention_maps(&loaded.backbone, &fixture_image(), (56, 40), &device).unwrap();
    let (_, expected) = reference("attention_56x40.npy");
    let diff = max_abs_diff(&maps.heads.concat(), &expected);
    assert!(diff < 1e-5, "attention differs by {diff}");
}

#[test]
fn square_input_uses_the_position_table_unchanged() {
    let device = Device::flex();
    let loaded = load_backbone(
        &fixture("backbone.pth"),
        Network::Teacher,
        &three_heads(),
        &device,
    )
    .unwrap();
    let square = image::imageops::crop_imm(&fixture_image(), 0, 0, 32, 32).to_image();
    let maps = attention_maps(&loaded.backbone, &square, (32, 32), &device).unwrap();
    let (_, expected) = reference("attention_32x32.npy");
    let diff = max_abs_diff(&maps.heads.concat(), &expected);
    assert!(diff < 1e-5, "attention differs by {diff}");
}

#[test]
fn full_checkpoint_gives_the_teacher_and_on_request_the_student() {
    let device = Device::flex();
    let teacher = load_backbone(
        &fixture("checkpoint.pth"),
        Network::Teacher,
        &three_heads(),
        &device,
    )
    .unwrap();
    // Head, optimiser, center, epoch and the pickled args are reported as ignored.
    assert!(teacher.info.ignored_entries > 0);
    let image = fixture_image();
    let maps = attention_maps(&teacher.backbone, &image, (56, 40), &device).unwrap();
    let (_, expected) = reference("attention_56x40.npy");
    let diff = max_abs_diff(&maps.heads.concat(), &expected);
    assert!(diff < 1e-5, "checkpoint teacher differs by {diff}");

    let student = load_backbone(
        &fixture("checkpoint.pth"),
        Network::Student,
        &three_heads(),
        &device,
    )
    .unwrap();
    assert_eq!(student.info.network, Network::Student);
    let student_maps = attention_maps(&student.backbone, &image, (56, 40), &device).unwrap();
    assert!(max_abs_diff(&student_maps.heads.concat(), &expected) > 1e-4);
}

#[test]
fn bad_weights_files_get_messages_naming_them() {
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let check = |path: &Path, needle: &str| {
        let err = load_backbone(path, Network::Teacher, &three_heads(), &device)
            .err()
            .unwrap_or_else(|| panic!("{} loaded", path.display()))
            .to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains(needle), "{err}");
    };
    check(&dir.path().join("missing.pth"), "does not exist");
    let text = dir.path().join("notes.pth");
    std::fs::write(&text, "not a checkpoint").unwrap();
    check(&text, "neither a PyTorch file");
    // A truncated download.
    let bytes = std::fs::read(fixture("backbone.pth")).unwrap();
    let truncated = dir.path().join("truncated.pth");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    check(&truncated, "cannot read weights");
    // An image renamed to .safetensors.
    let fake = dir.path().join("photo.safetensors");
    std::fs::copy(fixture("image.png"), &fake).unwrap();
    check(&fake, "cannot read weights");
    // A run directory without weights.
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    check(&run, "config.toml");
    // Heads must divide the width; the width has no official head count.
    let err = load_backbone(
        &fixture("backbone.pth"),
        Network::Teacher,
        &ArchOverrides::default(),
        &device,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("--heads"), "{err}");
}

#[test]
fn attention_cli_writes_pngs_npy_and_matches_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("maps");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dinoscope"))
        .args(["attention", "--heads", "3", "--size", "56x40", "--weights"])
        .arg(fixture("checkpoint.pth"))
        .arg("--image")
        .arg(fixture("image.png"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("grid 5 x 7"), "{stdout}");
    assert!(stdout.contains("head2: mask covers"), "{stdout}");
    for name in [
        "img.png",
        "attn-head0.png",
        "attn-mean.png",
        "mask_th0.6_head1.png",
        "overlay_th0.6_head2.png",
        "overlay_th0.6_mean.png",
    ] {
        let picture = image::open(out.join(name)).unwrap();
        assert_eq!((picture.width(), picture.height()), (56, 40), "{name}");
    }
    let written = read_npy(&out.join("attention.npy")).unwrap();
    assert_eq!(written.shape, vec![3, 5, 7]);
    let (_, expected) = reference("attention_56x40.npy");
    assert!(max_abs_diff(&written.to_f32().unwrap(), &expected) < 1e-5);
    let masks = read_npy(&out.join("masks.npy")).unwrap();
    assert_eq!(masks.descr, "|u1");
    assert_eq!(
        masks.data,
        read_npy(&fixture("masks_56x40_t0.6.npy")).unwrap().data
    );

    // Bad input: an image smaller than one patch at the requested size, a broken image.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dinoscope"))
        .args(["attention", "--heads", "3", "--size", "8x4", "--weights"])
        .arg(fixture("backbone.pth"))
        .arg("--image")
        .arg(fixture("image.png"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("--size") && !stderr.contains("panicked"),
        "{stderr}"
    );
    let broken = dir.path().join("broken.png");
    std::fs::write(&broken, b"\x89PNG\r\n\x1a\nshort").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dinoscope"))
        .args(["attention", "--heads", "3", "--weights"])
        .arg(fixture("backbone.pth"))
        .arg("--image")
        .arg(&broken)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("broken.png") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

/// Issue 14: weights holding NaN are refused naming the tensor, in the library and the CLI,
/// instead of loading silently and drawing empty masks.
#[test]
fn weights_with_nan_are_refused_naming_the_tensor() {
    let bytes = std::fs::read(fixture("backbone.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + header_len]).unwrap();
    // Crude but enough for the fixture: the data offsets of `pos_embed`.
    let entry = &header[header.find("\"pos_embed\"").unwrap()..];
    let offsets = &entry[entry.find("\"data_offsets\":[").unwrap() + 16..];
    let start: usize = offsets[..offsets.find(',').unwrap()]
        .trim()
        .parse()
        .unwrap();
    let mut damaged = bytes.clone();
    let at = 8 + header_len + start;
    damaged[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("diverged.safetensors");
    std::fs::write(&path, &damaged).unwrap();
    let err = load_backbone(&path, Network::Teacher, &three_heads(), &Device::flex())
        .err()
        .expect("NaN weights are refused")
        .to_string();
    assert!(
        err.contains("diverged.safetensors") && err.contains("pos_embed") && err.contains("NaN"),
        "{err}"
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dinoscope"))
        .args(["attention", "--heads", "3", "--weights"])
        .arg(&path)
        .arg("--image")
        .arg(fixture("image.png"))
        .arg("--out")
        .arg(dir.path().join("maps"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("pos_embed") && stderr.contains("NaN"),
        "{stderr}"
    );
}
