//! The attention view's egui panels: the compact strip beside the plots, the full view
//! (toolbar, image strip, large map, per-head grid) and the overlay widget they share, drawn
//! by the WGSL shader when possible.

use super::ViewSlot;
use super::{AttentionView, HeadChoice, MapSource};
use crate::analysis::attention::{AttentionMaps, HeadFusion};
use crate::app::command::{AppContext, CentralTab, UiCommand};
use crate::app::overlay_gpu::OverlayCallback;
use crate::store::weights::Network;

impl AttentionView {
    /// Draws one overlay into `size`, on the GPU when possible.
    #[allow(clippy::too_many_arguments)]
    fn overlay_ui(
        &mut self,
        ui: &mut egui::Ui,
        slot: ViewSlot,
        image_index: usize,
        choice: HeadChoice,
        maps: Option<&AttentionMaps>,
        generation: u64,
        max_size: egui::Vec2,
    ) -> egui::Response {
        let Some(image) = self.images.get(image_index).cloned() else {
            return ui.label("no image");
        };
        let dims = match maps {
            Some(m) => egui::vec2(
                (m.grid_cols * m.patch_size) as f32,
                (m.grid_rows * m.patch_size) as f32,
            ),
            None => egui::vec2(image.image.width() as f32, image.image.height() as f32),
        };
        let scale = (max_size.x / dims.x).min(max_size.y / dims.y).max(0.01);
        let size = dims * scale;
        match (self.gpu, maps) {
            (true, Some(maps)) => {
                let (rect, response) = ui.allocate_exact_size(size, egui::Sense::click());
                let crop = self.crop(&image, maps);
                let settings = self.picture_settings();
                let layers = settings.layers(maps, choice);
                let callback = OverlayCallback {
                    slot,
                    // The crop changes with the resize target: fold it into the key.
                    image_key: image.key << 24
                        ^ (maps.resized_px.0 as u64) << 12
                        ^ maps.resized_px.1 as u64,
                    contour_px: (crate::analysis::attention::contour_width_px(
                        crop.width(),
                        crop.height(),
                    ) as f32)
                        .min(1.5 / scale),
                    image: crop,
                    layers,
                    style: settings.style(choice),
                };
                ui.painter()
                    .add(eframe::egui_wgpu::Callback::new_paint_callback(
                        rect, callback,
                    ));
                response
            }
            _ => match self.texture(ui.ctx(), slot, image_index, choice, maps, generation) {
                Some(texture) => ui.add(
                    egui::Image::new(&texture)
                        .fit_to_exact_size(size)
                        .sense(egui::Sense::click()),
                ),
                None => ui.label("no image"),
            },
        }
    }

    /// Compact panel beside the plots: the mean mask of every followed image.
    pub fn compact_ui(&mut self, ui: &mut egui::Ui, ctx: &AppContext<'_>) {
        let state = ctx.state;
        let mut open_full = false;
        ui.horizontal(|ui| {
            ui.heading("Attention");
            if ui
                .button("Open attention view")
                .on_hover_text("Per-head masks, loaded weights, export.")
                .clicked()
            {
                open_full = true;
            }
        });
        let current = self
            .current(state)
            .map(|shown| (shown.caption, shown.maps.to_vec()));
        let generation = self.current(state).map_or(0, |shown| shown.generation);
        match &current {
            Some((caption, _)) => ui.small(caption),
            None if state.current_run().is_some_and(|run| run.external) => {
                ui.small("Maps appear for each checkpoint the watch evaluates.")
            }
            None => ui.small(format!(
                "Maps appear every {} steps once training runs.",
                self.every_steps
            )),
        };
        ui.horizontal_wrapped(|ui| {
            for index in 0..self.images.len() {
                let name = self.images[index].name.clone();
                let maps = current
                    .as_ref()
                    .and_then(|(_, maps)| maps.iter().find(|(n, _)| *n == name))
                    .map(|(_, m)| m.clone());
                ui.vertical(|ui| {
                    let response = self.overlay_ui(
                        ui,
                        ViewSlot::Compact(index),
                        index,
                        HeadChoice::Fused(HeadFusion::Mean),
                        maps.as_ref(),
                        generation,
                        egui::vec2(100.0, 100.0),
                    );
                    if response.clicked() {
                        self.selected = index;
                        open_full = true;
                    }
                    ui.small(truncate(&name, 16));
                });
            }
        });
        if open_full {
            ctx.send(UiCommand::ShowTab(CentralTab::Attention));
        }
    }

