//! The worker thread without any UI: commands apply at the next step, pause stops metrics,
//! stop/shutdown join, failures become error events.

use dinoscope::config::Config;
use dinoscope::config::{CenteringMode, Toggle};
use dinoscope::device::DeviceChoice;
use dinoscope::worker::{Command, Event, WorkerHandle, WorkerStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn micro_config() -> Config {
    let mut config = Config::preset("tiny").unwrap();
    config.model.embed_dim = Some(16);
    config.model.depth = Some(1);
    config.model.num_heads = Some(2);
    config.dino.out_dim = 32;
    config.dino.hidden_dim = 32;
    config.dino.bottleneck_dim = 16;
    config.dino.local_crops_number = 1;
    config.data.image_size = 32;
    config.data.global_crop_size = 16;
    config.data.local_crop_size = 8;
    config.data.num_images = 64;
    config.optim.batch_size_per_gpu = 8;
    config
}

fn spawn() -> WorkerHandle {
    WorkerHandle::spawn(DeviceChoice::Cpu, Arc::new(|| {})).unwrap()
}

fn start(worker: &WorkerHandle, run_id: u64, paused: bool) {
    worker
        .send(Command::Start {
            run_id,
            config: Box::new(micro_config()),
            run_dir: None,
            total_steps: Some(10_000),
            paused,
        })
        .unwrap();
}

/// Collects events until `done` says so (or 60 s pass).
fn until(worker: &WorkerHandle, mut done: impl FnMut(&Event) -> bool) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut events = Vec::new();
    while Instant::now() < deadline {
        if let Some(event) = worker.recv_timeout(Duration::from_millis(100)) {
            let stop = done(&event);
            events.push(event);
            if stop {
                return events;
            }
        }
    }
    panic!("timed out; got {events:?}");
}

fn metrics_step(event: &Event) -> Option<usize> {
    match event {
        Event::Metrics { metrics, .. } => Some(metrics.step),
        _ => None,
    }
}

#[test]
fn a_toggle_applies_at_the_next_step_with_a_marker() {
    let worker = spawn();
    start(&worker, 1, true);
    until(&worker, |e| {
        matches!(
            e,
            Event::Status {
                status: WorkerStatus::Paused,
                ..
            }
        )
    });
    worker.send(Command::Step).unwrap();
    until(&worker, |e| metrics_step(e) == Some(0));
    worker
        .send(Command::Set(Toggle::Centering(CenteringMode::Off)))
        .unwrap();
    worker.send(Command::Step).unwrap();
    let events = until(&worker, |e| metrics_step(e) == Some(1));
    let marker = events.iter().find_map(|e| match e {
        Event::Marker { step, label, .. } => Some((*step, label.clone())),
        _ => None,
    });
    assert_eq!(marker, Some((1, "centering off".to_string())));
    let centering = events.iter().find_map(|e| match e {
        Event::Metrics { metrics, .. } => Some(metrics.centering),
        _ => None,
    });
    assert_eq!(centering, Some(false));
}

