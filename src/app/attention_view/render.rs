//! Pictures of the attention view: the CPU composite of one map (exports and the fallback
//! when the renderer is not wgpu), the per-head grid, and the egui textures cached by
//! everything that changes their pixels.

use super::{AttentionView, FollowedImage, HeadChoice};
use crate::analysis::attention::{
    composite, resized_crop, AttentionMaps, HeadFusion, MapLayers, OverlayStyle,
};
use image::RgbImage;
use std::sync::Arc;

impl AttentionView {
    pub(super) fn values(maps: &AttentionMaps, choice: HeadChoice) -> Vec<f32> {
        match choice {
            HeadChoice::Head(h) => maps.heads.get(h).cloned().unwrap_or_default(),
            HeadChoice::Fused(fusion) => maps.fused(fusion),
            HeadChoice::TokenNorms => maps.token_norms.clone(),
        }
    }

    /// Heat and mask of one choice: the attention's mass mask at the view's threshold, or the
    /// token norms with their outliers as the mask.
    pub(super) fn layers(&self, maps: &AttentionMaps, choice: HeadChoice) -> MapLayers {
        let values = Self::values(maps, choice);
        match choice {
            HeadChoice::TokenNorms if values.len() == maps.grid_rows * maps.grid_cols => {
                MapLayers {
                    rows: maps.grid_rows,
                    cols: maps.grid_cols,
                    heat: crate::analysis::attention::min_max_scaled(&values),
                    mask: crate::analysis::tokens::norm_outliers(&values),
                }
            }
            // Maps without norms (made before they were computed): the mean instead.
            HeadChoice::TokenNorms => MapLayers::new(
                &maps.fused(HeadFusion::Mean),
                maps.grid_rows,
                maps.grid_cols,
                self.threshold,
            ),
            _ => MapLayers::new(&values, maps.grid_rows, maps.grid_cols, self.threshold),
        }
    }

    pub(super) fn style(&self, choice: HeadChoice) -> OverlayStyle {
        OverlayStyle {
            // The norms are the heat: never invisible.
            heat_opacity: if choice == HeadChoice::TokenNorms {
                self.heat_opacity.max(0.6)
            } else {
                self.heat_opacity
            },
            contour: self.contour,
            colour: choice.colour(),
            ..OverlayStyle::default()
        }
    }

    /// The pixels the network saw for `image` under `maps` (cached).
    pub(super) fn crop(&mut self, image: &FollowedImage, maps: &AttentionMaps) -> Arc<RgbImage> {
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
        let layers = self.layers(maps, choice);
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

    /// A texture of the CPU composite, cached by everything that changes its pixels.
    pub(super) fn texture(
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

    /// The PCA picture at one texel per patch (drawn with nearest filtering): of all patches,
    /// or DINOv2's foreground-masked one.
    pub(super) fn pca_texture(
        &mut self,
        ctx: &egui::Context,
        maps: &AttentionMaps,
        step_key: &str,
        foreground: bool,
    ) -> egui::TextureHandle {
        let key = format!(
            "{step_key}|{}|{}|pca{foreground}",
            self.selected,
            fingerprint(maps)
        );
        if let Some((k, texture)) = self.textures.get("pca") {
            if *k == key {
                return texture.clone();
            }
        }
        let rgb = if foreground {
            &maps.pca_foreground_rgb
        } else {
            &maps.pca_rgb
        };
        let colour = egui::ColorImage::from_rgb([maps.grid_cols, maps.grid_rows], rgb);
        let texture = ctx.load_texture("attention-pca", colour, egui::TextureOptions::NEAREST);
        self.textures.insert("pca".into(), (key, texture.clone()));
        texture
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
