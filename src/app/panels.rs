//! The window's panels and their places: the top bar, the status line, the controls and runs
//! on the left, the explanation on the right, and the central tabs.

use super::command::{AppContext, CentralTab, UiCommand};
use super::{attention_view, controls, curves, runs, scale, status, study_view, top_bar};

/// Every panel of the window, each owning its own state.
pub struct Panels {
    pub top_bar: top_bar::TopBar,
    pub controls: controls::ControlsPanel,
    pub runs: runs::RunsPanel,
    pub curves: curves::CurvesPanel,
    pub attention: attention_view::AttentionView,
    /// The ablation study's dialog and comparison tab.
    pub study: study_view::StudyView,
    /// "Train this at scale...": the official job for the current settings.
    pub scale: scale::ScaleDialog,
    /// What the central area shows.
    pub central_tab: CentralTab,
}

impl Panels {
    pub fn new() -> Self {
        Self {
            top_bar: top_bar::TopBar,
            controls: controls::ControlsPanel,
            runs: runs::RunsPanel::new(),
            curves: curves::CurvesPanel,
            attention: attention_view::AttentionView::new(),
            study: study_view::StudyView::default(),
            scale: scale::ScaleDialog::default(),
            central_tab: CentralTab::Curves,
        }
    }

    /// Long: the window's panels in screen order.
    pub fn ui(&mut self, ui: &mut egui::Ui, ctx: &AppContext<'_>) {
        egui::Panel::top("top_bar").show(ui, |ui| self.top_bar.ui(ui, ctx));
        if self.study.dialog_open {
            if let Some(command) = self.study.dialog_ui(ui.ctx()) {
                ctx.send(command);
            }
        }
        if self.scale.open {
            self.scale.dialog_ui(ui.ctx());
        }
        egui::Panel::bottom("status_line").show(ui, |ui| status::status_line_ui(ui, ctx));
        egui::Panel::left("controls")
            .resizable(true)
            .default_size(230.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| {
                    self.controls.ui(ui, ctx);
                    self.runs.ui(ui, ctx);
                });
            });
        // The attention view needs the width; the explanations are about the curves.
        if ctx.prefs.show_explanation && self.central_tab == CentralTab::Curves {
            egui::Panel::right("explanation")
                .resizable(true)
                .default_size(380.0)
                .show(ui, |ui| {
                    egui::ScrollArea::vertical().show(ui, |ui| {
                        self.attention.compact_ui(ui, ctx);
                        ui.separator();
                        status::explanation_ui(ui, ctx);
                    });
                });
        }
        egui::CentralPanel::default().show(ui, |ui| {
            ui.horizontal(|ui| {
                let tab = &mut self.central_tab;
                ui.selectable_value(tab, CentralTab::Curves, "Training curves");
                ui.selectable_value(tab, CentralTab::Attention, "Attention");
                if ctx.state.study.is_some() {
                    ui.selectable_value(tab, CentralTab::Study, "Ablation study");
                }
                ui.separator();
                if ui
                    .small_button("Ablation study...")
                    .on_hover_text("The paper's ablations side by side: full DINO, no centering, no sharpening, no momentum teacher, no multi-crop (and your own variants), trained together and compared.")
                    .clicked()
                {
                    ctx.send(UiCommand::OpenStudyDialog);
                }
            });
            match self.central_tab {
                CentralTab::Study => {
                    egui::ScrollArea::vertical()
                        .id_salt("study_tab")
                        .show(ui, |ui| self.study.comparison_ui(ui, ctx.state));
                }
                CentralTab::Attention => {
                    egui::ScrollArea::vertical()
                        .id_salt("attention_tab")
                        .show(ui, |ui| self.attention.full_ui(ui, ctx));
                }
                CentralTab::Curves => {
                    egui::ScrollArea::vertical().show(ui, |ui| self.curves.ui(ui, ctx));
                }
            }
        });
    }
}

impl Default for Panels {
    fn default() -> Self {
        Self::new()
    }
}
