//! `dinoscope watch DIR`: follow a run another process trains (the official `main_dino.py`
//! output folder), evaluating each new checkpoint on a fixed probe batch; the results form a
//! dinoscope run folder that `plot` reads.

use super::output::{note, usage, Printer};
use anyhow::{Context, Result};
use clap::Args;
use dinoscope::device::{select_device, DeviceChoice};
use dinoscope::store::official_run::is_official_run;
use dinoscope::store::run::METRICS_FILE;
use dinoscope::train::watch::{ProbeBatch, WatchEvent, WatchOverrides, WatchSettings, Watcher};
use dinoscope::train::watch_checks as checks;
use dinoscope::train::watch_engine::{WatchEngine, WatchPlan};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub struct WatchArgs {
    /// The run's output folder (log.txt, checkpoint.pth, checkpoint0000.pth, ...).
    dir: PathBuf,
    /// Evaluate what is there, then exit (default: follow until Ctrl-C).
    #[arg(long)]
    once: bool,
    /// The probe batch: a folder of images (ImageFolder or flat), or one holding
    /// probe_globals.npy (+ probe_locals.npy) crops to use as they are [default: the bundled
    /// photos and embedded shapes, 16 images].
    #[arg(long, value_name = "FOLDER")]
    probe: Option<PathBuf>,
    /// Images whose teacher attention is drawn for every checkpoint, as
    /// attention/epochNNNN-NAME.png in the run folder (repeatable) [default: the bundled
    /// photos].
    #[arg(long, value_name = "IMAGE")]
    image: Vec<PathBuf>,
    /// Labelled splits (ImageFolder: one subfolder per class) for the k-NN top-1/top-5 of
    /// every checkpoint's teacher and student, written to knn.csv.
    #[arg(long, value_name = "FOLDER", requires = "knn_val")]
    knn_train: Option<PathBuf>,
    #[arg(long, value_name = "FOLDER", requires = "knn_train")]
    knn_val: Option<PathBuf>,
    /// Images of each split used (evenly spread): memory, queries.
    #[arg(long, default_value_t = 1000)]
    knn_max_train: usize,
    #[arg(long, default_value_t = 500)]
    knn_max_val: usize,
    /// Where the dinoscope run folder goes [default: DIR.dinoscope next to DIR].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// The run's --teacher_temp, --warmup_teacher_temp, --warmup_teacher_temp_epochs,
    /// --momentum_teacher [default: the checkpoint's pickled args, else main_dino.py's 0.04,
    /// 0.04, 0, 0.996].
    #[arg(long, allow_negative_numbers = true)]
    teacher_temp: Option<f64>,
    #[arg(long, allow_negative_numbers = true)]
    warmup_teacher_temp: Option<f64>,
    #[arg(long)]
    warmup_teacher_temp_epochs: Option<usize>,
    #[arg(long, allow_negative_numbers = true)]
    momentum_teacher: Option<f64>,
    /// The run's --epochs: the length of its momentum schedule, so each row reports the
    /// momentum at its epoch [default: the checkpoint's args, else main_dino.py's 100].
    #[arg(long)]
    epochs: Option<usize>,
    /// Crop sizes and local crops of the probe's views [default: main_dino.py's fixed 224 and
    /// 96 px; local crops from args, else 8].
    #[arg(long, value_name = "PX")]
    global_crop: Option<u32>,
    #[arg(long, value_name = "PX")]
    local_crop: Option<u32>,
    #[arg(long, value_name = "N")]
    local_crops: Option<usize>,
    /// Heads of the ViT (default: the official convention, width / 64). Every setting here
    /// can also live in DIR.watch.toml beside the folder (keys teacher_temp,
    /// warmup_teacher_temp, warmup_teacher_temp_epochs, momentum_teacher, epochs, global_crop_px,
    /// local_crop_px, local_crops, heads), which the app reads too.
    #[arg(long, value_name = "H")]
    heads: Option<usize>,
    /// Seconds between looks at the folder when following.
    #[arg(long, default_value_t = 5.0, allow_negative_numbers = true)]
    poll_secs: f64,
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceChoice,
    /// Write no TensorBoard events (default: rows, k-NN and attention also go to
    /// OUT/tb/events.out.tfevents.*).
    #[arg(long)]
    no_tensorboard: bool,
}

