//! DINOv2 (plain and with 4 registers) and DINOv3 (4 storage tokens, RoPE) against the official
//! model code: tiny backbones built with facebookresearch/dinov2's and dinov3's own
//! `DinoVisionTransformer`, every tensor randomised, and the attention PyTorch computes for
//! them, written by `scripts/make_dinov2_v3_fixture.py` (tests/fixtures/dinov2_v3/README.md).
//! Plus the layouts that are refused, each with its one line.

use crate::attention::max_abs_diff;
use burn::prelude::*;
use dinoscope::analysis::attention::attention_maps;
use dinoscope::analysis::layers::{attention_rollout, layer_maps, RolloutSettings};
use dinoscope::analysis::tokens::patch_tokens;
use dinoscope::model::{Family, Ffn};
use dinoscope::store::npy::read_npy;
use dinoscope::store::weights::{load_backbone, ArchOverrides, LoadedBackbone, Network};
use egui_kittest::kittest::Queryable;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/dinov2_v3")
        .join(name)
}

fn reference(name: &str) -> (Vec<usize>, Vec<f32>) {
    let array = read_npy(&fixture(name)).unwrap();
    let values = array.to_f32().unwrap();
    (array.shape, values)
}

/// Width 32 has no official head count; DINOv3's RoPE periods say it, so no flag there.
fn load(kind: &str) -> LoadedBackbone {
    let overrides = ArchOverrides {
        num_heads: (!kind.starts_with("v3")).then_some(2),
        ..Default::default()
    };
    load_backbone(
        &fixture(&format!("{kind}.pth")),
        Network::Teacher,
        &overrides,
        &Device::flex(),
    )
    .unwrap()
}

fn crop(width: u32, height: u32) -> image::RgbImage {
    let image = dinoscope::data::load_rgb(&fixture("image.png")).unwrap();
    image::imageops::crop_imm(&image, 0, 0, width, height).to_image()
}

/// Square at the native grid, square shrunk, non-square (rows shrunk, columns enlarged), and
/// non-square enlarged: the last block's CLS row over the patches (the map), and over all
/// tokens (what CLS reads from the registers), within 1e-5 of PyTorch.
fn check_last_block(kind: &str, prefix: usize, sizes: &[(u32, u32)]) {
    let device = Device::flex();
    let loaded = load(kind);
    assert_eq!(loaded.backbone.prefix_tokens(), prefix);
    let patch = loaded.info.patch_size as u32;
    for &(w, h) in sizes {
        let (shape, expected) = reference(&format!("{kind}_cls_{w}x{h}.npy"));
        let tokens = prefix + ((w / patch) * (h / patch)) as usize;
        assert_eq!(shape, [2, tokens], "{kind} {w}x{h}");
        let image = crop(w, h);
        let maps = attention_maps(&loaded.backbone, &image, (w, h), &device).unwrap();
        assert_eq!(
            (maps.grid_rows, maps.grid_cols),
            ((h / patch) as usize, (w / patch) as usize)
        );
        let over_patches: Vec<f32> = expected
            .chunks(tokens)
            .flat_map(|row| row[prefix..].to_vec())
            .collect();
        let diff = max_abs_diff(&maps.heads.concat(), &over_patches);
        assert!(diff < 1e-5, "{kind} {w}x{h}: CLS map differs by {diff}");
        // The full row, registers included, from the same pass the attention view uses.
        let (chw, (cw, ch)) =
            dinoscope::analysis::attention::preprocess(&image, (w, h), patch as usize);
        let input = Tensor::<4>::from_data(TensorData::new(chw, [1, 3, ch, cw]), &device);
        let (row, _) = loaded.backbone.last_cls_attention(input);
        let row: Vec<f32> = row.into_data().try_to_vec::<f32>().unwrap();
        let diff = max_abs_diff(&row, &expected);
        assert!(diff < 1e-5, "{kind} {w}x{h}: CLS row differs by {diff}");
    }
}

