//! The ablation study in the app: the dialog starts a real interleaved study on the worker, and
//! the comparison view (Fig. 7 pair, the table, every arm's mask) as a snapshot.

use crate::gui_support::{frames_until, harness_with};
use dinoscope::analysis::health::Regime;
use dinoscope::app::CentralTab;
use dinoscope::config::study::StudySpec;
use dinoscope::store::rows::{MetricsRow, StudyRow};
use dinoscope::worker::{Event, WorkerStatus};
use egui_kittest::kittest::Queryable;
use std::sync::Arc;

#[test]
fn the_dialog_starts_an_interleaved_study_and_the_view_compares_it() {
    let runs = tempfile::tempdir().unwrap();
    let mut harness = harness_with(Some(runs.path().to_path_buf()));
    harness.run_steps(2);
    harness.get_by_label("Ablation study...").click();
    // The click's frame, the window's invisible sizing frame, then frames for it to settle
    // (a click lands where the widget was in the previous frame).
    harness.run_steps(6);
    assert!(
        harness.state().panels.study.dialog_open,
        "the button opens the dialog"
    );
    for name in ["no-sharpening", "no-momentum", "no-multicrop"] {
        harness.get_by_label(name).click();
        harness.run_steps(2);
    }
    let ticked: Vec<String> = harness
        .state()
        .panels
        .study
        .spec()
        .unwrap()
        .variants
        .iter()
        .map(|v| v.name.clone())
        .collect();
    assert_eq!(ticked, ["full", "no-centering"]);
    harness.state_mut().panels.study.steps = 3;
    harness.run_steps(1);
    harness.get_by_label("Start study (2 variants)").click();
    frames_until(&mut harness, "the study's end", 120, |app| {
        app.state
            .study
            .as_ref()
            .is_some_and(|s| s.outputs.is_some())
    });
    let app = harness.state();
    let study = app.state.study.as_ref().unwrap();
    assert_eq!(app.panels.central_tab, CentralTab::Study);
    let names: Vec<&str> = study.arms.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["full", "no-centering"]);
    for arm in &study.arms {
        let row = arm.row.as_ref().expect("finished arm has its row");
        assert_eq!(row.steps, 3);
        assert!(arm.overlay.is_some(), "its mask on the probe image");
        let run = app.state.run(arm.run_id).unwrap();
        assert_eq!(run.steps(), 3);
        assert_eq!(run.status, WorkerStatus::Finished);
    }
    let outputs = study.outputs.as_ref().unwrap();
    assert!(outputs.complete, "{outputs:?}");
    assert!(study.dir.join("study.md").is_file());
    assert!(study.dir.join("full/metrics.csv").is_file());
    harness.run_steps(2);
    harness.get_by_label("Ablation study paper-table7");
}

/// One arm's synthetic curve: healthy, or collapsing towards `end_h` from step 20.
fn synthetic(step: usize, end_h: f64, end_kl: f64) -> MetricsRow {
    let t = step as f64;
    let fade = if step < 20 {
        0.0
    } else {
        1.0 - (-(t - 20.0) / 12.0).exp()
    };
    let h = 4.2 + 0.3 * (t / 9.0).sin();
    let kl = 1.0 + 0.15 * (t / 7.0).cos();
    MetricsRow {
        step,
        teacher_entropy: h + (end_h - h) * fade,
        kl: kl + (end_kl - kl) * fade,
        loss: h + kl,
        batch_mean_entropy: h + 0.8,
        ln_k: 1024f64.ln(),
        images_per_sec: 150.0,
        ..MetricsRow::default()
    }
}

#[test]
fn study_comparison_snapshot() {
    let mut harness = crate::gui_support::harness_built(|app| {
        let spec = StudySpec::builtin("paper-table7").unwrap();
        let ids = app
            .state
            .begin_study(&spec, std::path::PathBuf::from("runs/table7"));
        let ln_k = 1024f64.ln();
        // (end h, end KL, k-NN, regime) per arm, in the study's order.
        let outcomes = [
            (4.3, 1.0, 63.0, Regime::Healthy),
            (0.0005, 0.004, 24.0, Regime::OnePrototype),
            (ln_k - 0.02, 0.02, 29.0, Regime::Uniform),
            (0.3, 0.01, 18.0, Regime::OnePrototype),
            (4.0, 0.9, 55.0, Regime::Healthy),
        ];
        for ((id, variant), (end_h, end_kl, knn, regime)) in
            ids.iter().zip(&spec.variants).zip(outcomes)
        {
            app.state.apply(Event::Started {
                run_id: *id,
                device: "CPU (flex) · 2 threads".into(),
                dataset: "synthetic shapes".into(),
                total_steps: 128,
                iters_per_epoch: 32,
                shape: dinoscope::analysis::health::RunShape {
                    ln_k,
                    batch_images: 32,
                    embed_dim: 96,
                    student_temp: 0.1,
                },
            });
            for step in 0..128 {
                app.state.apply(Event::Metrics {
                    run_id: *id,
                    metrics: Box::new(synthetic(step, end_h, end_kl)),
                });
            }
            // A mask: a compact object for the healthy arms, most of the image (or one
            // corner) for the collapsed ones.
            let (x0, y0, side) = match regime {
                Regime::Healthy => (18 + (*id as u32 % 2) * 8, 16, 24),
                Regime::Uniform => (2, 2, 60),
                _ => (0, 40, 20 + *id as u32 * 2),
            };
            let overlay = image::RgbImage::from_fn(64, 64, |x, y| {
                let inside = (x0..x0 + side).contains(&x) && (y0..y0 + side).contains(&y);
                image::Rgb(if inside { [220, 90, 80] } else { [60, 60, 70] })
            });
            app.state.apply(Event::StudyArmDone {
                run_id: *id,
                row: Box::new(StudyRow {
                    variant: variant.name.clone(),
                    final_loss: end_h + end_kl,
                    final_teacher_entropy: end_h,
                    final_kl: end_kl,
                    final_batch_mean_entropy: end_h,
                    ln_k,
                    knn_top1: Some(knn),
                    random_init_top1: Some(31.0),
                    jaccard: Some(knn / 3.0),
                    effective_rank: Some(knn / 6.0),
                    regime,
                    steps: 128,
                    secs: 41.0,
                    paper_knn_top1: None,
                }),
                overlay: Some(Arc::new(overlay)),
            });
            app.state.apply(Event::Status {
                run_id: Some(*id),
                status: WorkerStatus::Finished,
            });
        }
        app.state.apply(Event::StudyFinished {
            dir: "runs/table7".into(),
            written: vec!["runs/table7/study.md".into()],
            skipped: Vec::new(),
            complete: true,
        });
        app.panels.central_tab = CentralTab::Study;
    });
    harness.run_steps(4);
    harness.get_by_label("72.8 (Table 7 row 1)");
    harness.get_by_label("Fig. 7: collapses, h(Pt) -> ln K");
    harness.snapshot("study_comparison");
}
