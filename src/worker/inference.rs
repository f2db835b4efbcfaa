//! The inference thread: loads external weights ("Open weights…", official DINO `.pth`,
//! safetensors, our runs) and computes attention maps for the followed images, so neither the
//! UI nor a running training ever waits for it. Plain data in and out, like the worker.

use super::handle::{ThreadHandle, ThreadSpec};
use super::{AttentionImage, Waker};
use crate::analysis::attention::{AttentionMaps, ImageSize};
use crate::analysis::layers::{maps_of_images, MapLayer};
use crate::store::weights::{load_backbone, ArchOverrides, BackboneInfo, LoadedBackbone, Network};
use burn::prelude::Device;
use std::path::PathBuf;
use std::time::Instant;

/// UI → inference thread.
#[derive(Clone, Debug)]
pub enum InferenceCommand {
    /// Load weights (replacing the loaded ones only if this succeeds).
    Load {
        path: PathBuf,
        network: Network,
        overrides: ArchOverrides,
    },
    /// Compute maps of the loaded weights for these images; `None` size = the weights' default.
    Compute {
        images: Vec<AttentionImage>,
        size: Option<ImageSize>,
        layer: MapLayer,
    },
    /// The patch inspector on the loaded weights (as `Command::Similarity`).
    Similarity {
        images: Vec<AttentionImage>,
        size: Option<ImageSize>,
        image: usize,
        at: (u32, u32),
    },
    Shutdown,
}

/// Inference thread → UI.
#[derive(Clone, Debug)]
pub enum InferenceEvent {
    Loaded {
        info: BackboneInfo,
        load_secs: f64,
    },
    Maps {
        /// File the maps come from (a later Load may already be under way).
        source: PathBuf,
        maps: Vec<(String, AttentionMaps)>,
        /// Images too small for one patch at the requested size.
        skipped: Vec<String>,
        elapsed_secs: f64,
    },
    Similarity(Box<crate::analysis::tokens::Similarity>),
    Error(String),
}

pub struct InferenceHandle {
    thread: ThreadHandle<InferenceCommand, InferenceEvent>,
}

impl InferenceHandle {
    pub fn spawn(device: Device, waker: Waker) -> std::io::Result<Self> {
        let spec = ThreadSpec {
            name: "inference",
            command_queue: 16,
            event_queue: 64,
        };
        let thread = ThreadHandle::spawn(
            spec,
            waker,
            Some(|| InferenceCommand::Shutdown),
            move |ends| {
                let mut loaded: Option<LoadedBackbone> = None;
                while let Ok(command) = ends.commands.recv() {
                    // A panic in burn (e.g. a device error) becomes a message, not a dead thread.
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        handle(command, &mut loaded, &device)
                    }));
                    let event = match outcome {
                        Ok(Some(Ok(event))) => event,
                        Ok(Some(Err(message))) => InferenceEvent::Error(message),
                        Ok(None) => return,
                        Err(_) => InferenceEvent::Error(
                            "computing attention maps failed unexpectedly; the loaded weights are kept"
                                .into(),
                        ),
                    };
                    if !ends.emit(event) {
                        return;
                    }
                }
            },
        )?;
        Ok(Self { thread })
    }

    /// Queues a command; false if the queue is full (the UI tries again on the next change).
    pub fn send(&self, command: InferenceCommand) -> bool {
        self.thread.try_send(command).is_ok()
    }

    pub fn try_recv(&self) -> Option<InferenceEvent> {
        self.thread.try_recv()
    }

    /// Stops the thread after the command in hand, draining its events while it is joined.
    pub fn shutdown(&mut self) {
        self.thread.shutdown();
    }
}

/// `None` ends the thread.
fn handle(
    command: InferenceCommand,
    loaded: &mut Option<LoadedBackbone>,
    device: &Device,
) -> Option<Result<InferenceEvent, String>> {
    match command {
        InferenceCommand::Shutdown => None,
        InferenceCommand::Load {
            path,
            network,
            overrides,
        } => {
            let started = Instant::now();
            Some(match load_backbone(&path, network, &overrides, device) {
                Ok(backbone) => {
                    let info = backbone.info.clone();
                    *loaded = Some(backbone);
                    Ok(InferenceEvent::Loaded {
                        info,
                        load_secs: started.elapsed().as_secs_f64(),
                    })
                }
                Err(err) => Err(err.to_string()),
            })
        }
        InferenceCommand::Similarity {
            images,
            size,
            image,
            at,
        } => {
            let Some(model) = loaded.as_ref() else {
                return Some(Err("no weights loaded; use Open weights... first".into()));
            };
            let size = size.unwrap_or(ImageSize::ShortSide(model.info.default_short_side_px));
            let named: Vec<(String, &image::RgbImage)> = images
                .iter()
                .map(|i| (i.name.clone(), i.image.as_ref()))
                .collect();
            Some(
                crate::analysis::tokens::similarity_across(
                    &model.backbone,
                    &named,
                    |img| size.resolve(img.dimensions()),
                    image,
                    at,
                    device,
                )
                .map(|s| InferenceEvent::Similarity(Box::new(s)))
                .ok_or_else(|| "no patch there: click inside the image".to_string()),
            )
        }
        InferenceCommand::Compute {
            images,
            size,
            layer,
        } => {
            let Some(model) = loaded.as_ref() else {
                return Some(Err("no weights loaded; use Open weights... first".into()));
            };
            let started = Instant::now();
            let size = size.unwrap_or(ImageSize::ShortSide(model.info.default_short_side_px));
            let mut maps = Vec::new();
            let mut skipped = Vec::new();
            // All images in one call: the foreground PCA is fitted across them.
            let found = maps_of_images(
                &model.backbone,
                images
                    .iter()
                    .map(|image| (&*image.image, size.resolve(image.image.dimensions()))),
                device,
                layer,
                false,
            );
            for (image, found) in images.iter().zip(found) {
                match found {
                    Some(m) => maps.push((image.name.clone(), m)),
                    None => skipped.push(image.name.clone()),
                }
            }
            Some(Ok(InferenceEvent::Maps {
                source: model.info.path.clone(),
                maps,
                skipped,
                elapsed_secs: started.elapsed().as_secs_f64(),
            }))
        }
    }
}
