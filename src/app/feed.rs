//! The attention view's effects: followed images (picked, dropped or decoded), weights loaded
//! for the view, and the maps it asks of the inference thread or the training worker.

use super::attention_view::{AttentionView, MapSource};
use super::command::UiCommand;
use super::jobs::pick_save_path;
use super::state::{AppState, Level};
use super::threads::Threads;
use crate::analysis::attention::ImageSize;
use crate::worker::inference::{InferenceCommand, InferenceEvent};
use crate::worker::Command;
use std::path::PathBuf;

/// Images the attention view follows at most: each is recomputed every N steps on the worker
/// and drawn in the strip, so fifty dropped at once must not all be taken.
pub const MAX_FOLLOWED_IMAGES: usize = 16;

/// Files dropped on the window that are weights rather than images: weights files, and the
/// folders `load_backbone` reads (a dinoscope run, whose teacher is shown, or one of its
/// `checkpoint-<step>/`); other folders are opened for their images.
pub fn is_weights_file(path: &std::path::Path) -> bool {
    (path.is_dir()
        && (path.join(crate::store::run::CONFIG_FILE).is_file()
            || path.join(crate::store::checkpoint::STATE_FILE).is_file()))
        || path.extension().is_some_and(|e| {
            let e = e.to_string_lossy().to_ascii_lowercase();
            matches!(e.as_str(), "pth" | "pt" | "safetensors" | "bpk")
        })
}

/// The paths dropped on the window this frame, split into (weights, images).
pub fn dropped_files(ctx: &egui::Context) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let dropped: Vec<PathBuf> = ctx.input(|input| {
        input
            .raw
            .dropped_files
            .iter()
            .map(|file| file.path().to_path_buf())
            .filter(|path| !path.as_os_str().is_empty())
            .collect()
    });
    dropped.into_iter().partition(|p| is_weights_file(p))
}

