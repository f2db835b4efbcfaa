//! The verdict on crafted truth (issue 28): official-format checkpoints whose teachers are known
//! (tests/fixtures/official_verdict, written by scripts/make_verdict_fixture.py with the
//! official model code) are named for what they are, one checkpoint at a time, by the same
//! rules that write the trainer's `regime` column; and the decomposition behind each verdict,
//! I included, matches what the official code computes.

use dinoscope::analysis::health::Regime;
use dinoscope::store::rows::MetricsRow;
use std::path::{Path, PathBuf};

fn fixture(run: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/official_verdict")
        .join(run)
}

/// The number after `"key": ` in the reference's entry for `file` (a flat JSON object each).
fn reference(run: &str, file: &str, key: &str) -> f64 {
    let text = std::fs::read_to_string(fixture(run).join("reference.json")).unwrap();
    let entry = &text[text.find(&format!("\"{file}\"")).unwrap()..];
    let entry = &entry[..entry.find('}').unwrap()];
    let value = &entry[entry.find(&format!("\"{key}\": ")).unwrap() + key.len() + 4..];
    let end = value.find([',', '\n']).unwrap_or(value.len());
    value[..end].trim().parse().unwrap()
}

/// `dinoscope watch --once` on a copy of the fixture folder, on its own probe crops; the rows
/// it wrote and what it printed.
fn watch_once(run: &str) -> (Vec<MetricsRow>, String) {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join(run);
    std::fs::create_dir_all(&folder).unwrap();
    for entry in std::fs::read_dir(fixture(run)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), folder.join(entry.file_name())).unwrap();
    }
    let out = dir.path().join("watched");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dinoscope"))
        .arg("watch")
        .arg(&folder)
        .args(["--once", "--probe"])
        .arg(&folder)
        .arg("--out")
        .arg(&out)
        .args(["--heads", "2", "--global-crop", "16", "--local-crop", "8"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows = dinoscope::store::run::read_step_metrics(&out.join("metrics.csv")).unwrap();
    (rows, stdout)
}

fn assert_matches_reference(run: &str, file: &str, row: &MetricsRow) {
    for (name, ours) in [
        ("loss", row.loss),
        ("teacher_entropy", row.teacher_entropy),
        ("kl", row.kl),
        ("batch_mean_entropy", row.batch_mean_entropy),
        ("teacher_mi", row.teacher_mi.unwrap()),
    ] {
        let expected = reference(run, file, name);
        // The CSV keeps 6 decimals.
        assert!(
            (ours - expected).abs() < 2e-5,
            "{run}/{file}: {name} {ours} vs the official {expected}"
        );
    }
}

/// The audit's case: epoch 0's teacher exactly uniform, epoch 1's sending every image to one
/// prototype. Averaged over checkpoints, both read "healthy"; one at a time, each is named.
#[test]
fn a_uniform_then_one_prototype_teacher_is_named_at_each_checkpoint() {
    let (rows, stdout) = watch_once("collapse_run");
    assert_eq!(rows.iter().map(|r| r.epoch).collect::<Vec<_>>(), [0, 1]);
    assert_matches_reference("collapse_run", "checkpoint0000.pth", &rows[0]);
    assert_matches_reference("collapse_run", "checkpoint0001.pth", &rows[1]);
    // The student still differs from the uniform teacher (KL 2.4): still uniform collapse.
    assert!(rows[0].kl > 2.0, "{:?}", rows[0]);
    assert_eq!(rows[0].regime, Regime::Uniform, "{:?}", rows[0]);
    assert_eq!(rows[1].regime, Regime::OnePrototype, "{:?}", rows[1]);
    assert!(
        stdout.contains("uniform (collapsed: uniform teacher)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("one-prototype (collapsed: one prototype)"),
        "{stdout}"
    );
    // main_dino.py's cosine momentum at the end of each epoch of 100, not the base value.
    let momentum = |epoch: f64| {
        1.0 - 0.004 * 0.5 * (1.0 + (std::f64::consts::PI * (epoch + 1.0) / 100.0).cos())
    };
    for row in &rows {
        assert!(
            (row.teacher_momentum - momentum(row.epoch as f64)).abs() < 1e-6,
            "{row:?}"
        );
    }
    assert!(rows[1].teacher_momentum > rows[0].teacher_momentum);
    // The probe's 32 global rows are 2 × d for this 16-wide network: a rank the rules may use,
    // read over all 32 rows.
    for row in &rows {
        assert_eq!(row.rank_rows, Some(32), "{row:?}");
        assert!(row.effective_rank.is_some_and(|r| r <= 16.0), "{row:?}");
    }
}

/// A very low teacher temperature with a center: every target one-hot, but the batch spread
/// over many prototypes. Not a collapse.
#[test]
fn a_sharp_but_diverse_teacher_is_not_called_a_collapse() {
    let (rows, stdout) = watch_once("sharp_run");
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_matches_reference("sharp_run", "checkpoint0000.pth", row);
    assert!(row.teacher_entropy < 0.05 * 64f64.ln(), "{row:?}");
    assert_eq!(row.regime, Regime::SharpDiverse, "{row:?}");
    assert!(!row.regime.is_collapse());
    assert!(stdout.contains("sharp-diverse"), "{stdout}");
}
