//! Runs on disk (listed, opened as overlays, resumed) and exporting figures and CSV.

use super::background::{list_runs, pick_save_path, Done};
use super::state::Level;
use super::{DinoscopeApp, UiCommand};
use crate::worker::{Command, WorkerStatus};
use std::path::PathBuf;

impl DinoscopeApp {
    /// Fig. 7 of the visible runs that have a directory, to a file the user picks. The
    /// dialog, reading the runs and rendering all happen on a background thread.
    pub(super) fn export_figure(&mut self) {
        use crate::store::figure::{render_figure, FigureKind, PlotRun};
        let dirs: Vec<PathBuf> = self
            .state
            .runs
            .iter()
            .filter(|r| r.visible)
            .filter_map(|r| r.dir.clone())
            .collect();
        if dirs.is_empty() {
            self.state.message(
                Level::Warning,
                "no shown run has saved metrics yet (runs are saved under the runs folder)",
            );
            return;
        }
        self.background.spawn("export-figure", move || {
            let runs: Vec<PlotRun> = dirs
                .iter()
                .filter_map(|dir| PlotRun::read(dir).ok())
                .collect();
            if runs.is_empty() {
                return Done::Failed(
                    "no shown run has saved metrics yet (runs are saved under the runs folder)"
                        .into(),
                );
            }
            let Some(path) = pick_save_path("fig7-collapse.svg", "SVG or PNG", &["svg", "png"])
            else {
                return Done::Cancelled;
            };
            match render_figure(&runs, FigureKind::Collapse, &path, (1600, 600)) {
                Ok(()) => Done::Saved(path),
                Err(err) => Done::Failed(err.to_string()),
            }
        });
    }

    /// The current run's shown (smoothed) curves as CSV.
    pub(super) fn export_csv(&mut self) {
        use super::state::Quantity;
        let Some(run) = self.state.current_run() else {
            self.state
                .message(Level::Warning, "no current run to export");
            return;
        };
        let columns: Vec<(String, Vec<(f64, f64)>)> = Quantity::ALL
            .iter()
            .filter_map(|q| {
                let series = run.series(*q)?;
                Some((
                    q.name().to_string(),
                    series.smoothed().iter().map(|p| (p.x, p.y)).collect(),
                ))
            })
            .collect();
        self.background.spawn("export-csv", move || {
            let Some(path) = pick_save_path("curves.csv", "CSV", &["csv"]) else {
                return Done::Cancelled;
            };
            let borrowed: Vec<(&str, &[(f64, f64)])> = columns
                .iter()
                .map(|(name, points)| (name.as_str(), points.as_slice()))
                .collect();
            match crate::store::figure::write_series_csv(&path, &borrowed) {
                Ok(()) => Done::Saved(path),
                Err(err) => Done::Failed(err.to_string()),
            }
        });
    }

    /// Continues a run from its newest checkpoint (or the checkpoint `path` names).
    pub fn resume_run(&mut self, path: PathBuf) {
        self.pressed_start();
        let label = format!(
            "run-{} · resumed {}",
            self.state.next_run_id,
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        let run_id = self.state.begin_run(label, Some(path.clone()));
        self.state.worker_status = WorkerStatus::Starting;
        self.send(Command::ResumeFrom {
            run_id,
            path,
            paused: false,
        });
    }

    /// Lists the runs folder again, on a background thread (at launch, after a checkpoint
    /// or a run ends, and on "rescan"); the panel draws the last listing.
    pub(super) fn rescan_runs(&mut self) {
        if let Some(root) = self.options.runs_root.clone() {
            self.disk_runs_stale = false;
            self.background.spawn("list-runs", move || list_runs(root));
        }
    }

    /// Run directories under the runs folder; "open" overlays one on the plots.
    pub(super) fn runs_on_disk_ui(&mut self, ui: &mut egui::Ui, root: &std::path::Path) {
        if self.disk_runs_stale {
            self.rescan_runs();
        }
        ui.horizontal(|ui| {
            if self.disk_runs.is_empty() {
                ui.small(format!("none in {}", root.display()));
            }
            if ui
                .small_button("rescan")
                .on_hover_text(
                    "List the runs folder again (it is also listed after each checkpoint).",
                )
                .clicked()
            {
                self.commands.push(UiCommand::RescanRuns);
            }
        });
        let open: Vec<PathBuf> = self
            .state
            .runs
            .iter()
            .filter_map(|r| r.dir.clone())
            .collect();
        for run in &self.disk_runs {
            let (dir, resumable) = (&run.dir, &run.resumable);
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            ui.horizontal(|ui| {
                let shown = open.contains(dir);
                if ui
                    .add_enabled(!shown, egui::Button::new("open").small())
                    .on_hover_text("Overlay this run's curves (and k-NN) on the plots.")
                    .clicked()
                {
                    self.commands.push(UiCommand::OpenRun(dir.clone()));
                }
                if *resumable
                    && ui
                        .small_button("resume")
                        .on_hover_text("Continue this run from its newest checkpoint.")
                        .clicked()
                {
                    self.commands.push(UiCommand::ResumeRun(dir.clone()));
                }
                ui.small(name);
                if let Some(best) = run.best {
                    ui.small(format!("· best step {}", best.step)).on_hover_text(format!(
                        "Highest effective rank ({:.1}) at step {}: the checkpoint to keep when there are no labels (RankMe).",
                        best.effective_rank, best.step
                    ));
                }
            });
        }
    }

    /// Overlays a run read from disk on the plots.
    pub(super) fn open_run(&mut self, dir: &std::path::Path) {
        match self.state.open_run_from_disk(dir) {
            Ok(_) => self
                .state
                .message(Level::Info, format!("opened {}", dir.display())),
            Err(err) => self.state.message(Level::Error, err),
        }
    }
}
