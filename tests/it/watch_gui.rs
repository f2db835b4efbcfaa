//! A watched official run folder in the real app: its checkpoints arrive as the rows of one
//! more run (x = epoch), with the decomposition the CLI computes.

use crate::gui_support::{frames_until, harness_with};
use dinoscope::worker::WorkerStatus;
use egui_kittest::kittest::Queryable;

#[test]
fn a_watched_official_run_shows_its_checkpoints_as_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/official_run");
    for name in ["log.txt", "checkpoint0000.pth", "checkpoint0002.pth"] {
        std::fs::copy(fixture.join(name), run.join(name)).unwrap();
    }
    let mut harness = harness_with(None);
    harness.run_steps(2);
    // The button is there for a user; the dialog it opens is the system's, so the test hands
    // the folder over as the dialog would.
    harness.get_by_label("Watch run folder...");
    // The fixture's run: a 16-wide ViT (2 heads) on 16/8-px crops (neither is in main_dino.py's
    // args); its temperatures and local crops come from the checkpoints' pickled args.
    let settings = dinoscope::train::watch::WatchOverrides {
        heads: Some(2),
        global_crop_px: Some(16),
        local_crop_px: Some(8),
        ..Default::default()
    };
    harness.state_mut().watch_folder_with(run.clone(), settings);
    frames_until(&mut harness, "both checkpoints", 120, |app| {
        app.state
            .runs
            .iter()
            .any(|r| r.label == "watch: run" && r.steps() == 2)
    });
    let app = harness.state();
    let watched = app
        .state
        .runs
        .iter()
        .find(|r| r.label == "watch: run")
        .unwrap();
    assert!(watched.pinned, "Reset keeps a watched run");
    assert_eq!(watched.status, WorkerStatus::Running);
    let last = watched.last.as_ref().unwrap();
    assert_eq!(last.epoch, 2);
    assert!((watched.ln_k - 64f64.ln()).abs() < 1e-9);
    assert!((last.loss - (last.teacher_entropy + last.kl)).abs() < 1e-9);
    // The default probe's 32 global rows give the teacher's representation readings.
    assert!(
        last.effective_rank.is_some_and(|r| r > 1.0 && r <= 16.0),
        "{last:?}"
    );
    // log.txt's three epochs, as the run's own training-loss curve.
    let log = dinoscope::store::official_run::read_official_log(&run.join("log.txt"));
    assert_eq!(
        watched.log_loss,
        log.iter()
            .map(|r| [r.epoch as f64, r.train_loss.unwrap()])
            .collect::<Vec<_>>()
    );
    assert_eq!(watched.log_loss.len(), 3);
    // Each checkpoint's teacher attention of the followed images, in the history.
    let snapshots: Vec<usize> = app.state.attention_history.iter().map(|s| s.step).collect();
    assert_eq!(snapshots, [0, 2]);
    assert_eq!(
        app.state.attention_history[1].maps.len(),
        app.panels.attention.images.len()
    );
    assert!(dir.path().join("run.dinoscope/metrics.csv").is_file());
    // The status line names the temporary folder and the time of the first point: fixed
    // for the picture.
    {
        let app = harness.state_mut();
        assert!(app.state.messages.iter().any(|m| m
            .text
            .contains("teacher temperature 0.04 to 0.07 over 2 epochs")
            && m.text.contains("from the run's args (checkpoint0002.pth)")
            && m.text.contains("2 locals")));
        app.state.messages.clear();
        app.session.first_point_secs = Some(1.0);
    }
    harness.run_steps(3);
    harness.snapshot("watched_official_run");
    // Not a run folder: said, nothing started.
    let before = harness.state().threads.watches.len();
    harness.state_mut().watch_folder(dir.path().join("nothing"));
    let app = harness.state();
    assert_eq!(app.threads.watches.len(), before);
    assert!(app
        .state
        .messages
        .iter()
        .any(|m| m.text.contains("is not a run folder")));
    harness.state_mut().threads.watches.clear();
}

/// A `dinoscope train` in another process (a terminal, an ssh session): the app follows its
/// run folder, every row as it is flushed, and the k-NN evaluations too.
#[test]
fn a_dinoscope_run_trained_elsewhere_is_followed_row_by_row() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut trainer = crate::cli::train_micro(&run, 40)
        .args(["--set", "data.knn_every_epochs=1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Its config comes first; follow from then on, as a user would pick the folder.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !run.join("config.toml").is_file() {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut harness = harness_with(None);
    harness.run_steps(2);
    harness.state_mut().watch_folder(run.clone());
    let followed = |app: &dinoscope::app::DinoscopeApp| {
        app.state
            .runs
            .iter()
            .find(|r| r.label == "follow: run")
            .map(|r| (r.steps(), r.evals.len(), r.watched))
    };
    frames_until(&mut harness, "the first rows", 120, |app| {
        followed(app).is_some_and(|(steps, ..)| steps > 0)
    });
    assert!(trainer.wait().unwrap().success());
    frames_until(&mut harness, "every row and evaluation", 60, |app| {
        followed(app).is_some_and(|(steps, evals, _)| steps == 40 && evals >= 2)
    });
    let app = harness.state();
    let rows = dinoscope::store::run::read_step_metrics(&run.join("metrics.csv")).unwrap();
    let record = app
        .state
        .runs
        .iter()
        .find(|r| r.label == "follow: run")
        .unwrap();
    assert!(!record.watched, "a dinoscope run's rows are steps");
    assert_eq!(
        record.last.as_ref().unwrap(),
        rows.last().unwrap(),
        "the rows as written"
    );
    harness.state_mut().threads.watches.clear();
}
