//! `dinoscope` command line: a thin user of the library's `Trainer`.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use dinoscope::config::Config;
use dinoscope::device::{select_device, DeviceChoice};
use dinoscope::run::{new_run_dir, RunWriter};
use dinoscope::trainer::{StepMetrics, Trainer};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "dinoscope",
    version,
    about = "Train DINO self-distillation, watch collapse happen, see what the network looks at"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    app: AppArgs,
}

/// With no subcommand, dinoscope opens the desktop app.
#[derive(Args)]
struct AppArgs {
    /// TOML config for the app's runs (default: the tiny preset).
    #[arg(long, value_name = "FILE", conflicts_with = "preset")]
    config: Option<PathBuf>,
    /// Built-in preset to start with.
    #[arg(long, value_name = "NAME")]
    preset: Option<String>,
    /// Start training as soon as the window opens.
    #[arg(long)]
    autostart: bool,
    /// Render the real app after --after-steps training steps, write this PNG and exit.
    #[arg(long, value_name = "PNG", requires = "after_steps")]
    screenshot_to: Option<PathBuf>,
    /// Steps to train before --screenshot-to captures the window.
    #[arg(long, value_name = "N")]
    after_steps: Option<usize>,
    /// Training device when no hardware GPU is shared with the UI.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceChoice,
    /// Apply a toggle when the run reaches a step, e.g. --toggle-at 60:centering=off
    /// (repeatable; for scripted demos and screenshots).
    #[arg(long, value_name = "STEP:KEY=VALUE")]
    toggle_at: Vec<String>,
    /// Where the app writes its runs.
    #[arg(long, value_name = "DIR", default_value = "runs")]
    runs_dir: PathBuf,
    /// Load weights into the attention view at launch (.pth, .safetensors, run directory).
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
    /// Follow this image in the attention view (repeatable).
    #[arg(long, value_name = "FILE")]
    image: Vec<PathBuf>,
    /// Open on the attention view.
    #[arg(long)]
    attention: bool,
    /// Short side in pixels of the images the attention view feeds the network.
    #[arg(long, value_name = "N")]
    attention_size: Option<u32>,
}

#[derive(Subcommand)]
enum Command {
    /// Train headless; writes DIR/config.toml and DIR/metrics.csv (one row per step).
    Train(TrainArgs),
    /// Time training steps of a preset (warm-up excluded) and the data loader on its own.
    Bench(BenchArgs),
    /// Per-head CLS attention of the last block of a trained teacher on an image: heat maps,
    /// top-mass masks and overlays (PNG), attention.npy and masks.npy.
    Attention(AttentionArgs),
    /// Weighted k-NN accuracy (and attention-mask Jaccard where masks exist) of saved weights
    /// on the labelled splits of a config's data, next to the same network at random init.
    Knn(KnnArgs),
    /// Paper-quality figures of saved runs (PNG or SVG): the Fig. 7 pair, the loss, the k-NN.
    Plot(PlotArgs),
}

#[derive(Args)]
struct PlotArgs {
    /// Run directories, or folders of run directories (e.g. runs/).
    #[arg(long, value_name = "DIR", num_args = 1.., required = true)]
    runs: Vec<PathBuf>,
    /// Output file; .png or .svg.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    #[arg(long, value_enum, default_value = "collapse")]
    figure: dinoscope::figure::FigureKind,
    /// Size in pixels, WxH (default 1600x600 for collapse, else 1000x600).
    #[arg(long, value_name = "WxH")]
    size: Option<String>,
}

#[derive(Args)]
struct KnnArgs {
    /// Weights: a run directory of `train` (its config is used for the data unless
    /// --config/--preset is given), a checkpoint-<step>/ directory, or any file `attention` takes.
    #[arg(long, value_name = "FILE | DIR")]
    weights: PathBuf,
    #[command(flatten)]
    common: ConfigArgs,
    /// Neighbours (the reference: 20).
    #[arg(long, default_value_t = 20)]
    k: usize,
    /// Vote temperature (the reference: 0.07).
    #[arg(long, default_value_t = 0.07)]
    temperature: f64,
    /// Images of the train split used as memory (evenly spread).
    #[arg(long, default_value_t = 5000)]
    max_train: usize,
    /// Images of the val split used as queries.
    #[arg(long, default_value_t = 1000)]
    max_val: usize,
    /// Heads, for widths without an official head count.
    #[arg(long)]
    heads: Option<usize>,
}

