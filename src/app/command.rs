//! The one way a click acts: a panel sends a [`UiCommand`] through the [`CommandSender`] its
//! [`AppContext`] lends it, and `DinoscopeApp::apply` carries the commands out once per frame,
//! never in the middle of drawing. Background jobs answer through the same sender, so a
//! dialog's choice or an export's result is one more command. The models are rerun's
//! `ViewerContext` with its `CommandSender` and egui_demo_app's `Command`.

use super::jobs::DiskRun;
use super::state::{AppState, Level, OpenedRun};
use super::Prefs;
use crate::config::study::StudySpec;
use crate::config::Toggle;
use crate::worker::RunId;
use crossbeam_channel::{unbounded, Receiver, Sender};
use image::RgbImage;
use std::path::PathBuf;

/// What the central area shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CentralTab {
    Curves,
    Attention,
    /// The ablation study's comparison.
    Study,
}

/// A request from a click, or the answer of a background job.
#[derive(Clone, Debug)]
pub enum UiCommand {
    /// Start a new run from the preset and the controls (`paused`: wait for Step).
    Start {
        paused: bool,
    },
    /// Continue a paused run.
    Resume,
    Pause,
    /// One step (starting a paused run first when none is active).
    Step,
    Stop,
    Reset,
    SaveCheckpoint,
    /// A live control changed (a click or a scripted toggle): the controls take it and the
    /// running job gets it at its next step.
    SetControl(Toggle),
    /// The preferences changed (view, shown plots, checkpoint period).
    SetPrefs(Box<Prefs>),
    SetRunVisible {
        run: RunId,
        visible: bool,
    },
    SetRunPinned {
        run: RunId,
        pinned: bool,
    },
    ShowTab(CentralTab),
    SelectPreset(String),
    /// Ask where to continue saving a run whose directory was lost (a dialog).
    PickSaveRunTo,
    SaveRunTo(PathBuf),
    /// Ask for a run directory to continue (a dialog).
    PickRunToResume,
    ResumeRun(PathBuf),
    /// Read a run folder's CSVs (a job) to overlay it.
    OpenRun(PathBuf),
    /// What that job read.
    RunOpened(Box<OpenedRun>),
    RescanRuns,
    RunsListed(Vec<DiskRun>),
    ExportFigure,
    ExportCsv,
    /// Train an ablation study's variants interleaved (ends the current run).
    StartStudy(Box<StudySpec>),
    OpenStudyDialog,
    /// "Train this at scale...": the official command for the current settings.
    OpenScaleDialog,
    /// Ask for a run folder another process writes, to follow it.
    PickWatchFolder,
    WatchFolder(PathBuf),
    /// The attention view: ask for images to follow / weights to open (dialogs).
    PickImages,
    PickWeights,
    /// Follow these paths: image files, folders of images, or run folders to watch.
    OpenImages(Vec<PathBuf>),
    /// Images decoded off the UI thread: each file, or why it is not an image.
    ImagesDecoded(Vec<(PathBuf, Result<RgbImage, String>)>),
    LoadWeights(PathBuf),
    /// Images, network, period, size or block of the maps changed: the worker's settings are
    /// sent again and the loaded weights' maps recomputed.
    AttentionSettingsChanged,
    /// Load the weights again (another network of the same file).
    ReloadWeights,
    /// The patch inspector: (followed image, pixel of the image as the network sees it).
    InspectPatch {
        image: usize,
        at: (u32, u32),
    },
    /// Ask where to save the large map (`grid == false`) or the head grid as PNG.
    ExportAttention {
        grid: bool,
    },
    /// Ask where to save the snapshots' time-lapse GIF.
    ExportTimelapse {
        grid: bool,
    },
    /// A line for the status bar (a job's result).
    Message(Level, String),
}

/// The sending end panels and jobs share. Unbounded: a frame's clicks and a handful of jobs
/// send a few commands each, and the UI drains them all every frame.
#[derive(Clone)]
pub struct CommandSender {
    sender: Sender<UiCommand>,
}

impl CommandSender {
    pub fn send(&self, command: UiCommand) {
        // The receiver lives as long as the app; a send after it is gone has nowhere to go.
        let _ = self.sender.send(command);
    }
}

/// The app's end: what was sent since the last frame.
pub struct CommandQueue {
    sender: CommandSender,
    receiver: Receiver<UiCommand>,
}

impl CommandQueue {
    pub fn new() -> Self {
        let (sender, receiver) = unbounded();
        Self {
            sender: CommandSender { sender },
            receiver,
        }
    }

    pub fn sender(&self) -> &CommandSender {
        &self.sender
    }

    pub fn take(&self) -> Vec<UiCommand> {
        self.receiver.try_iter().collect()
    }
}

impl Default for CommandQueue {
    fn default() -> Self {
        Self::new()
    }
}

/// What a panel is lent while it draws: the state to read and the sender to act through.
pub struct AppContext<'a> {
    pub state: &'a AppState,
    pub prefs: &'a Prefs,
    pub commands: &'a CommandSender,
    /// A run is started, running or paused (the buttons' enabled states).
    pub active: bool,
    /// Where runs are written, when they are.
    pub runs_root: Option<&'a std::path::Path>,
    /// The preset's batch size (the ETA).
    pub batch_size: usize,
    /// Frame-time read-out (median, p95 in ms) and seconds from Start to the first point.
    pub frame_time_ms: Option<(f32, f32)>,
    pub first_point_secs: Option<f64>,
}

impl AppContext<'_> {
    pub fn send(&self, command: UiCommand) {
        self.commands.send(command);
    }

    /// The current run is one trained elsewhere (a watched or followed folder): the live
    /// controls and the run buttons do not apply to it.
    pub fn current_is_external(&self) -> bool {
        self.state.current_run().is_some_and(|run| run.external)
    }
}
