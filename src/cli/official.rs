//! `dinoscope official-command (--config FILE | --preset NAME | RUN_DIR)`: the `torchrun …
//! main_dino.py` job that trains the same run at scale on the official code, what it cannot
//! say, and the `dinoscope watch` line that follows it.

use super::config_from;
use super::output::{usage, Printer};
use anyhow::Result;
use clap::Args;
use dinoscope::config::official::{LaunchOptions, OfficialCommand};
use dinoscope::config::{Config, Toggle};
use dinoscope::store::report::toggles_in_rows;
use dinoscope::store::run::{read_step_metrics, METRICS_FILE};
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct OfficialArgs {
    /// A dinoscope run folder (its config.toml, and metrics.csv for the toggles it applied).
    #[arg(value_name = "RUN_DIR", conflicts_with_all = ["config", "preset"])]
    run_dir: Option<PathBuf>,
    /// TOML config file.
    #[arg(long, value_name = "FILE", conflicts_with = "preset")]
    config: Option<PathBuf>,
    /// Built-in preset (default: tiny).
    #[arg(long, value_name = "NAME")]
    preset: Option<String>,
    /// Override a key of the config, e.g. --set dino.teacher_temp=0.07 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// GPUs on the node (`--nproc_per_node`).
    #[arg(long, default_value_t = 8)]
    gpus: usize,
    /// Split the run's batch over the GPUs (same global batch and peak lr) instead of keeping
    /// the per-GPU batch (main_dino.py's habit: the peak lr grows with the global batch).
    #[arg(long)]
    keep_global_batch: bool,
    /// The job's `--output_dir` (the folder `dinoscope watch` follows).
    #[arg(long, value_name = "DIR", default_value = "./dino_output")]
    output_dir: String,
}

pub fn run(args: OfficialArgs) -> Result<()> {
    if args.gpus == 0 {
        return Err(usage("--gpus must be at least 1"));
    }
    let (config, label, changes) = match &args.run_dir {
        Some(dir) => {
            let (config, changes) = from_run_dir(dir)?;
            (config, dir.display().to_string(), changes)
        }
        None => {
            let (config, label) = config_from(&args.config, &args.preset)?;
            (config, label, Vec::new())
        }
    };
    let config = config.with_overrides(&args.overrides)?;
    let options = LaunchOptions {
        gpus: args.gpus,
        keep_global_batch: args.keep_global_batch,
        output_dir: args.output_dir.clone(),
    };
    let command = OfficialCommand::from_config(&config, &changes, &options);
    let mut out = Printer::default();
    for line in command.render(&label).lines() {
        out.line(line);
    }
    Ok(())
}

/// The config a run started with and the toggles it applied: `config.toml` holds the live
/// settings as they ended, `metrics.csv` each step's centering, sharpening and local crops.
fn from_run_dir(dir: &Path) -> Result<(Config, Vec<(usize, Toggle)>)> {
    let file = dir.join(dinoscope::store::run::CONFIG_FILE);
    if !file.is_file() {
        return Err(usage(format!(
            "{} has no config.toml: give a dinoscope run folder (runs/<time>-<preset>), or --config FILE / --preset NAME",
            dir.display()
        )));
    }
    let mut config = Config::from_file(&file)?;
    let rows = if dir.join(METRICS_FILE).is_file() {
        read_step_metrics(&dir.join(METRICS_FILE)).unwrap_or_default()
    } else {
        Vec::new()
    };
    let changes = toggles_in_rows(&rows);
    if let Some(first) = rows.first() {
        config.dino.centering = first.centering_mode();
        config.dino.sharpening = first.sharpening;
        config.dino.local_crops_number = first.local_crops;
    }
    Ok((config, changes))
}
