//! The UI's plain state: runs with their plotted series and markers, the control values, the
//! status line. No egui widgets and no tensors here, so tests can build it with synthetic
//! history and the worker's events apply to it directly.

use super::collapse::{CollapseState, RecentLoss};
use super::series::{Series, ViewSettings};
use crate::analysis::health::{rank_is_valid, Cadence, RegimeWindow, RunShape};
use crate::config::{LiveSettings, Toggle};
pub use crate::store::quantity::Quantity;
use crate::store::rows::{EvalRow, MetricsRow};
use crate::worker::{Event, RunId, WorkerStatus};
use std::collections::VecDeque;
use std::path::PathBuf;

/// A toggle marker drawn on every plot.
#[derive(Clone, Debug, PartialEq)]
pub struct Marker {
    pub step: usize,
    pub label: String,
}

/// One run of the session.
#[derive(Clone, Debug)]
pub struct RunRecord {
    pub id: RunId,
    pub label: String,
    pub dir: Option<PathBuf>,
    pub colour_index: usize,
    pub visible: bool,
    pub pinned: bool,
    pub status: WorkerStatus,
    pub device: String,
    pub dataset: String,
    pub total_steps: usize,
    pub iters_per_epoch: usize,
    pub ln_k: f64,
    /// Width of the backbone features (the effective rank's maximum); 0 = unknown.
    pub embed_dim: usize,
    /// Images per batch (a watched run: the probe's); 0 = unknown. ln B is the most I can be.
    pub batch_images: usize,
    pub student_temp: f64,
    /// The chip's window: the same rules and window as the engine's `regime` column.
    regime: RegimeWindow,
    pub series: Vec<(Quantity, Series)>,
    pub markers: Vec<Marker>,
    pub last: Option<MetricsRow>,
    /// Smoothed throughput for the ETA.
    pub images_per_sec_ema: Option<f64>,
    /// Teacher evaluations, oldest first (the first, at step 0, is the random-init baseline).
    pub evals: Vec<EvalRow>,
    /// The run directory could not be written: the UI offers "Save run to…".
    pub storage_lost: bool,
    /// A run another process trains, followed from its checkpoints: one row per epoch.
    pub watched: bool,
    /// Trained by another process (watched or followed): the live controls and the run
    /// buttons do not reach it.
    pub external: bool,
    /// A watched run's `log.txt`: (epoch, mean training loss), oldest first.
    pub log_loss: Vec<[f64; 2]>,
    /// The highest effective rank so far (followed as rows arrive, not searched per frame).
    best: Option<crate::store::run::BestRank>,
    /// The newest spectra of the backbone window (step, σ / σ₁ largest first), oldest first.
    pub spectra: VecDeque<(usize, Vec<f32>)>,
}

/// Spectra kept per run: the newest is drawn solid, the older ones fainter, so its motion shows.
pub const SPECTRA_KEPT: usize = 6;

impl RunRecord {
    /// The evaluation at random init (step 0), the line learned features must beat.
    pub fn eval_baseline(&self) -> Option<&EvalRow> {
        self.evals.first().filter(|e| e.step == 0)
    }
}

impl RunRecord {
    pub fn new(id: RunId, label: String, dir: Option<PathBuf>, view: ViewSettings) -> Self {
        Self {
            id,
            label,
            dir,
            colour_index: id as usize,
            visible: true,
            pinned: false,
            status: WorkerStatus::Starting,
            device: String::new(),
            dataset: String::new(),
            total_steps: 0,
            iters_per_epoch: 1,
            ln_k: 0.0,
            embed_dim: 0,
            batch_images: 0,
            student_temp: 0.1,
            regime: RegimeWindow::new(Cadence::STEPS),
            series: Quantity::ALL
                .iter()
                .map(|q| (*q, Series::new(view)))
                .collect(),
            markers: Vec::new(),
            last: None,
            images_per_sec_ema: None,
            evals: Vec::new(),
            spectra: VecDeque::new(),
            storage_lost: false,
            watched: false,
            external: false,
            log_loss: Vec::new(),
            best: None,
        }
    }

    pub fn series(&self, quantity: Quantity) -> Option<&Series> {
        self.series
            .iter()
            .find(|(q, _)| *q == quantity)
            .map(|(_, s)| s)
    }

