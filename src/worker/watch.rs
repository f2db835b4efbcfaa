//! The app's watcher thread: a channel adapter around `train::watch_engine::WatchEngine` (as
//! the training thread is around `Engine`), looking at the folder every few seconds and
//! sending what it finds as ordinary run events of one run id, so the watched run is plotted
//! and diagnosed like a run trained here. Plain data out; no egui; dropping the handle stops
//! and joins the thread.

use super::handle::{ThreadHandle, ThreadSpec};
use super::{Event, RunId, Waker, WorkerStatus};
use crate::train::watch::{ProbeBatch, WatchEvent, WatchOverrides, WatchSettings, Watcher};
use crate::train::watch_engine::{WatchEngine, WatchPlan};
use burn::prelude::Device;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

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

/// The thread's life: settings, probe, then the engine's looks forwarded as run events until
/// stopped.
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
    let Some(settings) = settings_of(dir, out, &given, &send, stop) else {
        return;
    };
    let images = crate::train::watch::default_probe_images();
    let probe = ProbeBatch::from_images(&images, &settings.augment, settings.seed);
    let watcher = Watcher::new(dir, out, settings, probe, device)
        .with_attention_images(attention_images)
        .with_rank_probe(images);
    send(Event::Status {
        run_id: Some(run_id),
        status: WorkerStatus::Running,
    });
    WatchEngine::new(dir, watcher).follow(WATCH_POLL, stop, |event| {
        forward(run_id, event, &send);
    });
    send(Event::Status {
        run_id: Some(run_id),
        status: WorkerStatus::Finished,
    });
}

/// One engine event as the events of run `run_id`.
fn forward(run_id: RunId, event: WatchEvent, send: &impl Fn(Event)) {
    match event {
        WatchEvent::Started(start) => send(Event::started(run_id, start)),
        WatchEvent::Evaluated {
            row,
            maps,
            eval,
            file,
            secs,
            ..
        } => {
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

/// The run's settings once its first checkpoint is complete (its `args` are worth the wait),
/// said in an info event; `None` when stopped first or refused (said as an error).
fn settings_of(
    dir: &Path,
    out: &Path,
    fields: &WatchOverrides,
    send: &impl Fn(Event),
    stop: &AtomicBool,
) -> Option<WatchSettings> {
    if !WatchEngine::wait_for_first_checkpoint(dir, Duration::from_millis(200), stop) {
        return None;
    }
    // The user's file beside the folder fills what the app's fields leave open; a bad one is
    // said and passed over (the CLI refuses it).
    let file = WatchOverrides::read_file(dir).unwrap_or_else(|message| {
        send(Event::Warning(format!("watch: {message}; not used")));
        None
    });
    let plan = WatchEngine::out_dir(dir, Some(out))
        .and_then(|_| WatchPlan::resolve(dir, fields, file.as_ref()));
    let plan = match plan {
        Ok(plan) => plan,
        Err(message) => {
            send(Event::Error(format!(
                "watch {}: {message}; nothing was evaluated",
                dir.display()
            )));
            return None;
        }
    };
    let mut said = format!(
        "watching {}: each new checkpoint on a probe of the bundled photos and embedded shapes, teacher temperature {}, crops {}/{} px, {} locals",
        dir.display(),
        plan.teacher_temp_said(),
        plan.settings.augment.global_crop_size_px,
        plan.settings.augment.local_crop_size_px,
        plan.settings.augment.local_crops_number
    );
    for source in plan.sources_said() {
        said.push_str(" · ");
        said.push_str(&source);
    }
    send(Event::Info(said));
    Some(plan.settings)
}