#[test]
fn dinov2_plain_matches_the_official_code_to_1e5() {
    let loaded = load("v2");
    assert_eq!(loaded.info.family, Family::DinoV2 { registers: 0 });
    assert_eq!((loaded.info.patch_size, loaded.info.img_size), (14, 70));
    // `mask_token` is in every hub file and only masked training reads it: said, not hidden.
    assert_eq!(loaded.info.unused_tensors, ["mask_token"]);
    assert!(loaded.info.describe().ends_with(" · not used: mask_token"));
    check_last_block("v2", 1, &[(70, 70), (42, 42), (98, 56), (112, 84)]);
}

#[test]
fn dinov2_with_registers_matches_the_official_code_to_1e5() {
    let loaded = load("v2reg");
    assert_eq!(loaded.info.family, Family::DinoV2 { registers: 4 });
    assert!(
        loaded.info.describe().contains("4 registers"),
        "{}",
        loaded.info.describe()
    );
    // The antialiased, explicit-size interpolation: shrinking (42) and enlarging (112) both
    // differ from the plain models' +0.1 rule.
    check_last_block("v2reg", 5, &[(70, 70), (42, 42), (98, 56), (112, 84)]);
}

#[test]
fn dinov3_matches_the_official_code_to_1e5() {
    let loaded = load("v3");
    assert_eq!(loaded.info.family, Family::DinoV3 { storage: 4 });
    assert_eq!(
        (loaded.info.arch.num_heads, loaded.info.patch_size),
        (2, 16)
    );
    assert!(loaded.backbone.pos_embed.is_none());
    check_last_block("v3", 5, &[(80, 80), (48, 48), (112, 64), (96, 112)]);
}

/// The SwiGLU feed-forwards: DINOv2 ViT-g's packed `w12` (`SwiGLUFFNFused`, hidden 88 from
/// its rounding of 4 × 32 · 2/3) and DINOv3 ViT-S+'s `w1`, `w2` (`SwiGLUFFN`, ratio 6, hidden
/// 128), loaded packed; the fixture's gate and value halves swapped move the maps by 1.8e-3
/// and 5e-2 (checked when it was made), so 1e-5 tells them apart.
#[test]
fn swiglu_models_match_the_official_code_to_1e5() {
    for (kind, family, hidden) in [
        ("v2g", Family::DinoV2 { registers: 0 }, 88),
        ("v3plus", Family::DinoV3 { storage: 4 }, 128),
    ] {
        let loaded = load(kind);
        assert_eq!(loaded.info.family, family);
        assert_eq!(loaded.info.ffn, Ffn::SwiGlu { hidden });
        let mlp = &loaded.backbone.blocks[1].mlp;
        assert!(mlp.swiglu);
        // burn's Linear layout: [in, out].
        assert_eq!(mlp.fc1.weight.dims(), [32, 2 * hidden]);
        assert_eq!(mlp.fc2.weight.dims(), [hidden, 32]);
        assert_eq!(loaded.info.unused_tensors, ["mask_token"], "{kind}");
    }
    check_last_block("v2g", 1, &[(70, 70), (42, 42), (98, 56), (112, 84)]);
    check_last_block("v3plus", 5, &[(80, 80), (48, 48), (112, 64), (96, 112)]);
}

/// A DINOv2 training checkpoint's teacher: `teacher` → `backbone.` and chunked blocks
/// (`blocks.<chunk>.<i>.`) read as the hub file, the head said as unused.
#[test]
fn a_dinov2_teacher_checkpoint_with_chunked_blocks_loads_as_the_hub_file() {
    let loaded = load_backbone(
        &fixture("v2reg_teacher_checkpoint.pth"),
        Network::Teacher,
        &ArchOverrides {
            num_heads: Some(2),
            ..Default::default()
        },
        &Device::flex(),
    )
    .unwrap();
    assert_eq!(loaded.info.family, Family::DinoV2 { registers: 4 });
    assert_eq!(
        loaded.info.unused_summary(),
        "dino_head (1 tensor), mask_token"
    );
    let maps = attention_maps(&loaded.backbone, &crop(98, 56), (98, 56), &Device::flex()).unwrap();
    let (_, expected) = reference("v2reg_cls_98x56.npy");
    let over_patches: Vec<f32> = expected
        .chunks(5 + 28)
        .flat_map(|r| r[5..].to_vec())
        .collect();
    assert!(max_abs_diff(&maps.heads.concat(), &over_patches) < 1e-5);
}

