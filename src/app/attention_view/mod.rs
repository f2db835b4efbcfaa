//! The attention view: per-head CLS self-attention of the last block, thresholded to keep the
//! top share of the mass, on images the user follows (bundled photos, "Open image…",
//! drag-and-drop). Maps come from the training run (every N steps, with a history scrubber) or
//! from weights loaded with "Open weights…" (official DINO releases, checkpoints, our runs).
//! Overlays are drawn by the WGSL shader when the renderer is wgpu, else composited on the CPU
//! with the same formulas; exports always use the CPU composite.
//!
//! This file: the view's state (followed images, choices, loaded maps) and the export jobs;
//! what the view asks of the threads goes out as `UiCommand`s; `render.rs`: CPU composites and cached textures; `ui.rs`: the egui
//! panels; `registers_ui.rs`: the registers panel (DINOv2/v3).

mod layers_ui;
mod registers_ui;
mod render;
pub use render::{PictureSettings, TextureKey, ViewSlot};
mod ui;

use super::state::{AppState, Level};
use crate::analysis::attention::{head_colour, AttentionMaps, HeadFusion, ImageSize};
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
    /// The last layer's patch-token norms as the heat, the outlier tokens outlined.
    TokenNorms,
}

impl HeadChoice {
    pub fn label(self) -> String {
        match self {
            HeadChoice::Head(h) => format!("head {h}"),
            HeadChoice::Fused(HeadFusion::Mean) => "mean of heads".into(),
            HeadChoice::Fused(HeadFusion::Min) => "min of heads".into(),
            HeadChoice::Fused(HeadFusion::Max) => "max of heads".into(),
            HeadChoice::TokenNorms => "token norms".into(),
        }
    }

    fn file_stem(self) -> String {
        match self {
            HeadChoice::Head(h) => format!("head{h}"),
            HeadChoice::Fused(HeadFusion::Mean) => "mean".into(),
            HeadChoice::Fused(HeadFusion::Min) => "min".into(),
            HeadChoice::Fused(HeadFusion::Max) => "max".into(),
            HeadChoice::TokenNorms => "token-norms".into(),
        }
    }

    fn colour(self) -> [u8; 3] {
        match self {
            HeadChoice::Head(h) => head_colour(Some(h)),
            HeadChoice::Fused(_) => head_colour(None),
            HeadChoice::TokenNorms => TOKEN_NORM_COLOUR,
        }
    }
}

/// Outliers of the token norms are outlined in yellow, as `attention --token-norms` draws them.
pub const TOKEN_NORM_COLOUR: [u8; 3] = [255, 255, 0];

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
    /// Given on arrival, new for each set of maps (texture caches key on it).
    pub generation: u64,
    pub elapsed_secs: Option<f64>,
}

