//! `Trainer`: the library API every front end drives. Built from a [`Config`], stepped one
//! iteration at a time, re-configured between steps with [`Toggle`]s. The CLI and the app's
//! worker thread are thin loops around it.

use crate::augment::{AugmentConfig, CropBatch, CropLoader, LoaderConfig, LoaderError};
use crate::config::{Config, DataSource};
use crate::data::{DataError, Dataset, ImageFolder, SyntheticShapes};
use crate::datasets::{Cifar, CifarKind, Split, Stl10, StlSplit};
use crate::dino::{dino_loss, update_center, LossOptions, LossStats};
use crate::ema::ema_update;
use crate::model::{DinoModel, VitConfig};
use crate::optim::{build_optimizer, SharedWeightDecay};
use crate::schedule::{teacher_momentum_at, teacher_temp_at_epoch, CosineSchedule};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Loader(#[from] LoaderError),
    #[error("invalid setting: {0}")]
    Setting(String),
    #[error("loss is {loss} at step {step}; training stopped as the reference does. Lower optim.lr or dino.teacher_temp, or raise optim.warmup_epochs")]
    NonFinite { step: usize, loss: f64 },
    #[error(transparent)]
    Checkpoint(crate::checkpoint::CheckpointError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// A change applied between two steps (the live ablation switches).
#[derive(Clone, Debug, PartialEq)]
pub enum Toggle {
    Centering(bool),
    /// Off: the teacher uses the student temperature (0.1), i.e. no sharpening.
    Sharpening(bool),
    /// Replaces the teacher-temperature schedule with this constant.
    TeacherTemp(f64),
    /// Base EMA momentum (cosine to 1 from here); 0 = no momentum teacher.
    MomentumTeacher(f64),
    /// Local crops per image; 0 = no multi-crop.
    LocalCrops(usize),
    /// Multiplier on the lr schedule.
    LrScale(f64),
}

impl std::str::FromStr for Toggle {
    type Err = String;

    /// Parses `centering=off`, `sharpening=on`, `teacher_temp=0.07`, `momentum=0`,
    /// `local_crops=0`, `lr_scale=2` (for scripted demos).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (key, value) = text
            .split_once('=')
            .ok_or_else(|| format!("`{text}`: expected KEY=VALUE, e.g. centering=off"))?;
        let value = value.trim();
        let switch = || match value {
            "on" | "true" | "1" => Ok(true),
            "off" | "false" | "0" => Ok(false),
            _ => Err(format!("`{text}`: use on or off")),
        };
        let number = || {
            value
                .parse::<f64>()
                .map_err(|_| format!("`{text}`: `{value}` is not a number"))
        };
        match key.trim() {
            "centering" => Ok(Toggle::Centering(switch()?)),
            "sharpening" => Ok(Toggle::Sharpening(switch()?)),
            "teacher_temp" => Ok(Toggle::TeacherTemp(number()?)),
            "momentum" | "momentum_teacher" => Ok(Toggle::MomentumTeacher(number()?)),
            "local_crops" => value
                .parse()
                .map(Toggle::LocalCrops)
                .map_err(|_| format!("`{text}`: `{value}` is not a whole number")),
            "lr_scale" => Ok(Toggle::LrScale(number()?)),
            other => Err(format!(
                "`{other}` is not a toggle; use centering, sharpening, teacher_temp, momentum, local_crops or lr_scale"
            )),
        }
    }
}

impl Toggle {
    /// A short label for plot markers: "centering off", "τt = 0.070".
    pub fn label(&self) -> String {
        let on_off = |on: bool| if on { "on" } else { "off" };
        match self {
            Toggle::Centering(on) => format!("centering {}", on_off(*on)),
            Toggle::Sharpening(on) => format!("sharpening {}", on_off(*on)),
            Toggle::TeacherTemp(t) => format!("τt = {t:.3}"),
            Toggle::MomentumTeacher(m) => format!("momentum = {m:.4}"),
            Toggle::LocalCrops(n) => format!("local crops = {n}"),
            Toggle::LrScale(s) => format!("lr scale = {s:.2}"),
        }
    }
}

/// Everything one iteration reports.
#[derive(Clone, Debug, PartialEq)]
pub struct StepMetrics {
    /// Global iteration index of this step (0-based).
    pub step: usize,
    pub epoch: usize,
    pub loss: f64,
    pub teacher_entropy: f64,
    pub kl: f64,
    pub batch_mean_entropy: f64,
    pub lr: f64,
    pub weight_decay: f64,
    pub teacher_momentum: f64,
    /// Temperature the teacher actually used this step.
    pub teacher_temp: f64,
    pub images_per_sec: f64,
    pub step_secs: f64,
    /// Time this step waited for the data loader (≈ 0 when prefetch keeps up).
    pub data_wait_secs: f64,
    pub local_crops: usize,
    pub centering: bool,
    pub sharpening: bool,
    /// Non-fatal data problems met while building this batch (e.g. a skipped corrupt image).
    pub warnings: Vec<String>,
}

impl StepMetrics {
    pub const CSV_HEADER: [&'static str; 17] = [
        "step",
        "epoch",
        "loss",
        "teacher_entropy",
        "kl",
        "batch_mean_entropy",
        "lr",
        "weight_decay",
        "teacher_momentum",
        "teacher_temp",
        "images_per_sec",
        "step_secs",
        "data_wait_secs",
        "local_crops",
        "centering",
        "sharpening",
        "ln_k",
    ];

    pub fn csv_record(&self, ln_k: f64) -> Vec<String> {
        vec![
            self.step.to_string(),
            self.epoch.to_string(),
            format!("{:.6}", self.loss),
            format!("{:.6}", self.teacher_entropy),
            format!("{:.6}", self.kl),
            format!("{:.6}", self.batch_mean_entropy),
            format!("{:.6e}", self.lr),
            format!("{:.6}", self.weight_decay),
            format!("{:.6}", self.teacher_momentum),
            format!("{:.5}", self.teacher_temp),
            format!("{:.2}", self.images_per_sec),
            format!("{:.5}", self.step_secs),
            format!("{:.5}", self.data_wait_secs),
            self.local_crops.to_string(),
            u8::from(self.centering).to_string(),
            u8::from(self.sharpening).to_string(),
            format!("{ln_k:.6}"),
        ]
    }
}

/// Wall time of each phase of the last step, for `dinoscope bench`. On the CPU backend every op
/// runs eagerly, so the split is exact; on wgpu queued work lands in whichever phase syncs next.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PhaseSecs {
    pub data_wait: f64,
    /// Crops to device tensors.
    pub upload: f64,
    pub teacher_forward: f64,
    pub student_forward: f64,
    /// Loss graph and reading its statistics back.
    pub loss: f64,
    pub backward: f64,
    /// Gradient clipping, AdamW, weight decay.
    pub optimizer: f64,
    pub ema: f64,
}

