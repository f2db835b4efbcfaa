//! `dinoscope report RUN_DIR... --out report.html`: one self-contained HTML file of runs (a
//! study folder adds its arms and its table). The attention over training comes from the run's
//! `attention/*.png` (what `dinoscope watch` draws) or, for a trained run, from its teacher at
//! random init (rebuilt from the seed) and at every kept checkpoint, on one image.

use super::output::{note, usage};
use anyhow::{Context, Result};
use clap::Args;
use dinoscope::analysis::attention::ImageSize;
use dinoscope::analysis::layers::{maps_of_layer, MapLayer};
use dinoscope::config::Config;
use dinoscope::device::{select_device, DeviceChoice};
use dinoscope::model::{HostInit, VisionTransformer};
use dinoscope::store::checkpoint::{list_checkpoints, load_checkpoint_teacher};
use dinoscope::store::report::{render_report, AttentionShot, ReportRun};
use dinoscope::store::rows::{read_rows_from, StudyRow};
use dinoscope::store::run::{
    list_run_dirs, read_eval_rows, read_step_metrics, write_atomically, CONFIG_FILE, EVAL_FILE,
    METRICS_FILE,
};
use dinoscope::store::study::STUDY_CSV;
use dinoscope::store::tensorboard::attention_picture;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct ReportArgs {
    /// Run folders (train, watch), or a study folder (`ablate`): each overlays on the others.
    #[arg(value_name = "RUN_DIR", required = true)]
    runs: Vec<PathBuf>,
    /// The HTML file to write.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// The page's title [default: the run names].
    #[arg(long)]
    title: Option<String>,
    /// The image whose attention is drawn at each checkpoint of a trained run [default: the
    /// first bundled photo].
    #[arg(long, value_name = "IMAGE")]
    image: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceChoice,
}

pub fn run(args: ReportArgs) -> Result<()> {
    let selected = select_device(args.device)?;
    let image = match &args.image {
        Some(path) => ("image".to_string(), dinoscope::data::load_rgb(path)?),
        None => dinoscope::data::sample_photos()
            .into_iter()
            .next()
            .ok_or_else(|| usage("no bundled photo; pass --image"))?,
    };
    let mut runs = Vec::new();
    let mut study = Vec::new();
    for dir in &args.runs {
        if dir.join(STUDY_CSV).is_file() {
            study.extend(read_rows_from::<StudyRow>(&dir.join(STUDY_CSV)).unwrap_or_default());
            let mut arms = list_run_dirs(dir);
            arms.sort();
            for arm in arms {
                runs.push(read_run(&arm, &image, &selected.device)?);
            }
        } else {
            runs.push(read_run(dir, &image, &selected.device)?);
        }
    }
    let title = args.title.clone().unwrap_or_else(|| {
        format!(
            "dinoscope: {}",
            runs.iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    });
    let html = render_report(&title, &runs, &study);
    write_atomically(&args.out, html.as_bytes())
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    note(&format!(
        "wrote {} ({} run(s), {} KiB)",
        args.out.display(),
        runs.len(),
        html.len() / 1024
    ));
    Ok(())
}

fn read_run(
    dir: &Path,
    image: &(String, image::RgbImage),
    device: &burn::prelude::Device,
) -> Result<ReportRun> {
    let metrics_path = dir.join(METRICS_FILE);
    if !metrics_path.is_file() {
        return Err(usage(format!(
            "{} has no {METRICS_FILE}: give run folders (train --out, watch's DIR.dinoscope) or a study folder (ablate --out)",
            dir.display()
        )));
    }
    let metrics = read_step_metrics(&metrics_path)?;
    let config_toml = std::fs::read_to_string(dir.join(CONFIG_FILE)).ok();
    let config = config_toml
        .as_deref()
        .and_then(|text| Config::from_toml_str(text, CONFIG_FILE).ok());
    let attention = match drawn_attention(dir) {
        shots if !shots.is_empty() => shots,
        _ => config
            .as_ref()
            .map(|c| checkpoint_attention(dir, c, image, device))
            .unwrap_or_default(),
    };
    Ok(ReportRun {
        name: dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string()),
        ln_k: metrics
            .last()
            .map(|m| m.ln_k)
            .filter(|l| *l > 0.0)
            .or_else(|| config.as_ref().map(|c| (c.dino.out_dim as f64).ln())),
        embed_dim: config.as_ref().map(|c| c.vit_arch().embed_dim),
        evals: read_eval_rows(&dir.join(EVAL_FILE)),
        config_toml,
        metrics,
        attention,
    })
}

/// `attention/epochNNNN-NAME.png` files (a watched run), in epoch order.
fn drawn_attention(dir: &Path) -> Vec<AttentionShot> {
    let Ok(entries) = std::fs::read_dir(dir.join("attention")) else {
        return Vec::new();
    };
    let mut shots: Vec<AttentionShot> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let stem = name.strip_suffix(".png")?;
            let (epoch, image) = stem.strip_prefix("epoch")?.split_once('-')?;
            let epoch: usize = epoch.parse().ok()?;
            Some(AttentionShot {
                step: epoch,
                caption: format!("epoch {epoch} · {image}"),
                png: std::fs::read(entry.path()).ok()?,
            })
        })
        .collect();
    shots.sort_by(|a, b| (a.step, &a.caption).cmp(&(b.step, &b.caption)));
    shots
}

/// The teacher's attention on `image` at random init and at every kept checkpoint; a network
/// that cannot be loaded is left out with a note.
fn checkpoint_attention(
    dir: &Path,
    config: &Config,
    image: &(String, image::RgbImage),
    device: &burn::prelude::Device,
) -> Vec<AttentionShot> {
    let size = ImageSize::ShortSide(config.data.global_crop_size).resolve(image.1.dimensions());
    let shot = |step: usize, caption: String, backbone: &VisionTransformer| {
        let maps = maps_of_layer(backbone, &image.1, size, device, MapLayer::Last, false)?;
        let picture = attention_picture(&image.1, &maps);
        let mut png = Vec::new();
        picture
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .ok()?;
        Some(AttentionShot { step, caption, png })
    };
    let mut shots = Vec::new();
    let initial = VisionTransformer::new(
        &config.vit_config(0.0),
        &mut HostInit::new(config.seed),
        device,
    );
    shots.extend(shot(0, format!("random init · {}", image.0), &initial));
    for (step, checkpoint) in list_checkpoints(dir) {
        match load_checkpoint_teacher(&checkpoint, device) {
            Ok((model, _)) => shots.extend(shot(
                step,
                format!("step {step} · {}", image.0),
                &model.backbone,
            )),
            Err(err) => note(&format!("{}: skipped ({err})", checkpoint.display())),
        }
    }
    shots
}
