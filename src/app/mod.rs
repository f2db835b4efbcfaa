//! The desktop app: eframe + egui. The UI owns an [`AppState`] and a [`WorkerHandle`]; it never
//! touches tensors, and the worker never touches egui. Events are drained in `logic` with a
//! per-frame time budget, so the window never waits on training.

pub mod attention_view;
pub mod background;
pub mod collapse;
mod controls;
mod distance_history;
mod events;
mod feed;
pub mod overlay_gpu;
pub mod plots;
mod quantity;
pub mod representation;
mod runs;
mod scale;
mod script;
pub mod series;
mod soak;
pub mod state;
mod status;
pub mod study;
mod study_view;
mod top_bar;
mod watching;
mod window;

pub use window::{native_options, run, CloseRequest};

use crate::config::live::LiveSettings;
use crate::config::Config;
use crate::config::Toggle;
use crate::device::DeviceChoice;
use crate::worker::{Command, DeviceSource, WorkerHandle, WorkerStatus};
use series::ViewSettings;
use state::{AppState, Level};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long `logic` may spend applying worker events per frame.
const EVENT_BUDGET: Duration = Duration::from_millis(4);
/// Frames kept for the frame-time read-out.
const FRAME_WINDOW: usize = 240;
const PREFS_KEY: &str = "dinoscope_prefs";

/// What the command line asks of the app.
#[derive(Clone, Debug)]
pub struct AppOptions {
    pub config: Config,
    /// Preset name, or "custom" for a `--config` file.
    pub preset: String,
    pub autostart: bool,
    pub device: DeviceChoice,
    /// Where runs are written (`runs/`); `None` keeps them in memory only.
    pub runs_root: Option<PathBuf>,
    pub screenshot: Option<ScreenshotRequest>,
    /// Toggles applied automatically when the current run reaches a step (scripted demos).
    pub scripted_toggles: Vec<(usize, Toggle)>,
    /// Weights to load into the attention view at launch.
    pub weights: Option<PathBuf>,
    /// Images to follow at launch, besides the bundled photos.
    pub images: Vec<PathBuf>,
    /// Open on the attention view instead of the training curves.
    pub open_attention: bool,
    /// Short side of the images fed to the network in the attention view (`None`: default).
    pub attention_short_side_px: Option<u32>,
    /// An ablation study to start at launch (`--study`).
    pub study: Option<crate::config::study::StudySpec>,
    /// A run folder to follow from launch (`--watch`).
    pub watch: Option<PathBuf>,
    /// Append what could grow in a long session to this CSV every 10 s (`--soak-log`).
    pub soak_log: Option<PathBuf>,
    /// Set from outside (a signal): close the window as its close button does.
    pub close_request: CloseRequest,
}

#[derive(Clone, Debug)]
pub struct ScreenshotRequest {
    pub path: PathBuf,
    pub after_steps: usize,
}

/// UI preferences kept between launches (eframe storage).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Prefs {
    pub smoothing: f64,
    pub log_y: bool,
    pub preset: String,
    pub show_explanation: bool,
    pub show_schedules: bool,
    pub show_throughput: bool,
    /// Periodic checkpoints of runs with a directory (0 = only on Stop, exit and the button).
    pub checkpoint_every_steps: usize,
    /// The weights last opened in the attention view, reopened (quietly) at the next launch.
    pub last_weights: Option<PathBuf>,
    pub last_weights_heads: Option<usize>,
}

impl Default for Prefs {
    fn default() -> Self {
        Self {
            smoothing: 0.6,
            log_y: false,
            preset: "tiny".into(),
            show_explanation: true,
            show_schedules: true,
            show_throughput: true,
            checkpoint_every_steps: 200,
            last_weights: None,
            last_weights_heads: None,
        }
    }
}