#[test]
fn pause_stops_metrics_and_resume_restarts_them() {
    let worker = spawn();
    start(&worker, 1, false);
    until(&worker, |e| metrics_step(e) == Some(2));
    worker.send(Command::Pause).unwrap();
    until(&worker, |e| {
        matches!(
            e,
            Event::Status {
                status: WorkerStatus::Paused,
                ..
            }
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut after_pause = 0;
    while let Some(event) = worker.try_recv() {
        after_pause += usize::from(metrics_step(&event).is_some());
    }
    assert_eq!(after_pause, 0, "no metrics while paused");
    worker.send(Command::Resume).unwrap();
    until(&worker, |e| metrics_step(e).is_some());
}

#[test]
fn stop_and_drop_join_the_thread_quickly() {
    let mut worker = spawn();
    start(&worker, 1, false);
    until(&worker, |e| metrics_step(e).is_some());
    worker.send(Command::Stop).unwrap();
    until(&worker, |e| {
        matches!(
            e,
            Event::Status {
                status: WorkerStatus::Finished,
                ..
            }
        )
    });
    let started = Instant::now();
    worker.shutdown();
    assert!(started.elapsed() < Duration::from_secs(5));
    // A second worker, dropped mid-run without a Stop, joins too (no thread leak, no hang).
    let worker = spawn();
    start(&worker, 2, false);
    until(&worker, |e| metrics_step(e).is_some());
    let started = Instant::now();
    drop(worker);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_failing_start_is_an_error_event_and_the_worker_lives_on() {
    let worker = spawn();
    let mut bad = micro_config();
    bad.data.source = dinoscope::config::DataSource::Folder;
    bad.data.path = "/no/such/images".into();
    worker
        .send(Command::Start {
            run_id: 1,
            config: Box::new(bad),
            run_dir: None,
            total_steps: None,
            paused: false,
        })
        .unwrap();
    let events = until(&worker, |e| {
        matches!(
            e,
            Event::Status {
                status: WorkerStatus::Failed,
                ..
            }
        )
    });
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Error(text) if text.contains("/no/such/images"))));
    start(&worker, 2, false);
    until(&worker, |e| metrics_step(e).is_some());
}

#[test]
fn a_bad_toggle_is_an_error_event_and_training_goes_on() {
    let worker = spawn();
    start(&worker, 1, false);
    until(&worker, |e| metrics_step(e).is_some());
    worker.send(Command::Set(Toggle::TeacherTemp(7.0))).unwrap();
    until(
        &worker,
        |e| matches!(e, Event::Error(text) if text.contains("teacher temperature")),
    );
    until(&worker, |e| metrics_step(e).is_some());
}

#[test]
fn checkpoints_from_the_worker_and_resume_with_history() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let worker = spawn();
    worker
        .send(Command::SetCheckpointing {
            every_steps: 2,
            keep_last: 2,
        })
        .unwrap();
    worker
        .send(Command::Start {
            run_id: 1,
            config: Box::new(micro_config()),
            run_dir: Some(run_dir.clone()),
            total_steps: Some(10_000),
            paused: true,
        })
        .unwrap();
    for step in 0..5 {
        worker.send(Command::Step).unwrap();
        until(&worker, |e| metrics_step(e) == Some(step));
    }
    // Periodic ones were written after steps 2 and 4; this one on demand.
    worker.send(Command::SaveCheckpoint).unwrap();
    until(
        &worker,
        |e| matches!(e, Event::CheckpointSaved { path, .. } if path.ends_with("checkpoint-00000005")),
    );
    worker.send(Command::Stop).unwrap();
    until(&worker, |e| {
        matches!(
            e,
            Event::Status {
                status: WorkerStatus::Finished,
                ..
            }
        )
    });
    let kept: Vec<usize> = dinoscope::store::checkpoint::list_checkpoints(&run_dir)
        .iter()
        .map(|(step, _)| *step)
        .collect();
    assert_eq!(kept, vec![4, 5], "keep_last 2");

    worker
        .send(Command::ResumeFrom {
            run_id: 2,
            path: run_dir.clone(),
            paused: false,
        })
        .unwrap();
    let events = until(&worker, |e| metrics_step(e) == Some(6));
    let (first_step, history) = events
        .iter()
        .find_map(|e| match e {
            Event::Resumed {
                first_step,
                history,
                ..
            } => Some((*first_step, history.len())),
            _ => None,
        })
        .unwrap();
    assert_eq!((first_step, history), (5, 5));
    assert!(events.iter().any(|e| metrics_step(e) == Some(5)));

    // A folder without checkpoints: an error event, and the worker lives on.
    worker
        .send(Command::ResumeFrom {
            run_id: 3,
            path: dir.path().to_path_buf(),
            paused: false,
        })
        .unwrap();
    let events = until(&worker, |e| matches!(e, Event::Error(_)));
    assert!(
        matches!(events.last(), Some(Event::Error(text)) if text.contains("no complete checkpoint"))
    );
}

#[test]
fn the_teacher_is_evaluated_at_random_init_and_every_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let worker = spawn();
    worker
        .send(Command::Start {
            run_id: 1,
            config: Box::new(micro_config()),
            run_dir: Some(dir.path().join("run")),
            total_steps: Some(10_000),
            paused: false,
        })
        .unwrap();
    // 64 images / batch 8 = 8 steps per epoch: evaluations at step 0 and after step 8.
    let mut points = Vec::new();
    until(&worker, |e| {
        if let Event::Eval { evaluation, .. } = e {
            points.push((**evaluation).clone());
        }
        points.len() == 2
    });
    assert_eq!((points[0].row.step, points[1].row.step), (0, 8));
    assert_eq!(points[1].row.epoch, 1);
    for point in &points {
        let knn = point.knn.unwrap();
        assert!((0.0..=100.0).contains(&knn.top1) && knn.top5 >= knn.top1);
        assert_eq!(knn.val_images, 64);
        let jaccard = point.jaccard.as_ref().unwrap();
        assert_eq!(jaccard.per_head.len(), 2);
        assert!(jaccard.best >= jaccard.per_head[0] && jaccard.best <= 100.0);
    }
    let csv = std::fs::read_to_string(dir.path().join("run/knn.csv")).unwrap();
    assert!(
        csv.starts_with("step,epoch,top1,top5,jaccard_best_head"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 3);
}

