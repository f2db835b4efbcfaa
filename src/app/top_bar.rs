//! The top bar: run buttons, preset, device, progress and the collapse chip.

use super::collapse::{rgb, CollapseState};
use super::command::{AppContext, UiCommand};
use crate::config::PRESETS;
use crate::worker::WorkerStatus;

/// The top bar: run buttons, preset, device, progress and the collapse chip. No state of its
/// own: what it shows is the current run's.
#[derive(Default)]
pub struct TopBar;

impl TopBar {
    /// Long: the top bar's widgets in screen order.
    pub fn ui(&mut self, ui: &mut egui::Ui, ctx: &AppContext<'_>) {
        ui.horizontal_wrapped(|ui| {
            let status = ctx.state.worker_status;
            // A run trained elsewhere is not the worker's: these buttons act on the worker.
            let active = ctx.active && !ctx.current_is_external();
            let running = active && status == WorkerStatus::Running;
            let paused = active && status == WorkerStatus::Paused;
            if ui
                .add_enabled(!running, egui::Button::new(if paused { "Resume" } else { "Start" }))
                .on_hover_text("Start a new run with the preset and the controls on the left (or resume a paused one).")
                .clicked()
            {
                ctx.send(if paused {
                    UiCommand::Resume
                } else {
                    UiCommand::Start { paused: false }
                });
            }
            if ui
                .add_enabled(running, egui::Button::new("Pause"))
                .on_hover_text("Pause after the current step.")
                .clicked()
            {
                ctx.send(UiCommand::Pause);
            }
            if ui
                .add_enabled(paused || !active, egui::Button::new("Step"))
                .on_hover_text("Run exactly one training step, then stay paused.")
                .clicked()
            {
                ctx.send(UiCommand::Step);
            }
            if ui
                .add_enabled(active, egui::Button::new("Stop"))
                .on_hover_text("End this run; its curves stay on screen.")
                .clicked()
            {
                ctx.send(UiCommand::Stop);
            }
            if ui
                .button("Reset")
                .on_hover_text("Stop and clear the current and earlier runs; pinned runs stay.")
                .clicked()
            {
                ctx.send(UiCommand::Reset);
            }
            ui.separator();
            if ui
                .add_enabled(active, egui::Button::new("Save checkpoint"))
                .on_hover_text("Write student, teacher, optimiser state and RNG into the run directory (checkpoint-<step>/); Stop and closing the window also save one.")
                .clicked()
            {
                ctx.send(UiCommand::SaveCheckpoint);
            }
            if ui
                .button("Resume run...")
                .on_hover_text("Continue a run from its newest checkpoint: pick its run directory.")
                .clicked()
            {
                ctx.send(UiCommand::PickRunToResume);
            }
            ui.separator();
            let mut selected = ctx.prefs.preset.clone();
            egui::ComboBox::from_label("preset")
                .selected_text(selected.clone())
                .show_ui(ui, |ui| {
                    for (name, _) in PRESETS {
                        ui.selectable_value(&mut selected, name.to_string(), name);
                    }
                });
            if selected != ctx.prefs.preset {
                ctx.send(UiCommand::SelectPreset(selected));
            }
            ui.separator();
            if let Some(run) = ctx.state.current_run() {
                if !run.device.is_empty() {
                    ui.label(&run.device).on_hover_text(&run.dataset);
                }
                if let Some(last) = run.last.as_ref().filter(|_| run.watched) {
                    ui.separator();
                    ui.label(format!("watched · epoch {}", last.epoch));
                } else if let Some(last) = &run.last {
                    ui.separator();
                    ui.label(format!(
                        "step {} / {} · epoch {}",
                        last.step + 1,
                        run.total_steps,
                        last.epoch
                    ));
                    ui.separator();
                    ui.label(format!(
                        "{:.0} img/s",
                        run.images_per_sec_ema.unwrap_or(last.images_per_sec)
                    ));
                    if let Some(eta) = run.eta_secs(ctx.batch_size) {
                        ui.label(format!("ETA {}", format_duration(eta)));
                    }
                }
                ui.separator();
                let collapse = run.collapse_state();
                collapse_chip_ui(ui, collapse);
            } else {
                ui.label(status_text(status));
            }
        });
    }
}

pub(super) fn collapse_chip_ui(ui: &mut egui::Ui, collapse: CollapseState) {
    let [r, g, b] = rgb(collapse);
    egui::Frame::new()
        .fill(egui::Color32::from_rgb(r, g, b))
        .corner_radius(8.0)
        .inner_margin(egui::Margin::symmetric(8, 2))
        .show(ui, |ui| {
            ui.label(
                egui::RichText::new(collapse.label())
                    .color(egui::Color32::BLACK)
                    .strong(),
            );
        })
        .response
        .on_hover_text(collapse.explanation());
}

pub(super) fn status_text(status: WorkerStatus) -> &'static str {
    match status {
        WorkerStatus::Idle => "idle",
        WorkerStatus::Starting => "starting...",
        WorkerStatus::Running => "running",
        WorkerStatus::Paused => "paused",
        WorkerStatus::Finished => "finished",
        WorkerStatus::Failed => "failed",
    }
}

pub(super) fn format_duration(secs: f64) -> String {
    let secs = secs.max(0.0).round() as u64;
    if secs >= 3600 {
        format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
    } else {
        format!("{}:{:02}", secs / 60, secs % 60)
    }
}
