//! The left panel's live controls: one `LiveSettings`, its ranges from `config::live`; and the
//! view options.

use super::command::{AppContext, UiCommand};
use crate::config::live::{KOLEO_WEIGHT, LOCAL_CROPS, LR_SCALE, MOMENTUM_TEACHER, TEACHER_TEMP};
use crate::config::{CenteringMode, Toggle};

/// The left panel's live controls and view options. No state of its own: the controls show
/// the app's `LiveSettings`, and a change is a `SetControl` command.
#[derive(Default)]
pub struct ControlsPanel;

impl ControlsPanel {
    /// The left panel's controls and view options, in screen order.
    pub fn ui(&mut self, ui: &mut egui::Ui, ctx: &AppContext<'_>) {
        ui.heading("Anti-collapse");
        if ctx.current_is_external() {
            // A watched run is read, never steered: its toggles would reach nothing.
            ui.label("This run is trained by another process: its settings are what its own command line set.");
            egui::CollapsingHeader::new("Settings for the next Start")
                .id_salt("next_start_controls")
                .default_open(false)
                .show(ui, |ui| Self::live_controls_ui(ui, ctx));
        } else {
            Self::live_controls_ui(ui, ctx);
        }
        Self::view_ui(ui, ctx);
    }

    /// Long: the live controls, each with its tooltip; a change is one `SetControl`.
    fn live_controls_ui(ui: &mut egui::Ui, ctx: &AppContext<'_>) {
        let mut controls = ctx.state.controls.clone();
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
            ctx.send(UiCommand::SetControl(Toggle::Centering(controls.centering)));
        }
        if ui
            .checkbox(&mut controls.sharpening, "sharpening")
            .on_hover_text("Uses a low teacher temperature so the teacher's targets are peaked. Off (temperature = the student's 0.1): h(Pt) rises to ln K: uniform collapse.")
            .changed()
        {
            ctx.send(UiCommand::SetControl(Toggle::Sharpening(controls.sharpening)));
        }
        let response = ui
            .add(
                egui::Slider::new(&mut controls.teacher_temp, TEACHER_TEMP.slider)
                    .logarithmic(true)
                    .text("τ teacher"),
            )
            .on_hover_text("Teacher temperature. Lower = sharper targets, pushing towards one-hot; above ~0.07 the paper saw uniform collapse.");
        if committed(&response) {
            ctx.send(UiCommand::SetControl(Toggle::TeacherTemp(
                controls.teacher_temp,
            )));
        }
        let response = ui
            .add(egui::Slider::new(&mut controls.momentum_teacher, MOMENTUM_TEACHER.slider).text("momentum"))
            .on_hover_text("EMA momentum of the teacher (cosine-scheduled towards 1). 0 = no momentum teacher: the teacher copies the student, and the paper's run collapsed.");
        if committed(&response) {
            ctx.send(UiCommand::SetControl(Toggle::MomentumTeacher(
                controls.momentum_teacher,
            )));
        }
        let response = ui
            .add(egui::Slider::new(&mut controls.local_crops, LOCAL_CROPS.slider).text("local crops"))
            .on_hover_text("Small crops the student must match to the teacher's global view. 0 = no multi-crop: training still works, with weaker features.");
        if committed(&response) {
            ctx.send(UiCommand::SetControl(Toggle::LocalCrops(
                controls.local_crops,
            )));
        }
        let response = ui
            .add(
                egui::Slider::new(&mut controls.lr_scale, LR_SCALE.slider)
                    .logarithmic(true)
                    .text("lr scale"),
            )
            .on_hover_text("Multiplies the learning-rate schedule. A large lr makes a collapse happen (and recover) faster.");
        if committed(&response) {
            ctx.send(UiCommand::SetControl(Toggle::LrScale(controls.lr_scale)));
        }
        let response = ui
            .add(egui::Slider::new(&mut controls.koleo_weight, KOLEO_WEIGHT.slider).text("KoLeo"))
            .on_hover_text("DINOv2's KoLeo regulariser on the student's CLS features of the global crops: pushes each image's feature away from its nearest neighbour, spreading the features over the sphere against dimensional collapse (the effective rank falling). 0 = off; DINOv2 uses 0.1. It blows up when two rows coincide (duplicate images, a batch of one).");
        if committed(&response) {
            ctx.send(UiCommand::SetControl(Toggle::KoleoWeight(
                controls.koleo_weight,
            )));
        }
    }

    /// The view options and the checkpoint period: one `SetPrefs` when any changes.
    fn view_ui(ui: &mut egui::Ui, ctx: &AppContext<'_>) {
        ui.separator();
        ui.heading("View");
        let mut prefs = ctx.prefs.clone();
        ui.add(egui::Slider::new(&mut prefs.smoothing, 0.0..=0.99).text("smoothing"))
            .on_hover_text("De-biased exponential moving average, as in TensorBoard. The raw curve stays faint underneath.");
        ui.checkbox(&mut prefs.log_y, "log y")
            .on_hover_text("Plot log10 of every value (the 0 line is hidden).");
        ui.checkbox(&mut prefs.show_schedules, "schedules");
        ui.checkbox(&mut prefs.show_throughput, "throughput");
        ui.checkbox(&mut prefs.show_explanation, "explanations");
        ui.separator();
        ui.heading("Runs");
        ui.add(
            egui::DragValue::new(&mut prefs.checkpoint_every_steps)
                .range(0..=100_000)
                .prefix("checkpoint every ")
                .suffix(" steps"),
        )
        .on_hover_text("Periodic checkpoints in the run directory (the newest 3 are kept); 0 = only on Stop, exit and Save checkpoint.");
        if prefs != *ctx.prefs {
            ctx.send(UiCommand::SetPrefs(Box::new(prefs)));
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
