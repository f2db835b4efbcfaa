//! The `dinoscope` command line: clap types and one file per subcommand. Each is a thin user
//! of the library (`train` drives the `Engine`, as the app's worker does).

mod ablate;
mod app;
mod attention;
mod attention_layers;
mod bench;
mod bench_matmul;
mod knn;
mod official;
mod output;
mod plot;
mod report;
mod train;
mod watch;

use output::usage;
pub use output::{error_line, exit_code};

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use dinoscope::config::{Config, Toggle};
use dinoscope::device::DeviceChoice;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "dinoscope",
    version,
    about = "Train DINO self-distillation, watch collapse happen, see what the network looks at"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    app: app::AppArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Train headless; writes DIR/config.toml and DIR/metrics.csv (one row per step).
    Train(train::TrainArgs),
    /// Time training steps of a preset (warm-up excluded) and the data loader on its own.
    Bench(bench::BenchArgs),
    /// Per-head CLS attention of the last block of a trained teacher on an image: heat maps,
    /// top-mass masks and overlays (PNG), attention.npy and masks.npy.
    Attention(attention::AttentionArgs),
    /// Weighted k-NN accuracy (and attention-mask Jaccard where masks exist) of saved weights
    /// on the labelled splits of a config's data, next to the same network at random init.
    Knn(knn::KnnArgs),
    /// An ablation study: the paper's variants (full, no-centering, no-sharpening,
    /// no-momentum, no-multicrop) or a study file's, same seed and steps, then compared in
    /// study.md/study.csv with the Fig. 7 pair and each variant's attention masks.
    Ablate(ablate::AblateArgs),
    /// Follow a run another process trains (main_dino.py's output folder): each new checkpoint
    /// evaluated on a fixed probe batch (loss, h(Pt), KL, h(mean Pt)) into a dinoscope run folder.
    Watch(watch::WatchArgs),
    /// Paper-quality figures of saved runs (PNG or SVG): the Fig. 7 pair, the loss, the k-NN.
    Plot(plot::PlotArgs),
    /// The `torchrun … main_dino.py` job that trains the same run at scale on the official
    /// code, the settings it has no flag for, and the `dinoscope watch` line that follows it.
    #[command(name = "official-command")]
    Official(official::OfficialArgs),
    /// One self-contained HTML report of runs (config, decomposition with toggles and regimes,
    /// diagnosis, representation, k-NN, attention over training, side-by-side table).
    Report(report::ReportArgs),
}

#[derive(Args, Clone)]
pub struct ConfigArgs {
    /// TOML config file (default: the built-in tiny preset).
    #[arg(long, value_name = "FILE", conflicts_with = "preset")]
    pub config: Option<PathBuf>,
    /// Built-in preset: tiny, collapse-no-centering, collapse-no-sharpening,
    /// collapse-dimensional, vit-s16-paper, cifar10, stl10.
    #[arg(long, value_name = "NAME")]
    pub preset: Option<String>,
    /// Override a key, e.g. --set dino.teacher_temp=0.07 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Random seed (weights, data order, augmentation, stochastic depth).
    #[arg(long)]
    pub seed: Option<u64>,
    /// auto = wgpu on a hardware GPU, else the CPU backend.
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
}

/// Parses the command line and runs it.
pub fn run() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Train(args)) => train::run(args),
        Some(Command::Bench(args)) => bench::run(args),
        Some(Command::Attention(args)) => attention::run(args),
        Some(Command::Knn(args)) => knn::run(args),
        Some(Command::Plot(args)) => plot::run(args),
        Some(Command::Ablate(args)) => ablate::run(args),
        Some(Command::Watch(args)) => watch::run(args),
        Some(Command::Official(args)) => official::run(args),
        Some(Command::Report(args)) => report::run(args),
        None => app::run(cli.app),
    }
}

pub fn parse_toggles(specs: &[String]) -> Result<Vec<(usize, Toggle)>> {
    specs
        .iter()
        .map(|spec| {
            let (step, toggle) = spec.split_once(':').ok_or_else(|| {
                usage(format!(
                    "--toggle-at {spec}: expected STEP:KEY=VALUE, e.g. 60:centering=off"
                ))
            })?;
            let step: usize = step
                .parse()
                .map_err(|_| usage(format!("--toggle-at {spec}: `{step}` is not a step number")))?;
            let toggle = toggle
                .parse()
                .map_err(|err: String| usage(format!("--toggle-at {spec}: {err}")))?;
            Ok((step, toggle))
        })
        .collect()
}

/// Loads the config named on the command line and applies overrides; returns it with a label.
/// The config named by `--config FILE` or `--preset NAME` (default: tiny), with a label:
/// the file stem or the preset name.
pub fn config_from(file: &Option<PathBuf>, preset: &Option<String>) -> Result<(Config, String)> {
    Ok(match (file, preset) {
        (Some(path), _) => (
            Config::from_file(path)?,
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "config".into()),
        ),
        (None, Some(name)) => (Config::preset(name)?, name.clone()),
        (None, None) => (Config::preset("tiny")?, "tiny".to_string()),
    })
}

pub fn load_config(args: &ConfigArgs) -> Result<(Config, String)> {
    let (mut config, label) = config_from(&args.config, &args.preset)?;
    config = config.with_overrides(&args.overrides)?;
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    Ok((config, label))
}
