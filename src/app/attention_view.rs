//! The attention panel: the teacher's last-block CLS attention on followed images, thresholded
//! to keep the top share of the mass, as it forms during training. Images come from the
//! embedded dataset, "Open image…" or drag-and-drop; the worker computes the maps.

use super::state::AppState;
use crate::attention::{mass_mask, upsample_nearest, AttentionMaps, HeadFusion};
use crate::export::viridis;
use image::RgbImage;
use std::collections::HashMap;
use std::sync::Arc;

/// Which map is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadChoice {
    Head(usize),
    Fused(HeadFusion),
}

/// Panel state that is not plain run data: images, choices and cached textures.
pub struct AttentionView {
    pub images: Vec<(String, Arc<RgbImage>)>,
    pub threshold: f32,
    pub head: HeadChoice,
    /// Index into the snapshot history; `None` follows the newest.
    pub scrub: Option<usize>,
    textures: HashMap<String, (String, egui::TextureHandle)>,
    pub images_changed: bool,
}

impl AttentionView {
    /// Starts with three images of the embedded dataset so the panel has content at once.
    pub fn new() -> Self {
        let data = crate::data::SyntheticShapes::new(7, 64, 12);
        let images = [0usize, 3, 5]
            .iter()
            .map(|&i| {
                let (sample, _) = data.sample_with_mask(i);
                let name = crate::data::SyntheticShapes::CLASS_NAMES[sample.label].to_string();
                (name, Arc::new(sample.image))
            })
            .collect();
        Self {
            images,
            threshold: 0.6,
            head: HeadChoice::Fused(HeadFusion::Mean),
            scrub: None,
            textures: HashMap::new(),
            images_changed: true,
        }
    }

    /// Adds user images (file dialog or drop); unreadable files become status messages.
    pub fn add_files(&mut self, paths: Vec<std::path::PathBuf>, state: &mut AppState) {
        for path in paths {
            match crate::data::load_rgb(&path) {
                Ok(image) => {
                    let name = path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| path.display().to_string());
                    self.images.push((name, Arc::new(image)));
                    self.images_changed = true;
                }
                Err(err) => state.message(super::state::Level::Warning, err.to_string()),
            }
        }
    }

    fn values(&self, maps: &AttentionMaps) -> Vec<f32> {
        match self.head {
            HeadChoice::Head(h) => maps.heads.get(h).cloned().unwrap_or_default(),
            HeadChoice::Fused(fusion) => maps.fused(fusion),
        }
    }

    /// The panel; `open_dialog` is set when the user asks for the file dialog.
    pub fn panel_ui(&mut self, ui: &mut egui::Ui, state: &AppState, open_dialog: &mut bool) {
        ui.heading("Attention (teacher, last block)");
        ui.horizontal(|ui| {
            if ui
                .button("Open image...")
                .on_hover_text("Follow your own images (you can also drop files on the window).")
                .clicked()
            {
                *open_dialog = true;
            }
        });
        ui.add(egui::Slider::new(&mut self.threshold, 0.0..=1.0).text("mass kept"))
            .on_hover_text("Each mask keeps the fewest patches that hold this share of the attention (the paper uses 0.6).");
        let heads = state
            .attention_history
            .back()
            .and_then(|s| s.maps.first())
            .map(|(_, m)| m.heads.len())
            .unwrap_or(0);
        let label = |choice: HeadChoice| match choice {
            HeadChoice::Head(h) => format!("head {h}"),
            HeadChoice::Fused(HeadFusion::Mean) => "mean of heads".into(),
            HeadChoice::Fused(HeadFusion::Min) => "min of heads".into(),
            HeadChoice::Fused(HeadFusion::Max) => "max of heads".into(),
        };
        egui::ComboBox::from_label("map")
            .selected_text(label(self.head))
            .show_ui(ui, |ui| {
                for fusion in [HeadFusion::Mean, HeadFusion::Min, HeadFusion::Max] {
                    let choice = HeadChoice::Fused(fusion);
                    ui.selectable_value(&mut self.head, choice, label(choice));
                }
                for h in 0..heads {
                    ui.selectable_value(
                        &mut self.head,
                        HeadChoice::Head(h),
                        label(HeadChoice::Head(h)),
                    );
                }
            });
        let count = state.attention_history.len();
        if count == 0 {
            ui.label("Maps appear every 10 steps once training runs.");
        } else {
            let mut index = self.scrub.unwrap_or(count - 1).min(count - 1);
            let response = ui.add(egui::Slider::new(&mut index, 0..=count - 1).text("history"));
            if response.changed() {
                self.scrub = (index + 1 < count).then_some(index);
            }
        }
        let snapshot = match self.scrub {
            Some(i) => state.attention_history.get(i),
            None => state.attention_history.back(),
        };
        if let Some(snapshot) = snapshot {
            ui.label(format!("after step {}", snapshot.step + 1));
        }
        let thumb = 110.0;
        ui.horizontal_wrapped(|ui| {
            for (name, image) in &self.images {
                let maps = snapshot
                    .and_then(|s| s.maps.iter().find(|(n, _)| n == name))
                    .map(|(_, m)| m);
                let key = format!(
                    "{name}|{:?}|{:?}|{:.3}",
                    snapshot.map(|s| s.step),
                    self.head,
                    self.threshold
                );
                let stale = self.textures.get(name).is_none_or(|(k, _)| *k != key);
                if stale {
                    let colour = match maps {
                        Some(maps) => overlay(image, maps, &self.values(maps), self.threshold),
                        None => to_colour_image(image),
                    };
                    let texture = ui.ctx().load_texture(
                        format!("attention-{name}"),
                        colour,
                        egui::TextureOptions::NEAREST,
                    );
                    self.textures.insert(name.clone(), (key, texture));
                }
                if let Some((_, texture)) = self.textures.get(name) {
                    ui.vertical(|ui| {
                        ui.add(
                            egui::Image::new(texture).fit_to_exact_size(egui::vec2(thumb, thumb)),
                        );
                        ui.small(name);
                    });
                }
            }
        });
    }
}

