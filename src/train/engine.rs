//! `Engine`: one training run with everything around the step. It owns the [`Trainer`], the
//! run directory writer, the k-NN / Jaccard monitor, the checkpoint policy and the scripted
//! toggles, and turns each step into [`EngineEvent`]s. The CLI is a progress bar around it and
//! the app's worker a channel adapter around it, so every policy below exists once:
//!
//! - toggles apply between steps and are announced as markers at the first step that uses them;
//! - the teacher is evaluated every `data.knn_every_epochs` epochs, and with the first
//!   evaluation the same network at random init (step 0), rebuilt from the seed;
//! - a checkpoint every `checkpoint_every_steps` steps (not at the last step: the final save
//!   covers it), keeping the newest `keep_last`;
//! - at the end a final checkpoint, the config with the live settings folded in and
//!   `teacher.bpk`;
//! - a failure to write a file is a warning and training goes on (the files already written
//!   stay valid); a panic inside a step becomes an error, not a crash.

use crate::analysis::health::{Cadence, RegimeWindow};
use crate::analysis::knn::{EvalData, JaccardResult, KnnResult};
use crate::config::{Config, Toggle};
use crate::model::{HostInit, VisionTransformer};
use crate::store::checkpoint::{resolve_checkpoint, save_model, write_checkpoint, TEACHER_FILE};
use crate::store::rows::{EvalRow, MetricsRow};
use crate::store::run::RunWriter;
use crate::train::resume::missing_steps;
use crate::train::trainer::{TrainError, Trainer};
use burn::module::Module;
use burn::prelude::Device;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Checkpoints kept per run by default.
pub const CHECKPOINT_KEEP_LAST: usize = 3;

/// When to save checkpoints during a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointPolicy {
    /// Every this many steps; 0 = only at the end (and when asked).
    pub every_steps: usize,
    /// The newest this many checkpoints are kept (at least 1).
    pub keep_last: usize,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        Self {
            every_steps: 0,
            keep_last: CHECKPOINT_KEEP_LAST,
        }
    }
}

/// What happened during one call; in order.
#[derive(Clone, Debug, PartialEq)]
pub enum EngineEvent {
    /// A toggle took effect before `step` (the first step that used it).
    Marker {
        step: usize,
        toggle: Toggle,
    },
    /// One step's metrics (already appended to `metrics.csv`).
    Metrics(Box<MetricsRow>),
    /// A k-NN / Jaccard evaluation (its row already appended to `knn.csv`); step 0 = random
    /// init. The full results (image counts, per-head Jaccard) come with the row.
    Eval(Box<Evaluation>),
    CheckpointSaved {
        path: PathBuf,
        elapsed_secs: f64,
    },
    /// Something the user should know that does not stop training.
    Warning(String),
    /// The run directory can no longer be written (removed, read-only, disk full): metrics
    /// are kept in memory only from this step on. The CLI stops; the app pauses and offers to
    /// continue saving elsewhere ([`Engine::save_to`]).
    StorageLost(String),
}

/// What is said when a run starts: where it runs, on what, how long, and what the rules read
/// beyond its rows. A trained run's [`Engine::run_start`], a watched run's
/// (`WatchEngine`: one row per checkpoint's epoch) and a followed run's; the worker sends it as
/// `Event::Started`.
#[derive(Clone, Debug, PartialEq)]
pub struct RunStart {
    pub device: String,
    pub dataset: String,
    pub total_steps: usize,
    pub iters_per_epoch: usize,
    pub shape: crate::analysis::health::RunShape,
}

/// One evaluation: the stored row and the results it summarises.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    pub row: EvalRow,
    pub knn: Option<KnnResult>,
    pub jaccard: Option<JaccardResult>,
}

/// What a resumed run had before its checkpoint.
#[derive(Clone, Debug)]
pub struct ResumedFrom {
    pub checkpoint: PathBuf,
    /// The step the run continues with.
    pub first_step: usize,
    /// `metrics.csv` rows before `first_step` (the curve so far).
    pub history: Vec<MetricsRow>,
    /// `knn.csv` rows up to the checkpoint.
    pub evals: Vec<EvalRow>,
}

