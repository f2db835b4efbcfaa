//! The attention view beyond the last block: the layer picker (any block's heads, or rollout
//! over all blocks), the chart of each head's mean attention distance per block, and the patch
//! inspector (click a patch of the large view: every followed image's similarity to it).

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

    /// The pixel of the image as the network saw it under `pos` in the large view `rect`.
    pub(super) fn clicked_pixel(
        rect: egui::Rect,
        pos: egui::Pos2,
        maps: &AttentionMaps,
    ) -> Option<(u32, u32)> {
        let (w, h) = (
            (maps.grid_cols * maps.patch_size) as f32,
            (maps.grid_rows * maps.patch_size) as f32,
        );
        let u = (pos.x - rect.min.x) / rect.width().max(1.0);
        let v = (pos.y - rect.min.y) / rect.height().max(1.0);
        ((0.0..1.0).contains(&u) && (0.0..1.0).contains(&v))
            .then_some(((u * w) as u32, (v * h) as u32))
    }

    /// The inspector's answer: each followed image's cosine similarity to the clicked patch
    /// (viridis, −1 dark to 1 bright; the clicked patch outlined in white).
    pub(super) fn similarity_ui(&mut self, ui: &mut egui::Ui, state: &crate::app::state::AppState) {
        let Some(similarity) = &state.similarity else {
            ui.small(
                "Click a patch of the large view: every image's similarity to it appears here.",
            );
            return;
        };
        ui.label(format!(
            "Similarity to patch ({}, {}) of {} (cosine of the last layer's tokens)",
            similarity.patch.0, similarity.patch.1, similarity.source
        ))
        .on_hover_text("As ShirAmir/dino-vit-features' inspect_similarity.py: the final-norm token of the clicked patch against every patch of every followed image. Parts of the same object light up across images once the network has learned them.");
        ui.horizontal_wrapped(|ui| {
            for map in &similarity.maps {
                let key = format!("{}|{:?}|{}", similarity.source, similarity.patch, map.name);
                let slot = format!("similarity-{}", map.name);
                let texture = match self.textures.get(&slot) {
                    Some((k, texture)) if *k == key => texture.clone(),
                    _ => {
                        let texture = ui.ctx().load_texture(
                            slot.clone(),
                            similarity_picture(similarity, map),
                            egui::TextureOptions::NEAREST,
                        );
                        self.textures.insert(slot, (key, texture.clone()));
                        texture
                    }
                };
                ui.vertical(|ui| {
                    let aspect = map.grid_cols as f32 / map.grid_rows.max(1) as f32;
                    let size =
                        egui::vec2(120.0 * aspect.min(2.0), 120.0 * aspect.min(2.0) / aspect);
                    ui.add(egui::Image::new(&texture).fit_to_exact_size(size));
                    ui.small(&map.name);
                });
            }
        });
    }
}

/// One similarity map as a picture, one texel per patch; −1 ..= 1 mapped onto viridis.
fn similarity_picture(
    similarity: &crate::analysis::tokens::Similarity,
    map: &crate::analysis::tokens::SimilarityMap,
) -> egui::ColorImage {
    let (rows, cols) = (map.grid_rows, map.grid_cols);
    let mut pixels: Vec<Color32> = map
        .values
        .iter()
        .map(|v| {
            let [r, g, b] = crate::analysis::colormap::viridis((v + 1.0) / 2.0);
            Color32::from_rgb(r, g, b)
        })
        .collect();
    if map.name == similarity.source {
        let (r, c) = similarity.patch;
        if let Some(p) = pixels.get_mut(r * cols + c) {
            *p = Color32::WHITE;
        }
    }
    egui::ColorImage::new([cols, rows], pixels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_click_maps_to_the_pixel_the_network_saw() {
        let maps = AttentionMaps {
            grid_rows: 4,
            grid_cols: 8,
            patch_size: 8,
            resized_px: (64, 32),
            heads: Vec::new(),
            pca_rgb: Vec::new(),
            layer: MapLayer::Last,
            distance_px: Vec::new(),
        };
        // The 64 × 32 image drawn at 2× from (10, 20).
        let rect = egui::Rect::from_min_size(egui::pos2(10.0, 20.0), egui::vec2(128.0, 64.0));
        let at = |x, y| AttentionView::clicked_pixel(rect, egui::pos2(x, y), &maps);
        assert_eq!(at(10.0, 20.0), Some((0, 0)));
        assert_eq!(at(10.0 + 2.0 * 41.0, 20.0 + 2.0 * 13.5), Some((41, 13)));
        assert_eq!(at(9.0, 30.0), None, "outside the image");
        assert_eq!(at(138.0, 30.0), None);
    }
}
