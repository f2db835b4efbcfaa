//! The ablation study in the app: the "Ablation study..." dialog (the paper's variants on the
//! shipped study, plus the user's own) and the comparison view: the Fig. 7 pair of every arm on
//! shared axes, the table in the style of the paper's Table 7, and every arm's attention mask on
//! the same image.

use super::state::{AppState, Quantity};
use super::study::StudyArmState;
use super::UiCommand;
use crate::config::study::{paper_reference, parse_variant, StudySpec, Variant};
use egui::Color32;
use egui_plot::{HLine, Legend, Line, LineStyle, Plot, PlotPoints};
use std::collections::HashMap;

/// The built-in study the dialog starts from.
const BASE_STUDY: &str = "paper-table7";

/// The built-in study on the same base whose other arms (DINOv2's tools) the dialog offers
/// unticked below the paper's.
const RECIPE_STUDY: &str = "dinov2-recipe";

/// Okabe–Ito, as the exported figures: one colour per arm.
const ARM_COLOURS: [Color32; 8] = [
    Color32::from_rgb(86, 180, 233),
    Color32::from_rgb(213, 94, 0),
    Color32::from_rgb(0, 158, 115),
    Color32::from_rgb(204, 121, 167),
    Color32::from_rgb(230, 159, 0),
    Color32::from_rgb(240, 228, 66),
    Color32::from_rgb(200, 200, 200),
    Color32::from_rgb(0, 114, 178),
];

pub(super) fn arm_colour(index: usize) -> Color32 {
    ARM_COLOURS[index % ARM_COLOURS.len()]
}

/// The dialog's choices and the comparison view's texture cache.
pub struct StudyView {
    pub dialog_open: bool,
    /// The shipped study's variants and whether each is ticked; the user's own follow.
    variants: Vec<(Variant, bool)>,
    pub steps: usize,
    /// `NAME:KEY=VALUE,...` being typed, and why the last one was refused.
    own_variant: String,
    own_error: Option<String>,
    textures: HashMap<crate::worker::RunId, egui::TextureHandle>,
}

impl Default for StudyView {
    fn default() -> Self {
        let spec = StudySpec::builtin(BASE_STUDY);
        let steps = spec
            .as_ref()
            .and_then(|spec| spec.base_config().ok())
            // The shipped study trains on the embedded images: an epoch is their count / batch.
            .map(|config| {
                config.optim.epochs
                    * (config.data.num_images / config.optim.batch_size_per_gpu.max(1)).max(1)
            })
            .unwrap_or(480);
        let mut variants: Vec<(Variant, bool)> = spec
            .map(|spec| spec.variants.into_iter().map(|v| (v, true)).collect())
            .unwrap_or_default();
        let recipe = StudySpec::builtin(RECIPE_STUDY).map_or_else(Vec::new, |s| s.variants);
        for variant in recipe {
            if !variants.iter().any(|(v, _)| v.name == variant.name) {
                variants.push((variant, false));
            }
        }
        Self {
            dialog_open: false,
            variants,
            steps,
            own_variant: String::new(),
            own_error: None,
            textures: HashMap::new(),
        }
    }
}

impl StudyView {
    /// The study the dialog describes: the shipped one with the ticked variants and steps.
    pub fn spec(&self) -> Option<StudySpec> {
        let mut spec = StudySpec::builtin(BASE_STUDY)?;
        spec.variants = self
            .variants
            .iter()
            .filter(|(_, on)| *on)
            .map(|(v, _)| v.clone())
            .collect();
        spec.steps = Some(self.steps.max(1));
        Some(spec)
    }

    /// Long: the dialog's widgets in order (what runs, the variants, own variants, Start).
    /// A new study's comparison pictures replace the last one's.
    pub fn forget_textures(&mut self) {
        self.textures.clear();
    }

