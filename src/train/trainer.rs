//! `Trainer`: the library API every front end drives. Built from a [`Config`], stepped one
//! iteration at a time, re-configured between steps with [`Toggle`]s. The CLI and the app's
//! worker thread are thin loops around it.

use crate::augment::{AugmentConfig, CropBatch, CropLoader, LoaderConfig, LoaderError};
use crate::config::{Config, LiveSettings, Toggle};
use crate::data::datasets::open_dataset;
use crate::data::{DataError, Dataset};
use crate::model::{DinoModel, MultiCropOutput};
use crate::store::checkpoint::CheckpointError;
use crate::store::rows::MetricsRow;
use crate::train::ema::ema_update;
use crate::train::guard::{gradient_norm, Fault, NonFiniteKind};
use crate::train::koleo::{koleo, KoleoOutput};
use crate::train::loss::{dino_loss, update_center, LossOptions, LossStats, TeacherCentering};
use crate::train::optim::{build_optimizer, SharedWeightDecay};
use crate::train::representation::RepresentationMonitor;
use crate::train::schedule::{teacher_momentum_at, teacher_temp_at_epoch, CosineSchedule};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
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
    #[error("non-finite {} ({value}) at step {step}: the step was discarded, the weights, optimizer state and center are those after the last good step. Lower the lr scale or optim.lr, or dino.teacher_temp, or raise optim.warmup_epochs, then continue", what.describe())]
    NonFinite {
        step: usize,
        what: NonFiniteKind,
        value: f64,
    },
    #[error(transparent)]
    Checkpoint(CheckpointError),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("not enough memory: one training step of this config needs {estimate}, but {available} are available; {advice}. Nothing was allocated")]
    OutOfMemory {
        estimate: String,
        available: String,
        advice: String,
    },
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
    /// Reading the teacher's features back and the representation readings.
    pub geometry: f64,
}

impl PhaseSecs {
    /// The phases in step order with their display names.
    pub fn named(&self) -> [(&'static str, f64); 9] {
        [
            ("data wait", self.data_wait),
            ("upload", self.upload),
            ("teacher forward", self.teacher_forward),
            ("student forward", self.student_forward),
            ("loss", self.loss),
            ("backward", self.backward),
            ("optimizer", self.optimizer),
            ("EMA", self.ema),
            ("geometry", self.geometry),
        ]
    }
}

pub struct Trainer {
    pub(super) config: Config,
    pub(super) device: Device,
    pub(super) student: DinoModel,
    pub(super) teacher: DinoModel,
    pub(super) optimizer: ModuleOptimizer,
    pub(super) weight_decay: SharedWeightDecay,
    pub(super) center: Tensor<2>,
    pub(super) loader: CropLoader,
    pub(super) local_crops_wanted: Arc<AtomicUsize>,
    pub(super) live: LiveSettings,
    pub(super) step: usize,
    pub(super) iters_per_epoch: usize,
    pub(super) total_iters: usize,
    pub(super) drop_path_rng: ChaCha8Rng,
    pub(super) dataset_description: String,
    pub(super) last_phase_secs: PhaseSecs,
    pub(super) representation: RepresentationMonitor,
    /// An injected failure (`DINOSCOPE_FAULT`, tests), see `train::guard`.
    pub(super) fault: Option<Fault>,
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

