//! Attention beyond the last block against references for the official-layout fixture model:
//! every block's CLS maps, rollout (jacobgil/vit-explain `vit_rollout.py`) for each head fusion
//! with and without discarding, and the mean attention distance per head. The references come
//! from `scripts/make_layers_fixture.py`, a float64 numpy forward of the official code that
//! first reproduces PyTorch's fixture (`attention_32x32.npy`, `cls_32x32.npy`) to 1e-7.

use crate::attention::{fixture, max_abs_diff, reference};
use burn::prelude::*;
use dinoscope::analysis::attention::HeadFusion;
use dinoscope::analysis::layers::{layer_maps, RolloutSettings};
use dinoscope::store::npy::read_npy;
use dinoscope::store::weights::{load_backbone, ArchOverrides, Network};

#[test]
fn every_layer_rollout_and_distance_match_the_reference() {
    let device = Device::flex();
    let loaded = load_backbone(
        &fixture("backbone.pth"),
        Network::Teacher,
        &ArchOverrides {
            num_heads: Some(3),
            ..Default::default()
        },
        &device,
    )
    .unwrap();
    let image = dinoscope::data::load_rgb(&fixture("image.png")).unwrap();
    let square = image::imageops::crop_imm(&image, 0, 0, 32, 32).to_image();
    let (shape, expected) = reference("attention_layers_32x32.npy");
    assert_eq!(shape, [2, 3, 4, 4]);
    // Both blocks, asked in reverse: returned in the order asked.
    let maps = layer_maps(
        &loaded.backbone,
        &square,
        (32, 32),
        &device,
        &[1, 0],
        None,
        true,
    )
    .unwrap();
    assert_eq!(maps.layers, [1, 0]);
    let ours: Vec<f32> = [&maps.cls[1], &maps.cls[0]]
        .iter()
        .flat_map(|heads| heads.concat())
        .collect();
    let diff = max_abs_diff(&ours, &expected);
    assert!(diff < 1e-5, "per-layer CLS attention differs by {diff}");
    assert_eq!(maps.distance_px.len(), 2);
    // Without distances no block keeps its probabilities (each CLS row from its own q, k
    // beside the fused attention): the same maps.
    let cheap = layer_maps(
        &loaded.backbone,
        &square,
        (32, 32),
        &device,
        &[1, 0],
        None,
        false,
    )
    .unwrap();
    assert!(cheap.distance_px.is_empty());
    let diff = max_abs_diff(&cheap.cls.concat().concat(), &maps.cls.concat().concat());
    assert!(
        diff < 1e-6,
        "CLS rows beside the fused attention differ by {diff}"
    );
    // The last block alone is the map the official script shows.
    let (_, last) = reference("attention_32x32.npy");
    assert!(max_abs_diff(&maps.cls[0].concat(), &last) < 1e-5);

    let (_, distance) = reference("distance_32x32.npy");
    let diff = max_abs_diff(&maps.distance_px.concat(), &distance);
    assert!(diff < 1e-4, "mean attention distance differs by {diff} px");

    for (fusion, name) in [
        (HeadFusion::Mean, "mean"),
        (HeadFusion::Max, "max"),
        (HeadFusion::Min, "min"),
    ] {
        for discard in [0.0f32, 0.9] {
            let settings = RolloutSettings {
                fusion,
                discard_ratio: discard,
            };
            let maps = layer_maps(
                &loaded.backbone,
                &square,
                (32, 32),
                &device,
                &[],
                Some(settings),
                false,
            )
            .unwrap();
            let file = format!("rollout_32x32_{name}_d{discard:.1}.npy");
            let (_, expected) = reference(&file);
            let diff = max_abs_diff(maps.rollout.as_deref().unwrap(), &expected);
            assert!(diff < 1e-5, "{file}: rollout differs by {diff}");
        }
    }
}

