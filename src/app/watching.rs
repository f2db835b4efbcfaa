//! Watched runs in the app: "Watch run folder..." follows an official run folder (or any
//! folder `dinoscope watch` reads) on its own thread; its checkpoints arrive as the rows of one
//! more run, plotted and diagnosed like the others.

use super::attention_view::AttentionView;
use super::state::{AppState, Level};
use super::threads::Threads;
use crate::store::official_run::is_official_run;
use crate::train::watch::WatchOverrides;
use crate::worker::follow::is_dinoscope_run;
use crate::worker::watch::WatchHandle;
use std::path::PathBuf;

/// The dialog behind "Watch run folder...".
pub fn pick_watch_folder() -> Option<super::command::UiCommand> {
    rfd::FileDialog::new()
        .set_title("Watch a run folder (main_dino.py's --output_dir)")
        .pick_folder()
        .map(super::command::UiCommand::WatchFolder)
}

impl Threads {
    /// Follows `dir` on a thread of its own as one more (pinned) run: an official run folder
    /// evaluated into `<dir>.dinoscope`, or a dinoscope run folder another process writes.
    pub fn watch_folder(
        &mut self,
        dir: PathBuf,
        given: WatchOverrides,
        view: &AttentionView,
        state: &mut AppState,
    ) {
        let dinoscope_run = is_dinoscope_run(&dir);
        if !dinoscope_run && !is_official_run(&dir) {
            state.message(
                Level::Error,
                format!(
                    "{} is not a run folder: it has no log.txt and no checkpoint*.pth (pick main_dino.py's --output_dir), and no config.toml (a dinoscope run)",
                    dir.display()
                ),
            );
            return;
        }
        if self.watches.iter().any(|w| w.dir == dir) {
            state.message(Level::Info, format!("already watching {}", dir.display()));
            return;
        }
        let name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let (out, label) = if dinoscope_run {
            (dir.clone(), format!("follow: {name}"))
        } else {
            (
                dir.with_file_name(format!("{name}.dinoscope")),
                format!("watch: {name}"),
            )
        };
        let run_id = state.add_watched_run(label, out.clone(), !dinoscope_run);
        match WatchHandle::spawn(
            run_id,
            &dir,
            &out,
            given,
            view.followed(),
            self.inference_device.clone(),
            self.waker.clone(),
        ) {
            Ok(handle) => self.watches.push(handle),
            Err(err) => state.message(Level::Error, format!("cannot start watching: {err}")),
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
        run.external = true;
        self.runs.push(run);
        if self.current.is_none() {
            self.current = Some(id);
        }
        id
    }
}
