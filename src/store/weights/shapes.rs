//! The ViT architecture read from a file's tensor shapes (width from `cls_token`, patch size
//! from the patch-embedding kernel, depth from the block indices, the position grid; heads by
//! the official 64-per-head convention, or from DINOv3's RoPE periods), the family from the
//! keys (`layouts.rs`), every backbone tensor checked, and the user's `ArchOverrides` checked
//! against what the shapes say.

use super::layouts::{family_of, foreign_layout};
use super::{ArchOverrides, WeightsError};
use crate::model::{Family, Ffn, VitArch, VitConfig};
use std::collections::BTreeMap;
use std::path::Path;

pub(super) fn summarise_keys(keys: &[String]) -> String {
    let mut tops: Vec<&str> = keys
        .iter()
        .map(|k| k.split('.').next().unwrap_or(k))
        .collect();
    tops.dedup();
    tops.truncate(8);
    if tops.is_empty() {
        "no tensors".into()
    } else {
        format!("`{}`", tops.join("`, `"))
    }
}

/// What the shapes say: the build description, the family, and the file's tensors that the
/// network does not use (DINOv2/v3's `mask_token`, heads, ...).
#[derive(Debug)]
pub(super) struct Inferred {
    pub config: VitConfig,
    pub family: Family,
    pub ffn: Ffn,
    pub unused: Vec<String>,
}