    /// The full view: toolbar, image strip, the large selected map and the per-head grid.
    ///
    /// Long: the tab's panels in screen order.
    pub fn full_ui(&mut self, ui: &mut egui::Ui, ctx: &AppContext<'_>) {
        let state = ctx.state;
        self.toolbar_ui(ui, ctx);
        ui.separator();
        let current = self
            .current(state)
            .map(|shown| (shown.caption, shown.maps.to_vec()));
        let generation = self.current(state).map_or(0, |shown| shown.generation);
        self.image_strip_ui(
            ui,
            ctx,
            current.as_ref().map(|(_, m)| m.as_slice()),
            generation,
        );
        ui.separator();
        match &current {
            Some((caption, _)) => ui.label(caption),
            None => ui.label(match self.source {
                MapSource::Training => format!(
                    "Start training: the maps of the in-app model appear every {} steps.",
                    self.every_steps
                ),
                MapSource::Loaded if self.loading => "Loading weights...".to_string(),
                MapSource::Loaded => {
                    "Open weights... to see a pretrained model (e.g. dino_deitsmall16_pretrain.pth)."
                        .to_string()
                }
            }),
        };
        let Some(image) = self.images.get(self.selected).cloned() else {
            ui.label("Open or drop an image to follow it.");
            return;
        };
        let maps = current
            .as_ref()
            .and_then(|(_, maps)| maps.iter().find(|(n, _)| *n == image.name))
            .map(|(_, m)| m.clone());
        if let (Some(m), HeadChoice::TokenNorms) = (&maps, self.head) {
            let outliers = crate::analysis::tokens::norm_outliers(&m.token_norms);
            ui.small(format!(
                "{} · grid {} × {} (patch {} px) · token norms: {} of {} tokens are outliers (outlined)",
                image.name,
                m.grid_rows,
                m.grid_cols,
                m.patch_size,
                outliers.iter().filter(|o| **o == 1).count(),
                outliers.len()
            ));
        } else if let Some(m) = &maps {
            let coverage = |values: &[f32]| {
                let mask = crate::analysis::attention::mass_mask(values, self.threshold);
                100.0 * mask.iter().filter(|v| **v == 1).count() as f64 / mask.len().max(1) as f64
            };
            ui.small(format!(
                "{} · grid {} × {} (patch {} px) · {} keeps {:.0} % of the patches",
                image.name,
                m.grid_rows,
                m.grid_cols,
                m.patch_size,
                self.head.label(),
                coverage(&Self::values(m, self.head))
            ));
        }
        let available = ui.available_size();
        let large = egui::vec2(
            (available.x * 0.55).max(200.0),
            (available.y - 8.0).clamp(200.0, 640.0),
        );
        // Three tiles per row in what the large view leaves.
        let tile = ((available.x - large.x - 16.0 - 2.0 * 6.0) / 3.0).clamp(60.0, 220.0);
        ui.horizontal_top(|ui| {
            let large_response = self.overlay_ui(
                ui,
                ViewSlot::Large,
                self.selected,
                self.head,
                maps.as_ref(),
                generation,
                large,
            );
            if let (true, Some(m), Some(pos)) = (
                large_response.clicked(),
                &maps,
                large_response.interact_pointer_pos(),
            ) {
                if let Some(at) = Self::clicked_pixel(large_response.rect, pos, m) {
                    ctx.send(UiCommand::InspectPatch {
                        image: self.selected,
                        at,
                    });
                }
            }
            ui.vertical(|ui| {
                let Some(m) = &maps else {
                    ui.label("Per head (click to show large)");
                    ui.small("no maps for this image yet");
                    return;
                };
                ui.label(Self::grid_heading(m, self.depth()));
                let rollout = matches!(m.layer, crate::analysis::layers::MapLayer::Rollout(_));
                let choices: Vec<HeadChoice> = if rollout {
                    vec![HeadChoice::Fused(HeadFusion::Mean)]
                } else {
                    (0..m.heads.len())
                        .map(HeadChoice::Head)
                        .chain([HeadChoice::Fused(HeadFusion::Mean)])
                        .collect()
                };
                egui::Grid::new("head_grid")
                    .spacing([6.0, 6.0])
                    .show(ui, |ui| {
                        for (i, choice) in choices.iter().enumerate() {
                            ui.vertical(|ui| {
                                let response = self.overlay_ui(
                                    ui,
                                    ViewSlot::Grid(i),
                                    self.selected,
                                    *choice,
                                    Some(m),
                                    generation,
                                    egui::vec2(tile, tile),
                                );
                                if response.clicked() {
                                    self.head = *choice;
                                }
                                let [r, g, b] = choice.colour();
                                let label = if rollout { "rollout".to_string() } else { choice.label() };
                                let text = egui::RichText::new(label)
                                    .color(egui::Color32::from_rgb(r, g, b));
                                let text = if *choice == self.head {
                                    text.strong()
                                } else {
                                    text
                                };
                                ui.label(text);
                            });
                            if i % 3 == 2 {
                                ui.end_row();
                            }
                        }
                        if m.pca_rgb.len() == m.grid_rows * m.grid_cols * 3 {
                            ui.vertical(|ui| {
                                // Which PCA picture: a click on it switches (all patches, or
                                // DINOv2's foreground recipe); kept in egui's memory.
                                let id = egui::Id::unique("attention-pca-foreground");
                                let foreground = ui.data(|d| d.get_temp::<bool>(id)).unwrap_or(false)
                                    && m.pca_foreground_rgb.len() == m.pca_rgb.len();
                                let texture = self.pca_texture(ui.ctx(), m, generation, foreground);
                                let aspect = m.grid_cols as f32 / m.grid_rows.max(1) as f32;
                                let size = if aspect >= 1.0 {
                                    egui::vec2(tile, tile / aspect)
                                } else {
                                    egui::vec2(tile * aspect, tile)
                                };
                                let image = egui::Image::new(&texture)
                                    .fit_to_exact_size(size)
                                    .alt_text("PCA picture")
                                    .sense(egui::Sense::click());
                                if ui.add(image).clicked() {
                                    ui.data_mut(|d| d.insert_temp(id, !foreground));
                                }
                                let (label, hover) = if foreground {
                                    ("foreground PCA", "DINOv2's recipe (dinov2 #45): the first principal component of the patch features keeps the patches scoring above 0 (oriented so the image border is background), then 3 components fitted on those patches of all the followed images together, so a part has one colour in every image; the background is black. Click the picture for the PCA of all patches.")
                                } else {
                                    ("patch PCA", "The first three principal components of the last layer's patch features as red, green and blue: patches the network sees alike share a colour (foreground vs background once trained). Click the picture for DINOv2's foreground-masked PCA.")
                                };
                                ui.label(label).on_hover_text(hover);
                            });
                        }
                        if m.token_norms.len() == m.grid_rows * m.grid_cols {
                            ui.vertical(|ui| {
                                let response = self.overlay_ui(
                                    ui,
                                    ViewSlot::GridNorms,
                                    self.selected,
                                    HeadChoice::TokenNorms,
                                    Some(m),
                                    generation,
                                    egui::vec2(tile, tile),
                                );
                                if response.clicked() {
                                    self.head = HeadChoice::TokenNorms;
                                }
                                let text = egui::RichText::new("token norms");
                                let text = if self.head == HeadChoice::TokenNorms {
                                    text.strong()
                                } else {
                                    text
                                };
                                ui.label(text).on_hover_text("The norm of each patch token leaving the last block; the outliers (high-norm tokens) outlined in yellow.");
                            });
                        }
                    });
                Self::distance_chart_ui(ui, m, 3.0 * tile + 12.0);
                self.distance_over_training_ui(
                    ui,
                    &state.distance_history,
                    crate::app::plots::x_label(state),
                    3.0 * tile + 12.0,
                );
                if self.head == HeadChoice::TokenNorms {
                    Self::token_norms_chart_ui(ui, m, 3.0 * tile + 12.0);
                }
                let noun = match (&self.source, &self.loaded) {
                    (MapSource::Loaded, Some(loaded)) => loaded.info.family.register_noun(),
                    _ => "registers",
                };
                Self::registers_ui(ui, m, noun, 3.0 * tile + 12.0);
            });
        });
        self.similarity_ui(ui, state);
    }