    pub fn push(&mut self, mut metrics: MetricsRow) {
        let shape = self.shape();
        self.regime.push(metrics.health_sample(), &shape);
        let x = metrics.step as f64;
        for (quantity, series) in &mut self.series {
            if let Some(value) = quantity.of(&metrics) {
                series.push(x, value);
            }
        }
        // Only a reading over enough rows can be the run's best (the verdict's rule).
        if let Some(rank) = metrics
            .effective_rank
            .filter(|_| rank_is_valid(metrics.rank_rows, self.embed_dim))
        {
            self.best = crate::store::run::BestRank::with(self.best, metrics.step, rank);
        }
        if !metrics.spectrum.is_empty() {
            let spectrum = std::mem::take(&mut metrics.spectrum);
            self.spectra.push_back((metrics.step, spectrum));
            while self.spectra.len() > SPECTRA_KEPT {
                self.spectra.pop_front();
            }
        }
        self.images_per_sec_ema = Some(match self.images_per_sec_ema {
            Some(rate) => 0.9 * rate + 0.1 * metrics.images_per_sec,
            None => metrics.images_per_sec,
        });
        self.last = Some(metrics);
    }

    pub fn set_view(&mut self, view: ViewSettings) {
        for (_, series) in &mut self.series {
            series.set_view(view);
        }
    }

    pub fn steps(&self) -> usize {
        self.series
            .first()
            .map(|(_, s)| s.len())
            .unwrap_or_default()
    }

    /// Seconds left at the recent rate.
    pub fn eta_secs(&self, batch_size: usize) -> Option<f64> {
        let last = self.last.as_ref()?;
        let rate = self.images_per_sec_ema?;
        let steps_left = self.total_steps.saturating_sub(last.step + 1);
        (rate > 0.0).then(|| steps_left as f64 * batch_size as f64 / rate)
    }

    pub fn collapse_state(&self) -> CollapseState {
        self.regime.regime(&self.shape())
    }

    /// The decomposition over the chip's window, with what it says.
    pub fn recent_loss(&self) -> RecentLoss {
        self.regime.recent(&self.shape())
    }

    /// What the rules read beyond the rows.
    pub fn shape(&self) -> RunShape {
        RunShape {
            ln_k: self.ln_k,
            batch_images: self.batch_images,
            embed_dim: self.embed_dim,
            student_temp: self.student_temp,
        }
    }

    /// Takes a run's shape (from its `Started` event or its config).
    pub fn set_shape(&mut self, shape: RunShape) {
        self.ln_k = shape.ln_k;
        self.batch_images = shape.batch_images;
        self.embed_dim = shape.embed_dim;
        self.student_temp = shape.student_temp;
    }

    /// Rows that are checkpoints (a run trained elsewhere): each is its own verdict, never
    /// averaged with the one before. Call before the first row.
    pub fn set_watched(&mut self, watched: bool) {
        self.watched = watched;
        self.regime = RegimeWindow::new(if watched {
            Cadence::CHECKPOINTS
        } else {
            Cadence::STEPS
        });
    }

    /// The step with the highest effective rank so far and its value: the checkpoint to keep
    /// when there are no labels (RankMe's use).
    pub fn best_rank(&self) -> Option<(usize, f64)> {
        self.best.map(|best| (best.step, best.effective_rank))
    }
}

/// Severity of a status-line message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Info,
    Warning,
    Error,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StatusMessage {
    pub level: Level,
    pub text: String,
}

/// Runs, controls and messages.
#[derive(Debug)]
pub struct AppState {
    pub runs: Vec<RunRecord>,
    pub current: Option<RunId>,
    pub next_run_id: RunId,
    pub worker_status: WorkerStatus,
    pub controls: LiveSettings,
    pub view: ViewSettings,
    pub messages: VecDeque<StatusMessage>,
    /// Every toggle sent, newest last (what the tests check, and a session log).
    pub sent_toggles: Vec<Toggle>,
    /// Attention maps of the current run over time (for the scrubber), oldest first.
    pub attention_history: VecDeque<AttentionSnapshot>,
    /// Every snapshot's mean attention distance (never dropped: a few floats each), for the
    /// chart of heads moving from local to global over training.
    pub distance_history: Vec<DistanceSnapshot>,
    /// The ablation study of this session, if one was started.
    pub study: Option<super::study::StudyState>,
    /// The patch inspector's latest answer (from the training run or the loaded weights).
    pub similarity: Option<crate::analysis::tokens::Similarity>,
    /// The last snapshot's generation.
    pub attention_generation: u64,
    /// Counts the patch inspector's answers (its textures key on it).
    pub similarity_generation: u64,
}

