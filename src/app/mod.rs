//! The desktop app: eframe + egui. The UI owns an [`AppState`] and a [`WorkerHandle`]; it never
//! touches tensors, and the worker never touches egui. Events are drained in `logic` with a
//! per-frame time budget, so the window never waits on training.

pub mod attention_view;
pub mod collapse;
pub mod overlay_gpu;
pub mod plots;
pub mod series;
pub mod state;

use crate::config::{Config, PRESETS};
use crate::device::{DeviceChoice, SelectedDevice};
use crate::trainer::Toggle;
use crate::worker::{Command, DeviceSource, WorkerHandle, WorkerStatus};
use collapse::CollapseState;
use series::ViewSettings;
use state::{AppState, Controls, Level, Quantity};
use std::collections::VecDeque;
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
    frame_secs: VecDeque<f32>,
    launched_at: Instant,
    /// Seconds from launch to the first plotted point.
    pub first_point_secs: Option<f64>,
    screenshot_requested: bool,
    /// Set by the screenshot callback (on eframe's thread) once the PNG is written.
    screenshot_done: Arc<std::sync::Mutex<Option<Result<(), String>>>>,
    autostart_pending: bool,
    pub attention: attention_view::AttentionView,
    /// Loads external weights and computes their maps off the UI thread.
    pub inference: Option<crate::inference::InferenceHandle>,
    pub central_tab: CentralTab,
    /// `--weights` (or the last session's weights), loaded on the first frame.
    launch_weights: Option<PathBuf>,
    /// Whether loaded weights become the attention view's source (not for restored ones).
    show_loaded_weights: bool,
    disk_runs: Vec<PathBuf>,
    disk_runs_listed_at: Option<Instant>,
}

/// What the central area shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CentralTab {
    Curves,
    Attention,
}