/// What the view shows now.
struct ShownMaps<'a> {
    caption: String,
    maps: &'a [(String, AttentionMaps)],
    /// Texture caches key on it (see `TextureKey`).
    generation: u64,
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
    /// Which block's heads the maps show, or rollout (the worker and the inference thread
    /// compute what this says).
    pub layer: crate::analysis::layers::MapLayer,
    /// Blocks of the training run's model (for the layer picker; set at each Start).
    pub training_depth: usize,
    next_key: u64,
    crops: HashMap<(u64, (u32, u32), usize), Arc<RgbImage>>,
    textures: HashMap<ViewSlot, (TextureKey, egui::TextureHandle)>,
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
            layer: crate::analysis::layers::MapLayer::Last,
            training_depth: crate::config::Config::default().vit_arch().depth,
            next_key: 1,
            crops: HashMap::new(),
            textures: HashMap::new(),
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

    /// Adds user images (decoded off the UI thread) and selects the first new one; files that
    /// are not images become status messages and change nothing else. `true` when the
    /// followed images changed.
    pub fn add_decoded(
        &mut self,
        decoded: Vec<(PathBuf, Result<RgbImage, String>)>,
        state: &mut AppState,
    ) -> bool {
        let before = self.images.len();
        for (path, image) in decoded {
            match image {
                // Two drops decoded at once can ask for more than there is room for.
                Ok(_) if self.images.len() >= crate::app::feed::MAX_FOLLOWED_IMAGES => {
                    state.message(
                        Level::Warning,
                        format!(
                            "{}: the attention view already follows {} images",
                            path.display(),
                            self.images.len()
                        ),
                    );
                }
                Ok(image) => {
                    let name = path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| path.display().to_string());
                    self.push_image(name, image);
                }
                Err(err) => state.message(Level::Warning, err),
            }
        }
        let added = self.images.len() > before;
        if added {
            self.selected = before;
        }
        added
    }

    /// Stops following one image; `true` when there was one to remove.
    pub fn remove_image(&mut self, index: usize) -> bool {
        if index >= self.images.len() {
            return false;
        }
        self.images.remove(index);
        self.selected = self.selected.min(self.images.len().saturating_sub(1));
        true
    }

    /// What a watch started from the app is told: the view's head override.
    pub fn watch_overrides(&self) -> crate::train::watch::WatchOverrides {
        crate::train::watch::WatchOverrides {
            heads: self.heads_override,
            ..Default::default()
        }
    }

    /// The worker's settings for this view.
    pub fn training_settings(&self) -> crate::worker::AttentionSettings {
        crate::worker::AttentionSettings {
            images: self.followed(),
            every_steps: self.every_steps,
            network: self.network,
            size: self.short_side_px.map(ImageSize::ShortSide),
            layer: self.layer,
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
            generation: 0,
            elapsed_secs: None,
        });
        if show {
            self.source = MapSource::Loaded;
        }
    }

    pub fn loaded_maps(&mut self, source: &Path, maps: Vec<(String, AttentionMaps)>, secs: f64) {
        if let Some(loaded) = &mut self.loaded {
            if loaded.info.path == source {
                loaded.maps = maps;
                self.next_key += 1;
                loaded.generation = self.next_key;
                loaded.elapsed_secs = Some(secs);
            }
        }
    }

    /// The maps currently shown, a caption saying where they come from, and their generation.
    fn current<'a>(&'a self, state: &'a AppState) -> Option<ShownMaps<'a>> {
        match self.source {
            MapSource::Training => {
                let snapshot = match self.scrub {
                    Some(i) => state.attention_history.get(i),
                    None => state.attention_history.back(),
                }?;
                // A watched run's snapshots are its checkpoints' epochs.
                let caption = match state.current_run() {
                    Some(run) if run.watched => format!(
                        "{} · {} at epoch {}",
                        run.label,
                        snapshot.network.label(),
                        snapshot.step
                    ),
                    _ => format!(
                        "training run · {} after step {}",
                        snapshot.network.label(),
                        snapshot.step + 1
                    ),
                };
                Some(ShownMaps {
                    caption,
                    maps: &snapshot.maps,
                    generation: snapshot.generation,
                })
            }
            MapSource::Loaded => {
                let loaded = self.loaded.as_ref()?;
                let timing = loaded
                    .elapsed_secs
                    .map(|s| format!(" · maps in {s:.2} s"))
                    .unwrap_or_default();
                Some(ShownMaps {
                    caption: format!("{}{timing}", loaded.info.describe()),
                    maps: &loaded.maps,
                    generation: loaded.generation,
                })
            }
        }
    }

    /// Maps of the selected image in the current source.
    pub fn selected_maps(&self, state: &AppState) -> Option<AttentionMaps> {
        let name = &self.images.get(self.selected)?.name;
        self.current(state)?
            .maps
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, m)| m.clone())
    }

    /// The pictures of a time-lapse of the selected image: every snapshot in the history,
    /// oldest first, gathered here and rendered by the job that writes the GIF.
    pub fn timelapse(&mut self, state: &AppState, grid: bool) -> Result<Timelapse, String> {
        let image = self
            .images
            .get(self.selected)
            .cloned()
            .ok_or("no image selected")?;
        let mut frames = Vec::new();
        for snapshot in &state.attention_history {
            if let Some((_, maps)) = snapshot.maps.iter().find(|(n, _)| *n == image.name) {
                let crop = self.crop(&image, maps);
                frames.push((crop, maps.clone(), snapshot.step));
            }
        }
        if frames.len() < 2 {
            return Err(
                "a time-lapse needs at least two snapshots of this image: train a little longer"
                    .into(),
            );
        }
        Ok(Timelapse {
            frames,
            settings: self.picture_settings(),
            choice: self.head,
            grid,
        })
    }

    /// The large view (`grid == false`) or the per-head grid of the selected image, gathered
    /// here and rendered by the job that writes the PNG.
    pub fn picture(&mut self, state: &AppState, grid: bool) -> Result<Picture, String> {
        let maps = self
            .selected_maps(state)
            .ok_or("no attention maps to export yet")?;
        let image = self
            .images
            .get(self.selected)
            .cloned()
            .ok_or("no image selected")?;
        Ok(Picture {
            crop: self.crop(&image, &maps),
            maps,
            settings: self.picture_settings(),
            choice: self.head,
            grid,
        })
    }

    /// Renders and writes the time-lapse now (tests; the app runs `Timelapse::write` in a job).
    pub fn export_timelapse(
        &mut self,
        state: &AppState,
        path: &Path,
        grid: bool,
    ) -> Result<usize, String> {
        self.timelapse(state, grid)?.write(path)
    }

    /// Renders and writes the picture now (tests; the app runs `Picture::write` in a job).
    pub fn export(&mut self, state: &AppState, path: &Path, grid: bool) -> Result<(), String> {
        self.picture(state, grid)?.write(path)
    }

    /// Cached textures (one per slot: bounded by the images and tiles on screen).
    pub fn texture_count(&self) -> usize {
        self.textures.len()
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
}

