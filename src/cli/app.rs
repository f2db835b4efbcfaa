//! No subcommand: the desktop app.

use super::{config_from, parse_toggles};
use anyhow::{Context, Result};
use clap::Args;
use dinoscope::device::DeviceChoice;
use std::path::PathBuf;

/// With no subcommand, dinoscope opens the desktop app.
#[derive(Args)]
pub struct AppArgs {
    /// TOML config for the app's runs (default: the tiny preset).
    #[arg(long, value_name = "FILE", conflicts_with = "preset")]
    config: Option<PathBuf>,
    /// Built-in preset to start with.
    #[arg(long, value_name = "NAME")]
    preset: Option<String>,
    /// Start training as soon as the window opens.
    #[arg(long)]
    autostart: bool,
    /// Render the real app after --after-steps training steps, write this PNG and exit.
    #[arg(long, value_name = "PNG", requires = "after_steps")]
    screenshot_to: Option<PathBuf>,
    /// Steps to train before --screenshot-to captures the window.
    #[arg(long, value_name = "N")]
    after_steps: Option<usize>,
    /// Training device when no hardware GPU is shared with the UI.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceChoice,
    /// Apply a toggle when the run reaches a step, e.g. --toggle-at 60:centering=off
    /// (repeatable; for scripted demos and screenshots).
    #[arg(long, value_name = "STEP:KEY=VALUE")]
    toggle_at: Vec<String>,
    /// Where the app writes its runs.
    #[arg(long, value_name = "DIR", default_value = "runs")]
    runs_dir: PathBuf,
    /// Load weights into the attention view at launch (.pth, .safetensors, run directory).
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
    /// Follow this image in the attention view (repeatable).
    #[arg(long, value_name = "FILE")]
    image: Vec<PathBuf>,
    /// Open on the attention view.
    #[arg(long)]
    attention: bool,
    /// Short side in pixels of the images the attention view feeds the network.
    #[arg(long, value_name = "N")]
    attention_size: Option<u32>,
    /// Start an ablation study at launch: a study file or a built-in one (paper-table7),
    /// shown on the Ablation study tab.
    #[arg(long, value_name = "FILE | NAME")]
    study: Option<PathBuf>,
    /// Follow a run folder another process trains from launch: main_dino.py's --output_dir
    /// (each checkpoint evaluated, with the settings in its pickled args) or a dinoscope run
    /// folder a `dinoscope train` elsewhere writes (its rows as they are flushed).
    #[arg(long, value_name = "DIR")]
    watch: Option<PathBuf>,
    /// Append what could grow in a long session (memory, frame time, queues, caches) to this
    /// CSV every 10 s: the soak RELIABILITY.md reports (`dinoscope plot --soak FILE`).
    #[arg(long, value_name = "FILE")]
    soak_log: Option<PathBuf>,
}

pub fn run(args: AppArgs) -> Result<()> {
    let (config, label) = config_from(&args.config, &args.preset)?;
    // A config file is not one of the presets the app's picker lists.
    let preset = if args.config.is_some() {
        "custom".to_string()
    } else {
        label
    };
    let screenshot = match (args.screenshot_to, args.after_steps) {
        (Some(path), Some(after_steps)) => {
            Some(dinoscope::app::ScreenshotRequest { path, after_steps })
        }
        _ => None,
    };
    let scripted_toggles = parse_toggles(&args.toggle_at)?;
    let study = args
        .study
        .as_deref()
        .map(dinoscope::config::study::StudySpec::from_file_or_builtin)
        .transpose()?;
    if let Some(spec) = &study {
        // Every arm's config is checked before the window opens.
        spec.variant_configs()?;
    }
    let options = dinoscope::app::AppOptions {
        scripted_toggles,
        config,
        preset,
        // A screenshot of training needs training to happen.
        autostart: args.autostart
            || study.is_some()
            || screenshot.as_ref().is_some_and(|s| s.after_steps > 0),
        open_attention: args.attention || args.weights.is_some(),
        weights: args.weights,
        images: args.image,
        attention_short_side_px: args.attention_size,
        device: args.device,
        runs_root: Some(args.runs_dir),
        screenshot,
        study,
        watch: args.watch,
        soak_log: args.soak_log,
        close_request: dinoscope::app::CloseRequest::default(),
    };
    // SIGINT, SIGTERM and SIGHUP (ctrlc's `termination` feature: a logout, `kill`, Ctrl-C in
    // the terminal) close the window as its close button does: the step in flight finishes
    // and the run's checkpoint is written before the process ends.
    let close = options.close_request.clone();
    ctrlc::set_handler(move || {
        if !close.is_requested() {
            eprintln!("dinoscope: signal received; finishing the step in flight, saving a checkpoint, then closing");
        }
        close.request();
    })
    .context("cannot install the signal handler")?;
    dinoscope::app::run(options).map_err(|err| anyhow::anyhow!("cannot open the window: {err}"))
}