/// Files written when a run ends.
#[derive(Clone, Debug, PartialEq)]
pub struct Finished {
    pub checkpoint: Option<PathBuf>,
    pub teacher: Option<PathBuf>,
    pub run_dir: Option<PathBuf>,
}

pub struct Engine {
    pub(super) trainer: Trainer,
    writer: Option<RunWriter>,
    /// Held-out data for the monitor (`None`: off, or the data has no labels).
    eval: Option<EvalData>,
    /// Whether the random-init row (step 0) exists; it is computed with the first evaluation,
    /// not at start, so the first training step is not delayed.
    eval_baseline_done: bool,
    /// `(before step, toggle)`, applied when their step comes.
    scripted: Vec<(usize, Toggle)>,
    /// Toggles applied since the last step, announced as markers with the next one.
    pending_markers: Vec<Toggle>,
    checkpoints: CheckpointPolicy,
    /// The regime's window over the rows (`analysis::health`, shared with the watcher and
    /// the app).
    pub(super) regime: RegimeWindow,
    /// Data warnings already reported.
    warned: std::collections::HashSet<String>,
    /// An injected failure (`train::guard`); the engine acts on `WriteError`.
    fault: Option<crate::train::guard::Fault>,
    /// Every row (without its spectrum and warnings) and evaluation of this run: the
    /// regime's window is its tail, and [`Engine::save_to`] rewrites them elsewhere when the
    /// run directory is lost.
    pub(super) history: Vec<MetricsRow>,
    eval_history: Vec<EvalRow>,
}

impl Engine {
    /// Builds the trainer and, with `run_dir`, creates the run directory. A run directory that
    /// cannot be created leaves the run in memory with `StorageLost` (see [`Engine::run_dir`]).
    pub fn start(
        config: Config,
        device: Device,
        total_steps: Option<usize>,
        run_dir: Option<&Path>,
    ) -> Result<(Self, Vec<EngineEvent>), TrainError> {
        let trainer = Trainer::new(config, device, total_steps)?;
        let mut events = Vec::new();
        let writer = match run_dir.map(|dir| RunWriter::create(dir, trainer.config())) {
            Some(Ok(writer)) => Some(writer),
            Some(Err(err)) => {
                // Kept in memory, said as a lost folder: the app pauses and offers another
                // folder, the CLI stops naming this one.
                events.push(EngineEvent::StorageLost(err.to_string()));
                None
            }
            None => None,
        };
        let engine = Self::around(trainer, writer, false, &mut events);
        Ok((engine, events))
    }

    /// Continues a run from a checkpoint (a run directory: its newest checkpoint, or one
    /// `checkpoint-<step>/`); `metrics.csv` and `knn.csv` are cut back to the checkpoint.
    pub fn resume(
        path: &Path,
        device: Device,
    ) -> Result<(Self, ResumedFrom, Vec<EngineEvent>), TrainError> {
        let checkpoint = resolve_checkpoint(path).map_err(TrainError::Checkpoint)?;
        let trainer = Trainer::resume(&checkpoint, device)?;
        let run_dir = checkpoint
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let first_step = trainer.steps_done();
        let mut events = Vec::new();
        let (writer, history, evals) = match RunWriter::resume(&run_dir, first_step) {
            Ok((writer, history)) => match writer.truncate_evals(first_step) {
                Ok(evals) => (Some(writer), history, evals),
                Err(err) => {
                    events.push(EngineEvent::Warning(err.to_string()));
                    (Some(writer), history, Vec::new())
                }
            },
            Err(err) => {
                // Kept in memory, said as a lost folder: the app pauses and offers another
                // folder, the CLI stops naming this one.
                events.push(EngineEvent::StorageLost(err.to_string()));
                (None, Vec::new(), Vec::new())
            }
        };
        if writer.is_some() {
            if let Some(gap) = missing_steps(&history, first_step) {
                events.push(EngineEvent::Warning(format!(
                    "{}: {gap}; the curve has a gap there (the checkpoint's weights are intact)",
                    run_dir.join(crate::store::run::METRICS_FILE).display()
                )));
            }
        }
        let baseline_done = evals.iter().any(|row| row.step == 0);
        let mut engine = Self::around(trainer, writer, baseline_done, &mut events);
        if let Ok(state) = crate::store::checkpoint::read_checkpoint_state(&checkpoint) {
            engine.set_checkpoint_policy(CheckpointPolicy {
                every_steps: state.checkpoint_every_steps,
                keep_last: state.keep_last,
            });
        }
        for row in &history {
            engine.remember(row);
        }
        engine.eval_history = evals.clone();
        let resumed = ResumedFrom {
            checkpoint,
            first_step,
            history,
            evals,
        };
        Ok((engine, resumed, events))
    }