/// One exported picture, with everything it is drawn from.
pub struct Picture {
    crop: Arc<RgbImage>,
    maps: AttentionMaps,
    settings: PictureSettings,
    choice: HeadChoice,
    grid: bool,
}

impl Picture {
    pub fn write(&self, path: &Path) -> Result<(), String> {
        let picture = if self.grid {
            self.settings.render_grid(&self.crop, &self.maps)
        } else {
            Some(self.settings.render(&self.crop, &self.maps, self.choice))
        }
        .ok_or("nothing to export")?;
        let mut png = std::io::Cursor::new(Vec::new());
        picture
            .write_to(&mut png, image::ImageFormat::Png)
            .map_err(|err| format!("cannot encode {}: {err}", path.display()))?;
        crate::store::run::write_atomically(path, png.get_ref()).map_err(|err| err.to_string())
    }
}

/// The frames of a time-lapse GIF: (pixels the network saw, maps, step) per snapshot.
pub struct Timelapse {
    frames: Vec<(Arc<RgbImage>, AttentionMaps, usize)>,
    settings: PictureSettings,
    choice: HeadChoice,
    grid: bool,
}

impl Timelapse {
    /// Renders every frame, the step under each, and writes the GIF; the number of frames.
    pub fn write(&self, path: &Path) -> Result<usize, String> {
        let frames: Vec<(RgbImage, String)> = self
            .frames
            .iter()
            .filter_map(|(crop, maps, step)| {
                let picture = if self.grid {
                    self.settings.render_grid(crop, maps)
                } else {
                    Some(self.settings.render(crop, maps, self.choice))
                };
                picture.map(|p| (p, format!("step {}", step + 1)))
            })
            .collect();
        crate::store::timelapse::write_gif(path, &frames, 250).map_err(|err| err.to_string())?;
        Ok(frames.len())
    }
}

impl Default for AttentionView {
    fn default() -> Self {
        Self::new()
    }
}