impl PhaseSecs {
    /// The phases in step order with their display names.
    pub fn named(&self) -> [(&'static str, f64); 8] {
        [
            ("data wait", self.data_wait),
            ("upload", self.upload),
            ("teacher forward", self.teacher_forward),
            ("student forward", self.student_forward),
            ("loss", self.loss),
            ("backward", self.backward),
            ("optimizer", self.optimizer),
            ("EMA", self.ema),
        ]
    }
}

/// Settings the toggles change; the schedules read them every step.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LiveSettings {
    pub centering: bool,
    pub sharpening: bool,
    pub warmup_teacher_temp: f64,
    pub teacher_temp: f64,
    pub momentum_teacher: f64,
    pub local_crops: usize,
    pub lr_scale: f64,
}

pub struct Trainer {
    config: Config,
    device: Device,
    student: DinoModel,
    teacher: DinoModel,
    optimizer: ModuleOptimizer,
    weight_decay: SharedWeightDecay,
    center: Tensor<2>,
    loader: CropLoader,
    local_crops_wanted: Arc<AtomicUsize>,
    live: LiveSettings,
    step: usize,
    iters_per_epoch: usize,
    total_iters: usize,
    drop_path_rng: ChaCha8Rng,
    dataset_description: String,
    last_phase_secs: PhaseSecs,
}