#[derive(Args)]
struct AttentionArgs {
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
    /// Check the weights against an architecture: vit_tiny, vit_small, vit_base, vit_micro.
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
}

#[derive(Args, Clone)]
struct ConfigArgs {
    /// TOML config file (default: the built-in tiny preset).
    #[arg(long, value_name = "FILE", conflicts_with = "preset")]
    config: Option<PathBuf>,
    /// Built-in preset: tiny, collapse-no-centering, collapse-no-sharpening, vit-s16-paper.
    #[arg(long, value_name = "NAME")]
    preset: Option<String>,
    /// Override a key, e.g. --set dino.teacher_temp=0.07 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Random seed (weights, data order, augmentation, stochastic depth).
    #[arg(long)]
    seed: Option<u64>,
    /// auto = wgpu on a hardware GPU, else the CPU backend.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceChoice,
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    common: ConfigArgs,
    /// Number of iterations (the schedules span exactly this many).
    #[arg(long, conflicts_with = "epochs")]
    steps: Option<usize>,
    /// Number of epochs (overrides optim.epochs).
    #[arg(long)]
    epochs: Option<usize>,
    /// Run directory (default: runs/<time>-<preset>).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// No progress bar; print one summary line every N steps instead (0 = never).
    #[arg(long, value_name = "N")]
    log_every: Option<usize>,
    /// Apply a toggle before a step, e.g. --toggle-at 60:centering=off (repeatable; the
    /// centering/sharpening/local_crops/teacher_temp columns of metrics.csv show the effect).
    #[arg(long, value_name = "STEP:KEY=VALUE")]
    toggle_at: Vec<String>,
    /// Write a checkpoint every N steps (0 = only at the end and on Ctrl-C).
    #[arg(long, value_name = "N", default_value_t = 0)]
    checkpoint_every: usize,
    /// Checkpoints kept (the oldest are deleted).
    #[arg(long, value_name = "M", default_value_t = 3)]
    keep_last: usize,
    /// Continue a run from its newest checkpoint (a run directory or one checkpoint-<step>/
    /// inside it); config, schedules and data come from the checkpoint.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["config", "preset", "overrides", "seed", "epochs", "steps", "out"])]
    resume: Option<PathBuf>,
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    common: ConfigArgs,
    /// Timed steps.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Untimed warm-up steps.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// train: one training step of the config; attention: all maps of one image with a
    /// ViT-S/16 (random weights unless --weights) at 480 px short side.
    #[arg(long, value_enum, default_value = "train")]
    workload: Workload,
    /// Weights for the attention workload (default: a randomly initialised ViT-S/16).
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
    /// Image size for the attention workload: N (short side) or WxH.
    #[arg(long, value_name = "N | WxH", default_value = "480")]
    size: String,
    /// Attention workload: also the patch-feature PCA, as the app computes (one full pass).
    #[arg(long)]
    pca: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Workload {
    Train,
    Attention,
}

fn main() {
    dinoscope::device::tune_host_allocator();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Train(args)) => train(args),
        Some(Command::Bench(args)) => bench(args),
        Some(Command::Attention(args)) => attention(args),
        Some(Command::Knn(args)) => knn(args),
        Some(Command::Plot(args)) => plot(args),
        None => open_app(cli.app),
    };
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

fn open_app(args: AppArgs) -> Result<()> {
    let (config, label) = config_from(&args.config, &args.preset)?;
    // A config file is not one of the presets the app's picker lists.
    let preset = if args.config.is_some() {
        "custom".to_string()
    } else {
        label
    };
    let screenshot = match (args.screenshot_to, args.after_steps) {
        (Some(path), Some(after_steps)) => {
            Some(dinoscope::app::ScreenshotRequest { path, after_steps })
        }
        _ => None,
    };
    let scripted_toggles = parse_toggles(&args.toggle_at)?;
    let options = dinoscope::app::AppOptions {
        scripted_toggles,
        config,
        preset,
        // A screenshot of training needs training to happen.
        autostart: args.autostart || screenshot.as_ref().is_some_and(|s| s.after_steps > 0),
        open_attention: args.attention || args.weights.is_some(),
        weights: args.weights,
        images: args.image,
        attention_short_side_px: args.attention_size,
        device: args.device,
        runs_root: Some(args.runs_dir),
        screenshot,
    };
    dinoscope::app::run(options).map_err(|err| anyhow::anyhow!("cannot open the window: {err}"))
}

