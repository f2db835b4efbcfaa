//! `dinoscope train`: a progress bar around the library's `Engine`.

use super::output::{note, usage, Printer};
use super::{load_config, parse_toggles, ConfigArgs};
use anyhow::{bail, Context, Result};
use clap::Args;
use dinoscope::analysis::health::{findings, Regime};
use dinoscope::config::Toggle;
use dinoscope::device::select_device;
use dinoscope::store::rows::{EvalRow, MetricsRow};
use dinoscope::store::run::{new_run_dir, METRICS_FILE};
use dinoscope::train::engine::{CheckpointPolicy, Engine, EngineEvent};
use dinoscope::train::TrainError;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    common: ConfigArgs,
    /// Number of iterations (the schedules span exactly this many).
    #[arg(long, conflicts_with = "epochs")]
    steps: Option<usize>,
    /// Number of epochs (overrides optim.epochs).
    #[arg(long)]
    epochs: Option<usize>,
    /// Run directory (default: runs/<time>-<preset>).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// No progress bar; print one summary line every N steps instead (0 = never).
    #[arg(long, value_name = "N")]
    log_every: Option<usize>,
    /// Apply a toggle before a step, e.g. --toggle-at 60:centering=off, 60:centering=sinkhorn,
    /// 60:koleo=0.1 (repeatable; the centering_mode/sharpening/local_crops/teacher_temp/
    /// koleo_weight columns of metrics.csv show the effect).
    #[arg(long, value_name = "STEP:KEY=VALUE")]
    toggle_at: Vec<String>,
    /// Write a checkpoint every N steps (0 = only at the end and on Ctrl-C) [default: 0, or
    /// the resumed run's own].
    #[arg(long, value_name = "N")]
    checkpoint_every: Option<usize>,
    /// Checkpoints kept (the oldest are deleted) [default: 3, or the resumed run's own].
    #[arg(long, value_name = "M")]
    keep_last: Option<usize>,
    /// Continue a run from its newest checkpoint (a run directory or one checkpoint-<step>/
    /// inside it); config, schedules and data come from the checkpoint.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["config", "preset", "overrides", "seed", "epochs", "steps", "out"])]
    resume: Option<PathBuf>,
    /// Write no TensorBoard events (default: every row, toggle and regime change also goes
    /// to DIR/tb/events.out.tfevents.*).
    #[arg(long)]
    no_tensorboard: bool,
}

pub fn run(args: TrainArgs) -> Result<()> {
    // Syntax and ranges of every toggle before anything is built or written.
    let toggles = parse_toggles(&args.toggle_at)?;
    let (mut engine, events) = if let Some(path) = &args.resume {
        let selected = select_device(args.common.device)?;
        note(&format!("device: {}", selected.description));
        let (engine, resumed, events) =
            Engine::resume(path, selected.device).with_context(|| {
                format!(
                    "cannot resume from {}{}",
                    path.display(),
                    older_checkpoints(path)
                )
            })?;
        note(&format!(
            "resuming {} at step {} of {}",
            resumed.checkpoint.display(),
            resumed.first_step,
            engine.trainer().total_steps()
        ));
        (engine, events)
    } else {
        let (mut config, label) = load_config(&args.common)?;
        if let Some(epochs) = args.epochs {
            if epochs == 0 {
                return Err(usage("--epochs must be at least 1"));
            }
            config.optim.epochs = epochs;
            config.optim.warmup_epochs = config.optim.warmup_epochs.min(epochs);
            config.optim.freeze_last_layer = config.optim.freeze_last_layer.min(epochs);
        }
        if args.steps == Some(0) {
            return Err(usage("--steps must be at least 1"));
        }
        let selected = select_device(args.common.device)?;
        note(&format!("device: {}", selected.description));
        let out_dir = args
            .out
            .clone()
            .unwrap_or_else(|| new_run_dir(&PathBuf::from("runs"), &label));
        let (engine, events) = Engine::start(config, selected.device, args.steps, Some(&out_dir))
            .context("cannot start training")?;
        if engine.run_dir().is_none() {
            let why = events.iter().find_map(|e| match e {
                EngineEvent::StorageLost(message) | EngineEvent::Warning(message) => {
                    Some(message.clone())
                }
                _ => None,
            });
            bail!(
                "{}",
                why.unwrap_or_else(|| format!("cannot create {}", out_dir.display()))
            );
        }
        (engine, events)
    };
    engine.set_tensorboard(!args.no_tensorboard);
    run_engine(&args, engine, toggles, events)
}

/// Where the loop keeps what it prints.
struct Reporter {
    progress: ProgressBar,
    out: Printer,
    log_every: Option<usize>,
    smoothed_rate: Option<f64>,
    last: Option<MetricsRow>,
    /// The regime last logged and the newest effective-rank reading.
    regime: Regime,
    rank: Option<f64>,
    /// Why the run directory can no longer be written, once it cannot.
    storage_lost: Option<String>,
}

