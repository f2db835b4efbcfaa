//! Watched runs in the app: "Watch run folder..." follows an official run folder (or any
//! folder `dinoscope watch` reads) on its own thread; its checkpoints arrive as the rows of one
//! more run, plotted and diagnosed like the others.

use super::background::Done;
use super::state::Level;
use super::DinoscopeApp;
use crate::store::official_run::is_official_run;
use crate::train::watch::WatchSettings;
use crate::worker::watch::WatchHandle;
use std::path::PathBuf;
use std::time::Instant;

impl DinoscopeApp {
    /// Asks for the folder on a background thread (the answer comes back as `Done`).
    pub(super) fn pick_watch_folder(&mut self) {
        self.background.spawn("watch-dialog", || {
            rfd::FileDialog::new()
                .set_title("Watch a run folder (main_dino.py's --output_dir)")
                .pick_folder()
                .map_or(Done::Cancelled, Done::WatchFolder)
        });
    }

    /// Follows `dir`: one more run in the list (current when nothing else is), its results
    /// written beside it in `DIR.dinoscope`.
    pub fn watch_folder(&mut self, dir: PathBuf) {
        // The heads box of the attention view serves widths without an official head count.
        let settings = WatchSettings {
            heads: self.attention.heads_override,
            ..WatchSettings::default()
        };
        self.watch_folder_with(dir, settings);
    }

    /// As [`Self::watch_folder`] with the run's own settings (temperatures, crop sizes).
    pub fn watch_folder_with(&mut self, dir: PathBuf, settings: WatchSettings) {
        if !is_official_run(&dir) {
            self.state.message(
                Level::Error,
                format!(
                    "{} is not a run folder: it has no log.txt and no checkpoint*.pth (pick main_dino.py's --output_dir)",
                    dir.display()
                ),
            );
            return;
        }
        if self.watches.iter().any(|w| w.dir == dir) {
            self.state
                .message(Level::Info, format!("already watching {}", dir.display()));
            return;
        }
        let mut name = dir.file_name().unwrap_or_default().to_os_string();
        name.push(".dinoscope");
        let out = dir.with_file_name(name);
        let label = format!(
            "watch: {}",
            dir.file_name().unwrap_or_default().to_string_lossy()
        );
        let run_id = self.state.add_watched_run(label, out.clone());
        let ctx_waker = self.waker.clone();
        match WatchHandle::spawn(
            run_id,
            &dir,
            &out,
            settings.clone(),
            self.inference_device.clone(),
            ctx_waker,
        ) {
            Ok(handle) => {
                self.watches.push(handle);
                self.state.message(
                    Level::Info,
                    format!(
                        "watching {}: each new checkpoint on the bundled photos, teacher temperature {}, crops {}/{} px, {} locals (`dinoscope watch` takes the run's own)",
                        dir.display(),
                        describe_temp(&settings),
                        settings.augment.global_crop_size_px,
                        settings.augment.local_crop_size_px,
                        settings.augment.local_crops_number
                    ),
                );
            }
            Err(err) => self
                .state
                .message(Level::Error, format!("cannot start watching: {err}")),
        }
    }

    /// Events of the watcher threads, within what is left of the frame's budget.
    pub(super) fn drain_watches(&mut self, deadline: Instant) {
        for watch in &self.watches {
            while Instant::now() < deadline {
                match watch.try_recv() {
                    Some(event) => self.state.apply(event),
                    None => break,
                }
            }
        }
    }
}

impl super::state::AppState {
    /// Registers a watched run: pinned (Reset keeps following it), current only when no other
    /// run is, so a run training here keeps the chip.
    pub fn add_watched_run(&mut self, label: String, dir: PathBuf) -> crate::worker::RunId {
        let id = self.next_run_id;
        self.next_run_id += 1;
        let mut run = super::state::RunRecord::new(id, label, Some(dir), self.view);
        run.pinned = true;
        run.watched = true;
        self.runs.push(run);
        if self.current.is_none() {
            self.current = Some(id);
        }
        id
    }
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