/// The classroom demo of issue 15, exactly: Start on the default `tiny` preset, untick
/// centering at step 32, and the chip must stop saying "healthy" within a few steps of the
/// collapse starting (h(Pt) falls to ~0.1 nats by step 45 while KL is still ~1).
#[test]
fn the_chip_names_the_collapse_after_centering_is_unticked_on_tiny() {
    use dinoscope::app::collapse::CollapseState;
    use dinoscope::app::series::ViewSettings;
    use dinoscope::app::state::AppState;
    use dinoscope::config::LiveSettings;
    let config = Config::preset("tiny").unwrap();
    let view = ViewSettings {
        smoothing: 0.0,
        log_y: false,
    };
    let mut state = AppState::new(LiveSettings::from_config(&config), view);
    let run_id = state.begin_run("tiny".into(), None);
    let worker = spawn();
    worker
        .send(Command::Start {
            run_id,
            config: Box::new(config),
            run_dir: None,
            total_steps: None,
            paused: false,
        })
        .unwrap();
    const UNTICK_AT: usize = 32;
    let mut verdicts = Vec::new();
    // The engine's `regime` column of each row: the same rules on the same 5 steps.
    let mut regimes = Vec::new();
    let mut unticked = false;
    // 60 steps of `tiny`: ~15 s alone, longer beside the other tests.
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut done = |event: &Event| {
        state.apply(event.clone());
        if let Event::Metrics { metrics, .. } = event {
            let run = state.run(run_id).unwrap();
            verdicts.push((metrics.step, run.collapse_state(), metrics.teacher_entropy));
            regimes.push(metrics.regime);
            if metrics.step + 1 == UNTICK_AT && !unticked {
                worker
                    .send(Command::Set(Toggle::Centering(CenteringMode::Off)))
                    .unwrap();
                unticked = true;
            }
            return metrics.step >= 60;
        }
        false
    };
    loop {
        assert!(
            Instant::now() < deadline,
            "timed out; verdicts {verdicts:?}"
        );
        if let Some(event) = worker.recv_timeout(Duration::from_millis(100)) {
            if let Event::Error(message) = &event {
                panic!("worker error: {message}");
            }
            if done(&event) {
                break;
            }
        }
    }
    // Healthy before the untick (after the warm-up steps).
    for (step, verdict, _) in &verdicts[12..UNTICK_AT] {
        assert_eq!(
            *verdict,
            CollapseState::Healthy,
            "step {step}: {verdicts:?}"
        );
    }
    // From the first step whose 5-step window sits in one-hot territory on, never healthy.
    let collapsed_from = verdicts
        .iter()
        .position(|(step, _, h)| *step > UNTICK_AT && *h < 0.3)
        .expect("h(Pt) falls after centering is turned off");
    let named = &verdicts[(collapsed_from + 6).min(verdicts.len() - 1)..];
    assert!(!named.is_empty());
    for (step, verdict, _) in named {
        assert!(
            matches!(
                verdict,
                CollapseState::OneHotTargets
                    | CollapseState::OnePrototype
                    | CollapseState::Collapsing
            ),
            "step {step}: the chip says {verdict:?}; {verdicts:?}"
        );
    }
    assert_eq!(
        regimes,
        verdicts.iter().map(|v| v.1).collect::<Vec<_>>(),
        "the CSV's regime and the chip agree step by step"
    );
    let last = state.run(run_id).unwrap();
    let recent = last.recent_loss();
    let text = last.collapse_state().explain(&recent);
    assert!(text.contains("prototypes in use"), "{text}");
}