/// Long: the whole life of a CLI run in order: announce, script, signals, the step loop, the final
/// save and the summary.
fn run_engine(
    args: &TrainArgs,
    mut engine: Engine,
    toggles: Vec<(usize, Toggle)>,
    events: Vec<EngineEvent>,
) -> Result<()> {
    let trainer = engine.trainer();
    let total = trainer.total_steps();
    note(&format!(
        "data: {} · {} steps ({} per epoch) · K = {} (ln K = {:.3}) · run dir {}",
        trainer.dataset_description(),
        total,
        trainer.iters_per_epoch(),
        trainer.config().dino.out_dim,
        trainer.ln_k(),
        engine
            .run_dir()
            .map(|dir| dir.display().to_string())
            .unwrap_or_default()
    ));
    engine.script(toggles)?;
    // Tests and demos: fail this way at that step (RELIABILITY.md).
    let fault = dinoscope::train::guard::Fault::from_env().map_err(anyhow::Error::msg)?;
    engine.inject_fault(fault);
    // A resumed run keeps the policy it was started with unless told otherwise.
    let policy = engine.checkpoint_policy();
    engine.set_checkpoint_policy(CheckpointPolicy {
        every_steps: args.checkpoint_every.unwrap_or(policy.every_steps),
        keep_last: args.keep_last.unwrap_or(policy.keep_last),
    });
    // SIGINT, SIGTERM and SIGHUP (ctrlc's `termination` feature) all end the run as closing
    // the window does: the step in flight finishes and a checkpoint is written.
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .context("cannot install the signal handler")?;
    }
    let progress = match args.log_every {
        Some(_) => ProgressBar::hidden(),
        None => {
            let bar = ProgressBar::new(total as u64);
            bar.set_position(engine.trainer().steps_done() as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30.cyan/blue} {pos}/{len} [{elapsed_precise} < {eta_precise}] {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        }
    };
    let mut reporter = Reporter {
        progress,
        out: Printer::default(),
        log_every: args.log_every,
        smoothed_rate: None,
        last: None,
        regime: Regime::WarmingUp,
        rank: None,
        storage_lost: None,
    };
    reporter.report(&engine, events);
    let mut failure = None;
    while !engine.is_done() {
        if stop.load(Ordering::SeqCst) {
            reporter
                .progress
                .abandon_with_message("stopped by a signal");
            break;
        }
        match engine.step() {
            Ok(events) => reporter.report(&engine, events),
            Err(err) => {
                failure = Some(err);
                break;
            }
        }
        if reporter.storage_lost.is_some() {
            // Training on would only lose more: stop, naming the path.
            reporter.progress.abandon_with_message("run directory lost");
            break;
        }
    }
    if failure.is_none() {
        reporter.progress.finish();
    }
    // At the end and on a signal: a checkpoint to resume from (or to evaluate), teacher.bpk
    // and the config with the live settings folded in. After a non-finite step too: the guard
    // discarded it, so the state is the last good one. Not after other failures.
    let ln_k = engine.trainer().ln_k();
    let non_finite_at = match &failure {
        Some(TrainError::NonFinite { step, .. }) => Some(*step),
        _ => None,
    };
    let (finished, events) = engine.finish(failure.is_none() || non_finite_at.is_some());
    reporter.report_quietly(events);
    if let Some(err) = failure {
        if let (Some(step), Some(checkpoint)) = (non_finite_at, &finished.checkpoint) {
            note(&format!(
                "the last good state is saved in {}; continue with a lower lr: dinoscope train --resume {} --toggle-at {step}:lr_scale=0.5",
                checkpoint.display(),
                finished
                    .run_dir
                    .as_deref()
                    .unwrap_or(checkpoint.as_path())
                    .display()
            ));
        }
        return Err(err.into());
    }
    if let Some(message) = reporter.storage_lost {
        bail!("{message}; training stopped (nothing written before is damaged)");
    }
    if let Some(m) = reporter.last.take() {
        reporter.out.line(&format!(
            "done: {} steps · loss {:.4} = h(Pt) {:.4} + KL {:.4} · h(mean Pt) {:.4} · I {:.4} · ln K {:.4}",
            m.step + 1,
            m.loss,
            m.teacher_entropy,
            m.kl,
            m.batch_mean_entropy,
            m.teacher_mi(),
            ln_k
        ));
    }
    if let Some(dir) = &finished.run_dir {
        let metrics = dir.join(METRICS_FILE);
        reporter
            .out
            .line(&format!("metrics: {}", metrics.display()));
    }
    if let Some(teacher) = &finished.teacher {
        reporter
            .out
            .line(&format!("teacher: {}", teacher.display()));
    }
    Ok(())
}

