//! `dinoscope ablate`: the paper's ablations (or a study file's) trained one after the other
//! under one study folder, then compared: `study.md`, `study.csv`, the Fig. 7 pair of every
//! variant and their attention masks side by side.

use super::output::{note, usage, Printer};
use super::{load_config, ConfigArgs};
use anyhow::{Context, Result};
use clap::Args;
use dinoscope::config::study::{paper_variants, parse_variant, StudySpec};
use dinoscope::device::{host_cpu_description, select_device};
use dinoscope::store::run::new_run_dir;
use dinoscope::train::engine::EngineEvent;
use dinoscope::train::study::Study;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Args)]
pub struct AblateArgs {
    /// The base config and device (as for `train`), unless --study names them.
    #[command(flatten)]
    common: ConfigArgs,
    /// A study file: base, steps and variants (e.g. configs/studies/paper-table7.toml), or
    /// the name of a built-in study (paper-table7, dinov2-recipe).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["config", "preset"])]
    study: Option<PathBuf>,
    /// Add a variant: NAME:KEY=VALUE,KEY=VALUE (repeatable), e.g.
    /// --variant warm-teacher:dino.teacher_temp=0.04, --variant sk:dino.centering=sinkhorn,
    /// --variant koleo:dino.koleo_weight=0.1
    #[arg(long, value_name = "NAME:KEY=VALUE,...")]
    variant: Vec<String>,
    /// Run only the --variant ones, not the paper's five (full, no-centering, no-sharpening,
    /// no-momentum, no-multicrop) or the study file's.
    #[arg(long)]
    only_given: bool,
    /// Steps per variant (default: the study's, else the base's epochs).
    #[arg(long, value_name = "N")]
    steps: Option<usize>,
    /// Study folder: one run directory per variant, study.md, study.csv and the figures
    /// [default: runs/<time>-<study name>].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Replace the study already in --out: the folders of the variants run again and the
    /// comparison files are removed first (without it such an --out is refused).
    #[arg(long)]
    force: bool,
}