    pub fn dialog_ui(&mut self, ctx: &egui::Context) -> Option<UiCommand> {
        let mut command = None;
        let mut open = self.dialog_open;
        egui::Window::new("Ablation study")
            .open(&mut open)
            .collapsible(false)
            .default_width(460.0)
            .show(ctx, |ui| {
                ui.label("What each DINO component does: every ticked variant trains from the same seed, with the same data order and number of steps, interleaved so that the curves grow together. The base is a micro ViT (32 wide, 2 blocks, K = 64) on the embedded shapes, small enough that the whole study takes about a minute on 2 CPU cores (configs/studies/paper-table7.toml). Below the paper's five, unticked: DINOv2's tools, Sinkhorn-Knopp centering and KoLeo (configs/studies/dinov2-recipe.toml).");
                ui.add_space(4.0);
                ui.horizontal(|ui| {
                    ui.label("steps per variant");
                    ui.add(egui::DragValue::new(&mut self.steps).range(1..=100_000));
                });
                egui::Grid::new("study_variants").striped(true).show(ui, |ui| {
                    for (variant, on) in &mut self.variants {
                        ui.checkbox(on, &variant.name);
                        let text = if variant.description.is_empty() {
                            variant.set.join(", ")
                        } else {
                            variant.description.clone()
                        };
                        ui.label(text);
                        ui.end_row();
                    }
                });
                ui.horizontal(|ui| {
                    ui.label("own variant");
                    ui.add(
                        egui::TextEdit::singleline(&mut self.own_variant)
                            .hint_text("warm:dino.teacher_temp=0.04")
                            .desired_width(220.0),
                    );
                    if ui.button("Add").clicked() {
                        match parse_variant(&self.own_variant) {
                            Ok(variant) if self.variants.iter().any(|(v, _)| v.name == variant.name) => {
                                self.own_error = Some(format!("`{}` is taken; pick another name", variant.name));
                            }
                            Ok(variant) => {
                                self.variants.push((variant, true));
                                self.own_variant.clear();
                                self.own_error = None;
                            }
                            Err(err) => self.own_error = Some(err),
                        }
                    }
                });
                if let Some(err) = &self.own_error {
                    ui.colored_label(Color32::from_rgb(230, 120, 100), err);
                }
                let ticked = self.variants.iter().filter(|(_, on)| *on).count();
                ui.add_space(4.0);
                if ui
                    .add_enabled(ticked > 0, egui::Button::new(format!("Start study ({ticked} variants)")))
                    .on_hover_text("Ends the current run. Pause, Resume and Stop then act on the study.")
                    .clicked()
                {
                    if let Some(spec) = self.spec() {
                        command = Some(UiCommand::StartStudy(Box::new(spec)));
                    }
                }
            });
        self.dialog_open = open && command.is_none();
        command
    }

    /// Long: the comparison view top to bottom: status, the Fig. 7 pair, the table, the masks.
    pub fn comparison_ui(&mut self, ui: &mut egui::Ui, state: &AppState) {
        let Some(study) = &state.study else {
            ui.label("No study yet: Ablation study... in the top bar starts one.");
            return;
        };
        ui.heading(format!("Ablation study {}", study.name));
        let status = match &study.outputs {
            Some(out) if out.complete => format!(
                "done · {} · study.md, study.csv and figures written",
                study.dir.display()
            ),
            Some(_) => format!(
                "stopped · {} variants finished, compared in {}",
                study.finished_arms(),
                study.dir.display()
            ),
            None => format!(
                "training {} of {} variants, interleaved · {}",
                study.arms.len() - study.finished_arms(),
                study.arms.len(),
                study.dir.display()
            ),
        };
        ui.label(status);
        if let Some(out) = &study.outputs {
            for skipped in &out.skipped {
                ui.small(format!("not written: {skipped}"));
            }
        }
        ui.add_space(6.0);
        ui.columns(2, |columns| {
            pair_plot_ui(
                &mut columns[0],
                state,
                &study.arms,
                Quantity::TeacherEntropy,
                "Teacher entropy h(Pt)",
            );
            pair_plot_ui(
                &mut columns[1],
                state,
                &study.arms,
                Quantity::Kl,
                "KL(Pt || Ps)",
            );
        });
        ui.add_space(6.0);
        table_ui(ui, state, &study.arms);
        ui.add_space(8.0);
        ui.strong(
            "Where each variant looks (teacher, mean of the heads, 60 % of the attention mass)",
        );
        ui.horizontal_wrapped(|ui| {
            for arm in &study.arms {
                ui.vertical(|ui| {
                    match &arm.overlay {
                        Some(image) => {
                            let texture = self.textures.entry(arm.run_id).or_insert_with(|| {
                                let size = [image.width() as usize, image.height() as usize];
                                let pixels = egui::ColorImage::from_rgb(size, image.as_raw());
                                ui.ctx().load_texture(
                                    format!("study_mask_{}", arm.run_id),
                                    pixels,
                                    egui::TextureOptions::NEAREST,
                                )
                            });
                            ui.add(
                                egui::Image::new(&*texture)
                                    .fit_to_exact_size(egui::vec2(144.0, 144.0)),
                            );
                        }
                        None => {
                            ui.allocate_ui(egui::vec2(144.0, 144.0), |ui| {
                                ui.centered_and_justified(|ui| ui.weak("after its last step"));
                            });
                        }
                    }
                    ui.label(&arm.name);
                });
            }
        });
    }
}