/// One network's maps for the followed images after one step.
#[derive(Clone, Debug)]
pub struct AttentionSnapshot {
    pub step: usize,
    /// New for every snapshot of the session (texture caches key on it).
    pub generation: u64,
    pub network: crate::store::weights::Network,
    pub maps: Vec<(String, crate::analysis::attention::AttentionMaps)>,
}

pub use super::distance_history::{DistanceSnapshot, MAX_DISTANCE_POINTS};

/// Attention snapshots kept per run (at one per 10 steps: the last 1000 steps).
pub const MAX_ATTENTION_SNAPSHOTS: usize = 100;

pub const MAX_MESSAGES: usize = 200;

impl AppState {
    pub fn new(controls: LiveSettings, view: ViewSettings) -> Self {
        Self {
            runs: Vec::new(),
            current: None,
            next_run_id: 1,
            worker_status: WorkerStatus::Idle,
            controls,
            view,
            messages: VecDeque::new(),
            sent_toggles: Vec::new(),
            attention_history: VecDeque::new(),
            distance_history: Vec::new(),
            study: None,
            similarity: None,
            attention_generation: 0,
            similarity_generation: 0,
        }
    }

    pub fn message(&mut self, level: Level, text: impl Into<String>) {
        let text = text.into();
        match level {
            Level::Error => tracing::error!("{text}"),
            Level::Warning => tracing::warn!("{text}"),
            Level::Info => tracing::info!("{text}"),
        }
        self.messages.push_back(StatusMessage { level, text });
        while self.messages.len() > MAX_MESSAGES {
            self.messages.pop_front();
        }
    }

    pub fn run(&self, id: RunId) -> Option<&RunRecord> {
        self.runs.iter().find(|r| r.id == id)
    }

    pub fn run_mut(&mut self, id: RunId) -> Option<&mut RunRecord> {
        self.runs.iter_mut().find(|r| r.id == id)
    }

    pub fn current_run(&self) -> Option<&RunRecord> {
        self.current.and_then(|id| self.run(id))
    }

    /// Registers a new run and makes it current; returns its id.
    pub fn begin_run(&mut self, label: String, dir: Option<PathBuf>) -> RunId {
        let id = self.next_run_id;
        self.next_run_id += 1;
        self.runs.push(RunRecord::new(id, label, dir, self.view));
        self.current = Some(id);
        self.attention_history.clear();
        self.distance_history.clear();
        id
    }

    /// Adds a finished run read from disk (its metrics and evaluations) as an overlay: pinned,
    /// never the current run. Errors name the file. (The app reads the files in a job:
    /// `OpenedRun::read`, then `add_opened_run`.)
    pub fn open_run_from_disk(&mut self, dir: &std::path::Path) -> Result<RunId, String> {
        Ok(self.add_opened_run(OpenedRun::read(dir)?))
    }

    /// Adds a run folder's rows, read off the UI thread, as a pinned overlay.
    pub fn add_opened_run(&mut self, opened: OpenedRun) -> RunId {
        let OpenedRun {
            dir,
            rows,
            evals,
            config,
        } = opened;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        let id = self.next_run_id;
        self.next_run_id += 1;
        let mut run = RunRecord::new(id, name, Some(dir), self.view);
        run.pinned = true;
        run.status = WorkerStatus::Finished;
        if let Some(config) = &config {
            run.set_shape(RunShape::of_config(config));
        }
        // A watched run's folder holds one row per checkpoint, its step being its epoch.
        run.set_watched(rows.len() > 1 && rows.iter().all(|r| r.step == r.epoch));
        for metrics in rows {
            run.push(metrics);
        }
        run.evals = evals;
        self.runs.push(run);
        id
    }

    /// Reset: forget the current run and every run that is not pinned.
    pub fn reset(&mut self) {
        self.runs.retain(|run| run.pinned);
        self.current = None;
        self.attention_history.clear();
        self.distance_history.clear();
        self.study = None;
    }

    /// The patch inspector's answer, from the worker or the inference thread.
    pub fn set_similarity(&mut self, similarity: crate::analysis::tokens::Similarity) {
        self.similarity = Some(similarity);
        self.similarity_generation += 1;
    }

