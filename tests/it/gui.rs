//! The real `DinoscopeApp` under egui_kittest (wgpu on the software rasterizer), driving a
//! real worker on a micro model: clicks send commands, markers appear, pause and reset work.

use crate::worker::micro_config;
use dinoscope::app::state::Level;
use dinoscope::app::{AppOptions, DinoscopeApp};
use dinoscope::config::{CenteringMode, Toggle};
use dinoscope::store::rows::MetricsRow;
use dinoscope::worker::{Event, WorkerStatus};
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use std::time::Duration;

fn harness() -> Harness<'static, DinoscopeApp> {
    crate::gui_support::harness_with(None)
}

fn options() -> AppOptions {
    crate::gui_support::options(None)
}

/// Steps frames (the app repaints continuously while training) until `done` holds.
fn frames_until(
    harness: &mut Harness<'static, DinoscopeApp>,
    what: &str,
    done: impl Fn(&DinoscopeApp) -> bool,
) {
    crate::gui_support::frames_until(harness, what, 60, done);
}

fn steps(app: &DinoscopeApp) -> usize {
    app.state.current_run().map(|r| r.steps()).unwrap_or(0)
}

fn markers(app: &DinoscopeApp) -> Vec<String> {
    app.state
        .current_run()
        .map(|r| r.markers.iter().map(|m| m.label.clone()).collect())
        .unwrap_or_default()
}

#[test]
fn clicking_toggles_sends_commands_and_draws_markers() {
    let mut harness = harness();
    harness.run_steps(2);
    harness.get_by_label("Start").click();
    frames_until(&mut harness, "first metrics", |app| steps(app) >= 2);
    // The worker follows the panel's images and sends the teacher's maps while training.
    frames_until(&mut harness, "attention maps", |app| {
        app.state
            .attention_history
            .back()
            .is_some_and(|s| s.maps.len() == app.panels.attention.images.len())
    });

    // The centering menu: EMA (DINO), Sinkhorn-Knopp (DINOv2), off.
    harness.get_by_label("centering").click();
    harness.run_steps(2);
    harness.get_by_label("off").click();
    harness.run_steps(1);
    assert_eq!(
        harness.state().state.sent_toggles.last(),
        Some(&Toggle::Centering(CenteringMode::Off))
    );
    frames_until(&mut harness, "the centering marker", |app| {
        markers(app).contains(&"centering off".to_string())
    });

    harness.get_by_label("sharpening").click();
    harness.run_steps(1);
    assert_eq!(
        harness.state().state.sent_toggles.last(),
        Some(&Toggle::Sharpening(false))
    );
    frames_until(&mut harness, "the sharpening marker", |app| {
        markers(app).contains(&"sharpening off".to_string())
    });

    // A slider moved from the keyboard commits one toggle (a drag would commit on release).
    harness
        .get_by_role_and_label(egui::accesskit::Role::Slider, "local crops")
        .focus();
    harness.run_steps(1);
    harness.key_press(egui::Key::ArrowLeft);
    harness.run_steps(2);
    assert!(
        matches!(
            harness.state().state.sent_toggles.last(),
            Some(Toggle::LocalCrops(_))
        ),
        "{:?}",
        harness.state().state.sent_toggles
    );
    frames_until(&mut harness, "the local-crops marker", |app| {
        markers(app).iter().any(|m| m.starts_with("local crops"))
    });
    // The other sliders, from the keyboard too: each commits exactly its own toggle.
    for (label, expected) in [
        ("τ teacher", "teacher temperature"),
        ("momentum", "momentum"),
        ("lr scale", "lr scale"),
    ] {
        let before = harness.state().state.sent_toggles.len();
        harness
            .get_by_role_and_label(egui::accesskit::Role::Slider, label)
            .focus();
        harness.run_steps(1);
        harness.key_press(egui::Key::ArrowLeft);
        harness.run_steps(2);
        let sent = &harness.state().state.sent_toggles;
        assert_eq!(sent.len(), before + 1, "{label}: {sent:?}");
        let matches = matches!(
            (expected, sent.last()),
            ("teacher temperature", Some(Toggle::TeacherTemp(_)))
                | ("momentum", Some(Toggle::MomentumTeacher(_)))
                | ("lr scale", Some(Toggle::LrScale(_)))
        );
        assert!(matches, "{label}: {sent:?}");
    }
    frames_until(&mut harness, "the lr-scale marker", |app| {
        markers(app).iter().any(|m| m.starts_with("lr scale"))
    });
    // DINOv2's tools: KoLeo up one keyboard step from 0, then Sinkhorn-Knopp from the menu.
    let before = harness.state().state.sent_toggles.len();
    harness
        .get_by_role_and_label(egui::accesskit::Role::Slider, "KoLeo")
        .focus();
    harness.run_steps(1);
    harness.key_press(egui::Key::ArrowRight);
    harness.run_steps(2);
    let sent = &harness.state().state.sent_toggles;
    assert_eq!(sent.len(), before + 1, "KoLeo: {sent:?}");
    assert!(
        matches!(sent.last(), Some(Toggle::KoleoWeight(w)) if *w > 0.0),
        "{sent:?}"
    );
    frames_until(&mut harness, "the KoLeo marker", |app| {
        markers(app).iter().any(|m| m.starts_with("KoLeo = "))
    });
    harness.get_by_label("centering").click();
    harness.run_steps(2);
    harness.get_by_label("Sinkhorn-Knopp (DINOv2)").click();
    harness.run_steps(1);
    assert_eq!(
        harness.state().state.sent_toggles.last(),
        Some(&Toggle::Centering(CenteringMode::Sinkhorn))
    );
    frames_until(&mut harness, "the Sinkhorn marker", |app| {
        markers(app).contains(&"centering sinkhorn".to_string())
    });
    // The marker step is the first step that used the change.
    let app = harness.state();
    let run = app.state.current_run().unwrap();
    let marker = run
        .markers
        .iter()
        .find(|m| m.label == "centering off")
        .unwrap();
    let used = run
        .series(dinoscope::app::state::Quantity::TeacherEntropy)
        .unwrap();
    assert!(used.value_at(marker.step as f64).is_some());
}

