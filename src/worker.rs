//! The training worker: a thread that owns the `Trainer` (models, device, loader) and talks to
//! the UI only through bounded channels of plain data. It never touches egui; the UI never
//! touches tensors. Commands take effect at the next step boundary.

use crate::config::Config;
use crate::device::{select_device, DeviceChoice, SelectedDevice};
use crate::run::RunWriter;
use crate::trainer::{StepMetrics, Toggle, Trainer};
use burn::module::Module;
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Identifies one run (one Start) within a session.
pub type RunId = u64;

/// UI → worker.
#[derive(Clone, Debug)]
pub enum Command {
    /// Build a new trainer and start stepping. `run_dir` gets config.toml + metrics.csv.
    Start {
        run_id: RunId,
        config: Box<Config>,
        run_dir: Option<PathBuf>,
        total_steps: Option<usize>,
        paused: bool,
    },
    Pause,
    Resume,
    /// Run exactly one step, then stay paused.
    Step,
    /// End the current run (the thread stays, ready for another Start).
    Stop,
    /// Continue a run from a checkpoint (a run directory or one checkpoint in it); metrics
    /// are appended to that run's metrics.csv.
    ResumeFrom {
        run_id: RunId,
        path: PathBuf,
        paused: bool,
    },
    /// Write a checkpoint of the current run now (into its run directory).
    SaveCheckpoint,
    /// Periodic checkpoints: every `every_steps` steps (0 = off), keeping the newest `keep_last`.
    SetCheckpointing {
        every_steps: usize,
        keep_last: usize,
    },
    /// Apply a toggle before the next step.
    Set(Toggle),
    /// Which images the attention view follows, from which network, how often and at what size.
    SetAttention(AttentionSettings),
    /// End the thread.
    Shutdown,
}

/// An image the attention view follows during training.
#[derive(Clone, Debug)]
pub struct AttentionImage {
    pub name: String,
    pub image: Arc<image::RgbImage>,
}

/// Default period (in steps) of the attention maps for the followed images.
pub const ATTENTION_EVERY_STEPS: usize = 10;

/// What the worker computes attention maps for during training.
#[derive(Clone, Debug)]
pub struct AttentionSettings {
    pub images: Vec<AttentionImage>,
    /// Recompute after every this many steps (at least 1).
    pub every_steps: usize,
    pub network: crate::weights::Network,
    /// `None`: the training crop size as the short side.
    pub size: Option<crate::attention::ImageSize>,
}