pub struct DinoscopeApp {
    pub state: AppState,
    worker: Option<WorkerHandle>,
    base_config: Config,
    prefs: Prefs,
    options: AppOptions,
    /// CPU time of the recent frames (egui's own rolling window).
    frame_secs: egui::util::History<f32>,
    launched_at: Instant,
    /// When Start (or Resume run…, or a study) was last pressed.
    start_pressed: Option<Instant>,
    /// Seconds from pressing Start to the run's first plotted point.
    pub first_point_secs: Option<f64>,
    screenshot_requested: bool,
    /// Set by the screenshot callback (on eframe's thread) once the PNG is written.
    screenshot_done: Arc<std::sync::Mutex<Option<Result<(), String>>>>,
    autostart_pending: bool,
    pub attention: attention_view::AttentionView,
    /// Loads external weights and computes their maps off the UI thread.
    pub inference: Option<crate::worker::inference::InferenceHandle>,
    pub central_tab: CentralTab,
    /// `--weights` (or the last session's weights), loaded on the first frame.
    launch_weights: Option<PathBuf>,
    /// Whether loaded weights become the attention view's source (not for restored ones).
    show_loaded_weights: bool,
    /// Run directories under the runs folder and whether each can be resumed (listed by a
    /// background job; `disk_runs_stale` asks for a new listing).
    disk_runs: Vec<background::DiskRun>,
    disk_runs_stale: bool,
    /// Dialogs, figure export and run listing, off the UI thread.
    background: background::Background,
    /// What the clicks of this frame asked for, applied once in `logic`.
    commands: Vec<UiCommand>,
    /// The ablation study's dialog and comparison view.
    pub study_view: study_view::StudyView,
    /// "Train this at scale...": the official job for the current settings.
    pub scale: scale::ScaleDialog,
    /// Run folders followed on their own threads ("Watch run folder...").
    pub watches: Vec<crate::worker::watch::WatchHandle>,
    /// Wakes the UI from background threads; the device loaded weights and watches use.
    waker: crate::worker::Waker,
    inference_device: burn::prelude::Device,
    soak: Option<soak::SoakLog>,
}

/// A request from a click. Drawing code only queues these; `logic` applies them once per frame
/// (the model is rerun's `SystemCommand` and egui_demo_app's `Command`), so what a click does
/// is in one place and never happens in the middle of drawing.
#[derive(Clone, Debug, PartialEq)]
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
    /// Ask for a run directory to continue (a dialog on a background thread).
    /// Ask where to continue saving a run whose directory was lost.
    PickSaveRunTo,
    PickRunToResume,
    ResumeRun(PathBuf),
    OpenRun(PathBuf),
    RescanRuns,
    SelectPreset(String),
    ExportFigure,
    ExportCsv,
    /// Train an ablation study's variants interleaved (ends the current run).
    StartStudy(Box<crate::config::study::StudySpec>),
    /// Ask for a run folder another process writes, to follow it.
    PickWatchFolder,
}

/// What the central area shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CentralTab {
    Curves,
    Attention,
    /// The ablation study's comparison.
    Study,
}

/// Files dropped on the window that are weights rather than images.
/// Weights files, and the folders `load_backbone` reads (a dinoscope run, whose teacher is
/// shown, or one of its `checkpoint-<step>/`); other folders are opened for their images.
fn is_weights_file(path: &std::path::Path) -> bool {
    (path.is_dir() && (path.join("config.toml").is_file() || path.join("state.toml").is_file()))
        || path.extension().is_some_and(|e| {
            let e = e.to_string_lossy().to_ascii_lowercase();
            matches!(e.as_str(), "pth" | "pt" | "safetensors" | "bpk")
        })
}

impl DinoscopeApp {
    /// Builds the app inside eframe: restores preferences, picks the training device (sharing
    /// eframe's wgpu device when it is a hardware GPU) and spawns the worker.
    pub fn new(cc: &eframe::CreationContext<'_>, options: AppOptions) -> Self {
        let prefs: Prefs = cc
            .storage
            .and_then(|storage| eframe::get_value(storage, PREFS_KEY))
            .unwrap_or_default();
        let gpu = window::shared_gpu_device(cc);
        let inference_device = gpu
            .as_ref()
            .map(|selected| selected.device.clone())
            .unwrap_or_else(burn::prelude::Device::flex);
        let device = gpu
            .map(DeviceSource::Ready)
            .unwrap_or(DeviceSource::Choice(options.device));
        options.close_request.attach(&cc.egui_ctx);
        let ctx = cc.egui_ctx.clone();
        let waker: crate::worker::Waker =
            Arc::new(move || ctx.request_repaint_after(Duration::from_millis(10)));
        let worker = WorkerHandle::spawn_with(device, waker.clone());
        let mut app = Self::with_worker(options, prefs, worker.map_err(|e| e.to_string()));
        // Reopen the last session's weights in the background, without switching views.
        if app.launch_weights.is_none() {
            if let Some(path) = app.prefs.last_weights.clone().filter(|p| p.exists()) {
                app.attention.heads_override = app.prefs.last_weights_heads;
                app.launch_weights = Some(path);
                app.show_loaded_weights = false;
            }
        }
        app.attention.gpu = overlay_gpu::install(cc.wgpu_render_state.as_ref());
        app.background = background::Background::new(waker.clone());
        app.waker = waker.clone();
        app.inference_device = inference_device.clone();
        app.inference = crate::worker::inference::InferenceHandle::spawn(inference_device, waker)
            .map_err(|err| {
                tracing::warn!("no inference thread: {err}");
            })
            .ok();
        app
    }

