//! `dinoscope watch DIR`: follow a run another process trains (the official `main_dino.py`
//! output folder), evaluating each new checkpoint on a fixed probe batch; the results form a
//! dinoscope run folder that `plot` reads.

use super::output::{note, usage, Printer};
use anyhow::{Context, Result};
use clap::Args;
use dinoscope::augment::AugmentConfig;
use dinoscope::device::{select_device, DeviceChoice};
use dinoscope::store::official_run::is_official_run;
use dinoscope::train::watch::{ProbeBatch, WatchEvent, WatchSettings, Watcher};
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
    /// photos].
    #[arg(long, value_name = "FOLDER")]
    probe: Option<PathBuf>,
    /// Where the dinoscope run folder goes [default: DIR.dinoscope next to DIR].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// The run's --teacher_temp, --warmup_teacher_temp, --warmup_teacher_temp_epochs
    /// [default: main_dino.py's 0.04, 0.04, 0].
    #[arg(long)]
    teacher_temp: Option<f64>,
    #[arg(long)]
    warmup_teacher_temp: Option<f64>,
    #[arg(long)]
    warmup_teacher_temp_epochs: Option<usize>,
    /// Crop sizes and local crops of the probe's views [default: 224, 96, 8].
    #[arg(long, value_name = "PX")]
    global_crop: Option<u32>,
    #[arg(long, value_name = "PX")]
    local_crop: Option<u32>,
    #[arg(long, value_name = "N")]
    local_crops: Option<usize>,
    /// Heads of the ViT (default: the official convention, width / 64).
    #[arg(long, value_name = "H")]
    heads: Option<usize>,
    /// Seconds between looks at the folder when following.
    #[arg(long, default_value_t = 5.0)]
    poll_secs: f64,
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceChoice,
}

/// Long: settings (and what was assumed), the probe, then the poll loop printing each event.
pub fn run(args: WatchArgs) -> Result<()> {
    if !args.dir.is_dir() || !is_official_run(&args.dir) {
        return Err(usage(format!(
            "{} is not a run folder: it has no log.txt and no checkpoint*.pth (pass main_dino.py's --output_dir)",
            args.dir.display()
        )));
    }
    if !(args.poll_secs > 0.0 && args.poll_secs.is_finite()) {
        return Err(usage("--poll-secs must be a positive number of seconds"));
    }
    let defaults = WatchSettings::default();
    let mut assumed = Vec::new();
    let mut value = |given: Option<f64>, default: f64, name: &str| {
        given.unwrap_or_else(|| {
            assumed.push(format!("{name} {default}"));
            default
        })
    };
    let settings = WatchSettings {
        teacher_temp: value(args.teacher_temp, defaults.teacher_temp, "--teacher-temp"),
        warmup_teacher_temp: value(
            args.warmup_teacher_temp,
            defaults.warmup_teacher_temp,
            "--warmup-teacher-temp",
        ),
        warmup_teacher_temp_epochs: value(
            args.warmup_teacher_temp_epochs.map(|e| e as f64),
            defaults.warmup_teacher_temp_epochs as f64,
            "--warmup-teacher-temp-epochs",
        ) as usize,
        augment: AugmentConfig {
            global_crop_size_px: value(args.global_crop.map(f64::from), 224.0, "--global-crop")
                as u32,
            local_crop_size_px: value(args.local_crop.map(f64::from), 96.0, "--local-crop") as u32,
            local_crops_number: value(args.local_crops.map(|n| n as f64), 8.0, "--local-crops")
                as usize,
            ..AugmentConfig::default()
        },
        heads: args.heads,
        ..defaults
    };
    if !assumed.is_empty() {
        note(&format!(
            "assumed (main_dino.py's defaults; give the run's own if they differ): {}",
            assumed.join(", ")
        ));
    }
    let probe = probe_batch(args.probe.as_deref(), &settings)?;
    let selected = select_device(args.device)?;
    let out_dir = args.out.clone().unwrap_or_else(|| {
        let mut name = args.dir.file_name().unwrap_or_default().to_os_string();
        name.push(".dinoscope");
        args.dir.with_file_name(name)
    });
    note(&format!(
        "watching {} · probe of {} images · results in {}",
        args.dir.display(),
        probe.globals.1[0] / 2,
        out_dir.display()
    ));
    let mut watcher = Watcher::new(&args.dir, &out_dir, settings, probe, selected.device);
    let stop = Arc::new(AtomicBool::new(false));
    if !args.once {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .context("cannot install the signal handler")?;
    }
    let mut out = Printer::default();
    // A file is read once it has kept its size across two looks: the first only registers.
    let pause = Duration::from_secs_f64(if args.once {
        args.poll_secs.min(1.0)
    } else {
        args.poll_secs
    });
    let mut looks = 0;
    loop {
        // What is there at the start is all evaluated (a file counts at its second look);
        // afterwards, when checkpoints come faster than the probe, the newest wins.
        for event in watcher.poll(args.once || looks < 2) {
            print_event(&mut out, event);
        }
        looks += 1;
        if (args.once && looks >= 2) || stop.load(Ordering::SeqCst) {
            break;
        }
        std::thread::sleep(pause);
    }
    out.line(&format!("run folder: {}", out_dir.display()));
    Ok(())
}