/// Every block's CLS map, the distance, rollout (registers in the product, out of the map)
/// and the token views, against the official attention of every block.
#[test]
fn every_layer_rollout_and_tokens_with_registers() {
    let device = Device::flex();
    for (kind, prefix, (w, h)) in [
        ("v2reg", 5, (98u32, 56u32)),
        ("v3", 5, (112, 64)),
        ("v2", 1, (98, 56)),
        ("v2g", 1, (98, 56)),
        ("v3plus", 5, (112, 64)),
    ] {
        let loaded = load(kind);
        let patch = loaded.info.patch_size as u32;
        let (rows, cols) = ((h / patch) as usize, (w / patch) as usize);
        let tokens = prefix + rows * cols;
        let (shape, blocks) = reference(&format!("{kind}_blocks_{w}x{h}.npy"));
        assert_eq!(shape, [2, 2, tokens, tokens]);
        let image = crop(w, h);
        let settings = RolloutSettings::default();
        let maps = layer_maps(
            &loaded.backbone,
            &image,
            (w, h),
            &device,
            &[0, 1],
            Some(settings),
            true,
        )
        .unwrap();
        // The same CLS maps without distances or rollout (no block's probabilities kept).
        let cheap = layer_maps(
            &loaded.backbone,
            &image,
            (w, h),
            &device,
            &[0, 1],
            None,
            false,
        )
        .unwrap();
        let diff = max_abs_diff(&cheap.cls.concat().concat(), &maps.cls.concat().concat());
        assert!(
            diff < 1e-6,
            "{kind}: CLS rows beside the fused attention differ by {diff}"
        );
        for (i, heads) in maps.cls.iter().enumerate() {
            let expected: Vec<f32> = (0..2)
                .flat_map(|head| {
                    let row = (i * 2 + head) * tokens * tokens;
                    blocks[row + prefix..row + tokens].to_vec()
                })
                .collect();
            let diff = max_abs_diff(&heads.concat(), &expected);
            assert!(diff < 1e-5, "{kind} block {i}: CLS map differs by {diff}");
        }
        // Rollout of the official probabilities (mean over heads), every token in the product.
        let fused: Vec<Vec<f32>> = (0..2)
            .map(|block| {
                (0..tokens * tokens)
                    .map(|k| {
                        (0..2)
                            .map(|head| blocks[(block * 2 + head) * tokens * tokens + k])
                            .sum::<f32>()
                            / 2.0
                    })
                    .collect()
            })
            .collect();
        let expected = attention_rollout(&fused, tokens, prefix, settings.discard_ratio, &device);
        assert_eq!(expected.len(), rows * cols);
        let diff = max_abs_diff(maps.rollout.as_ref().unwrap(), &expected);
        assert!(diff < 1e-4, "{kind}: rollout differs by {diff}");
        assert_eq!(maps.distance_px.len(), 2);

        // Patch tokens (final norm) and their norms before it: patches only, registers apart.
        let ours = patch_tokens(&loaded.backbone, &image, (w, h), &device).unwrap();
        let (_, final_tokens) = reference(&format!("{kind}_tokens_{w}x{h}.npy"));
        let (_, prenorm) = reference(&format!("{kind}_prenorm_{w}x{h}.npy"));
        let dim = 32;
        let diff = max_abs_diff(&ours.tokens, &final_tokens[prefix * dim..]);
        assert!(diff < 1e-4, "{kind}: final tokens differ by {diff}");
        let norms: Vec<f32> = prenorm
            .chunks(dim)
            .map(|t| t.iter().map(|v| v * v).sum::<f32>().sqrt())
            .collect();
        let diff = max_abs_diff(&ours.norms, &norms[prefix..]);
        assert!(diff < 1e-4, "{kind}: patch norms differ by {diff}");
    }
}

/// A safetensors file with the given tensor names (zeros of a small shape), the way timm and
/// Hugging Face save these backbones.
fn write_safetensors(path: &Path, names: &[&str]) {
    let mut header = String::from("{");
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            header.push(',');
        }
        header.push_str(&format!(
            "\"{name}\":{{\"dtype\":\"F32\",\"shape\":[1,1,4],\"data_offsets\":[{},{}]}}",
            i * 16,
            (i + 1) * 16
        ));
    }
    header.push('}');
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(std::iter::repeat_n(0u8, names.len() * 16));
    std::fs::write(path, bytes).unwrap();
}