    /// Long: the toolbar's widgets in screen order.
    fn toolbar_ui(&mut self, ui: &mut egui::Ui, ctx: &AppContext<'_>) {
        let state = ctx.state;
        ui.horizontal_wrapped(|ui| {
            if ui
                .button("Open image...")
                .on_hover_text("Follow your own images (you can also drop files on the window).")
                .clicked()
            {
                ctx.send(UiCommand::PickImages);
            }
            if ui
                .button("Open weights...")
                .on_hover_text("Official DINO weights (dino_deitsmall16_pretrain.pth, checkpoint.pth), .safetensors, or a dinoscope run's teacher.bpk.")
                .clicked()
            {
                ctx.send(UiCommand::PickWeights);
            }
            let mut custom_heads = self.heads_override.is_some();
            let checkbox = ui
                .checkbox(&mut custom_heads, "heads")
                .on_hover_text("Heads of the weights to open. Off: the official convention of 64 channels per head (3 heads at width 192, 6 at 384, 12 at 768).");
            if checkbox.changed() {
                self.heads_override = custom_heads.then_some(6);
            }
            if let Some(heads) = &mut self.heads_override {
                ui.add(egui::DragValue::new(heads).range(1..=64))
                    .labelled_by(checkbox.id);
            }
            ui.separator();
            ui.label("maps of");
            ui.selectable_value(&mut self.source, MapSource::Training, "training run");
            ui.add_enabled_ui(self.loaded.is_some(), |ui| {
                let label = match &self.loaded {
                    Some(l) => l.info.short_name(),
                    None => "loaded weights".into(),
                };
                ui.selectable_value(&mut self.source, MapSource::Loaded, label);
            });
            ui.separator();
            let before = self.network;
            ui.selectable_value(&mut self.network, Network::Teacher, "teacher");
            ui.selectable_value(&mut self.network, Network::Student, "student");
            if self.network != before {
                match self.source {
                    MapSource::Training => ctx.send(UiCommand::AttentionSettingsChanged),
                    MapSource::Loaded => ctx.send(UiCommand::ReloadWeights),
                }
            }
        });
        ui.horizontal_wrapped(|ui| {
            ui.add(egui::Slider::new(&mut self.threshold, 0.0..=1.0).text("mass kept"))
                .on_hover_text("Each mask keeps the fewest patches that hold this share of the head's attention (the paper uses 0.6).");
            egui::ComboBox::from_label("large map")
                .selected_text(self.head.label())
                .show_ui(ui, |ui| {
                    for fusion in [HeadFusion::Mean, HeadFusion::Min, HeadFusion::Max] {
                        let choice = HeadChoice::Fused(fusion);
                        ui.selectable_value(&mut self.head, choice, choice.label());
                    }
                    let heads = self
                        .current(state)
                        .and_then(|shown| shown.maps.first().map(|(_, m)| m.heads.len()))
                        .unwrap_or(0);
                    for h in 0..heads {
                        ui.selectable_value(&mut self.head, HeadChoice::Head(h), HeadChoice::Head(h).label());
                    }
                    ui.selectable_value(&mut self.head, HeadChoice::TokenNorms, "token norms (outliers outlined)");
                });
            self.layer_picker_ui(ui, ctx);
            ui.add(egui::Slider::new(&mut self.heat_opacity, 0.0..=1.0).text("heat map"))
                .on_hover_text("Opacity of the raw attention (viridis, min–max per map) over the image.");
            ui.checkbox(&mut self.contour, "outline");
        });
        ui.horizontal_wrapped(|ui| {
            let mut custom = self.short_side_px.is_some();
            let default_side = match (&self.source, &self.loaded) {
                (MapSource::Loaded, Some(l)) => l.info.default_short_side_px,
                _ => 0,
            };
            if ui
                .checkbox(&mut custom, "custom size")
                .on_hover_text("Short side of the image fed to the network (default: the training crop size, 480 px for pretrained weights).")
                .changed()
            {
                self.short_side_px = custom.then_some(if default_side > 0 { default_side } else { 224 });
                ctx.send(UiCommand::AttentionSettingsChanged);
            }
            if let Some(side) = &mut self.short_side_px {
                if ui
                    .add(egui::DragValue::new(side).range(16..=1024).suffix(" px"))
                    .changed()
                {
                    ctx.send(UiCommand::AttentionSettingsChanged);
                }
            }
            ui.separator();
            if ui
                .add(egui::DragValue::new(&mut self.every_steps).range(1..=1000).prefix("every ").suffix(" steps"))
                .on_hover_text("How often the worker recomputes the training run's maps.")
                .changed()
            {
                ctx.send(UiCommand::AttentionSettingsChanged);
            }
            ui.separator();
            if ui.button("Export view PNG...").clicked() {
                ctx.send(UiCommand::ExportAttention { grid: false });
            }
            if ui.button("Export grid PNG...").clicked() {
                ctx.send(UiCommand::ExportAttention { grid: true });
            }
            let snapshots = state.attention_history.len();
            let can_lapse = self.source == MapSource::Training && snapshots > 1;
            if ui
                .add_enabled(can_lapse, egui::Button::new("Export time-lapse GIF..."))
                .on_hover_text("The history's snapshots of this image as an animated GIF of the large map, the step under each frame: how the masks formed.")
                .clicked()
            {
                ctx.send(UiCommand::ExportTimelapse { grid: false });
            }
            if ui
                .add_enabled(can_lapse, egui::Button::new("Grid time-lapse..."))
                .on_hover_text("The same as an animated GIF of every head's map and the mean.")
                .clicked()
            {
                ctx.send(UiCommand::ExportTimelapse { grid: true });
            }
        });
        if self.source == MapSource::Training {
            let count = state.attention_history.len();
            if count > 1 {
                let mut index = self.scrub.unwrap_or(count - 1).min(count - 1);
                let response = ui.add(
                    egui::Slider::new(&mut index, 0..=count - 1)
                        .text("history")
                        .custom_formatter(|i, _| {
                            state
                                .attention_history
                                .get(i as usize)
                                .map(|s| format!("step {}", s.step + 1))
                                .unwrap_or_default()
                        }),
                );
                if response.changed() {
                    self.scrub = (index + 1 < count).then_some(index);
                }
            }
        }
    }

