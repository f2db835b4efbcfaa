//! The desktop app: eframe + egui. `DinoscopeApp` owns the run data ([`AppState`]), the panels
//! (each a struct with its own state and `fn ui(&mut self, ui, ctx: &AppContext)`), the other
//! threads and the session. A panel reads the state it is lent and acts only by sending a
//! [`UiCommand`]; `apply` below carries every command out, once per frame, in one match. It
//! never touches tensors, and the worker never touches egui.

pub mod attention_view;
pub mod collapse;
pub mod command;
mod controls;
mod curves;
mod distance_history;
mod feed;
pub mod jobs;
pub mod overlay_gpu;
mod panels;
pub mod plots;
pub mod representation;
mod runs;
mod scale;
mod script;
pub mod series;
pub mod session;
mod soak;
pub mod state;
mod status;
pub mod study;
mod study_view;
mod threads;
mod top_bar;
mod watching;
mod window;

pub use command::{AppContext, CentralTab, UiCommand};
pub use panels::Panels;
pub use session::{AppOptions, Prefs, ScreenshotRequest};
pub use window::{native_options, run, CloseRequest};

use crate::config::live::LiveSettings;
use crate::config::Config;
use crate::worker::{Command, DeviceSource, WorkerHandle, WorkerStatus};
use command::CommandQueue;
use series::ViewSettings;
use session::Session;
use state::{AppState, Level};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long `logic` may spend applying worker and watch events per frame.
const EVENT_BUDGET: Duration = Duration::from_millis(4);
const PREFS_KEY: &str = "dinoscope_prefs";

