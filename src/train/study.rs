//! Runs an ablation study: each variant is an [`Engine`] with its own run directory under the
//! study folder, the same seed, data order and step budget. The caller chooses the order, one
//! step at a time: the CLI runs the arms one after the other (one engine in memory at a time),
//! the app interleaves them so every curve grows together. When an arm's last step is done it
//! is evaluated at that step, its teacher looks at the probe image, and it is saved and dropped.

use crate::analysis::attention::{attention_maps, mask_picture, AttentionMaps, OverlayStyle};
use crate::config::study::{StudySpec, Variant};
use crate::config::Config;
use crate::store::rows::StudyRow;
use crate::store::study::{write_study, StudyFiles};
use crate::train::engine::{Engine, EngineEvent};
use crate::train::trainer::TrainError;
use burn::prelude::Device;
use image::RgbImage;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The share of attention mass a mask keeps (the official 0.6).
const MASK_THRESHOLD: f32 = 0.6;

/// What a finished arm leaves: its table row and its teacher's attention on the probe image.
#[derive(Clone, Debug)]
pub struct ArmOutcome {
    pub row: StudyRow,
    pub attention: Option<AttentionMaps>,
    /// The probe image with the mean-head mask drawn on it, as in `attention.png`.
    pub overlay: Option<RgbImage>,
}

/// One variant of the study.
pub struct StudyArm {
    pub variant: Variant,
    config: Config,
    pub run_dir: PathBuf,
    engine: Option<Engine>,
    /// Wall time spent in this arm's steps, evaluations and saves.
    pub busy_secs: f64,
    pub steps_done: usize,
    /// Known once the arm has started.
    pub total_steps: Option<usize>,
    pub outcome: Option<ArmOutcome>,
}

impl StudyArm {
    pub fn is_done(&self) -> bool {
        self.outcome.is_some()
    }
}

pub struct Study {
    pub spec: StudySpec,
    pub dir: PathBuf,
    arms: Vec<StudyArm>,
    device: Device,
    /// The image every arm's attention is shown on (the first held-out image of the data).
    probe: Option<RgbImage>,
}

impl Study {
    /// Resolves every variant's config (an error names the variant and key before anything is
    /// trained) and creates the study folder.
    pub fn new(spec: StudySpec, dir: &Path, device: Device) -> Result<Self, TrainError> {
        let configs = spec
            .variant_configs()
            .map_err(|err| TrainError::Setting(err.to_string()))?;
        // The whole study is checked before its first step: an arm that cannot fit in memory
        // or whose folder is taken by a file would otherwise fail after the others trained.
        for (variant, config) in &configs {
            crate::train::trainer::check_memory(config, &device)
                .map_err(|err| TrainError::Setting(format!("variant `{}`: {err}", variant.name)))?;
            let run_dir = dir.join(&variant.name);
            if run_dir.exists() && !run_dir.is_dir() {
                return Err(TrainError::Setting(format!(
                    "variant `{}`: {} is a file, not a run folder; rename the variant or pick another --out",
                    variant.name,
                    run_dir.display()
                )));
            }
        }
        std::fs::create_dir_all(dir).map_err(|err| {
            TrainError::Setting(format!(
                "cannot create the study folder {}: {err}. Pick another --out directory",
                dir.display()
            ))
        })?;
        let probe = configs.first().and_then(|(_, config)| probe_image(config));
        let arms = configs
            .into_iter()
            .map(|(variant, config)| StudyArm {
                run_dir: dir.join(&variant.name),
                variant,
                config,
                engine: None,
                busy_secs: 0.0,
                steps_done: 0,
                total_steps: None,
                outcome: None,
            })
            .collect();
        Ok(Self {
            spec,
            dir: dir.to_path_buf(),
            arms,
            device,
            probe,
        })
    }

    pub fn arms(&self) -> &[StudyArm] {
        &self.arms
    }

    pub fn is_done(&self) -> bool {
        self.arms.iter().all(StudyArm::is_done)
    }

    /// The first unfinished arm: one engine in memory at a time.
    pub fn next_sequential(&self) -> Option<usize> {
        self.arms.iter().position(|arm| !arm.is_done())
    }

    /// The unfinished arm with the fewest steps (the first of them on a tie): every arm
    /// advances in turn.
    pub fn next_interleaved(&self) -> Option<usize> {
        self.arms
            .iter()
            .enumerate()
            .filter(|(_, arm)| !arm.is_done())
            .min_by_key(|(i, arm)| (arm.steps_done, *i))
            .map(|(i, _)| i)
    }

    /// Builds the arm's engine if it has none yet (its events: warnings of the start).
    pub fn start_arm(&mut self, index: usize) -> Result<Vec<EngineEvent>, TrainError> {
        let Some(arm) = self.arms.get_mut(index) else {
            return Err(TrainError::Internal(format!("no study arm {index}")));
        };
        if arm.engine.is_some() || arm.is_done() {
            return Ok(Vec::new());
        }
        let started = Instant::now();
        let (engine, events) = Engine::start(
            arm.config.clone(),
            self.device.clone(),
            self.spec.steps,
            Some(&arm.run_dir),
        )?;
        arm.total_steps = Some(engine.trainer().total_steps());
        arm.engine = Some(engine);
        arm.busy_secs += started.elapsed().as_secs_f64();
        Ok(events)
    }