/// Issue 14 §1: a non-finite step pauses the run (not ends it) at its last good state; a
/// toggle and Resume continue it, and the discarded step never reaches the metrics.
#[test]
fn a_non_finite_step_pauses_the_run_and_resume_continues_it() {
    use dinoscope::train::guard::Fault;
    let worker = spawn();
    start(&worker, 1, true);
    until(&worker, |e| {
        matches!(
            e,
            Event::Status {
                status: WorkerStatus::Paused,
                ..
            }
        )
    });
    worker
        .send(Command::InjectFault(Some(Fault::NanGrad { step: 3 })))
        .unwrap();
    worker.send(Command::Resume).unwrap();
    let events = until(&worker, |e| matches!(e, Event::Halted { .. }));
    let steps: Vec<usize> = events.iter().filter_map(metrics_step).collect();
    assert_eq!(steps, vec![0, 1, 2], "the bad step is not reported");
    let Some(Event::Halted { step, message, .. }) = events.last() else {
        unreachable!()
    };
    assert_eq!(*step, 3);
    assert!(
        message.contains("non-finite gradients") && message.contains("lr scale 1"),
        "{message}"
    );
    until(&worker, |e| {
        matches!(
            e,
            Event::Status {
                status: WorkerStatus::Paused,
                ..
            }
        )
    });
    // Lower the lr and continue: step 3 is computed again, and the run goes on.
    worker.send(Command::InjectFault(None)).unwrap();
    worker.send(Command::Set(Toggle::LrScale(0.5))).unwrap();
    worker.send(Command::Resume).unwrap();
    let events = until(&worker, |e| metrics_step(e) == Some(5));
    let rows: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Metrics { metrics, .. } => Some(metrics.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(rows.iter().map(|m| m.step).collect::<Vec<_>>(), [3, 4, 5]);
    assert!(rows.iter().all(|m| m.loss.is_finite()));
    worker.send(Command::Stop).unwrap();
}

/// Issue 14 §3: the run directory removed while training pauses the run (kept in memory);
/// `SaveRunTo` writes the config, every row so far and a checkpoint elsewhere, and the run
/// continues there.
#[test]
fn a_lost_run_directory_pauses_and_the_run_continues_in_another() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first");
    let worker = spawn();
    worker
        .send(Command::Start {
            run_id: 1,
            config: Box::new(micro_config()),
            run_dir: Some(first.clone()),
            total_steps: Some(10_000),
            paused: true,
        })
        .unwrap();
    for step in 0..3 {
        worker.send(Command::Step).unwrap();
        until(&worker, |e| metrics_step(e) == Some(step));
    }
    std::fs::remove_dir_all(&first).unwrap();
    worker.send(Command::Step).unwrap();
    let events = until(&worker, |e| matches!(e, Event::StorageLost { .. }));
    let Some(Event::StorageLost { message, .. }) = events.last() else {
        unreachable!()
    };
    assert!(
        message.contains("metrics.csv") && message.contains("removed or moved"),
        "{message}"
    );
    until(&worker, |e| {
        matches!(
            e,
            Event::Status {
                status: WorkerStatus::Paused,
                ..
            }
        )
    });
    let second = dir.path().join("second");
    worker.send(Command::SaveRunTo(second.clone())).unwrap();
    until(&worker, |e| matches!(e, Event::CheckpointSaved { .. }));
    let csv = std::fs::read_to_string(second.join("metrics.csv")).unwrap();
    assert_eq!(
        csv.lines().count(),
        1 + 4,
        "steps 0..=3 kept in memory: {csv}"
    );
    assert!(second.join("checkpoint-00000004/state.toml").is_file());
    worker.send(Command::Resume).unwrap();
    until(&worker, |e| metrics_step(e) == Some(6));
    worker.send(Command::Pause).unwrap();
    worker.send(Command::Stop).unwrap();
    let csv = std::fs::read_to_string(second.join("metrics.csv")).unwrap();
    // The header and steps 0..=6 at least (more may land before the pause).
    assert!(csv.lines().count() > 7, "{csv}");
}

/// Issue 14 §4: a device lost mid-run (injected: no GPU here) ends the run with a message that
/// names the step and the intact checkpoint; resuming it on the CPU continues the run.
#[test]
fn a_lost_device_names_the_intact_checkpoint_and_resume_on_the_cpu_continues() {
    use dinoscope::train::guard::Fault;
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let worker = spawn();
    worker
        .send(Command::SetCheckpointing {
            every_steps: 2,
            keep_last: 3,
        })
        .unwrap();
    worker
        .send(Command::Start {
            run_id: 1,
            config: Box::new(micro_config()),
            run_dir: Some(run.clone()),
            total_steps: Some(10_000),
            paused: true,
        })
        .unwrap();
    worker
        .send(Command::InjectFault(Some(Fault::DeviceLost { step: 5 })))
        .unwrap();
    worker.send(Command::Resume).unwrap();
    let events = until(&worker, |e| matches!(e, Event::Error(_)));
    let Some(Event::Error(message)) = events.last() else {
        unreachable!()
    };
    assert!(
        message.contains("device lost at step 5")
            && message.contains("checkpoint of step 4 is intact")
            && message.contains(&run.display().to_string()),
        "{message}"
    );
    until(&worker, |e| {
        matches!(
            e,
            Event::Status {
                status: WorkerStatus::Failed,
                ..
            }
        )
    });
    // The checkpoints are as they were; the run continues from step 4 on the CPU.
    let kept = dinoscope::store::checkpoint::list_checkpoints(&run);
    assert_eq!(kept.last().map(|(step, _)| *step), Some(4));
    worker
        .send(Command::ResumeFrom {
            run_id: 2,
            path: run.clone(),
            paused: false,
        })
        .unwrap();
    let events = until(&worker, |e| metrics_step(e) == Some(6));
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Resumed { first_step: 4, .. })));
    worker.send(Command::Stop).unwrap();
}
