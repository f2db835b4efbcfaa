//! Weights loaded for the attention view (dropped or opened files) and the maps the view asks
//! of the inference thread or the training worker.

use super::attention_view::MapSource;
use super::background::{pick_save_path, Done};
use super::state::Level;
use super::{is_weights_file, CentralTab, DinoscopeApp};
use crate::analysis::attention::ImageSize;
use crate::worker::Command;
use std::path::PathBuf;

/// Images the attention view follows at most: each is recomputed every N steps on the worker
/// and drawn in the strip, so fifty dropped at once must not all be taken.
pub const MAX_FOLLOWED_IMAGES: usize = 16;

impl DinoscopeApp {
    /// Picked or dropped paths to follow: a run folder is watched, another folder gives the
    /// images in it, and the files are decoded on a background thread (a huge or slow file
    /// never stalls the frame), up to [`MAX_FOLLOWED_IMAGES`] in all.
    pub(super) fn open_images(&mut self, paths: Vec<PathBuf>) {
        use crate::store::official_run::is_official_run;
        use crate::worker::follow::is_dinoscope_run;
        let mut files = Vec::new();
        for path in paths {
            if !path.is_dir() {
                files.push(path);
            } else if is_dinoscope_run(&path) || is_official_run(&path) {
                self.watch_folder(path);
            } else {
                let mut inside: Vec<PathBuf> = std::fs::read_dir(&path)
                    .map(|entries| {
                        entries
                            .filter_map(Result::ok)
                            .map(|e| e.path())
                            .filter(|p| p.is_file() && crate::data::is_image_file(p))
                            .collect()
                    })
                    .unwrap_or_default();
                if inside.is_empty() {
                    self.state.message(
                        Level::Warning,
                        format!(
                            "{} is a folder without images in it: drop image files (or a folder of them), weights, or a run folder to watch",
                            path.display()
                        ),
                    );
                }
                inside.sort();
                files.append(&mut inside);
            }
        }
        let room = MAX_FOLLOWED_IMAGES.saturating_sub(self.attention.images.len());
        if files.len() > room {
            self.state.message(
                Level::Warning,
                format!(
                    "the attention view follows at most {MAX_FOLLOWED_IMAGES} images (each is recomputed every few steps): {} of the {} given were left out; right-click a thumbnail to stop following one",
                    files.len() - room,
                    files.len()
                ),
            );
            files.truncate(room);
        }
        if files.is_empty() {
            return;
        }
        self.background.spawn("decode-images", move || {
            Done::ImagesDecoded(
                files
                    .into_iter()
                    .map(|path| {
                        let image = crate::data::load_rgb(&path).map_err(|e| e.to_string());
                        (path, image)
                    })
                    .collect(),
            )
        });
    }

    /// Takes dropped files (images to follow, or weights to load).
    pub(super) fn take_dropped_files(&mut self, ctx: &egui::Context) {
        let dropped: Vec<PathBuf> = ctx.input(|input| {
            input
                .raw
                .dropped_files
                .iter()
                .map(|file| file.path().to_path_buf())
                .filter(|path| !path.as_os_str().is_empty())
                .collect()
        });
        let (weights, images): (Vec<PathBuf>, Vec<PathBuf>) =
            dropped.into_iter().partition(|p| is_weights_file(p));
        if !images.is_empty() {
            self.open_images(images);
        }
        if let Some(path) = weights.into_iter().next() {
            self.load_weights(path);
        }
    }

    /// Asks the inference thread to load weights and shows them in the attention tab; the
    /// current ones stay until this succeeds.
    pub fn load_weights(&mut self, path: PathBuf) {
        self.show_loaded_weights = true;
        self.request_weights(path);
    }

    pub(super) fn request_weights(&mut self, path: PathBuf) {
        let Some(inference) = &self.inference else {
            self.state
                .message(Level::Error, "the inference thread is not running");
            return;
        };
        let sent = inference.send(crate::worker::inference::InferenceCommand::Load {
            path: path.clone(),
            network: self.attention.network,
            overrides: crate::store::weights::ArchOverrides {
                num_heads: self.attention.heads_override,
                ..Default::default()
            },
        });
        if sent {
            self.attention.loading = true;
            if self.show_loaded_weights {
                self.central_tab = CentralTab::Attention;
            }
            self.state
                .message(Level::Info, format!("loading {}...", path.display()));
        } else {
            self.state.message(
                Level::Warning,
                "still busy with the previous weights; try again",
            );
        }
    }