    /// The arm's engine (while it trains), for what the front ends show about it.
    pub fn engine(&self, index: usize) -> Option<&Engine> {
        self.arms.get(index).and_then(|arm| arm.engine.as_ref())
    }

    /// One step of the arm (starting it first); after its last step the arm is evaluated,
    /// saved and its engine dropped, and `outcome` is set.
    pub fn step(&mut self, index: usize) -> Result<Vec<EngineEvent>, TrainError> {
        let mut events = self.start_arm(index)?;
        let probe = self.probe.clone();
        let Some(arm) = self.arms.get_mut(index) else {
            return Ok(events);
        };
        let Some(engine) = arm.engine.as_mut() else {
            return Ok(events);
        };
        let started = Instant::now();
        events.extend(engine.step()?);
        arm.steps_done = engine.trainer().steps_done();
        if engine.is_done() {
            events.extend(engine.evaluate_final());
            let attention = probe.as_ref().and_then(|image| {
                let backbone = &engine.trainer().teacher().backbone;
                let size = (image.width(), image.height());
                attention_maps(backbone, image, size, engine.trainer().device())
                    .map(|maps| (overlay(image, &maps), maps))
            });
            let history = engine.history().to_vec();
            let evaluations = engine.evaluations().to_vec();
            if let Some(engine) = arm.engine.take() {
                let (_, finish_events) = engine.finish(true);
                events.extend(finish_events);
            }
            arm.busy_secs += started.elapsed().as_secs_f64();
            let row = StudyRow::summarise(&arm.variant.name, &history, &evaluations, arm.busy_secs);
            let (overlay, attention) = attention.unzip();
            arm.outcome = Some(ArmOutcome {
                row,
                attention,
                overlay,
            });
        } else {
            arm.busy_secs += started.elapsed().as_secs_f64();
        }
        Ok(events)
    }

    /// Ends the arms still training (a Stop, closing the window): each keeps a checkpoint and
    /// its rows in its run directory, so `train --resume` can finish it. Events per arm.
    pub fn stop(&mut self) -> Vec<(usize, Vec<EngineEvent>)> {
        self.arms
            .iter_mut()
            .enumerate()
            .filter_map(|(index, arm)| {
                let engine = arm.engine.take()?;
                let (_, events) = engine.finish(true);
                Some((index, events))
            })
            .collect()
    }

    /// The rows of the finished arms, in the study's order.
    pub fn rows(&self) -> Vec<StudyRow> {
        self.arms
            .iter()
            .filter_map(|arm| arm.outcome.as_ref().map(|o| o.row.clone()))
            .collect()
    }

    /// Writes `study.csv`, `study.md`, `study.toml`, the figures and the attention grid into
    /// the study folder. `machine` names where it ran (for the table's reader).
    pub fn write_outputs(&self, machine: &str) -> Result<StudyFiles, TrainError> {
        let panels: Vec<(String, RgbImage)> = self
            .arms
            .iter()
            .filter_map(|arm| {
                let overlay = arm.outcome.as_ref()?.overlay.clone()?;
                Some((arm.variant.name.clone(), overlay))
            })
            .collect();
        write_study(&self.dir, &self.spec, &self.rows(), &panels, machine)
            .map_err(|err| TrainError::Setting(err.to_string()))
    }
}

/// The mean-head mask (top 60 % of the mass) on the image the network saw, in cyan.
pub fn overlay(image: &RgbImage, maps: &AttentionMaps) -> RgbImage {
    // Cyan: the embedded shapes are often red, the default mask colour.
    let style = OverlayStyle {
        colour: [0, 190, 255],
        ..OverlayStyle::default()
    };
    mask_picture(image, maps, MASK_THRESHOLD, &style)
}

/// The first held-out image of the config's data: for the embedded shapes the first of the
/// k-NN queries (whose true mask the Jaccard uses), else the first bundled photo at the
/// global crop size.
pub fn probe_image(config: &Config) -> Option<RgbImage> {
    use crate::config::DataSource;
    use crate::data::datasets::{SYNTHETIC_VAL_MAX_IMAGES, SYNTHETIC_VAL_SEED_OFFSET};
    match config.data.source {
        DataSource::Synthetic => {
            let held_out = crate::data::SyntheticShapes::new(
                config.seed.wrapping_add(SYNTHETIC_VAL_SEED_OFFSET),
                config.data.image_size,
                config.data.num_images.min(SYNTHETIC_VAL_MAX_IMAGES),
            );
            Some(held_out.sample_with_mask(0).0.image)
        }
        _ => {
            let (_, photo) = crate::data::sample_photos().into_iter().next()?;
            let side = config.data.global_crop_size;
            let (w, h) = photo.dimensions();
            let scale = side as f64 / w.min(h).max(1) as f64;
            Some(image::imageops::resize(
                &photo,
                ((w as f64 * scale).round() as u32).max(side),
                ((h as f64 * scale).round() as u32).max(side),
                image::imageops::FilterType::Triangle,
            ))
        }
    }
}