    fn around(
        trainer: Trainer,
        writer: Option<RunWriter>,
        eval_baseline_done: bool,
        events: &mut Vec<EngineEvent>,
    ) -> Self {
        let eval = eval_data(trainer.config(), events);
        Self {
            trainer,
            writer,
            eval,
            eval_baseline_done,
            scripted: Vec::new(),
            pending_markers: Vec::new(),
            checkpoints: CheckpointPolicy::default(),
            regime: RegimeWindow::new(Cadence::STEPS),
            warned: std::collections::HashSet::new(),
            fault: None,
            history: Vec::new(),
            eval_history: Vec::new(),
        }
    }

    pub fn trainer(&self) -> &Trainer {
        &self.trainer
    }

    /// This run as it starts, on `device` (its description).
    pub fn run_start(&self, device: String) -> RunStart {
        RunStart {
            device,
            dataset: self.trainer.dataset_description().to_string(),
            total_steps: self.trainer.total_steps(),
            iters_per_epoch: self.trainer.iters_per_epoch(),
            shape: self.run_shape(),
        }
    }

    /// The run directory, when the run has one that could be written.
    pub fn run_dir(&self) -> Option<&Path> {
        self.writer.as_ref().map(RunWriter::dir)
    }

    /// The policy in force: the default for a new run, the saved one for a resumed run.
    pub fn checkpoint_policy(&self) -> CheckpointPolicy {
        self.checkpoints
    }

    /// TensorBoard events under `RUN/tb/` (on by default); off before the first step writes
    /// none. The toggles, attention pictures and rows all go there.
    pub fn set_tensorboard(&mut self, on: bool) {
        if let Some(writer) = &mut self.writer {
            writer.set_tensorboard(on);
        }
    }

    /// A picture (an attention snapshot) into the run's TensorBoard events.
    pub fn log_image(&self, step: usize, tag: &str, picture: &image::RgbImage) {
        if let Some(writer) = &self.writer {
            writer.with_events(|events| events.image(step, tag, picture));
        }
    }

    pub fn set_checkpoint_policy(&mut self, policy: CheckpointPolicy) {
        self.checkpoints = CheckpointPolicy {
            keep_last: policy.keep_last.max(1),
            ..policy
        };
    }

    /// Toggles to apply before given steps (`--toggle-at`); each is checked now, so a bad
    /// value fails before the first step. Toggles at or past the last step are refused too.
    pub fn script(&mut self, toggles: Vec<(usize, Toggle)>) -> Result<(), TrainError> {
        let total = self.trainer.total_steps();
        let first = self.trainer.steps_done();
        for (step, toggle) in &toggles {
            toggle
                .check()
                .map_err(|err| TrainError::Setting(format!("--toggle-at {step}: {err}")))?;
            if *step >= total {
                return Err(TrainError::Setting(format!(
                    "--toggle-at {step}:… comes after the last step ({}); the run has {total} steps",
                    total.saturating_sub(1)
                )));
            }
            if *step < first {
                return Err(TrainError::Setting(format!(
                    "--toggle-at {step}:… comes before step {first}, where this resumed run continues"
                )));
            }
        }
        self.scripted = toggles;
        Ok(())
    }

