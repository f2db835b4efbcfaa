//! The ablation study: a seeded micro study reproduces the paper's directions; `dinoscope ablate`
//! writes the comparison; the app's dialog starts a study and the comparison view shows it.

use dinoscope::analysis::health::Regime;
use dinoscope::config::study::StudySpec;
use dinoscope::store::rows::{read_rows_from, StudyRow};
use dinoscope::train::study::Study;
use std::process::Command;

/// The micro model of `training.rs` (its three regimes separate within 150 steps), with one
/// k-NN evaluation at the end instead of one per epoch.
const MICRO_STUDY: [&str; 19] = [
    "model.embed_dim=32",
    "model.depth=2",
    "model.num_heads=2",
    "dino.out_dim=64",
    "dino.hidden_dim=64",
    "dino.bottleneck_dim=32",
    "dino.local_crops_number=2",
    "dino.teacher_temp=0.02",
    "dino.warmup_teacher_temp=0.02",
    "data.image_size=32",
    "data.global_crop_size=16",
    "data.local_crop_size=8",
    "data.num_images=256",
    "data.knn_every_epochs=1000",
    "optim.batch_size_per_gpu=32",
    "optim.epochs=20",
    "optim.warmup_epochs=1",
    "optim.lr=0.008",
    "seed=0",
];

const STUDY_STEPS: usize = 150;

fn micro_spec(steps: usize) -> StudySpec {
    let mut spec = StudySpec::paper("tiny");
    spec.name = "micro".into();
    spec.set = MICRO_STUDY.iter().map(|s| s.to_string()).collect();
    spec.steps = Some(steps);
    spec
}

/// Paper Table 7 and Fig. 7 in one study, as far as they hold on every seed tried (0, 1, 2)
/// at this size: without centering one-hot collapse, without sharpening uniform collapse,
/// without a momentum teacher no healthy run (KL 3.9–4.9 against 0.8–0.9 for the full method,
/// and a lower effective rank). The paper's k-NN at chance for no momentum does not hold on
/// every seed here (25.8 / 36.7 / 47.3 % against 50.0 / 43.8 / 43.0 % for full), so it is
/// reported, not asserted.
#[test]
fn micro_study_reproduces_the_papers_directions() {
    let dir = tempfile::tempdir().unwrap();
    let mut study = Study::new(
        micro_spec(STUDY_STEPS),
        dir.path(),
        burn::prelude::Device::flex(),
    )
    .unwrap();
    // Interleaved, as the app runs it: every arm advances in turn.
    let mut order = Vec::new();
    while let Some(index) = study.next_interleaved() {
        if order.len() < 10 {
            order.push(index);
        }
        study.step(index).unwrap();
    }
    assert_eq!(order, [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]);
    let files = study.write_outputs("test machine").unwrap();
    let rows: Vec<StudyRow> = read_rows_from(&dir.path().join("study.csv")).unwrap();
    let row = |name: &str| rows.iter().find(|r| r.variant == name).unwrap().clone();
    let (full, no_centering, no_sharpening, no_momentum) = (
        row("full"),
        row("no-centering"),
        row("no-sharpening"),
        row("no-momentum"),
    );
    let ln_k = 64f64.ln();
    for r in &rows {
        assert_eq!(r.steps, STUDY_STEPS, "{}", r.variant);
        assert!(r.secs > 0.0);
    }
    assert!(
        full.final_teacher_entropy > 0.5 && full.final_teacher_entropy < ln_k - 0.3,
        "{full:?}"
    );
    assert!(full.final_kl > 0.3, "{full:?}");
    assert_eq!(full.regime, Regime::Healthy, "{full:?}");
    for r in &rows {
        let top1 = r.knn_top1.expect("evaluated at the last step");
        assert!((0.0..=100.0).contains(&top1), "{r:?}");
        assert!(r.random_init_top1.is_some(), "{r:?}");
    }
    assert!(
        no_centering.final_teacher_entropy < 0.15,
        "{no_centering:?}"
    );
    assert!(no_centering.regime.is_collapse(), "{no_centering:?}");
    assert!(
        ln_k - no_sharpening.final_teacher_entropy < 0.05,
        "{no_sharpening:?}"
    );
    assert_eq!(no_sharpening.regime, Regime::Uniform, "{no_sharpening:?}");
    assert!(no_momentum.regime.is_collapse(), "{no_momentum:?}");
    assert!(
        no_momentum.final_kl > 2.0 * full.final_kl,
        "the student cannot follow a teacher that is itself: {no_momentum:?}"
    );
    assert!(
        no_momentum.effective_rank.unwrap() < full.effective_rank.unwrap(),
        "{no_momentum:?} vs {full:?}"
    );
    // The comparison files.
    for name in [
        "study.md",
        "study.toml",
        "collapse.png",
        "collapse.svg",
        "attention.png",
    ] {
        assert!(dir.path().join(name).is_file(), "{name}: {files:?}");
    }
    let md = std::fs::read_to_string(dir.path().join("study.md")).unwrap();
    assert!(
        md.contains("| no-momentum | `dino.momentum_teacher=0`"),
        "{md}"
    );
    assert!(md.contains("0.1 (Table 7 row 2)"), "{md}");
    // Each arm is an ordinary run directory: `plot` and `train --resume` read it.
    for arm in study.arms() {
        assert!(arm.run_dir.join("metrics.csv").is_file());
        assert!(arm.run_dir.join("teacher.bpk").is_file());
    }
    // The study as written runs again the same way.
    let again = StudySpec::from_file(&dir.path().join("study.toml")).unwrap();
    assert_eq!(
        again.variant_configs().unwrap(),
        study.spec.variant_configs().unwrap()
    );
}

