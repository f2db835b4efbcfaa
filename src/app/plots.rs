//! The plots: decomposition (with ln K and 0 lines), schedules, throughput. x is the step,
//! axes and cursor are linked; every toggle is a labelled vertical marker on every plot.

use super::state::{AppState, Quantity, RunRecord};
use egui::{Color32, Id};
use egui_plot::{HLine, Legend, Line, LineStyle, Plot, PlotPoint, PlotPoints, Text, VLine};

/// Colours for runs other than the current one (runs differ by lightness and dash).
const RUN_TINTS: [f32; 6] = [1.0, 0.55, 0.75, 0.4, 0.85, 0.65];

pub(super) fn colour(rgb: [u8; 3]) -> Color32 {
    Color32::from_rgb(rgb[0], rgb[1], rgb[2])
}

pub(super) fn tinted(rgb: [u8; 3], run: &RunRecord, is_current: bool) -> Color32 {
    if is_current {
        return colour(rgb);
    }
    let t = RUN_TINTS[run.colour_index % RUN_TINTS.len()];
    let mix = |c: u8| (c as f32 * t + 200.0 * (1.0 - t)).round().clamp(0.0, 255.0) as u8;
    Color32::from_rgb(mix(rgb[0]), mix(rgb[1]), mix(rgb[2]))
}

fn link_group() -> Id {
    Id::unique("dinoscope_steps")
}

/// Runs to draw: the current one first, then visible pinned/earlier runs.
pub(super) fn runs_to_draw(state: &AppState) -> Vec<(&RunRecord, bool)> {
    let mut runs: Vec<(&RunRecord, bool)> = Vec::new();
    if let Some(current) = state.current_run() {
        if current.visible {
            runs.push((current, true));
        }
    }
    for run in &state.runs {
        if Some(run.id) != state.current && run.visible {
            runs.push((run, false));
        }
    }
    runs
}

/// What a run's x counts: a watched run's rows are its checkpoints' epochs.
pub(super) fn x_word(run: &RunRecord) -> &'static str {
    if run.watched {
        "epoch"
    } else {
        "step"
    }
}

/// The x axis of the plots: what the current run's x counts.
pub(super) fn x_label(state: &AppState) -> &'static str {
    state.current_run().map_or("step", x_word)
}

/// Grid steps of 1, 2 and 10 times the smallest nice step (1, 2 or 5 × 10^k) above the
/// plot's minimum spacing. egui_plot's default powers of ten leave a 90-step axis with labels
/// 10 steps (too close to print) or 100 steps apart (only "0" on it); here a mark every 2s
/// steps is at least twice the minimum spacing, so the step axis is labelled. At least 1: the
/// x axis counts steps or epochs.
fn step_grid(input: egui_plot::GridInput) -> [f64; 3] {
    // Steps and epochs are whole numbers: never a mark between two of them.
    let min = input.base_step_size.max(1.0);
    let decade = 10f64.powf(min.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * decade)
        .find(|s| *s >= min)
        .unwrap_or(10.0 * decade);
    [step, 2.0 * step, 10.0 * step]
}

pub(super) fn base_plot(id: &str, height: f32, log_y: bool, x_label: &str) -> Plot<'static> {
    let plot = Plot::new(id.to_string())
        .height(height)
        .link_axis(link_group(), [true, false])
        .link_cursor(link_group(), [true, false])
        .allow_scroll(false)
        .x_grid_spacer(egui_plot::uniform_grid_spacer(step_grid))
        .x_axis_label(x_label.to_string());
    if log_y {
        plot.y_axis_formatter(|mark, _range| format!("{:.3e}", 10f64.powf(mark.value)))
            .label_formatter(|position| hover_text(position, true))
    } else {
        plot.label_formatter(|position| hover_text(position, false))
    }
}

fn hover_text(position: &egui_plot::HoverPosition<'_>, log_y: bool) -> Option<String> {
    let shown = |y: f64| if log_y { 10f64.powf(y) } else { y };
    Some(match position {
        egui_plot::HoverPosition::NearDataPoint {
            plot_name,
            position,
            ..
        } => format!(
            "{plot_name}\nstep {:.0}: {:.5}",
            position.x,
            shown(position.y)
        ),
        egui_plot::HoverPosition::Elsewhere { position } => {
            format!("step {:.0}", position.x.max(0.0))
        }
    })
}

