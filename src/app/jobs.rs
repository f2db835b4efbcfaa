//! Work the UI thread must not wait for: file dialogs (a modal dialog would freeze the frame
//! loop and the plots with it), exports (figure, CSV, PNG, GIF: rendered and encoded here),
//! reading a run folder, decoding images and listing runs on disk. Each job runs on its own
//! short-lived thread and answers with a [`UiCommand`], applied with the clicks.

use super::command::{CommandSender, UiCommand};
use super::state::Level;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Starts jobs; each sends its answer (if any) as a [`UiCommand`] and wakes the UI.
pub struct JobRunner {
    commands: CommandSender,
    in_flight: Arc<AtomicUsize>,
    /// Wakes the UI when a job ends (the frame loop may be idle).
    waker: crate::worker::Waker,
}

impl JobRunner {
    pub fn new(commands: CommandSender, waker: crate::worker::Waker) -> Self {
        Self {
            commands,
            in_flight: Arc::new(AtomicUsize::new(0)),
            waker,
        }
    }

    /// Runs `job` on its own short-lived thread. Not joined: a file dialog cannot be
    /// cancelled from outside, and every job ends by itself.
    pub fn spawn(&self, name: &str, job: impl FnOnce() -> Option<UiCommand> + Send + 'static) {
        let commands = self.commands.clone();
        let waker = self.waker.clone();
        let in_flight = self.in_flight.clone();
        in_flight.fetch_add(1, Ordering::SeqCst);
        let spawned = std::thread::Builder::new()
            .name(format!("dinoscope-{name}"))
            .spawn(move || {
                if let Some(command) = job() {
                    commands.send(command);
                }
                in_flight.fetch_sub(1, Ordering::SeqCst);
                waker();
            });
        if let Err(err) = spawned {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            self.commands.send(UiCommand::Message(
                Level::Error,
                format!("cannot start {name}: {err}"),
            ));
        }
    }

    /// Whether a job is still running (e.g. a dialog is open).
    pub fn busy(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) > 0
    }
}

/// A job's outcome as the status line says it.
pub fn saved(result: Result<(), String>, path: &std::path::Path) -> Option<UiCommand> {
    Some(match result {
        Ok(()) => UiCommand::Message(Level::Info, format!("saved {}", path.display())),
        Err(err) => UiCommand::Message(Level::Error, err),
    })
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
pub fn list_runs(root: PathBuf) -> Option<UiCommand> {
    let runs = crate::store::run::list_run_dirs(&root)
        .into_iter()
        .take(30)
        .map(|dir| DiskRun {
            resumable: !crate::store::checkpoint::list_checkpoints(&dir).is_empty(),
            best: crate::store::run::BestRank::of_run(&dir),
            dir,
        })
        .collect();
    Some(UiCommand::RunsListed(runs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_answers_once_through_the_command_queue() {
        let queue = super::super::command::CommandQueue::new();
        let jobs = JobRunner::new(queue.sender().clone(), Arc::new(|| {}));
        jobs.spawn("test", || Some(UiCommand::ResumeRun(PathBuf::from("x"))));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut done = Vec::new();
        while (done.is_empty() || jobs.busy()) && std::time::Instant::now() < deadline {
            done.extend(queue.take());
        }
        assert!(matches!(done.as_slice(), [UiCommand::ResumeRun(p)] if p.ends_with("x")));
        assert!(!jobs.busy());
    }
}
