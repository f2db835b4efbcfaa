//! Following a dinoscope run folder another process writes (`dinoscope train` in a terminal or
//! over ssh): its `metrics.csv` and `knn.csv` rows, as they are flushed, become the events of
//! one run, so the app plots and diagnoses it as if it trained here. Torn last lines wait for
//! their newline (`store::tail`).

use super::{Event, RunId, WorkerStatus};
use crate::config::Config;
use crate::store::rows::{EvalRow, MetricsRow};
use crate::store::run::{CONFIG_FILE, EVAL_FILE, METRICS_FILE};
use crate::store::tail::CsvTail;
use crate::train::engine::RunStart;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often the files are looked at: they are local and cheap to read.
pub const FOLLOW_POLL: Duration = Duration::from_secs(1);

/// Whether `dir` is a dinoscope run folder (its config is written before any row).
pub fn is_dinoscope_run(dir: &Path) -> bool {
    dir.join(CONFIG_FILE).is_file()
}

/// Long: the thread's life: the config, then the rows as they come, until stopped.
pub(super) fn follow_run_folder(
    run_id: RunId,
    dir: &Path,
    send: impl Fn(Event),
    stop: &AtomicBool,
) {
    let config_path = dir.join(CONFIG_FILE);
    let config = match Config::from_file(&config_path) {
        Ok(config) => config,
        Err(err) => {
            send(Event::Error(format!(
                "cannot follow {}: {err}",
                dir.display()
            )));
            send(Event::Status {
                run_id: Some(run_id),
                status: WorkerStatus::Failed,
            });
            return;
        }
    };
    // Until a row of epoch 1 says otherwise: the embedded data's batches per epoch.
    let mut iters_per_epoch =
        (config.data.num_images / config.optim.batch_size_per_gpu.max(1)).max(1);
    let started = |iters_per_epoch: usize| {
        Event::started(
            run_id,
            RunStart {
                device: "followed".into(),
                dataset: format!("dinoscope run {}", dir.display()),
                total_steps: config.optim.epochs * iters_per_epoch,
                iters_per_epoch,
                shape: crate::analysis::health::RunShape::of_config(&config),
            },
        )
    };
    send(started(iters_per_epoch));
    send(Event::Status {
        run_id: Some(run_id),
        status: WorkerStatus::Running,
    });
    let mut metrics = CsvTail::new(&dir.join(METRICS_FILE));
    let mut knn = CsvTail::new(&dir.join(EVAL_FILE));
    let mut evals: Vec<EvalRow> = Vec::new();
    // (step, epoch) of the last row sent.
    let mut last_row: Option<(usize, usize)> = None;
    while !stop.load(Ordering::SeqCst) {
        for row in metrics.poll::<MetricsRow>() {
            // A resumed run appends from its checkpoint: rows it repeats are not new.
            if last_row.is_some_and(|(step, _)| row.step <= step) {
                continue;
            }
            // The first row of a new epoch right after the last of the previous one gives
            // the batches per epoch (epoch = step / batches).
            let first_of_epoch = last_row
                .is_some_and(|(step, epoch)| row.step == step + 1 && row.epoch == epoch + 1);
            if first_of_epoch && row.step / row.epoch != iters_per_epoch {
                iters_per_epoch = row.step / row.epoch;
                send(started(iters_per_epoch));
            }
            last_row = Some((row.step, row.epoch));
            send(Event::Metrics {
                run_id,
                metrics: Box::new(row),
            });
        }
        let new_evals: Vec<EvalRow> = knn.poll();
        if !new_evals.is_empty() {
            evals.extend(new_evals);
            send(Event::EvalHistory {
                run_id,
                rows: evals.clone(),
            });
        }
        crate::train::watch_engine::sleep_unless_stopped(FOLLOW_POLL, stop);
    }
    send(Event::Status {
        run_id: Some(run_id),
        status: WorkerStatus::Finished,
    });
}
