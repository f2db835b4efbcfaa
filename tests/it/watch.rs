//! Watching an official run (issue 16): a checkpoint of the official training code loads with
//! both heads and its center, and the decomposition on a fixed probe batch matches what the
//! official code computes from it (tests/fixtures/official_run, written by
//! scripts/make_official_run_fixture.py with torch 2.15.0).

use burn::prelude::*;
use dinoscope::store::npy::read_npy;
use dinoscope::store::weights::training::load_training_checkpoint;
use dinoscope::store::weights::ArchOverrides;
use dinoscope::train::loss::LossOptions;
use dinoscope::train::probe::probe_decomposition;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/official_run")
        .join(name)
}

fn crops(name: &str, device: &Device) -> Tensor<4> {
    let array = read_npy(&fixture(name)).unwrap();
    let shape: [usize; 4] = array.shape.clone().try_into().unwrap();
    Tensor::<4>::from_data(TensorData::new(array.to_f32().unwrap(), shape), device)
}

/// The number after `"key": ` in the reference's entry for `file` (a flat JSON object each).
fn reference(file: &str, key: &str) -> f64 {
    let text = std::fs::read_to_string(fixture("probe_reference.json")).unwrap();
    let entry = &text[text.find(&format!("\"{file}\"")).unwrap()..];
    let entry = &entry[..entry.find('}').unwrap()];
    let value = &entry[entry.find(&format!("\"{key}\": ")).unwrap() + key.len() + 4..];
    let end = value.find([',', '\n']).unwrap_or(value.len());
    value[..end].trim().parse().unwrap()
}

#[test]
fn probe_decomposition_of_official_checkpoints_matches_pytorch() {
    let device = Device::flex();
    let globals = crops("probe_globals.npy", &device);
    let locals = crops("probe_locals.npy", &device);
    let overrides = ArchOverrides {
        num_heads: Some(2),
        ..Default::default()
    };
    for file in ["checkpoint0000.pth", "checkpoint0002.pth", "checkpoint.pth"] {
        let checkpoint = load_training_checkpoint(&fixture(file), &overrides, &device).unwrap();
        assert_eq!(checkpoint.head_dims, (32, 16, 64));
        let options = LossOptions {
            student_temp: 0.1,
            teacher_temp: reference(file, "teacher_temp"),
            centering: true,
        };
        let stats = probe_decomposition(
            &checkpoint.student,
            &checkpoint.teacher,
            globals.clone(),
            Some(locals.clone()),
            &checkpoint.center,
            options,
        )
        .unwrap();
        for (name, ours) in [
            ("loss", stats.loss),
            ("teacher_entropy", stats.teacher_entropy),
            ("kl", stats.kl),
            ("batch_mean_entropy", stats.batch_mean_entropy),
        ] {
            let expected = reference(file, name);
            let diff = (ours - expected).abs();
            println!("{file} {name}: {ours:.7} vs {expected:.7} (diff {diff:.1e})");
            assert!(diff < 1e-5, "{file}: {name} differs by {diff}");
        }
    }
    // Epoch 0 and 2 differ (the run trained), and the last two files are the same state.
    assert!(
        (reference("checkpoint0000.pth", "loss") - reference("checkpoint.pth", "loss")).abs() > 0.1
    );
}

#[test]
fn a_backbone_only_file_is_not_a_training_checkpoint() {
    let device = Device::flex();
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/official_vit/backbone.pth");
    let err = load_training_checkpoint(&path, &ArchOverrides::default(), &device)
        .err()
        .expect("a flat backbone has no teacher entry");
    assert!(err.to_string().contains("backbone.pth"), "{err}");
}

/// The fixture's run settings, as `dinoscope watch` takes them.
const RUN_SETTINGS: [&str; 14] = [
    "--heads",
    "2",
    "--global-crop",
    "16",
    "--local-crop",
    "8",
    "--local-crops",
    "2",
    "--teacher-temp",
    "0.07",
    "--warmup-teacher-temp",
    "0.04",
    "--warmup-teacher-temp-epochs",
    "2",
];