/// Files dropped on the window that are weights rather than images.
fn is_weights_file(path: &std::path::Path) -> bool {
    path.is_dir()
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
        let gpu = shared_gpu_device(cc);
        let inference_device = gpu
            .as_ref()
            .map(|selected| selected.device.clone())
            .unwrap_or_else(burn::prelude::Device::flex);
        let device = gpu
            .map(DeviceSource::Ready)
            .unwrap_or(DeviceSource::Choice(options.device));
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
        app.inference = crate::inference::InferenceHandle::spawn(inference_device, waker)
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
        let mut state = AppState::new(Controls::from_config(&options.config), view);
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
            frame_secs: VecDeque::with_capacity(FRAME_WINDOW),
            launched_at: Instant::now(),
            first_point_secs: None,
            screenshot_requested: false,
            screenshot_done: Arc::new(std::sync::Mutex::new(None)),
            attention: attention_view::AttentionView::new(),
            // Tests get a CPU inference thread; `new` replaces it with one that wakes the UI.
            inference: crate::inference::InferenceHandle::spawn(
                burn::prelude::Device::flex(),
                Arc::new(|| {}),
            )
            .ok(),
            central_tab: CentralTab::Curves,
            launch_weights: None,
            show_loaded_weights: true,
            disk_runs: Vec::new(),
            disk_runs_listed_at: None,
        };
        app.send_checkpointing();
        app.launch_weights = app.options.weights.clone();
        if app.options.open_attention {
            app.central_tab = CentralTab::Attention;
        }
        app.attention.short_side_px = app.options.attention_short_side_px;
        let images = app.options.images.clone();
        if !images.is_empty() {
            app.attention.add_files(images, &mut app.state);
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

    /// Starts a new run from the preset and the current controls.
    pub fn start(&mut self, paused: bool) {
        let mut config = self.base_config.clone();
        self.state.controls.apply_to(&mut config);
        let label = format!("run-{} · {}", self.state.next_run_id, self.prefs.preset);
        let dir = self
            .options
            .runs_root
            .as_ref()
            .map(|root| crate::run::new_run_dir(root, &self.prefs.preset));
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

    fn send_checkpointing(&mut self) {
        if self.worker.is_some() {
            self.send(Command::SetCheckpointing {
                every_steps: self.prefs.checkpoint_every_steps,
                keep_last: crate::worker::CHECKPOINT_KEEP_LAST,
            });
        }
    }

    /// Fig. 7 of the visible runs that have a directory, to a file the user picks.
    fn export_figure(&mut self) {
        use crate::figure::{render_figure, FigureKind, PlotRun};
        let dirs: Vec<PathBuf> = self
            .state
            .runs
            .iter()
            .filter(|r| r.visible)
            .filter_map(|r| r.dir.clone())
            .collect();
        let runs: Vec<PlotRun> = dirs
            .iter()
            .filter_map(|dir| PlotRun::read(dir).ok())
            .collect();
        if runs.is_empty() {
            self.state.message(
                Level::Warning,
                "no shown run has saved metrics yet (runs are saved under the runs folder)",
            );
            return;
        }
        let Some(path) = rfd::FileDialog::new()
            .set_file_name("fig7-collapse.svg")
            .add_filter("SVG or PNG", &["svg", "png"])
            .save_file()
        else {
            return;
        };
        match render_figure(&runs, FigureKind::Collapse, &path, (1600, 600)) {
            Ok(()) => self
                .state
                .message(Level::Info, format!("saved {}", path.display())),
            Err(err) => self.state.message(Level::Error, err.to_string()),
        }
    }

    /// The current run's shown (smoothed) curves as CSV.
    fn export_csv(&mut self) {
        use self::state::Quantity;
        let Some(run) = self.state.current_run() else {
            self.state
                .message(Level::Warning, "no current run to export");
            return;
        };
        let quantities = [
            Quantity::Loss,
            Quantity::TeacherEntropy,
            Quantity::Kl,
            Quantity::BatchMeanEntropy,
            Quantity::Lr,
            Quantity::WeightDecay,
            Quantity::TeacherMomentum,
            Quantity::TeacherTemp,
            Quantity::ImagesPerSec,
        ];
        let columns: Vec<(String, Vec<(f64, f64)>)> = quantities
            .iter()
            .filter_map(|q| {
                let series = run.series(*q)?;
                Some((
                    q.name().to_string(),
                    series.smoothed().iter().map(|p| (p.x, p.y)).collect(),
                ))
            })
            .collect();
        let Some(path) = rfd::FileDialog::new()
            .set_file_name("curves.csv")
            .add_filter("CSV", &["csv"])
            .save_file()
        else {
            return;
        };
        let borrowed: Vec<(&str, &[(f64, f64)])> = columns
            .iter()
            .map(|(name, points)| (name.as_str(), points.as_slice()))
            .collect();
        match crate::figure::write_series_csv(&path, &borrowed) {
            Ok(()) => self
                .state
                .message(Level::Info, format!("saved {}", path.display())),
            Err(err) => self.state.message(Level::Error, err.to_string()),
        }
    }

    /// Continues a run from its newest checkpoint (or the checkpoint `path` names).
    pub fn resume_run(&mut self, path: PathBuf) {
        let label = format!(
            "run-{} · resumed {}",
            self.state.next_run_id,
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        let run_id = self.state.begin_run(label, Some(path.clone()));
        self.state.worker_status = WorkerStatus::Starting;
        self.send(Command::ResumeFrom {
            run_id,
            path,
            paused: false,
        });
    }

    /// Sends a toggle to the running job (applied at its next step) and logs it.
    pub fn toggle(&mut self, toggle: Toggle) {
        if self.is_active() {
            self.state.sent_toggles.push(toggle.clone());
            self.send(Command::Set(toggle));
        }
    }

    pub fn reset(&mut self) {
        if self.is_active() {
            self.send(Command::Stop);
        }
        self.state.reset();
        self.state.worker_status = WorkerStatus::Idle;
        self.first_point_secs = None;
    }

    fn select_preset(&mut self, name: &str) {
        match Config::preset(name) {
            Ok(config) => {
                self.prefs.preset = name.to_string();
                self.state.controls = Controls::from_config(&config);
                self.base_config = config;
                self.state.message(
                    Level::Info,
                    format!("preset {name} selected; it applies at the next Start"),
                );
            }
            Err(err) => self.state.message(Level::Error, err.to_string()),
        }
    }

    /// Applies pending worker events within the frame budget.
    pub fn drain_events(&mut self) {
        let Some(worker) = &self.worker else { return };
        let started = Instant::now();
        let mut events = Vec::new();
        while started.elapsed() < EVENT_BUDGET {
            match worker.try_recv() {
                Some(event) => events.push(event),
                None => break,
            }
        }
        for event in events {
            self.state.apply(event);
        }
        if self.first_point_secs.is_none()
            && self.state.current_run().is_some_and(|run| run.steps() > 0)
        {
            self.first_point_secs = Some(self.launched_at.elapsed().as_secs_f64());
        }
    }

    /// Median and 95th percentile of recent frame CPU times, in milliseconds.
    pub fn frame_time_ms(&self) -> Option<(f32, f32)> {
        if self.frame_secs.is_empty() {
            return None;
        }
        let mut sorted: Vec<f32> = self.frame_secs.iter().copied().collect();
        sorted.sort_by(f32::total_cmp);
        let at = |q: f32| sorted[((sorted.len() - 1) as f32 * q).round() as usize] * 1e3;
        Some((at(0.5), at(0.95)))
    }

    /// Takes dropped files (images to follow, or weights to load).
    fn take_dropped_files(&mut self, ctx: &egui::Context) {
        let dropped: Vec<PathBuf> = ctx.input(|input| {
            input
                .raw
                .dropped_files
                .iter()
                .map(|file| file.path().to_path_buf())
                .filter(|path| !path.as_os_str().is_empty())
                .collect()
        });
        let (weights, images): (Vec<PathBuf>, Vec<PathBuf>) =
            dropped.into_iter().partition(|p| is_weights_file(p));
        if !images.is_empty() {
            self.attention.add_files(images, &mut self.state);
        }
        if let Some(path) = weights.into_iter().next() {
            self.load_weights(path);
        }
    }

    /// Asks the inference thread to load weights and shows them in the attention tab; the
    /// current ones stay until this succeeds.
    pub fn load_weights(&mut self, path: PathBuf) {
        self.show_loaded_weights = true;
        self.request_weights(path);
    }

    fn request_weights(&mut self, path: PathBuf) {
        let Some(inference) = &self.inference else {
            self.state
                .message(Level::Error, "the inference thread is not running");
            return;
        };
        let sent = inference.send(crate::inference::InferenceCommand::Load {
            path: path.clone(),
            network: self.attention.network,
            overrides: crate::weights::ArchOverrides {
                num_heads: self.attention.heads_override,
                ..Default::default()
            },
        });
        if sent {
            self.attention.loading = true;
            if self.show_loaded_weights {
                self.central_tab = CentralTab::Attention;
            }
            self.state
                .message(Level::Info, format!("loading {}...", path.display()));
        } else {
            self.state.message(
                Level::Warning,
                "still busy with the previous weights; try again",
            );
        }
    }

    /// Applies what the inference thread sent.
    fn drain_inference(&mut self) {
        use crate::inference::InferenceEvent;
        let Some(inference) = &self.inference else {
            return;
        };
        let mut events = Vec::new();
        while let Some(event) = inference.try_recv() {
            events.push(event);
        }
        for event in events {
            match event {
                InferenceEvent::Loaded { info, load_secs } => {
                    self.state.message(
                        Level::Info,
                        format!("loaded {} in {load_secs:.1} s", info.describe()),
                    );
                    self.prefs.last_weights = Some(info.path.clone());
                    self.prefs.last_weights_heads = self.attention.heads_override;
                    self.attention
                        .weights_loaded(info, self.show_loaded_weights);
                }
                InferenceEvent::Maps {
                    source,
                    maps,
                    skipped,
                    elapsed_secs,
                } => {
                    if !skipped.is_empty() {
                        self.state.message(
                            Level::Warning,
                            format!(
                                "too small for one patch at this size: {}; raise the size",
                                skipped.join(", ")
                            ),
                        );
                    }
                    self.attention.loaded_maps(&source, maps, elapsed_secs);
                }
                InferenceEvent::Error(text) => {
                    self.attention.loading = false;
                    self.state.message(Level::Error, text);
                }
            }
        }
    }

    /// Carries out what the attention view asked for this frame.
    fn serve_attention_requests(&mut self) {
        let requests = std::mem::take(&mut self.attention.requests);
        if requests.training_settings && self.worker.is_some() {
            self.send(Command::SetAttention(self.attention.training_settings()));
        }
        if requests.recompute_loaded {
            if let Some(inference) = &self.inference {
                let size = self
                    .attention
                    .short_side_px
                    .map(crate::attention::ImageSize::ShortSide);
                if !inference.send(crate::inference::InferenceCommand::Compute {
                    images: self.attention.followed(),
                    size,
                }) {
                    // Busy: ask again next frame.
                    self.attention.requests.recompute_loaded = true;
                }
            }
        }
        if requests.reload_weights {
            if let Some(path) = self.attention.weights_path.clone() {
                self.load_weights(path);
            }
        }
        if requests.open_images {
            // The native dialog is modal; training goes on in the worker.
            if let Some(paths) = rfd::FileDialog::new()
                .add_filter(
                    "images",
                    &["png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "gif"],
                )
                .pick_files()
            {
                self.attention.add_files(paths, &mut self.state);
            }
        }
        if requests.open_weights {
            if let Some(path) = rfd::FileDialog::new()
                .add_filter("weights", &["pth", "pt", "safetensors", "bpk"])
                .pick_file()
            {
                self.load_weights(path);
            }
        }
        for grid in [false, true].into_iter().filter(|g| {
            if *g {
                requests.export_grid
            } else {
                requests.export_view
            }
        }) {
            let Some(path) = rfd::FileDialog::new()
                .set_file_name(self.attention.export_name(grid))
                .add_filter("PNG", &["png"])
                .save_file()
            else {
                continue;
            };
            match self.attention.export(&self.state, &path, grid) {
                Ok(()) => self
                    .state
                    .message(Level::Info, format!("saved {}", path.display())),
                Err(err) => self.state.message(Level::Error, err),
            }
        }
    }

    /// Applies scripted toggles whose step the current run has reached, as if clicked.
    fn run_script(&mut self) {
        let steps = self.state.current_run().map(|run| run.steps()).unwrap_or(0);
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.options.scripted_toggles)
            .into_iter()
            .partition(|(step, _)| steps > 0 && *step <= steps);
        self.options.scripted_toggles = later;
        for (_, toggle) in due {
            self.state.controls.apply_toggle(&toggle);
            self.toggle(toggle);
        }
    }

    fn handle_screenshot(&mut self, ctx: &egui::Context) {
        let Some(request) = self.options.screenshot.clone() else {
            return;
        };
        // With weights to show, wait for their maps too (or for the error).
        let weights_ready = self.options.weights.is_none()
            || self
                .attention
                .loaded
                .as_ref()
                .is_some_and(|l| !l.maps.is_empty())
            || (!self.attention.loading && self.attention.loaded.is_none());
        let trained = self
            .state
            .current_run()
            .is_some_and(|run| run.steps() >= request.after_steps)
            || request.after_steps == 0
            || (self.state.worker_status == WorkerStatus::Failed);
        let ready = trained && weights_ready;
        if ready && !self.screenshot_requested {
            self.screenshot_requested = true;
            self.send(Command::Pause);
            // The UI-under-load numbers BENCHMARKS.md reports, measured while training ran.
            if let Some((median, p95)) = self.frame_time_ms() {
                eprintln!(
                    "ui: frame CPU time median {median:.1} ms, p95 {p95:.1} ms over the last {} frames; first point after {}",
                    self.frame_secs.len(),
                    self.first_point_secs
                        .map(|s| format!("{s:.1} s"))
                        .unwrap_or_else(|| "-".into())
                );
            }
            let done = self.screenshot_done.clone();
            let path = request.path.clone();
            let repaint = ctx.clone();
            ctx.send_viewport_cmd(egui::ViewportCommand::Screenshot(
                egui::ScreenshotCallback::new(move |image| {
                    let [w, h] = image.size;
                    let bytes: Vec<u8> = image.pixels.iter().flat_map(|p| p.to_array()).collect();
                    let saved = image::RgbaImage::from_raw(w as u32, h as u32, bytes)
                        .ok_or_else(|| "screenshot has an unexpected size".to_string())
                        .and_then(|img| img.save(&path).map_err(|e| e.to_string()));
                    match &saved {
                        Ok(()) => eprintln!("screenshot written to {}", path.display()),
                        Err(err) => eprintln!("cannot write {}: {err}", path.display()),
                    }
                    if let Ok(mut slot) = done.lock() {
                        *slot = Some(saved);
                    }
                    repaint.request_repaint();
                }),
            ));
        }
        let finished = self
            .screenshot_done
            .lock()
            .map(|slot| slot.is_some())
            .unwrap_or(true);
        if finished {
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        }
        ctx.request_repaint_after(Duration::from_millis(50));
    }

    fn top_bar_ui(&mut self, ui: &mut egui::Ui) {
        ui.horizontal_wrapped(|ui| {
            let status = self.state.worker_status;
            let active = self.is_active();
            let running = active && status == WorkerStatus::Running;
            let paused = active && status == WorkerStatus::Paused;
            if ui
                .add_enabled(!running, egui::Button::new(if paused { "Resume" } else { "Start" }))
                .on_hover_text("Start a new run with the preset and the controls on the left (or resume a paused one).")
                .clicked()
            {
                if paused {
                    self.send(Command::Resume);
                } else {
                    self.start(false);
                }
            }
            if ui
                .add_enabled(running, egui::Button::new("Pause"))
                .on_hover_text("Pause after the current step.")
                .clicked()
            {
                self.send(Command::Pause);
            }
            if ui
                .add_enabled(paused || !active, egui::Button::new("Step"))
                .on_hover_text("Run exactly one training step, then stay paused.")
                .clicked()
            {
                if !active {
                    self.start(true);
                }
                self.send(Command::Step);
            }
            if ui
                .add_enabled(active, egui::Button::new("Stop"))
                .on_hover_text("End this run; its curves stay on screen.")
                .clicked()
            {
                self.send(Command::Stop);
            }
            if ui
                .button("Reset")
                .on_hover_text("Stop and clear the current and earlier runs; pinned runs stay.")
                .clicked()
            {
                self.reset();
            }
            ui.separator();
            if ui
                .add_enabled(active, egui::Button::new("Save checkpoint"))
                .on_hover_text("Write student, teacher, optimiser state and RNG into the run directory (checkpoint-<step>/); Stop and closing the window also save one.")
                .clicked()
            {
                self.send(Command::SaveCheckpoint);
            }
            if ui
                .button("Resume run...")
                .on_hover_text("Continue a run from its newest checkpoint: pick its run directory.")
                .clicked()
            {
                let mut dialog = rfd::FileDialog::new();
                if let Some(root) = &self.options.runs_root {
                    dialog = dialog.set_directory(root);
                }
                if let Some(dir) = dialog.pick_folder() {
                    self.resume_run(dir);
                }
            }
            ui.separator();
            let mut selected = self.prefs.preset.clone();
            egui::ComboBox::from_label("preset")
                .selected_text(selected.clone())
                .show_ui(ui, |ui| {
                    for (name, _) in PRESETS {
                        ui.selectable_value(&mut selected, name.to_string(), name);
                    }
                });
            if selected != self.prefs.preset {
                self.select_preset(&selected);
            }
            ui.separator();
            if let Some(run) = self.state.current_run() {
                if !run.device.is_empty() {
                    ui.label(&run.device).on_hover_text(&run.dataset);
                }
                if let Some(last) = &run.last {
                    ui.separator();
                    ui.label(format!(
                        "step {} / {} · epoch {}",
                        last.step + 1,
                        run.total_steps,
                        last.epoch
                    ));
                    ui.separator();
                    ui.label(format!(
                        "{:.0} img/s",
                        run.images_per_sec_ema.unwrap_or(last.images_per_sec)
                    ));
                    if let Some(eta) = run.eta_secs(self.base_config.optim.batch_size_per_gpu) {
                        ui.label(format!("ETA {}", format_duration(eta)));
                    }
                }
                ui.separator();
                let collapse = run.collapse_state();
                collapse_chip_ui(ui, collapse);
            } else {
                ui.label(status_text(status));
            }
        });
    }

    fn controls_ui(&mut self, ui: &mut egui::Ui) {
        ui.heading("Anti-collapse");
        let mut controls = self.state.controls.clone();
        if ui
            .checkbox(&mut controls.centering, "centering")
            .on_hover_text("Subtracts a running mean from the teacher's outputs so no single dimension can win for every image. Off: h(Pt) falls to 0: one-hot collapse.")
            .changed()
        {
            self.toggle(Toggle::Centering(controls.centering));
        }
        if ui
            .checkbox(&mut controls.sharpening, "sharpening")
            .on_hover_text("Uses a low teacher temperature so the teacher's targets are peaked. Off (temperature = the student's 0.1): h(Pt) rises to ln K: uniform collapse.")
            .changed()
        {
            self.toggle(Toggle::Sharpening(controls.sharpening));
        }
        let response = ui
            .add(
                egui::Slider::new(&mut controls.teacher_temp, 0.005..=0.2)
                    .logarithmic(true)
                    .text("τ teacher"),
            )
            .on_hover_text("Teacher temperature. Lower = sharper targets, pushing towards one-hot; above ~0.07 the paper saw uniform collapse.");
        if committed(&response) {
            self.toggle(Toggle::TeacherTemp(controls.teacher_temp));
        }
        let response = ui
            .add(egui::Slider::new(&mut controls.momentum_teacher, 0.0..=1.0).text("momentum"))
            .on_hover_text("EMA momentum of the teacher (cosine-scheduled towards 1). 0 = no momentum teacher: the teacher copies the student, and the paper's run collapsed.");
        if committed(&response) {
            self.toggle(Toggle::MomentumTeacher(controls.momentum_teacher));
        }
        let response = ui
            .add(egui::Slider::new(&mut controls.local_crops, 0..=10).text("local crops"))
            .on_hover_text("Small crops the student must match to the teacher's global view. 0 = no multi-crop: training still works, with weaker features.");
        if committed(&response) {
            self.toggle(Toggle::LocalCrops(controls.local_crops));
        }
        let response = ui
            .add(
                egui::Slider::new(&mut controls.lr_scale, 0.05..=20.0)
                    .logarithmic(true)
                    .text("lr scale"),
            )
            .on_hover_text("Multiplies the learning-rate schedule. A large lr makes a collapse happen (and recover) faster.");
        if committed(&response) {
            self.toggle(Toggle::LrScale(controls.lr_scale));
        }
        self.state.controls = controls;

        ui.separator();
        ui.heading("View");
        let mut view = self.state.view;
        ui.add(egui::Slider::new(&mut view.smoothing, 0.0..=0.99).text("smoothing"))
            .on_hover_text("De-biased exponential moving average, as in TensorBoard. The raw curve stays faint underneath.");
        ui.checkbox(&mut view.log_y, "log y")
            .on_hover_text("Plot log10 of every value (the 0 line is hidden).");
        self.state.set_view(view);
        self.prefs.smoothing = view.smoothing;
        self.prefs.log_y = view.log_y;
        ui.checkbox(&mut self.prefs.show_schedules, "schedules");
        ui.checkbox(&mut self.prefs.show_throughput, "throughput");
        ui.checkbox(&mut self.prefs.show_explanation, "explanations");

        ui.separator();
        ui.heading("Runs");
        let response = ui
            .add(
                egui::DragValue::new(&mut self.prefs.checkpoint_every_steps)
                    .range(0..=100_000)
                    .prefix("checkpoint every ")
                    .suffix(" steps"),
            )
            .on_hover_text("Periodic checkpoints in the run directory (the newest 3 are kept); 0 = only on Stop, exit and Save checkpoint.");
        if response.changed() {
            self.send_checkpointing();
        }
        let current = self.state.current;
        for run in self.state.runs.iter_mut().rev() {
            ui.horizontal(|ui| {
                ui.checkbox(&mut run.visible, "")
                    .on_hover_text("Show or hide this run on the plots.");
                let pin = if run.pinned { "pinned" } else { "pin" };
                if ui
                    .selectable_label(run.pinned, pin)
                    .on_hover_text("Pinned runs survive Reset, to compare against new runs.")
                    .clicked()
                {
                    run.pinned = !run.pinned;
                }
                let live = if Some(run.id) == current {
                    " (current)"
                } else {
                    ""
                };
                ui.label(format!("{}{live}", run.label))
                    .on_hover_text(format!(
                        "{} steps · {}{}",
                        run.steps(),
                        status_text(run.status),
                        run.dir
                            .as_ref()
                            .map(|d| format!(" · {}", d.display()))
                            .unwrap_or_default()
                    ));
            });
        }
        if self.state.runs.is_empty() {
            ui.label("No runs yet: press Start.");
        }
        if let Some(root) = self.options.runs_root.clone() {
            ui.separator();
            egui::CollapsingHeader::new("Runs on disk")
                .id_salt("runs_on_disk")
                .show(ui, |ui| self.runs_on_disk_ui(ui, &root));
        }
    }

    /// Run directories under the runs folder; "open" overlays one on the plots.
    fn runs_on_disk_ui(&mut self, ui: &mut egui::Ui, root: &std::path::Path) {
        // Listing a directory is cheap but not free: refresh at most once a second.
        let now = Instant::now();
        if self
            .disk_runs_listed_at
            .is_none_or(|at| now.duration_since(at) > Duration::from_secs(1))
        {
            self.disk_runs = crate::run::list_run_dirs(root);
            self.disk_runs_listed_at = Some(now);
        }
        if self.disk_runs.is_empty() {
            ui.small(format!("none in {}", root.display()));
        }
        let open: Vec<PathBuf> = self
            .state
            .runs
            .iter()
            .filter_map(|r| r.dir.clone())
            .collect();
        let mut to_open = None;
        let mut to_resume = None;
        for dir in self.disk_runs.iter().take(30) {
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            ui.horizontal(|ui| {
                let shown = open.contains(dir);
                if ui
                    .add_enabled(!shown, egui::Button::new("open").small())
                    .on_hover_text("Overlay this run's curves (and k-NN) on the plots.")
                    .clicked()
                {
                    to_open = Some(dir.clone());
                }
                if !crate::checkpoint::list_checkpoints(dir).is_empty()
                    && ui
                        .small_button("resume")
                        .on_hover_text("Continue this run from its newest checkpoint.")
                        .clicked()
                {
                    to_resume = Some(dir.clone());
                }
                ui.small(name);
            });
        }
        if let Some(dir) = to_open {
            match self.state.open_run_from_disk(&dir) {
                Ok(_) => self
                    .state
                    .message(Level::Info, format!("opened {}", dir.display())),
                Err(err) => self.state.message(Level::Error, err),
            }
        }
        if let Some(dir) = to_resume {
            self.resume_run(dir);
        }
    }

    fn explanation_ui(&self, ui: &mut egui::Ui) {
        ui.heading("What you are seeing");
        if let Some(run) = self.state.current_run() {
            let collapse = run.collapse_state();
            collapse_chip_ui(ui, collapse);
            ui.label(collapse.explanation());
            if let Some(marker) = run.markers.last() {
                ui.separator();
                ui.label(format!(
                    "Last change at step {}: {}",
                    marker.step, marker.label
                ));
            }
        } else {
            ui.label(CollapseState::WarmingUp.explanation());
        }
        ui.separator();
        for quantity in Quantity::DECOMPOSITION {
            ui.label(
                egui::RichText::new(quantity.name())
                    .strong()
                    .color(egui::Color32::from_rgb(
                        quantity.rgb()[0],
                        quantity.rgb()[1],
                        quantity.rgb()[2],
                    )),
            );
            ui.label(quantity.explanation());
        }
    }

    fn status_line_ui(&self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            if let Some(message) = self.state.messages.back() {
                let colour = match message.level {
                    Level::Info => ui.visuals().text_color(),
                    Level::Warning => egui::Color32::from_rgb(230, 170, 40),
                    Level::Error => egui::Color32::from_rgb(235, 80, 70),
                };
                let history: Vec<String> = self
                    .state
                    .messages
                    .iter()
                    .rev()
                    .take(12)
                    .map(|m| m.text.clone())
                    .collect();
                ui.colored_label(colour, &message.text)
                    .on_hover_text(history.join("\n"));
            } else {
                ui.label("Ready.");
            }
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                if let Some((median, p95)) = self.frame_time_ms() {
                    ui.label(format!("frame {median:.1} ms (p95 {p95:.1})"))
                        .on_hover_text("CPU time per UI frame over the last 240 frames.");
                }
                if let Some(secs) = self.first_point_secs {
                    ui.label(format!("first point after {secs:.1} s"));
                }
            });
        });
    }
}