#[test]
fn pause_stops_new_metrics_and_reset_keeps_pinned_runs() {
    let mut harness = harness();
    harness.run_steps(2);
    harness.get_by_label("Start").click();
    frames_until(&mut harness, "metrics", |app| steps(app) >= 2);
    harness.get_by_label("Pause").click();
    frames_until(&mut harness, "paused", |app| {
        app.state.worker_status == WorkerStatus::Paused
    });
    let paused_at = steps(harness.state());
    for _ in 0..20 {
        harness.run_steps(1);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        steps(harness.state()),
        paused_at,
        "no new metrics while paused"
    );

    // Pin the first run, start a second, reset: the pinned run stays, the current one goes.
    harness.get_by_label("pin").click();
    harness.run_steps(1);
    let first = harness.state().state.current.unwrap();
    assert!(harness.state().state.run(first).unwrap().pinned);
    harness.get_by_label("Stop").click();
    frames_until(&mut harness, "stopped", |app| {
        app.state.worker_status == WorkerStatus::Finished
    });
    harness.get_by_label("Start").click();
    frames_until(&mut harness, "second run", |app| {
        app.state.current != Some(first) && steps(app) >= 1
    });
    harness.get_by_label("Reset").click();
    harness.run_steps(2);
    let state = &harness.state().state;
    assert!(state.current.is_none());
    assert_eq!(state.runs.len(), 1);
    assert_eq!(state.runs[0].id, first);
}

#[test]
fn a_worker_error_shows_in_the_status_line() {
    let mut harness = harness();
    harness.run_steps(1);
    harness
        .state_mut()
        .state
        .apply(Event::Error("training step 7 panicked: boom".into()));
    harness.run_steps(2);
    assert_eq!(
        harness.state().state.messages.back().unwrap().level,
        Level::Error
    );
    harness.get_by_label("training step 7 panicked: boom");
}