impl Trainer {
    /// Builds models, optimiser and data loader. `total_steps` overrides the schedule length
    /// (otherwise `optim.epochs` × iterations per epoch).
    pub fn new(
        config: Config,
        device: Device,
        total_steps: Option<usize>,
    ) -> Result<Self, TrainError> {
        // Checked before opening the data, so a bad `data.path` is a config error.
        validate(&config)?;
        let dataset = open_dataset(&config)?;
        Self::build(config, device, total_steps, dataset, 0)
    }

    /// As [`Trainer::new`] with a dataset the caller built.
    pub fn with_dataset(
        config: Config,
        device: Device,
        total_steps: Option<usize>,
        dataset: Arc<dyn Dataset>,
    ) -> Result<Self, TrainError> {
        validate(&config)?;
        Self::build(config, device, total_steps, dataset, 0)
    }

    /// Continues a run from a checkpoint directory written by [`crate::checkpoint`]: models,
    /// optimiser state, center, step, live settings and random streams are restored and the
    /// loader starts at the next batch, so on the CPU backend the following steps equal those
    /// of an uninterrupted run.
    pub fn resume(checkpoint: &Path, device: Device) -> Result<Self, TrainError> {
        use crate::checkpoint::{read_checkpoint_state, CheckpointFiles};
        let files = CheckpointFiles::in_dir(checkpoint);
        let state = read_checkpoint_state(checkpoint).map_err(TrainError::Checkpoint)?;
        let config =
            Config::from_file(&files.config).map_err(|err| TrainError::Checkpoint(err.into()))?;
        validate(&config)?;
        let dataset = open_dataset(&config)?;
        if dataset.describe() != state.dataset {
            return Err(TrainError::Checkpoint(
                crate::checkpoint::CheckpointError::Mismatch {
                    path: checkpoint.to_path_buf(),
                    what: format!(
                        "the data changed: the checkpoint was trained on \"{}\", the config now opens \"{}\"",
                        state.dataset,
                        dataset.describe()
                    ),
                },
            ));
        }
        let mut trainer =
            Self::build(config, device, Some(state.total_iters), dataset, state.step)?;
        let read_error = |path: &Path, err: String| {
            TrainError::Checkpoint(crate::checkpoint::CheckpointError::Read {
                path: path.to_path_buf(),
                reason: err,
            })
        };
        trainer.student = trainer
            .student
            .clone()
            .try_load_file(&files.student)
            .map_err(|err| read_error(&files.student, format!("{err:?}")))?;
        trainer.teacher = trainer
            .teacher
            .clone()
            .try_load_file(&files.teacher)
            .map_err(|err| read_error(&files.teacher, format!("{err:?}")))?;
        trainer.teacher.backbone = trainer.teacher.backbone.clone().without_drop_path();
        let optimizer =
            build_optimizer(trainer.weight_decay.clone(), trainer.config.optim.clip_grad)
                .map_err(TrainError::Internal)?;
        trainer.optimizer = optimizer
            .load(&files.optimizer)
            .map_err(|err| read_error(&files.optimizer, format!("{err:?}")))?;
        let center = crate::export::read_npy(&files.center)
            .ok()
            .and_then(|npy| npy.to_f32())
            .filter(|values| values.len() == trainer.config.dino.out_dim)
            .ok_or_else(|| {
                read_error(
                    &files.center,
                    format!(
                        "expected {} float32 values (dino.out_dim)",
                        trainer.config.dino.out_dim
                    ),
                )
            })?;
        trainer.center = Tensor::from_data(
            TensorData::new(center, [1, trainer.config.dino.out_dim]),
            &trainer.device,
        );
        trainer
            .local_crops_wanted
            .store(state.live.local_crops, Ordering::Relaxed);
        trainer.live = state.live;
        trainer.drop_path_rng = state.drop_path_rng.restore();
        trainer.step = state.step;
        Ok(trainer)
    }

