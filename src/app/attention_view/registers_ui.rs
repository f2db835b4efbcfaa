//! The registers panel, for DINOv2 `_reg4` and DINOv3 backbones: how much of the CLS query's
//! attention goes to the registers (storage tokens) in every block, one line per head, the
//! share on each register in the last block, and each register's norm beside the patches'
//! (the high-norm tokens that registers were introduced to absorb).

use super::AttentionView;
use crate::analysis::attention::{head_colour, AttentionMaps};
use egui::Color32;
use egui_plot::{Legend, Line, Plot, PlotPoints};

impl AttentionView {
    /// Nothing for a model without registers.
    pub(super) fn registers_ui(ui: &mut egui::Ui, maps: &AttentionMaps, noun: &str, width: f32) {
        let stats = &maps.registers;
        if stats.is_empty() {
            return;
        }
        let totals = stats.total_share();
        let last = totals.last().cloned().unwrap_or_default();
        let mean_last = last.iter().sum::<f32>() / last.len().max(1) as f32;
        ui.label(format!(
            "{}: {} · CLS gives them {:.0} % of its attention in the last block (mean of heads)",
            capitalised(noun),
            stats.norms.len(),
            100.0 * mean_last
        ))
        .on_hover_text(format!(
            "The {noun} sit between CLS and the patches and are not places in the image, so the maps leave them out (their share is what the maps' rows do not sum to). Darcet et al. 2024 (Vision Transformers Need Registers) added them to absorb the global computation that otherwise lands on a few high-norm background patches."
        ));
        Plot::new("register_share")
            .width(width)
            .height(120.0)
            .allow_scroll(false)
            .allow_drag(false)
            .include_y(0.0)
            .include_y(1.0)
            .x_axis_label("block")
            .y_axis_label(format!("CLS to {noun}"))
            .legend(Legend::default())
            .show(ui, |plot_ui| {
                let heads = totals.first().map_or(0, Vec::len);
                for head in 0..heads {
                    let points: PlotPoints = totals
                        .iter()
                        .enumerate()
                        .map(|(block, shares)| [block as f64 + 1.0, shares[head] as f64])
                        .collect();
                    let [r, g, b] = head_colour(Some(head));
                    plot_ui.line(
                        Line::new(format!("head {head}"), points).color(Color32::from_rgb(r, g, b)),
                    );
                }
            });
        let patch_median = median(&maps.token_norms);
        egui::Grid::new("register_table")
            .striped(true)
            .show(ui, |ui| {
                ui.strong("last block");
                for register in 0..stats.norms.len() {
                    ui.strong(format!("R{}", register + 1));
                }
                ui.end_row();
                if let Some(heads) = stats.cls_share.last() {
                    for (head, shares) in heads.iter().enumerate() {
                        let [r, g, b] = head_colour(Some(head));
                        ui.colored_label(Color32::from_rgb(r, g, b), format!("head {head}"));
                        for share in shares {
                            ui.monospace(format!("{:5.1} %", 100.0 * share));
                        }
                        ui.end_row();
                    }
                }
                ui.label("norm").on_hover_text(format!(
                    "The norm of each token leaving the last block (before the final norm); the patches' median is {patch_median:.1}"
                ));
                for norm in &stats.norms {
                    ui.monospace(format!("{norm:6.1}"));
                }
                ui.end_row();
            });
    }
}

fn capitalised(noun: &str) -> String {
    let mut chars = noun.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

fn median(values: &[f32]) -> f32 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f32::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}