fn synthetic(step: usize) -> MetricsRow {
    // A run that collapses after a centering-off marker at step 60.
    let t = step as f64;
    let h = if step < 60 {
        4.0 + 0.5 * (t / 9.0).sin()
    } else {
        4.0 * (-(t - 60.0) / 15.0).exp()
    };
    let kl = if step < 60 {
        1.0 + 0.2 * (t / 7.0).cos()
    } else {
        (-(t - 60.0) / 12.0).exp()
    };
    // Representation readings every 4 steps: the rank falls with the collapse.
    let reading = step.is_multiple_of(4);
    let rank = if step < 60 {
        38.0 + 4.0 * (t / 11.0).sin()
    } else {
        1.5 + 36.0 * (-(t - 60.0) / 10.0).exp()
    };
    let spectrum: Vec<f32> = if reading {
        (0..96)
            .map(|k| (-(k as f64) * 3.0 / rank).exp().max(1e-7) as f32)
            .collect()
    } else {
        Vec::new()
    };
    MetricsRow {
        effective_rank: reading.then_some(rank),
        effective_rank_head: reading.then_some(rank * 1.6),
        std_normalized: reading.then_some(0.102 * rank / 40.0),
        near_zero_directions: reading.then(|| spectrum.iter().filter(|s| **s < 1e-3).count()),
        spectrum,
        step,
        epoch: step / 32,
        loss: h + kl,
        teacher_entropy: h,
        kl,
        // The batch's spread over prototypes goes with the collapse: one prototype for all.
        batch_mean_entropy: h + if step < 60 {
            0.8
        } else {
            0.8 * (-(t - 60.0) / 12.0).exp()
        },
        lr: 2.5e-4 * (t / 32.0).min(1.0),
        weight_decay: 0.04 + 0.001 * t,
        teacher_momentum: 0.99 + 0.00005 * t,
        teacher_temp: 0.02,
        images_per_sec: 60.0 + (t / 5.0).sin(),
        step_secs: 0.5,
        data_wait_secs: 0.0,
        local_crops: 6,
        centering: step < 60,
        sharpening: true,
        ln_k: 1024f64.ln(),
        warnings: Vec::new(),
        ..MetricsRow::default()
    }
}

#[test]
fn main_layout_snapshot_with_synthetic_history() {
    let mut harness = Harness::builder()
        .with_size([1360.0, 860.0])
        .wgpu()
        .build_eframe(|cc| {
            let mut app = DinoscopeApp::new(cc, options());
            let run = app.state.begin_run("run-1 · tiny".into(), None);
            app.state.apply(Event::Started {
                run_id: run,
                device: "CPU (flex) · 2 threads".into(),
                dataset: "synthetic shapes".into(),
                total_steps: 320,
                iters_per_epoch: 32,
                shape: dinoscope::analysis::health::RunShape {
                    ln_k: 1024f64.ln(),
                    batch_images: 32,
                    embed_dim: 96,
                    student_temp: 0.1,
                },
            });
            for step in 0..120 {
                app.state.apply(Event::Metrics {
                    run_id: run,
                    metrics: Box::new(synthetic(step)),
                });
            }
            app.state.apply(Event::Marker {
                run_id: run,
                step: 60,
                label: "centering off".into(),
                toggle: Toggle::Centering(CenteringMode::Off),
            });
            app.state.apply(Event::Status {
                run_id: Some(run),
                status: WorkerStatus::Paused,
            });
            // Fixed maps for the three followed images: a bright blob per head.
            let maps = |shift: usize| dinoscope::analysis::attention::AttentionMaps {
                grid_rows: 16,
                grid_cols: 16,
                patch_size: 4,
                resized_px: (64, 64),
                pca_rgb: Vec::new(),
                pca_foreground_rgb: Vec::new(),
                layer: dinoscope::analysis::layers::MapLayer::Last,
                distance_px: Vec::new(),
                token_norms: Vec::new(),
                registers: Default::default(),
                heads: (0..3)
                    .map(|h| {
                        (0..256)
                            .map(|i| {
                                let (r, c) = ((i / 16) as f32, (i % 16) as f32);
                                let (cr, cc) = (4.0 + 3.0 * h as f32, 5.0 + shift as f32);
                                (-((r - cr).powi(2) + (c - cc).powi(2)) / 8.0).exp() / 40.0
                            })
                            .collect()
                    })
                    .collect(),
            };
            let names: Vec<String> = app
                .panels
                .attention
                .images
                .iter()
                .map(|i| i.name.clone())
                .collect();
            app.state.apply(Event::Attention {
                run_id: run,
                step: 119,
                network: dinoscope::store::weights::Network::Teacher,
                maps: names
                    .into_iter()
                    .enumerate()
                    .map(|(i, name)| (name, maps(2 * i)))
                    .collect(),
            });
            // Two evaluations: random init, then after 3 epochs.
            for (step, top1, jaccard) in [(0, 31.0, 24.0), (96, 58.0, 41.0)] {
                app.state.apply(Event::Eval {
                    run_id: run,
                    evaluation: Box::new(dinoscope::train::engine::Evaluation {
                        row: dinoscope::store::rows::EvalRow {
                            step,
                            epoch: step / 32,
                            top1: Some(top1),
                            top5: Some(top1 + 30.0),
                            jaccard_best_head: Some(jaccard),
                            jaccard_mean_map: Some(jaccard),
                            eval_secs: Some(1.0),
                            ..Default::default()
                        },
                        knn: None,
                        jaccard: None,
                    }),
                });
            }
            app.session.first_point_secs = Some(1.5);
            app
        });
    harness.run_steps(4);
    assert_eq!(harness.state().state.attention_history.len(), 1);
    assert!(harness
        .query_all_by_label("collapsed: one prototype")
        .next()
        .is_some());
    harness.snapshot("main_layout");
}

