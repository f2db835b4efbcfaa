//! `dinoscope attention`: maps, masks and overlays of saved weights on one image.

use super::output::{usage, Printer};
use anyhow::{Context, Result};
use clap::Args;
use dinoscope::device::{select_device, DeviceChoice};
use dinoscope::store::run::write_atomically;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args)]
pub struct AttentionArgs {
    /// Weights: an official DINO backbone (.pth), a full checkpoint.pth, a .safetensors file
    /// in the same key layout, or a run directory of `dinoscope train` (or its teacher.bpk).
    #[arg(long, value_name = "FILE | RUN_DIR")]
    weights: PathBuf,
    /// The image (PNG, JPEG, WebP, BMP, TIFF, GIF; 16-bit, grey and alpha are converted).
    #[arg(long, value_name = "FILE")]
    image: PathBuf,
    /// N: resize the shorter side to N px; WxH: resize to exactly W×H (default: 480 short side
    /// for external weights, the training crop size for our runs).
    #[arg(long, value_name = "N | WxH")]
    size: Option<String>,
    /// Keep the smallest set of patches holding this share of each head's attention mass.
    #[arg(long, default_value_t = 0.6)]
    threshold: f32,
    /// Check the weights' width against an architecture: vit_micro, vit_tiny, vit_small,
    /// vit_base (DINO, DINOv2/v3 ViT-S/B), vit_large (DINOv2/v3 ViT-L), vit_huge2 (DINOv3
    /// ViT-H+), vit_giant2 (DINOv2 ViT-g). Not needed: the shapes say the architecture.
    #[arg(long, value_name = "NAME")]
    arch: Option<String>,
    /// Check the patch size read from the weights.
    #[arg(long, value_name = "P")]
    patch_size: Option<usize>,
    /// Number of heads (default: width / 64, the official convention).
    #[arg(long, value_name = "H")]
    heads: Option<usize>,
    /// Take the student of a full checkpoint instead of the teacher.
    #[arg(long)]
    student: bool,
    /// auto = wgpu on a hardware GPU, else the CPU backend.
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceChoice,
    /// Output directory.
    #[arg(long, value_name = "DIR", default_value = "attention")]
    out: PathBuf,
    /// Which block's CLS attention: an index from 0, `last` (default) or `all` (then
    /// attention.npy and masks.npy are layers × heads × rows × cols, plus a heat map per
    /// layer and head).
    #[arg(long, value_name = "L | all | last", allow_negative_numbers = true)]
    layer: Option<String>,
    /// Also attention rollout over every block (jacobgil/vit-explain's vit_rollout.py):
    /// rollout.npy (rows × cols, divided by its maximum), rollout.png and its mask overlay.
    #[arg(long)]
    rollout: bool,
    /// Rollout: the share of the weakest head-fused weights dropped in each block.
    #[arg(
        long,
        default_value_t = 0.9,
        requires = "rollout",
        allow_negative_numbers = true
    )]
    discard: f32,
    /// Rollout: how a block's heads are fused.
    #[arg(long, value_enum, default_value = "mean", requires = "rollout")]
    fusion: Fusion,
    /// Write distance.csv: the mean attention distance in pixels of every head of every block
    /// (local heads small, global heads near the image's mean patch distance); with
    /// --all-checkpoints, distance_over_training.csv: the same at every checkpoint.
    #[arg(long)]
    distance: bool,
    /// The cosine similarity of the last layer's token at pixel X,Y (of the image as the
    /// network sees it, after --size) to every patch: similarity.npy and similarity.png.
    #[arg(long, value_name = "X,Y")]
    similarity: Option<String>,
    /// The norm of every patch token of the last block (before the final norm):
    /// token_norms.npy and an overlay marking the outliers (above Q3 + 3 IQR).
    #[arg(long)]
    token_norms: bool,
    /// With a run directory as --weights: the teacher of every checkpoint-<step>/ in it, as
    /// timelapse.gif (the mean-of-heads mask of the chosen --layer, the step under each frame).
    #[arg(long)]
    all_checkpoints: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Fusion {
    Mean,
    Max,
    Min,
}

