//! The training worker: a thread that owns the `Trainer` (models, device, loader) and talks to
//! the UI only through bounded channels of plain data. It never touches egui; the UI never
//! touches tensors. Commands take effect at the next step boundary.

pub mod follow;
pub mod handle;
pub mod inference;
mod thread;
pub mod watch;

use crate::config::{Config, Toggle};
use crate::device::{DeviceChoice, SelectedDevice};
use crate::store::rows::{EvalRow, MetricsRow};
use crate::train::engine::Evaluation;
use crossbeam_channel::TrySendError;
use handle::{ThreadHandle, ThreadSpec};
use std::path::PathBuf;
use std::sync::Arc;
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
    /// Continue saving the current run in this directory (its run directory was lost): the
    /// config, every row so far and a checkpoint are written there.
    SaveRunTo(PathBuf),
    /// Make a later step of the current run fail this way (tests and demos; a run started
    /// with `DINOSCOPE_FAULT` set gets it from the environment). See `train::guard`.
    InjectFault(Option<crate::train::guard::Fault>),
    /// Which images the attention view follows, from which network, how often and at what size.
    SetAttention(AttentionSettings),
    /// The patch inspector: the current network's last-layer token under pixel `at` of
    /// followed image `image` against every patch of every followed image.
    Similarity {
        image: usize,
        at: (u32, u32),
    },
    /// Train the arms of an ablation study interleaved, step by step, each as the run
    /// `run_ids[i]` (one per variant, in order) with its directory under `dir`. Ends the
    /// current run; Pause, Resume and Stop then apply to the study.
    StartStudy {
        spec: Box<crate::config::study::StudySpec>,
        dir: PathBuf,
        run_ids: Vec<RunId>,
    },
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
    pub network: crate::store::weights::Network,
    /// `None`: the training crop size as the short side.
    pub size: Option<crate::analysis::attention::ImageSize>,
    /// Which block's heads (or rollout) the maps show.
    pub layer: crate::analysis::layers::MapLayer,
}

impl Default for AttentionSettings {
    fn default() -> Self {
        Self {
            images: Vec::new(),
            every_steps: ATTENTION_EVERY_STEPS,
            network: crate::store::weights::Network::Teacher,
            size: None,
            layer: crate::analysis::layers::MapLayer::Last,
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
        /// ln K, the batch, the features' width (the effective rank's maximum) and the
        /// student's temperature: what the chip's rules need beyond the rows.
        shape: crate::analysis::health::RunShape,
    },
    Metrics {
        run_id: RunId,
        metrics: Box<MetricsRow>,
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
        network: crate::store::weights::Network,
        maps: Vec<(String, crate::analysis::attention::AttentionMaps)>,
    },
    /// A run continues from a checkpoint: the metrics it had before `first_step`.
    Resumed {
        run_id: RunId,
        checkpoint: PathBuf,
        first_step: usize,
        history: Vec<MetricsRow>,
    },
    CheckpointSaved {
        path: PathBuf,
        elapsed_secs: f64,
    },
    /// k-NN accuracy and attention Jaccard of the teacher (step 0 = random init).
    Eval {
        run_id: RunId,
        evaluation: Box<Evaluation>,
    },
    /// Evaluations a resumed run had before its checkpoint.
    EvalHistory {
        run_id: RunId,
        rows: Vec<EvalRow>,
    },
    /// The run directory can no longer be written: the run is paused and kept in memory
    /// until `Command::SaveRunTo` gives it another directory.
    StorageLost {
        run_id: RunId,
        message: String,
    },
    /// The non-finite guard discarded step `step`: the run is paused at its last good state;
    /// a toggle and Resume continue it, Save checkpoint keeps that state.
    Halted {
        run_id: RunId,
        step: usize,
        message: String,
    },
    /// One arm of the study finished: its row of the comparison and its teacher's mask on
    /// the probe image.
    StudyArmDone {
        run_id: RunId,
        row: Box<crate::store::rows::StudyRow>,
        overlay: Option<Arc<image::RgbImage>>,
    },
    /// The study ended (every arm done, or stopped): the comparison files in `dir`.
    StudyFinished {
        dir: PathBuf,
        written: Vec<PathBuf>,
        skipped: Vec<String>,
        complete: bool,
    },
    /// The patch inspector's answer (`Command::Similarity`).
    Similarity(Box<crate::analysis::tokens::Similarity>),
    /// A line of a watched official run's `log.txt`: the epoch's mean training loss.
    TrainLog {
        run_id: RunId,
        epoch: usize,
        train_loss: f64,
    },
    /// Something worth saying in the status line (e.g. the settings a watch resolved).
    Info(String),
    Warning(String),
    Error(String),
}

pub use handle::Waker;

impl Event {
    /// `Started` of one run: the only place it is built (a trained run, a study's arm, a
    /// watched or a followed run all describe themselves as a [`RunStart`]).
    pub fn started(run_id: RunId, start: crate::train::engine::RunStart) -> Self {
        Event::Started {
            run_id,
            device: start.device,
            dataset: start.dataset,
            total_steps: start.total_steps,
            iters_per_epoch: start.iters_per_epoch,
            shape: start.shape,
        }
    }
}

/// Handle owned by the UI. Dropping it shuts the thread down and joins it.
pub struct WorkerHandle {
    thread: ThreadHandle<Command, Event>,
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
        let spec = ThreadSpec {
            name: "worker",
            command_queue: COMMAND_QUEUE,
            event_queue: EVENT_QUEUE,
        };
        let thread = ThreadHandle::spawn(spec, waker, Some(|| Command::Shutdown), move |ends| {
            thread::Worker::new(ends.commands, ends.events, ends.waker, device).run()
        })?;
        Ok(Self { thread })
    }

    /// Never blocks: a full queue (the worker is far behind) reports an error instead.
    pub fn send(&self, command: Command) -> Result<(), String> {
        self.thread.try_send(command).map_err(|err| match err {
            TrySendError::Full(_) => "the training worker is busy; try again".to_string(),
            TrySendError::Disconnected(_) => "the training worker has stopped".to_string(),
        })
    }

    /// Events waiting for the UI (the soak log watches this stay bounded).
    pub fn pending_events(&self) -> usize {
        self.thread.pending_events()
    }

    /// Next pending event, if any (never blocks).
    pub fn try_recv(&self) -> Option<Event> {
        self.thread.try_recv()
    }

    /// Waits up to `timeout` for an event (for tests and the headless driver).
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Event> {
        self.thread.recv_timeout(timeout)
    }

    /// Stops the thread and waits for it (at most one training step).
    pub fn shutdown(&mut self) {
        self.thread.shutdown();
    }
}

/// Where a run's device comes from.
#[derive(Clone)]
pub enum DeviceSource {
    Choice(DeviceChoice),
    Ready(SelectedDevice),
}

/// Checkpoints kept per run by default.
pub use crate::train::engine::CHECKPOINT_KEEP_LAST;
