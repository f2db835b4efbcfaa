//! `dinoscope attention` beyond the last block: which block (`--layer`), the rollout map
//! (`--rollout`) and the mean attention distance of every head (`--distance`).

use super::attention::save_png;
use super::output::{usage, Printer};
use anyhow::{Context, Result};
use dinoscope::analysis::attention::{composite, upsample_nearest, MapLayers, OverlayStyle};
use dinoscope::analysis::colormap::heat_image;
use dinoscope::analysis::layers::LayerMaps;
use dinoscope::store::npy::write_npy_f32;
use dinoscope::store::run::write_atomically;
use std::path::Path;

/// `--layer`: the last block (the official view), one block, or all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerChoice {
    Last,
    One(usize),
    All,
}

impl LayerChoice {
    /// An index past the network's depth is a usage error naming the depth.
    pub fn parse(text: Option<&str>, depth: usize) -> Result<Self> {
        match text.map(str::trim) {
            None | Some("last") => Ok(Self::Last),
            Some("all") => Ok(Self::All),
            Some(number) => match number.parse::<usize>() {
                Ok(layer) if layer + 1 == depth => Ok(Self::Last),
                Ok(layer) if layer < depth => Ok(Self::One(layer)),
                _ => Err(usage(format!(
                    "--layer {number}: this network has {depth} blocks; give 0 ..= {}, `last` or `all`",
                    depth.saturating_sub(1)
                ))),
            },
        }
    }
}

/// Per-layer heat maps (with `all`), the rollout files and distance.csv.
pub fn write(
    out_dir: &Path,
    maps: &LayerMaps,
    shown: &image::RgbImage,
    threshold: f32,
    all_layers: bool,
    distance: bool,
    out: &mut Printer,
) -> Result<()> {
    let (rows, cols, p) = (maps.grid_rows, maps.grid_cols, maps.patch_size);
    let (w, h) = (shown.width() as usize, shown.height() as usize);
    if all_layers {
        for (layer, heads) in maps.layers.iter().zip(&maps.cls) {
            for (head, values) in heads.iter().enumerate() {
                save_png(
                    &out_dir.join(format!("attn-l{layer}-head{head}.png")),
                    &heat_image(&upsample_nearest(values, rows, cols, p), w, h),
                )?;
            }
        }
        out.line(&format!(
            "blocks 0..={}: attention.npy is layers x heads x rows x cols",
            maps.layers.len().saturating_sub(1)
        ));
    }
    if let Some(rollout) = &maps.rollout {
        let path = out_dir.join("rollout.npy");
        write_npy_f32(&path, &[rows, cols], rollout)
            .with_context(|| format!("cannot write {}", path.display()))?;
        save_png(
            &out_dir.join("rollout.png"),
            &heat_image(&upsample_nearest(rollout, rows, cols, p), w, h),
        )?;
        let layers = MapLayers::new(rollout, rows, cols, threshold);
        save_png(
            &out_dir.join(format!("overlay_th{threshold}_rollout.png")),
            &composite(shown, &layers, &OverlayStyle::default()),
        )?;
        out.line("rollout: rollout.npy, rollout.png and its mask overlay");
    }
    if !distance {
        return Ok(());
    }
    let mut csv = String::from("layer,head,mean_distance_px\n");
    for (layer, heads) in maps.distance_px.iter().enumerate() {
        for (head, distance) in heads.iter().enumerate() {
            csv.push_str(&format!("{layer},{head},{distance:.4}\n"));
        }
        let (low, high) = heads
            .iter()
            .fold((f32::MAX, f32::MIN), |(l, h), d| (l.min(*d), h.max(*d)));
        out.line(&format!(
            "block {layer}: mean attention distance {low:.1} .. {high:.1} px over its heads"
        ));
    }
    let path = out_dir.join("distance.csv");
    write_atomically(&path, csv.as_bytes())?;
    out.line("distance: distance.csv");
    Ok(())
}