    /// Makes a later step fail as `fault` says (`DINOSCOPE_FAULT`, tests; see `train::guard`).
    pub fn inject_fault(&mut self, fault: Option<crate::train::guard::Fault>) {
        self.trainer.inject_fault(fault);
        self.fault = fault;
    }

    /// Applies a toggle before the next step; a marker is announced with that step.
    pub fn apply(&mut self, toggle: Toggle) -> Result<(), TrainError> {
        self.trainer.apply(&toggle)?;
        self.pending_markers.push(toggle);
        Ok(())
    }

    /// Whether every scheduled step has run.
    pub fn is_done(&self) -> bool {
        self.trainer.steps_done() >= self.trainer.total_steps()
    }

    /// One training step and what follows it: markers, metrics (appended to the CSV), an
    /// evaluation at epoch boundaries, a periodic checkpoint.
    pub fn step(&mut self) -> Result<Vec<EngineEvent>, TrainError> {
        let step = self.trainer.steps_done();
        let due: Vec<Toggle> = self
            .scripted
            .iter()
            .filter(|(at, _)| *at == step)
            .map(|(_, toggle)| toggle.clone())
            .collect();
        self.scripted.retain(|(at, _)| *at > step);
        for toggle in due {
            self.apply(toggle)?;
        }
        let mut events: Vec<EngineEvent> = self
            .pending_markers
            .drain(..)
            .map(|toggle| EngineEvent::Marker { step, toggle })
            .collect();
        if let Some(writer) = &self.writer {
            for event in &events {
                if let EngineEvent::Marker { step, toggle } = event {
                    writer.with_events(|tb| tb.toggle(*step, toggle));
                }
            }
        }
        let mut metrics = self.guarded_step(step)?;
        metrics.regime = self.diagnose(&metrics);
        for warning in &metrics.warnings {
            // A corrupt file is met again every epoch: say it once per run.
            if self.warned.insert(warning.clone()) {
                events.push(EngineEvent::Warning(warning.clone()));
            }
        }
        if let Some(writer) = &mut self.writer {
            let appended = match self.fault {
                Some(crate::train::guard::Fault::WriteError { step: at }) if at == step => {
                    Err(crate::store::run::RunError::Write {
                        path: writer.metrics_path().to_path_buf(),
                        source: std::io::Error::other(
                            "No space left on device (injected by DINOSCOPE_FAULT)",
                        ),
                    })
                }
                _ => writer.append(&metrics),
            };
            if let Err(err) = appended {
                self.writer = None;
                events.push(EngineEvent::StorageLost(format!(
                    "{err}; from step {} on this run is kept in memory only",
                    metrics.step
                )));
            }
        }
        events.push(EngineEvent::Metrics(Box::new(metrics)));
        let done = self.trainer.steps_done();
        let per_epoch = self.trainer.iters_per_epoch().max(1);
        let every = self.trainer.config().data.knn_every_epochs;
        if every > 0 && done.is_multiple_of(per_epoch) && (done / per_epoch).is_multiple_of(every) {
            self.evaluate(&mut events);
        }
        let period = self.checkpoints.every_steps;
        if period > 0 && done.is_multiple_of(period) && !self.is_done() {
            events.push(self.checkpoint_event());
        }
        Ok(events)
    }