    /// The app around an existing (or failed) worker; also used by tests.
    pub fn with_worker(
        options: AppOptions,
        mut prefs: Prefs,
        worker: Result<WorkerHandle, String>,
    ) -> Self {
        // The command line wins over the remembered preset.
        prefs.preset = options.preset.clone();
        let view = ViewSettings {
            smoothing: prefs.smoothing,
            log_y: prefs.log_y,
        };
        let mut state = AppState::new(LiveSettings::from_config(&options.config), view);
        let worker = match worker {
            Ok(worker) => Some(worker),
            Err(err) => {
                state.message(
                    Level::Error,
                    format!("cannot start the training thread: {err}"),
                );
                None
            }
        };
        let mut app = Self {
            state,
            worker,
            base_config: options.config.clone(),
            prefs,
            autostart_pending: options.autostart,
            options,
            frame_secs: egui::util::History::new(0..FRAME_WINDOW, f32::INFINITY),
            launched_at: Instant::now(),
            start_pressed: None,
            first_point_secs: None,
            screenshot_requested: false,
            screenshot_done: Arc::new(std::sync::Mutex::new(None)),
            attention: attention_view::AttentionView::new(),
            // Tests get a CPU inference thread; `new` replaces it with one that wakes the UI.
            inference: crate::worker::inference::InferenceHandle::spawn(
                burn::prelude::Device::flex(),
                Arc::new(|| {}),
            )
            .ok(),
            central_tab: CentralTab::Curves,
            launch_weights: None,
            show_loaded_weights: true,
            disk_runs: Vec::new(),
            disk_runs_stale: true,
            background: background::Background::new(Arc::new(|| {})),
            commands: Vec::new(),
            study_view: study_view::StudyView::default(),
            scale: scale::ScaleDialog::default(),
            watches: Vec::new(),
            waker: Arc::new(|| {}),
            inference_device: burn::prelude::Device::flex(),
            soak: None,
        };
        if let Some(path) = app.options.soak_log.clone() {
            match soak::SoakLog::create(path.clone()) {
                Ok(log) => app.soak = Some(log),
                Err(err) => app.state.message(
                    Level::Error,
                    format!("cannot write the soak log {}: {err}", path.display()),
                ),
            }
        }
        app.send_checkpointing();
        app.launch_weights = app.options.weights.clone();
        if app.options.open_attention {
            app.central_tab = CentralTab::Attention;
        }
        app.attention.short_side_px = app.options.attention_short_side_px;
        let images = app.options.images.clone();
        if !images.is_empty() {
            app.open_images(images);
        }
        app
    }

    fn send(&mut self, command: Command) {
        let Some(worker) = &self.worker else {
            self.state
                .message(Level::Error, "the training thread is not running");
            return;
        };
        if let Err(err) = worker.send(command) {
            self.state.message(Level::Error, err);
        }
    }

    fn is_active(&self) -> bool {
        matches!(
            self.state.worker_status,
            WorkerStatus::Running | WorkerStatus::Paused | WorkerStatus::Starting
        ) && self.state.current.is_some()
    }

    fn send_checkpointing(&mut self) {
        if self.worker.is_some() {
            self.send(Command::SetCheckpointing {
                every_steps: self.prefs.checkpoint_every_steps,
                keep_last: crate::worker::CHECKPOINT_KEEP_LAST,
            });
        }
    }

    /// Queues what a click asks for (applied at the start of the next `logic`).
    pub fn queue(&mut self, command: UiCommand) {
        self.commands.push(command);
    }

