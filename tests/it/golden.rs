//! A seeded run's `metrics.csv` and `knn.csv` are byte-identical to the files recorded before
//! the engine refactor (timing columns blanked), whether the CLI or the app's worker drives it.
//! This pins every policy both front ends share: toggles between steps, the k-NN period and
//! its random-init row, the number formats of each column.
//!
//! The references are exact only on the machine kind that recorded them: the CPU's matmul
//! kernels round differently on AVX2 and AVX-512 (measured: one loss differs in its 6th
//! decimal). `MACHINE` next to them names that kind; on it the files must match byte for
//! byte, elsewhere every text cell and integer must match and every decimal agree within one
//! unit of its last printed place plus a relative 1e-5, far below what any change to
//! the maths moves. Re-record, after checking why they
//! moved, with `DINOSCOPE_BLESS=1 cargo test --release --test it golden`.

use dinoscope::config::Config;
use dinoscope::config::{CenteringMode, Toggle};
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
        (4, "4:centering=off", Toggle::Centering(CenteringMode::Off)),
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

/// The kind of CPU kernels this machine runs (gemm and our GELU pick AVX-512 at run time).
fn machine_kind() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            return "x86_64 avx512f".into();
        }
        if std::is_x86_feature_detected!("avx2") {
            return "x86_64 avx2".into();
        }
    }
    std::env::consts::ARCH.to_string()
}

/// Cells equal as text, or decimals within a last-place unit plus a relative 1e-5: the same run computed
/// with another machine kind's rounding.
fn agree_up_to_rounding(got: &str, want: &str) -> Result<(), String> {
    let (got_lines, want_lines): (Vec<&str>, Vec<&str>) =
        (got.lines().collect(), want.lines().collect());
    if got_lines.len() != want_lines.len() {
        return Err(format!(
            "{} lines, want {}",
            got_lines.len(),
            want_lines.len()
        ));
    }
    for (row, (g, w)) in got_lines.iter().zip(&want_lines).enumerate() {
        let (g_cells, w_cells): (Vec<&str>, Vec<&str>) =
            (g.split(',').collect(), w.split(',').collect());
        if g_cells.len() != w_cells.len() {
            return Err(format!("line {row}: {g} vs {w}"));
        }
        for (a, b) in g_cells.iter().zip(&w_cells) {
            let close = match (a.parse::<f64>(), b.parse::<f64>()) {
                // A decimal may also round the other way in its last printed place.
                (Ok(x), Ok(y)) if b.contains('.') => {
                    (x - y).abs() <= last_place(b) + 1e-5 * y.abs()
                }
                _ => a == b,
            };
            if !close {
                return Err(format!("line {row}: `{a}` vs `{b}` in\n{g}\n{w}"));
            }
        }
    }
    Ok(())
}

/// One unit in the last printed place of a decimal (`0.240618` → 1e-6; `5.000000e-4` → 1e-10).
fn last_place(text: &str) -> f64 {
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (text, 0),
    };
    let decimals = mantissa.split_once('.').map_or(0, |(_, d)| d.len()) as i32;
    10f64.powi(exponent - decimals)
}

fn check_against_golden(run_dir: &Path, who: &str) {
    let machine_file = golden_dir().join("MACHINE");
    if std::env::var_os("DINOSCOPE_BLESS").is_some() {
        std::fs::write(&machine_file, machine_kind() + "\n").unwrap();
    }
    let recorded_on = std::fs::read_to_string(&machine_file).unwrap_or_default();
    let same_kind = recorded_on.trim() == machine_kind();
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
        if same_kind {
            assert!(
                got == want,
                "{who}: {name} differs from {}\n--- got ---\n{got}\n--- want ---\n{want}",
                golden.display()
            );
        } else if let Err(difference) = agree_up_to_rounding(&got, &want) {
            panic!(
                "{who}: {name} differs from {} (recorded on {}, this is {}) beyond rounding: {difference}",
                golden.display(),
                recorded_on.trim(),
                machine_kind()
            );
        }
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

#[test]
fn another_machine_kind_may_round_the_last_place_but_nothing_more() {
    let want = "step,loss,lr,regime\n1,0.240618,5.000000e-4,healthy\n";
    let flipped = "step,loss,lr,regime\n1,0.240617,5.000001e-4,healthy\n";
    assert_eq!(agree_up_to_rounding(flipped, want), Ok(()));
    for wrong in [
        "step,loss,lr,regime\n1,0.240718,5.000000e-4,healthy\n",
        "step,loss,lr,regime\n2,0.240618,5.000000e-4,healthy\n",
        "step,loss,lr,regime\n1,0.240618,5.000000e-4,uniform\n",
        "step,loss,lr,regime\n1,0.240618,5.100000e-4,healthy\n",
        "step,loss,lr,regime\n",
    ] {
        assert!(agree_up_to_rounding(wrong, want).is_err(), "{wrong}");
    }
    assert_eq!(last_place("2.0394"), 1e-4);
}
