//! The left panel's runs: the runs of this session (shown, pinned), "Watch run folder...",
//! and the runs on disk (listed by a job, opened as overlays, resumed); and the jobs behind
//! "Export figure..." and "Export CSV...".

use super::command::{AppContext, UiCommand};
use super::jobs::{pick_save_path, saved, DiskRun};
use super::state::{AppState, Level};
use super::top_bar::status_text;
use crate::store::quantity::Quantity;
use std::path::PathBuf;

/// The runs list and the runs on disk, as last listed.
#[derive(Default)]
pub struct RunsPanel {
    /// Run directories under the runs folder (newest first).
    pub disk_runs: Vec<DiskRun>,
    /// A listing is due (at launch, after a checkpoint, a run's end or "rescan").
    pub disk_runs_stale: bool,
}

impl RunsPanel {
    pub fn new() -> Self {
        Self {
            disk_runs: Vec::new(),
            disk_runs_stale: true,
        }
    }

    /// Long: the session's runs, the watch button and the runs on disk.
    pub fn ui(&mut self, ui: &mut egui::Ui, ctx: &AppContext<'_>) {
        let current = ctx.state.current;
        for run in ctx.state.runs.iter().rev() {
            ui.horizontal(|ui| {
                let mut visible = run.visible;
                if ui
                    .checkbox(&mut visible, "")
                    .on_hover_text("Show or hide this run on the plots.")
                    .changed()
                {
                    ctx.send(UiCommand::SetRunVisible {
                        run: run.id,
                        visible,
                    });
                }
                let pin = if run.pinned { "pinned" } else { "pin" };
                if ui
                    .selectable_label(run.pinned, pin)
                    .on_hover_text("Pinned runs survive Reset, to compare against new runs.")
                    .clicked()
                {
                    ctx.send(UiCommand::SetRunPinned {
                        run: run.id,
                        pinned: !run.pinned,
                    });
                }
                let live = if Some(run.id) == current {
                    " (current)"
                } else {
                    ""
                };
                // Truncated: a long folder name would widen the whole left panel.
                ui.add(egui::Label::new(format!("{}{live}", run.label)).truncate())
                    .on_hover_text(format!(
                        "{} steps · {}{}",
                        run.steps(),
                        status_text(run.status),
                        run.dir
                            .as_ref()
                            .map(|d| format!(" · {}", d.display()))
                            .unwrap_or_default()
                    ));
            });
        }
        if ctx.state.runs.is_empty() {
            ui.label("No runs yet: press Start.");
        }
        if ui
            .small_button("Watch run folder...")
            .on_hover_text("Follow a run another process trains (main_dino.py's --output_dir, on a cluster or in a terminal): each new checkpoint's loss, h(Pt), KL and h(mean Pt) on a fixed probe batch, plotted as one more run.")
            .clicked()
        {
            ctx.send(UiCommand::PickWatchFolder);
        }
        if let Some(root) = ctx.runs_root {
            ui.separator();
            egui::CollapsingHeader::new("Runs on disk")
                .id_salt("runs_on_disk")
                .show(ui, |ui| self.runs_on_disk_ui(ui, ctx, root));
        }
    }

    /// The runs folder's runs: open one as an overlay, or resume it from its checkpoint.
    fn runs_on_disk_ui(&mut self, ui: &mut egui::Ui, ctx: &AppContext<'_>, root: &std::path::Path) {
        if self.disk_runs_stale {
            self.disk_runs_stale = false;
            ctx.send(UiCommand::RescanRuns);
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
                ctx.send(UiCommand::RescanRuns);
            }
        });
        let open: Vec<&PathBuf> = ctx
            .state
            .runs
            .iter()
            .filter_map(|r| r.dir.as_ref())
            .collect();
        for run in &self.disk_runs {
            let name = run
                .dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            ui.horizontal(|ui| {
                let shown = open.contains(&&run.dir);
                if ui
                    .add_enabled(!shown, egui::Button::new("open").small())
                    .on_hover_text("Overlay this run's curves (and k-NN) on the plots.")
                    .clicked()
                {
                    ctx.send(UiCommand::OpenRun(run.dir.clone()));
                }
                if run.resumable
                    && ui
                        .small_button("resume")
                        .on_hover_text("Continue this run from its newest checkpoint.")
                        .clicked()
                {
                    ctx.send(UiCommand::ResumeRun(run.dir.clone()));
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
}

/// Fig. 7 of the visible runs that have a directory, to a file the user picks: the dialog,
/// reading the runs and rendering all happen in the job.
pub fn export_figure_job(state: &AppState) -> Result<impl FnOnce() -> Option<UiCommand>, String> {
    use crate::store::figure::{render_figure, FigureKind, PlotRun};
    const NONE_SAVED: &str =
        "no shown run has saved metrics yet (runs are saved under the runs folder)";
    let dirs: Vec<PathBuf> = state
        .runs
        .iter()
        .filter(|r| r.visible)
        .filter_map(|r| r.dir.clone())
        .collect();
    if dirs.is_empty() {
        return Err(NONE_SAVED.into());
    }
    Ok(move || {
        let runs: Vec<PlotRun> = dirs
            .iter()
            .filter_map(|dir| PlotRun::read(dir).ok())
            .collect();
        if runs.is_empty() {
            return Some(UiCommand::Message(Level::Error, NONE_SAVED.into()));
        }
        let path = pick_save_path("fig7-collapse.svg", "SVG or PNG", &["svg", "png"])?;
        let result = render_figure(&runs, FigureKind::Collapse, &path, (1600, 600));
        saved(result.map_err(|err| err.to_string()), &path)
    })
}

/// The current run's curves as shown (smoothed), one column per quantity on one x grid.
pub fn export_csv_job(state: &AppState) -> Result<impl FnOnce() -> Option<UiCommand>, String> {
    let run = state.current_run().ok_or("no current run to export")?;
    // The loss first: the densest curve gives the grid (`store::rows::write_series`).
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
    Ok(move || {
        let path = pick_save_path("curves.csv", "CSV", &["csv"])?;
        let borrowed: Vec<(&str, &[(f64, f64)])> = columns
            .iter()
            .map(|(name, points)| (name.as_str(), points.as_slice()))
            .collect();
        let result = crate::store::figure::write_series_csv(&path, &borrowed);
        saved(result.map_err(|err| err.to_string()), &path)
    })
}