fn print_event(out: &mut Printer, event: WatchEvent) {
    match event {
        WatchEvent::Log(row) => out.line(&format!(
            "epoch {}: log train_loss {} · lr {} · wd {}",
            row.epoch,
            row.train_loss.map_or("–".into(), |v| format!("{v:.4}")),
            row.train_lr.map_or("–".into(), |v| format!("{v:.3e}")),
            row.train_wd.map_or("–".into(), |v| format!("{v:.4}")),
        )),
        WatchEvent::Evaluated { file, row, secs, .. } => out.line(&format!(
            "{} (epoch {}, τt {:.4}): loss {:.4} = h(Pt) {:.4} + KL {:.4} · h(mean Pt) {:.4} · {} · {secs:.1} s",
            file.file_name().unwrap_or_default().to_string_lossy(),
            row.epoch,
            row.teacher_temp,
            row.loss,
            row.teacher_entropy,
            row.kl,
            row.batch_mean_entropy,
            row.regime.word()
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

/// Fixed crops from `.npy` files, or the multi-crop views of a folder's images (default: the
/// bundled photos), seeded so every checkpoint sees the same batch.
fn probe_batch(folder: Option<&Path>, settings: &WatchSettings) -> Result<ProbeBatch> {
    if let Some(dir) = folder {
        if dir.join("probe_globals.npy").is_file() {
            return npy_probe(dir);
        }
    }
    let images: Vec<image::RgbImage> = match folder {
        Some(dir) => {
            let dataset = dinoscope::data::ImageFolder::open(dir)
                .with_context(|| format!("--probe {}", dir.display()))?;
            use dinoscope::data::Dataset;
            (0..dataset.len().min(settings.probe_images))
                .filter_map(|i| dataset.get(i).ok().map(|s| s.image))
                .collect()
        }
        None => dinoscope::data::sample_photos()
            .into_iter()
            .map(|(_, image)| image)
            .collect(),
    };
    if images.is_empty() {
        return Err(usage("--probe: no readable images in the folder"));
    }
    Ok(ProbeBatch::from_images(
        &images,
        &settings.augment,
        settings.seed,
    ))
}

fn npy_probe(dir: &Path) -> Result<ProbeBatch> {
    use dinoscope::store::npy::read_npy;
    let read = |name: &str| -> Result<Option<(Vec<f32>, [usize; 4])>> {
        let path = dir.join(name);
        if !path.is_file() {
            return Ok(None);
        }
        let array = read_npy(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let shape: [usize; 4] = array.shape.clone().try_into().map_err(|_| {
            usage(format!(
                "{}: expected crops [N, 3, H, W], got {:?}",
                path.display(),
                array.shape
            ))
        })?;
        let values = array
            .to_f32()
            .with_context(|| format!("{} is not float data", path.display()))?;
        Ok(Some((values, shape)))
    };
    let globals = read("probe_globals.npy")?
        .ok_or_else(|| usage(format!("{} has no probe_globals.npy", dir.display())))?;
    Ok(ProbeBatch {
        globals,
        locals: read("probe_locals.npy")?,
    })
}
