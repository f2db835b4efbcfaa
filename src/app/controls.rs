//! The left panel's live controls: one `LiveSettings`, its ranges from `config::live`.

use super::state::Level;
use super::top_bar::status_text;
use super::DinoscopeApp;
use crate::config::live::{
    LiveSettings, KOLEO_WEIGHT, LOCAL_CROPS, LR_SCALE, MOMENTUM_TEACHER, TEACHER_TEMP,
};
use crate::config::{CenteringMode, Config, Toggle};
use crate::worker::Command;

impl DinoscopeApp {
    /// A preset picked in the top bar: its controls now, its config at the next Start.
    pub(super) fn select_preset(&mut self, name: &str) {
        match Config::preset(name) {
            Ok(config) => {
                self.prefs.preset = name.to_string();
                self.state.controls = LiveSettings::from_config(&config);
                self.base_config = config;
                self.state.message(
                    Level::Info,
                    format!("preset {name} selected; it applies at the next Start"),
                );
            }
            Err(err) => self.state.message(Level::Error, err.to_string()),
        }
    }

    /// A control changed (by the user or a scripted toggle): the controls take the value as
    /// the trainer will (a constant teacher temperature also ends its warm-up) and the
    /// running job gets the toggle.
    pub(super) fn set_control(&mut self, controls: &mut LiveSettings, toggle: Toggle) {
        match controls.apply(&toggle) {
            Ok(()) => {
                self.state.controls = controls.clone();
                self.toggle(toggle);
            }
            Err(err) => self.state.message(Level::Error, err.to_string()),
        }
    }

    /// Sends a toggle to the running job (applied at its next step) and logs it.
    pub fn toggle(&mut self, toggle: Toggle) {
        if self.is_active() {
            self.state.sent_toggles.push(toggle.clone());
            self.send(Command::Set(toggle));
        }
    }