/// Parses `--toggle-at STEP:KEY=VALUE` arguments.
fn parse_toggles(specs: &[String]) -> Result<Vec<(usize, dinoscope::trainer::Toggle)>> {
    specs
        .iter()
        .map(|spec| {
            let (step, toggle) = spec.split_once(':').ok_or_else(|| {
                anyhow::anyhow!(
                    "--toggle-at {spec}: expected STEP:KEY=VALUE, e.g. 60:centering=off"
                )
            })?;
            let step: usize = step.parse().map_err(|_| {
                anyhow::anyhow!("--toggle-at {spec}: `{step}` is not a step number")
            })?;
            let toggle = toggle
                .parse()
                .map_err(|err: String| anyhow::anyhow!("--toggle-at {spec}: {err}"))?;
            Ok((step, toggle))
        })
        .collect()
}

/// Loads the config named on the command line and applies overrides; returns it with a label.
/// The config named by `--config FILE` or `--preset NAME` (default: tiny), with a label:
/// the file stem or the preset name.
fn config_from(file: &Option<PathBuf>, preset: &Option<String>) -> Result<(Config, String)> {
    Ok(match (file, preset) {
        (Some(path), _) => (
            Config::from_file(path)?,
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "config".into()),
        ),
        (None, Some(name)) => (Config::preset(name)?, name.clone()),
        (None, None) => (Config::preset("tiny")?, "tiny".to_string()),
    })
}

fn load_config(args: &ConfigArgs) -> Result<(Config, String)> {
    let (mut config, label) = config_from(&args.config, &args.preset)?;
    config = config.with_overrides(&args.overrides)?;
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    Ok((config, label))
}

/// Where a `--resume` continues: the checkpoint, its run directory and the trainer.
fn resume_trainer(
    path: &std::path::Path,
    device: burn::prelude::Device,
) -> Result<(Trainer, PathBuf)> {
    let checkpoint = dinoscope::checkpoint::resolve_checkpoint(path)?;
    let run_dir = checkpoint
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let trainer = Trainer::resume(&checkpoint, device)
        .with_context(|| format!("cannot resume from {}", checkpoint.display()))?;
    eprintln!(
        "resuming {} at step {} of {}",
        checkpoint.display(),
        trainer.steps_done(),
        trainer.total_steps()
    );
    Ok((trainer, run_dir))
}

fn train(args: TrainArgs) -> Result<()> {
    if args.resume.is_some() {
        return train_loop(args);
    }
    let (mut config, label) = load_config(&args.common)?;
    if let Some(epochs) = args.epochs {
        if epochs == 0 {
            bail!("--epochs must be at least 1");
        }
        config.optim.epochs = epochs;
        config.optim.warmup_epochs = config.optim.warmup_epochs.min(epochs);
        config.optim.freeze_last_layer = config.optim.freeze_last_layer.min(epochs);
    }
    if args.steps == Some(0) {
        bail!("--steps must be at least 1");
    }
    let selected = select_device(args.common.device)?;
    eprintln!("device: {}", selected.description);
    let out_dir = args
        .out
        .clone()
        .unwrap_or_else(|| new_run_dir(&PathBuf::from("runs"), &label));
    let trainer = Trainer::new(config.clone(), selected.device, args.steps)
        .context("cannot start training")?;
    let run = RunWriter::create(&out_dir, &config)?;
    run_training(args, trainer, run)
}

/// `train --resume`.
fn train_loop(args: TrainArgs) -> Result<()> {
    let path = args.resume.clone().unwrap_or_default();
    let selected = select_device(args.common.device)?;
    eprintln!("device: {}", selected.description);
    let (trainer, run_dir) = resume_trainer(&path, selected.device)?;
    let run = RunWriter::resume(&run_dir, trainer.steps_done(), trainer.ln_k())?;
    run_training(args, trainer, run)
}