    fn image_strip_ui(
        &mut self,
        ui: &mut egui::Ui,
        ctx: &AppContext<'_>,
        maps: Option<&[(String, AttentionMaps)]>,
        generation: u64,
    ) {
        let mut remove = None;
        egui::ScrollArea::horizontal()
            .id_salt("image_strip")
            .show(ui, |ui| {
                ui.horizontal(|ui| {
                    for index in 0..self.images.len() {
                        let name = self.images[index].name.clone();
                        let m = maps
                            .and_then(|maps| maps.iter().find(|(n, _)| *n == name))
                            .map(|(_, m)| m.clone());
                        ui.vertical(|ui| {
                            let frame = if index == self.selected {
                                egui::Frame::new().stroke(ui.visuals().selection.stroke)
                            } else {
                                egui::Frame::new()
                            };
                            frame.inner_margin(2).show(ui, |ui| {
                                let response = self.overlay_ui(
                                    ui,
                                    ViewSlot::Strip(index),
                                    index,
                                    HeadChoice::Fused(HeadFusion::Mean),
                                    m.as_ref(),
                                    generation,
                                    egui::vec2(72.0, 72.0),
                                );
                                if response.clicked() {
                                    self.selected = index;
                                }
                                response.context_menu(|ui| {
                                    if ui.button("Stop following").clicked() {
                                        remove = Some(index);
                                    }
                                });
                            });
                            ui.small(truncate(&name, 12));
                        });
                    }
                });
            });
        if let Some(index) = remove {
            if self.remove_image(index) {
                ctx.send(UiCommand::AttentionSettingsChanged);
            }
        }
    }
}

fn truncate(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(chars - 1).collect::<String>())
    }
}