    /// Writes every file of a checkpoint into `dir` (the caller makes it atomic).
    pub fn write_checkpoint_files(
        &self,
        dir: &Path,
    ) -> Result<(), crate::checkpoint::CheckpointError> {
        use crate::checkpoint::{CheckpointError, CheckpointFiles, CheckpointState, RngState};
        let files = CheckpointFiles::in_dir(dir);
        let write_error = |path: &Path, reason: String| CheckpointError::Write {
            path: path.to_path_buf(),
            reason,
        };
        self.student
            .clone()
            .save_file(&files.student)
            .map_err(|err| write_error(&files.student, format!("{err:?}")))?;
        self.teacher
            .clone()
            .save_file(&files.teacher)
            .map_err(|err| write_error(&files.teacher, format!("{err:?}")))?;
        self.optimizer
            .save(&files.optimizer)
            .map_err(|err| write_error(&files.optimizer, format!("{err:?}")))?;
        let center: Vec<f32> = self
            .center
            .clone()
            .into_data_as::<f32>()
            .as_slice::<f32>()
            .map(<[f32]>::to_vec)
            .map_err(|err| write_error(&files.center, format!("{err:?}")))?;
        crate::export::write_npy_f32(&files.center, &[center.len()], &center)
            .map_err(|err| write_error(&files.center, err.to_string()))?;
        let config = self.config.to_toml();
        std::fs::write(&files.config, config)
            .map_err(|err| write_error(&files.config, err.to_string()))?;
        let state = CheckpointState {
            format: CheckpointState::FORMAT,
            step: self.step,
            epoch: self.epoch(),
            total_iters: self.total_iters,
            dataset: self.dataset_description.clone(),
            live: self.live.clone(),
            drop_path_rng: RngState::capture(&self.drop_path_rng),
        };
        // Written last: its presence marks a complete checkpoint.
        state.write(&files.state)
    }