    pub fn set_view(&mut self, view: ViewSettings) {
        if view != self.view {
            self.view = view;
            for run in &mut self.runs {
                run.set_view(view);
            }
        }
    }

    /// Applies one worker event.
    ///
    /// Long: one arm per worker event.
    pub fn apply(&mut self, event: Event) {
        match event {
            Event::Started {
                run_id,
                device,
                dataset,
                total_steps,
                iters_per_epoch,
                shape,
            } => {
                if let Some(run) = self.run_mut(run_id) {
                    run.device = device;
                    run.dataset = dataset;
                    run.total_steps = total_steps;
                    run.iters_per_epoch = iters_per_epoch.max(1);
                    run.set_shape(shape);
                }
            }
            Event::Metrics { run_id, metrics } => {
                if let Some(run) = self.run_mut(run_id) {
                    run.push(*metrics);
                }
            }
            Event::Resumed {
                run_id,
                checkpoint,
                first_step,
                history,
            } => {
                if let Some(run) = self.run_mut(run_id) {
                    for metrics in history {
                        run.push(metrics);
                    }
                    run.markers.push(Marker {
                        step: first_step,
                        label: "resumed".into(),
                    });
                }
                self.message(
                    Level::Info,
                    format!("resumed from {} at step {first_step}", checkpoint.display()),
                );
            }
            Event::Eval { run_id, evaluation } => {
                if let Some(run) = self.run_mut(run_id) {
                    run.evals.push(evaluation.row);
                }
            }
            Event::EvalHistory { run_id, rows } => {
                if let Some(run) = self.run_mut(run_id) {
                    run.evals = rows;
                }
            }
            Event::CheckpointSaved { path, elapsed_secs } => {
                // A checkpoint written means the run has a directory again.
                if let Some(run) = self.current.and_then(|id| self.run_mut(id)) {
                    run.storage_lost = false;
                }
                self.message(
                    Level::Info,
                    format!(
                        "checkpoint saved: {} ({:.0} ms)",
                        path.display(),
                        elapsed_secs * 1e3
                    ),
                )
            }
            Event::Marker {
                run_id,
                step,
                label,
                ..
            } => {
                if let Some(run) = self.run_mut(run_id) {
                    run.markers.push(Marker { step, label });
                }
            }
            Event::Status { run_id, status } => {
                if let Some(run) = run_id.and_then(|id| self.run_mut(id)) {
                    run.status = status;
                }
                // A watch's status is its own run's, never the training worker's.
                let external = run_id
                    .and_then(|id| self.run(id))
                    .is_some_and(|r| r.external);
                if run_id.is_none() || (run_id == self.current && !external) {
                    self.worker_status = status;
                }
            }
            Event::Attention {
                run_id,
                step,
                network,
                maps,
            } => {
                if Some(run_id) == self.current {
                    self.attention_generation += 1;
                    let snapshot = AttentionSnapshot {
                        step,
                        generation: self.attention_generation,
                        network,
                        maps,
                    };
                    if let Some(point) = DistanceSnapshot::of(&snapshot) {
                        super::distance_history::push_thinned(&mut self.distance_history, point);
                    }
                    self.attention_history.push_back(snapshot);
                    while self.attention_history.len() > MAX_ATTENTION_SNAPSHOTS {
                        self.attention_history.pop_front();
                    }
                }
            }
            Event::TrainLog {
                run_id,
                epoch,
                train_loss,
            } => {
                if let Some(run) = self.run_mut(run_id) {
                    run.log_loss.push([epoch as f64, train_loss]);
                }
            }
            Event::Info(text) => self.message(Level::Info, text),
            Event::Warning(text) => self.message(Level::Warning, text),
            Event::StorageLost { run_id, message } => {
                if let Some(run) = self.run_mut(run_id) {
                    run.storage_lost = true;
                    if let Some(step) = run.last.as_ref().map(|m| m.step) {
                        run.markers.push(Marker {
                            step,
                            label: "run directory lost".into(),
                        });
                    }
                }
                self.message(
                    Level::Error,
                    format!("{message}. The run is paused and kept in memory: use Save run to… to continue saving it elsewhere."),
                );
            }
            Event::Halted {
                run_id,
                step,
                message,
            } => {
                if let Some(run) = self.run_mut(run_id) {
                    run.markers.push(Marker {
                        step,
                        label: "non-finite: step discarded".into(),
                    });
                }
                self.message(Level::Error, message);
            }
            Event::StudyArmDone {
                run_id,
                row,
                overlay,
            } => self.study_arm_done(run_id, *row, overlay),
            Event::StudyFinished {
                dir,
                written,
                skipped,
                complete,
            } => self.study_finished(dir, written, skipped, complete),
            Event::Similarity(similarity) => self.set_similarity(*similarity),
            Event::Error(text) => self.message(Level::Error, text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CenteringMode;

    pub fn metrics(step: usize, h: f64, kl: f64) -> MetricsRow {
        MetricsRow {
            step,
            epoch: step / 10,
            loss: h + kl,
            teacher_entropy: h,
            kl,
            batch_mean_entropy: h,
            lr: 1e-4,
            weight_decay: 0.04,
            teacher_momentum: 0.99,
            teacher_temp: 0.04,
            images_per_sec: 100.0,
            step_secs: 0.3,
            data_wait_secs: 0.0,
            local_crops: 6,
            centering: true,
            sharpening: true,
            ln_k: 1024f64.ln(),
            warnings: Vec::new(),
            ..MetricsRow::default()
        }
    }

    #[test]
    fn events_fill_runs_and_reset_keeps_pinned() {
        let view = ViewSettings {
            smoothing: 0.0,
            log_y: false,
        };
        let mut state = AppState::new(
            LiveSettings::from_config(&crate::config::Config::default()),
            view,
        );
        let first = state.begin_run("a".into(), None);
        state.apply(Event::Started {
            run_id: first,
            device: "CPU".into(),
            dataset: "shapes".into(),
            total_steps: 100,
            iters_per_epoch: 10,
            shape: RunShape {
                ln_k: 1024f64.ln(),
                batch_images: 32,
                embed_dim: 96,
                student_temp: 0.1,
            },
        });
        for step in 0..30 {
            state.apply(Event::Metrics {
                run_id: first,
                metrics: Box::new(metrics(step, 0.001, 0.001)),
            });
        }
        state.apply(Event::Marker {
            run_id: first,
            step: 12,
            label: "centering off".into(),
            toggle: Toggle::Centering(CenteringMode::Off),
        });
        let run = state.current_run().unwrap();
        assert_eq!(run.steps(), 30);
        assert_eq!(
            run.markers,
            vec![Marker {
                step: 12,
                label: "centering off".into()
            }]
        );
        assert_eq!(run.collapse_state(), CollapseState::OnePrototype);
        assert!(run.eta_secs(64).is_some());

        state.run_mut(first).unwrap().pinned = true;
        let second = state.begin_run("b".into(), None);
        state.reset();
        assert!(state.run(first).is_some(), "pinned runs survive reset");
        assert!(state.run(second).is_none());
        assert!(state.current.is_none());
        state.apply(Event::Error("boom".into()));
        assert_eq!(state.messages.back().unwrap().level, Level::Error);
    }
}

/// A run folder's rows and config as read from disk (by a job, off the UI thread).
#[derive(Clone, Debug)]
pub struct OpenedRun {
    pub dir: PathBuf,
    pub rows: Vec<MetricsRow>,
    pub evals: Vec<EvalRow>,
    pub config: Option<crate::config::Config>,
}

impl OpenedRun {
    /// Reads `metrics.csv`, `knn.csv` and `config.toml`; errors name the file.
    pub fn read(dir: &std::path::Path) -> Result<Self, String> {
        use crate::store::run::{CONFIG_FILE, EVAL_FILE, METRICS_FILE};
        let metrics_path = dir.join(METRICS_FILE);
        if !metrics_path.is_file() {
            return Err(format!(
                "{} has no {METRICS_FILE}; open a run directory written by dinoscope",
                dir.display()
            ));
        }
        let rows =
            crate::store::run::read_step_metrics(&metrics_path).map_err(|err| err.to_string())?;
        if rows.is_empty() {
            return Err(format!("{} has no complete rows", metrics_path.display()));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            rows,
            evals: crate::store::run::read_eval_rows(&dir.join(EVAL_FILE)),
            config: crate::config::Config::from_file(&dir.join(CONFIG_FILE)).ok(),
        })
    }
}