fn refusal(names: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    write_safetensors(&path, names);
    let err = load_backbone(
        &path,
        Network::Teacher,
        &ArchOverrides::default(),
        &Device::flex(),
    )
    .err()
    .expect("another library's layout is refused")
    .to_string();
    assert!(!err.contains('\n'), "one line: {err}");
    assert!(
        err.contains("model.safetensors") && err.contains("pass the hub's file"),
        "{err}"
    );
    err
}

#[test]
fn hugging_face_dinov2_layout_is_refused_in_one_line() {
    let err = refusal(&[
        "embeddings.cls_token",
        "embeddings.mask_token",
        "embeddings.patch_embeddings.projection.weight",
        "encoder.layer.0.attention.attention.query.weight",
        "encoder.layer.0.layer_scale1.lambda1",
    ]);
    assert!(
        err.contains("Hugging Face transformers DINOv2 layout"),
        "{err}"
    );
}

#[test]
fn hugging_face_dinov3_layout_is_refused_in_one_line() {
    let err = refusal(&[
        "embeddings.cls_token",
        "embeddings.register_tokens",
        "embeddings.patch_embeddings.weight",
        "layer.0.attention.q_proj.weight",
        "layer.0.layer_scale1.lambda1",
    ]);
    assert!(
        err.contains("Hugging Face transformers DINOv3 layout"),
        "{err}"
    );
}

#[test]
fn timm_layout_is_refused_in_one_line() {
    let err = refusal(&[
        "cls_token",
        "reg_token",
        "pos_embed",
        "patch_embed.proj.weight",
        "blocks.0.ls1.gamma",
    ]);
    assert!(err.contains("timm layout (`reg_token`"), "{err}");
}

/// The `attention` CLI on a DINOv3 file: no flag needed (heads from the RoPE periods).
#[test]
fn attention_cli_reads_a_dinov3_file() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("crop.png");
    crop(112, 64).save(&image).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dinoscope"))
        .arg("attention")
        .arg("--weights")
        .arg(fixture("v3.pth"))
        .arg("--image")
        .arg(&image)
        .arg("--size")
        .arg("112x64")
        .arg("--out")
        .arg(dir.path().join("maps"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("DINOv3") && stdout.contains("4 storage tokens"),
        "{stdout}"
    );
    let maps = read_npy(&dir.path().join("maps").join("attention.npy")).unwrap();
    assert_eq!(maps.shape, [2, 4, 7]);
}

/// The app on a DINOv2 model with registers: Open weights → the maps over the patches and the
/// registers panel (CLS's share on the registers per block and head, each register's norm).
#[test]
fn the_registers_panel_shows_what_cls_gives_each_register() {
    let mut harness = crate::gui_support::harness_with(None);
    {
        let app = harness.state_mut();
        app.panels.attention.short_side_px = Some(56);
        app.panels.attention.heads_override = Some(2);
        app.load_weights(fixture("v2reg.pth"));
    }
    crate::gui_support::frames_until(&mut harness, "the loaded weights' maps", 60, |app| {
        app.panels
            .attention
            .loaded
            .as_ref()
            .is_some_and(|l| l.maps.len() == app.panels.attention.images.len())
    });
    let loaded = harness.state().panels.attention.loaded.as_ref().unwrap();
    assert_eq!(loaded.info.family, Family::DinoV2 { registers: 4 });
    let (_, cat) = &loaded.maps[0];
    // cat.jpg 451 × 300 at 56 px short side: 84 × 56, a 4 × 6 grid of 14-px patches.
    assert_eq!((cat.grid_rows, cat.grid_cols), (4, 6));
    assert_eq!(cat.heads[0].len(), 24);
    assert_eq!(cat.pca_foreground_rgb.len(), 24 * 3);
    let stats = &cat.registers;
    assert_eq!(
        (
            stats.cls_share.len(),
            stats.cls_share[0].len(),
            stats.norms.len()
        ),
        (2, 2, 4)
    );
    // Each head's row: patches + registers + CLS itself sum to 1.
    for (head, map) in cat.heads.iter().enumerate() {
        let patches: f32 = map.iter().sum();
        let registers: f32 = stats.cls_share[1][head].iter().sum();
        assert!(patches + registers < 1.0 && patches + registers > 0.0);
    }
    if let Some(loaded) = &mut harness.state_mut().panels.attention.loaded {
        loaded.elapsed_secs = None;
    }
    for message in &mut harness.state_mut().state.messages {
        if let Some((what, _)) = message.text.rsplit_once(" in ") {
            message.text = format!("{what} in 0.0 s");
        }
    }
    harness.run_steps(2);
    for label in ["R1", "R4", "norm"] {
        assert!(
            harness.query_all_by_label(label).next().is_some(),
            "{label} not shown"
        );
    }
    harness.snapshot("attention_view_registers");

    // A click on the PCA picture switches to DINOv2's foreground recipe, and back.
    assert!(harness.query_by_label("foreground PCA").is_none());
    harness.get_by_label("PCA picture").click();
    harness.run_steps(2);
    assert!(harness.query_by_label("foreground PCA").is_some());
    harness.get_by_label("PCA picture").click();
    harness.run_steps(2);
    assert!(harness.query_by_label("patch PCA").is_some());
}