/// Reads the architecture from the (remapped) tensor shapes and checks every backbone tensor.
///
/// Long: each architectural number read from its own tensor shape in turn, each with its own
/// message.
pub(super) fn infer_config(
    path: &Path,
    shapes: &BTreeMap<String, Vec<usize>>,
    overrides: &ArchOverrides,
) -> Result<Inferred, WeightsError> {
    let keys: Vec<String> = shapes.keys().cloned().collect();
    if let Some(what) = foreign_layout(&keys) {
        return Err(WeightsError::Layout {
            path: path.to_path_buf(),
            what,
        });
    }
    let family = family_of(shapes);
    if let Some(key) = keys
        .iter()
        .find(|k| k.starts_with("cls_norm.") || k.starts_with("local_cls_norm."))
    {
        return Err(WeightsError::Layout {
            path: path.to_path_buf(),
            what: format!(
                "{} with `{key}` ({}) is not supported yet; ViT-S/S+/B/L/H+ load",
                family.label(),
                if key.starts_with("cls_norm.") {
                    "a separate norm for CLS and the storage tokens"
                } else {
                    "ViT-7B: untied CLS norms and no qkv bias"
                }
            ),
        });
    }
    let shape_error = |key: &str, expected: String| WeightsError::Shape {
        path: path.to_path_buf(),
        key: key.to_string(),
        shape: shapes.get(key).cloned().unwrap_or_default(),
        expected,
    };
    // DINOv3 has no position table: a 1-token stand-in passes the grid checks below.
    let no_table = vec![
        1,
        1,
        shapes
            .get("cls_token")
            .and_then(|c| c.get(2))
            .copied()
            .unwrap_or(0),
    ];
    let pos = match family {
        Family::DinoV3 { .. } => Some(&no_table),
        _ => shapes.get("pos_embed"),
    };
    let (Some(cls), Some(pos), Some(patch)) = (
        shapes.get("cls_token"),
        pos,
        shapes.get("patch_embed.weight"),
    ) else {
        return Err(WeightsError::NotAVit {
            path: path.to_path_buf(),
            found: summarise_keys(&keys),
        });
    };
    let &[1, 1, dim] = cls.as_slice() else {
        return Err(shape_error("cls_token", "[1, 1, D]".into()));
    };
    let &[out, 3, p, q] = patch.as_slice() else {
        return Err(shape_error(
            "patch_embed.weight",
            format!("[{dim}, 3, p, p]"),
        ));
    };
    if out != dim || p != q || p == 0 {
        return Err(shape_error(
            "patch_embed.weight",
            format!("[{dim}, 3, p, p]"),
        ));
    }
    let &[1, tokens, pos_dim] = pos.as_slice() else {
        return Err(shape_error("pos_embed", format!("[1, 1 + N, {dim}]")));
    };
    let side = ((tokens.saturating_sub(1)) as f64).sqrt().round() as usize;
    let is_v3 = matches!(family, Family::DinoV3 { .. });
    if pos_dim != dim || (!is_v3 && (side == 0 || side * side + 1 != tokens)) {
        return Err(shape_error(
            "pos_embed",
            format!("[1, 1 + s², {dim}] (a square grid)"),
        ));
    }
    let depth = shapes
        .keys()
        .filter_map(|k| {
            k.strip_prefix("blocks.")?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()
        .map_or(0, |last| last + 1);
    if depth == 0 {
        return Err(WeightsError::Missing {
            path: path.to_path_buf(),
            count: 1,
            first: "blocks.0.*".into(),
        });
    }
    check_overrides(path, overrides, dim, p)?;
    // DINOv3's RoPE has head_dim / 4 periods: the one file that says its head count.
    let rope_heads = shapes
        .get("rope_embed.periods")
        .and_then(|shape| shape.first())
        .filter(|&&quarter| quarter > 0 && dim % (4 * quarter) == 0)
        .map(|&quarter| dim / (4 * quarter));
    if let (Some(given), Some(read)) = (overrides.num_heads, rope_heads) {
        if given != read {
            return Err(WeightsError::Mismatch {
                path: path.to_path_buf(),
                what: format!("--heads {given} differs from the {read} heads of the RoPE periods"),
            });
        }
    }
    let num_heads = match overrides.num_heads.or(rope_heads) {
        Some(h) => h,
        None if dim % 64 == 0 => dim / 64,
        None => {
            return Err(WeightsError::UnknownHeads {
                path: path.to_path_buf(),
                embed_dim: dim,
            })
        }
    };
    if num_heads == 0 || dim % num_heads != 0 {
        // The head count the user gave (`--heads`, the attention view's heads box) is named
        // as such, with the counts that would fit.
        let given = if overrides.num_heads.is_some() {
            let fitting: Vec<String> = (1..=dim.min(64))
                .filter(|h| dim % h == 0)
                .map(|h| h.to_string())
                .collect();
            format!(
                "--heads {num_heads} does not divide the width {dim}: give one of {}",
                fitting.join(", ")
            )
        } else {
            format!("{num_heads} heads do not divide the width {dim}")
        };
        return Err(WeightsError::Mismatch {
            path: path.to_path_buf(),
            what: given,
        });
    }
    let ffn = ffn_of(shapes, dim);
    // Every tensor the backbone needs, with its shape as stored (PyTorch layout).
    let mut expected: Vec<(String, Vec<usize>)> = vec![
        ("cls_token".into(), vec![1, 1, dim]),
        ("patch_embed.weight".into(), vec![dim, 3, p, p]),
        ("patch_embed.bias".into(), vec![dim]),
        ("norm.weight".into(), vec![dim]),
        ("norm.bias".into(), vec![dim]),
    ];
    match family {
        Family::DinoV3 { .. } => {
            let quarter = dim / num_heads / 4;
            expected.push(("rope_embed.periods".into(), vec![quarter]));
        }
        _ => expected.push(("pos_embed".into(), vec![1, tokens, dim])),
    }
    if family.registers() > 0 {
        expected.push(("register_tokens".into(), vec![1, family.registers(), dim]));
    }
    for i in 0..depth {
        let b = |name: &str| format!("blocks.{i}.{name}");
        expected.extend([
            (b("norm1.weight"), vec![dim]),
            (b("norm1.bias"), vec![dim]),
            (b("attn.qkv.weight"), vec![3 * dim, dim]),
            (b("attn.qkv.bias"), vec![3 * dim]),
            (b("attn.proj.weight"), vec![dim, dim]),
            (b("attn.proj.bias"), vec![dim]),
            (b("norm2.weight"), vec![dim]),
            (b("norm2.bias"), vec![dim]),
        ]);
        expected.extend(ffn_tensors(shapes, ffn, dim, i));
        if family.has_layer_scale() {
            expected.extend([(b("ls1.gamma"), vec![dim]), (b("ls2.gamma"), vec![dim])]);
        }
        if is_v3 {
            // Folded into the qkv bias on load (the k third zeroed).
            expected.push((b("attn.qkv.bias_mask"), vec![3 * dim]));
        }
    }
    let missing: Vec<&String> = expected
        .iter()
        .map(|(k, _)| k)
        .filter(|k| !shapes.contains_key(*k))
        .collect();
    if let Some(first) = missing.first() {
        return Err(WeightsError::Missing {
            path: path.to_path_buf(),
            count: missing.len(),
            first: (*first).clone(),
        });
    }
    for (key, shape) in &expected {
        if shapes.get(key) != Some(shape) {
            return Err(shape_error(key, format!("{shape:?}")));
        }
    }
    let config = VitConfig {
        arch: VitArch {
            embed_dim: dim,
            depth,
            num_heads,
        },
        patch_size: p,
        // DINOv3's hub models are built for 224 px (RoPE has no native grid).
        img_size: if is_v3 { 224 } else { side * p },
        drop_path_rate: 0.0,
    };
    let used: std::collections::BTreeSet<&String> = expected.iter().map(|(k, _)| k).collect();
    let unused = keys.iter().filter(|k| !used.contains(k)).cloned().collect();
    Ok(Inferred {
        config,
        family,
        ffn,
        unused,
    })
}

/// The feed-forward from block 0's keys: DINOv2's packed SwiGLU (`mlp.w12`), DINOv3's split one
/// (`mlp.w1`, `mlp.w2`), else the MLP (`mlp.fc1`); the hidden width from the shape (a missing
/// `fc1` falls back to 4 × width, so the missing tensor is named below).
fn ffn_of(shapes: &BTreeMap<String, Vec<usize>>, dim: usize) -> Ffn {
    let rows = |key: &str| shapes.get(key).and_then(|s| s.first().copied());
    if let Some(packed) = rows("blocks.0.mlp.w12.weight") {
        Ffn::SwiGlu { hidden: packed / 2 }
    } else if let Some(hidden) = rows("blocks.0.mlp.w1.weight") {
        Ffn::SwiGlu { hidden }
    } else {
        Ffn::Mlp {
            hidden: rows("blocks.0.mlp.fc1.weight").unwrap_or(4 * dim),
        }
    }
}

/// Block `i`'s feed-forward tensors in the file's own names, with their shapes.
fn ffn_tensors(
    shapes: &BTreeMap<String, Vec<usize>>,
    ffn: Ffn,
    dim: usize,
    i: usize,
) -> Vec<(String, Vec<usize>)> {
    let b = |name: &str| format!("blocks.{i}.mlp.{name}");
    let linear = |name: &str, out: usize, inp: usize| {
        [
            (b(&format!("{name}.weight")), vec![out, inp]),
            (b(&format!("{name}.bias")), vec![out]),
        ]
    };
    match ffn {
        Ffn::Mlp { hidden } => [linear("fc1", hidden, dim), linear("fc2", dim, hidden)].concat(),
        Ffn::SwiGlu { hidden } if shapes.contains_key("blocks.0.mlp.w12.weight") => {
            [linear("w12", 2 * hidden, dim), linear("w3", dim, hidden)].concat()
        }
        Ffn::SwiGlu { hidden } => [
            linear("w1", hidden, dim),
            linear("w2", hidden, dim),
            linear("w3", dim, hidden),
        ]
        .concat(),
    }
}

pub(super) fn check_overrides(
    path: &Path,
    overrides: &ArchOverrides,
    embed_dim: usize,
    patch_size: usize,
) -> Result<(), WeightsError> {
    let mismatch = |what: String| WeightsError::Mismatch {
        path: path.to_path_buf(),
        what,
    };
    if let Some(name) = &overrides.arch {
        let arch = VitArch::from_loadable_name(name).ok_or_else(|| {
            mismatch(format!(
                "--arch {name} is unknown; use {}",
                crate::config::arch::LOADABLE_ARCH_NAMES
            ))
        })?;
        if arch.embed_dim != embed_dim {
            return Err(mismatch(format!(
                "--arch {name} has width {}, the weights have {embed_dim}",
                arch.embed_dim
            )));
        }
    }
    if let Some(p) = overrides.patch_size {
        if p != patch_size {
            return Err(mismatch(format!(
                "--patch-size {p} differs from the weights' patch size {patch_size}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn official_shapes(
        dim: usize,
        depth: usize,
        p: usize,
        side: usize,
    ) -> BTreeMap<String, Vec<usize>> {
        let mut shapes = BTreeMap::new();
        shapes.insert("cls_token".to_string(), vec![1, 1, dim]);
        shapes.insert("pos_embed".to_string(), vec![1, 1 + side * side, dim]);
        shapes.insert("patch_embed.weight".to_string(), vec![dim, 3, p, p]);
        shapes.insert("patch_embed.bias".to_string(), vec![dim]);
        shapes.insert("norm.weight".to_string(), vec![dim]);
        shapes.insert("norm.bias".to_string(), vec![dim]);
        for i in 0..depth {
            for (name, shape) in [
                ("norm1.weight", vec![dim]),
                ("norm1.bias", vec![dim]),
                ("attn.qkv.weight", vec![3 * dim, dim]),
                ("attn.qkv.bias", vec![3 * dim]),
                ("attn.proj.weight", vec![dim, dim]),
                ("attn.proj.bias", vec![dim]),
                ("norm2.weight", vec![dim]),
                ("norm2.bias", vec![dim]),
                ("mlp.fc1.weight", vec![4 * dim, dim]),
                ("mlp.fc1.bias", vec![4 * dim]),
                ("mlp.fc2.weight", vec![dim, 4 * dim]),
                ("mlp.fc2.bias", vec![dim]),
            ] {
                shapes.insert(format!("blocks.{i}.{name}"), shape);
            }
        }
        shapes
    }

    #[test]
    fn vit_s16_is_read_from_its_shapes() {
        let shapes = official_shapes(384, 12, 16, 14);
        let inferred =
            infer_config(Path::new("s16.pth"), &shapes, &ArchOverrides::default()).unwrap();
        let config = inferred.config;
        assert_eq!(config.arch, VitArch::from_name("vit_small").unwrap());
        assert_eq!((config.patch_size, config.img_size), (16, 224));
        assert_eq!((inferred.family, inferred.unused.len()), (Family::Dino, 0));
        let b8 = official_shapes(768, 12, 8, 28);
        let config = infer_config(Path::new("b8.pth"), &b8, &ArchOverrides::default())
            .unwrap()
            .config;
        assert_eq!((config.arch.num_heads, config.patch_size), (12, 8));
    }

    #[test]
    fn odd_widths_need_heads_and_overrides_are_checked() {
        let shapes = official_shapes(48, 2, 8, 4);
        let path = Path::new("fixture.pth");
        let err = infer_config(path, &shapes, &ArchOverrides::default()).unwrap_err();
        assert!(err.to_string().contains("--heads"), "{err}");
        let heads = ArchOverrides {
            num_heads: Some(3),
            ..Default::default()
        };
        assert_eq!(
            infer_config(path, &shapes, &heads)
                .unwrap()
                .config
                .arch
                .num_heads,
            3
        );
        let wrong_patch = ArchOverrides {
            num_heads: Some(3),
            patch_size: Some(16),
            ..Default::default()
        };
        assert!(infer_config(path, &shapes, &wrong_patch)
            .unwrap_err()
            .to_string()
            .contains("--patch-size 16"));
        let wrong_arch = ArchOverrides {
            arch: Some("vit_small".into()),
            num_heads: Some(3),
            ..Default::default()
        };
        assert!(infer_config(path, &shapes, &wrong_arch).is_err());
        let unknown = ArchOverrides {
            arch: Some("vit_huge".into()),
            num_heads: Some(3),
            ..Default::default()
        };
        let err = infer_config(path, &shapes, &unknown)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("vit_giant2") && err.contains("vit_huge2"),
            "{err}"
        );
        // Every name the message lists is known.
        for name in crate::config::arch::LOADABLE_ARCH_NAMES.split([',', ' ']) {
            if name.starts_with("vit_") {
                assert!(VitArch::from_loadable_name(name).is_some(), "{name}");
            }
        }
    }

    #[test]
    fn missing_and_misshaped_tensors_are_named() {
        let mut shapes = official_shapes(384, 2, 16, 14);
        shapes.remove("blocks.1.mlp.fc2.bias");
        let err = infer_config(Path::new("cut.pth"), &shapes, &ArchOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("blocks.1.mlp.fc2.bias") && err.contains("cut.pth"),
            "{err}"
        );
        let mut shapes = official_shapes(384, 2, 16, 14);
        shapes.insert("blocks.0.attn.qkv.weight".into(), vec![384, 384]);
        let err = infer_config(Path::new("bad.pth"), &shapes, &ArchOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("blocks.0.attn.qkv.weight") && err.contains("[1152, 384]"),
            "{err}"
        );
        let mut shapes = BTreeMap::new();
        shapes.insert("fc.weight".to_string(), vec![10, 10]);
        let err = infer_config(Path::new("resnet.pth"), &shapes, &ArchOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no ViT backbone") && err.contains("`fc`"),
            "{err}"
        );
    }

    #[test]
    fn dinov2_and_dinov3_are_read_from_their_keys() {
        // dinov2_vits14_reg4: LayerScale, 4 registers, the 37 × 37 table, mask_token unused.
        let mut shapes = official_shapes(384, 12, 14, 37);
        for i in 0..12 {
            shapes.insert(format!("blocks.{i}.ls1.gamma"), vec![384]);
            shapes.insert(format!("blocks.{i}.ls2.gamma"), vec![384]);
        }
        shapes.insert("mask_token".into(), vec![1, 384]);
        let plain = infer_config(Path::new("v2.pth"), &shapes, &ArchOverrides::default()).unwrap();
        assert_eq!(plain.family, Family::DinoV2 { registers: 0 });
        assert_eq!(
            (plain.config.img_size, plain.config.arch.num_heads),
            (518, 6)
        );
        assert_eq!(plain.unused, ["mask_token"]);
        shapes.insert("register_tokens".into(), vec![1, 4, 384]);
        let reg = infer_config(Path::new("reg.pth"), &shapes, &ArchOverrides::default()).unwrap();
        assert_eq!(reg.family, Family::DinoV2 { registers: 4 });
        // A missing LayerScale is named.
        shapes.remove("blocks.3.ls2.gamma");
        let err = infer_config(Path::new("cut.pth"), &shapes, &ArchOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("blocks.3.ls2.gamma"), "{err}");

        // dinov3_vits16: no table, RoPE periods [16] → head dim 64 → 6 heads, bias masks.
        let mut shapes = official_shapes(384, 12, 16, 14);
        shapes.remove("pos_embed");
        shapes.insert("register_tokens".into(), vec![1, 4, 384]);
        shapes.insert("rope_embed.periods".into(), vec![16]);
        for i in 0..12 {
            shapes.insert(format!("blocks.{i}.ls1.gamma"), vec![384]);
            shapes.insert(format!("blocks.{i}.ls2.gamma"), vec![384]);
            shapes.insert(format!("blocks.{i}.attn.qkv.bias_mask"), vec![1152]);
        }
        let v3 = infer_config(Path::new("v3.pth"), &shapes, &ArchOverrides::default()).unwrap();
        assert_eq!(v3.family, Family::DinoV3 { storage: 4 });
        assert_eq!((v3.config.arch.num_heads, v3.config.patch_size), (6, 16));
        let wrong_heads = ArchOverrides {
            num_heads: Some(12),
            ..Default::default()
        };
        let err = infer_config(Path::new("v3.pth"), &shapes, &wrong_heads)
            .unwrap_err()
            .to_string();
        assert!(err.contains("RoPE periods"), "{err}");

        // dinov3_vits16plus: SwiGLU with w1, w2, w3 (hidden ⌊6 · 384 · 2/3⌋ = 1536) in place of
        // fc1, fc2; a block missing w2 is named.
        for i in 0..12 {
            for name in ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"] {
                shapes.remove(&format!("blocks.{i}.mlp.{name}"));
            }
            for (name, shape) in [
                ("w1.weight", vec![1536, 384]),
                ("w1.bias", vec![1536]),
                ("w2.weight", vec![1536, 384]),
                ("w2.bias", vec![1536]),
                ("w3.weight", vec![384, 1536]),
                ("w3.bias", vec![384]),
            ] {
                shapes.insert(format!("blocks.{i}.mlp.{name}"), shape);
            }
        }
        let plus =
            infer_config(Path::new("splus.pth"), &shapes, &ArchOverrides::default()).unwrap();
        assert_eq!(plus.ffn, Ffn::SwiGlu { hidden: 1536 });
        assert!(plus.unused.is_empty(), "{:?}", plus.unused);
        let mut cut = shapes.clone();
        cut.remove("blocks.5.mlp.w2.bias");
        let err = infer_config(Path::new("cut.pth"), &cut, &ArchOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("blocks.5.mlp.w2.bias"), "{err}");
        // ViT-7B's untied CLS norms stay refused, in one line.
        shapes.insert("local_cls_norm.weight".into(), vec![384]);
        let err = infer_config(Path::new("7b.pth"), &shapes, &ArchOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ViT-7B") && err.contains("not supported yet") && !err.contains('\n'),
            "{err}"
        );
    }

    #[test]
    fn dinov2_vitg_swiglu_is_read_from_w12() {
        // dinov2_vitg14: SwiGLUFFNFused, hidden (⌊4 · 1536 · 2/3⌋ + 7) / 8 · 8 = 4096, packed
        // as w12 [2 · 4096, 1536]; 40 blocks, 24 heads of 64.
        let mut shapes = official_shapes(1536, 40, 14, 37);
        for i in 0..40 {
            for name in ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"] {
                shapes.remove(&format!("blocks.{i}.mlp.{name}"));
            }
            for (name, shape) in [
                ("mlp.w12.weight", vec![8192, 1536]),
                ("mlp.w12.bias", vec![8192]),
                ("mlp.w3.weight", vec![1536, 4096]),
                ("mlp.w3.bias", vec![1536]),
                ("ls1.gamma", vec![1536]),
                ("ls2.gamma", vec![1536]),
            ] {
                shapes.insert(format!("blocks.{i}.{name}"), shape);
            }
        }
        let g = infer_config(Path::new("g.pth"), &shapes, &ArchOverrides::default()).unwrap();
        assert_eq!(g.ffn, Ffn::SwiGlu { hidden: 4096 });
        assert_eq!(g.family, Family::DinoV2 { registers: 0 });
        assert_eq!((g.config.arch.num_heads, g.config.arch.depth), (24, 40));
        shapes.insert("blocks.7.mlp.w3.weight".into(), vec![1536, 4095]);
        let err = infer_config(Path::new("g.pth"), &shapes, &ArchOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("blocks.7.mlp.w3.weight"), "{err}");
    }
}
