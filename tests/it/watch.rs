//! Watching an official run (issue 16): a checkpoint of the official training code loads with
//! both heads and its center, and the decomposition on a fixed probe batch matches what the
//! official code computes from it (tests/fixtures/official_run, written by
//! scripts/make_official_run_fixture.py with torch 2.15.0).

use burn::prelude::*;
use dinoscope::store::npy::read_npy;
use dinoscope::store::weights::training::load_training_checkpoint;
use dinoscope::store::weights::ArchOverrides;
use dinoscope::train::loss::{LossOptions, TeacherCentering};
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
            centering: TeacherCentering::Ema,
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

/// main_dino.py's `args` Namespace, as the fixture script saved it, read from the pickle.
#[test]
fn the_pickled_args_of_an_official_checkpoint_are_read() {
    use dinoscope::store::official_args::{read_official_args, ArgValue};
    for file in ["checkpoint.pth", "checkpoint0000.pth", "checkpoint0002.pth"] {
        let args = read_official_args(&fixture(file)).unwrap();
        assert_eq!(args["arch"].as_str(), Some("vit_small"), "{file}");
        assert_eq!(args["patch_size"].as_usize(), Some(4));
        assert_eq!(args["out_dim"].as_usize(), Some(64));
        assert_eq!(args["norm_last_layer"], ArgValue::Bool(true));
        assert_eq!(args["teacher_temp"].as_f64(), Some(0.07));
        assert_eq!(args["warmup_teacher_temp"].as_f64(), Some(0.04));
        assert_eq!(args["warmup_teacher_temp_epochs"].as_usize(), Some(2));
        assert_eq!(args["momentum_teacher"].as_f64(), Some(0.9));
        assert_eq!(args["local_crops_number"].as_usize(), Some(2));
        assert_eq!(args["global_crops_scale"].as_pair(), Some((0.4, 1.0)));
        assert_eq!(args["local_crops_scale"].as_pair(), Some((0.05, 0.4)));
        // A key memoised earlier in the file (by the optimizer state) and reused here.
        assert_eq!(args["weight_decay"].as_f64(), Some(0.04));
        assert_eq!(args["optimizer"].as_str(), Some("adamw"));
        assert_eq!(args["data_path"].as_str(), Some("/path/to/imagenet/train/"));
        // Every field of the Namespace (34, as Python's unpickler reads it).
        assert_eq!(args.len(), 34, "{args:?}");
    }
    // A file without a Namespace (a flat backbone), or not a zip: none, not a guess.
    let backbone =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/official_vit/backbone.pth");
    assert_eq!(read_official_args(&backbone), None);
    assert_eq!(read_official_args(&fixture("log.txt")), None);
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
    // Every evaluated checkpoint drew the teacher's attention of each bundled photo.
    let photos = dinoscope::data::sample_photos().len();
    for epoch in ["epoch0000", "epoch0002"] {
        let drawn = std::fs::read_dir(out.join("attention"))
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                let name = name.to_string_lossy();
                name.starts_with(epoch) && name.ends_with(".png")
            })
            .count();
        assert_eq!(drawn, photos, "{epoch}");
    }
    assert!(
        stdout.contains(&format!("attention of {photos} images")),
        "{stdout}"
    );
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

    // Without the run's settings, those in the checkpoints' pickled args are used and said;
    // what args do not hold (main_dino.py's fixed crop sizes) is said as assumed.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dinoscope"))
        .arg("watch")
        .arg(&run)
        .args(["--once", "--heads", "2", "--global-crop", "32", "--out"])
        .arg(dir.path().join("defaults"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("from the run's args (checkpoint.pth)")
            && stderr.contains("teacher_temp 0.07")
            && stderr.contains("warmup_teacher_temp_epochs 2")
            && stderr.contains("local_crops_number 2"),
        "{stderr}"
    );
    assert!(
        stderr.contains("assumed") && stderr.contains("--local-crop 96"),
        "{stderr}"
    );
    assert!(!stderr.contains("--teacher-temp 0.04"), "{stderr}");
    // The default probe (16 images, 32 global rows) also gives the representation readings.
    let rows =
        dinoscope::store::run::read_step_metrics(&dir.path().join("defaults/metrics.csv")).unwrap();
    assert_eq!(rows.len(), 2);
    for row in &rows {
        let rank = row.effective_rank.unwrap();
        assert!(rank > 1.0 && rank <= 16.0, "{row:?}");
        assert!(row.std_normalized.is_some() && row.effective_rank_head.is_some());
    }
    // The same settings from run.watch.toml beside the folder (what the app reads too).
    std::fs::write(
        dir.path().join("run.watch.toml"),
        "heads = 2\nglobal_crop_px = 32\n",
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dinoscope"))
        .arg("watch")
        .arg(&run)
        .args(["--once", "--out"])
        .arg(dir.path().join("from-file"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("settings from") && stderr.contains("run.watch.toml"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("from-file/metrics.csv")).unwrap(),
        std::fs::read_to_string(dir.path().join("defaults/metrics.csv")).unwrap(),
        "the file's values, as the flags gave them"
    );
    std::fs::remove_file(dir.path().join("run.watch.toml")).unwrap();
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

/// With labelled splits, every checkpoint's teacher and student are evaluated by k-NN and the
/// rows land in knn.csv beside metrics.csv (one per epoch).
#[test]
fn watch_with_labelled_splits_writes_each_checkpoints_knn() {
    use dinoscope::data::{Dataset, SyntheticShapes};
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    copy_fixture(&run, &["checkpoint.pth"]);
    // An ImageFolder per split: the embedded shapes, one subfolder per class.
    for (split, seed, count) in [("train", 1, 24), ("val", 2, 12)] {
        let shapes = SyntheticShapes::new(seed, 32, count);
        for i in 0..shapes.len() {
            let sample = shapes.get(i).unwrap();
            let class = dir
                .path()
                .join(split)
                .join(SyntheticShapes::CLASS_NAMES[sample.label]);
            std::fs::create_dir_all(&class).unwrap();
            sample.image.save(class.join(format!("{i}.png"))).unwrap();
        }
    }
    let out = dir.path().join("watched");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dinoscope"))
        .arg("watch")
        .arg(&run)
        .args(["--once", "--probe"])
        .arg(&run)
        .arg("--knn-train")
        .arg(dir.path().join("train"))
        .arg("--knn-val")
        .arg(dir.path().join("val"))
        .arg("--out")
        .arg(&out)
        .args(RUN_SETTINGS)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.matches("k-NN top-1").count(), 2, "{stdout}");
    let rows = dinoscope::store::run::read_eval_rows(&out.join("knn.csv"));
    assert_eq!(rows.iter().map(|r| r.epoch).collect::<Vec<_>>(), [0, 2]);
    for row in rows {
        for top in [row.top1, row.top5, row.student_top1, row.student_top5] {
            assert!(top.is_some_and(|t| (0.0..=100.0).contains(&t)), "{row:?}");
        }
        assert!(row.top5 >= row.top1);
    }
    // One split alone is refused before any work.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dinoscope"))
        .arg("watch")
        .arg(&run)
        .arg("--once")
        .arg("--knn-train")
        .arg(dir.path().join("train"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}
