//! The explanation panel and the status line.

use super::collapse::{classify, findings, CollapseState};
use super::command::{AppContext, UiCommand};
use super::state::{Level, Quantity};
use super::top_bar::collapse_chip_ui;

/// Width kept for the frame-time and first-point read-outs at the right of the status line.
const STATUS_READOUTS_PX: f32 = 360.0;

pub fn explanation_ui(ui: &mut egui::Ui, ctx: &AppContext<'_>) {
    ui.heading("What you are seeing");
    if let Some(run) = ctx.state.current_run() {
        let recent = run.recent_loss();
        let collapse = classify(&recent);
        collapse_chip_ui(ui, collapse);
        ui.label(collapse.explain(&recent));
        for finding in findings(&recent) {
            ui.label(
                egui::RichText::new(format!("Cause: {finding}")).color(ui.visuals().warn_fg_color),
            );
        }
        if let Some(marker) = run.markers.last() {
            ui.separator();
            ui.label(format!(
                "Last change at step {}: {}",
                marker.step, marker.label
            ));
        }
    } else {
        ui.label(CollapseState::WarmingUp.explanation());
    }
    ui.separator();
    for quantity in Quantity::DECOMPOSITION {
        ui.label(
            egui::RichText::new(quantity.name())
                .strong()
                .color(egui::Color32::from_rgb(
                    quantity.rgb()[0],
                    quantity.rgb()[1],
                    quantity.rgb()[2],
                )),
        );
        ui.label(quantity.explanation());
    }
}

pub fn status_line_ui(ui: &mut egui::Ui, ctx: &AppContext<'_>) {
    ui.horizontal(|ui| {
        if let Some(message) = ctx.state.messages.back() {
            let colour = match message.level {
                Level::Info => ui.visuals().text_color(),
                Level::Warning => egui::Color32::from_rgb(230, 170, 40),
                Level::Error => egui::Color32::from_rgb(235, 80, 70),
            };
            let history: Vec<String> = ctx
                .state
                .messages
                .iter()
                .rev()
                .take(12)
                .map(|m| m.text.clone())
                .collect();
            // Leaves room for the read-outs on the right: a long message is cut, its
            // whole text (and the last ones) on hover.
            let room = (ui.available_width() - STATUS_READOUTS_PX).max(120.0);
            ui.scope(|ui| {
                ui.set_max_width(room);
                ui.add(egui::Label::new(egui::RichText::new(&message.text).color(colour)).truncate())
                    .on_hover_text(history.join("\n"));
            });
        } else {
            ui.label("Ready.");
        }
        if ctx.state.current_run().is_some_and(|run| run.storage_lost)
            && ui
                .button("Save run to…")
                .on_hover_text("The run directory can no longer be written. Pick another folder: the config, every row so far and a checkpoint are written there, then Resume continues.")
                .clicked()
        {
            ctx.send(UiCommand::PickSaveRunTo);
        }
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
            if let Some((median, p95)) = ctx.frame_time_ms {
                ui.label(format!("frame {median:.1} ms (p95 {p95:.1})"))
                    .on_hover_text("CPU time per UI frame over the last 240 frames.");
            }
            if let Some(secs) = ctx.first_point_secs {
                ui.label(format!("first point {secs:.1} s after Start"))
                    .on_hover_text("From pressing Start to the first plotted step: building the model, the data loader's first batch and the first step.");
            }
        });
    });
}