pub(super) fn add_series<'a>(
    plot_ui: &mut egui_plot::PlotUi<'a>,
    run: &'a RunRecord,
    is_current: bool,
    quantity: Quantity,
) {
    let Some(series) = run.series(quantity) else {
        return;
    };
    let colour = tinted(quantity.rgb(), run, is_current);
    let name = if is_current {
        quantity.name().to_string()
    } else {
        format!("{} · {}", run.label, quantity.name())
    };
    let style = if is_current {
        LineStyle::Solid
    } else {
        LineStyle::dashed_loose()
    };
    // A watched run's points are checkpoints, each its own reading: smoothing across them
    // would draw values no checkpoint had (a faint raw line fanning out from the smoothed
    // one, a wedge per epoch), so the readings are drawn as they are, with their points.
    if run.watched {
        plot_ui.line(
            Line::new(name, PlotPoints::Borrowed(series.raw()))
                .color(colour)
                .width(if is_current { 2.0 } else { 1.5 })
                .style(style),
        );
        plot_ui.points(
            egui_plot::Points::new("", PlotPoints::Borrowed(series.raw()))
                .color(colour)
                .radius(if is_current { 3.0 } else { 2.0 }),
        );
        return;
    }
    // Raw curve kept faint under the smoothed one.
    plot_ui.line(
        Line::new(name.clone(), PlotPoints::Borrowed(series.raw()))
            .color(colour.gamma_multiply(0.25))
            .width(1.0)
            .style(style),
    );
    plot_ui.line(
        Line::new(name, PlotPoints::Borrowed(series.smoothed()))
            .color(colour)
            .width(if is_current { 2.0 } else { 1.5 })
            .style(style),
    );
}

/// Draws the run's markers with their labels at `label_y` (a data value, so the labels never
/// widen the auto-scaled range); no labels when `None`.
pub(super) fn add_markers(
    plot_ui: &mut egui_plot::PlotUi<'_>,
    run: &RunRecord,
    label_y: Option<f64>,
) {
    // Changes that took effect at the same step share one line and one label.
    let mut grouped: Vec<(usize, Vec<&str>)> = Vec::new();
    for marker in &run.markers {
        match grouped.last_mut() {
            Some((step, labels)) if *step == marker.step => labels.push(&marker.label),
            _ => grouped.push((marker.step, vec![&marker.label])),
        }
    }
    for (step, labels) in grouped {
        let x = step as f64;
        // Unnamed: markers stay out of the legend (their label is drawn on the plot).
        plot_ui.vline(
            VLine::new("", x)
                .color(Color32::from_rgb(200, 200, 200).gamma_multiply(0.8))
                .style(LineStyle::dashed_dense())
                .width(1.5),
        );
        if let Some(y) = label_y {
            plot_ui.text(
                Text::new("", PlotPoint::new(x, y), format!(" {}", labels.join(", ")))
                    .anchor(egui::Align2::LEFT_TOP)
                    .color(Color32::from_rgb(230, 230, 230)),
            );
        }
    }
}