fn run_training(args: TrainArgs, mut trainer: Trainer, mut run: RunWriter) -> Result<()> {
    let config = trainer.config().clone();
    let out_dir = run.dir().to_path_buf();
    let total = trainer.total_steps();
    eprintln!(
        "data: {} · {} steps ({} per epoch) · K = {} (ln K = {:.3}) · run dir {}",
        trainer.dataset_description(),
        total,
        trainer.iters_per_epoch(),
        config.dino.out_dim,
        trainer.ln_k(),
        out_dir.display()
    );

    let mut scripted = parse_toggles(&args.toggle_at)?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .context("cannot install the Ctrl-C handler")?;
    }

    let progress = match args.log_every {
        Some(_) => ProgressBar::hidden(),
        None => {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30.cyan/blue} {pos}/{len} [{elapsed_precise} < {eta_precise}] {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        }
    };
    // The k-NN / Jaccard monitor, as the app's: at random init and every N epochs.
    let eval = if config.data.knn_every_epochs > 0 {
        dinoscope::eval::EvalData::for_config(&config)?
    } else {
        None
    };
    let evaluate = |trainer: &Trainer, run: &RunWriter| -> Result<String> {
        let Some(eval) = &eval else {
            return Ok(String::new());
        };
        let backbone = &trainer.teacher().backbone;
        let knn = eval.knn(backbone, trainer.device())?;
        let jaccard = eval.jaccard(backbone, trainer.device());
        let point = dinoscope::eval::EvalPoint {
            step: trainer.steps_done(),
            epoch: trainer.epoch(),
            knn: Some(knn),
            jaccard: jaccard.clone(),
        };
        run.append_eval(&point)?;
        Ok(format!(
            "k-NN top-1 {:.1} % top-5 {:.1} %{} ({:.1} s)",
            knn.top1,
            knn.top5,
            jaccard
                .map(|j| format!(" · Jaccard {:.1} %", j.best))
                .unwrap_or_default(),
            knn.elapsed_secs
        ))
    };
    if trainer.steps_done() == 0 && eval.is_some() {
        let line = evaluate(&trainer, &run)?;
        eprintln!("random init: {line}");
    }
    let mut smoothed_rate = None::<f64>;
    let mut last: Option<StepMetrics> = None;
    while trainer.steps_done() < total {
        if stop.load(Ordering::SeqCst) {
            progress.abandon_with_message("stopped by Ctrl-C");
            break;
        }
        let step = trainer.steps_done();
        for (_, toggle) in scripted.iter().filter(|(at, _)| *at == step) {
            trainer.apply(toggle)?;
            progress.suspend(|| eprintln!("step {step}: {}", toggle.label()));
        }
        scripted.retain(|(at, _)| *at > step);
        let metrics = trainer.step()?;
        for warning in &metrics.warnings {
            progress.suspend(|| eprintln!("warning: {warning}"));
        }
        run.append(&metrics)?;
        let rate = match smoothed_rate {
            Some(r) => 0.9 * r + 0.1 * metrics.images_per_sec,
            None => metrics.images_per_sec,
        };
        smoothed_rate = Some(rate);
        let summary = summary_line(&metrics, rate);
        progress.set_position((metrics.step + 1) as u64);
        progress.set_message(summary.clone());
        if let Some(every) = args.log_every {
            if every > 0 && (metrics.step + 1) % every == 0 {
                println!("step {:>6}  {summary}", metrics.step + 1);
            }
        }
        last = Some(metrics);
        let done = trainer.steps_done();
        let every = config.data.knn_every_epochs;
        if every > 0 && done % trainer.iters_per_epoch() == 0 && trainer.epoch() % every == 0 {
            let line = evaluate(&trainer, &run)?;
            if !line.is_empty() {
                progress.suspend(|| eprintln!("epoch {}: {line}", trainer.epoch()));
            }
        }
        if args.checkpoint_every > 0 && done % args.checkpoint_every == 0 && done < total {
            let started = Instant::now();
            let dir = dinoscope::checkpoint::write_checkpoint(&trainer, &out_dir, args.keep_last)?;
            let ms = started.elapsed().as_secs_f64() * 1e3;
            progress.suspend(|| eprintln!("checkpoint: {} ({ms:.0} ms)", dir.display()));
        }
    }
    progress.finish();
    // At the end and on Ctrl-C: a checkpoint to resume from (or to evaluate).
    let started = Instant::now();
    let dir = dinoscope::checkpoint::write_checkpoint(&trainer, &out_dir, args.keep_last)?;
    eprintln!(
        "checkpoint: {} ({:.0} ms)",
        dir.display(),
        started.elapsed().as_secs_f64() * 1e3
    );
    run.write_config(&trainer.resolved_config())?;
    let teacher_path = run.dir().join(dinoscope::checkpoint::TEACHER_FILE);
    dinoscope::checkpoint::save_model(trainer.teacher(), &teacher_path)?;
    if let Some(m) = last {
        println!(
            "done: {} steps · loss {:.4} = h(Pt) {:.4} + KL {:.4} · h(mean Pt) {:.4} · ln K {:.4}",
            m.step + 1,
            m.loss,
            m.teacher_entropy,
            m.kl,
            m.batch_mean_entropy,
            trainer.ln_k()
        );
    }
    println!("metrics: {}", run.dir().join("metrics.csv").display());
    println!("teacher: {}", teacher_path.display());
    Ok(())
}