impl Default for AttentionView {
    fn default() -> Self {
        Self::new()
    }
}

fn to_colour_image(image: &RgbImage) -> egui::ColorImage {
    let (w, h) = image.dimensions();
    egui::ColorImage::from_rgb([w as usize, h as usize], image.as_raw())
}

/// The image at the map's resolution with the heat map blended in and the mask tinted red
/// (the official blend: pixel·(1 − 0.5·mask) + 0.5·mask·red).
fn overlay(
    image: &RgbImage,
    maps: &AttentionMaps,
    values: &[f32],
    threshold: f32,
) -> egui::ColorImage {
    let (rows, cols, p) = (maps.grid_rows, maps.grid_cols, maps.patch_size);
    let (w, h) = (cols * p, rows * p);
    if values.len() != rows * cols || w == 0 || h == 0 {
        return to_colour_image(image);
    }
    let shown = image::imageops::resize(
        image,
        w as u32,
        h as u32,
        image::imageops::FilterType::Triangle,
    );
    let mask = upsample_nearest(&mass_mask(values, threshold), rows, cols, p);
    let heat = upsample_nearest(values, rows, cols, p);
    let (lo, hi) = heat
        .iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    let span = (hi - lo).max(1e-12);
    let mut rgb = Vec::with_capacity(w * h * 3);
    for (i, pixel) in shown.pixels().enumerate() {
        let colour = viridis((heat[i] - lo) / span);
        let m = mask[i] as f32;
        for (c, (&px, &heat_c)) in pixel.0.iter().zip(colour.iter()).enumerate() {
            let base = 0.6 * px as f32 + 0.4 * heat_c as f32;
            let red = if c == 0 { 255.0 } else { 0.0 };
            rgb.push((base * (1.0 - 0.5 * m) + 0.5 * m * red).round() as u8);
        }
    }
    egui::ColorImage::from_rgb([w, h], &rgb)
}