    /// Applies the clicks of the last frame, in order.
    pub fn apply_commands(&mut self) {
        for command in std::mem::take(&mut self.commands) {
            match command {
                UiCommand::Start { paused } => self.start(paused),
                UiCommand::Resume => self.send(Command::Resume),
                UiCommand::Pause => self.send(Command::Pause),
                UiCommand::Step => {
                    if !self.is_active() {
                        self.start(true);
                    }
                    self.send(Command::Step);
                }
                UiCommand::Stop => self.send(Command::Stop),
                UiCommand::Reset => self.reset(),
                UiCommand::SaveCheckpoint => self.send(Command::SaveCheckpoint),
                UiCommand::PickRunToResume => {
                    let root = self.options.runs_root.clone();
                    self.background.spawn("resume-dialog", move || {
                        let mut dialog = rfd::FileDialog::new();
                        if let Some(root) = root {
                            dialog = dialog.set_directory(root);
                        }
                        dialog
                            .pick_folder()
                            .map_or(background::Done::Cancelled, background::Done::ResumeRun)
                    });
                }
                UiCommand::PickSaveRunTo => {
                    let root = self.options.runs_root.clone();
                    self.background.spawn("save-run-dialog", move || {
                        let mut dialog = rfd::FileDialog::new();
                        if let Some(root) = root {
                            dialog = dialog.set_directory(root);
                        }
                        dialog
                            .pick_folder()
                            .map_or(background::Done::Cancelled, background::Done::SaveRunTo)
                    });
                }
                UiCommand::ResumeRun(dir) => self.resume_run(dir),
                UiCommand::OpenRun(dir) => self.open_run(&dir),
                UiCommand::RescanRuns => self.rescan_runs(),
                UiCommand::SelectPreset(name) => self.select_preset(&name),
                UiCommand::ExportFigure => self.export_figure(),
                UiCommand::ExportCsv => self.export_csv(),
                UiCommand::StartStudy(spec) => self.start_study(*spec),
                UiCommand::PickWatchFolder => self.pick_watch_folder(),
            }
        }
    }
}

impl eframe::App for DinoscopeApp {
    fn logic(&mut self, ctx: &egui::Context, frame: &mut eframe::Frame) {
        if let Some(cpu) = frame.info().cpu_usage {
            self.frame_secs
                .add(self.launched_at.elapsed().as_secs_f64(), cpu);
        }
        if self.options.close_request.is_requested() {
            // As the close button: eframe then calls `on_exit`, which joins the worker after
            // the step in flight and its final checkpoint.
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        }
        if self.autostart_pending {
            self.autostart_pending = false;
            match self.options.study.clone() {
                Some(spec) => self.start_study(spec),
                None => self.start(false),
            }
        }
        if let Some(path) = self.launch_weights.take() {
            self.request_weights(path);
        }
        if let Some(dir) = self.options.watch.take() {
            self.watch_folder(dir);
        }
        self.apply_commands();
        self.apply_background();
        self.drain_events();
        self.drain_watches(Instant::now() + EVENT_BUDGET);
        self.drain_inference();
        self.take_dropped_files(ctx);
        self.serve_attention_requests();
        if self.attention.loading || self.attention.requests.recompute_loaded {
            ctx.request_repaint_after(Duration::from_millis(100));
        }
        self.run_script();
        self.sample_soak();
        self.handle_screenshot(ctx);
        if self.is_active() && self.state.worker_status == WorkerStatus::Running {
            // The worker wakes us per event; this is a floor for the ETA/clock read-outs.
            ctx.request_repaint_after(Duration::from_millis(250));
        }
    }

