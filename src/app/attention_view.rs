//! The attention view: per-head CLS self-attention of the last block, thresholded to keep the
//! top share of the mass, on images the user follows (bundled photos, "Open image…",
//! drag-and-drop). Maps come from the training run (every N steps, with a history scrubber) or
//! from weights loaded with "Open weights…" (official DINO releases, checkpoints, our runs).
//! Overlays are drawn by the WGSL shader when the renderer is wgpu, else composited on the CPU
//! with the same formulas; exports always use the CPU composite.

use super::overlay_gpu::OverlayCallback;
use super::state::{AppState, Level};
use crate::analysis::attention::{
    composite, head_colour, resized_crop, AttentionMaps, HeadFusion, ImageSize, MapLayers,
    OverlayStyle,
};
use crate::store::weights::{BackboneInfo, Network};
use image::RgbImage;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Which map is shown large.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadChoice {
    Head(usize),
    Fused(HeadFusion),
}

impl HeadChoice {
    pub fn label(self) -> String {
        match self {
            HeadChoice::Head(h) => format!("head {h}"),
            HeadChoice::Fused(HeadFusion::Mean) => "mean of heads".into(),
            HeadChoice::Fused(HeadFusion::Min) => "min of heads".into(),
            HeadChoice::Fused(HeadFusion::Max) => "max of heads".into(),
        }
    }

    fn file_stem(self) -> String {
        match self {
            HeadChoice::Head(h) => format!("head{h}"),
            HeadChoice::Fused(HeadFusion::Mean) => "mean".into(),
            HeadChoice::Fused(HeadFusion::Min) => "min".into(),
            HeadChoice::Fused(HeadFusion::Max) => "max".into(),
        }
    }

    fn colour(self) -> [u8; 3] {
        match self {
            HeadChoice::Head(h) => head_colour(Some(h)),
            HeadChoice::Fused(_) => head_colour(None),
        }
    }
}

/// Where the maps come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapSource {
    /// The in-app training run (its teacher or student), every N steps.
    Training,
    /// Weights opened with "Open weights…".
    Loaded,
}

/// An image the view follows.
#[derive(Clone)]
pub struct FollowedImage {
    pub name: String,
    pub image: Arc<RgbImage>,
    /// Unique per image in this session (texture caches key on it).
    pub key: u64,
}

/// Maps of the loaded weights.
pub struct LoadedMaps {
    pub info: BackboneInfo,
    pub maps: Vec<(String, AttentionMaps)>,
    pub elapsed_secs: Option<f64>,
}

/// What the app must tell the threads after this frame.
#[derive(Default)]
pub struct ViewRequests {
    pub open_images: bool,
    pub open_weights: bool,
    /// Worker settings (images, network, period, size) changed.
    pub training_settings: bool,
    /// The loaded weights' maps need recomputing (images or size changed).
    pub recompute_loaded: bool,
    /// Reload the weights with another network.
    pub reload_weights: bool,
    pub export_view: bool,
    pub export_grid: bool,
}

/// Panel state that is not run data: images, choices and cached textures.
pub struct AttentionView {
    pub images: Vec<FollowedImage>,
    pub selected: usize,
    pub threshold: f32,
    pub head: HeadChoice,
    pub heat_opacity: f32,
    pub contour: bool,
    pub source: MapSource,
    pub network: Network,
    pub every_steps: usize,
    /// `None`: the model's default (training crop size, 480 for external weights).
    pub short_side_px: Option<u32>,
    /// Index into the snapshot history; `None` follows the newest.
    pub scrub: Option<usize>,
    pub loaded: Option<LoadedMaps>,
    pub weights_path: Option<PathBuf>,
    /// Heads of loaded weights; `None` = the official convention (width / 64).
    pub heads_override: Option<usize>,
    pub loading: bool,
    /// The WGSL overlay is installed (renderer is wgpu).
    pub gpu: bool,
    next_key: u64,
    crops: HashMap<(u64, (u32, u32), usize), Arc<RgbImage>>,
    textures: HashMap<String, (String, egui::TextureHandle)>,
    pub requests: ViewRequests,
}