fn attention(args: AttentionArgs) -> Result<()> {
    use dinoscope::attention::{
        attention_and_pca, composite, head_colour, resized_crop, upsample_nearest, HeadFusion,
        ImageSize, MapLayers, OverlayStyle,
    };
    use dinoscope::export::{heat_image, write_npy_f32, write_npy_u8};
    use dinoscope::weights::{load_backbone, ArchOverrides, Network};
    if !(0.0..=1.0).contains(&args.threshold) {
        bail!(
            "--threshold {} is out of range; allowed 0 ..= 1",
            args.threshold
        );
    }
    let size = args
        .size
        .as_deref()
        .map(ImageSize::parse)
        .transpose()
        .map_err(|err| anyhow::anyhow!("--size: {err}"))?;
    let selected = select_device(args.device)?;
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
    let started = Instant::now();
    let maps = attention_and_pca(&loaded.backbone, &image, target, &selected.device).ok_or_else(|| {
        anyhow::anyhow!(
            "{}: at {size} ({}x{} px) the image is smaller than one patch of {} px; pass a larger --size",
            args.image.display(),
            target.0,
            target.1,
            loaded.info.patch_size
        )
    })?;
    let maps_secs = started.elapsed().as_secs_f64();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let (rows, cols, p) = (maps.grid_rows, maps.grid_cols, maps.patch_size);
    let shown = resized_crop(&image, target, p);
    let (w, h) = (shown.width() as usize, shown.height() as usize);
    println!(
        "{} on {} · loaded in {load_secs:.2} s",
        loaded.info.describe(),
        selected.description
    );
    println!(
        "grid {rows} x {cols} (patch {p} px, image {w} x {h}), threshold {} · maps in {maps_secs:.3} s",
        args.threshold
    );
    shown.save(args.out.join("img.png"))?;
    // Patch-feature PCA: the first three components of the last layer's patch tokens as RGB.
    let pca = upsample_nearest(
        &maps
            .pca_rgb
            .chunks(3)
            .map(|c| [c[0], c[1], c[2]])
            .collect::<Vec<_>>(),
        rows,
        cols,
        p,
    );
    image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
        image::Rgb(pca[y as usize * w + x as usize])
    })
    .save(args.out.join("pca.png"))?;
    let mut all_maps = Vec::new();
    let mut all_masks = Vec::new();
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
        println!(
            "{name}: mask covers {:.1} % of the patches",
            100.0 * coverage
        );
        heat_image(&upsample_nearest(values, rows, cols, p), w, h)
            .save(args.out.join(format!("attn-{name}.png")))?;
        let mask_px = upsample_nearest(&layers.mask, rows, cols, p);
        image::GrayImage::from_fn(w as u32, h as u32, |x, y| {
            image::Luma([mask_px[y as usize * w + x as usize] * 255])
        })
        .save(
            args.out
                .join(format!("mask_th{}_{name}.png", args.threshold)),
        )?;
        let style = OverlayStyle {
            colour: head_colour(*head),
            ..OverlayStyle::default()
        };
        composite(&shown, &layers, &style).save(
            args.out
                .join(format!("overlay_th{}_{name}.png", args.threshold)),
        )?;
        if head.is_some() {
            all_maps.extend_from_slice(values);
            all_masks.extend_from_slice(&layers.mask);
        }
    }
    let heads = maps.heads.len();
    write_npy_f32(
        &args.out.join("attention.npy"),
        &[heads, rows, cols],
        &all_maps,
    )?;
    write_npy_u8(
        &args.out.join("masks.npy"),
        &[heads, rows, cols],
        &all_masks,
    )?;
    println!("written to {}", args.out.display());
    Ok(())
}

