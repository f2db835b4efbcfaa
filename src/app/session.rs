//! One session of the window: what the command line asked (`AppOptions`), the preferences
//! kept between launches (`Prefs`), the preset's config, and the session's clocks (frame
//! times, Start to first point), launch-time requests and the soak log.

use super::soak::SoakLog;
use super::window::CloseRequest;
use crate::config::Config;
use crate::config::Toggle;
use crate::device::DeviceChoice;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Frames kept for the frame-time read-out.
const FRAME_WINDOW: usize = 240;

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

pub struct Session {
    pub options: AppOptions,
    pub prefs: Prefs,
    /// The preset's (or `--config`'s) config; the controls are folded in at Start.
    pub base_config: Config,
    /// CPU time of the recent frames (egui's own rolling window).
    frame_secs: egui::util::History<f32>,
    launched_at: Instant,
    /// When Start (or Resume run…, or a study) was last pressed.
    start_pressed: Option<Instant>,
    /// Seconds from pressing Start to the run's first plotted point.
    pub first_point_secs: Option<f64>,
    /// `--autostart`, done on the first frame.
    pub autostart_pending: bool,
    /// `--weights` (or the last session's weights), loaded on the first frame.
    pub launch_weights: Option<PathBuf>,
    /// Whether loaded weights become the attention view's source (not for restored ones).
    pub show_loaded_weights: bool,
    pub screenshot_requested: bool,
    /// Set by the screenshot callback (on eframe's thread) once the PNG is written.
    pub screenshot_done: Arc<std::sync::Mutex<Option<Result<(), String>>>>,
    pub soak: Option<SoakLog>,
}

impl Session {
    pub fn new(options: AppOptions, mut prefs: Prefs) -> Self {
        // The command line wins over the remembered preset.
        prefs.preset = options.preset.clone();
        Self {
            base_config: options.config.clone(),
            prefs,
            frame_secs: egui::util::History::new(0..FRAME_WINDOW, f32::INFINITY),
            launched_at: Instant::now(),
            start_pressed: None,
            first_point_secs: None,
            autostart_pending: options.autostart,
            launch_weights: options.weights.clone(),
            show_loaded_weights: true,
            screenshot_requested: false,
            screenshot_done: Arc::new(std::sync::Mutex::new(None)),
            soak: None,
            options,
        }
    }

    /// The CPU time of the frame eframe just drew.
    pub fn record_frame(&mut self, cpu_secs: f32) {
        self.frame_secs
            .add(self.launched_at.elapsed().as_secs_f64(), cpu_secs);
    }

    /// Median and 95th percentile of the recent frames' CPU time, in ms.
    pub fn frame_time_ms(&self) -> Option<(f32, f32)> {
        if self.frame_secs.is_empty() {
            return None;
        }
        let mut sorted: Vec<f32> = self.frame_secs.values().collect();
        sorted.sort_by(f32::total_cmp);
        let at = |q: f32| sorted[((sorted.len() - 1) as f32 * q).round() as usize] * 1e3;
        Some((at(0.5), at(0.95)))
    }

    /// Frames recorded so far (the screenshot's report).
    pub fn frames(&self) -> usize {
        self.frame_secs.len()
    }

    /// A run is being started: its first point is timed from now.
    pub fn pressed_start(&mut self) {
        self.start_pressed = Some(Instant::now());
        self.first_point_secs = None;
    }

    /// The current run has `steps` points: the first one stops the Start clock.
    pub fn note_points(&mut self, steps: usize) {
        if self.first_point_secs.is_none() && steps > 0 {
            let since = self.start_pressed.unwrap_or(self.launched_at);
            self.first_point_secs = Some(since.elapsed().as_secs_f64());
        }
    }

    /// `--toggle-at` toggles due once the current run has `steps` steps.
    pub fn due_toggles(&mut self, steps: usize) -> Vec<Toggle> {
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.options.scripted_toggles)
            .into_iter()
            .partition(|(step, _)| steps > 0 && *step <= steps);
        self.options.scripted_toggles = later;
        due.into_iter().map(|(_, toggle)| toggle).collect()
    }
}