    /// A panic inside burn (e.g. a backend failure) must not take the process down: it
    /// becomes an error and the caller ends the run.
    fn guarded_step(&mut self, step: usize) -> Result<MetricsRow, TrainError> {
        let trainer = &mut self.trainer;
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| trainer.step())).unwrap_or_else(
            |payload| {
                let reason = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                Err(TrainError::Internal(format!(
                    "training step {step} panicked: {reason}"
                )))
            },
        )
    }

    /// k-NN and Jaccard of the current teacher; the first time also of the same network at
    /// random init (the initial weights are a pure function of the seed), as step 0.
    fn evaluate(&mut self, events: &mut Vec<EngineEvent>) {
        if self.eval.is_none() {
            return;
        }
        self.evaluate_baseline(events);
        let (step, epoch) = (self.trainer.steps_done(), self.trainer.epoch());
        let teacher = self.trainer.teacher().backbone.clone();
        // The student without its autodiff graph, for the teacher-vs-student comparison.
        let student = self.trainer.student().backbone.valid();
        self.evaluate_backbone(&teacher, Some(&student), step, epoch, events);
    }

    /// The network at random init (rebuilt from the seed), as step 0, once per run.
    fn evaluate_baseline(&mut self, events: &mut Vec<EngineEvent>) {
        if self.eval_baseline_done || self.eval.is_none() {
            return;
        }
        let config = self.trainer.config();
        let initial = VisionTransformer::new(
            &config.vit_config(0.0),
            &mut HostInit::new(config.seed),
            self.trainer.device(),
        );
        self.evaluate_backbone(&initial, None, 0, 0, events);
        self.eval_baseline_done = true;
    }

    /// One `knn.csv` row: k-NN and Jaccard of `backbone` (the teacher) and, given, k-NN of
    /// the student on the same split.
    fn evaluate_backbone(
        &mut self,
        backbone: &VisionTransformer,
        student: Option<&VisionTransformer>,
        step: usize,
        epoch: usize,
        events: &mut Vec<EngineEvent>,
    ) {
        let Some(eval) = &self.eval else { return };
        let device = self.trainer.device();
        let knn = match eval.knn(backbone, device) {
            Ok(result) => Some(result),
            Err(err) => {
                events.push(EngineEvent::Warning(format!("k-NN skipped: {err}")));
                None
            }
        };
        let jaccard = eval.jaccard(backbone, device);
        let student_knn = student.and_then(|student| match eval.knn(student, device) {
            Ok(result) => Some(result),
            Err(err) => {
                events.push(EngineEvent::Warning(format!("student k-NN skipped: {err}")));
                None
            }
        });
        let row = EvalRow {
            step,
            epoch,
            top1: knn.map(|k| k.top1),
            top5: knn.map(|k| k.top5),
            jaccard_best_head: jaccard.as_ref().map(|j| j.best),
            jaccard_mean_map: jaccard.as_ref().map(|j| j.mean_map),
            eval_secs: knn.map(|k| k.elapsed_secs),
            student_top1: student_knn.map(|k| k.top1),
            student_top5: student_knn.map(|k| k.top5),
        };
        self.eval_history.push(row.clone());
        if let Some(writer) = &self.writer {
            if let Err(err) = writer.append_eval(&row) {
                events.push(EngineEvent::Warning(err.to_string()));
            }
        }
        events.push(EngineEvent::Eval(Box::new(Evaluation {
            row,
            knn,
            jaccard,
        })));
    }

    /// Evaluates the teacher now unless the last evaluation is of this very step: a run whose
    /// length is not a multiple of the evaluation period still ends with its own numbers (an
    /// ablation study compares final values).
    pub fn evaluate_final(&mut self) -> Vec<EngineEvent> {
        let mut events = Vec::new();
        let done = self.trainer.steps_done();
        if done > 0 && self.eval_history.last().map(|e| e.step) != Some(done) {
            self.evaluate(&mut events);
        }
        events
    }

    /// Every row of this run so far (without spectra), oldest first.
    pub fn history(&self) -> &[MetricsRow] {
        &self.history
    }

    /// Every evaluation of this run so far, oldest first (step 0: random init).
    pub fn evaluations(&self) -> &[EvalRow] {
        &self.eval_history
    }

    /// Continues saving this run in `dir` after its run directory was lost: the config, every
    /// row and evaluation so far, and a checkpoint of the current state, so nothing trained in
    /// memory is lost. Returns the checkpoint.
    pub fn save_to(&mut self, dir: &Path) -> Result<PathBuf, String> {
        let mut writer =
            RunWriter::create(dir, self.trainer.config()).map_err(|e| e.to_string())?;
        for row in &self.history {
            writer.append(row).map_err(|e| e.to_string())?;
        }
        for row in &self.eval_history {
            writer.append_eval(row).map_err(|e| e.to_string())?;
        }
        self.writer = Some(writer);
        self.save_checkpoint().map(|(path, _)| path)
    }

    /// Writes a checkpoint now (the Save button, a signal): `CheckpointSaved`, or a warning
    /// that says why nothing was written; training goes on either way.
    pub fn checkpoint_event(&self) -> EngineEvent {
        match self.save_checkpoint() {
            Ok((path, elapsed_secs)) => EngineEvent::CheckpointSaved { path, elapsed_secs },
            Err(message) => EngineEvent::Warning(message),
        }
    }

    fn save_checkpoint(&self) -> Result<(PathBuf, f64), String> {
        let Some(dir) = self.run_dir() else {
            return Err(
                "this run has no run directory (runs are kept in memory only); nothing saved"
                    .into(),
            );
        };
        let started = Instant::now();
        let mut snapshot = self
            .trainer
            .snapshot()
            .map_err(|err| format!("checkpoint not written: {err}"))?;
        // Saved so a resumed run keeps checkpointing as it did.
        snapshot.state.checkpoint_every_steps = self.checkpoints.every_steps;
        snapshot.state.keep_last = self.checkpoints.keep_last;
        write_checkpoint(&snapshot, dir, self.checkpoints.keep_last)
            .map(|path| (path, started.elapsed().as_secs_f64()))
            // The previous checkpoints are intact.
            .map_err(|err| format!("checkpoint not written: {err}"))
    }

    /// Ends the run. `save`: a clean stop keeps a checkpoint to resume from and `teacher.bpk`
    /// (not after a failure: the state may be what failed). The config with the live settings
    /// folded in is written either way.
    pub fn finish(mut self, save: bool) -> (Finished, Vec<EngineEvent>) {
        let mut events = Vec::new();
        let mut finished = Finished {
            checkpoint: None,
            teacher: None,
            run_dir: self.run_dir().map(Path::to_path_buf),
        };
        // A run shorter than the evaluation period still gets its random-init row, the line
        // the learned features are compared with.
        // Not after a failure: the device may be gone.
        if save && !self.eval_baseline_done && self.eval.is_some() {
            let mut evals = Vec::new();
            self.evaluate_baseline(&mut evals);
            events.extend(evals);
        }
        if save && self.trainer.steps_done() > 0 && self.writer.is_some() {
            let event = self.checkpoint_event();
            if let EngineEvent::CheckpointSaved { path, .. } = &event {
                finished.checkpoint = Some(path.clone());
            }
            events.push(event);
            if let Some(dir) = self.run_dir() {
                let path = dir.join(TEACHER_FILE);
                match save_model(self.trainer.teacher(), &path) {
                    Ok(()) => finished.teacher = Some(path),
                    Err(err) => events.push(EngineEvent::Warning(err.to_string())),
                }
            }
        }
        if let Some(writer) = &self.writer {
            if let Err(err) = writer.write_config(&self.trainer.resolved_config()) {
                events.push(EngineEvent::Warning(err.to_string()));
            }
        }
        (finished, events)
    }
}

/// The monitor's data, when `data.knn_every_epochs` asks for one and the data has labels.
fn eval_data(config: &Config, events: &mut Vec<EngineEvent>) -> Option<EvalData> {
    if config.data.knn_every_epochs == 0 {
        return None;
    }
    match EvalData::for_config(config) {
        Ok(data) => data,
        Err(err) => {
            events.push(EngineEvent::Warning(format!("no k-NN monitor: {err}")));
            None
        }
    }
}