fn knn(args: KnnArgs) -> Result<()> {
    use dinoscope::eval::{EvalData, KnnSettings};
    use dinoscope::weights::{load_backbone, ArchOverrides, Network};
    let selected = select_device(args.common.device)?;
    // A checkpoint directory: its teacher and config.
    let checkpoint_config = dinoscope::checkpoint::CheckpointFiles::in_dir(&args.weights);
    let (weights, run_config) = if checkpoint_config.state.is_file() {
        (checkpoint_config.teacher, checkpoint_config.config)
    } else {
        let (_, config) = dinoscope::checkpoint::run_files(&args.weights);
        (args.weights.clone(), config)
    };
    // Our runs carry their config: evaluate on the data they were trained on by default.
    let (config, label) =
        if args.common.config.is_none() && args.common.preset.is_none() && run_config.is_file() {
            let config = Config::from_file(&run_config)?.with_overrides(&args.common.overrides)?;
            (config, run_config.display().to_string())
        } else {
            load_config(&args.common)?
        };
    let Some(mut data) = EvalData::for_config(&config)? else {
        bail!(
            "{label}: data.source = {:?} has no labelled splits for k-NN; use a labelled dataset",
            config.data.source
        );
    };
    data.max_train = args.max_train.max(1);
    data.max_val = args.max_val.max(1);
    data.settings = KnnSettings {
        k: args.k.max(1),
        temperature: args.temperature,
        ..data.settings
    };
    let overrides = ArchOverrides {
        num_heads: args.heads,
        ..Default::default()
    };
    let loaded = if weights.extension().is_some_and(|e| e == "bpk") && weights.is_file() {
        // A checkpoint's teacher: the full model next to its config.
        let (model, _) = dinoscope::checkpoint::load_run_teacher(&weights, &selected.device)?;
        let info = load_backbone(
            weights.parent().unwrap_or(&weights),
            Network::Teacher,
            &overrides,
            &selected.device,
        )
        .map(|l| l.info)
        .ok();
        (model.backbone, info)
    } else {
        let l = load_backbone(&weights, Network::Teacher, &overrides, &selected.device)?;
        (l.backbone, Some(l.info))
    };
    let (backbone, info) = loaded;
    let description = info
        .as_ref()
        .map(|i| i.describe())
        .unwrap_or_else(|| weights.display().to_string());
    println!(
        "k-NN (k = {}, T = {}) of {description} on {} · {} · {} px crops",
        data.settings.k,
        data.settings.temperature,
        data.train.describe(),
        selected.description,
        data.settings.crop_px
    );
    let random = dinoscope::model::VisionTransformer::new(
        &dinoscope::model::VitConfig {
            arch: info.as_ref().map_or(config.vit_arch(), |i| i.arch),
            patch_size: backbone.patch_size(),
            img_size: info
                .as_ref()
                .map_or(config.data.global_crop_size as usize, |i| i.img_size),
            drop_path_rate: 0.0,
        },
        &mut dinoscope::model::HostInit::new(config.seed),
        &selected.device,
    );
    let same_arch = random.embed_dim() == backbone.embed_dim();
    let mut rows = vec![("weights", &backbone)];
    if same_arch {
        rows.push(("random init", &random));
    }
    for (name, net) in rows {
        let result = data.knn(net, &selected.device)?;
        print!(
            "{name:>12}: top-1 {:5.1} %  top-5 {:5.1} %  ({} train / {} val images, {:.1} s)",
            result.top1, result.top5, result.train_images, result.val_images, result.elapsed_secs
        );
        match data.jaccard(net, &selected.device) {
            Some(j) => println!(
                "  · attention Jaccard best head {:.1} % (head {}), mean map {:.1} % over {} images",
                j.best, j.best_head, j.mean_map, j.images
            ),
            None => println!(),
        }
    }
    Ok(())
}

