//! The Representation panel: effective rank over steps (with d as its ceiling and the best
//! step marked), the std of normalised features (with its isotropic 1/√d line), and the live
//! singular-value spectrum of the teacher's recent features (one faint line per older
//! reading, so its motion shows). The first two share the step axis with every other plot.

use super::plots::{add_markers, add_series, base_plot, colour, runs_to_draw, tinted, x_word};
use super::state::{AppState, Quantity, RunRecord};
use crate::analysis::geometry::NEAR_ZERO_FRACTION;
use crate::analysis::health::{rank_is_valid, rank_words};
use egui::Color32;
use egui_plot::{HLine, Line, LineStyle, Plot, PlotPoint, PlotPoints, Text, VLine};

/// The heading's hover text: what is measured and on which rows.
pub const ABOUT: &str = "Measured on the teacher's outputs: in a run trained here, the last 2048 global crops, every 4 steps; in a watched run, 2 × d global crops of the probe images (topped up with embedded shapes) at every checkpoint. Effective rank (RankMe) counts the directions the features use: near 1 in any collapse, and at most min(rows, d), so a reading over fewer rows than d says 'of at most n rows' and the verdict ignores readings over fewer than 2 × d rows. Its highest valid value marks the checkpoint to keep without labels. The spectrum shows the singular values of the same rows, largest first, relative to the largest; directions under 1e-3 have collapsed (only the min(rows, d) a window can span are counted).";

/// Effective rank, std-of-normalised and KoLeo side by side, then the spectrum.
pub fn representation_plots_ui(ui: &mut egui::Ui, state: &AppState, height: f32) {
    let Some(current) = state.current_run() else {
        return;
    };
    let width = (ui.available_width() / 3.0 - 8.0).max(120.0);
    ui.horizontal_top(|ui| {
        ui.vertical(|ui| {
            ui.set_width(width);
            rank_plot_ui(ui, state, current, height);
        });
        ui.vertical(|ui| {
            ui.set_width(width);
            std_plot_ui(ui, state, current, height);
        });
        ui.vertical(|ui| {
            ui.set_width(width);
            koleo_plot_ui(ui, state, current, height);
        });
    });
    spectrum_plot_ui(ui, current, height);
}

/// Coloured names above a small plot, in place of a legend that would cover the curves.
fn key_ui(ui: &mut egui::Ui, entries: &[(String, Color32)]) {
    ui.horizontal_wrapped(|ui| {
        for (text, colour) in entries {
            ui.label(egui::RichText::new(text).small().color(*colour));
        }
    });
}

/// One line under the heading: the newest reading and the best step so far.
pub fn summary_text(run: &RunRecord) -> Option<String> {
    let rank = run.series(Quantity::EffectiveRank)?.last()?;
    let rows = run.last.as_ref().and_then(|m| m.rank_rows);
    let mut text = rank_words(rank, rows, run.embed_dim).to_lowercase();
    if !rank_is_valid(rows, run.embed_dim) {
        text.push_str(" (too few rows for the verdict)");
    }
    if let Some(near_zero) = run.last.as_ref().and_then(|m| m.near_zero_directions) {
        text.push_str(&format!(" · {near_zero} near-zero directions"));
    }
    if let Some((step, best)) = run.best_rank() {
        text.push_str(&format!(
            " · best without labels: {} {step} (rank {best:.1})",
            x_word(run)
        ));
    }
    Some(text)
}

