//! "Train this at scale...": the official `torchrun ... main_dino.py` job for the current
//! settings (the preset with the controls folded in), the same text as `dinoscope
//! official-command`, with a copy button.

use crate::config::official::{LaunchOptions, OfficialCommand};
use crate::config::Config;

/// The dialog's state: the config it describes and the launch options the user picks.
#[derive(Default)]
pub struct ScaleDialog {
    pub open: bool,
    config: Option<Config>,
    label: String,
    options: LaunchOptions,
    text: String,
}

impl ScaleDialog {
    /// Opens the dialog on this config.
    pub fn show_for(&mut self, config: Config, label: String) {
        self.config = Some(config);
        self.label = label;
        self.open = true;
        self.refresh();
    }

    /// The text shown and copied.
    pub fn text(&self) -> &str {
        &self.text
    }

    fn refresh(&mut self) {
        if let Some(config) = &self.config {
            self.text =
                OfficialCommand::from_config(config, &[], &self.options).render(&self.label);
        }
    }

    pub fn dialog_ui(&mut self, ctx: &egui::Context) {
        let mut open = self.open;
        let mut changed = false;
        egui::Window::new("Train this at scale")
            .open(&mut open)
            .collapsible(false)
            .default_width(640.0)
            .default_height(460.0)
            .show(ctx, |ui| {
                ui.label("The same run on the official code (facebookresearch/dino main_dino.py): run this from a clone of its repository, then follow the job with the last line. Settings with no official flag are listed with what to change.");
                ui.horizontal(|ui| {
                    ui.label("GPUs");
                    changed |= ui
                        .add(egui::DragValue::new(&mut self.options.gpus).range(1..=64))
                        .changed();
                    changed |= ui
                        .checkbox(&mut self.options.keep_global_batch, "keep the global batch")
                        .on_hover_text("Split this run's batch over the GPUs (same peak lr) instead of keeping the per-GPU batch (main_dino.py's habit: the peak lr grows with the GPUs).")
                        .changed();
                    ui.label("output_dir");
                    changed |= ui
                        .text_edit_singleline(&mut self.options.output_dir)
                        .changed();
                    if ui.button("Copy").clicked() {
                        ui.ctx().copy_text(self.text.clone());
                    }
                });
                egui::ScrollArea::both().show(ui, |ui| {
                    let mut shown = self.text.as_str();
                    ui.add(
                        egui::TextEdit::multiline(&mut shown)
                            .code_editor()
                            .desired_width(f32::INFINITY),
                    );
                });
            });
        if changed {
            self.refresh();
        }
        self.open = open;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dialog_shows_what_the_cli_prints() {
        let config = Config::preset("tiny").unwrap();
        let mut dialog = ScaleDialog::default();
        dialog.show_for(config.clone(), "tiny".into());
        let cli =
            OfficialCommand::from_config(&config, &[], &LaunchOptions::default()).render("tiny");
        assert_eq!(dialog.text(), cli);
        assert!(dialog.open);
    }
}