    /// Long: the left panel's widgets in screen order, each with its tooltip.
    pub(super) fn controls_ui(&mut self, ui: &mut egui::Ui) {
        ui.heading("Anti-collapse");
        let mut controls = self.state.controls.clone();
        let before = controls.centering;
        egui::ComboBox::from_label("centering")
            .selected_text(centering_text(controls.centering))
            .show_ui(ui, |ui| {
                for mode in CenteringMode::ALL {
                    ui.selectable_value(&mut controls.centering, mode, centering_text(mode))
                        .on_hover_text(centering_tooltip(mode));
                }
            })
            .response
            .on_hover_text("What keeps one prototype from winning for every image. EMA (DINO): subtract a running mean of the teacher's outputs. Sinkhorn-Knopp (DINOv2): rescale the teacher's probabilities over the batch so every prototype gets the same share, with no memory between steps. Off: h(Pt) falls to 0: one-hot collapse.");
        if controls.centering != before {
            let toggle = Toggle::Centering(controls.centering);
            self.set_control(&mut controls, toggle);
        }
        if ui
            .checkbox(&mut controls.sharpening, "sharpening")
            .on_hover_text("Uses a low teacher temperature so the teacher's targets are peaked. Off (temperature = the student's 0.1): h(Pt) rises to ln K: uniform collapse.")
            .changed()
        {
            let toggle = Toggle::Sharpening(controls.sharpening);
            self.set_control(&mut controls, toggle);
        }
        let response = ui
            .add(
                egui::Slider::new(&mut controls.teacher_temp, TEACHER_TEMP.slider)
                    .logarithmic(true)
                    .text("τ teacher"),
            )
            .on_hover_text("Teacher temperature. Lower = sharper targets, pushing towards one-hot; above ~0.07 the paper saw uniform collapse.");
        if committed(&response) {
            let toggle = Toggle::TeacherTemp(controls.teacher_temp);
            self.set_control(&mut controls, toggle);
        }
        let response = ui
            .add(egui::Slider::new(&mut controls.momentum_teacher, MOMENTUM_TEACHER.slider).text("momentum"))
            .on_hover_text("EMA momentum of the teacher (cosine-scheduled towards 1). 0 = no momentum teacher: the teacher copies the student, and the paper's run collapsed.");
        if committed(&response) {
            let toggle = Toggle::MomentumTeacher(controls.momentum_teacher);
            self.set_control(&mut controls, toggle);
        }
        let response = ui
            .add(egui::Slider::new(&mut controls.local_crops, LOCAL_CROPS.slider).text("local crops"))
            .on_hover_text("Small crops the student must match to the teacher's global view. 0 = no multi-crop: training still works, with weaker features.");
        if committed(&response) {
            let toggle = Toggle::LocalCrops(controls.local_crops);
            self.set_control(&mut controls, toggle);
        }
        let response = ui
            .add(
                egui::Slider::new(&mut controls.lr_scale, LR_SCALE.slider)
                    .logarithmic(true)
                    .text("lr scale"),
            )
            .on_hover_text("Multiplies the learning-rate schedule. A large lr makes a collapse happen (and recover) faster.");
        if committed(&response) {
            let toggle = Toggle::LrScale(controls.lr_scale);
            self.set_control(&mut controls, toggle);
        }
        let response = ui
            .add(egui::Slider::new(&mut controls.koleo_weight, KOLEO_WEIGHT.slider).text("KoLeo"))
            .on_hover_text("DINOv2's KoLeo regulariser on the student's CLS features of the global crops: pushes each image's feature away from its nearest neighbour, spreading the features over the sphere against dimensional collapse (the effective rank falling). 0 = off; DINOv2 uses 0.1. It blows up when two rows coincide (duplicate images, a batch of one).");
        if committed(&response) {
            let toggle = Toggle::KoleoWeight(controls.koleo_weight);
            self.set_control(&mut controls, toggle);
        }
        self.state.controls = controls;

        ui.separator();
        ui.heading("View");
        let mut view = self.state.view;
        ui.add(egui::Slider::new(&mut view.smoothing, 0.0..=0.99).text("smoothing"))
            .on_hover_text("De-biased exponential moving average, as in TensorBoard. The raw curve stays faint underneath.");
        ui.checkbox(&mut view.log_y, "log y")
            .on_hover_text("Plot log10 of every value (the 0 line is hidden).");
        self.state.set_view(view);
        self.prefs.smoothing = view.smoothing;
        self.prefs.log_y = view.log_y;
        ui.checkbox(&mut self.prefs.show_schedules, "schedules");
        ui.checkbox(&mut self.prefs.show_throughput, "throughput");
        ui.checkbox(&mut self.prefs.show_explanation, "explanations");

        ui.separator();
        ui.heading("Runs");
        let response = ui
            .add(
                egui::DragValue::new(&mut self.prefs.checkpoint_every_steps)
                    .range(0..=100_000)
                    .prefix("checkpoint every ")
                    .suffix(" steps"),
            )
            .on_hover_text("Periodic checkpoints in the run directory (the newest 3 are kept); 0 = only on Stop, exit and Save checkpoint.");
        if response.changed() {
            self.send_checkpointing();
        }
        let current = self.state.current;
        for run in self.state.runs.iter_mut().rev() {
            ui.horizontal(|ui| {
                ui.checkbox(&mut run.visible, "")
                    .on_hover_text("Show or hide this run on the plots.");
                let pin = if run.pinned { "pinned" } else { "pin" };
                if ui
                    .selectable_label(run.pinned, pin)
                    .on_hover_text("Pinned runs survive Reset, to compare against new runs.")
                    .clicked()
                {
                    run.pinned = !run.pinned;
                }
                let live = if Some(run.id) == current {
                    " (current)"
                } else {
                    ""
                };
                ui.label(format!("{}{live}", run.label))
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
        if self.state.runs.is_empty() {
            ui.label("No runs yet: press Start.");
        }
        if ui
            .small_button("Watch run folder...")
            .on_hover_text("Follow a run another process trains (main_dino.py's --output_dir, on a cluster or in a terminal): each new checkpoint's loss, h(Pt), KL and h(mean Pt) on a fixed probe batch, plotted as one more run.")
            .clicked()
        {
            self.queue(super::UiCommand::PickWatchFolder);
        }
        if let Some(root) = self.options.runs_root.clone() {
            ui.separator();
            egui::CollapsingHeader::new("Runs on disk")
                .id_salt("runs_on_disk")
                .show(ui, |ui| self.runs_on_disk_ui(ui, &root));
        }
    }
}

fn centering_text(mode: CenteringMode) -> &'static str {
    match mode {
        CenteringMode::Ema => "EMA (DINO)",
        CenteringMode::Sinkhorn => "Sinkhorn-Knopp (DINOv2)",
        CenteringMode::Off => "off",
    }
}

fn centering_tooltip(mode: CenteringMode) -> &'static str {
    match mode {
        CenteringMode::Ema => "Subtracts a running mean (momentum 0.9) of the teacher's outputs before the softmax, so no single prototype can win for every image.",
        CenteringMode::Sinkhorn => "The teacher's probabilities are the Sinkhorn-Knopp equipartition of the batch (dino.sinkhorn_iterations, 3): every prototype gets 1/K of the mass. No center is carried between steps. With K above the 2B teacher rows each target spreads over at least K/2B prototypes.",
        CenteringMode::Off => "Nothing stops one prototype from winning: h(Pt) falls to 0, one-hot collapse (paper Fig. 7).",
    }
}

/// Commit slider changes once (on release or keyboard edit), so a drag is one marker.
pub(super) fn committed(response: &egui::Response) -> bool {
    response.drag_stopped() || (response.changed() && !response.dragged())
}