/// Long: the subcommand's pipeline in order: load, compute, then each output file the README lists.
pub fn run(args: AttentionArgs) -> Result<()> {
    use super::attention_layers::LayerChoice;
    use dinoscope::analysis::attention::{
        attention_and_pca, composite, head_colour, resized_crop, upsample_nearest, HeadFusion,
        ImageSize, MapLayers, OverlayStyle,
    };
    use dinoscope::analysis::colormap::heat_image;
    use dinoscope::analysis::layers::{layer_maps, RolloutSettings};
    use dinoscope::store::npy::{write_npy_f32, write_npy_u8};
    use dinoscope::store::weights::{load_backbone, ArchOverrides, Network};
    if !(0.0..=1.0).contains(&args.threshold) {
        return Err(usage(format!(
            "--threshold {} is out of range; allowed 0 ..= 1",
            args.threshold
        )));
    }
    // At 1 every weight but the CLS column is dropped and the rollout is all zeros (a blank
    // map, exit 0); the app's slider stops at 0.99 for the same reason.
    if !(0.0..=0.99).contains(&args.discard) {
        return Err(usage(format!(
            "--discard {} is out of range; allowed 0 ..= 0.99 (the share of each block's weakest weights dropped; vit_rollout.py uses 0.9)",
            args.discard
        )));
    }
    let size = args
        .size
        .as_deref()
        .map(ImageSize::parse)
        .transpose()
        .map_err(|err| usage(format!("--size: {err}")))?;
    let selected = select_device(args.device)?;
    if args.all_checkpoints {
        let unused: Vec<&str> = [
            ("--arch", args.arch.is_some()),
            ("--patch-size", args.patch_size.is_some()),
            ("--heads", args.heads.is_some()),
            ("--student", args.student),
            ("--rollout", args.rollout),
            ("--similarity", args.similarity.is_some()),
            ("--token-norms", args.token_norms),
        ]
        .into_iter()
        .filter_map(|(flag, given)| given.then_some(flag))
        .collect();
        if !unused.is_empty() {
            return Err(usage(format!(
                "--all-checkpoints draws the teacher of each checkpoint of a dinoscope run (--layer, --threshold, --distance, --size apply); it does not use {}: drop them, or give --weights one checkpoint-<step>/ for them",
                unused.join(", ")
            )));
        }
        return super::attention_layers::write_timelapse(
            &args.weights,
            &args.image,
            size,
            args.layer.as_deref(),
            args.threshold,
            args.distance,
            &args.out,
            &selected.device,
        );
    }
    let network = if args.student {
        Network::Student
    } else {
        Network::Teacher
    };
    let overrides = ArchOverrides {
        arch: args.arch.clone(),
        patch_size: args.patch_size,
        num_heads: args.heads,
    };
    let started = Instant::now();
    let loaded = load_backbone(&args.weights, network, &overrides, &selected.device)?;
    let load_secs = started.elapsed().as_secs_f64();
    let image = dinoscope::data::load_rgb(&args.image)?;
    let size = size.unwrap_or(ImageSize::ShortSide(loaded.info.default_short_side_px));
    let target = size.resolve(image.dimensions());
    let depth = loaded.backbone.depth();
    let choice = LayerChoice::parse(args.layer.as_deref(), depth)?;
    let started = Instant::now();
    let mut maps = attention_and_pca(&loaded.backbone, &image, target, &selected.device).ok_or_else(|| {
        usage(format!(
            "{}: at {size} ({}x{} px) the image is smaller than one patch of {} px; pass a larger --size",
            args.image.display(),
            target.0,
            target.1,
            loaded.info.patch_size
        ))
    })?;
    let rollout = args.rollout.then_some(RolloutSettings {
        fusion: match args.fusion {
            Fusion::Mean => HeadFusion::Mean,
            Fusion::Max => HeadFusion::Max,
            Fusion::Min => HeadFusion::Min,
        },
        discard_ratio: args.discard,
    });
    let layers: Vec<usize> = match choice {
        LayerChoice::Last => Vec::new(),
        LayerChoice::One(layer) => vec![layer],
        LayerChoice::All => (0..depth).collect(),
    };
    // One more pass, only when something beyond the last block is asked for.
    let extra = (choice != LayerChoice::Last || args.rollout || args.distance)
        .then(|| {
            layer_maps(
                &loaded.backbone,
                &image,
                target,
                &selected.device,
                &layers,
                rollout,
                args.distance,
            )
        })
        .flatten();
    if let (LayerChoice::One(_), Some(extra)) = (choice, &extra) {
        maps.heads = extra.cls[0].clone();
    }
    let maps_secs = started.elapsed().as_secs_f64();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let (rows, cols, p) = (maps.grid_rows, maps.grid_cols, maps.patch_size);
    // `attention … | head -1` ends quietly: lines after the reader left are dropped, the
    // files are still written.
    let mut out = Printer::default();
    let shown = resized_crop(&image, target, p);
    let (w, h) = (shown.width() as usize, shown.height() as usize);
    out.line(&format!(
        "{} on {} · loaded in {load_secs:.2} s",
        loaded.info.describe(),
        selected.description
    ));
    out.line(&format!(
        "grid {rows} x {cols} (patch {p} px, image {w} x {h}), threshold {} · maps in {maps_secs:.3} s",
        args.threshold
    ));
    save_png(&args.out.join("img.png"), &shown)?;
    // Patch-feature PCA: the first three components of the last layer's patch tokens as RGB,
    // and DINOv2's foreground-masked recipe (the background black).
    for (file, rgb) in [
        ("pca.png", &maps.pca_rgb),
        ("pca_foreground.png", &maps.pca_foreground_rgb),
    ] {
        let pixels = upsample_nearest(
            &rgb.chunks(3)
                .map(|c| [c[0], c[1], c[2]])
                .collect::<Vec<_>>(),
            rows,
            cols,
            p,
        );
        let picture = image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
            image::Rgb(pixels[y as usize * w + x as usize])
        });
        save_png(&args.out.join(file), &picture)?;
    }
    let mut all_maps: Vec<f32> = Vec::new();
    let mut all_masks: Vec<u8> = Vec::new();
    let mut named: Vec<(String, Option<usize>, Vec<f32>)> = maps
        .heads
        .iter()
        .enumerate()
        .map(|(j, head)| (format!("head{j}"), Some(j), head.clone()))
        .collect();
    named.push(("mean".into(), None, maps.fused(HeadFusion::Mean)));
    for (name, head, values) in &named {
        let layers = MapLayers::new(values, rows, cols, args.threshold);
        let coverage =
            layers.mask.iter().filter(|m| **m == 1).count() as f64 / layers.mask.len() as f64;
        out.line(&format!(
            "{name}: mask covers {:.1} % of the patches",
            100.0 * coverage
        ));
        save_png(
            &args.out.join(format!("attn-{name}.png")),
            &heat_image(&upsample_nearest(values, rows, cols, p), w, h),
        )?;
        let mask_px = upsample_nearest(&layers.mask, rows, cols, p);
        let mask = image::GrayImage::from_fn(w as u32, h as u32, |x, y| {
            image::Luma([mask_px[y as usize * w + x as usize] * 255])
        });
        save_png(
            &args
                .out
                .join(format!("mask_th{}_{name}.png", args.threshold)),
            &mask,
        )?;
        let style = OverlayStyle {
            colour: head_colour(*head),
            ..OverlayStyle::default()
        };
        save_png(
            &args
                .out
                .join(format!("overlay_th{}_{name}.png", args.threshold)),
            &composite(&shown, &layers, &style),
        )?;
        if head.is_some() {
            all_maps.extend_from_slice(values);
            all_masks.extend_from_slice(&layers.mask);
        }
    }
    let heads = maps.heads.len();
    let mut shape = vec![heads, rows, cols];
    if let (LayerChoice::All, Some(extra)) = (choice, &extra) {
        shape.insert(0, extra.cls.len());
        all_maps = extra.cls.iter().flatten().flatten().copied().collect();
        all_masks = extra
            .cls
            .iter()
            .flatten()
            .flat_map(|map| MapLayers::new(map, rows, cols, args.threshold).mask)
            .collect();
    }
    let path = args.out.join("attention.npy");
    write_npy_f32(&path, &shape, &all_maps)
        .with_context(|| format!("cannot write {}", path.display()))?;
    let path = args.out.join("masks.npy");
    write_npy_u8(&path, &shape, &all_masks)
        .with_context(|| format!("cannot write {}", path.display()))?;
    if args.similarity.is_some() || args.token_norms {
        let tokens = dinoscope::analysis::tokens::patch_tokens(
            &loaded.backbone,
            &image,
            target,
            &selected.device,
        )
        .ok_or_else(|| usage("the image is smaller than one patch at this --size"))?;
        super::attention_layers::write_tokens(
            &args.out,
            &tokens,
            &shown,
            args.similarity.as_deref(),
            args.token_norms,
            &mut out,
        )?;
    }
    if let Some(extra) = &extra {
        super::attention_layers::write(
            &args.out,
            extra,
            &shown,
            args.threshold,
            choice == LayerChoice::All,
            args.distance,
            &mut out,
        )?;
    }
    out.line(&format!("written to {}", args.out.display()));
    Ok(())
}

/// Each output is written whole or not at all (a temporary sibling, renamed): a full disk or an
/// unwritable file fails naming the file and leaves no zero-byte or truncated PNG behind.
pub(super) fn save_png<P>(
    path: &Path,
    image: &image::ImageBuffer<P, Vec<P::Subpixel>>,
) -> Result<()>
where
    P: image::PixelWithColorType,
    [P::Subpixel]: image::EncodableLayout,
{
    let mut png = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut png, image::ImageFormat::Png)
        .with_context(|| format!("cannot encode {}", path.display()))?;
    write_atomically(path, png.get_ref())?;
    Ok(())
}