impl AttentionView {
    /// Starts with the bundled photos and one image of the embedded training data.
    pub fn new() -> Self {
        let mut view = Self {
            images: Vec::new(),
            selected: 0,
            threshold: 0.6,
            head: HeadChoice::Fused(HeadFusion::Mean),
            heat_opacity: 0.0,
            contour: true,
            source: MapSource::Training,
            network: Network::Teacher,
            every_steps: crate::worker::ATTENTION_EVERY_STEPS,
            short_side_px: None,
            scrub: None,
            loaded: None,
            weights_path: None,
            heads_override: None,
            loading: false,
            gpu: false,
            next_key: 1,
            crops: HashMap::new(),
            textures: HashMap::new(),
            requests: ViewRequests {
                training_settings: true,
                ..Default::default()
            },
        };
        for (name, image) in crate::data::sample_photos() {
            view.push_image(name, image);
        }
        let data = crate::data::SyntheticShapes::new(7, 64, 12);
        let (sample, _) = data.sample_with_mask(0);
        let name = format!(
            "{} (training data)",
            crate::data::SyntheticShapes::CLASS_NAMES[sample.label]
        );
        view.push_image(name, sample.image);
        view
    }

    fn push_image(&mut self, name: String, image: RgbImage) {
        // Names identify maps in events: keep them unique.
        let mut unique = name.clone();
        let mut n = 2;
        while self.images.iter().any(|i| i.name == unique) {
            unique = format!("{name} ({n})");
            n += 1;
        }
        self.images.push(FollowedImage {
            name: unique,
            image: Arc::new(image),
            key: self.next_key,
        });
        self.next_key += 1;
    }

    fn images_changed(&mut self) {
        self.requests.training_settings = true;
        self.requests.recompute_loaded = self.loaded.is_some();
    }