/// Loss, h(Pt), KL, h(mean Pt) and I with the ln K, ln B and 0 reference lines.
pub fn decomposition_plot_ui(ui: &mut egui::Ui, state: &AppState, height: f32) {
    let log_y = state.view.log_y;
    let runs = runs_to_draw(state);
    let ln_k = runs.iter().map(|(run, _)| run.ln_k).find(|v| *v > 0.0);
    // The most I can be: every image of a batch on its own prototype.
    let ln_batch = runs
        .iter()
        .map(|(run, _)| run.batch_images)
        .find(|b| *b >= 2)
        .map(|b| (b as f64).ln())
        .filter(|ln_b| ln_k.is_none_or(|ln_k| *ln_b < ln_k));
    let transform = |y: f64| state.view.transform(y);
    let mut plot = base_plot("decomposition", height, log_y, x_label(state))
        .legend(Legend::default().position(egui_plot::Corner::RightTop))
        .y_axis_label(if log_y { "nats (log)" } else { "nats" });
    if !log_y {
        plot = plot.include_y(0.0);
    }
    if let Some(ln_k) = ln_k {
        plot = plot.include_y(transform(ln_k * 1.05));
    }
    plot.show(ui, |plot_ui| {
        if let Some(ln_k) = ln_k {
            plot_ui.hline(
                HLine::new(format!("ln K = {ln_k:.2} (uniform)"), transform(ln_k))
                    .color(Color32::GRAY)
                    .style(LineStyle::dashed_loose()),
            );
        }
        if let Some(ln_b) = ln_batch {
            plot_ui.hline(
                HLine::new(
                    format!("ln B = {ln_b:.2} (most I a batch carries)"),
                    transform(ln_b),
                )
                .color(colour(Quantity::TeacherMi.rgb()).gamma_multiply(0.6))
                .style(LineStyle::dashed_loose()),
            );
        }
        if !log_y {
            plot_ui.hline(
                HLine::new("0 (one-hot)", 0.0)
                    .color(Color32::GRAY)
                    .style(LineStyle::dashed_loose()),
            );
        }
        for (run, is_current) in &runs {
            for quantity in Quantity::DECOMPOSITION {
                add_series(plot_ui, run, *is_current, quantity);
            }
            // A watched run's own training loss (mean over each epoch's crops), beside the
            // probe's loss of the same checkpoint.
            if !run.log_loss.is_empty() {
                let points: Vec<[f64; 2]> = run
                    .log_loss
                    .iter()
                    .map(|[epoch, loss]| [*epoch, transform(*loss)])
                    .collect();
                plot_ui.line(
                    Line::new(
                        format!("{} · train_loss (log.txt)", run.label),
                        PlotPoints::from(points),
                    )
                    .color(colour(Quantity::Loss.rgb()).gamma_multiply(0.8))
                    .style(LineStyle::dotted_dense())
                    .width(2.0),
                );
            }
            if *is_current {
                add_markers(plot_ui, run, ln_k.map(|v| transform(v * 1.04)));
            }
        }
    });
}

/// Largest shown value of a series: where marker labels go on the small plots.
pub(super) fn series_top(run: &RunRecord, quantity: Quantity) -> Option<f64> {
    let points = run.series(quantity)?.raw();
    points
        .iter()
        .map(|p| p.y)
        .filter(|y| y.is_finite())
        .reduce(f64::max)
}

/// One small plot per schedule, in a 2 × 2 grid.
pub fn schedules_plot_ui(ui: &mut egui::Ui, state: &AppState, height: f32) {
    let runs = runs_to_draw(state);
    let width = (ui.available_width() / 2.0 - 8.0).max(100.0);
    egui::Grid::new("schedules").num_columns(2).show(ui, |ui| {
        for (i, quantity) in Quantity::SCHEDULES.into_iter().enumerate() {
            ui.vertical(|ui| {
                ui.set_width(width);
                ui.label(egui::RichText::new(quantity.name()).color(colour(quantity.rgb())))
                    .on_hover_text(quantity.explanation());
                let mut plot = base_plot(quantity.name(), height, state.view.log_y, x_label(state));
                // A constant schedule would autoscale to float noise: give it a ±5 % band.
                if let Some(series) = state.current_run().and_then(|r| r.series(quantity)) {
                    let values = series.raw();
                    let (lo, hi) = values.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
                        (lo.min(p.y), hi.max(p.y))
                    });
                    if !values.is_empty() && hi - lo <= 1e-9 * lo.abs().max(1e-12) {
                        let pad = (lo.abs() * 0.05).max(1e-6);
                        plot = plot.include_y(lo - pad).include_y(hi + pad);
                    }
                }
                plot.show(ui, |plot_ui| {
                    for (run, is_current) in &runs {
                        add_series(plot_ui, run, *is_current, quantity);
                        if *is_current {
                            add_markers(plot_ui, run, series_top(run, quantity));
                        }
                    }
                });
            });
            if i % 2 == 1 {
                ui.end_row();
            }
        }
    });
}

