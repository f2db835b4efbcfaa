//! The app's watcher thread: follows a run folder another process writes (`train::watch`),
//! polling it every few seconds, and sends what it finds as ordinary run events of one run id,
//! so the watched run is plotted and diagnosed like a run trained here. Plain data out; no
//! egui; dropping the handle stops and joins the thread.

use super::handle::{ThreadHandle, ThreadSpec};
use super::{Event, RunId, Waker, WorkerStatus};
use crate::train::watch::{ProbeBatch, WatchEvent, WatchOverrides, WatchSettings, Watcher};
use burn::prelude::Device;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often the folder is looked at.
pub const WATCH_POLL: Duration = Duration::from_secs(3);

pub struct WatchHandle {
    pub run_id: RunId,
    pub dir: PathBuf,
    /// No commands: the stop flag is all a watch is told.
    thread: ThreadHandle<(), Event>,
}

impl WatchHandle {
    /// Follows `dir`: a dinoscope run folder's rows as they are written, or an official run
    /// folder's checkpoints, evaluated into the dinoscope run folder `out`; the probe batch is
    /// the multi-crop views of the default probe (bundled photos and embedded shapes). The
    /// settings are resolved on the thread (the user's `given`, else the first checkpoint's
    /// `args`, else main_dino.py's defaults) and said in an info event.
    pub fn spawn(
        run_id: RunId,
        dir: &Path,
        out: &Path,
        given: WatchOverrides,
        images: Vec<super::AttentionImage>,
        device: Device,
        waker: Waker,
    ) -> std::io::Result<Self> {
        let (dir_owned, out_owned) = (dir.to_path_buf(), out.to_path_buf());
        let spec = ThreadSpec {
            name: "watch",
            command_queue: 1,
            event_queue: 1024,
        };
        let thread = ThreadHandle::spawn(spec, waker, None, move |ends| {
            let send = |event: Event| {
                ends.emit(event);
            };
            if super::follow::is_dinoscope_run(&dir_owned) {
                return super::follow::follow_run_folder(run_id, &dir_owned, send, &ends.stop);
            }
            let images = images
                .into_iter()
                .map(|i| (i.name, (*i.image).clone()))
                .collect();
            let followed = Followed {
                run_id,
                dir: &dir_owned,
                out: &out_owned,
                images,
            };
            follow(followed, given, device, send, &ends.stop)
        })?;
        Ok(Self {
            run_id,
            dir: dir.to_path_buf(),
            thread,
        })
    }

    pub fn try_recv(&self) -> Option<Event> {
        self.thread.try_recv()
    }

    /// Stops following (at most one checkpoint evaluation) and joins the thread.
    pub fn shutdown(&mut self) {
        self.thread.shutdown();
    }
}

/// What one watch follows.
struct Followed<'a> {
    run_id: RunId,
    dir: &'a Path,
    out: &'a Path,
    /// The app's followed images: their teacher attention at every checkpoint.
    images: Vec<(String, image::RgbImage)>,
}

/// Long: the thread's life: settings, probe, then poll and translate until stopped.
fn follow(
    followed: Followed<'_>,
    given: WatchOverrides,
    device: Device,
    send: impl Fn(Event),
    stop: &AtomicBool,
) {
    let Followed {
        run_id,
        dir,
        out,
        images: attention_images,
    } = followed;
    let Some(settings) = settings_of(dir, &given, &send, stop) else {
        return;
    };
    let images = crate::train::watch::default_probe_images();
    let probe = ProbeBatch::from_images(&images, &settings.augment, settings.seed);
    let mut watcher = Watcher::new(dir, out, settings, probe, device)
        .with_attention_images(attention_images)
        .with_rank_probe(images);
    send(Event::Status {
        run_id: Some(run_id),
        status: WorkerStatus::Running,
    });
    let mut started = false;
    let mut looks = 0;
    while !stop.load(Ordering::SeqCst) {
        // The checkpoints already there when watching starts are all evaluated (a file
        // counts at its second look); later ones newest-first.
        let all = looks < 2;
        looks += 1;
        for event in crate::device::on_compute_pool(|| watcher.poll(all)) {
            match event {
                WatchEvent::Evaluated {
                    row,
                    maps,
                    eval,
                    shape,
                    file,
                    secs,
                } => {
                    if !started {
                        started = true;
                        send(Event::Started {
                            run_id,
                            device: "watching".into(),
                            dataset: format!("official run {}", dir.display()),
                            total_steps: 0,
                            iters_per_epoch: 1,
                            shape,
                        });
                    }
                    tracing::info!("watch: {} evaluated in {secs:.1} s", file.display());
                    let epoch = row.step;
                    send(Event::Metrics {
                        run_id,
                        metrics: row,
                    });
                    if let Some(row) = eval {
                        send(Event::Eval {
                            run_id,
                            evaluation: Box::new(crate::train::engine::Evaluation {
                                row,
                                knn: None,
                                jaccard: None,
                            }),
                        });
                    }
                    if !maps.is_empty() {
                        send(Event::Attention {
                            run_id,
                            step: epoch,
                            network: crate::store::weights::Network::Teacher,
                            maps,
                        });
                    }
                }
                WatchEvent::Skipped(files) => send(Event::Warning(format!(
                    "watch: skipped {} checkpoint(s) a newer one replaced",
                    files.len()
                ))),
                WatchEvent::Warning(message) => send(Event::Warning(format!("watch: {message}"))),
                WatchEvent::Log(row) => {
                    if let Some(train_loss) = row.train_loss {
                        send(Event::TrainLog {
                            run_id,
                            epoch: row.epoch,
                            train_loss,
                        });
                    }
                }
            }
        }
        sleep_unless_stopped(WATCH_POLL, stop);
    }
    send(Event::Status {
        run_id: Some(run_id),
        status: WorkerStatus::Finished,
    });
}