    /// Adds user images (file dialog or drop) and selects the first new one; unreadable files
    /// become status messages and change nothing else.
    pub fn add_files(&mut self, paths: Vec<PathBuf>, state: &mut AppState) {
        let before = self.images.len();
        for path in paths {
            match crate::data::load_rgb(&path) {
                Ok(image) => {
                    let name = path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| path.display().to_string());
                    self.push_image(name, image);
                }
                Err(err) => state.message(Level::Warning, err.to_string()),
            }
        }
        if self.images.len() > before {
            self.selected = before;
            self.images_changed();
        }
    }

    pub fn remove_image(&mut self, index: usize) {
        if index < self.images.len() {
            self.images.remove(index);
            self.selected = self.selected.min(self.images.len().saturating_sub(1));
            self.images_changed();
        }
    }

    /// The worker's settings for this view.
    pub fn training_settings(&self) -> crate::worker::AttentionSettings {
        crate::worker::AttentionSettings {
            images: self.followed(),
            every_steps: self.every_steps,
            network: self.network,
            size: self.short_side_px.map(ImageSize::ShortSide),
        }
    }

    pub fn followed(&self) -> Vec<crate::worker::AttentionImage> {
        self.images
            .iter()
            .map(|i| crate::worker::AttentionImage {
                name: i.name.clone(),
                image: i.image.clone(),
            })
            .collect()
    }

    /// Weights loaded; `show` makes them the source of the maps.
    pub fn weights_loaded(&mut self, info: BackboneInfo, show: bool) {
        self.loading = false;
        self.weights_path = Some(info.path.clone());
        self.network = info.network;
        self.loaded = Some(LoadedMaps {
            info,
            maps: Vec::new(),
            elapsed_secs: None,
        });
        if show {
            self.source = MapSource::Loaded;
        }
        self.requests.recompute_loaded = true;
    }

    pub fn loaded_maps(&mut self, source: &Path, maps: Vec<(String, AttentionMaps)>, secs: f64) {
        if let Some(loaded) = &mut self.loaded {
            if loaded.info.path == source {
                loaded.maps = maps;
                loaded.elapsed_secs = Some(secs);
            }
        }
    }

    /// The maps currently shown and a caption saying where they come from.
    fn current<'a>(
        &'a self,
        state: &'a AppState,
    ) -> Option<(String, &'a [(String, AttentionMaps)])> {
        match self.source {
            MapSource::Training => {
                let snapshot = match self.scrub {
                    Some(i) => state.attention_history.get(i),
                    None => state.attention_history.back(),
                }?;
                Some((
                    format!(
                        "training run · {} after step {}",
                        snapshot.network.label(),
                        snapshot.step + 1
                    ),
                    snapshot.maps.as_slice(),
                ))
            }
            MapSource::Loaded => {
                let loaded = self.loaded.as_ref()?;
                let timing = loaded
                    .elapsed_secs
                    .map(|s| format!(" · maps in {s:.2} s"))
                    .unwrap_or_default();
                Some((
                    format!("{}{timing}", loaded.info.describe()),
                    loaded.maps.as_slice(),
                ))
            }
        }
    }

    fn values(maps: &AttentionMaps, choice: HeadChoice) -> Vec<f32> {
        match choice {
            HeadChoice::Head(h) => maps.heads.get(h).cloned().unwrap_or_default(),
            HeadChoice::Fused(fusion) => maps.fused(fusion),
        }
    }

    fn style(&self, choice: HeadChoice) -> OverlayStyle {
        OverlayStyle {
            heat_opacity: self.heat_opacity,
            contour: self.contour,
            colour: choice.colour(),
            ..OverlayStyle::default()
        }
    }

    /// The pixels the network saw for `image` under `maps` (cached).
    fn crop(&mut self, image: &FollowedImage, maps: &AttentionMaps) -> Arc<RgbImage> {
        let key = (image.key, maps.resized_px, maps.patch_size);
        if self.crops.len() > 64 {
            self.crops.clear();
        }
        self.crops
            .entry(key)
            .or_insert_with(|| {
                Arc::new(resized_crop(&image.image, maps.resized_px, maps.patch_size))
            })
            .clone()
    }

    /// The composite of one map, as exported and as the CPU fallback draws it.
    pub fn render(
        &mut self,
        image_index: usize,
        choice: HeadChoice,
        maps: &AttentionMaps,
    ) -> Option<RgbImage> {
        let image = self.images.get(image_index)?.clone();
        let crop = self.crop(&image, maps);
        let layers = MapLayers::new(
            &Self::values(maps, choice),
            maps.grid_rows,
            maps.grid_cols,
            self.threshold,
        );
        Some(composite(&crop, &layers, &self.style(choice)))
    }

    /// All heads and the mean side by side, 4 px apart: the grid export.
    pub fn render_grid(&mut self, image_index: usize, maps: &AttentionMaps) -> Option<RgbImage> {
        let choices: Vec<HeadChoice> = (0..maps.heads.len())
            .map(HeadChoice::Head)
            .chain([HeadChoice::Fused(HeadFusion::Mean)])
            .collect();
        let tiles: Vec<RgbImage> = choices
            .iter()
            .filter_map(|c| self.render(image_index, *c, maps))
            .collect();
        let (w, h) = tiles.first()?.dimensions();
        let gap = 4;
        let columns = (tiles.len() as u32).min(4);
        let rows = (tiles.len() as u32).div_ceil(columns);
        let mut out = RgbImage::from_pixel(
            columns * w + (columns - 1) * gap,
            rows * h + (rows - 1) * gap,
            image::Rgb([255, 255, 255]),
        );
        for (i, tile) in tiles.iter().enumerate() {
            let (c, r) = (i as u32 % columns, i as u32 / columns);
            image::imageops::replace(
                &mut out,
                tile,
                (c * (w + gap)) as i64,
                (r * (h + gap)) as i64,
            );
        }
        Some(out)
    }

    /// Maps of the selected image in the current source.
    pub fn selected_maps(&self, state: &AppState) -> Option<AttentionMaps> {
        let name = &self.images.get(self.selected)?.name;
        let (_, maps) = self.current(state)?;
        maps.iter().find(|(n, _)| n == name).map(|(_, m)| m.clone())
    }

    /// Writes the large view (`grid == false`) or the per-head grid as PNG.
    pub fn export(&mut self, state: &AppState, path: &Path, grid: bool) -> Result<(), String> {
        let maps = self
            .selected_maps(state)
            .ok_or("no attention maps to export yet")?;
        let picture = if grid {
            self.render_grid(self.selected, &maps)
        } else {
            self.render(self.selected, self.head, &maps)
        }
        .ok_or("nothing to export")?;
        let mut png = std::io::Cursor::new(Vec::new());
        picture
            .write_to(&mut png, image::ImageFormat::Png)
            .map_err(|err| format!("cannot encode {}: {err}", path.display()))?;
        crate::store::run::write_atomically(path, png.get_ref()).map_err(|err| err.to_string())
    }

    /// File name offered by the export dialog.
    pub fn export_name(&self, grid: bool) -> String {
        let image = self
            .images
            .get(self.selected)
            .map(|i| i.name.split('.').next().unwrap_or("image").to_string())
            .unwrap_or_else(|| "image".into());
        let what = if grid {
            "heads".to_string()
        } else {
            self.head.file_stem()
        };
        format!("attention-{image}-{what}-th{:.2}.png", self.threshold)
    }

    /// A texture of the CPU composite, cached by everything that changes its pixels.
    fn texture(
        &mut self,
        ctx: &egui::Context,
        slot: &str,
        image_index: usize,
        choice: HeadChoice,
        maps: Option<&AttentionMaps>,
        step_key: &str,
    ) -> Option<egui::TextureHandle> {
        let image = self.images.get(image_index)?.clone();
        // The caption alone does not change when maps arrive for the same weights: the
        // maps' fingerprint is part of the key.
        let key = format!(
            "{}|{step_key}|{}|{choice:?}|{:.3}|{:.2}|{}",
            image.key,
            maps.map_or(0, fingerprint),
            self.threshold,
            self.heat_opacity,
            self.contour
        );
        if let Some((k, texture)) = self.textures.get(slot) {
            if *k == key {
                return Some(texture.clone());
            }
        }
        let picture = match maps {
            Some(maps) => self.render(image_index, choice, maps)?,
            None => (*image.image).clone(),
        };
        let colour = egui::ColorImage::from_rgb(
            [picture.width() as usize, picture.height() as usize],
            picture.as_raw(),
        );
        let texture = ctx.load_texture(
            format!("attention-{slot}"),
            colour,
            egui::TextureOptions::NEAREST,
        );
        self.textures
            .insert(slot.to_string(), (key, texture.clone()));
        Some(texture)
    }

    /// The PCA picture at one texel per patch (drawn with nearest filtering).
    fn pca_texture(
        &mut self,
        ctx: &egui::Context,
        maps: &AttentionMaps,
        step_key: &str,
    ) -> egui::TextureHandle {
        let key = format!("{step_key}|{}|{}|pca", self.selected, fingerprint(maps));
        if let Some((k, texture)) = self.textures.get("pca") {
            if *k == key {
                return texture.clone();
            }
        }
        let colour = egui::ColorImage::from_rgb([maps.grid_cols, maps.grid_rows], &maps.pca_rgb);
        let texture = ctx.load_texture("attention-pca", colour, egui::TextureOptions::NEAREST);
        self.textures.insert("pca".into(), (key, texture.clone()));
        texture
    }

    /// Draws one overlay into `size`, on the GPU when possible.
    #[allow(clippy::too_many_arguments)]
    fn overlay_ui(
        &mut self,
        ui: &mut egui::Ui,
        slot: &str,
        image_index: usize,
        choice: HeadChoice,
        maps: Option<&AttentionMaps>,
        step_key: &str,
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
                let layers = MapLayers::new(
                    &Self::values(maps, choice),
                    maps.grid_rows,
                    maps.grid_cols,
                    self.threshold,
                );
                let callback = OverlayCallback {
                    slot: slot.to_string(),
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
                    style: self.style(choice),
                };
                ui.painter()
                    .add(eframe::egui_wgpu::Callback::new_paint_callback(
                        rect, callback,
                    ));
                response
            }
            _ => match self.texture(ui.ctx(), slot, image_index, choice, maps, step_key) {
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
    pub fn compact_ui(&mut self, ui: &mut egui::Ui, state: &AppState) -> bool {
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
            .map(|(caption, maps)| (caption, maps.to_vec()));
        match &current {
            Some((caption, _)) => ui.small(caption),
            None => ui.small(format!(
                "Maps appear every {} steps once training runs.",
                self.every_steps
            )),
        };
        let step_key = current.as_ref().map(|(c, _)| c.clone()).unwrap_or_default();
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
                        &format!("compact-{index}"),
                        index,
                        HeadChoice::Fused(HeadFusion::Mean),
                        maps.as_ref(),
                        &step_key,
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
        open_full
    }

    /// The full view: toolbar, image strip, the large selected map and the per-head grid.
    pub fn full_ui(&mut self, ui: &mut egui::Ui, state: &AppState) {
        self.toolbar_ui(ui, state);
        ui.separator();
        let current = self
            .current(state)
            .map(|(caption, maps)| (caption, maps.to_vec()));
        let step_key = current.as_ref().map(|(c, _)| c.clone()).unwrap_or_default();
        self.image_strip_ui(ui, current.as_ref().map(|(_, m)| m.as_slice()), &step_key);
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
        if let Some(m) = &maps {
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
            self.overlay_ui(
                ui,
                "large",
                self.selected,
                self.head,
                maps.as_ref(),
                &step_key,
                large,
            );
            ui.vertical(|ui| {
                ui.label("Per head (click to show large)");
                let Some(m) = &maps else {
                    ui.small("no maps for this image yet");
                    return;
                };
                let choices: Vec<HeadChoice> = (0..m.heads.len())
                    .map(HeadChoice::Head)
                    .chain([HeadChoice::Fused(HeadFusion::Mean)])
                    .collect();
                egui::Grid::new("head_grid")
                    .spacing([6.0, 6.0])
                    .show(ui, |ui| {
                        for (i, choice) in choices.iter().enumerate() {
                            ui.vertical(|ui| {
                                let response = self.overlay_ui(
                                    ui,
                                    &format!("grid-{i}"),
                                    self.selected,
                                    *choice,
                                    Some(m),
                                    &step_key,
                                    egui::vec2(tile, tile),
                                );
                                if response.clicked() {
                                    self.head = *choice;
                                }
                                let [r, g, b] = choice.colour();
                                let text = egui::RichText::new(choice.label())
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
                                let texture = self.pca_texture(ui.ctx(), m, &step_key);
                                let aspect = m.grid_cols as f32 / m.grid_rows.max(1) as f32;
                                let size = if aspect >= 1.0 {
                                    egui::vec2(tile, tile / aspect)
                                } else {
                                    egui::vec2(tile * aspect, tile)
                                };
                                ui.add(egui::Image::new(&texture).fit_to_exact_size(size));
                                ui.label("patch PCA").on_hover_text(
                                    "The first three principal components of the last layer's patch features as red, green and blue: patches the network sees alike share a colour (foreground vs background once trained).",
                                );
                            });
                        }
                    });
            });
        });
    }

    fn toolbar_ui(&mut self, ui: &mut egui::Ui, state: &AppState) {
        ui.horizontal_wrapped(|ui| {
            if ui
                .button("Open image...")
                .on_hover_text("Follow your own images (you can also drop files on the window).")
                .clicked()
            {
                self.requests.open_images = true;
            }
            if ui
                .button("Open weights...")
                .on_hover_text("Official DINO weights (dino_deitsmall16_pretrain.pth, checkpoint.pth), .safetensors, or a dinoscope run's teacher.bpk.")
                .clicked()
            {
                self.requests.open_weights = true;
            }
            let mut custom_heads = self.heads_override.is_some();
            let checkbox = ui
                .checkbox(&mut custom_heads, "heads")
                .on_hover_text("Heads of the weights to open. Off: the official convention (192→3, 384→6, 768→12 channels).");
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
                    MapSource::Training => self.requests.training_settings = true,
                    MapSource::Loaded => self.requests.reload_weights = true,
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
                        .and_then(|(_, maps)| maps.first().map(|(_, m)| m.heads.len()))
                        .unwrap_or(0);
                    for h in 0..heads {
                        ui.selectable_value(&mut self.head, HeadChoice::Head(h), HeadChoice::Head(h).label());
                    }
                });
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
                self.size_changed();
            }
            if let Some(side) = &mut self.short_side_px {
                if ui
                    .add(egui::DragValue::new(side).range(16..=1024).suffix(" px"))
                    .changed()
                {
                    self.size_changed();
                }
            }
            ui.separator();
            if ui
                .add(egui::DragValue::new(&mut self.every_steps).range(1..=1000).prefix("every ").suffix(" steps"))
                .on_hover_text("How often the worker recomputes the training run's maps.")
                .changed()
            {
                self.requests.training_settings = true;
            }
            ui.separator();
            if ui.button("Export view PNG...").clicked() {
                self.requests.export_view = true;
            }
            if ui.button("Export grid PNG...").clicked() {
                self.requests.export_grid = true;
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

    fn size_changed(&mut self) {
        self.requests.training_settings = true;
        self.requests.recompute_loaded = self.loaded.is_some();
    }

    fn image_strip_ui(
        &mut self,
        ui: &mut egui::Ui,
        maps: Option<&[(String, AttentionMaps)]>,
        step_key: &str,
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
                                    &format!("strip-{index}"),
                                    index,
                                    HeadChoice::Fused(HeadFusion::Mean),
                                    m.as_ref(),
                                    step_key,
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
            self.remove_image(index);
        }
    }
}

impl Default for AttentionView {
    fn default() -> Self {
        Self::new()
    }
}

/// A cheap identity of a set of maps for texture caches (grid, size and the values' bits).
fn fingerprint(maps: &AttentionMaps) -> u64 {
    let mut hash = (maps.grid_rows as u64) << 32 ^ maps.grid_cols as u64;
    hash ^= (maps.resized_px.0 as u64) << 16 ^ maps.resized_px.1 as u64;
    for value in maps.heads.iter().flatten() {
        hash = hash.rotate_left(5) ^ value.to_bits() as u64;
    }
    hash
}

fn truncate(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(chars - 1).collect::<String>())
    }
}