pub struct DinoscopeApp {
    pub state: AppState,
    pub panels: Panels,
    pub threads: threads::Threads,
    pub session: Session,
    commands: CommandQueue,
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
        if app.session.launch_weights.is_none() {
            if let Some(path) = app
                .session
                .prefs
                .last_weights
                .clone()
                .filter(|p| p.exists())
            {
                app.panels.attention.heads_override = app.session.prefs.last_weights_heads;
                app.session.launch_weights = Some(path);
                app.session.show_loaded_weights = false;
            }
        }
        app.panels.attention.gpu = overlay_gpu::install(cc.wgpu_render_state.as_ref());
        app.threads
            .with_waker(waker, inference_device, app.commands.sender());
        app
    }

    /// The app around an existing (or failed) worker; also used by tests.
    pub fn with_worker(
        options: AppOptions,
        prefs: Prefs,
        worker: Result<WorkerHandle, String>,
    ) -> Self {
        let session = Session::new(options, prefs);
        let view = ViewSettings {
            smoothing: session.prefs.smoothing,
            log_y: session.prefs.log_y,
        };
        let mut state = AppState::new(LiveSettings::from_config(&session.base_config), view);
        let worker = worker
            .map_err(|err| {
                state.message(
                    Level::Error,
                    format!("cannot start the training thread: {err}"),
                )
            })
            .ok();
        let commands = CommandQueue::new();
        let mut panels = Panels::new();
        if session.options.open_attention {
            panels.central_tab = CentralTab::Attention;
        }
        panels.attention.short_side_px = session.options.attention_short_side_px;
        let threads = threads::Threads::new(worker, commands.sender());
        let mut app = Self {
            state,
            panels,
            threads,
            session,
            commands,
        };
        if let Some(path) = app.session.options.soak_log.clone() {
            match soak::SoakLog::create(path.clone()) {
                Ok(log) => app.session.soak = Some(log),
                Err(err) => app.state.message(
                    Level::Error,
                    format!("cannot write the soak log {}: {err}", path.display()),
                ),
            }
        }
        app.send_checkpointing();
        app.queue(UiCommand::AttentionSettingsChanged);
        let images = app.session.options.images.clone();
        if !images.is_empty() {
            app.queue(UiCommand::OpenImages(images));
        }
        app
    }

    /// Queues a command as a click would (applied at the start of the next `logic`).
    pub fn queue(&self, command: UiCommand) {
        self.commands.sender().send(command);
    }

    /// Applies every command sent since the last call, in order.
    pub fn apply_commands(&mut self) {
        for command in self.commands.take() {
            self.apply(command);
        }
    }

    /// Loads weights into the attention view and shows them there (drops, "Open weights...").
    pub fn load_weights(&mut self, path: PathBuf) {
        self.session.show_loaded_weights = true;
        self.request_weights(path);
    }

    /// Follows a run folder with the attention view's head override.
    pub fn watch_folder(&mut self, dir: PathBuf) {
        let given = self.panels.attention.watch_overrides();
        self.watch_folder_with(dir, given);
    }

    pub fn watch_folder_with(&mut self, dir: PathBuf, given: crate::train::watch::WatchOverrides) {
        self.threads
            .watch_folder(dir, given, &self.panels.attention, &mut self.state);
    }

    /// Applies pending worker events within the frame budget.
    pub fn drain_events(&mut self) {
        let deadline = Instant::now() + EVENT_BUDGET;
        if self.threads.drain_worker(&mut self.state, deadline) {
            self.panels.runs.disk_runs_stale = true;
        }
        let steps = self.state.current_run().map_or(0, |run| run.steps());
        self.session.note_points(steps);
    }

    /// Whether the training worker holds a run (started, running or paused).
    fn is_active(&self) -> bool {
        matches!(
            self.state.worker_status,
            WorkerStatus::Running | WorkerStatus::Paused | WorkerStatus::Starting
        ) && self.state.current.is_some()
    }

    fn send(&mut self, command: Command) {
        self.threads.send(command, &mut self.state);
    }

    fn send_checkpointing(&mut self) {
        if self.threads.worker.is_some() {
            self.send(Command::SetCheckpointing {
                every_steps: self.session.prefs.checkpoint_every_steps,
                keep_last: crate::worker::CHECKPOINT_KEEP_LAST,
            });
        }
    }

    fn request_weights(&mut self, path: PathBuf) {
        let sent = self
            .threads
            .request_weights(path, &mut self.panels.attention, &mut self.state);
        if sent && self.session.show_loaded_weights {
            self.panels.central_tab = CentralTab::Attention;
        }
    }

    /// Long: one arm per command; each arm is the whole of what that click does.
    fn apply(&mut self, command: UiCommand) {
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
            UiCommand::Reset => {
                if self.is_active() {
                    self.send(Command::Stop);
                }
                self.state.reset();
                self.state.worker_status = WorkerStatus::Idle;
                self.session.first_point_secs = None;
            }
            UiCommand::SaveCheckpoint => self.send(Command::SaveCheckpoint),
            UiCommand::SetControl(toggle) => {
                // The controls take the value as the trainer will (a constant teacher
                // temperature also ends its warm-up); the running job gets the toggle.
                match self.state.controls.apply(&toggle) {
                    Ok(()) if self.is_active() => {
                        self.state.sent_toggles.push(toggle.clone());
                        self.send(Command::Set(toggle));
                    }
                    Ok(()) => {}
                    Err(err) => self.state.message(Level::Error, err.to_string()),
                }
            }
            UiCommand::SetPrefs(prefs) => {
                let checkpointing =
                    prefs.checkpoint_every_steps != self.session.prefs.checkpoint_every_steps;
                self.state.set_view(ViewSettings {
                    smoothing: prefs.smoothing,
                    log_y: prefs.log_y,
                });
                self.session.prefs = *prefs;
                if checkpointing {
                    self.send_checkpointing();
                }
            }
            UiCommand::SetRunVisible { run, visible } => {
                if let Some(run) = self.state.run_mut(run) {
                    run.visible = visible;
                }
            }
            UiCommand::SetRunPinned { run, pinned } => {
                if let Some(run) = self.state.run_mut(run) {
                    run.pinned = pinned;
                }
            }
            UiCommand::ShowTab(tab) => self.panels.central_tab = tab,
            UiCommand::SelectPreset(name) => match Config::preset(&name) {
                Ok(config) => {
                    self.state.controls = LiveSettings::from_config(&config);
                    self.session.base_config = config;
                    self.state.message(
                        Level::Info,
                        format!("preset {name} selected; it applies at the next Start"),
                    );
                    self.session.prefs.preset = name;
                }
                Err(err) => self.state.message(Level::Error, err.to_string()),
            },
            UiCommand::PickSaveRunTo => {
                let root = self.session.options.runs_root.clone();
                self.threads.jobs.spawn("save-run-dialog", move || {
                    pick_folder(root).map(UiCommand::SaveRunTo)
                });
            }
            UiCommand::SaveRunTo(dir) => self.send(Command::SaveRunTo(dir)),
            UiCommand::PickRunToResume => {
                let root = self.session.options.runs_root.clone();
                self.threads.jobs.spawn("resume-dialog", move || {
                    pick_folder(root).map(UiCommand::ResumeRun)
                });
            }
            UiCommand::ResumeRun(dir) => self.resume_run(dir),
            UiCommand::OpenRun(dir) => {
                self.threads.jobs.spawn("open-run", move || {
                    Some(match crate::store::run::SavedRun::read(&dir) {
                        Ok(opened) => UiCommand::RunOpened(Box::new(opened)),
                        Err(err) => UiCommand::Message(Level::Error, err),
                    })
                });
            }
            UiCommand::RunOpened(opened) => {
                let dir = opened.dir.clone();
                self.state.add_opened_run(*opened);
                self.state
                    .message(Level::Info, format!("opened {}", dir.display()));
            }
            UiCommand::RescanRuns => {
                if let Some(root) = self.session.options.runs_root.clone() {
                    self.panels.runs.disk_runs_stale = false;
                    self.threads
                        .jobs
                        .spawn("list-runs", move || jobs::list_runs(root));
                }
            }
            UiCommand::RunsListed(runs) => self.panels.runs.disk_runs = runs,
            UiCommand::ExportFigure => match runs::export_figure_job(&self.state) {
                Ok(job) => self.threads.jobs.spawn("export-figure", job),
                Err(err) => self.state.message(Level::Warning, err),
            },
            UiCommand::ExportCsv => match runs::export_csv_job(&self.state) {
                Ok(job) => self.threads.jobs.spawn("export-csv", job),
                Err(err) => self.state.message(Level::Warning, err),
            },
            UiCommand::StartStudy(spec) => self.start_study(*spec),
            UiCommand::OpenStudyDialog => self.panels.study.dialog_open = true,
            UiCommand::OpenScaleDialog => {
                let mut config = self.session.base_config.clone();
                self.state.controls.fold_into(&mut config);
                self.panels
                    .scale
                    .show_for(config, self.session.prefs.preset.clone());
            }
            UiCommand::PickWatchFolder => {
                self.threads
                    .jobs
                    .spawn("watch-dialog", watching::pick_watch_folder);
            }
            UiCommand::WatchFolder(dir) => self.watch_folder(dir),
            UiCommand::PickImages => self.threads.jobs.spawn("open-images", feed::pick_images),
            UiCommand::PickWeights => self.threads.jobs.spawn("open-weights", feed::pick_weights),
            UiCommand::OpenImages(paths) => {
                self.threads
                    .open_images(paths, &self.panels.attention, &mut self.state);
            }
            UiCommand::ImagesDecoded(decoded) => {
                if self.panels.attention.add_decoded(decoded, &mut self.state) {
                    self.threads
                        .attention_settings_changed(&self.panels.attention, &mut self.state);
                }
            }
            UiCommand::LoadWeights(path) => self.load_weights(path),
            UiCommand::AttentionSettingsChanged => self
                .threads
                .attention_settings_changed(&self.panels.attention, &mut self.state),
            UiCommand::ReloadWeights => {
                if let Some(path) = self.panels.attention.weights_path.clone() {
                    self.load_weights(path);
                }
            }
            UiCommand::InspectPatch { image, at } => {
                self.threads
                    .inspect_patch(&self.panels.attention, &mut self.state, image, at);
            }
            UiCommand::ExportAttention { grid } => {
                self.threads
                    .export_attention(&mut self.panels.attention, &mut self.state, grid);
            }
            UiCommand::ExportTimelapse { grid } => {
                self.threads
                    .export_timelapse(&mut self.panels.attention, &mut self.state, grid);
            }
            UiCommand::Message(level, text) => self.state.message(level, text),
        }
    }

    /// Starts a new run from the preset and the current controls.
    fn start(&mut self, paused: bool) {
        self.session.pressed_start();
        let mut config = self.session.base_config.clone();
        self.state.controls.fold_into(&mut config);
        self.panels.attention.training_depth = config.vit_arch().depth;
        let preset = &self.session.prefs.preset;
        let label = format!("run-{} · {preset}", self.state.next_run_id);
        let dir = self
            .session
            .options
            .runs_root
            .as_ref()
            .map(|root| crate::store::run::new_run_dir(root, preset));
        let run_id = self.state.begin_run(label, dir.clone());
        self.state.worker_status = WorkerStatus::Starting;
        self.send(Command::Start {
            run_id,
            config: Box::new(config),
            run_dir: dir,
            total_steps: None,
            paused,
        });
    }

    /// Continues a run directory from its newest checkpoint as a new run of this session.
    fn resume_run(&mut self, path: PathBuf) {
        self.session.pressed_start();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let label = format!("run-{} · resumed {name}", self.state.next_run_id);
        let run_id = self.state.begin_run(label, Some(path.clone()));
        self.state.worker_status = WorkerStatus::Starting;
        self.send(Command::ResumeFrom {
            run_id,
            path,
            paused: false,
        });
    }

    /// Starts an ablation study: its runs in the state, the worker told, the comparison shown.
    fn start_study(&mut self, spec: crate::config::study::StudySpec) {
        self.session.pressed_start();
        let root = self
            .session
            .options
            .runs_root
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("dinoscope-studies"));
        let dir = crate::store::run::new_run_dir(&root, &spec.name);
        let run_ids = self.state.begin_study(&spec, dir.clone());
        self.state.worker_status = WorkerStatus::Starting;
        self.panels.study.forget_textures();
        self.send(Command::StartStudy {
            spec: Box::new(spec),
            dir,
            run_ids,
        });
        self.panels.central_tab = CentralTab::Study;
    }

    /// Once per frame: what the launch asked for, the commands, the threads' results, the
    /// dropped files, the script, the soak log and the screenshot.
    fn update(&mut self, ctx: &egui::Context) {
        if self.session.autostart_pending {
            self.session.autostart_pending = false;
            match self.session.options.study.clone() {
                Some(spec) => self.start_study(spec),
                None => self.start(false),
            }
        }
        if let Some(path) = self.session.launch_weights.take() {
            self.request_weights(path);
        }
        if let Some(dir) = self.session.options.watch.take() {
            self.watch_folder(dir);
        }
        self.apply_commands();
        self.drain_events();
        let deadline = Instant::now() + EVENT_BUDGET;
        self.threads.drain_watches(&mut self.state, deadline);
        for event in self.threads.inference_events() {
            let loaded = self.threads.apply_inference(
                event,
                &mut self.panels.attention,
                &mut self.state,
                self.session.show_loaded_weights,
            );
            if let Some(path) = loaded {
                self.session.prefs.last_weights = Some(path);
                self.session.prefs.last_weights_heads = self.panels.attention.heads_override;
            }
        }
        let (weights, images) = feed::dropped_files(ctx);
        if !images.is_empty() {
            self.queue(UiCommand::OpenImages(images));
        }
        if let Some(path) = weights.into_iter().next() {
            self.load_weights(path);
        }
        if self.threads.recompute_pending {
            self.threads.recompute_loaded(&self.panels.attention);
        }
        if self.panels.attention.loading || self.threads.recompute_pending {
            ctx.request_repaint_after(Duration::from_millis(100));
        }
        let steps = self.state.current_run().map_or(0, |run| run.steps());
        for toggle in self.session.due_toggles(steps) {
            self.apply(UiCommand::SetControl(toggle));
        }
        self.sample_soak();
        let ready = self
            .session
            .screenshot_ready(&self.panels.attention, &self.state);
        if self.session.screenshot(ctx, ready) {
            self.send(Command::Pause);
        }
        if self.is_active() && self.state.worker_status == WorkerStatus::Running {
            // The worker wakes us per event; this is a floor for the ETA/clock read-outs.
            ctx.request_repaint_after(Duration::from_millis(250));
        }
    }

    /// Appends a soak row when one is due; a failed write stops the log with a warning.
    fn sample_soak(&mut self) {
        if !self
            .session
            .soak
            .as_ref()
            .is_some_and(|log| log.due(Instant::now()))
        {
            return;
        }
        let reading = soak::SoakReading {
            frame_ms: self.session.frame_time_ms().unwrap_or((0.0, 0.0)),
            worker_events: self
                .threads
                .worker
                .as_ref()
                .map_or(0, |w| w.pending_events()),
            attention_snapshots: self.state.attention_history.len(),
            distance_points: self.state.distance_history.len(),
            textures: self.panels.attention.texture_count(),
            runs: self.state.runs.len(),
            rows: self.state.runs.iter().map(|r| r.steps()).sum(),
            current_rows: self.state.current_run().map_or(0, |r| r.steps()),
        };
        if let Some(Err(message)) = self.session.soak.as_mut().map(|log| log.append(&reading)) {
            self.session.soak = None;
            self.state.message(Level::Warning, message);
        }
    }
}