    /// Builds from a validated config; the loader starts at batch `first_step`.
    pub(super) fn build(
        config: Config,
        device: Device,
        total_steps: Option<usize>,
        dataset: Arc<dyn Dataset>,
        first_step: usize,
    ) -> Result<Self, TrainError> {
        check_memory(&config, &device)?;
        let vit = config.vit_config(config.model.drop_path_rate);
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
        let live = LiveSettings::from_config(&config);
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
            representation: RepresentationMonitor::new(
                config.vit_arch().embed_dim,
                config.dino.bottleneck_dim,
            ),
            fault: None,
            config,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The config with the live settings folded in (what a resumed run would need).
    pub fn resolved_config(&self) -> Config {
        let mut config = self.config.clone();
        self.live.fold_into(&mut config);
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
        self.live
            .apply(toggle)
            .map_err(|err| TrainError::Setting(err.to_string()))?;
        self.local_crops_wanted
            .store(self.live.local_crops, Ordering::Relaxed);
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

    /// Makes a later step fail as `fault` says (tests, demos); `None` clears it.
    pub fn inject_fault(&mut self, fault: Option<Fault>) {
        self.fault = fault;
    }

    /// One DINO iteration (reference §5.5). A non-finite loss or gradient discards the step:
    /// nothing the run keeps has changed (see `train::guard`).
    pub fn step(&mut self) -> Result<MetricsRow, TrainError> {
        let rng_before = self.drop_path_rng.clone();
        let result = crate::device::on_compute_pool(|| self.step_here());
        if matches!(result, Err(TrainError::NonFinite { .. })) {
            // The discarded step drew stochastic depth; the retry draws the same.
            self.drop_path_rng = rng_before;
        }
        result
    }

    /// Fails with what the injected fault asks for at `it`, if anything.
    fn injected(&self, it: usize, what: NonFiniteKind, value: f64) -> Result<(), TrainError> {
        let hit = match (self.fault, what) {
            (Some(Fault::NanLoss { step }), NonFiniteKind::Loss)
            | (Some(Fault::NanGrad { step }), NonFiniteKind::Gradients) => step == it,
            _ => false,
        };
        if hit || !value.is_finite() {
            let value = if hit { f64::NAN } else { value };
            return Err(TrainError::NonFinite {
                step: it,
                what,
                value,
            });
        }
        Ok(())
    }

    /// Long: one DINO iteration in the reference's order (§5.5), each phase timed where it ends;
    /// splitting it would scatter the order the parity tests pin.
    fn step_here(&mut self) -> Result<MetricsRow, TrainError> {
        if let Some(Fault::DeviceLost { step }) = self.fault {
            if step == self.step {
                return Err(TrainError::Internal(format!(
                    "device lost at step {step} (injected by {})",
                    crate::train::guard::FAULT_ENV
                )));
            }
        }
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
            .forward_multi_crop_with_features(vec![global_images.clone()], None);
        let teacher_features = teacher_out.features.clone();
        let teacher_bottleneck = teacher_out.bottleneck.clone();
        lap(&mut phases.teacher_forward);
        let mut groups = vec![global_images.autodiff()];
        if let Some(locals) = local_images {
            groups.push(locals.autodiff());
        }
        // The same ops as `forward_multi_crop`; the CLS features are KoLeo's input (the
        // bottleneck handle is dropped here, not kept on the graph through the backward).
        let MultiCropOutput {
            logits: student_logits,
            features: student_features,
            ..
        } = self
            .student
            .forward_multi_crop_with_features(groups, Some(&mut self.drop_path_rng));
        lap(&mut phases.student_forward);
        let options = LossOptions {
            student_temp: self.config.dino.student_temp,
            teacher_temp,
            centering: TeacherCentering::new(
                self.live.centering,
                self.config.dino.sinkhorn_iterations,
            ),
        };
        let loss = dino_loss(
            student_logits,
            teacher_out.logits.clone(),
            self.center.clone(),
            n_crops,
            options,
        );
        let koleo = self.koleo_of(student_features, batch.batch_size)?;
        let stats_data = Tensor::cat(vec![loss.stats, koleo.stats], 0).into_data_as::<f32>();
        let values = stats_data
            .as_slice::<f32>()
            .map_err(|_| TrainError::Internal("loss statistics unreadable".into()))?;
        let stats = LossStats::from_values(values)
            .ok_or_else(|| TrainError::Internal("loss statistics unreadable".into()))?;
        let (koleo_value, koleo_duplicates) = match values.get(3..5) {
            Some(&[value, duplicates]) => (value as f64, duplicates.round() as usize),
            _ => return Err(TrainError::Internal("KoLeo statistics unreadable".into())),
        };
        self.injected(it, NonFiniteKind::TeacherOutput, stats.teacher_entropy)?;
        self.injected(it, NonFiniteKind::Loss, stats.loss)?;
        // Step t uses the center of steps < t; kept aside until the gradients pass the guard.
        let next_center = update_center(
            self.center.clone(),
            teacher_out.logits,
            self.config.dino.center_momentum,
        );
        lap(&mut phases.loss);

        // DINOv2: loss + weight · (KoLeo(global 1) + KoLeo(global 2)).
        let total = if self.live.koleo_weight > 0.0 {
            loss.loss + koleo.loss.mul_scalar(self.live.koleo_weight)
        } else {
            loss.loss
        };
        let mut grads = GradientsParams::from_grads(total.backward(), &self.student);
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
        // Before anything the run keeps is touched.
        self.injected(
            it,
            NonFiniteKind::Gradients,
            gradient_norm(&self.student, &grads),
        )?;
        self.center = next_center;
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
        let reading = self.observe_representation(it, teacher_features, teacher_bottleneck)?;
        lap(&mut phases.geometry);
        self.last_phase_secs = phases;
        self.step += 1;

        let step_secs = started.elapsed().as_secs_f64();
        let mut row = MetricsRow {
            lr,
            weight_decay: wd,
            teacher_momentum: momentum,
            teacher_temp,
            images_per_sec: batch.batch_size as f64 / step_secs.max(1e-9),
            step_secs,
            data_wait_secs,
            local_crops,
            centering: self.live.centering.is_on(),
            sharpening: self.live.sharpening,
            ln_k: self.ln_k(),
            centering_mode: Some(self.live.centering),
            koleo_weight: self.live.koleo_weight,
            koleo: Some(koleo_value),
            koleo_duplicates: Some(koleo_duplicates),
            warnings: batch.warnings,
            ..stats.row(it, epoch)
        };
        if let Some(reading) = reading {
            reading.fill(&mut row);
        }
        Ok(row)
    }

    /// KoLeo of the student's CLS features of the two global crops (the first `2·batch` rows),
    /// each crop on its own as DINOv2 does; on the gradient's path only while its weight is on,
    /// measured at every weight.
    fn koleo_of(
        &self,
        features: Option<Tensor<2>>,
        batch: usize,
    ) -> Result<KoleoOutput, TrainError> {
        let features = features
            .ok_or_else(|| TrainError::Internal("student features missing".into()))?
            .narrow(0, 0, 2 * batch);
        let features = if self.live.koleo_weight > 0.0 {
            features
        } else {
            features.without_autodiff()
        };
        Ok(koleo(features, 2))
    }

    /// Hands the teacher's outputs on the global crops to the representation monitor (read
    /// back after the update, when the device has finished the step's work anyway).
    fn observe_representation(
        &mut self,
        it: usize,
        features: Option<Tensor<2>>,
        bottleneck: Option<Tensor<2>>,
    ) -> Result<Option<crate::train::representation::Reading>, TrainError> {
        let host = |tensor: Option<Tensor<2>>| -> Result<Vec<f32>, TrainError> {
            tensor
                .ok_or_else(|| TrainError::Internal("teacher features missing".into()))?
                .into_data_as::<f32>()
                .as_slice::<f32>()
                .map(<[f32]>::to_vec)
                .map_err(|err| {
                    TrainError::Internal(format!("teacher features unreadable: {err:?}"))
                })
        };
        let features = host(features)?;
        let bottleneck = host(bottleneck)?;
        let last_step = it + 1 >= self.total_iters;
        Ok(self
            .representation
            .observe(it, last_step, &features, &bottleneck))
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

pub(super) fn validate(config: &Config) -> Result<(), TrainError> {
    config
        .validate()
        .map_err(|invalid| TrainError::Setting(format!("`{}` {}", invalid.key, invalid.message)))
}

/// Refuses a config whose step cannot fit in host memory before any model is built; skipped
/// on a GPU (its memory is not the host's) and where the available memory is unknown.
pub fn check_memory(config: &Config, device: &Device) -> Result<(), TrainError> {
    let available = match crate::device::available_host_memory_bytes() {
        Some(bytes) if crate::device::uses_host_memory(device) => bytes,
        _ => return Ok(()),
    };
    let estimate = config.memory_estimate();
    if estimate.total_bytes() <= available {
        return Ok(());
    }
    Err(TrainError::OutOfMemory {
        estimate: estimate.describe(),
        available: crate::config::memory::format_bytes(available),
        advice: estimate.advice(),
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
