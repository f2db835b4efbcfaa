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
    // The fixture's run: a 16-wide ViT (2 heads), 16/8-px crops, teacher temperature warm-up.
    let settings = dinoscope::train::watch::WatchSettings {
        heads: Some(2),
        teacher_temp: 0.07,
        warmup_teacher_temp: 0.04,
        warmup_teacher_temp_epochs: 2,
        augment: dinoscope::augment::AugmentConfig {
            global_crop_size_px: 16,
            local_crop_size_px: 8,
            local_crops_number: 2,
            ..Default::default()
        },
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
    assert!(dir.path().join("run.dinoscope/metrics.csv").is_file());
    // The status line names the temporary folder and the time of the first point: fixed
    // for the picture.
    {
        let app = harness.state_mut();
        assert!(app.state.messages.iter().any(|m| m
            .text
            .contains("teacher temperature 0.04 to 0.07 over 2 epochs")));
        app.state.messages.clear();
        app.first_point_secs = Some(1.0);
    }
    harness.run_steps(3);
    harness.snapshot("watched_official_run");
    // Not a run folder: said, nothing started.
    let before = harness.state().watches.len();
    harness.state_mut().watch_folder(dir.path().join("nothing"));
    let app = harness.state();
    assert_eq!(app.watches.len(), before);
    assert!(app
        .state
        .messages
        .iter()
        .any(|m| m.text.contains("is not a run folder")));
    harness.state_mut().watches.clear();
}