/// Long: the study's life in order: resolve, train each arm with a progress line, write the
/// comparison, print the table.
pub fn run(args: AblateArgs) -> Result<()> {
    let mut spec = match &args.study {
        Some(path) => StudySpec::from_file_or_builtin(path)?,
        None => {
            let (_, label) = load_config(&args.common)?;
            let mut spec = StudySpec::paper(&label);
            // The base as given on the command line, whichever way.
            spec.preset = args.common.preset.clone();
            spec.config = args.common.config.clone();
            spec
        }
    };
    spec.set.extend(args.common.overrides.iter().cloned());
    if let Some(seed) = args.common.seed {
        spec.set.push(format!("seed={seed}"));
    }
    if args.only_given {
        spec.variants.clear();
    }
    for text in &args.variant {
        let variant =
            parse_variant(text).map_err(|err| usage(format!("--variant {text}: {err}")))?;
        spec.variants.push(variant);
    }
    if args.steps == Some(0) {
        return Err(usage("--steps must be at least 1"));
    }
    if args.steps.is_some() {
        spec.steps = args.steps;
    }
    if spec.variants.is_empty() {
        return Err(usage(format!(
            "no variants: give --variant NAME:KEY=VALUE, or drop --only-given for the paper's {}",
            paper_variants().len()
        )));
    }
    spec.check("the command line")
        .map_err(|err| usage(err.to_string()))?;
    // Every arm's config is checked before anything trains.
    spec.variant_configs()?;
    let selected = select_device(args.common.device)?;
    let machine = format!("{} · {}", selected.description, host_cpu_description());
    note(&format!("device: {}", selected.description));
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| new_run_dir(&PathBuf::from("runs"), &spec.name));
    let earlier = earlier_study(&dir, &spec);
    if !earlier.is_empty() {
        let listed = earlier
            .iter()
            .map(|p| {
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect::<Vec<_>>()
            .join(", ");
        if !args.force {
            return Err(usage(format!(
                "{} already holds a study ({listed}); give a new --out, or --force to replace those",
                dir.display()
            )));
        }
        for path in &earlier {
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(path)
            } else {
                std::fs::remove_file(path)
            };
            removed.with_context(|| format!("--force: cannot remove {}", path.display()))?;
        }
        note(&format!("--force: removed {listed} from {}", dir.display()));
    }
    let mut study = Study::new(spec, &dir, selected.device)?;
    note(&format!(
        "study {} · {} variants, one after the other · {}",
        study.spec.name,
        study.arms().len(),
        dir.display()
    ));
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .context("cannot install the signal handler")?;
    }
    let mut out = Printer::default();
    let count = study.arms().len();
    while let Some(index) = study.next_sequential() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        for event in study.start_arm(index)? {
            if let EngineEvent::StorageLost(message) = event {
                // Never an arm trained in memory and saved nowhere.
                anyhow::bail!("{message}; the study stopped before this variant's first step");
            }
            print_event(&event);
        }
        let arm = &study.arms()[index];
        let bar = ProgressBar::new(arm.total_steps.unwrap_or_default() as u64);
        bar.set_style(
            ProgressStyle::with_template("{prefix:>16} {bar:24.cyan/blue} {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(format!("{}/{count} {}", index + 1, arm.variant.name));
        while !study.arms()[index].is_done() {
            if stop.load(Ordering::SeqCst) {
                bar.abandon_with_message("stopped by a signal");
                break;
            }
            for event in study.step(index)? {
                match event {
                    EngineEvent::Metrics(row) => {
                        bar.set_position(row.step as u64 + 1);
                        bar.set_message(format!(
                            "h {:.3} · KL {:.3} · {}",
                            row.teacher_entropy,
                            row.kl,
                            row.regime.word()
                        ));
                    }
                    EngineEvent::StorageLost(message) => {
                        bar.abandon_with_message("run directory lost");
                        anyhow::bail!(
                            "{message}; the study stopped (nothing written before is damaged)"
                        );
                    }
                    other => bar.suspend(|| print_event(&other)),
                }
            }
        }
        bar.finish_and_clear();
        if let Some(outcome) = &study.arms()[index].outcome {
            let row = &outcome.row;
            out.line(&format!(
                "{}: h(Pt) {:.3} · KL {:.3} · k-NN {} · {} · {:.0} s",
                row.variant,
                row.final_teacher_entropy,
                row.final_kl,
                row.knn_top1
                    .map_or("–".to_string(), |top1| format!("{top1:.1} %")),
                row.regime.word(),
                row.secs
            ));
        }
    }
    if stop.load(Ordering::SeqCst) {
        // The interrupted arm keeps a checkpoint and its rows, as `train` does on a signal.
        for (index, events) in study.stop() {
            for event in &events {
                print_event(event);
            }
            let arm = &study.arms()[index];
            note(&format!(
                "{} stopped at step {}; its checkpoint is in {}: `dinoscope train --resume {}` finishes it",
                arm.variant.name,
                arm.steps_done,
                arm.run_dir.display(),
                arm.run_dir.display()
            ));
        }
    }
    let finished = study.rows().len();
    if finished == 0 {
        anyhow::bail!("stopped before any variant finished; nothing to compare");
    }
    let files = study.write_outputs(&machine)?;
    for skipped in &files.skipped {
        note(&format!("not written: {skipped}"));
    }
    let markdown =
        std::fs::read_to_string(dir.join(dinoscope::store::study::STUDY_MD)).unwrap_or_default();
    out.line("");
    for line in markdown.lines().filter(|line| line.starts_with('|')) {
        out.line(line);
    }
    out.line(&format!(
        "\nstudy: {} ({} files; the table is study.md)",
        dir.display(),
        files.written.len()
    ));
    if finished < count {
        anyhow::bail!(
            "stopped after {finished} of {count} variants; the comparison covers those (run again to redo the rest)"
        );
    }
    Ok(())
}

/// What an earlier study left in `dir` that this one would mix with or overwrite: the
/// comparison files and the run folders of the variants about to run.
fn earlier_study(dir: &std::path::Path, spec: &StudySpec) -> Vec<PathBuf> {
    use dinoscope::config::study::STUDY_OUTPUT_NAMES;
    let outputs = STUDY_OUTPUT_NAMES.iter().map(|name| dir.join(name));
    let arms = spec.variants.iter().map(|v| dir.join(&v.name));
    outputs.chain(arms).filter(|path| path.exists()).collect()
}

fn print_event(event: &EngineEvent) {
    if let EngineEvent::Warning(message) = event {
        note(&format!("warning: {message}"));
    }
}