/// Commit slider changes once (on release or keyboard edit), so a drag is one marker.
fn committed(response: &egui::Response) -> bool {
    response.drag_stopped() || (response.changed() && !response.dragged())
}

fn collapse_chip_ui(ui: &mut egui::Ui, collapse: CollapseState) {
    let [r, g, b] = collapse.rgb();
    egui::Frame::new()
        .fill(egui::Color32::from_rgb(r, g, b))
        .corner_radius(8.0)
        .inner_margin(egui::Margin::symmetric(8, 2))
        .show(ui, |ui| {
            ui.label(
                egui::RichText::new(collapse.label())
                    .color(egui::Color32::BLACK)
                    .strong(),
            );
        })
        .response
        .on_hover_text(collapse.explanation());
}

fn status_text(status: WorkerStatus) -> &'static str {
    match status {
        WorkerStatus::Idle => "idle",
        WorkerStatus::Starting => "starting...",
        WorkerStatus::Running => "running",
        WorkerStatus::Paused => "paused",
        WorkerStatus::Finished => "finished",
        WorkerStatus::Failed => "failed",
    }
}

fn format_duration(secs: f64) -> String {
    let secs = secs.max(0.0).round() as u64;
    if secs >= 3600 {
        format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
    } else {
        format!("{}:{:02}", secs / 60, secs % 60)
    }
}