/// On a log axis whatever the view's setting: a rank spans 1 (collapse) to d, and a healthy
/// small model may use a tenth of d, which a linear axis up to d would flatten.
fn rank_plot_ui(ui: &mut egui::Ui, state: &AppState, run: &RunRecord, height: f32) {
    let view = state.view;
    let runs = runs_to_draw(state);
    let grey = Color32::GRAY;
    let mut key = vec![
        (
            "backbone".to_string(),
            colour(Quantity::EffectiveRank.rgb()),
        ),
        (
            "head bottleneck".to_string(),
            colour(Quantity::EffectiveRankHead.rgb()),
        ),
    ];
    if run.embed_dim > 0 {
        key.push((format!("- - d = {}", run.embed_dim), grey));
    }
    key_ui(ui, &key);
    let top = (run.embed_dim.max(2) as f64).log10();
    base_plot("effective rank", height, true, super::plots::x_label(state))
        .y_axis_label("rank (log)")
        .y_axis_formatter(|mark, _range| power_of_ten_label(mark.value))
        .y_grid_spacer(egui_plot::uniform_grid_spacer(|_| [0.5, 1.0, 2.0]))
        .include_y(0.0)
        .include_y(top + 0.05)
        .show(ui, |plot_ui| {
            if run.embed_dim > 0 {
                plot_ui.hline(
                    HLine::new("", top)
                        .color(grey)
                        .style(LineStyle::dashed_loose()),
                );
            }
            if let Some((step, rank)) = run.best_rank() {
                let x = step as f64;
                plot_ui.vline(
                    VLine::new("", x)
                        .color(colour(Quantity::EffectiveRank.rgb()).gamma_multiply(0.7))
                        .style(LineStyle::dashed_dense()),
                );
                plot_ui.text(
                    Text::new(
                        "",
                        PlotPoint::new(x, top),
                        format!(" best: {} {step} ({rank:.1})", x_word(run)),
                    )
                    .anchor(egui::Align2::LEFT_TOP)
                    .color(Color32::from_rgb(230, 230, 230)),
                );
            }
            for (shown, is_current) in &runs {
                for quantity in [Quantity::EffectiveRank, Quantity::EffectiveRankHead] {
                    add_log_series(plot_ui, shown, *is_current, quantity, view.log_y);
                }
                if *is_current {
                    add_markers(plot_ui, shown, None);
                }
            }
        });
}