fn official_fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/official_vit")
        .join(name)
}

#[test]
fn attention_view_loads_official_weights_draws_heads_and_exports() {
    use dinoscope::app::attention_view::MapSource;
    let mut harness = harness();
    {
        let app = harness.state_mut();
        // Small maps keep the test fast; the fixture's width 48 needs the heads given.
        app.panels.attention.short_side_px = Some(48);
        app.panels.attention.heads_override = Some(3);
        app.load_weights(official_fixture("checkpoint.pth"));
    }
    frames_until(&mut harness, "the loaded weights' maps", |app| {
        app.panels
            .attention
            .loaded
            .as_ref()
            .is_some_and(|l| l.maps.len() == app.panels.attention.images.len())
    });
    let app = harness.state();
    assert_eq!(app.panels.attention.source, MapSource::Loaded);
    assert_eq!(
        app.panels.central_tab,
        dinoscope::app::CentralTab::Attention
    );
    let loaded = app.panels.attention.loaded.as_ref().unwrap();
    assert_eq!(loaded.info.arch.num_heads, 3);
    // cat.jpg is 451 × 300: short side 48 → 72 × 48 → a 6 × 9 grid of 8-px patches.
    let (_, cat) = &loaded.maps[0];
    assert_eq!((cat.grid_rows, cat.grid_cols), (6, 9));
    harness.run_steps(2);
    for label in [
        "head 0",
        "head 1",
        "head 2",
        "Per head (click to show large)",
    ] {
        assert!(
            harness.query_all_by_label(label).next().is_some(),
            "{label} not shown"
        );
    }
    // The grid export: 3 heads + mean, 72 × 48 tiles 4 px apart in one row.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grid.png");
    let app = harness.state_mut();
    app.panels
        .attention
        .export(&app.state, &path, true)
        .unwrap();
    let grid = image::open(&path).unwrap();
    assert_eq!((grid.width(), grid.height()), (4 * 72 + 3 * 4, 48));
    let view = dir.path().join("view.png");
    app.panels
        .attention
        .export(&app.state, &view, false)
        .unwrap();
    assert_eq!(image::open(&view).unwrap().width(), 72);
    // The caption shows how long the maps took, the status line how long the load took: not
    // part of the picture under test (a loaded machine reads 0.1 s).
    if let Some(loaded) = &mut harness.state_mut().panels.attention.loaded {
        loaded.elapsed_secs = None;
    }
    for message in &mut harness.state_mut().state.messages {
        if let Some((what, _)) = message.text.rsplit_once(" in ") {
            message.text = format!("{what} in 0.0 s");
        }
    }
    harness.run_steps(1);
    harness.snapshot("attention_view_loaded_weights");

    // A file that is not weights: an error in the status line, the loaded weights stay.
    let bad = dir.path().join("notes.pth");
    std::fs::write(&bad, "hello").unwrap();
    harness.state_mut().load_weights(bad);
    frames_until(&mut harness, "the error", |app| {
        !app.panels.attention.loading
    });
    let app = harness.state();
    assert!(app
        .state
        .messages
        .iter()
        .any(|m| m.level == Level::Error && m.text.contains("notes.pth")));
    assert!(app.panels.attention.loaded.is_some());
}