/// Both PCA pictures against NumPy (`scripts/make_pca_fixture.py`, tests/fixtures/pca): three
/// images of synthetic patch features, an object (two parts sharing one strong direction) on a
/// background. The plain picture per image, and DINOv2's foreground recipe fitted across the
/// three: the same foreground, colours within 1 of NumPy's (rounding), the background black
/// and each part one colour in every image.
#[test]
fn foreground_pca_matches_numpy_and_colours_parts_alike_across_images() {
    use dinoscope::analysis::attention::{foreground_pca_rgb, pca_rgb};
    let pca_fixture = |name: &str| {
        let array = read_npy(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/pca")
                .join(name),
        )
        .unwrap();
        (array.shape.clone(), array.to_f32().unwrap())
    };
    let dim = 16;
    let images: Vec<(Vec<f32>, (usize, usize))> = (0..3)
        .map(|i| {
            let (shape, values) = pca_fixture(&format!("features_{i}.npy"));
            assert_eq!(shape[2], dim);
            (values, (shape[0], shape[1]))
        })
        .collect();
    let close = |ours: &[u8], expected: &[f32], what: &str| {
        assert_eq!(ours.len(), expected.len(), "{what}");
        for (i, (a, b)) in ours.iter().zip(expected).enumerate() {
            assert!((*a as f32 - b).abs() <= 1.0, "{what}[{i}]: {a} vs {b}");
            assert_eq!(*a == 0, *b == 0.0, "{what}[{i}]: {a} vs {b}");
        }
    };
    for (i, (features, (rows, cols))) in images.iter().enumerate() {
        let (_, expected) = pca_fixture(&format!("plain_{i}.npy"));
        close(&pca_rgb(features, rows * cols, dim), &expected, "plain");
    }
    let inputs: Vec<(&[f32], (usize, usize))> = images
        .iter()
        .map(|(f, grid)| (f.as_slice(), *grid))
        .collect();
    let shared = foreground_pca_rgb(&inputs, dim);
    for (i, (rgb, (_, (rows, cols)))) in shared.iter().zip(&images).enumerate() {
        let (_, expected) = pca_fixture(&format!("foreground_{i}.npy"));
        close(rgb, &expected, "foreground");
        // The object fills the interior rows 1..rows-1, part A above its middle.
        let middle = *rows as f32 / 2.0;
        for r in 0..*rows {
            for c in 0..*cols {
                let pixel = &rgb[(r * cols + c) * 3..][..3];
                if r == 0 || c == 0 || r + 1 == *rows || c + 1 == *cols {
                    assert_eq!(pixel, [0, 0, 0], "image {i} background ({r}, {c})");
                } else if (r as f32) < middle {
                    assert!(pixel[0] < 100, "image {i} part A ({r}, {c}): {pixel:?}");
                } else {
                    assert!(pixel[0] > 150, "image {i} part B ({r}, {c}): {pixel:?}");
                }
            }
        }
    }
}
