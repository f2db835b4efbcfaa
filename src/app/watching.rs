//! Watched runs in the app: "Watch run folder..." follows an official run folder (or any
//! folder `dinoscope watch` reads) on its own thread; its checkpoints arrive as the rows of one
//! more run, plotted and diagnosed like the others.

use super::background::Done;
use super::state::Level;
use super::DinoscopeApp;
use crate::store::official_run::is_official_run;
use crate::train::watch::WatchOverrides;
use crate::worker::follow::is_dinoscope_run;
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
        let given = WatchOverrides {
            heads: self.attention.heads_override,
            ..WatchOverrides::default()
        };
        self.watch_folder_with(dir, given);
    }

    /// As [`Self::watch_folder`] with settings the user gives (temperatures, crop sizes);
    /// the rest come from the run's `args`.
    pub fn watch_folder_with(&mut self, dir: PathBuf, given: WatchOverrides) {
        let dinoscope_run = is_dinoscope_run(&dir);
        if !dinoscope_run && !is_official_run(&dir) {
            self.state.message(
                Level::Error,
                format!(
                    "{} is not a run folder: it has no log.txt and no checkpoint*.pth (pick main_dino.py's --output_dir), and no config.toml (a dinoscope run)",
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
        let name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        // A dinoscope run is read where it is; an official run's results go beside it.
        let (out, label) = if dinoscope_run {
            (dir.clone(), format!("follow: {name}"))
        } else {
            (
                dir.with_file_name(format!("{name}.dinoscope")),
                format!("watch: {name}"),
            )
        };
        let run_id = self
            .state
            .add_watched_run(label, out.clone(), !dinoscope_run);
        let ctx_waker = self.waker.clone();
        match WatchHandle::spawn(
            run_id,
            &dir,
            &out,
            given,
            self.attention.followed(),
            self.inference_device.clone(),
            ctx_waker,
        ) {
            Ok(handle) => self.watches.push(handle),
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
    /// run is, so a run training here keeps the chip. `per_epoch`: its rows are checkpoints'
    /// epochs (an official run), not steps (a followed dinoscope run).
    pub fn add_watched_run(
        &mut self,
        label: String,
        dir: PathBuf,
        per_epoch: bool,
    ) -> crate::worker::RunId {
        let id = self.next_run_id;
        self.next_run_id += 1;
        let mut run = super::state::RunRecord::new(id, label, Some(dir), self.view);
        run.pinned = true;
        run.set_watched(per_epoch);
        self.runs.push(run);
        if self.current.is_none() {
            self.current = Some(id);
        }
        id
    }
}