    /// Applies what the inference thread sent.
    pub(super) fn drain_inference(&mut self) {
        use crate::worker::inference::InferenceEvent;
        let Some(inference) = &self.inference else {
            return;
        };
        let mut events = Vec::new();
        while let Some(event) = inference.try_recv() {
            events.push(event);
        }
        for event in events {
            match event {
                InferenceEvent::Loaded { info, load_secs } => {
                    self.state.message(
                        Level::Info,
                        format!("loaded {} in {load_secs:.1} s", info.describe()),
                    );
                    self.prefs.last_weights = Some(info.path.clone());
                    self.prefs.last_weights_heads = self.attention.heads_override;
                    self.attention
                        .weights_loaded(info, self.show_loaded_weights);
                }
                InferenceEvent::Maps {
                    source,
                    maps,
                    skipped,
                    elapsed_secs,
                } => {
                    if !skipped.is_empty() {
                        self.state.message(
                            Level::Warning,
                            format!(
                                "too small for one patch at this size: {}; raise the size",
                                skipped.join(", ")
                            ),
                        );
                    }
                    self.attention.loaded_maps(&source, maps, elapsed_secs);
                }
                InferenceEvent::Similarity(similarity) => self.state.similarity = Some(*similarity),
                InferenceEvent::Error(text) => {
                    self.attention.loading = false;
                    self.state.message(Level::Error, text);
                }
            }
        }
    }

    /// Carries out what the attention view asked for this frame.
    pub(super) fn serve_attention_requests(&mut self) {
        let requests = std::mem::take(&mut self.attention.requests);
        if requests.training_settings && self.worker.is_some() {
            self.send(Command::SetAttention(self.attention.training_settings()));
        }
        if requests.recompute_loaded {
            if let Some(inference) = &self.inference {
                let size = self
                    .attention
                    .short_side_px
                    .map(crate::analysis::attention::ImageSize::ShortSide);
                if !inference.send(crate::worker::inference::InferenceCommand::Compute {
                    images: self.attention.followed(),
                    size,
                    layer: self.attention.layer,
                }) {
                    // Busy: ask again next frame.
                    self.attention.requests.recompute_loaded = true;
                }
            }
        }
        if requests.reload_weights {
            if let Some(path) = self.attention.weights_path.clone() {
                self.load_weights(path);
            }
        }
        // Dialogs run on their own threads; their answers come back through `Background`.
        if requests.open_images {
            self.background.spawn("open-images", || {
                rfd::FileDialog::new()
                    .add_filter(
                        "images",
                        &["png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "gif"],
                    )
                    .pick_files()
                    .map_or(Done::Cancelled, Done::OpenImages)
            });
        }
        if requests.open_weights {
            self.background.spawn("open-weights", || {
                rfd::FileDialog::new()
                    .add_filter("weights", &["pth", "pt", "safetensors", "bpk"])
                    .pick_file()
                    .map_or(Done::Cancelled, Done::OpenWeights)
            });
        }
        if let Some((image, at)) = requests.similarity {
            match self.attention.source {
                MapSource::Training => self.send(Command::Similarity { image, at }),
                MapSource::Loaded => {
                    if let Some(inference) = &self.inference {
                        let sent = inference.send(
                            crate::worker::inference::InferenceCommand::Similarity {
                                images: self.attention.followed(),
                                size: self.attention.short_side_px.map(ImageSize::ShortSide),
                                image,
                                at,
                            },
                        );
                        if !sent {
                            self.state.message(
                                Level::Warning,
                                "the inference thread is busy; click again",
                            );
                        }
                    }
                }
            }
        }
        if let Some(grid) = requests.export_timelapse {
            self.background.spawn("export-timelapse", move || {
                let name = if grid {
                    "attention-heads-timelapse.gif"
                } else {
                    "attention-timelapse.gif"
                };
                pick_save_path(name, "GIF", &["gif"])
                    .map_or(Done::Cancelled, |path| Done::ExportTimelapse { path, grid })
            });
        }
        for grid in [false, true] {
            let wanted = if grid {
                requests.export_grid
            } else {
                requests.export_view
            };
            if wanted {
                let name = self.attention.export_name(grid);
                self.background.spawn("export-attention", move || {
                    pick_save_path(&name, "PNG", &["png"])
                        .map_or(Done::Cancelled, |path| Done::ExportAttention { path, grid })
                });
            }
        }
    }
}