fn plot(args: PlotArgs) -> Result<()> {
    use dinoscope::figure::{render_figure, FigureKind, PlotRun};
    let mut dirs = Vec::new();
    for path in &args.runs {
        if path.join("metrics.csv").is_file() {
            dirs.push(path.clone());
        } else if path.is_dir() {
            let found = dinoscope::run::list_run_dirs(path);
            if found.is_empty() {
                bail!(
                    "{} holds no run directories (none has a metrics.csv)",
                    path.display()
                );
            }
            dirs.extend(found);
        } else {
            bail!("{} is not a run directory", path.display());
        }
    }
    let runs = dirs
        .iter()
        .map(|dir| PlotRun::read(dir))
        .collect::<Result<Vec<_>, _>>()?;
    let size = match &args.size {
        Some(text) => match dinoscope::attention::ImageSize::parse(text)
            .map_err(|err| anyhow::anyhow!("--size: {err}"))?
        {
            dinoscope::attention::ImageSize::Exact { width, height } => (width, height),
            dinoscope::attention::ImageSize::ShortSide(_) => {
                bail!("--size: use WxH, e.g. 1600x600")
            }
        },
        None if args.figure == FigureKind::Collapse => (1600, 600),
        None => (1000, 600),
    };
    render_figure(&runs, args.figure, &args.out, size)?;
    println!(
        "wrote {} ({} runs: {})",
        args.out.display(),
        runs.len(),
        runs.iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

fn summary_line(m: &StepMetrics, images_per_sec: f64) -> String {
    format!(
        "loss {:.3} h {:.3} KL {:.3} h̄ {:.3} · lr {:.2e} · {:.0} img/s",
        m.loss, m.teacher_entropy, m.kl, m.batch_mean_entropy, m.lr, images_per_sec
    )
}

/// Time to compute every head's map for one 480-px image (the bundled cat photo).
fn bench_attention(args: BenchArgs) -> Result<()> {
    use dinoscope::attention::{attention_maps, mass_mask, HeadFusion, ImageSize};
    let selected = select_device(args.common.device)?;
    let (backbone, label) = match &args.weights {
        Some(path) => {
            let loaded = dinoscope::weights::load_backbone(
                path,
                dinoscope::weights::Network::Teacher,
                &Default::default(),
                &selected.device,
            )?;
            let label = loaded.info.describe();
            (loaded.backbone, label)
        }
        None => {
            let vit = dinoscope::model::VitConfig {
                arch: dinoscope::model::VitArch::from_name("vit_small")
                    .ok_or_else(|| anyhow::anyhow!("vit_small is missing"))?,
                patch_size: 16,
                img_size: 224,
                drop_path_rate: 0.0,
            };
            let backbone = dinoscope::model::VisionTransformer::new(
                &vit,
                &mut dinoscope::model::HostInit::new(0),
                &selected.device,
            );
            (backbone, "ViT-S/16 (random weights)".to_string())
        }
    };
    let (name, image) = dinoscope::data::sample_photos()
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("the bundled photos are missing"))?;
    let size = ImageSize::parse(&args.size).map_err(|err| anyhow::anyhow!("--size: {err}"))?;
    let target = size.resolve(image.dimensions());
    println!(
        "bench attention: {label} on {} · {name} at {}x{} px",
        selected.description, target.0, target.1
    );
    let mut secs = Vec::with_capacity(args.steps);
    for i in 0..args.warmup + args.steps.max(1) {
        let started = Instant::now();
        let maps = if args.pca {
            dinoscope::attention::attention_and_pca(&backbone, &image, target, &selected.device)
        } else {
            attention_maps(&backbone, &image, target, &selected.device)
        }
        .ok_or_else(|| anyhow::anyhow!("image smaller than one patch"))?;
        // Masks of every head and of the mean are part of "all maps".
        for head in &maps.heads {
            std::hint::black_box(mass_mask(head, 0.6));
        }
        std::hint::black_box(mass_mask(&maps.fused(HeadFusion::Mean), 0.6));
        if i >= args.warmup {
            secs.push(started.elapsed().as_secs_f64());
        }
    }
    secs.sort_by(f64::total_cmp);
    println!(
        "attention maps: {:.1} ms (median of {}), {:.1} ms (min)",
        secs[secs.len() / 2] * 1e3,
        secs.len(),
        secs[0] * 1e3
    );
    Ok(())
}

fn bench(args: BenchArgs) -> Result<()> {
    if args.workload == Workload::Attention {
        return bench_attention(args);
    }
    let (config, label) = load_config(&args.common)?;
    if args.steps == 0 {
        bail!("--steps must be at least 1");
    }
    let selected = select_device(args.common.device)?;
    println!("bench {label} on {}", selected.description);
    println!(
        "model {} /{} · batch {} · crops 2×{} px + {}×{} px · K {}",
        config.model.arch,
        config.model.patch_size,
        config.optim.batch_size_per_gpu,
        config.data.global_crop_size,
        config.dino.local_crops_number,
        config.data.local_crop_size,
        config.dino.out_dim
    );

    // The data loader on its own: how fast crops are produced when nothing consumes compute.
    let dataset = dinoscope::trainer::open_dataset(&config)?;
    let loader = dinoscope::augment::CropLoader::spawn(
        dataset,
        dinoscope::trainer::loader_config(&config),
        Arc::new(std::sync::atomic::AtomicUsize::new(
            config.dino.local_crops_number,
        )),
    )?;
    let loader_batches = (args.steps + args.warmup).max(10);
    let started = Instant::now();
    for _ in 0..loader_batches {
        loader.next_batch()?;
    }
    let loader_images_per_sec =
        (loader_batches * config.optim.batch_size_per_gpu) as f64 / started.elapsed().as_secs_f64();
    drop(loader);

    let mut trainer = Trainer::new(
        config.clone(),
        selected.device,
        Some(args.steps + args.warmup),
    )?;
    for _ in 0..args.warmup {
        trainer.step()?;
    }
    let mut step_secs = Vec::with_capacity(args.steps);
    let mut phase_secs = Vec::with_capacity(args.steps);
    let mut wait_secs = 0.0;
    let started = Instant::now();
    for _ in 0..args.steps {
        let m = trainer.step()?;
        step_secs.push(m.step_secs);
        phase_secs.push(trainer.last_phase_secs().named());
        wait_secs += m.data_wait_secs;
    }
    let elapsed = started.elapsed().as_secs_f64();
    step_secs.sort_by(f64::total_cmp);
    let median_ms = step_secs[step_secs.len() / 2] * 1e3;
    let images = (args.steps * config.optim.batch_size_per_gpu) as f64;
    let train_images_per_sec = images / elapsed;
    println!(
        "train step: {:.1} ms/step (mean), {:.1} ms (median), {:.1} img/s, data wait {:.1}% of step time",
        elapsed * 1e3 / args.steps as f64,
        median_ms,
        train_images_per_sec,
        100.0 * wait_secs / elapsed
    );
    let phase_medians_ms: Vec<String> = dinoscope::trainer::PhaseSecs::default()
        .named()
        .iter()
        .enumerate()
        .map(|(i, (name, _))| {
            let mut column: Vec<f64> = phase_secs.iter().map(|phases| phases[i].1).collect();
            column.sort_by(f64::total_cmp);
            format!("{name} {:.1}", column[column.len() / 2] * 1e3)
        })
        .collect();
    println!("phases (ms, median): {}", phase_medians_ms.join(" · "));
    println!(
        "data loader alone: {:.1} img/s ({:.1}× the train step's consumption)",
        loader_images_per_sec,
        loader_images_per_sec / train_images_per_sec
    );
    Ok(())
}