#[test]
fn attention_cli_writes_every_layer_rollout_and_distance() {
    let dir = tempfile::tempdir().unwrap();
    let image = dinoscope::data::load_rgb(&fixture("image.png")).unwrap();
    let square = image::imageops::crop_imm(&image, 0, 0, 32, 32).to_image();
    let input = dir.path().join("square.png");
    square.save(&input).unwrap();
    let out = dir.path().join("out");
    let run = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_dinoscope"))
            .args(["attention", "--heads", "3", "--size", "32x32", "--weights"])
            .arg(fixture("backbone.pth"))
            .arg("--image")
            .arg(&input)
            .arg("--out")
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };
    let output = run(&["--layer", "all", "--rollout", "--distance"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("mean attention distance"), "{stdout}");
    let written = read_npy(&out.join("attention.npy")).unwrap();
    assert_eq!(written.shape, [2, 3, 4, 4]);
    let (_, expected) = reference("attention_layers_32x32.npy");
    assert!(max_abs_diff(&written.to_f32().unwrap(), &expected) < 1e-5);
    assert_eq!(
        read_npy(&out.join("masks.npy")).unwrap().shape,
        [2, 3, 4, 4]
    );
    let rollout = read_npy(&out.join("rollout.npy")).unwrap();
    assert_eq!(rollout.shape, [4, 4]);
    let (_, expected) = reference("rollout_32x32_mean_d0.9.npy");
    assert!(max_abs_diff(&rollout.to_f32().unwrap(), &expected) < 1e-5);
    for name in [
        "rollout.png",
        "attn-l0-head2.png",
        "overlay_th0.6_rollout.png",
    ] {
        assert!(out.join(name).is_file(), "{name}");
    }
    let csv = std::fs::read_to_string(out.join("distance.csv")).unwrap();
    let (_, expected) = reference("distance_32x32.npy");
    let values: Vec<f32> = csv
        .lines()
        .skip(1)
        .map(|line| line.rsplit(',').next().unwrap().parse().unwrap())
        .collect();
    assert!(
        csv.starts_with("layer,head,mean_distance_px\n0,0,"),
        "{csv}"
    );
    assert!(max_abs_diff(&values, &expected) < 1e-3, "{csv}");

    // One earlier block: the per-head files are that block's maps.
    let output = run(&["--layer", "0"]);
    assert!(output.status.success());
    let written = read_npy(&out.join("attention.npy")).unwrap();
    assert_eq!(written.shape, [3, 4, 4]);
    let (_, expected) = reference("attention_layers_32x32.npy");
    assert!(max_abs_diff(&written.to_f32().unwrap(), &expected[..48]) < 1e-5);
    // The tokens: similarity to the patch under a pixel, and the norms with their outliers.
    let output = run(&["--similarity", "20,12", "--token-norms"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("similarity to patch (1, 2)"), "{stdout}");
    let similarity = read_npy(&out.join("similarity.npy")).unwrap();
    let (_, expected) = reference("similarity_32x32_p6.npy");
    assert!(max_abs_diff(&similarity.to_f32().unwrap(), &expected) < 1e-5);
    assert!(out.join("similarity.png").is_file() && out.join("token_norm_outliers.png").is_file());
    assert_eq!(
        read_npy(&out.join("token_norms.npy")).unwrap().shape,
        [4, 4]
    );
    let output = run(&["--similarity", "99,1"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("outside the 32 x 32 px image"));
    // A block the network does not have.
    let output = run(&["--layer", "5"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("has 2 blocks"), "{stderr}");
}

#[test]
fn patch_similarity_and_token_norms_match_the_reference() {
    let device = Device::flex();
    let loaded = load_backbone(
        &fixture("backbone.pth"),
        Network::Teacher,
        &ArchOverrides {
            num_heads: Some(3),
            ..Default::default()
        },
        &device,
    )
    .unwrap();
    let image = dinoscope::data::load_rgb(&fixture("image.png")).unwrap();
    let square = image::imageops::crop_imm(&image, 0, 0, 32, 32).to_image();
    let tokens =
        dinoscope::analysis::tokens::patch_tokens(&loaded.backbone, &square, (32, 32), &device)
            .unwrap();
    // Pixel (20, 12) is in patch row 1, column 2: index 6.
    let index = tokens.patch_at(20, 12).unwrap();
    assert_eq!(index, 6);
    let (_, expected) = reference("similarity_32x32_p6.npy");
    let diff = max_abs_diff(&tokens.similarity_to(index, &tokens), &expected);
    assert!(diff < 1e-5, "similarity differs by {diff}");
    let (_, expected) = reference("token_norms_32x32.npy");
    let relative = tokens
        .norms
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
        .fold(0.0, f32::max);
    assert!(
        relative < 1e-5,
        "token norms differ by {relative} (relative)"
    );
    // The view's maps carry the same norms from their one pass.
    let maps = dinoscope::analysis::attention::attention_and_pca(
        &loaded.backbone,
        &square,
        (32, 32),
        &device,
    )
    .unwrap();
    assert!(max_abs_diff(&maps.token_norms, &tokens.norms) < 1e-6);
}

#[test]
fn all_checkpoints_of_a_run_become_a_timelapse() {
    use image::AnimationDecoder;
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let output = crate::cli::train_micro(&run, 6)
        .args(["--checkpoint-every", "2", "--keep-last", "5"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let out = dir.path().join("lapse");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dinoscope"))
        .args(["attention", "--all-checkpoints", "--distance", "--weights"])
        .arg(&run)
        .arg("--image")
        .arg(fixture("image.png"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("3 checkpoints (steps 2 .. 6)"), "{stdout}");
    // With --distance: every head of every block at every checkpoint.
    let csv = std::fs::read_to_string(out.join("distance_over_training.csv")).unwrap();
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    let micro = crate::worker::micro_config().vit_arch();
    assert_eq!(rows.len(), 3 * micro.depth * micro.num_heads, "{csv}");
    assert_eq!(
        rows.iter()
            .map(|r| r[0])
            .collect::<std::collections::BTreeSet<_>>(),
        ["2", "4", "6"].into_iter().collect()
    );
    assert!(rows
        .iter()
        .all(|r| r[3].parse::<f32>().is_ok_and(|d| d.is_finite() && d >= 0.0)));
    let gif = std::fs::File::open(out.join("timelapse.gif")).unwrap();
    let frames = image::codecs::gif::GifDecoder::new(std::io::BufReader::new(gif))
        .unwrap()
        .into_frames()
        .collect_frames()
        .unwrap();
    assert_eq!(frames.len(), 3);
    // A run with one checkpoint cannot make one, and says why.
    let single = dir.path().join("single");
    assert!(crate::cli::train_micro(&single, 2)
        .output()
        .unwrap()
        .status
        .success());
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dinoscope"))
        .args(["attention", "--all-checkpoints", "--weights"])
        .arg(&single)
        .arg("--image")
        .arg(fixture("image.png"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("at least two"));
}