/// A burn device on eframe's own wgpu device, when that device is a hardware GPU.
fn shared_gpu_device(cc: &eframe::CreationContext<'_>) -> Option<SelectedDevice> {
    use burn::tensor::wgpu::{wgpu, WgpuSetup};
    let render_state = cc.wgpu_render_state.as_ref()?;
    let info = render_state.adapter.get_info();
    if info.device_type == wgpu::DeviceType::Cpu {
        return None;
    }
    let device = burn::prelude::Device::wgpu_options()
        .setup(WgpuSetup {
            instance: render_state.instance.clone(),
            adapter: render_state.adapter.clone(),
            device: render_state.device.clone(),
            queue: render_state.queue.clone(),
            backend: info.backend,
        })
        .init()
        .map_err(|err| tracing::warn!("cannot share eframe's GPU with burn: {err}"))
        .ok()?;
    Some(SelectedDevice {
        device,
        description: format!("GPU (wgpu, shared with the UI) · {}", info.name),
        is_gpu: true,
    })
}

impl eframe::App for DinoscopeApp {
    fn logic(&mut self, ctx: &egui::Context, frame: &mut eframe::Frame) {
        if let Some(cpu) = frame.info().cpu_usage {
            if self.frame_secs.len() == FRAME_WINDOW {
                self.frame_secs.pop_front();
            }
            self.frame_secs.push_back(cpu);
        }
        if self.autostart_pending {
            self.autostart_pending = false;
            self.start(false);
        }
        if let Some(path) = self.launch_weights.take() {
            self.request_weights(path);
        }
        self.drain_events();
        self.drain_inference();
        self.take_dropped_files(ctx);
        self.serve_attention_requests();
        if self.attention.loading || self.attention.requests.recompute_loaded {
            ctx.request_repaint_after(Duration::from_millis(100));
        }
        self.run_script();
        self.handle_screenshot(ctx);
        if self.is_active() && self.state.worker_status == WorkerStatus::Running {
            // The worker wakes us per event; this is a floor for the ETA/clock read-outs.
            ctx.request_repaint_after(Duration::from_millis(250));
        }
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        egui::Panel::top("top_bar").show(ui, |ui| self.top_bar_ui(ui));
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
            });
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
                        self.export_figure();
                    }
                    if ui
                        .small_button("Export CSV...")
                        .on_hover_text("The current run's curves as shown (smoothed), one column per quantity.")
                        .clicked()
                    {
                        self.export_csv();
                    }
                });
                let height = (ui.available_height() * 0.45).max(220.0);
                plots::decomposition_plot_ui(ui, &self.state, height);
                let evaluated = self
                    .state
                    .current_run()
                    .is_some_and(|run| !run.evals.is_empty());
                if evaluated {
                    ui.heading("What the features learned (teacher, held-out data)")
                        .on_hover_text("Weighted k-NN (k = 20, T = 0.07) on L2-normalised CLS features, and the Jaccard of the 60 %-mass attention masks with the shapes' true masks. Dashed: the same network at random init. Evaluated every epoch.");
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
        // Joins the worker (at most one step) so closing never leaves a thread behind.
        if let Some(mut worker) = self.worker.take() {
            worker.shutdown();
        }
        if let Some(mut inference) = self.inference.take() {
            inference.shutdown();
        }
    }
}

