//! The attention view beyond the last block: the layer picker (any block's heads, or rollout
//! over all blocks) and the chart of each head's mean attention distance per block.

use super::{AttentionView, MapSource};
use crate::analysis::attention::{head_colour, AttentionMaps};
use crate::analysis::layers::{MapLayer, RolloutSettings};
use egui::Color32;
use egui_plot::{Legend, Line, Plot, PlotPoints, Points};

impl AttentionView {
    /// Blocks of the network the maps come from.
    pub(super) fn depth(&self) -> usize {
        match (&self.source, &self.loaded) {
            (MapSource::Loaded, Some(loaded)) => loaded.info.arch.depth,
            _ => self.training_depth,
        }
    }

    /// "layer": the last block (the official view), any earlier block, or rollout.
    pub(super) fn layer_picker_ui(&mut self, ui: &mut egui::Ui) {
        let depth = self.depth().max(1);
        let before = self.layer;
        egui::ComboBox::from_label("layer")
            .selected_text(self.layer.label(depth))
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut self.layer, MapLayer::Last, MapLayer::Last.label(depth));
                for block in (0..depth - 1).rev() {
                    let choice = MapLayer::Block(block);
                    ui.selectable_value(&mut self.layer, choice, choice.label(depth));
                }
                let rollout = MapLayer::Rollout(RolloutSettings::default());
                ui.selectable_value(&mut self.layer, rollout, rollout.label(depth))
                    .on_hover_text("Attention rollout (Abnar & Zuidema 2020) as jacobgil/vit-explain computes it: each block's heads averaged, the weakest 90 % of the weights dropped, the identity added, multiplied through all blocks; the CLS row, divided by its maximum.");
            })
            .response
            .on_hover_text("Which block's CLS attention the maps show. Earlier blocks look more locally; the chart below shows how far each head looks.");
        if self.layer != before {
            // Rollout is one map: show it, not a head it does not have.
            if matches!(self.layer, MapLayer::Rollout(_)) {
                self.head = super::HeadChoice::Fused(crate::analysis::attention::HeadFusion::Mean);
            }
            self.requests.training_settings = true;
            self.requests.recompute_loaded = self.loaded.is_some();
        }
    }

    /// What the per-head grid's heading says for these maps.
    pub(super) fn grid_heading(maps: &AttentionMaps, depth: usize) -> String {
        match maps.layer {
            MapLayer::Last => "Per head (click to show large)".into(),
            MapLayer::Block(block) => {
                format!(
                    "Per head of block {} of {depth} (click to show large)",
                    block + 1
                )
            }
            MapLayer::Rollout(_) => "Rollout over all blocks (one map)".into(),
        }
    }

    /// Each head's mean attention distance (px) at every block: points in the head colours,
    /// the mean over heads as a line. Heads that look locally sit low, globally high.
    pub(super) fn distance_chart_ui(ui: &mut egui::Ui, maps: &AttentionMaps, width: f32) {
        if maps.distance_px.is_empty() {
            return;
        }
        ui.label("Mean attention distance per head").on_hover_text(
            "For each head and block: how far (in pixels) a patch's attention reaches, weighted by the attention over the other patches and averaged over patches. Early blocks mix local and global heads; later ones look globally.",
        );
        let heads = maps.distance_px.first().map_or(0, Vec::len);
        Plot::new("attention_distance")
            .width(width)
            .height(150.0)
            .allow_scroll(false)
            .allow_drag(false)
            .include_y(0.0)
            .x_axis_label("block")
            .y_axis_label("px")
            .legend(Legend::default().position(egui_plot::Corner::RightBottom))
            .show(ui, |plot_ui| {
                for head in 0..heads {
                    let points: Vec<[f64; 2]> = maps
                        .distance_px
                        .iter()
                        .enumerate()
                        .filter_map(|(block, d)| Some([block as f64 + 1.0, *d.get(head)? as f64]))
                        .collect();
                    let [r, g, b] = head_colour(Some(head));
                    plot_ui.points(
                        Points::new(format!("head {head}"), points)
                            .color(Color32::from_rgb(r, g, b))
                            .radius(3.0),
                    );
                }
                let mean: Vec<[f64; 2]> = maps
                    .distance_px
                    .iter()
                    .enumerate()
                    .map(|(block, d)| {
                        let m = d.iter().map(|v| *v as f64).sum::<f64>() / d.len().max(1) as f64;
                        [block as f64 + 1.0, m]
                    })
                    .collect();
                plot_ui.line(
                    Line::new("mean of heads", PlotPoints::from(mean))
                        .color(Color32::LIGHT_GRAY)
                        .width(1.5),
                );
            });
    }
}