/// `--similarity X,Y` and `--token-norms`: from the last layer's patch tokens of the image.
pub fn write_tokens(
    out_dir: &Path,
    tokens: &dinoscope::analysis::tokens::PatchTokens,
    shown: &image::RgbImage,
    similarity: Option<&str>,
    token_norms: bool,
    out: &mut Printer,
) -> Result<()> {
    let (rows, cols, p) = (tokens.grid_rows, tokens.grid_cols, tokens.patch_size);
    let (w, h) = (shown.width() as usize, shown.height() as usize);
    if let Some(text) = similarity {
        let parsed = text.split_once(',').and_then(|(x, y)| {
            Some((x.trim().parse::<u32>().ok()?, y.trim().parse::<u32>().ok()?))
        });
        let (x, y) = parsed.ok_or_else(|| {
            usage(format!(
                "--similarity {text}: expected X,Y in pixels, e.g. 120,80"
            ))
        })?;
        let index = tokens.patch_at(x, y).ok_or_else(|| {
            usage(format!(
                "--similarity {text}: outside the {w} x {h} px image the network sees (patch grid {rows} x {cols})"
            ))
        })?;
        let values = tokens.similarity_to(index, tokens);
        let path = out_dir.join("similarity.npy");
        write_npy_f32(&path, &[rows, cols], &values)
            .with_context(|| format!("cannot write {}", path.display()))?;
        // The heat map, with the chosen patch outlined in white.
        let mut heat = heat_image(&upsample_nearest(&values, rows, cols, p), w, h);
        let (r0, c0) = (index / cols * p, index % cols * p);
        for i in 0..p {
            for (xx, yy) in [
                (c0 + i, r0),
                (c0 + i, r0 + p - 1),
                (c0, r0 + i),
                (c0 + p - 1, r0 + i),
            ] {
                if xx < w && yy < h {
                    heat.put_pixel(xx as u32, yy as u32, image::Rgb([255, 255, 255]));
                }
            }
        }
        save_png(&out_dir.join("similarity.png"), &heat)?;
        let similar = values.iter().filter(|v| **v > 0.5).count();
        out.line(&format!(
            "similarity to patch ({}, {}): {similar} of {} patches above 0.5 · similarity.npy, similarity.png",
            index / cols,
            index % cols,
            values.len()
        ));
    }
    if token_norms {
        let path = out_dir.join("token_norms.npy");
        write_npy_f32(&path, &[rows, cols], &tokens.norms)
            .with_context(|| format!("cannot write {}", path.display()))?;
        let outliers = tokens.norm_outliers();
        let layers = MapLayers {
            rows,
            cols,
            heat: dinoscope::analysis::attention::min_max_scaled(&tokens.norms),
            mask: outliers.clone(),
        };
        let style = OverlayStyle {
            colour: [255, 255, 0],
            ..OverlayStyle::default()
        };
        save_png(
            &out_dir.join("token_norm_outliers.png"),
            &composite(shown, &layers, &style),
        )?;
        let (low, high) = tokens
            .norms
            .iter()
            .fold((f32::MAX, f32::MIN), |(l, h), n| (l.min(*n), h.max(*n)));
        out.line(&format!(
            "token norms {low:.1} .. {high:.1}: {} of {} tokens are outliers (above Q3 + 3 IQR) · token_norms.npy, token_norm_outliers.png",
            outliers.iter().filter(|o| **o == 1).count(),
            outliers.len()
        ));
    }
    Ok(())
}

/// `--all-checkpoints`: the teacher of each checkpoint of a run on one image, as a GIF; with
/// `distance`, every head's mean attention distance at every checkpoint as a CSV (heads
/// moving from local to global over training).
#[allow(clippy::too_many_arguments)]
pub fn write_timelapse(
    run_dir: &Path,
    image_path: &Path,
    size: Option<dinoscope::analysis::attention::ImageSize>,
    layer: Option<&str>,
    threshold: f32,
    distance: bool,
    out_dir: &Path,
    device: &burn::prelude::Device,
) -> Result<()> {
    use dinoscope::analysis::attention::{mask_picture, ImageSize};
    use dinoscope::analysis::layers::{maps_of_layer, MapLayer, RolloutSettings};
    use dinoscope::store::checkpoint::{list_checkpoints, load_checkpoint_teacher};
    let checkpoints = list_checkpoints(run_dir);
    if checkpoints.len() < 2 {
        return Err(usage(format!(
            "--all-checkpoints: {} has {} complete checkpoint(s); a time-lapse needs a run directory with at least two (train with --checkpoint-every N --keep-last M)",
            run_dir.display(),
            checkpoints.len()
        )));
    }
    let image = dinoscope::data::load_rgb(image_path)?;
    let mut out = Printer::default();
    let mut frames = Vec::new();
    let mut distance_csv = String::from("step,layer,head,mean_distance_px\n");
    for (step, dir) in &checkpoints {
        let (model, config) = load_checkpoint_teacher(dir, device)
            .with_context(|| format!("cannot load the teacher of {}", dir.display()))?;
        let backbone = model.backbone;
        let depth = backbone.depth();
        let choice = match LayerChoice::parse(layer, depth)? {
            LayerChoice::Last => MapLayer::Last,
            LayerChoice::One(block) => MapLayer::Block(block),
            // One map per frame: `all` is shown as rollout over all blocks.
            LayerChoice::All => MapLayer::Rollout(RolloutSettings::default()),
        };
        let target = size
            .unwrap_or(ImageSize::ShortSide(config.data.global_crop_size))
            .resolve(image.dimensions());
        let maps = maps_of_layer(&backbone, &image, target, device, choice, distance).ok_or_else(
            || {
                usage(format!(
                    "{}: smaller than one patch at this --size",
                    image_path.display()
                ))
            },
        )?;
        for (layer, heads) in maps.distance_px.iter().enumerate() {
            for (head, px) in heads.iter().enumerate() {
                distance_csv.push_str(&format!("{step},{layer},{head},{px:.4}\n"));
            }
        }
        frames.push((
            mask_picture(&image, &maps, threshold, &OverlayStyle::default()),
            format!("step {step}"),
        ));
    }
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let path = out_dir.join("timelapse.gif");
    dinoscope::store::timelapse::write_gif(&path, &frames, 400)?;
    if distance {
        let csv_path = out_dir.join("distance_over_training.csv");
        dinoscope::store::run::write_atomically(&csv_path, distance_csv.as_bytes())
            .with_context(|| format!("cannot write {}", csv_path.display()))?;
        out.line(&format!(
            "distance: {} (step, layer, head, mean_distance_px)",
            csv_path.display()
        ));
    }
    out.line(&format!(
        "{} checkpoints (steps {} .. {}) · {}",
        frames.len(),
        checkpoints.first().map_or(0, |c| c.0),
        checkpoints.last().map_or(0, |c| c.0),
        path.display()
    ));
    Ok(())
}
