//! Pictures of the attention view: the CPU composite of one map (exports and the fallback
//! when the renderer is not wgpu), the per-head grid, and the egui textures cached by
//! everything that changes their pixels.

use super::{AttentionView, FollowedImage, HeadChoice};
use crate::analysis::attention::{
    composite, resized_crop, AttentionMaps, HeadFusion, MapLayers, OverlayStyle,
};
use image::RgbImage;
use std::sync::Arc;

/// What a composite's pixels depend on besides the maps: the view's threshold and style,
/// copied so an export job renders on its own thread exactly what the view shows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PictureSettings {
    pub threshold: f32,
    pub heat_opacity: f32,
    pub contour: bool,
}

impl PictureSettings {
    /// For textures that are not composites (PCA, similarity): nothing of the style applies.
    pub const NONE: Self = Self {
        threshold: 0.0,
        heat_opacity: 0.0,
        contour: false,
    };

    /// Heat and mask of one choice: the attention's mass mask at the threshold, or the token
    /// norms with their outliers as the mask.
    pub fn layers(&self, maps: &AttentionMaps, choice: HeadChoice) -> MapLayers {
        let values = AttentionView::values(maps, choice);
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

    pub fn style(&self, choice: HeadChoice) -> OverlayStyle {
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

    /// The composite of one map over the pixels the network saw.
    pub fn render(&self, crop: &RgbImage, maps: &AttentionMaps, choice: HeadChoice) -> RgbImage {
        composite(crop, &self.layers(maps, choice), &self.style(choice))
    }

    /// All heads and the mean side by side, 4 px apart: the grid export.
    pub fn render_grid(&self, crop: &RgbImage, maps: &AttentionMaps) -> Option<RgbImage> {
        let tiles: Vec<RgbImage> = (0..maps.heads.len())
            .map(HeadChoice::Head)
            .chain([HeadChoice::Fused(HeadFusion::Mean)])
            .map(|choice| self.render(crop, maps, choice))
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
}

/// Where on screen a texture is drawn: each slot keeps one texture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ViewSlot {
    /// The compact panel beside the curves, per image.
    Compact(usize),
    /// The image strip, per image.
    Strip(usize),
    Large,
    /// The per-head grid, per tile.
    Grid(usize),
    Pca,
    /// The PCA picture with DINOv2's foreground recipe.
    PcaForeground,
    /// The token norms beside the head grid.
    GridNorms,
    /// The patch inspector, per followed image.
    Similarity(usize),
}

/// Everything that changes a texture's pixels, compared as is: the image, the maps'
/// generation (a number given to each set of maps on arrival, never a hash of their values)
/// and the picture's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TextureKey {
    pub image: u64,
    /// Training snapshots and loaded maps count their generations apart.
    pub source: super::MapSource,
    pub generation: u64,
    pub choice: HeadChoice,
    pub settings: PictureSettings,
}

impl AttentionView {
    pub(super) fn values(maps: &AttentionMaps, choice: HeadChoice) -> Vec<f32> {
        match choice {
            HeadChoice::Head(h) => maps.heads.get(h).cloned().unwrap_or_default(),
            HeadChoice::Fused(fusion) => maps.fused(fusion),
            HeadChoice::TokenNorms => maps.token_norms.clone(),
        }
    }

    pub fn picture_settings(&self) -> PictureSettings {
        PictureSettings {
            threshold: self.threshold,
            heat_opacity: self.heat_opacity,
            contour: self.contour,
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

    /// The composite of one map, as the CPU fallback draws it.
    pub fn render(
        &mut self,
        image_index: usize,
        choice: HeadChoice,
        maps: &AttentionMaps,
    ) -> Option<RgbImage> {
        let image = self.images.get(image_index)?.clone();
        let crop = self.crop(&image, maps);
        Some(self.picture_settings().render(&crop, maps, choice))
    }

    /// A texture of the CPU composite, cached by everything that changes its pixels.
    pub(super) fn texture(
        &mut self,
        ctx: &egui::Context,
        slot: ViewSlot,
        image_index: usize,
        choice: HeadChoice,
        maps: Option<&AttentionMaps>,
        generation: u64,
    ) -> Option<egui::TextureHandle> {
        let image = self.images.get(image_index)?.clone();
        let key = TextureKey {
            image: image.key,
            source: self.source,
            generation: if maps.is_some() { generation } else { 0 },
            choice,
            settings: self.picture_settings(),
        };
        if let Some((k, texture)) = self.textures.get(&slot) {
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
            format!("attention-{slot:?}"),
            colour,
            egui::TextureOptions::NEAREST,
        );
        self.textures.insert(slot, (key, texture.clone()));
        Some(texture)
    }

    /// The PCA picture at one texel per patch (drawn with nearest filtering): of all patches,
    /// or DINOv2's foreground-masked one.
    pub(super) fn pca_texture(
        &mut self,
        ctx: &egui::Context,
        maps: &AttentionMaps,
        generation: u64,
        foreground: bool,
    ) -> egui::TextureHandle {
        let key = TextureKey {
            image: self.images.get(self.selected).map_or(0, |i| i.key),
            source: self.source,
            generation,
            choice: HeadChoice::Fused(HeadFusion::Mean),
            settings: PictureSettings::NONE,
        };
        let slot = if foreground {
            ViewSlot::PcaForeground
        } else {
            ViewSlot::Pca
        };
        if let Some((k, texture)) = self.textures.get(&slot) {
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
        self.textures.insert(slot, (key, texture.clone()));
        texture
    }
}