#[test]
fn ablate_cli_writes_the_comparison_and_refuses_bad_variants() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("study");
    let mut command = Command::new(env!("CARGO_BIN_EXE_dinoscope"));
    command.args([
        "ablate",
        "--device",
        "cpu",
        "--steps",
        "4",
        "--only-given",
        "--variant",
        "base",
        "--variant",
        "cold:dino.teacher_temp=0.01,dino.warmup_teacher_temp=0.01",
        "--out",
    ]);
    command.arg(&out);
    for set in MICRO_STUDY {
        command.args(["--set", set]);
    }
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stdout.contains("| base |") && stdout.contains("| cold |"),
        "{stdout}"
    );
    let rows: Vec<StudyRow> = read_rows_from(&out.join("study.csv")).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0].variant.as_str(), rows[0].steps), ("base", 4));
    assert!(rows[0].knn_top1.is_some(), "evaluated at its last step");
    let header = std::fs::read_to_string(out.join("study.csv")).unwrap();
    assert!(header.starts_with(
        "variant,final_loss,final_teacher_entropy,final_kl,final_batch_mean_entropy,ln_k,knn_top1,random_init_top1,jaccard,effective_rank,regime,steps,secs,paper_knn_top1"
    ));
    assert!(out.join("cold/config.toml").is_file());
    let cold = std::fs::read_to_string(out.join("cold/config.toml")).unwrap();
    assert!(cold.contains("teacher_temp = 0.01"), "{cold}");

    // A variant that breaks a range is refused before anything trains, naming it.
    let output = Command::new(env!("CARGO_BIN_EXE_dinoscope"))
        .args([
            "ablate",
            "--device",
            "cpu",
            "--variant",
            "hot:dino.teacher_temp=5",
            "--out",
        ])
        .arg(dir.path().join("bad"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("variant `hot`") && stderr.contains("teacher_temp"),
        "{stderr}"
    );
    assert!(!dir.path().join("bad").exists(), "nothing created");
    let output = Command::new(env!("CARGO_BIN_EXE_dinoscope"))
        .args(["ablate", "--variant", "a/b:optim.lr=1"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("run folder"));
}
