//! Tests of `store::figure`: every figure kind draws, bad requests are named.

use super::*;

fn run(name: &str, steps: usize, knn: bool) -> PlotRun {
    let metrics = (0..steps)
        .map(|i| MetricsRow {
            step: i,
            epoch: i / 10,
            loss: 5.0 - i as f64 * 0.01,
            teacher_entropy: 4.0 - i as f64 * 0.01,
            kl: 1.0,
            batch_mean_entropy: 5.0,
            lr: 1e-3,
            weight_decay: 0.04,
            teacher_momentum: 0.996,
            teacher_temp: 0.04,
            images_per_sec: 50.0,
            step_secs: 0.5,
            data_wait_secs: 0.0,
            local_crops: 6,
            centering: true,
            sharpening: true,
            ln_k: 1024f64.ln(),
            warnings: Vec::new(),
            // A reading every 4 steps, falling as in a dimensional collapse.
            effective_rank: (i % 4 == 0).then_some(60.0 - i as f64),
            std_normalized: (i % 4 == 0).then_some(0.1 - i as f64 * 1e-3),
            ..MetricsRow::default()
        })
        .collect();
    let evals = if knn {
        vec![
            EvalRow {
                step: 0,
                epoch: 0,
                top1: Some(40.0),
                top5: Some(90.0),
                jaccard_best_head: None,
                jaccard_mean_map: None,
                eval_secs: None,
                ..EvalRow::default()
            },
            EvalRow {
                step: steps,
                epoch: 1,
                top1: Some(55.0),
                top5: Some(97.0),
                jaccard_best_head: None,
                jaccard_mean_map: None,
                eval_secs: None,
                ..EvalRow::default()
            },
        ]
    } else {
        Vec::new()
    };
    PlotRun {
        name: name.into(),
        metrics,
        ln_k: Some(1024f64.ln()),
        embed_dim: Some(96),
        evals,
    }
}

#[test]
fn collapse_figure_as_svg_and_png() {
    let dir = tempfile::tempdir().unwrap();
    let runs = [run("healthy", 50, true), run("no-centering", 30, false)];
    let svg = dir.path().join("fig7.svg");
    render_figure(&runs, FigureKind::Collapse, &svg, (1200, 500)).unwrap();
    let text = std::fs::read_to_string(&svg).unwrap();
    for needle in [
        "healthy",
        "no-centering",
        "ln K = 6.93",
        "Teacher entropy h(Pt)",
        "KL(Pt || Ps)",
    ] {
        assert!(text.contains(needle), "{needle} missing");
    }
    let png = dir.path().join("loss.png");
    render_figure(&runs, FigureKind::Loss, &png, (800, 400)).unwrap();
    let picture = image::open(&png).unwrap();
    assert_eq!((picture.width(), picture.height()), (800, 400));
    let knn = dir.path().join("knn.svg");
    render_figure(&runs, FigureKind::Knn, &knn, (800, 400)).unwrap();
    assert!(std::fs::read_to_string(&knn)
        .unwrap()
        .contains("top-1 at random init"));
}

#[test]
fn geometry_figure_draws_the_readings_with_their_reference_lines() {
    let dir = tempfile::tempdir().unwrap();
    let runs = [run("tiny", 40, false)];
    let svg = dir.path().join("geometry.svg");
    render_figure(&runs, FigureKind::Geometry, &svg, (1200, 500)).unwrap();
    let text = std::fs::read_to_string(&svg).unwrap();
    for needle in [
        "Effective rank (RankMe)",
        "d = 96 (every direction)",
        "1/√d = 0.102 (isotropic)",
        "tiny · backbone",
    ] {
        assert!(text.contains(needle), "{needle} missing");
    }
    // Runs written before the readings existed: a message, not an empty figure.
    let mut old = run("old", 10, false);
    for m in &mut old.metrics {
        m.effective_rank = None;
    }
    let err = render_figure(&[old], FigureKind::Geometry, &svg, (800, 400))
        .unwrap_err()
        .to_string();
    assert!(err.contains("effective_rank"), "{err}");
}

#[test]
fn bad_requests_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let runs = [run("a", 5, false)];
    let err = render_figure(
        &runs,
        FigureKind::Collapse,
        &dir.path().join("f.jpg"),
        (400, 300),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("jpg") && err.contains(".svg"), "{err}");
    let err = render_figure(
        &runs,
        FigureKind::Knn,
        &dir.path().join("k.svg"),
        (400, 300),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("knn.csv"), "{err}");
    assert!(PlotRun::read(dir.path()).is_err());
}

#[test]
fn series_csv_has_one_column_per_curve() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.csv");
    write_series_csv(
        &path,
        &[("h(Pt)", &[(0.0, 1.0), (1.0, 2.0)]), ("KL", &[(1.0, 0.5)])],
    )
    .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text, "step,h(Pt),KL\n0,1,\n1,2,0.5\n");
}