pub fn throughput_plot_ui(ui: &mut egui::Ui, state: &AppState, height: f32) {
    let runs = runs_to_draw(state);
    base_plot("throughput", height, state.view.log_y, x_label(state))
        .include_y(0.0)
        .y_axis_label("img/s")
        .show(ui, |plot_ui| {
            for (run, is_current) in &runs {
                add_series(plot_ui, run, *is_current, Quantity::ImagesPerSec);
                if *is_current {
                    add_markers(plot_ui, run, series_top(run, Quantity::ImagesPerSec));
                }
            }
        });
}

/// Reads one quantity of an evaluation.
type EvalValue = fn(&crate::store::rows::EvalRow) -> Option<f64>;

/// What the features learned: the teacher's k-NN top-1 / top-5 and the attention masks'
/// Jaccard with the ground truth, in percent, with the random-init values as dashed lines.
pub fn features_plot_ui(ui: &mut egui::Ui, state: &AppState, height: f32) {
    const TOP1: [u8; 3] = [230, 120, 40];
    const TOP5: [u8; 3] = [240, 190, 90];
    const JACCARD: [u8; 3] = [80, 170, 220];
    const STUDENT: [u8; 3] = [200, 120, 200];
    let runs = runs_to_draw(state);
    base_plot("features", height, false, x_label(state))
        .include_y(0.0)
        .include_y(100.0)
        .y_axis_label("%")
        .legend(Legend::default().position(egui_plot::Corner::LeftTop))
        .show(ui, |plot_ui| {
            for (run, is_current) in &runs {
                let name = |what: &str| {
                    if *is_current {
                        what.to_string()
                    } else {
                        format!("{} · {what}", run.label)
                    }
                };
                let style = if *is_current {
                    LineStyle::Solid
                } else {
                    LineStyle::dashed_loose()
                };
                let curves: [(&str, [u8; 3], EvalValue); 4] = [
                    ("k-NN top-1", TOP1, |e| e.top1),
                    ("student k-NN top-1", STUDENT, |e| e.student_top1),
                    ("k-NN top-5", TOP5, |e| e.top5),
                    ("Jaccard, best head", JACCARD, |e| e.jaccard_best_head),
                ];
                for (label, rgb, value) in curves {
                    let points: Vec<[f64; 2]> = run
                        .evals
                        .iter()
                        .filter_map(|e| Some([e.step as f64, value(e)?]))
                        .collect();
                    if points.is_empty() {
                        continue;
                    }
                    let colour = tinted(rgb, run, *is_current);
                    plot_ui.line(
                        Line::new(name(label), PlotPoints::new(points))
                            .color(colour)
                            .width(2.0)
                            .style(style),
                    );
                    if *is_current && label == "k-NN top-1" {
                        best_knn_marker(plot_ui, run);
                    }
                    if *is_current {
                        if let Some(baseline) = run.eval_baseline().and_then(value) {
                            plot_ui.hline(
                                // Unnamed: the dashed twin of each curve needs no legend entry.
                                HLine::new("", baseline)
                                    .color(colour.gamma_multiply(0.6))
                                    .style(LineStyle::dashed_dense()),
                            );
                        }
                    }
                }
            }
        });
}

/// The evaluation with the best teacher top-1 (after random init), marked where labels exist:
/// the checkpoint to keep with labels, next to the rank plot's best without them.
fn best_knn_marker(plot_ui: &mut egui_plot::PlotUi<'_>, run: &RunRecord) {
    let best = run
        .evals
        .iter()
        .filter(|e| e.step > 0)
        .filter_map(|e| Some((e.step, e.top1?)))
        .fold(
            None,
            |best: Option<(usize, f64)>, (step, top1)| match best {
                Some(b) if b.1 >= top1 => Some(b),
                _ => Some((step, top1)),
            },
        );
    if let Some((step, top1)) = best {
        let x = step as f64;
        plot_ui.vline(
            VLine::new("", x)
                .color(Color32::from_rgb(230, 120, 40).gamma_multiply(0.6))
                .style(LineStyle::dashed_dense()),
        );
        plot_ui.text(
            Text::new(
                "",
                PlotPoint::new(x, 100.0),
                format!(" best k-NN: step {step} ({top1:.1} %)"),
            )
            .anchor(egui::Align2::LEFT_TOP)
            .color(Color32::from_rgb(230, 230, 230)),
        );
    }
}