    /// Builds from a validated config; the loader starts at batch `first_step`.
    fn build(
        config: Config,
        device: Device,
        total_steps: Option<usize>,
        dataset: Arc<dyn Dataset>,
        first_step: usize,
    ) -> Result<Self, TrainError> {
        let arch = config.vit_arch();
        let vit = VitConfig {
            arch,
            patch_size: config.model.patch_size,
            img_size: config.data.global_crop_size as usize,
            drop_path_rate: config.model.drop_path_rate,
        };
        let autodiff_device = device.clone().autodiff();
        let student = DinoModel::new(
            &vit,
            config.dino.hidden_dim,
            config.dino.bottleneck_dim,
            config.dino.out_dim,
            config.seed,
            &autodiff_device,
        );
        // An exact copy of the student's values in new tensors, without drop path: never the
        // same object (dinov2#407: a shared teacher keeps the loss at ln K).
        let mut teacher = student.valid();
        teacher.backbone = teacher.backbone.without_drop_path();

        let weight_decay = SharedWeightDecay::default();
        let optimizer = build_optimizer(weight_decay.clone(), config.optim.clip_grad)
            .map_err(TrainError::Internal)?;
        let local_crops_wanted = Arc::new(AtomicUsize::new(config.dino.local_crops_number));
        let dataset_description = dataset.describe();
        let loader_settings = LoaderConfig {
            first_batch: first_step as u64,
            ..loader_config(&config)
        };
        let loader = CropLoader::spawn(dataset, loader_settings, local_crops_wanted.clone())?;
        let iters_per_epoch = loader.batches_per_epoch().max(1);
        let total_iters = total_steps
            .unwrap_or(config.optim.epochs * iters_per_epoch)
            .max(1);
        let live = LiveSettings {
            centering: config.dino.centering,
            sharpening: config.dino.sharpening,
            warmup_teacher_temp: config.dino.warmup_teacher_temp,
            teacher_temp: config.dino.teacher_temp,
            momentum_teacher: config.dino.momentum_teacher,
            local_crops: config.dino.local_crops_number,
            lr_scale: config.optim.lr_scale,
        };
        Ok(Self {
            center: Tensor::zeros([1, config.dino.out_dim], &device),
            drop_path_rng: ChaCha8Rng::seed_from_u64(config.seed ^ 0x5eed_d5a7),
            device,
            student,
            teacher,
            optimizer,
            weight_decay,
            loader,
            local_crops_wanted,
            live,
            step: 0,
            iters_per_epoch,
            total_iters,
            dataset_description,
            last_phase_secs: PhaseSecs::default(),
            config,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The config with the live settings folded in (what a resumed run would need).
    pub fn resolved_config(&self) -> Config {
        let mut config = self.config.clone();
        config.dino.centering = self.live.centering;
        config.dino.sharpening = self.live.sharpening;
        config.dino.warmup_teacher_temp = self.live.warmup_teacher_temp;
        config.dino.teacher_temp = self.live.teacher_temp;
        config.dino.momentum_teacher = self.live.momentum_teacher;
        config.dino.local_crops_number = self.live.local_crops;
        config.optim.lr_scale = self.live.lr_scale;
        config
    }

    pub fn live(&self) -> &LiveSettings {
        &self.live
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Number of completed steps.
    pub fn steps_done(&self) -> usize {
        self.step
    }

    pub fn total_steps(&self) -> usize {
        self.total_iters
    }

    pub fn iters_per_epoch(&self) -> usize {
        self.iters_per_epoch
    }

    pub fn epoch(&self) -> usize {
        self.step / self.iters_per_epoch
    }

    pub fn ln_k(&self) -> f64 {
        (self.config.dino.out_dim as f64).ln()
    }

    pub fn dataset_description(&self) -> &str {
        &self.dataset_description
    }

    pub fn teacher(&self) -> &DinoModel {
        &self.teacher
    }

    /// Where the last step's time went.
    pub fn last_phase_secs(&self) -> PhaseSecs {
        self.last_phase_secs
    }

    pub fn student(&self) -> &DinoModel {
        &self.student
    }

    /// Applies a toggle; it takes effect at the next step.
    pub fn apply(&mut self, toggle: &Toggle) -> Result<(), TrainError> {
        let check = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(TrainError::Setting(what.to_string()))
            }
        };
        match *toggle {
            Toggle::Centering(on) => self.live.centering = on,
            Toggle::Sharpening(on) => self.live.sharpening = on,
            Toggle::TeacherTemp(t) => {
                check(
                    (1e-4..=1.0).contains(&t),
                    "teacher temperature must be in 0.0001 ..= 1",
                )?;
                self.live.warmup_teacher_temp = t;
                self.live.teacher_temp = t;
            }
            Toggle::MomentumTeacher(m) => {
                check(
                    (0.0..=1.0).contains(&m),
                    "teacher momentum must be in 0 ..= 1",
                )?;
                self.live.momentum_teacher = m;
            }
            Toggle::LocalCrops(n) => {
                check(n <= 16, "local crops must be in 0 ..= 16")?;
                self.live.local_crops = n;
                self.local_crops_wanted.store(n, Ordering::Relaxed);
            }
            Toggle::LrScale(s) => {
                check((0.0..=100.0).contains(&s), "lr scale must be in 0 ..= 100")?;
                self.live.lr_scale = s;
            }
        }
        Ok(())
    }

    /// Schedule values at iteration `it` under the current live settings:
    /// (lr, weight decay, teacher momentum, teacher temperature).
    pub fn schedules_at(&self, it: usize) -> (f64, f64, f64, f64) {
        let o = &self.config.optim;
        let warmup_iters = o.warmup_epochs * self.iters_per_epoch;
        let lr = CosineSchedule::new(self.config.peak_lr(), o.min_lr, self.total_iters)
            .with_warmup(warmup_iters, 0.0)
            .at(it)
            * self.live.lr_scale;
        let wd = CosineSchedule::new(o.weight_decay, o.weight_decay_end, self.total_iters).at(it);
        let momentum = teacher_momentum_at(self.live.momentum_teacher, self.total_iters, it);
        let teacher_temp = if self.live.sharpening {
            teacher_temp_at_epoch(
                self.live.warmup_teacher_temp,
                self.live.teacher_temp,
                self.config.dino.warmup_teacher_temp_epochs,
                it / self.iters_per_epoch,
            )
        } else {
            self.config.dino.student_temp
        };
        (lr, wd, momentum, teacher_temp)
    }

    /// One DINO iteration (reference §5.5).
    pub fn step(&mut self) -> Result<StepMetrics, TrainError> {
        crate::device::on_compute_pool(|| self.step_here())
    }

    fn step_here(&mut self) -> Result<StepMetrics, TrainError> {
        let started = Instant::now();
        let batch = self.loader.next_batch()?;
        let data_wait_secs = started.elapsed().as_secs_f64();
        let it = self.step;
        let epoch = it / self.iters_per_epoch;
        let (lr, wd, momentum, teacher_temp) = self.schedules_at(it);

        let mut phases = PhaseSecs {
            data_wait: data_wait_secs,
            ..PhaseSecs::default()
        };
        let mut mark = Instant::now();
        let mut lap = |slot: &mut f64| {
            let now = Instant::now();
            *slot = (now - mark).as_secs_f64();
            mark = now;
        };

        let (global_images, local_images, local_crops) = self.batch_tensors(&batch);
        lap(&mut phases.upload);
        let n_crops = 2 + local_crops;
        let teacher_out = self
            .teacher
            .forward_multi_crop(vec![global_images.clone()], None);
        lap(&mut phases.teacher_forward);
        let mut groups = vec![global_images.autodiff()];
        if let Some(locals) = local_images {
            groups.push(locals.autodiff());
        }
        let student_out = self
            .student
            .forward_multi_crop(groups, Some(&mut self.drop_path_rng));
        lap(&mut phases.student_forward);
        let options = LossOptions {
            student_temp: self.config.dino.student_temp,
            teacher_temp,
            centering: self.live.centering,
        };
        let loss = dino_loss(
            student_out.logits,
            teacher_out.logits.clone(),
            self.center.clone(),
            n_crops,
            options,
        );
        let stats_data = loss.stats.into_data_as::<f32>();
        let stats = stats_data
            .as_slice::<f32>()
            .ok()
            .and_then(LossStats::from_values)
            .ok_or_else(|| TrainError::Internal("loss statistics unreadable".into()))?;
        if !stats.loss.is_finite() {
            return Err(TrainError::NonFinite {
                step: it,
                loss: stats.loss,
            });
        }
        // Updated after the loss, so step t uses the center of steps < t.
        self.center = update_center(
            self.center.clone(),
            teacher_out.logits,
            self.config.dino.center_momentum,
        );
        lap(&mut phases.loss);

        let mut grads = GradientsParams::from_grads(loss.loss.backward(), &self.student);
        lap(&mut phases.backward);
        let last_layer = &self.student.head.last_layer;
        if epoch < self.config.optim.freeze_last_layer {
            // The reference sets these grads to None: no update and no weight decay.
            grads.remove::<2>(last_layer.weight_v.id);
            grads.remove::<2>(last_layer.weight_g.id);
        }
        if self.config.dino.norm_last_layer {
            grads.remove::<2>(last_layer.weight_g.id);
        }
        self.weight_decay.set(wd);
        self.student = self.optimizer.step(lr, self.student.clone(), grads);
        lap(&mut phases.optimizer);
        // Moved out (the student's cheap handle-copy stands in) so the update can write into
        // the teacher's buffers instead of allocating new ones.
        let teacher = std::mem::replace(&mut self.teacher, self.student.clone());
        self.teacher = match ema_update(teacher, &self.student, momentum) {
            Ok(updated) => updated,
            Err(mismatch) => {
                let message = mismatch.to_string();
                self.teacher = mismatch.teacher;
                return Err(TrainError::Internal(message));
            }
        };
        lap(&mut phases.ema);
        self.last_phase_secs = phases;
        self.step += 1;

        let step_secs = started.elapsed().as_secs_f64();
        Ok(StepMetrics {
            step: it,
            epoch,
            loss: stats.loss,
            teacher_entropy: stats.teacher_entropy,
            kl: stats.kl,
            batch_mean_entropy: stats.batch_mean_entropy,
            lr,
            weight_decay: wd,
            teacher_momentum: momentum,
            teacher_temp,
            images_per_sec: batch.batch_size as f64 / step_secs.max(1e-9),
            step_secs,
            data_wait_secs,
            local_crops,
            centering: self.live.centering,
            sharpening: self.live.sharpening,
            warnings: batch.warnings,
        })
    }

    /// Globals `[2B, 3, G, G]` and locals `[nB, 3, L, L]` (crop-major) on the plain device.
    fn batch_tensors(&self, batch: &CropBatch) -> (Tensor<4>, Option<Tensor<4>>, usize) {
        let b = batch.batch_size;
        let g = batch.global_size_px as usize;
        let l = batch.local_size_px as usize;
        let globals: Vec<f32> = batch.globals.iter().flatten().copied().collect();
        let globals = Tensor::from_data(TensorData::new(globals, [2 * b, 3, g, g]), &self.device);
        // A batch prefetched before a change may carry another count: use up to the wanted one.
        let local_crops = batch.locals.len().min(self.live.local_crops);
        if local_crops == 0 {
            return (globals, None, 0);
        }
        let locals: Vec<f32> = batch.locals[..local_crops]
            .iter()
            .flatten()
            .copied()
            .collect();
        let locals = Tensor::from_data(
            TensorData::new(locals, [local_crops * b, 3, l, l]),
            &self.device,
        );
        (globals, Some(locals), local_crops)
    }
}

fn validate(config: &Config) -> Result<(), TrainError> {
    config
        .validate()
        .map_err(|invalid| TrainError::Setting(format!("`{}` {}", invalid.key, invalid.message)))
}

/// Opens the dataset named by `data.source`.
pub fn open_dataset(config: &Config) -> Result<Arc<dyn Dataset>, TrainError> {
    let path = Path::new(&config.data.path);
    Ok(match config.data.source {
        DataSource::Synthetic => Arc::new(SyntheticShapes::new(
            config.seed,
            config.data.image_size,
            config.data.num_images,
        )),
        DataSource::Folder => Arc::new(ImageFolder::open(path)?),
        DataSource::Cifar10 => Arc::new(Cifar::open(CifarKind::Cifar10, path, Split::Train)?),
        DataSource::Cifar100 => Arc::new(Cifar::open(CifarKind::Cifar100, path, Split::Train)?),
        // DINO trains on the 100k unlabelled images; train/test are for the k-NN monitor.
        DataSource::Stl10 => Arc::new(Stl10::open(path, StlSplit::Unlabeled)?),
    })
}

/// The data loader a config asks for (shared by the trainer and `bench`).
pub fn loader_config(config: &Config) -> LoaderConfig {
    LoaderConfig {
        augment: augment_config(config),
        batch_size: config.optim.batch_size_per_gpu,
        workers: config.data.num_workers,
        prefetch_batches: config.data.prefetch_batches,
        seed: config.seed,
        first_batch: 0,
    }
}

pub fn augment_config(config: &Config) -> AugmentConfig {
    let [g0, g1] = config.dino.global_crops_scale;
    let [l0, l1] = config.dino.local_crops_scale;
    AugmentConfig {
        global_crop_size_px: config.data.global_crop_size,
        local_crop_size_px: config.data.local_crop_size,
        global_crops_scale: (g0 as f32, g1 as f32),
        local_crops_scale: (l0 as f32, l1 as f32),
        local_crops_number: config.dino.local_crops_number,
    }
}