/// `10^v` as a plain number: 1, 3, 10, 32, 100.
fn power_of_ten_label(log10_value: f64) -> String {
    let value = 10f64.powf(log10_value);
    if value >= 1.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

/// A series on a log axis: its points as stored (already log10 when the view is log).
fn add_log_series(
    plot_ui: &mut egui_plot::PlotUi<'_>,
    run: &RunRecord,
    is_current: bool,
    quantity: Quantity,
    already_log: bool,
) {
    let Some(series) = run.series(quantity) else {
        return;
    };
    let log = |points: &[PlotPoint]| -> Vec<[f64; 2]> {
        points
            .iter()
            .map(|p| {
                let y = if already_log {
                    p.y
                } else {
                    p.y.max(1e-8).log10()
                };
                [p.x, y]
            })
            .collect()
    };
    let colour = tinted(quantity.rgb(), run, is_current);
    let style = if is_current {
        LineStyle::Solid
    } else {
        LineStyle::dashed_loose()
    };
    plot_ui.line(
        Line::new(quantity.name(), PlotPoints::new(log(series.raw())))
            .color(colour.gamma_multiply(0.25))
            .width(1.0)
            .style(style),
    );
    plot_ui.line(
        Line::new(quantity.name(), PlotPoints::new(log(series.smoothed())))
            .color(colour)
            .width(if is_current { 2.0 } else { 1.5 })
            .style(style),
    );
}

fn std_plot_ui(ui: &mut egui::Ui, state: &AppState, run: &RunRecord, height: f32) {
    let view = state.view;
    let runs = runs_to_draw(state);
    let isotropic = (run.embed_dim > 0).then(|| 1.0 / (run.embed_dim as f64).sqrt());
    let mut key = vec![(
        "std of normalised features".to_string(),
        colour(Quantity::StdNormalized.rgb()),
    )];
    if let Some(line) = isotropic {
        key.push((format!("- - 1/√d = {line:.3} (isotropic)"), Color32::GRAY));
    }
    key_ui(ui, &key);
    let mut plot = base_plot(
        "std of normalised",
        height,
        view.log_y,
        super::plots::x_label(state),
    )
    .y_axis_label("std");
    if !view.log_y {
        plot = plot.include_y(0.0);
    }
    if let Some(line) = isotropic {
        plot = plot.include_y(view.transform(line * 1.1));
    }
    plot.show(ui, |plot_ui| {
        if let Some(line) = isotropic {
            plot_ui.hline(
                HLine::new("", view.transform(line))
                    .color(Color32::GRAY)
                    .style(LineStyle::dashed_loose()),
            );
        }
        for (shown, is_current) in &runs {
            add_series(plot_ui, shown, *is_current, Quantity::StdNormalized);
            if *is_current {
                add_markers(plot_ui, shown, None);
            }
        }
    });
}

/// KoLeo of the student's global-crop CLS features (DINOv2's regulariser), with the
/// latest weight and the rows whose neighbour is a duplicate, the cause of a jump.
fn koleo_plot_ui(ui: &mut egui::Ui, state: &AppState, run: &RunRecord, height: f32) {
    let view = state.view;
    let runs = runs_to_draw(state);
    let mut label = "KoLeo".to_string();
    if let Some(last) = &run.last {
        if last.koleo_weight > 0.0 {
            label.push_str(&format!(" (weight {:.2})", last.koleo_weight));
        } else {
            label.push_str(" (off, measured)");
        }
        if let Some(rows) = last.koleo_duplicates.filter(|rows| *rows > 0) {
            label.push_str(&format!(" · {rows} duplicate rows"));
        }
    }
    key_ui(ui, &[(label, colour(Quantity::Koleo.rgb()))]);
    base_plot("koleo", height, view.log_y, super::plots::x_label(state))
        .y_axis_label("KoLeo")
        .show(ui, |plot_ui| {
            for (shown, is_current) in &runs {
                add_series(plot_ui, shown, *is_current, Quantity::Koleo);
                if *is_current {
                    add_markers(plot_ui, shown, None);
                }
            }
        })
        .response
        .on_hover_text(Quantity::Koleo.explanation());
}

/// log10(σ_k / σ_1) against k, newest reading solid; the collapse threshold as a line.
fn spectrum_plot_ui(ui: &mut egui::Ui, run: &RunRecord, height: f32) {
    let rgb = Quantity::EffectiveRank.rgb();
    let newest = run.spectra.len();
    let Some((newest_step, _)) = run.spectra.back() else {
        return;
    };
    key_ui(
        ui,
        &[
            (
                format!("singular values σ / σ₁ at {} {newest_step}", x_word(run)),
                colour(rgb),
            ),
            (
                "earlier readings".to_string(),
                colour(rgb).gamma_multiply(0.4),
            ),
            (
                format!("- - collapsed below {NEAR_ZERO_FRACTION:.0e}"),
                Color32::GRAY,
            ),
        ],
    );
    Plot::new("spectrum")
        .height(height)
        .allow_scroll(false)
        .x_axis_label("direction (largest first)")
        .y_axis_label("σ / σ₁ (log)")
        .y_axis_formatter(|mark, _range| format!("1e{:.0}", mark.value))
        .y_grid_spacer(egui_plot::uniform_grid_spacer(|_| [1.0, 2.0, 4.0]))
        .include_y(0.0)
        .include_y(NEAR_ZERO_FRACTION.log10() - 1.0)
        .show(ui, |plot_ui| {
            plot_ui.hline(
                HLine::new("", NEAR_ZERO_FRACTION.log10())
                    .color(Color32::GRAY)
                    .style(LineStyle::dashed_loose()),
            );
            for (age, (_, spectrum)) in run.spectra.iter().enumerate() {
                let is_newest = age + 1 == newest;
                // Floor at 1e-8 so an exact zero stays on the plot.
                let points: Vec<[f64; 2]> = spectrum
                    .iter()
                    .enumerate()
                    .map(|(k, s)| [(k + 1) as f64, f64::from(*s).max(1e-8).log10()])
                    .collect();
                let fade = 0.15 + 0.5 * (age + 1) as f32 / newest.max(1) as f32;
                plot_ui.line(
                    Line::new("", PlotPoints::new(points))
                        .color(if is_newest {
                            colour(rgb)
                        } else {
                            colour(rgb).gamma_multiply(fade)
                        })
                        .width(if is_newest { 2.0 } else { 1.0 }),
                );
            }
        });
}