/// A folder dialog, starting in the runs folder when there is one.
fn pick_folder(root: Option<PathBuf>) -> Option<PathBuf> {
    let mut dialog = rfd::FileDialog::new();
    if let Some(root) = root {
        dialog = dialog.set_directory(root);
    }
    dialog.pick_folder()
}

impl eframe::App for DinoscopeApp {
    fn logic(&mut self, ctx: &egui::Context, frame: &mut eframe::Frame) {
        if let Some(cpu) = frame.info().cpu_usage {
            self.session.record_frame(cpu);
        }
        if self.session.options.close_request.is_requested() {
            // As the close button: eframe then calls `on_exit`, which joins the worker after
            // the step in flight and its final checkpoint.
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        }
        self.update(ctx);
    }

    /// Long: the window's panels in screen order.
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let context = AppContext {
            state: &self.state,
            prefs: &self.session.prefs,
            commands: self.commands.sender(),
            active: self.is_active(),
            runs_root: self.session.options.runs_root.as_deref(),
            batch_size: self.session.base_config.optim.batch_size_per_gpu,
            frame_time_ms: self.session.frame_time_ms(),
            first_point_secs: self.session.first_point_secs,
        };
        self.panels.ui(ui, &context);
        // This frame's clicks take effect now that every panel has drawn (a toggle reaches
        // the worker in the frame it was clicked); the jobs' answers at the next `logic`.
        self.apply_commands();
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, PREFS_KEY, &self.session.prefs);
    }

    fn on_exit(&mut self) {
        self.threads.shutdown();
    }
}
