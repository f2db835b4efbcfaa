//! TensorBoard events beside a run, read back with TensorBoard's own loader
//! (`scripts/read_tb_events.py`: `EventAccumulator`, which checks every record's CRC): every
//! `metrics.csv` and `knn.csv` number is there under its tag at its step, the toggles and the
//! regime as text, `dinoscope watch`'s attention as PNG images.
//!
//! The reader needs the `tensorboard` PyPI package: `.ci/run` installs it into a venv and sets
//! `DINOSCOPE_TB_PYTHON`; elsewhere a `python3` that imports it is used, and without one these
//! tests say so and stop (under CI, where it must exist, they fail).

use dinoscope::store::tensorboard::tag_of;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn dinoscope() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dinoscope"))
}

/// A Python that imports `tensorboard`, or `None` (outside CI) when there is none.
fn tb_python() -> Option<String> {
    let candidates = std::env::var("DINOSCOPE_TB_PYTHON")
        .ok()
        .into_iter()
        .chain(["python3".to_string()]);
    for python in candidates {
        let ok = Command::new(&python)
            .args(["-c", "import tensorboard"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(python);
        }
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must provide the tensorboard package (.ci/run sets DINOSCOPE_TB_PYTHON)"
    );
    eprintln!(
        "SKIPPED: no python with the tensorboard package (pip install tensorboard, or run .ci/run)"
    );
    None
}

/// What TensorBoard's loader reads from `tb_dir`.
fn read_events(python: &str, tb_dir: &Path) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/read_tb_events.py");
    let output = Command::new(python)
        .arg(script)
        .arg(tb_dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Every non-empty numeric cell of a CSV (but `step` and `skip`) is the scalar of its
/// column's tag at its row's step, as the f32 TensorBoard stores; and no tag has points the
/// file lacks.
fn assert_csv_in_events(csv_path: &Path, events: &Value, skip: &[&str]) {
    let mut reader = csv::Reader::from_path(csv_path).unwrap();
    let header = reader.headers().unwrap().clone();
    let step_at = header.iter().position(|h| h == "step").unwrap();
    let mut expected: std::collections::BTreeMap<String, Vec<(u64, f32)>> = Default::default();
    for record in reader.records() {
        let record = record.unwrap();
        let step: u64 = record[step_at].parse().unwrap();
        for (name, cell) in header.iter().zip(record.iter()) {
            if name == "step" || skip.contains(&name) {
                continue;
            }
            if let Ok(value) = cell.parse::<f64>() {
                expected
                    .entry(tag_of(name))
                    .or_default()
                    .push((step, value as f32));
            }
        }
    }
    assert!(!expected.is_empty(), "{}", csv_path.display());
    for (tag, points) in expected {
        let read: Vec<(u64, f32)> = events["scalars"][&tag]
            .as_array()
            .unwrap_or_else(|| panic!("no scalars under {tag}"))
            .iter()
            .map(|p| (p[0].as_u64().unwrap(), p[1].as_f64().unwrap() as f32))
            .collect();
        assert_eq!(read, points, "{tag} of {}", csv_path.display());
    }
}

fn texts(events: &Value, tag: &str) -> Vec<(u64, String)> {
    events["text"][tag]
        .as_array()
        .unwrap_or_else(|| panic!("no text under {tag}: {events}"))
        .iter()
        .map(|p| (p[0].as_u64().unwrap(), p[1].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn a_trained_runs_events_hold_every_metrics_and_knn_number() {
    let Some(python) = tb_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let output = crate::cli::train_micro(&run, 8)
        .args([
            "--set",
            "data.num_images=32",
            "--toggle-at",
            "3:centering=off",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let files: Vec<_> = std::fs::read_dir(run.join("tb"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].starts_with("events.out.tfevents."), "{files:?}");
    let events = read_events(&python, &run.join("tb"));
    assert_csv_in_events(&run.join("metrics.csv"), &events, &[]);
    // knn.csv's epoch is the metrics rows' (schedule/epoch).
    assert_csv_in_events(&run.join("knn.csv"), &events, &["epoch"]);
    for tag in [
        "loss/total",
        "loss/teacher_entropy",
        "loss/kl",
        "loss/batch_mean_entropy",
        "schedule/lr",
        "knn/top1",
        "toggles/centering",
    ] {
        assert!(events["scalars"].get(tag).is_some(), "{tag}: {events}");
    }
    assert_eq!(
        texts(&events, "toggles/applied"),
        [(3, "centering off".to_string())]
    );
    let regimes = texts(&events, "health/regime");
    assert_eq!(regimes[0].0, 0, "the first row's regime: {regimes:?}");
    let rows = dinoscope::store::run::read_step_metrics(&run.join("metrics.csv")).unwrap();
    for pair in regimes.windows(2) {
        assert_ne!(pair[0].1, pair[1].1, "text only at a change: {regimes:?}");
    }
    assert_eq!(
        regimes.last().unwrap().1,
        rows.last().unwrap().regime.word()
    );
    let config = texts(&events, "run/config");
    assert!(config[0].1.contains("[dino]"), "{config:?}");
}

#[test]
fn no_tensorboard_writes_no_events_and_a_failed_write_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("off");
    let output = crate::cli::train_micro(&run, 2)
        .args(["--set", "data.knn_every_epochs=0", "--no-tensorboard"])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(!run.join("tb").exists());
    // `tb` taken by a file: the events cannot be written, the run goes on.
    let run = dir.path().join("blocked");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("tb"), b"not a folder").unwrap();
    let output = crate::cli::train_micro(&run, 3)
        .args(["--set", "data.knn_every_epochs=0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("TensorBoard events"), "{stderr}");
    assert_eq!(
        stderr.matches("TensorBoard events").count(),
        1,
        "said once: {stderr}"
    );
    let rows = dinoscope::store::run::read_step_metrics(&run.join("metrics.csv")).unwrap();
    assert_eq!(rows.len(), 3);
}

#[test]
fn a_watched_runs_events_hold_its_rows_and_attention_images() {
    let Some(python) = tb_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/official_run");
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    for entry in std::fs::read_dir(&fixture).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), run.join(entry.file_name())).unwrap();
    }
    let out = dir.path().join("watched");
    let output = dinoscope()
        .arg("watch")
        .arg(&run)
        .args(["--once", "--probe"])
        .arg(&run)
        .arg("--out")
        .arg(&out)
        .args([
            "--heads",
            "2",
            "--global-crop",
            "16",
            "--local-crop",
            "8",
            "--local-crops",
            "2",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let events = read_events(&python, &out.join("tb"));
    assert_csv_in_events(&out.join("metrics.csv"), &events, &[]);
    let photos = dinoscope::data::sample_photos();
    let images = events["images"].as_object().unwrap();
    assert_eq!(images.len(), photos.len(), "{images:?}");
    for (tag, points) in images {
        assert!(tag.starts_with("attention/"), "{tag}");
        let steps: Vec<u64> = points
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                assert_eq!(p[3], Value::Bool(true), "a PNG: {p}");
                assert!(p[1].as_u64().unwrap() > 0 && p[2].as_u64().unwrap() > 0);
                p[0].as_u64().unwrap()
            })
            .collect();
        assert_eq!(steps, [0, 2], "{tag}: one per evaluated epoch");
    }
}