/// Sleeps `duration` in short naps, waking early when `stop` is set (so dropping the handle
/// joins quickly); `false` when stopped.
pub(super) fn sleep_unless_stopped(duration: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + duration;
    while Instant::now() < until {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep(
            Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())),
        );
    }
    !stop.load(Ordering::SeqCst)
}

/// The run's settings once its first checkpoint is complete (a run that has only just started
/// has none yet: its `args` are worth the wait), said in an info event; `None` when stopped
/// first.
fn settings_of(
    dir: &Path,
    given: &WatchOverrides,
    send: &impl Fn(Event),
    stop: &AtomicBool,
) -> Option<WatchSettings> {
    use crate::store::official_run::{has_complete_checkpoint, run_args};
    while !has_complete_checkpoint(dir) {
        if !sleep_unless_stopped(Duration::from_millis(200), stop) {
            return None;
        }
    }
    // The user's file beside the folder fills what the app's fields leave open.
    let fields = given;
    let file = match WatchOverrides::read_file(dir) {
        Ok(file) => file,
        Err(message) => {
            send(Event::Warning(format!("watch: {message}; not used")));
            None
        }
    };
    let given = fields.clone().or(file.clone().unwrap_or_default());
    let file_path = WatchOverrides::file_for(dir);
    let args = run_args(dir);
    let resolved = WatchSettings::resolve(&given, args.as_ref().map(|(_, a)| a));
    let settings = resolved.settings;
    // The same ranges as the CLI's and train's; a bad value ends this watch, named.
    let sources = crate::train::watch_checks::SettingSources {
        flags: fields,
        file: file.as_ref().map(|f| (file_path.as_path(), f)),
        args: args.as_ref().map(|(path, a)| (path.as_path(), a)),
    };
    let patch_px = args
        .as_ref()
        .and_then(|(_, a)| a.get("patch_size"))
        .and_then(|v| v.as_usize());
    if let Err(message) = crate::train::watch_checks::check_settings(&settings, &sources, patch_px)
    {
        send(Event::Error(format!(
            "watch {}: {message}; nothing was evaluated",
            dir.display()
        )));
        return None;
    }
    let mut said = format!(
        "watching {}: each new checkpoint on a probe of the bundled photos and embedded shapes, teacher temperature {}, crops {}/{} px, {} locals",
        dir.display(),
        describe_temp(&settings),
        settings.augment.global_crop_size_px,
        settings.augment.local_crop_size_px,
        settings.augment.local_crops_number
    );
    if let (Some((file, _)), false) = (&args, resolved.from_args.is_empty()) {
        said.push_str(&format!(
            " · from the run's args ({}): {}",
            file.file_name().unwrap_or_default().to_string_lossy(),
            resolved.from_args.join(", ")
        ));
    }
    if !resolved.assumed.is_empty() {
        said.push_str(&format!(
            " · assumed (main_dino.py's defaults): {}",
            resolved.assumed.join(", ")
        ));
    }
    send(Event::Info(said));
    Some(settings)
}

/// "0.04", or "0.04 to 0.07 over 30 epochs" with a warm-up.
fn describe_temp(settings: &WatchSettings) -> String {
    if settings.warmup_teacher_temp_epochs > 0
        && settings.warmup_teacher_temp != settings.teacher_temp
    {
        format!(
            "{} to {} over {} epochs",
            settings.warmup_teacher_temp,
            settings.teacher_temp,
            settings.warmup_teacher_temp_epochs
        )
    } else {
        format!("{}", settings.teacher_temp)
    }
}
