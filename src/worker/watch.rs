//! The app's watcher thread: follows a run folder another process writes (`train::watch`),
//! polling it every few seconds, and sends what it finds as ordinary run events of one run id,
//! so the watched run is plotted and diagnosed like a run trained here. Plain data out; no
//! egui; dropping the handle stops and joins the thread.

use super::{Event, RunId, Waker, WorkerStatus};
use crate::train::watch::{ProbeBatch, WatchEvent, WatchSettings, Watcher};
use burn::prelude::Device;
use crossbeam_channel::{bounded, Receiver};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the folder is looked at.
pub const WATCH_POLL: Duration = Duration::from_secs(3);

pub struct WatchHandle {
    pub run_id: RunId,
    pub dir: PathBuf,
    events: Receiver<Event>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl WatchHandle {
    /// Follows `dir`, writing its dinoscope run folder to `out`; the probe batch is the
    /// bundled photos' multi-crop views with `settings`' crop sizes.
    pub fn spawn(
        run_id: RunId,
        dir: &Path,
        out: &Path,
        settings: WatchSettings,
        device: Device,
        waker: Waker,
    ) -> std::io::Result<Self> {
        let (tx, events) = bounded(1024);
        let stop = Arc::new(AtomicBool::new(false));
        let (dir_owned, out_owned, stop_flag) =
            (dir.to_path_buf(), out.to_path_buf(), stop.clone());
        let send = move |event: Event| {
            let _ = tx.send(event);
            waker();
        };
        let thread = std::thread::Builder::new()
            .name("dinoscope-watch".into())
            .spawn(move || {
                follow(
                    run_id, &dir_owned, &out_owned, settings, device, send, &stop_flag,
                )
            })?;
        Ok(Self {
            run_id,
            dir: dir.to_path_buf(),
            events,
            stop,
            thread: Some(thread),
        })
    }

    pub fn try_recv(&self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    /// Stops following (at most one checkpoint evaluation) and joins the thread.
    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            while !thread.is_finished() {
                while self.events.try_recv().is_ok() {}
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = thread.join();
        }
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Long: the thread's life: probe, then poll and translate until stopped.
fn follow(
    run_id: RunId,
    dir: &Path,
    out: &Path,
    settings: WatchSettings,
    device: Device,
    send: impl Fn(Event),
    stop: &AtomicBool,
) {
    let images: Vec<image::RgbImage> = crate::data::sample_photos()
        .into_iter()
        .map(|(_, image)| image)
        .collect();
    let probe = ProbeBatch::from_images(&images, &settings.augment, settings.seed);
    let mut watcher = Watcher::new(dir, out, settings, probe, device);
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
                    embed_dim,
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
                            ln_k: row.ln_k,
                            embed_dim,
                        });
                    }
                    tracing::info!("watch: {} evaluated in {secs:.1} s", file.display());
                    send(Event::Metrics {
                        run_id,
                        metrics: row,
                    });
                }
                WatchEvent::Skipped(files) => send(Event::Warning(format!(
                    "watch: skipped {} checkpoint(s) a newer one replaced",
                    files.len()
                ))),
                WatchEvent::Warning(message) => send(Event::Warning(format!("watch: {message}"))),
                WatchEvent::Log(_) => {}
            }
        }
        let until = Instant::now() + WATCH_POLL;
        while Instant::now() < until && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    send(Event::Status {
        run_id: Some(run_id),
        status: WorkerStatus::Finished,
    });
}