/// eframe options: wgpu renderer, and a device that requests the adapter's own features and
/// limits so burn's kernels can run on it (stack-notes §5).
pub fn native_options() -> eframe::NativeOptions {
    use eframe::egui_wgpu::{WgpuConfiguration, WgpuSetup, WgpuSetupCreateNew};
    use eframe::wgpu;
    let mut create = WgpuSetupCreateNew::without_display_handle();
    create.device_descriptor = Arc::new(|adapter: &wgpu::Adapter| wgpu::DeviceDescriptor {
        required_features: adapter
            .features()
            .difference(wgpu::Features::MAPPABLE_PRIMARY_BUFFERS),
        required_limits: adapter.limits(),
        ..Default::default()
    });
    eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("dinoscope")
            .with_inner_size([1360.0, 860.0])
            .with_min_inner_size([800.0, 500.0])
            .with_drag_and_drop(true),
        renderer: eframe::Renderer::Wgpu,
        wgpu_options: WgpuConfiguration {
            wgpu_setup: WgpuSetup::CreateNew(create),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Opens the window and runs until it is closed.
pub fn run(options: AppOptions) -> Result<(), String> {
    eframe::run_native(
        "dinoscope",
        native_options(),
        Box::new(move |cc| Ok(Box::new(DinoscopeApp::new(cc, options)))),
    )
    .map_err(|err| err.to_string())
}