#[test]
fn runs_on_disk_open_as_pinned_overlays() {
    use dinoscope::store::run::RunWriter;
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("20261123-tiny");
    let config = micro_config();
    let mut writer = RunWriter::create(&run_dir, &config).unwrap();
    let mut trainer =
        dinoscope::train::trainer::Trainer::new(config, burn::prelude::Device::flex(), Some(4))
            .unwrap();
    for _ in 0..4 {
        writer.append(&trainer.step().unwrap()).unwrap();
    }
    // A killed process can leave a torn last line: it is skipped.
    std::fs::OpenOptions::new()
        .append(true)
        .open(run_dir.join("metrics.csv"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"4,0,3.1"))
        .unwrap();
    assert_eq!(
        dinoscope::store::run::list_run_dirs(dir.path()),
        vec![run_dir.clone()]
    );

    let mut harness = harness();
    let app = harness.state_mut();
    let id = app.state.open_run_from_disk(&run_dir).unwrap();
    let run = app.state.runs.iter().find(|r| r.id == id).unwrap();
    assert!(run.pinned && app.state.current != Some(id));
    assert_eq!(run.steps(), 4);
    assert!((run.ln_k - 32f64.ln()).abs() < 1e-9);
    // Not a run: a message naming the folder.
    let err = app.state.open_run_from_disk(dir.path()).unwrap_err();
    assert!(err.contains("no metrics.csv"), "{err}");
    harness.run_steps(2);
}

/// The WGSL overlay and the CPU composite draw the same picture: render the attention tab both
/// ways and compare pixel by pixel (outline off: the shader draws it thinner when magnified).
#[test]
fn shader_overlay_matches_the_cpu_composite() {
    let mut harness = harness();
    {
        let app = harness.state_mut();
        assert!(
            app.panels.attention.gpu,
            "kittest renders through wgpu: the shader is installed"
        );
        app.panels.attention.short_side_px = Some(48);
        app.panels.attention.heads_override = Some(3);
        app.panels.attention.contour = false;
        app.panels.attention.heat_opacity = 0.5;
        app.load_weights(official_fixture("backbone.pth"));
    }
    frames_until(&mut harness, "the loaded weights' maps", |app| {
        app.panels
            .attention
            .loaded
            .as_ref()
            .is_some_and(|l| l.maps.len() == app.panels.attention.images.len())
    });
    if let Some(loaded) = &mut harness.state_mut().panels.attention.loaded {
        loaded.elapsed_secs = None;
    }
    harness.run_steps(2);
    let gpu = harness.render().unwrap();
    harness.state_mut().panels.attention.gpu = false;
    harness.run_steps(2);
    let cpu = harness.render().unwrap();
    assert_eq!(gpu.dimensions(), cpu.dimensions());
    if let Ok(dir) = std::env::var("DINOSCOPE_DUMP") {
        gpu.save(format!("{dir}/gpu.png")).unwrap();
        cpu.save(format!("{dir}/cpu.png")).unwrap();
    }
    let differing = gpu
        .pixels()
        .zip(cpu.pixels())
        .filter(|(a, b)| a.0.iter().zip(b.0.iter()).any(|(x, y)| x.abs_diff(*y) > 3))
        .count();
    let total = (gpu.width() * gpu.height()) as usize;
    // Only texel edges may differ (the large view is magnified about 8×): 0.4 % measured.
    assert!(
        differing * 100 < total,
        "{differing} of {total} pixels differ between shader and CPU composite"
    );
}