/// One panel of the Fig. 7 pair: `quantity` of every arm (smoothed) on one axis, ln K dashed.
fn pair_plot_ui(
    ui: &mut egui::Ui,
    state: &AppState,
    arms: &[StudyArmState],
    quantity: Quantity,
    title: &str,
) {
    ui.strong(title);
    let ln_k = arms
        .iter()
        .filter_map(|arm| state.run(arm.run_id))
        .map(|run| run.ln_k)
        .find(|v| *v > 0.0);
    let mut plot = Plot::new(format!("study_{title}"))
        .height(220.0)
        .allow_scroll(false)
        .x_axis_label("step")
        .include_y(0.0)
        .legend(Legend::default().position(egui_plot::Corner::RightTop));
    if let (Some(ln_k), Quantity::TeacherEntropy) = (ln_k, quantity) {
        plot = plot.include_y(ln_k * 1.05);
    }
    plot.show(ui, |plot_ui| {
        if let (Some(ln_k), Quantity::TeacherEntropy) = (ln_k, quantity) {
            plot_ui.hline(
                HLine::new(format!("ln K = {ln_k:.2}"), ln_k)
                    .color(Color32::GRAY)
                    .style(LineStyle::dashed_loose()),
            );
        }
        for (index, arm) in arms.iter().enumerate() {
            let Some(series) = state.run(arm.run_id).and_then(|run| run.series(quantity)) else {
                continue;
            };
            plot_ui.line(
                Line::new(arm.name.clone(), PlotPoints::Borrowed(series.smoothed()))
                    .color(arm_colour(index))
                    .width(2.0),
            );
        }
    });
}

/// The table: finished arms from their rows, the others from their newest step.
fn table_ui(ui: &mut egui::Ui, state: &AppState, arms: &[StudyArmState]) {
    let percent = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.1} %"));
    egui::Grid::new("study_table")
        .striped(true)
        .spacing([14.0, 4.0])
        // Long overrides and paper references wrap instead of pushing columns off screen.
        .max_col_width(190.0)
        .show(ui, |ui| {
            for header in [
                "variant",
                "what changes",
                "h(Pt)",
                "KL",
                "k-NN top-1 (init)",
                "Jaccard",
                "eff. rank",
                "regime",
                "time",
                "paper k-NN",
            ] {
                ui.strong(header);
            }
            ui.end_row();
            for (index, arm) in arms.iter().enumerate() {
                ui.colored_label(arm_colour(index), &arm.name)
                    .on_hover_text(&arm.description);
                ui.label(if arm.change.is_empty() {
                    "—".to_string()
                } else {
                    arm.change.join(", ")
                });
                let paper =
                    paper_reference(&arm.name).map_or("–".to_string(), |p| match p.knn_top1 {
                        Some(top1) => format!("{top1:.1} ({})", p.source),
                        None => p.source.to_string(),
                    });
                match (&arm.row, state.run(arm.run_id)) {
                    (Some(row), _) => {
                        ui.label(format!(
                            "{:.3} of {:.2}",
                            row.final_teacher_entropy, row.ln_k
                        ));
                        ui.label(format!("{:.3}", row.final_kl));
                        ui.label(format!(
                            "{} ({})",
                            percent(row.knn_top1),
                            percent(row.random_init_top1)
                        ));
                        ui.label(percent(row.jaccard));
                        ui.label(row.effective_rank.map_or("–".into(), |r| format!("{r:.1}")));
                        ui.label(row.regime.word());
                        ui.label(format!("{:.0} s", row.secs));
                    }
                    (None, Some(run)) => {
                        let recent = run.recent_loss();
                        ui.label(format!("{:.3}", recent.teacher_entropy));
                        ui.label(format!("{:.3}", recent.kl));
                        ui.label(percent(
                            run.evals
                                .iter()
                                .rev()
                                .find(|e| e.step > 0)
                                .and_then(|e| e.top1),
                        ));
                        ui.label("–");
                        ui.label(
                            recent
                                .effective_rank
                                .map_or("–".into(), |r| format!("{r:.1}")),
                        );
                        ui.label(run.collapse_state().word());
                        let step = run.last.as_ref().map_or(0, |m| m.step + 1);
                        ui.label(format!("step {step}/{}", run.total_steps));
                    }
                    (None, None) => {
                        for _ in 0..7 {
                            ui.label("–");
                        }
                    }
                }
                ui.add(egui::Label::new(paper).wrap());
                ui.end_row();
            }
        });
    ui.small("h(Pt), KL: means over the last 5 steps (nats). k-NN: the teacher's weighted k-NN at the end, at random init in brackets. The paper column is DINO ViT-S/16 on ImageNet after 300 epochs (Table 7, Fig. 7): the direction to expect, not a number a small run reaches.");
}
