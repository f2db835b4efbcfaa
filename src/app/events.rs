//! What arrives from other threads each frame: the results of background jobs (dialogs,
//! exports, the runs listing) and the training worker's events, within the frame's budget.

use super::state::Level;
use super::{background, DinoscopeApp, EVENT_BUDGET};
use crate::worker::Command;
use std::time::Instant;

impl DinoscopeApp {
    /// Results of background jobs (dialogs, exports, the runs listing).
    pub(super) fn apply_background(&mut self) {
        use background::Done;
        for done in self.background.finished() {
            match done {
                Done::Saved(path) => self
                    .state
                    .message(Level::Info, format!("saved {}", path.display())),
                Done::ResumeRun(dir) => self.resume_run(dir),
                Done::SaveRunTo(dir) => self.send(Command::SaveRunTo(dir)),
                Done::WatchFolder(dir) => self.watch_folder(dir),
                Done::ExportTimelapse { path, grid } => {
                    match self.attention.export_timelapse(&self.state, &path, grid) {
                        Ok(frames) => self.state.message(
                            Level::Info,
                            format!("saved {} ({frames} frames)", path.display()),
                        ),
                        Err(err) => self.state.message(Level::Error, err),
                    }
                }
                Done::OpenWeights(path) => self.load_weights(path),
                Done::OpenImages(paths) => self.open_images(paths),
                Done::ImagesDecoded(decoded) => {
                    self.attention.add_decoded(decoded, &mut self.state)
                }
                Done::ExportAttention { path, grid } => {
                    match self.attention.export(&self.state, &path, grid) {
                        Ok(()) => self
                            .state
                            .message(Level::Info, format!("saved {}", path.display())),
                        Err(err) => self.state.message(Level::Error, err),
                    }
                }
                Done::RunsListed(runs) => self.disk_runs = runs,
                Done::Cancelled => {}
                Done::Failed(message) => self.state.message(Level::Error, message),
            }
        }
    }

    /// Applies pending worker events within the frame budget.
    pub fn drain_events(&mut self) {
        let Some(worker) = &self.worker else { return };
        let started = Instant::now();
        let mut events = Vec::new();
        while started.elapsed() < EVENT_BUDGET {
            match worker.try_recv() {
                Some(event) => events.push(event),
                None => break,
            }
        }
        for event in events {
            // A new checkpoint or a run's end changes what the runs folder holds.
            if matches!(
                event,
                crate::worker::Event::CheckpointSaved { .. } | crate::worker::Event::Status { .. }
            ) {
                self.disk_runs_stale = true;
            }
            self.state.apply(event);
        }
        if self.first_point_secs.is_none()
            && self.state.current_run().is_some_and(|run| run.steps() > 0)
        {
            let since = self.start_pressed.unwrap_or(self.launched_at);
            self.first_point_secs = Some(since.elapsed().as_secs_f64());
        }
    }
}