/// Long: settings (and what was assumed), the probe, then the poll loop printing each event.
pub fn run(args: WatchArgs) -> Result<()> {
    if dinoscope::worker::follow::is_dinoscope_run(&args.dir) {
        return Err(usage(format!(
            "{} is a dinoscope run folder: follow it live in the app (Watch run folder... or `dinoscope --watch {}`), or plot it with `dinoscope plot --runs {}`",
            args.dir.display(),
            args.dir.display(),
            args.dir.display()
        )));
    }
    if !args.dir.is_dir() || !is_official_run(&args.dir) {
        return Err(usage(format!(
            "{} is not a run folder: it has no log.txt and no checkpoint*.pth (pass main_dino.py's --output_dir)",
            args.dir.display()
        )));
    }
    checks::check_poll_secs(args.poll_secs).map_err(usage)?;
    let out_dir = WatchEngine::out_dir(&args.dir, args.out.as_deref()).map_err(usage)?;
    let flags = WatchOverrides {
        teacher_temp: args.teacher_temp,
        warmup_teacher_temp: args.warmup_teacher_temp,
        warmup_teacher_temp_epochs: args.warmup_teacher_temp_epochs,
        momentum_teacher: args.momentum_teacher,
        epochs: args.epochs,
        global_crop_px: args.global_crop,
        local_crop_px: args.local_crop,
        local_crops: args.local_crops,
        heads: args.heads,
    };
    let file = WatchOverrides::read_file(&args.dir).map_err(usage)?;
    let stop = Arc::new(AtomicBool::new(false));
    if !args.once {
        let flag = stop.clone();
        ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
            .context("cannot install the signal handler")?;
        if !WatchEngine::has_first_checkpoint(&args.dir) {
            note("waiting for the run's first checkpoint (its args say how the run trains)...");
            let nap = Duration::from_secs_f64(args.poll_secs.min(1.0));
            WatchEngine::wait_for_first_checkpoint(&args.dir, nap, &stop);
        }
    }
    let plan = WatchPlan::resolve(&args.dir, &flags, file.as_ref()).map_err(usage)?;
    for said in plan.sources_said() {
        note(&said);
    }
    let settings = plan.settings;
    let (probe, probe_images) = probe_batch(args.probe.as_deref(), &settings)?;
    let selected = select_device(args.device)?;
    if out_dir.join(METRICS_FILE).is_file() {
        note(&format!(
            "continuing {}: its rows are kept, new checkpoints' rows appended",
            out_dir.display()
        ));
    }
    note(&format!(
        "watching {} · probe of {} images · results in {}",
        args.dir.display(),
        probe.globals.1[0] / 2,
        out_dir.display()
    ));
    let images = attention_images(&args.image)?;
    let knn = knn_data(&args, &settings)?;
    let mut watcher = Watcher::new(&args.dir, &out_dir, settings, probe, selected.device)
        .with_attention_images(images)
        .with_tensorboard(!args.no_tensorboard);
    if let Some(images) = probe_images {
        watcher = watcher.with_rank_probe(images);
    }
    if let Some(data) = knn {
        watcher = watcher.with_knn(data);
    }
    let mut out = Printer::default();
    // A file is read once it has kept its size across two looks: the first only registers.
    let pause = Duration::from_secs_f64(if args.once {
        args.poll_secs.min(1.0)
    } else {
        args.poll_secs
    });
    let (mut evaluated, mut refused) = (0, 0);
    WatchEngine::new(&args.dir, watcher)
        .once(args.once)
        .follow(pause, &stop, |event| {
            match &event {
                WatchEvent::Evaluated { .. } => evaluated += 1,
                WatchEvent::Warning(_) => refused += 1,
                _ => {}
            }
            print_event(&mut out, event);
        });
    out.line(&format!("run folder: {}", out_dir.display()));
    let has_checkpoints = !dinoscope::store::official_run::checkpoint_files(&args.dir).is_empty();
    if args.once && evaluated == 0 && refused > 0 && has_checkpoints {
        return Err(usage(format!(
            "no checkpoint of {} could be evaluated ({refused} refused: see the warnings above)",
            args.dir.display()
        )));
    }
    Ok(())
}