fn copy_fixture(to: &Path, skip: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(fixture("")).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !skip.contains(&name.as_str()) {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

#[test]
fn watch_once_writes_a_run_folder_plot_reads() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    copy_fixture(&run, &[]);
    let out = dir.path().join("watched");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dinoscope"))
        .arg("watch")
        .arg(&run)
        .args(["--once", "--probe"])
        .arg(&run)
        .arg("--out")
        .arg(&out)
        .args(RUN_SETTINGS)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        !stderr.contains("assumed"),
        "every setting was given: {stderr}"
    );
    assert!(stdout.contains("checkpoint0000.pth (epoch 0"), "{stdout}");
    let rows = dinoscope::store::run::read_step_metrics(&out.join("metrics.csv")).unwrap();
    let epochs: Vec<usize> = rows.iter().map(|r| r.epoch).collect();
    assert_eq!(epochs, [0, 2], "one row per epoch");
    for (row, file) in rows
        .iter()
        .zip(["checkpoint0000.pth", "checkpoint0002.pth"])
    {
        assert!((row.loss - reference(file, "loss")).abs() < 1e-5, "{row:?}");
        assert!((row.kl - reference(file, "kl")).abs() < 1e-5, "{row:?}");
        assert!((row.teacher_temp - reference(file, "teacher_temp")).abs() < 1e-9);
    }
    let log = std::fs::read_to_string(out.join("log.csv")).unwrap();
    assert_eq!(log.lines().count(), 4, "{log}");
    let figure = dir.path().join("fig.png");
    let plot = std::process::Command::new(env!("CARGO_BIN_EXE_dinoscope"))
        .args(["plot", "--runs"])
        .arg(&out)
        .arg("--out")
        .arg(&figure)
        .output()
        .unwrap();
    assert!(
        plot.status.success(),
        "{}",
        String::from_utf8_lossy(&plot.stderr)
    );

    // Without the run's settings, the defaults are used and said.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dinoscope"))
        .arg("watch")
        .arg(&run)
        .args(["--once", "--heads", "2", "--out"])
        .arg(dir.path().join("defaults"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("assumed") && stderr.contains("--teacher-temp 0.04"),
        "{stderr}"
    );
    // Not a run folder.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dinoscope"))
        .arg("watch")
        .arg(dir.path())
        .arg("--once")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}

/// A checkpoint written in two halves (in place, slowly) is read only once complete and
/// unchanged; a new log line arrives as it is written; when two complete checkpoints arrive
/// between looks, the newest is evaluated and the other listed as skipped.
#[test]
fn a_half_written_checkpoint_is_never_read() {
    use dinoscope::train::watch::{ProbeBatch, WatchEvent, WatchSettings, Watcher};
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    copy_fixture(&run, &["checkpoint.pth", "checkpoint0002.pth", "log.txt"]);
    let log = std::fs::read_to_string(fixture("log.txt")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    std::fs::write(run.join("log.txt"), format!("{}\n", lines[0])).unwrap();
    let read = |name: &str| {
        let array = read_npy(&fixture(name)).unwrap();
        let shape: [usize; 4] = array.shape.clone().try_into().unwrap();
        (array.to_f32().unwrap(), shape)
    };
    let probe = ProbeBatch {
        globals: read("probe_globals.npy"),
        locals: Some(read("probe_locals.npy")),
    };
    let settings = WatchSettings {
        teacher_temp: 0.07,
        warmup_teacher_temp: 0.04,
        warmup_teacher_temp_epochs: 2,
        heads: Some(2),
        ..WatchSettings::default()
    };
    let mut watcher = Watcher::new(
        &run,
        &dir.path().join("out"),
        settings,
        probe,
        Device::flex(),
    );
    let evaluated = |events: &[WatchEvent]| -> Vec<String> {
        events
            .iter()
            .filter_map(|e| match e {
                WatchEvent::Evaluated { file, .. } => {
                    Some(file.file_name().unwrap().to_string_lossy().into_owned())
                }
                _ => None,
            })
            .collect()
    };
    let first = watcher.poll(false);
    assert!(matches!(first[0], WatchEvent::Log(_)), "{first:?}");
    assert!(
        evaluated(&first).is_empty(),
        "a file is read only after a second look"
    );
    assert_eq!(evaluated(&watcher.poll(false)), ["checkpoint0000.pth"]);

    // checkpoint.pth, in place: the first half, then (two looks later) the rest.
    let bytes = std::fs::read(fixture("checkpoint.pth")).unwrap();
    let path = run.join("checkpoint.pth");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    for _ in 0..3 {
        assert!(
            evaluated(&watcher.poll(false)).is_empty(),
            "half a file is never read"
        );
    }
    std::fs::write(&path, &bytes).unwrap();
    std::fs::write(run.join("log.txt"), format!("{}\n{}\n", lines[0], lines[1])).unwrap();
    let events = watcher.poll(false);
    assert!(events
        .iter()
        .any(|e| matches!(e, WatchEvent::Log(row) if row.epoch == 1)));
    assert!(evaluated(&events).is_empty(), "it just changed");
    assert_eq!(evaluated(&watcher.poll(false)), ["checkpoint.pth"]);
    assert!(evaluated(&watcher.poll(false)).is_empty(), "evaluated once");

    // Two complete checkpoints between looks: the newest wins, the other is listed.
    std::fs::copy(
        fixture("checkpoint0002.pth"),
        run.join("checkpoint0002.pth"),
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::copy(fixture("checkpoint.pth"), &path).unwrap();
    assert!(evaluated(&watcher.poll(false)).is_empty());
    let events = watcher.poll(false);
    assert_eq!(evaluated(&events), ["checkpoint.pth"]);
    assert!(events.iter().any(
        |e| matches!(e, WatchEvent::Skipped(files) if files.iter().any(|f| f.ends_with("checkpoint0002.pth")))
    ));
}