impl Default for AttentionSettings {
    fn default() -> Self {
        Self {
            images: Vec::new(),
            every_steps: ATTENTION_EVERY_STEPS,
            network: crate::weights::Network::Teacher,
            size: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerStatus {
    Idle,
    Starting,
    Running,
    Paused,
    Finished,
    Failed,
}

/// Worker → UI. Plain data only.
#[derive(Clone, Debug)]
pub enum Event {
    Started {
        run_id: RunId,
        device: String,
        dataset: String,
        total_steps: usize,
        iters_per_epoch: usize,
        ln_k: f64,
    },
    Metrics {
        run_id: RunId,
        metrics: Box<StepMetrics>,
    },
    /// A toggle took effect before `step` (the first step that used it).
    Marker {
        run_id: RunId,
        step: usize,
        label: String,
        toggle: Toggle,
    },
    Status {
        run_id: Option<RunId>,
        status: WorkerStatus,
    },
    /// Last-block CLS attention of `network` for the followed images, after `step`.
    Attention {
        run_id: RunId,
        step: usize,
        network: crate::weights::Network,
        maps: Vec<(String, crate::attention::AttentionMaps)>,
    },
    /// A run continues from a checkpoint: the metrics it had before `first_step`.
    Resumed {
        run_id: RunId,
        checkpoint: PathBuf,
        first_step: usize,
        history: Vec<StepMetrics>,
    },
    CheckpointSaved {
        path: PathBuf,
        elapsed_secs: f64,
    },
    /// k-NN accuracy and attention Jaccard of the teacher (step 0 = random init).
    Eval {
        run_id: RunId,
        point: Box<crate::eval::EvalPoint>,
    },
    /// Evaluations a resumed run had before its checkpoint.
    EvalHistory {
        run_id: RunId,
        rows: Vec<crate::run::EvalRow>,
    },
    Warning(String),
    Error(String),
}

/// How the worker wakes the UI after sending events (e.g. `ctx.request_repaint_after`).
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// Handle owned by the UI. Dropping it shuts the thread down and joins it.
pub struct WorkerHandle {
    commands: Sender<Command>,
    events: Receiver<Event>,
    thread: Option<JoinHandle<()>>,
}

pub const COMMAND_QUEUE: usize = 64;
pub const EVENT_QUEUE: usize = 4096;

impl WorkerHandle {
    /// Spawns the worker thread. `device` is chosen when each run starts.
    pub fn spawn(device: DeviceChoice, waker: Waker) -> std::io::Result<Self> {
        Self::spawn_with(DeviceSource::Choice(device), waker)
    }

    /// Spawns with an already-built device (e.g. one sharing eframe's wgpu device).
    pub fn spawn_with(device: DeviceSource, waker: Waker) -> std::io::Result<Self> {
        let (command_tx, command_rx) = bounded(COMMAND_QUEUE);
        let (event_tx, event_rx) = bounded(EVENT_QUEUE);
        let thread = std::thread::Builder::new()
            .name("dinoscope-worker".into())
            .spawn(move || {
                Worker {
                    commands: command_rx,
                    events: event_tx,
                    waker,
                    device,
                    run: None,
                    attention: AttentionSettings::default(),
                    checkpoint_every_steps: 0,
                    checkpoint_keep_last: CHECKPOINT_KEEP_LAST,
                }
                .run()
            })?;
        Ok(Self {
            commands: command_tx,
            events: event_rx,
            thread: Some(thread),
        })
    }

    /// Never blocks: a full queue (the worker is far behind) reports an error instead.
    pub fn send(&self, command: Command) -> Result<(), String> {
        self.commands.try_send(command).map_err(|err| match err {
            TrySendError::Full(_) => "the training worker is busy; try again".to_string(),
            TrySendError::Disconnected(_) => "the training worker has stopped".to_string(),
        })
    }

    /// Next pending event, if any (never blocks).
    pub fn try_recv(&self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    /// Waits up to `timeout` for an event (for tests and the headless driver).
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Event> {
        self.events.recv_timeout(timeout).ok()
    }

    /// Stops the thread and waits for it (at most one training step).
    pub fn shutdown(&mut self) {
        // The worker may be blocked sending into a full event queue: drain while joining.
        let _ = self.commands.try_send(Command::Shutdown);
        if let Some(thread) = self.thread.take() {
            while !thread.is_finished() {
                while self.events.try_recv().is_ok() {}
                std::thread::sleep(Duration::from_millis(2));
            }
            let _ = thread.join();
        }
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Where a run's device comes from.
#[derive(Clone)]
pub enum DeviceSource {
    Choice(DeviceChoice),
    Ready(SelectedDevice),
}

struct ActiveRun {
    id: RunId,
    trainer: Trainer,
    writer: Option<RunWriter>,
    paused: bool,
    /// Toggles applied since the last step, announced as markers at the next step.
    pending_markers: Vec<Toggle>,
    /// Held-out data for the k-NN / Jaccard monitor (`None`: the data has no labels).
    eval: Option<crate::eval::EvalData>,
    /// Whether the random-init row (step 0) exists; it is computed with the first evaluation,
    /// not at Start, so the first training step is not delayed.
    eval_baseline_done: bool,
}

struct Worker {
    commands: Receiver<Command>,
    events: Sender<Event>,
    waker: Waker,
    device: DeviceSource,
    run: Option<ActiveRun>,
    attention: AttentionSettings,
    checkpoint_every_steps: usize,
    checkpoint_keep_last: usize,
}

/// Checkpoints kept per run by default.
pub const CHECKPOINT_KEEP_LAST: usize = 3;

enum Flow {
    Continue,
    Exit,
}

impl Worker {
    fn emit(&self, event: Event) -> bool {
        // Blocking send: if the UI falls far behind, training waits instead of dropping data.
        let ok = self.events.send(event).is_ok();
        (self.waker)();
        ok
    }

    fn status(&self, status: WorkerStatus) {
        let run_id = self.run.as_ref().map(|r| r.id);
        self.emit(Event::Status { run_id, status });
    }

    fn run(mut self) {
        self.status(WorkerStatus::Idle);
        loop {
            let stepping = self.run.as_ref().is_some_and(|r| !r.paused);
            // Idle or paused: sleep on the command queue. Running: only take what is queued.
            let command = if stepping {
                self.commands.try_recv().ok()
            } else {
                match self.commands.recv_timeout(Duration::from_millis(200)) {
                    Ok(command) => Some(command),
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            };
            if let Some(command) = command {
                if let Flow::Exit = self.handle(command) {
                    return;
                }
                continue;
            }
            if self.commands.is_empty() && stepping {
                self.step_once();
            }
        }
    }

    fn handle(&mut self, command: Command) -> Flow {
        match command {
            Command::Start {
                run_id,
                config,
                run_dir,
                total_steps,
                paused,
            } => self.start(run_id, *config, run_dir, total_steps, paused),
            Command::Pause => {
                if let Some(run) = &mut self.run {
                    run.paused = true;
                    self.status(WorkerStatus::Paused);
                }
            }
            Command::Resume => {
                if let Some(run) = &mut self.run {
                    run.paused = false;
                    self.status(WorkerStatus::Running);
                }
            }
            Command::Step => {
                if let Some(run) = &mut self.run {
                    run.paused = true;
                    self.step_once();
                    if self.run.is_some() {
                        self.status(WorkerStatus::Paused);
                    }
                }
            }
            Command::Stop => {
                if self.run.is_some() {
                    self.finish_run(WorkerStatus::Finished);
                }
            }
            Command::ResumeFrom {
                run_id,
                path,
                paused,
            } => self.resume(run_id, &path, paused),
            Command::SaveCheckpoint => self.save_checkpoint(true),
            Command::SetCheckpointing {
                every_steps,
                keep_last,
            } => {
                self.checkpoint_every_steps = every_steps;
                self.checkpoint_keep_last = keep_last.max(1);
            }
            Command::Set(toggle) => self.set(toggle),
            Command::SetAttention(settings) => {
                self.attention = AttentionSettings {
                    every_steps: settings.every_steps.max(1),
                    ..settings
                };
                // Show the new images at once, not only at the next multiple of the period.
                if let Some(step) = self.run.as_ref().map(|r| r.trainer.steps_done()) {
                    self.emit_attention(step.saturating_sub(1));
                }
            }
            Command::Shutdown => {
                if self.run.is_some() {
                    self.finish_run(WorkerStatus::Finished);
                }
                return Flow::Exit;
            }
        }
        Flow::Continue
    }

    fn start(
        &mut self,
        run_id: RunId,
        config: Config,
        run_dir: Option<PathBuf>,
        total_steps: Option<usize>,
        paused: bool,
    ) {
        if self.run.is_some() {
            self.finish_run(WorkerStatus::Finished);
        }
        self.emit(Event::Status {
            run_id: Some(run_id),
            status: WorkerStatus::Starting,
        });
        let selected = match self.selected_device() {
            Ok(selected) => selected,
            Err(err) => return self.fail(run_id, err),
        };
        let trainer = match Trainer::new(config.clone(), selected.device, total_steps) {
            Ok(trainer) => trainer,
            Err(err) => return self.fail(run_id, format!("cannot start training: {err}")),
        };
        let writer = match run_dir.map(|dir| RunWriter::create(&dir, &config)) {
            Some(Ok(writer)) => Some(writer),
            Some(Err(err)) => {
                // Training still runs; only the files are missing, and the user is told.
                self.emit(Event::Warning(format!("{err}; metrics are not saved")));
                None
            }
            None => None,
        };
        self.emit(Event::Started {
            run_id,
            device: selected.description,
            dataset: trainer.dataset_description().to_string(),
            total_steps: trainer.total_steps(),
            iters_per_epoch: trainer.iters_per_epoch(),
            ln_k: trainer.ln_k(),
        });
        let eval = self.eval_data(trainer.config());
        let eval_baseline_done = false;
        self.run = Some(ActiveRun {
            id: run_id,
            trainer,
            writer,
            paused,
            pending_markers: Vec::new(),
            eval,
            eval_baseline_done,
        });
        self.status(if paused {
            WorkerStatus::Paused
        } else {
            WorkerStatus::Running
        });
    }

    /// The monitor's data, when `data.knn_every_epochs` asks for one and the data has labels.
    fn eval_data(&self, config: &Config) -> Option<crate::eval::EvalData> {
        if config.data.knn_every_epochs == 0 {
            return None;
        }
        match crate::eval::EvalData::for_config(config) {
            Ok(data) => data,
            Err(err) => {
                self.emit(Event::Warning(format!("no k-NN monitor: {err}")));
                None
            }
        }
    }

    /// k-NN and Jaccard of the current teacher, reported and appended to knn.csv; the first
    /// time also of the same network at random init (rebuilt from the seed: the initial
    /// weights are a pure function of it), reported as step 0.
    fn evaluate(&mut self) {
        let Some(run) = &self.run else { return };
        if run.eval.is_none() {
            return;
        }
        if !run.eval_baseline_done {
            let config = run.trainer.config();
            let vit = crate::model::VitConfig {
                arch: config.vit_arch(),
                patch_size: config.model.patch_size,
                img_size: config.data.global_crop_size as usize,
                drop_path_rate: 0.0,
            };
            let initial = crate::model::VisionTransformer::new(
                &vit,
                &mut crate::model::HostInit::new(config.seed),
                run.trainer.device(),
            );
            self.evaluate_backbone(&initial, 0, 0);
            if let Some(run) = &mut self.run {
                run.eval_baseline_done = true;
            }
        }
        let Some(run) = &self.run else { return };
        let (step, epoch) = (run.trainer.steps_done(), run.trainer.epoch());
        let teacher = run.trainer.teacher().backbone.clone();
        self.evaluate_backbone(&teacher, step, epoch);
    }

    fn evaluate_backbone(
        &self,
        backbone: &crate::model::VisionTransformer,
        step: usize,
        epoch: usize,
    ) {
        let Some(run) = &self.run else { return };
        let Some(eval) = &run.eval else { return };
        let device = run.trainer.device();
        let knn = match eval.knn(backbone, device) {
            Ok(result) => Some(result),
            Err(err) => {
                self.emit(Event::Warning(format!("k-NN skipped: {err}")));
                None
            }
        };
        let jaccard = eval.jaccard(backbone, device);
        let point = crate::eval::EvalPoint {
            step,
            epoch,
            knn,
            jaccard,
        };
        if let Some(writer) = &run.writer {
            if let Err(err) = writer.append_eval(&point) {
                self.emit(Event::Warning(err.to_string()));
            }
        }
        self.emit(Event::Eval {
            run_id: run.id,
            point: Box::new(point),
        });
    }

    fn selected_device(&self) -> Result<SelectedDevice, String> {
        match &self.device {
            DeviceSource::Ready(selected) => Ok(selected.clone()),
            DeviceSource::Choice(choice) => select_device(*choice).map_err(|e| e.to_string()),
        }
    }

    fn resume(&mut self, run_id: RunId, path: &std::path::Path, paused: bool) {
        if self.run.is_some() {
            self.finish_run(WorkerStatus::Finished);
        }
        self.emit(Event::Status {
            run_id: Some(run_id),
            status: WorkerStatus::Starting,
        });
        let selected = match self.selected_device() {
            Ok(selected) => selected,
            Err(err) => return self.fail(run_id, err),
        };
        let checkpoint = match crate::checkpoint::resolve_checkpoint(path) {
            Ok(checkpoint) => checkpoint,
            Err(err) => return self.fail(run_id, err.to_string()),
        };
        let trainer = match Trainer::resume(&checkpoint, selected.device) {
            Ok(trainer) => trainer,
            Err(err) => {
                return self.fail(
                    run_id,
                    format!("cannot resume from {}: {err}", checkpoint.display()),
                )
            }
        };
        let run_dir = checkpoint
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let first_step = trainer.steps_done();
        // The curve so far, as the CSV has it (rows after the checkpoint are recomputed).
        let history = crate::run::read_step_metrics(&run_dir.join("metrics.csv"))
            .unwrap_or_default()
            .into_iter()
            .filter(|m| m.step < first_step)
            .collect();
        let writer = match RunWriter::resume(&run_dir, first_step, trainer.ln_k()) {
            Ok(writer) => Some(writer),
            Err(err) => {
                self.emit(Event::Warning(format!("{err}; metrics are not saved")));
                None
            }
        };
        self.emit(Event::Started {
            run_id,
            device: selected.description,
            dataset: trainer.dataset_description().to_string(),
            total_steps: trainer.total_steps(),
            iters_per_epoch: trainer.iters_per_epoch(),
            ln_k: trainer.ln_k(),
        });
        self.emit(Event::Resumed {
            run_id,
            checkpoint,
            first_step,
            history,
        });
        let mut eval_baseline_done = false;
        if let Some(writer) = &writer {
            match writer.truncate_evals(first_step) {
                Ok(rows) => {
                    eval_baseline_done = rows.iter().any(|r| r.step == 0);
                    self.emit(Event::EvalHistory { run_id, rows });
                }
                Err(err) => {
                    self.emit(Event::Warning(err.to_string()));
                }
            };
        }
        let eval = self.eval_data(trainer.config());
        self.run = Some(ActiveRun {
            id: run_id,
            trainer,
            writer,
            paused,
            pending_markers: Vec::new(),
            eval,
            eval_baseline_done,
        });
        self.status(if paused {
            WorkerStatus::Paused
        } else {
            WorkerStatus::Running
        });
    }

    /// Writes a checkpoint of the current run into its directory. `asked`: the user pressed
    /// the button (a run without a directory is then a warning, not silence).
    fn save_checkpoint(&mut self, asked: bool) {
        let Some(run) = &self.run else { return };
        let Some(dir) = run.writer.as_ref().map(|w| w.dir().to_path_buf()) else {
            if asked {
                self.emit(Event::Warning(
                    "this run has no run directory (runs are kept in memory only); nothing saved"
                        .into(),
                ));
            }
            return;
        };
        let started = std::time::Instant::now();
        match crate::checkpoint::write_checkpoint(&run.trainer, &dir, self.checkpoint_keep_last) {
            Ok(path) => {
                let elapsed_secs = started.elapsed().as_secs_f64();
                self.emit(Event::CheckpointSaved { path, elapsed_secs });
            }
            // Training goes on; the previous checkpoints are intact.
            Err(err) => {
                self.emit(Event::Warning(format!("checkpoint not written: {err}")));
            }
        }
    }

    fn fail(&mut self, run_id: RunId, message: String) {
        self.emit(Event::Error(message));
        self.emit(Event::Status {
            run_id: Some(run_id),
            status: WorkerStatus::Failed,
        });
    }

    fn set(&mut self, toggle: Toggle) {
        let Some(run) = &mut self.run else {
            // Nothing is running: the UI keeps the value for the next Start.
            return;
        };
        match run.trainer.apply(&toggle) {
            Ok(()) => run.pending_markers.push(toggle),
            Err(err) => {
                self.emit(Event::Error(err.to_string()));
            }
        }
    }

    fn step_once(&mut self) {
        let Some(run) = &mut self.run else { return };
        if run.trainer.steps_done() >= run.trainer.total_steps() {
            self.finish_run(WorkerStatus::Finished);
            return;
        }
        let step = run.trainer.steps_done();
        let markers: Vec<Toggle> = run.pending_markers.drain(..).collect();
        let run_id = run.id;
        // A panic inside burn (e.g. a backend failure) must not take the app down: it becomes
        // an error event and ends this run.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run.trainer.step()))
            .unwrap_or_else(|payload| {
                let reason = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                Err(crate::trainer::TrainError::Internal(format!(
                    "training step {step} panicked: {reason}"
                )))
            });
        for toggle in markers {
            self.emit(Event::Marker {
                run_id,
                step,
                label: toggle.label(),
                toggle,
            });
        }
        match result {
            Ok(metrics) => {
                for warning in &metrics.warnings {
                    self.emit(Event::Warning(warning.clone()));
                }
                if let Some(run) = &mut self.run {
                    if let Some(writer) = &mut run.writer {
                        if let Err(err) = writer.append(&metrics) {
                            run.writer = None;
                            self.emit(Event::Warning(format!(
                                "{err}; metrics of this run are no longer saved"
                            )));
                        }
                    }
                }
                let step = metrics.step;
                self.emit(Event::Metrics {
                    run_id,
                    metrics: Box::new(metrics),
                });
                let every = self.checkpoint_every_steps;
                if every > 0 && (step + 1) % every == 0 {
                    self.save_checkpoint(false);
                }
                let (per_epoch, every) = self.run.as_ref().map_or((1, 0), |r| {
                    (
                        r.trainer.iters_per_epoch().max(1),
                        r.trainer.config().data.knn_every_epochs,
                    )
                });
                let epochs_done = (step + 1) / per_epoch;
                if every > 0 && (step + 1) % per_epoch == 0 && epochs_done % every == 0 {
                    self.evaluate();
                }
                if step % self.attention.every_steps == 0 {
                    self.emit_attention(step);
                }
            }
            Err(err) => {
                self.emit(Event::Error(err.to_string()));
                self.finish_run(WorkerStatus::Failed);
            }
        }
    }

    /// Computes the chosen network's attention for the followed images (one forward each).
    fn emit_attention(&mut self, step: usize) {
        use crate::weights::Network;
        let Some(run) = &self.run else { return };
        if self.attention.images.is_empty() {
            return;
        }
        let crop = run.trainer.config().data.global_crop_size;
        let size = self
            .attention
            .size
            .unwrap_or(crate::attention::ImageSize::ShortSide(crop));
        let device = run.trainer.device();
        let network = self.attention.network;
        // The student lives on the autodiff device; its inner module needs no graph.
        let student;
        let backbone = match network {
            Network::Teacher => &run.trainer.teacher().backbone,
            Network::Student => {
                student = run.trainer.student().backbone.valid();
                &student
            }
        };
        let maps: Vec<(String, crate::attention::AttentionMaps)> = self
            .attention
            .images
            .iter()
            .filter_map(|img| {
                let target = size.resolve(img.image.dimensions());
                crate::attention::attention_and_pca(backbone, &img.image, target, device)
                    .map(|maps| (img.name.clone(), maps))
            })
            .collect();
        let run_id = run.id;
        self.emit(Event::Attention {
            run_id,
            step,
            network,
            maps,
        });
    }

    fn finish_run(&mut self, status: WorkerStatus) {
        // A clean stop keeps a checkpoint to resume from (not after a failure: the state may
        // be what failed).
        if status == WorkerStatus::Finished
            && self
                .run
                .as_ref()
                .is_some_and(|r| r.trainer.steps_done() > 0)
        {
            self.save_checkpoint(false);
        }
        if let Some(run) = self.run.take() {
            if let Some(writer) = &run.writer {
                if let Err(err) = writer.write_config(&run.trainer.resolved_config()) {
                    self.emit(Event::Warning(err.to_string()));
                }
            }
            self.emit(Event::Status {
                run_id: Some(run.id),
                status,
            });
        }
    }
}