impl Reporter {
    /// Markers, warnings, checkpoints and evaluations go to stderr; the summary line to stdout
    /// every `--log-every` steps.
    fn report(&mut self, engine: &Engine, events: Vec<EngineEvent>) {
        for event in events {
            if let EngineEvent::Metrics(metrics) = event {
                let rate = match self.smoothed_rate {
                    Some(r) => 0.9 * r + 0.1 * metrics.images_per_sec,
                    None => metrics.images_per_sec,
                };
                self.smoothed_rate = Some(rate);
                self.rank = metrics.effective_rank.or(self.rank);
                if metrics.regime != self.regime {
                    let text = regime_change(engine, self.regime, &metrics);
                    self.progress.suspend(|| note(&text));
                    self.regime = metrics.regime;
                }
                let summary = summary_line(&metrics, rate, self.rank);
                self.progress
                    .set_position(engine.trainer().steps_done() as u64);
                self.progress.set_message(summary.clone());
                if let Some(every) = self.log_every {
                    if every > 0 && (metrics.step + 1) % every == 0 {
                        self.out
                            .line(&format!("step {:>6}  {summary}", metrics.step + 1));
                    }
                }
                self.last = Some(*metrics);
            } else if let EngineEvent::StorageLost(message) = event {
                self.storage_lost = Some(message);
            } else if let Some(text) = describe(&event) {
                self.progress.suspend(|| note(&text));
            }
        }
    }

    /// Events after the progress bar has finished.
    fn report_quietly(&self, events: Vec<EngineEvent>) {
        for text in events.iter().filter_map(describe) {
            note(&text);
        }
    }
}

/// The stderr line of an event (metrics have their own summary line).
fn describe(event: &EngineEvent) -> Option<String> {
    Some(match event {
        EngineEvent::Marker { step, toggle } => format!("step {step}: {}", toggle.label()),
        EngineEvent::Warning(message) => format!("warning: {message}"),
        EngineEvent::StorageLost(message) => format!("error: {message}"),
        EngineEvent::CheckpointSaved { path, elapsed_secs } => format!(
            "checkpoint: {} ({:.0} ms)",
            path.display(),
            elapsed_secs * 1e3
        ),
        EngineEvent::Eval(evaluation) => {
            let row = &evaluation.row;
            let when = if row.step == 0 {
                "random init".to_string()
            } else {
                format!("epoch {}", row.epoch)
            };
            format!("{when}: {}", eval_line(row))
        }
        EngineEvent::Metrics(_) => return None,
    })
}

/// The log line of a regime change: the words of the `regime` column, what the new one means
/// and, for a collapse, the causes the settings point to with their fixes.
fn regime_change(engine: &Engine, from: Regime, row: &MetricsRow) -> String {
    let to = row.regime;
    let mut text = format!(
        "step {}: regime {} → {} ({})",
        row.step,
        from.word(),
        to.word(),
        to.label()
    );
    if to.is_collapse() {
        let recent = engine.recent_loss();
        text.push_str(&format!(": {}", to.explain(&recent)));
        for finding in findings(&recent) {
            text.push_str(&format!("\n  {finding}"));
        }
    }
    text
}

fn eval_line(row: &EvalRow) -> String {
    let percent = |v: Option<f64>| v.map(|v| format!("{v:.1} %")).unwrap_or("–".into());
    let student = row
        .student_top1
        .map(|v| format!(" (student {v:.1} %)"))
        .unwrap_or_default();
    format!(
        "k-NN top-1 {}{student} top-5 {}{} ({:.1} s)",
        percent(row.top1),
        percent(row.top5),
        row.jaccard_best_head
            .map(|j| format!(" · Jaccard {j:.1} %"))
            .unwrap_or_default(),
        row.eval_secs.unwrap_or_default()
    )
}

fn summary_line(m: &MetricsRow, images_per_sec: f64, rank: Option<f64>) -> String {
    let rank = rank.map(|r| format!(" · rank {r:.1}")).unwrap_or_default();
    format!(
        "loss {:.3} h {:.3} KL {:.3} h̄ {:.3} I {:.3}{rank} · {} · lr {:.2e} · {:.0} img/s",
        m.loss,
        m.teacher_entropy,
        m.kl,
        m.batch_mean_entropy,
        m.teacher_mi(),
        m.regime.word(),
        m.lr,
        images_per_sec
    )
}

/// When the newest checkpoint of a run cannot be loaded: the older ones to try instead.
fn older_checkpoints(path: &std::path::Path) -> String {
    use dinoscope::store::checkpoint::{list_checkpoints, resolve_checkpoint};
    let run_dir = if list_checkpoints(path).is_empty() {
        path.parent().unwrap_or(path)
    } else {
        path
    };
    let failed = resolve_checkpoint(path).ok();
    let older: Vec<String> = list_checkpoints(run_dir)
        .into_iter()
        .rev()
        .filter(|(_, dir)| Some(dir) != failed.as_ref())
        .map(|(_, dir)| dir.display().to_string())
        .collect();
    match older.first() {
        Some(newest) => format!(
            " (older checkpoints of this run: {}; try `dinoscope train --resume {newest}`)",
            older.join(", ")
        ),
        None => String::new(),
    }
}