impl Threads {
    /// Picked or dropped paths to follow: a run folder is watched, another folder gives the
    /// images in it, and the files are decoded by a job (a huge or slow file never stalls the
    /// frame), up to [`MAX_FOLLOWED_IMAGES`] in all.
    pub fn open_images(&mut self, paths: Vec<PathBuf>, view: &AttentionView, state: &mut AppState) {
        use crate::store::official_run::is_official_run;
        use crate::worker::follow::is_dinoscope_run;
        let mut files = Vec::new();
        for path in paths {
            if !path.is_dir() {
                files.push(path);
            } else if is_dinoscope_run(&path) || is_official_run(&path) {
                self.watch_folder(path, view.watch_overrides(), view, state);
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
                    state.message(
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
        let room = MAX_FOLLOWED_IMAGES.saturating_sub(view.images.len());
        if files.len() > room {
            state.message(
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
        self.jobs.spawn("decode-images", move || {
            Some(UiCommand::ImagesDecoded(
                files
                    .into_iter()
                    .map(|path| {
                        let image = crate::data::load_rgb(&path).map_err(|e| e.to_string());
                        (path, image)
                    })
                    .collect(),
            ))
        });
    }

    /// Asks the inference thread to load weights; the current ones stay until this succeeds.
    /// `true` when the request went out.
    pub fn request_weights(
        &self,
        path: PathBuf,
        view: &mut AttentionView,
        state: &mut AppState,
    ) -> bool {
        let Some(inference) = &self.inference else {
            state.message(Level::Error, "the inference thread is not running");
            return false;
        };
        let sent = inference.send(InferenceCommand::Load {
            path: path.clone(),
            network: view.network,
            overrides: crate::store::weights::ArchOverrides {
                num_heads: view.heads_override,
                ..Default::default()
            },
        });
        if sent {
            view.loading = true;
            state.message(Level::Info, format!("loading {}...", path.display()));
        } else {
            state.message(
                Level::Warning,
                "still busy with the previous weights; try again",
            );
        }
        sent
    }

    /// Applies one event of the inference thread; `Some(path)` when weights were loaded (the
    /// app remembers them for the next launch).
    pub fn apply_inference(
        &mut self,
        event: InferenceEvent,
        view: &mut AttentionView,
        state: &mut AppState,
        show_loaded: bool,
    ) -> Option<PathBuf> {
        match event {
            InferenceEvent::Loaded { info, load_secs } => {
                state.message(
                    Level::Info,
                    format!("loaded {} in {load_secs:.1} s", info.describe()),
                );
                let path = info.path.clone();
                view.weights_loaded(info, show_loaded);
                self.recompute_loaded(view);
                return Some(path);
            }
            InferenceEvent::Maps {
                source,
                maps,
                skipped,
                elapsed_secs,
            } => {
                if !skipped.is_empty() {
                    state.message(
                        Level::Warning,
                        format!(
                            "too small for one patch at this size: {}; raise the size",
                            skipped.join(", ")
                        ),
                    );
                }
                view.loaded_maps(&source, maps, elapsed_secs);
            }
            InferenceEvent::Similarity(similarity) => state.set_similarity(*similarity),
            InferenceEvent::Error(text) => {
                view.loading = false;
                state.message(Level::Error, text);
            }
        }
        None
    }

    /// The view's images, network, period, size or block changed: the worker gets its new
    /// settings and the loaded weights' maps are recomputed.
    pub fn attention_settings_changed(&mut self, view: &AttentionView, state: &mut AppState) {
        if self.worker.is_some() {
            self.send(Command::SetAttention(view.training_settings()), state);
        }
        if view.loaded.is_some() {
            self.recompute_loaded(view);
        }
    }

    /// Asks the inference thread for the loaded weights' maps; when its queue is full the
    /// request stays pending and `update` asks again on the next frames.
    pub fn recompute_loaded(&mut self, view: &AttentionView) {
        let Some(inference) = &self.inference else {
            return;
        };
        self.recompute_pending = !inference.send(InferenceCommand::Compute {
            images: view.followed(),
            size: view.short_side_px.map(ImageSize::ShortSide),
            layer: view.layer,
        });
    }

    /// The patch inspector: the similarity of one patch to every other, from whichever network
    /// the view shows.
    pub fn inspect_patch(
        &self,
        view: &AttentionView,
        state: &mut AppState,
        image: usize,
        at: (u32, u32),
    ) {
        match view.source {
            MapSource::Training => self.send(Command::Similarity { image, at }, state),
            MapSource::Loaded => {
                let Some(inference) = &self.inference else {
                    return;
                };
                let sent = inference.send(InferenceCommand::Similarity {
                    images: view.followed(),
                    size: view.short_side_px.map(ImageSize::ShortSide),
                    image,
                    at,
                });
                if !sent {
                    state.message(Level::Warning, "the inference thread is busy; click again");
                }
            }
        }
    }

    /// Asks where to save the large map or the head grid, then renders and writes it, both
    /// in one job.
    pub fn export_attention(&self, view: &mut AttentionView, state: &mut AppState, grid: bool) {
        let picture = match view.picture(state, grid) {
            Ok(picture) => picture,
            Err(err) => return state.message(Level::Error, err),
        };
        let name = view.export_name(grid);
        self.jobs.spawn("export-attention", move || {
            let path = pick_save_path(&name, "PNG", &["png"])?;
            super::jobs::saved(picture.write(&path), &path)
        });
    }

    /// Asks where to save the time-lapse, then renders every frame and writes the GIF.
    pub fn export_timelapse(&self, view: &mut AttentionView, state: &mut AppState, grid: bool) {
        let timelapse = match view.timelapse(state, grid) {
            Ok(timelapse) => timelapse,
            Err(err) => return state.message(Level::Error, err),
        };
        self.jobs.spawn("export-timelapse", move || {
            let name = if grid {
                "attention-heads-timelapse.gif"
            } else {
                "attention-timelapse.gif"
            };
            let path = pick_save_path(name, "GIF", &["gif"])?;
            Some(match timelapse.write(&path) {
                Ok(frames) => UiCommand::Message(
                    Level::Info,
                    format!("saved {} ({frames} frames)", path.display()),
                ),
                Err(err) => UiCommand::Message(Level::Error, err),
            })
        });
    }
}

/// The dialog behind "Open image...".
pub fn pick_images() -> Option<UiCommand> {
    rfd::FileDialog::new()
        .add_filter(
            "images",
            &["png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "gif"],
        )
        .pick_files()
        .map(UiCommand::OpenImages)
}

/// The dialog behind "Open weights...".
pub fn pick_weights() -> Option<UiCommand> {
    rfd::FileDialog::new()
        .add_filter("weights", &["pth", "pt", "safetensors", "bpk"])
        .pick_file()
        .map(UiCommand::LoadWeights)
}