    /// Long: the window's panels in screen order.
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        egui::Panel::top("top_bar").show(ui, |ui| self.top_bar_ui(ui));
        if self.study_view.dialog_open {
            if let Some(command) = self.study_view.dialog_ui(ui.ctx()) {
                self.queue(command);
            }
        }
        if self.scale.open {
            self.scale.dialog_ui(ui.ctx());
        }
        egui::Panel::bottom("status_line").show(ui, |ui| self.status_line_ui(ui));
        egui::Panel::left("controls")
            .resizable(true)
            .default_size(230.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| self.controls_ui(ui));
            });
        // The attention view needs the width; the explanations are about the curves.
        if self.prefs.show_explanation && self.central_tab == CentralTab::Curves {
            egui::Panel::right("explanation")
                .resizable(true)
                .default_size(380.0)
                .show(ui, |ui| {
                    egui::ScrollArea::vertical().show(ui, |ui| {
                        if self.central_tab == CentralTab::Curves
                            && self.attention.compact_ui(ui, &self.state)
                        {
                            self.central_tab = CentralTab::Attention;
                        }
                        ui.separator();
                        self.explanation_ui(ui);
                    });
                });
        }
        egui::CentralPanel::default().show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.selectable_value(&mut self.central_tab, CentralTab::Curves, "Training curves");
                ui.selectable_value(&mut self.central_tab, CentralTab::Attention, "Attention");
                if self.state.study.is_some() {
                    ui.selectable_value(&mut self.central_tab, CentralTab::Study, "Ablation study");
                }
                ui.separator();
                if ui
                    .small_button("Ablation study...")
                    .on_hover_text("The paper's ablations side by side: full DINO, no centering, no sharpening, no momentum teacher, no multi-crop (and your own variants), trained together and compared.")
                    .clicked()
                {
                    self.study_view.dialog_open = true;
                }
            });
            if self.central_tab == CentralTab::Study {
                egui::ScrollArea::vertical()
                    .id_salt("study_tab")
                    .show(ui, |ui| self.study_view.comparison_ui(ui, &self.state));
                return;
            }
            if self.central_tab == CentralTab::Attention {
                egui::ScrollArea::vertical()
                    .id_salt("attention_tab")
                    .show(ui, |ui| self.attention.full_ui(ui, &self.state));
                return;
            }
            egui::ScrollArea::vertical().show(ui, |ui| {
                ui.horizontal(|ui| {
                    ui.heading("Loss = h(Pt) + KL(Pt || Ps)");
                    if ui
                        .small_button("Export figure...")
                        .on_hover_text("The paper's Fig. 7 pair (h(Pt) and KL vs step) of every shown run with a run directory, as PNG or SVG.")
                        .clicked()
                    {
                        self.queue(UiCommand::ExportFigure);
                    }
                    if ui
                        .small_button("Export CSV...")
                        .on_hover_text("The current run's curves as shown (smoothed), one column per quantity.")
                        .clicked()
                    {
                        self.queue(UiCommand::ExportCsv);
                    }
                    if ui
                        .small_button("Train this at scale...")
                        .on_hover_text("The torchrun command that trains these settings on the official code (main_dino.py) on GPUs, what it cannot express, and the dinoscope watch line that follows the job.")
                        .clicked()
                    {
                        let mut config = self.base_config.clone();
                        self.state.controls.fold_into(&mut config);
                        self.scale.show_for(config, self.prefs.preset.clone());
                    }
                });
                let height = (ui.available_height() * 0.45).max(220.0);
                plots::decomposition_plot_ui(ui, &self.state, height);
                if let Some(summary) = self.state.current_run().and_then(representation::summary_text) {
                    ui.heading("Representation (teacher)")
                        .on_hover_text(representation::ABOUT);
                    // Its own line: a long label in a row would widen the scroll area.
                    ui.label(summary);
                    representation::representation_plots_ui(ui, &self.state, 130.0);
                }
                let evaluated = self
                    .state
                    .current_run()
                    .is_some_and(|run| !run.evals.is_empty());
                if evaluated {
                    ui.heading("What the features learned (held-out data)")
                        .on_hover_text("Weighted k-NN (k = 20, T = 0.07) on L2-normalised CLS features of the teacher and of the student (the paper's Fig. 6: the teacher leads), and the Jaccard of the 60 %-mass attention masks with the shapes' true masks. Dashed: the same network at random init. Evaluated every epoch.");
                    plots::features_plot_ui(ui, &self.state, 160.0);
                }
                if self.prefs.show_schedules {
                    ui.heading("Schedules");
                    plots::schedules_plot_ui(ui, &self.state, 110.0);
                }
                if self.prefs.show_throughput {
                    ui.heading("Throughput");
                    plots::throughput_plot_ui(ui, &self.state, 110.0);
                }
            });
        });
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, PREFS_KEY, &self.prefs);
    }

    fn on_exit(&mut self) {
        // Dropping a watch stops and joins its thread.
        self.watches.clear();
        // Joins the worker (at most one step) so closing never leaves a thread behind.
        if let Some(mut worker) = self.worker.take() {
            worker.shutdown();
        }
        if let Some(mut inference) = self.inference.take() {
            inference.shutdown();
        }
    }
}
