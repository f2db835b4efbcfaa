//! The attention view beyond the last block: the layer picker (any block's heads, or rollout
//! over all blocks), the chart of each head's mean attention distance per block, and the patch
//! inspector (click a patch of the large view: every followed image's similarity to it).

use super::{AttentionView, MapSource};
use crate::analysis::attention::{head_colour, AttentionMaps, HeadFusion};
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
    pub(super) fn layer_picker_ui(
        &mut self,
        ui: &mut egui::Ui,
        ctx: &crate::app::command::AppContext<'_>,
    ) {
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
                // Picking rollout again keeps its settings.
                let rollout = match self.layer {
                    MapLayer::Rollout(settings) => MapLayer::Rollout(settings),
                    _ => MapLayer::Rollout(RolloutSettings::default()),
                };
                ui.selectable_value(&mut self.layer, rollout, rollout.label(depth))
                    .on_hover_text("Attention rollout (Abnar & Zuidema 2020) as jacobgil/vit-explain computes it: each block's heads fused (head fusion), the weakest share of the weights dropped (discard, 90 % by default), the identity added, multiplied through all blocks; the CLS row, divided by its maximum.");
            })
            .response
            .on_hover_text("Which block's CLS attention the maps show. Earlier blocks look more locally; the chart below shows how far each head looks.");
        let picked = self.layer != before;
        // Rollout's own settings, as vit_rollout.py takes them.
        if let MapLayer::Rollout(settings) = &mut self.layer {
            let mut changed = false;
            egui::ComboBox::from_label("head fusion")
                .selected_text(match settings.fusion {
                    HeadFusion::Mean => "mean",
                    HeadFusion::Min => "min",
                    HeadFusion::Max => "max",
                })
                .show_ui(ui, |ui| {
                    for (fusion, name) in [
                        (HeadFusion::Mean, "mean"),
                        (HeadFusion::Min, "min"),
                        (HeadFusion::Max, "max"),
                    ] {
                        changed |= ui
                            .selectable_value(&mut settings.fusion, fusion, name)
                            .changed();
                    }
                })
                .response
                .on_hover_text("How each block's heads are combined before the blocks are multiplied through (vit_rollout.py's head_fusion).");
            // Applied when the drag ends: each change recomputes every image's rollout.
            let discard = ui
                .add(egui::Slider::new(&mut settings.discard_ratio, 0.0..=0.99).text("discard"))
                .on_hover_text("Share of each block's weakest fused attention set to 0 before the identity is added (vit_rollout.py's discard_ratio, 0.9 by default).");
            changed |= discard.drag_stopped() || (discard.changed() && !discard.dragged());
            if changed {
                ctx.send(crate::app::command::UiCommand::AttentionSettingsChanged);
            }
        }
        if picked {
            // Rollout is one map: show it, not a head it does not have.
            if matches!(self.layer, MapLayer::Rollout(_)) {
                self.head = super::HeadChoice::Fused(crate::analysis::attention::HeadFusion::Mean);
            }
            ctx.send(crate::app::command::UiCommand::AttentionSettingsChanged);
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

    /// How far each head looks over the training run: the chosen block's heads as curves (for
    /// rollout, each block's mean over heads), x = step. Heads moving from local to global
    /// show as rising curves.
    pub(super) fn distance_over_training_ui(
        &self,
        ui: &mut egui::Ui,
        history: &[crate::app::state::DistanceSnapshot],
        x_label: &str,
        width: f32,
    ) {
        let snapshots: Vec<_> = history
            .iter()
            .filter(|s| s.network == self.network)
            .collect();
        if self.source != MapSource::Training || snapshots.len() < 2 {
            return;
        }
        let depth = snapshots[0].distance_px.len();
        let block = match self.layer {
            MapLayer::Block(block) => Some(block.min(depth.saturating_sub(1))),
            MapLayer::Last => Some(depth.saturating_sub(1)),
            MapLayer::Rollout(_) => None,
        };
        let title = match block {
            Some(b) => format!(
                "Attention distance over training (block {} of {depth})",
                b + 1
            ),
            None => "Attention distance over training (mean of heads per block)".into(),
        };
        ui.label(title).on_hover_text(
            "The mean attention distance of each head at every attention snapshot of this run (averaged over the followed images). Heads that start local and learn to look across the image rise.",
        );
        // Steps count from 1 (after the step); a watched run's epochs as they are.
        let x_of = |step: usize| {
            if x_label == "epoch" {
                step as f64
            } else {
                (step + 1) as f64
            }
        };
        // (name, colour, [step, px] points) per curve.
        let curves: Vec<(String, Color32, Vec<[f64; 2]>)> = match block {
            Some(b) => {
                let heads = snapshots[0].distance_px.get(b).map_or(0, Vec::len);
                (0..heads)
                    .map(|head| {
                        let [r, g, bl] = head_colour(Some(head));
                        let points = snapshots
                            .iter()
                            .filter_map(|s| {
                                Some([x_of(s.step), *s.distance_px.get(b)?.get(head)? as f64])
                            })
                            .collect();
                        (format!("head {head}"), Color32::from_rgb(r, g, bl), points)
                    })
                    .collect()
            }
            None => (0..depth)
                .map(|b| {
                    let [r, g, bl] = head_colour(Some(b));
                    let points = snapshots
                        .iter()
                        .filter_map(|s| {
                            let heads = s.distance_px.get(b)?;
                            let mean = heads.iter().map(|d| *d as f64).sum::<f64>()
                                / heads.len().max(1) as f64;
                            Some([x_of(s.step), mean])
                        })
                        .collect();
                    (
                        format!("block {}", b + 1),
                        Color32::from_rgb(r, g, bl),
                        points,
                    )
                })
                .collect(),
        };
        Plot::new("attention_distance_over_training")
            .width(width)
            .height(150.0)
            .allow_scroll(false)
            .allow_drag(false)
            .include_y(0.0)
            .x_axis_label(x_label.to_string())
            .y_axis_label("px")
            .legend(Legend::default().position(egui_plot::Corner::RightBottom))
            .show(ui, |plot_ui| {
                for (name, colour, points) in curves {
                    plot_ui.line(
                        Line::new(name, PlotPoints::from(points))
                            .color(colour)
                            .width(1.5),
                    );
                }
            });
    }

    /// The histogram of the last layer's patch-token norms (pre final norm) with the far-out
    /// fence the outliers lie beyond: whether high-norm artifact tokens appear is measured,
    /// not assumed.
    pub(super) fn token_norms_chart_ui(ui: &mut egui::Ui, maps: &AttentionMaps, width: f32) {
        let norms = &maps.token_norms;
        let Some(histogram) = NormHistogram::of(norms, 24) else {
            return;
        };
        let fence = crate::analysis::tokens::norm_fence(norms);
        let outliers = crate::analysis::tokens::norm_outliers(norms)
            .iter()
            .filter(|o| **o == 1)
            .count();
        ui.label(format!(
            "Patch-token norms: {outliers} of {} above the fence{}",
            norms.len(),
            fence.map(|f| format!(" ({f:.1})")).unwrap_or_default()
        ))
        .on_hover_text("The norm of each patch token leaving the last block (before the final norm). Darcet et al. 2024 (Vision Transformers Need Registers) found a few background tokens with norms far above the rest in large, long-trained ViTs. Outliers here are tokens above the upper quartile plus 3 interquartile ranges; they are outlined in yellow on the image.");
        let [r, g, b] = super::TOKEN_NORM_COLOUR;
        let bars: Vec<egui_plot::Bar> = histogram
            .counts
            .iter()
            .enumerate()
            .map(|(i, count)| {
                egui_plot::Bar::new(histogram.centre(i), *count as f64).width(histogram.bin_width)
            })
            .collect();
        Plot::new("token_norms")
            .width(width)
            .height(120.0)
            .allow_scroll(false)
            .allow_drag(false)
            .include_y(0.0)
            .x_axis_label("norm")
            .y_axis_label("tokens")
            .show(ui, |plot_ui| {
                plot_ui.bar_chart(
                    egui_plot::BarChart::new("tokens", bars)
                        .color(Color32::from_rgb(160, 170, 190)),
                );
                if let Some(fence) = fence {
                    plot_ui.vline(
                        egui_plot::VLine::new("fence", fence as f64)
                            .color(Color32::from_rgb(r, g, b))
                            .style(egui_plot::LineStyle::dashed_dense()),
                    );
                }
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
            for (index, map) in similarity.maps.iter().enumerate() {
                let slot = super::ViewSlot::Similarity(index);
                let key = super::TextureKey {
                    image: index as u64,
                    source: self.source,
                    generation: state.similarity_generation,
                    choice: super::HeadChoice::Fused(crate::analysis::attention::HeadFusion::Mean),
                    settings: super::PictureSettings::NONE,
                };
                let texture = match self.textures.get(&slot) {
                    Some((k, texture)) if *k == key => texture.clone(),
                    _ => {
                        let texture = ui.ctx().load_texture(
                            format!("attention-{slot:?}"),
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

/// Equal-width bins from the smallest to the largest norm.
struct NormHistogram {
    low: f64,
    bin_width: f64,
    counts: Vec<usize>,
}

impl NormHistogram {
    /// `None` without finite norms.
    fn of(norms: &[f32], bins: usize) -> Option<Self> {
        let finite = norms.iter().filter(|n| n.is_finite()).map(|n| *n as f64);
        let (low, high) = finite.fold(None, |range: Option<(f64, f64)>, n| {
            Some(range.map_or((n, n), |(l, h)| (l.min(n), h.max(n))))
        })?;
        // One token value (or all equal): one bin a unit wide around it.
        let bin_width = ((high - low) / bins as f64).max(1e-6);
        let bins = bins.max(1);
        let mut counts = vec![0; bins];
        for n in norms.iter().filter(|n| n.is_finite()) {
            let bin = ((*n as f64 - low) / bin_width) as usize;
            counts[bin.min(bins - 1)] += 1;
        }
        Some(Self {
            low,
            bin_width,
            counts,
        })
    }

    fn centre(&self, bin: usize) -> f64 {
        self.low + (bin as f64 + 0.5) * self.bin_width
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
            pca_foreground_rgb: Vec::new(),
            layer: MapLayer::Last,
            distance_px: Vec::new(),
            token_norms: Vec::new(),
            registers: Default::default(),
        };
        // The 64 × 32 image drawn at 2× from (10, 20).
        let rect = egui::Rect::from_min_size(egui::pos2(10.0, 20.0), egui::vec2(128.0, 64.0));
        let at = |x, y| AttentionView::clicked_pixel(rect, egui::pos2(x, y), &maps);
        assert_eq!(at(10.0, 20.0), Some((0, 0)));
        assert_eq!(at(10.0 + 2.0 * 41.0, 20.0 + 2.0 * 13.5), Some((41, 13)));
        assert_eq!(at(9.0, 30.0), None, "outside the image");
        assert_eq!(at(138.0, 30.0), None);
    }

    #[test]
    fn the_norm_histogram_counts_every_finite_token_once() {
        let histogram = NormHistogram::of(&[1.0, 2.0, 2.0, 5.0, f32::NAN], 4).unwrap();
        assert_eq!(histogram.counts, vec![1, 2, 0, 1]);
        assert_eq!(histogram.bin_width, 1.0);
        assert_eq!(histogram.centre(0), 1.5);
        let flat = NormHistogram::of(&[3.0, 3.0], 4).unwrap();
        assert_eq!(flat.counts.iter().sum::<usize>(), 2);
        assert!(NormHistogram::of(&[], 4).is_none());
    }
}
