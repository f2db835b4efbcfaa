//! A seeded run's `metrics.csv` and `knn.csv` are byte-identical to the files recorded before
//! the engine refactor (timing columns blanked), whether the CLI or the app's worker drives it.
//! This pins every policy both front ends share: toggles between steps, the k-NN period and
//! its random-init row, the number formats of each column.
//!
//! The references are exact only on the machine kind that recorded them (the CPU's matmul
//! kernels round differently on AVX2 and AVX-512). Re-record, after checking why they moved,
//! with `DINOSCOPE_BLESS=1 cargo test --release --test it golden`.

use dinoscope::config::Config;
use dinoscope::config::Toggle;
use dinoscope::device::DeviceChoice;
use dinoscope::worker::{Command, Event, WorkerHandle, WorkerStatus};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const STEPS: usize = 12;

/// The `--set` overrides of the CLI run, applied the same way to the worker's config.
const SETS: [&str; 13] = [
    "model.embed_dim=16",
    "model.depth=1",
    "model.num_heads=2",
    "dino.out_dim=32",
    "dino.hidden_dim=32",
    "dino.bottleneck_dim=16",
    "dino.local_crops_number=2",
    "optim.batch_size_per_gpu=8",
    "data.num_images=64",
    "data.knn_every_epochs=1",
    "seed=7",
    // Soft enough targets that h(Pt), KL and h(mean Pt) all move in 12 steps.
    "dino.warmup_teacher_temp=0.06",
    "dino.teacher_temp=0.06",
];

/// Scripted toggles: (before step, CLI text, toggle).
fn toggles() -> Vec<(usize, &'static str, Toggle)> {
    vec![
        (4, "4:centering=off", Toggle::Centering(false)),
        (8, "8:teacher_temp=0.03", Toggle::TeacherTemp(0.03)),
    ]
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden_run")
}

/// The file with the named columns emptied (wall-clock times differ on every run).
fn without_timings(path: &Path, timing_columns: &[&str]) -> String {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let blank: Vec<usize> = timing_columns
        .iter()
        .map(|c| header.iter().position(|h| h == c).unwrap())
        .collect();
    let mut out = header.join(",") + "\n";
    for line in lines {
        let fields: Vec<&str> = line
            .split(',')
            .enumerate()
            .map(|(i, f)| if blank.contains(&i) { "" } else { f })
            .collect();
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    out
}

fn check_against_golden(run_dir: &Path, who: &str) {
    let files = [
        (
            "metrics.csv",
            &["images_per_sec", "step_secs", "data_wait_secs"][..],
        ),
        ("knn.csv", &["eval_secs"][..]),
    ];
    for (name, timing) in files {
        let got = without_timings(&run_dir.join(name), timing);
        let golden = golden_dir().join(name);
        if std::env::var_os("DINOSCOPE_BLESS").is_some() {
            std::fs::write(&golden, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&golden)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", golden.display()));
        assert!(
            got == want,
            "{who}: {name} differs from {}\n--- got ---\n{got}\n--- want ---\n{want}",
            golden.display()
        );
    }
}

#[test]
fn cli_run_matches_the_golden_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_dinoscope"));
    command.args(["train", "--steps", &STEPS.to_string(), "--device", "cpu"]);
    command.args(["--log-every", "100", "--out"]).arg(&out);
    for (_, text, _) in toggles() {
        command.args(["--toggle-at", text]);
    }
    for set in SETS {
        command.args(["--set", set]);
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    check_against_golden(&out, "CLI");
}

#[test]
fn worker_run_matches_the_golden_metrics() {
    let sets: Vec<String> = SETS.iter().map(|s| s.to_string()).collect();
    let config = Config::preset("tiny")
        .unwrap()
        .with_overrides(&sets)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let worker = WorkerHandle::spawn(DeviceChoice::Cpu, Arc::new(|| {})).unwrap();
    worker
        .send(Command::Start {
            run_id: 1,
            config: Box::new(config),
            run_dir: Some(run_dir.clone()),
            total_steps: Some(STEPS),
            paused: true,
        })
        .unwrap();
    let scripted = toggles();
    for step in 0..STEPS {
        for (_, _, toggle) in scripted.iter().filter(|(at, _, _)| *at == step) {
            worker.send(Command::Set(toggle.clone())).unwrap();
        }
        worker.send(Command::Step).unwrap();
        // One step at a time: the command queue is bounded and toggles must land in order.
        wait_for(
            &worker,
            |e| matches!(e, Event::Metrics { metrics, .. } if metrics.step == step),
        );
    }
    worker.send(Command::Stop).unwrap();
    wait_for(&worker, |e| {
        matches!(
            e,
            Event::Status {
                status: WorkerStatus::Finished,
                ..
            }
        )
    });
    check_against_golden(&run_dir, "worker");
}

fn wait_for(worker: &WorkerHandle, mut done: impl FnMut(&Event) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if let Some(event) = worker.recv_timeout(Duration::from_millis(100)) {
            if let Event::Error(message) = &event {
                panic!("worker error: {message}");
            }
            if done(&event) {
                return;
            }
        }
    }
    panic!("timed out waiting for the worker");
}