fn print_event(out: &mut Printer, event: WatchEvent) {
    match event {
        // The run folder is said before the first look.
        WatchEvent::Started(_) => {}
        WatchEvent::Log(row) => out.line(&format!(
            "epoch {}: log train_loss {} · lr {} · wd {}",
            row.epoch,
            row.train_loss.map_or("–".into(), |v| format!("{v:.4}")),
            row.train_lr.map_or("–".into(), |v| format!("{v:.3e}")),
            row.train_wd.map_or("–".into(), |v| format!("{v:.4}")),
        )),
        WatchEvent::Evaluated {
            file,
            row,
            secs,
            maps,
            eval,
            shape,
        } => out.line(&format!(
            "{} (epoch {}, τt {:.4}, momentum {:.5}): loss {:.4} = h(Pt) {:.4} + KL {:.4} · h(mean Pt) {:.4} · I {:.4} · {}{}{}{} · attention of {} images · {secs:.1} s",
            file.file_name().unwrap_or_default().to_string_lossy(),
            row.epoch,
            row.teacher_temp,
            row.teacher_momentum,
            row.loss,
            row.teacher_entropy,
            row.kl,
            row.batch_mean_entropy,
            row.teacher_mi(),
            row.effective_rank
                .map(|rank| dinoscope::analysis::health::rank_words(rank, row.rank_rows, shape.embed_dim).to_lowercase() + " · ")
                .unwrap_or_default(),
            row.regime.word(),
            if row.regime.is_collapse() { format!(" ({})", row.regime.label()) } else { String::new() },
            eval.map(|e| format!(
                " · k-NN top-1 {:.1} % (student {:.1} %)",
                e.top1.unwrap_or_default(),
                e.student_top1.unwrap_or_default()
            ))
            .unwrap_or_default(),
            maps.len()
        )),
        WatchEvent::Skipped(files) => out.line(&format!(
            "skipped (a newer checkpoint came first): {}",
            files
                .iter()
                .map(|f| f.file_name().unwrap_or_default().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        WatchEvent::Warning(message) => note(&format!("warning: {message}")),
    }
}

/// `--knn-train`/`--knn-val` as k-NN splits at the probe's global crop size.
fn knn_data(
    args: &WatchArgs,
    settings: &WatchSettings,
) -> Result<Option<dinoscope::analysis::knn::EvalData>> {
    use dinoscope::analysis::knn::{EvalData, KnnSettings};
    use dinoscope::data::ImageFolder;
    let (Some(train), Some(val)) = (&args.knn_train, &args.knn_val) else {
        return Ok(None);
    };
    let open = |flag: &str, dir: &Path| {
        // ImageFolder's own messages speak of data.path, a key `watch` does not have.
        if !dir.is_dir() {
            return Err(usage(format!(
                "{flag} {}: no such folder; give a labelled ImageFolder root (one subfolder per class)",
                dir.display()
            )));
        }
        ImageFolder::open(dir).map_err(|err| usage(format!("{flag} {}: {err}", dir.display())))
    };
    Ok(Some(EvalData {
        train: Arc::new(open("--knn-train", train)?),
        val: Arc::new(open("--knn-val", val)?),
        masked: Vec::new(),
        max_train: args.knn_max_train.max(1),
        max_val: args.knn_max_val.max(1),
        settings: KnnSettings::for_crop(settings.augment.global_crop_size_px),
    }))
}

/// `--image` files (each named by its file name), or the bundled photos.
fn attention_images(paths: &[PathBuf]) -> Result<Vec<(String, image::RgbImage)>> {
    if paths.is_empty() {
        return Ok(dinoscope::data::sample_photos());
    }
    paths
        .iter()
        .map(|path| {
            let image = dinoscope::data::load_rgb(path)
                .map_err(|err| usage(format!("--image {}: {err}", path.display())))?;
            let name = path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            Ok((name, image))
        })
        .collect()
}

/// Fixed crops from `.npy` files, or the multi-crop views of a folder's images (default: the
/// bundled photos and embedded shapes), seeded so every checkpoint sees the same batch.
/// With the images (for the representation readings' rows); none for fixed crops.
fn probe_batch(
    folder: Option<&Path>,
    settings: &WatchSettings,
) -> Result<(ProbeBatch, Option<Vec<image::RgbImage>>)> {
    if let Some(dir) = folder {
        if dir.join("probe_globals.npy").is_file() {
            return Ok((npy_probe(dir)?, None));
        }
    }
    let images: Vec<image::RgbImage> = match folder {
        Some(dir) => folder_images(dir, settings.probe_images)?,
        None => dinoscope::train::watch::default_probe_images(),
    };
    let probe = ProbeBatch::from_images(&images, &settings.augment, settings.seed);
    Ok((probe, Some(images)))
}

/// Up to `max` images of a folder, flat or one subfolder per class (sorted names), each
/// unreadable one said and skipped; an error naming `--probe` when none is left.
fn folder_images(dir: &Path, max: usize) -> Result<Vec<image::RgbImage>> {
    use dinoscope::data::is_image_file;
    let sorted = |dir: &Path| -> std::io::Result<Vec<PathBuf>> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                !p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        paths.sort();
        Ok(paths)
    };
    let entries = sorted(dir).map_err(|err| {
        usage(format!(
            "--probe {}: {err}; give a folder of images (flat or one subfolder per class) or one holding probe_globals.npy",
            dir.display()
        ))
    })?;
    let mut files = Vec::new();
    for path in entries {
        if path.is_dir() {
            files.extend(
                sorted(&path)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|p| is_image_file(p)),
            );
        } else if is_image_file(&path) {
            files.push(path);
        }
    }
    let mut images = Vec::new();
    for path in files {
        if images.len() >= max {
            break;
        }
        match dinoscope::data::load_rgb(&path) {
            Ok(image) => images.push(image),
            Err(err) => note(&format!("warning: --probe: {err}; skipped")),
        }
    }
    if images.is_empty() {
        return Err(usage(format!(
            "--probe {}: no readable images in it or its subfolders (PNG, JPEG, WebP, BMP, TIFF, GIF); or give a folder holding probe_globals.npy",
            dir.display()
        )));
    }
    Ok(images)
}

fn npy_probe(dir: &Path) -> Result<ProbeBatch> {
    use dinoscope::store::npy::read_npy;
    let read = |name: &str| -> Result<Option<(Vec<f32>, [usize; 4])>> {
        let path = dir.join(name);
        if !path.is_file() {
            return Ok(None);
        }
        let array = read_npy(&path)
            .map_err(|err| usage(format!("--probe: cannot read {}: {err}", path.display())))?;
        let shape: [usize; 4] = array.shape.clone().try_into().map_err(|_| {
            usage(format!(
                "{}: expected crops [N, 3, H, W], got {:?}",
                path.display(),
                array.shape
            ))
        })?;
        let values = array.to_f32().ok_or_else(|| {
            usage(format!(
                "--probe: {} is not float data; save the crops as float32",
                path.display()
            ))
        })?;
        Ok(Some((values, shape)))
    };
    let globals = read("probe_globals.npy")?
        .ok_or_else(|| usage(format!("{} has no probe_globals.npy", dir.display())))?;
    let probe = ProbeBatch {
        globals,
        locals: read("probe_locals.npy")?,
    };
    checks::check_probe(
        &probe,
        &dir.join("probe_globals.npy"),
        &dir.join("probe_locals.npy"),
    )
    .map_err(usage)?;
    Ok(probe)
}
