//! The central "Training curves" tab: the loss decomposition with its exports, the teacher's
//! representation, the held-out evaluation, the schedules and the throughput.

use super::command::{AppContext, UiCommand};
use super::{plots, representation};

/// No state of its own: which plots show is a preference.
#[derive(Default)]
pub struct CurvesPanel;

impl CurvesPanel {
    /// Long: the tab's plots in screen order.
    pub fn ui(&mut self, ui: &mut egui::Ui, ctx: &AppContext<'_>) {
        let state = ctx.state;
        // Wrapped: a row wider than the tab would widen the scroll area under the right panel.
        ui.horizontal_wrapped(|ui| {
            ui.heading("Loss = h(Pt) + KL(Pt || Ps)");
            if ui
                .small_button("Export figure...")
                .on_hover_text("The paper's Fig. 7 pair (h(Pt) and KL vs step) of every shown run with a run directory, as PNG or SVG.")
                .clicked()
            {
                ctx.send(UiCommand::ExportFigure);
            }
            if ui
                .small_button("Export CSV...")
                .on_hover_text("The current run's curves as shown (smoothed), one column per quantity, on the loss curve's steps.")
                .clicked()
            {
                ctx.send(UiCommand::ExportCsv);
            }
            if ui
                .small_button("Train this at scale...")
                .on_hover_text("The torchrun command that trains these settings on the official code (main_dino.py) on GPUs, what it cannot express, and the dinoscope watch line that follows the job.")
                .clicked()
            {
                ctx.send(UiCommand::OpenScaleDialog);
            }
        });
        let height = (ui.available_height() * 0.45).max(220.0);
        plots::decomposition_plot_ui(ui, state, height);
        if let Some(summary) = state.current_run().and_then(representation::summary_text) {
            ui.heading("Representation (teacher)")
                .on_hover_text(representation::ABOUT);
            // Its own line: a long label in a row would widen the scroll area.
            ui.label(summary);
            representation::representation_plots_ui(ui, state, 130.0);
        }
        let evaluated = state.current_run().is_some_and(|run| !run.evals.is_empty());
        if evaluated {
            ui.heading("What the features learned (held-out data)")
                .on_hover_text("Weighted k-NN (k = 20, T = 0.07) on L2-normalised CLS features of the teacher and of the student (the paper's Fig. 6: the teacher leads), and the Jaccard of the 60 %-mass attention masks with the shapes' true masks. Dashed: the same network at random init. Evaluated every epoch.");
            plots::features_plot_ui(ui, state, 160.0);
        }
        if ctx.prefs.show_schedules {
            ui.heading("Schedules");
            plots::schedules_plot_ui(ui, state, 110.0);
        }
        if ctx.prefs.show_throughput {
            ui.heading("Throughput");
            plots::throughput_plot_ui(ui, state, 110.0);
        }
    }
}
