//! Work the UI thread must not wait for: file dialogs (a modal dialog would freeze the frame
//! loop and the plots with it), figure rendering and listing runs on disk. Each job runs on
//! its own short-lived thread and hands back a [`Done`], which `logic` applies once per frame.

use crossbeam_channel::{unbounded, Receiver, Sender};
use std::path::PathBuf;

/// What a finished job reports.
#[derive(Debug)]
pub enum Done {
    /// A file was written.
    Saved(PathBuf),
    /// The user picked a run directory to continue.
    ResumeRun(PathBuf),
    /// The user picked weights to load into the attention view.
    OpenWeights(PathBuf),
    /// The user picked images to follow.
    OpenImages(Vec<PathBuf>),
    /// Images decoded off the UI thread: each picked or dropped file, or why it is not one.
    ImagesDecoded(Vec<(PathBuf, Result<image::RgbImage, String>)>),
    /// The user picked where to save the attention view (`grid`: the head grid).
    ExportAttention {
        path: PathBuf,
        grid: bool,
    },
    /// Run directories under the runs folder (newest first) and whether each has a checkpoint.
    RunsListed(Vec<DiskRun>),
    /// The user picked a directory to continue saving the current run in.
    SaveRunTo(PathBuf),
    /// The user picked where to save the attention time-lapse GIF (`grid`: of the head grid).
    ExportTimelapse {
        path: PathBuf,
        grid: bool,
    },
    /// The user picked a run folder another process writes, to follow.
    WatchFolder(PathBuf),
    /// The user closed a dialog without choosing.
    Cancelled,
    Failed(String),
}

/// The jobs in flight and their results.
pub struct Background {
    sender: Sender<Done>,
    receiver: Receiver<Done>,
    in_flight: usize,
    /// Wakes the UI when a job ends (the frame loop may be idle).
    waker: std::sync::Arc<dyn Fn() + Send + Sync>,
}

impl Background {
    pub fn new(waker: std::sync::Arc<dyn Fn() + Send + Sync>) -> Self {
        // Unbounded: at most a handful of jobs exist, each sends once.
        let (sender, receiver) = unbounded();
        Self {
            sender,
            receiver,
            in_flight: 0,
            waker,
        }
    }

    /// Runs `job` on its own thread.
    pub fn spawn(&mut self, name: &str, job: impl FnOnce() -> Done + Send + 'static) {
        let sender = self.sender.clone();
        let waker = self.waker.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("dinoscope-{name}"))
            .spawn(move || {
                let _ = sender.send(job());
                waker();
            });
        match spawned {
            Ok(_) => self.in_flight += 1,
            Err(err) => {
                let _ = self
                    .sender
                    .send(Done::Failed(format!("cannot start {name}: {err}")));
            }
        }
    }

    /// Results of the jobs that ended since the last call.
    pub fn finished(&mut self) -> Vec<Done> {
        let done: Vec<Done> = self.receiver.try_iter().collect();
        self.in_flight = self.in_flight.saturating_sub(done.len());
        done
    }

    /// Whether a job is still running (e.g. a dialog is open).
    pub fn busy(&self) -> bool {
        self.in_flight > 0
    }
}

/// A save dialog, blocking its own thread only.
pub fn pick_save_path(file_name: &str, filter: &str, extensions: &[&str]) -> Option<PathBuf> {
    rfd::FileDialog::new()
        .set_file_name(file_name)
        .add_filter(filter, extensions)
        .save_file()
}

/// A run directory of the runs folder, as the list shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct DiskRun {
    pub dir: PathBuf,
    /// Whether it has a checkpoint to continue from.
    pub resumable: bool,
    /// Its best step without labels (highest effective rank), when it has readings.
    pub best: Option<crate::store::run::BestRank>,
}

/// Runs under `root` with whether each can be resumed and its best step; the disk is read on
/// the job's thread.
pub fn list_runs(root: PathBuf) -> Done {
    let runs = crate::store::run::list_run_dirs(&root)
        .into_iter()
        .take(30)
        .map(|dir| DiskRun {
            resumable: !crate::store::checkpoint::list_checkpoints(&dir).is_empty(),
            best: crate::store::run::BestRank::of_run(&dir),
            dir,
        })
        .collect();
    Done::RunsListed(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_reports_back_once() {
        let mut background = Background::new(std::sync::Arc::new(|| {}));
        background.spawn("test", || Done::Saved(PathBuf::from("x.svg")));
        assert!(background.busy());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut done = Vec::new();
        while done.is_empty() && std::time::Instant::now() < deadline {
            done = background.finished();
        }
        assert!(matches!(done.as_slice(), [Done::Saved(p)] if p.ends_with("x.svg")));
        assert!(!background.busy());
    }
}
