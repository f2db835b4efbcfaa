//! The top bar: run buttons, preset, device, progress and the collapse chip.

use super::collapse::{rgb, CollapseState};
use super::{DinoscopeApp, UiCommand};
use crate::config::PRESETS;
use crate::worker::{Command, WorkerStatus};

impl DinoscopeApp {
    /// A run is being started: its first point is timed from now.
    pub(super) fn pressed_start(&mut self) {
        self.start_pressed = Some(std::time::Instant::now());
        self.first_point_secs = None;
    }

    /// Starts a new run from the preset and the current controls.
    pub fn start(&mut self, paused: bool) {
        self.pressed_start();
        let mut config = self.base_config.clone();
        self.state.controls.fold_into(&mut config);
        self.attention.training_depth = config.vit_arch().depth;
        let label = format!("run-{} · {}", self.state.next_run_id, self.prefs.preset);
        let dir = self
            .options
            .runs_root
            .as_ref()
            .map(|root| crate::store::run::new_run_dir(root, &self.prefs.preset));
        let run_id = self.state.begin_run(label, dir.clone());
        self.state.worker_status = WorkerStatus::Starting;
        self.send(Command::Start {
            run_id,
            config: Box::new(config),
            run_dir: dir,
            total_steps: None,
            paused,
        });
    }

    /// Reset: stop the current run and forget every run that is not pinned.
    pub fn reset(&mut self) {
        if self.is_active() {
            self.send(Command::Stop);
        }
        self.state.reset();
        self.state.worker_status = WorkerStatus::Idle;
        self.first_point_secs = None;
    }

    /// Long: the top bar's widgets in screen order.
    pub(super) fn top_bar_ui(&mut self, ui: &mut egui::Ui) {
        ui.horizontal_wrapped(|ui| {
            let status = self.state.worker_status;
            let active = self.is_active();
            let running = active && status == WorkerStatus::Running;
            let paused = active && status == WorkerStatus::Paused;
            if ui
                .add_enabled(!running, egui::Button::new(if paused { "Resume" } else { "Start" }))
                .on_hover_text("Start a new run with the preset and the controls on the left (or resume a paused one).")
                .clicked()
            {
                self.queue(if paused {
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
                self.queue(UiCommand::Pause);
            }
            if ui
                .add_enabled(paused || !active, egui::Button::new("Step"))
                .on_hover_text("Run exactly one training step, then stay paused.")
                .clicked()
            {
                self.queue(UiCommand::Step);
            }
            if ui
                .add_enabled(active, egui::Button::new("Stop"))
                .on_hover_text("End this run; its curves stay on screen.")
                .clicked()
            {
                self.queue(UiCommand::Stop);
            }
            if ui
                .button("Reset")
                .on_hover_text("Stop and clear the current and earlier runs; pinned runs stay.")
                .clicked()
            {
                self.queue(UiCommand::Reset);
            }
            ui.separator();
            if ui
                .add_enabled(active, egui::Button::new("Save checkpoint"))
                .on_hover_text("Write student, teacher, optimiser state and RNG into the run directory (checkpoint-<step>/); Stop and closing the window also save one.")
                .clicked()
            {
                self.queue(UiCommand::SaveCheckpoint);
            }
            if ui
                .button("Resume run...")
                .on_hover_text("Continue a run from its newest checkpoint: pick its run directory.")
                .clicked()
            {
                self.queue(UiCommand::PickRunToResume);
            }
            ui.separator();
            let mut selected = self.prefs.preset.clone();
            egui::ComboBox::from_label("preset")
                .selected_text(selected.clone())
                .show_ui(ui, |ui| {
                    for (name, _) in PRESETS {
                        ui.selectable_value(&mut selected, name.to_string(), name);
                    }
                });
            if selected != self.prefs.preset {
                self.queue(UiCommand::SelectPreset(selected));
            }
            ui.separator();
            if let Some(run) = self.state.current_run() {
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
                    if let Some(eta) = run.eta_secs(self.base_config.optim.batch_size_per_gpu) {
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
