//! Issue 14 §2: `train` killed with SIGKILL at any moment (during a step, a CSV append or a
//! checkpoint write) leaves a run that `train --resume` finishes with exactly the metrics of an
//! uninterrupted run: no duplicated or torn rows, no leftover temporary directories, and
//! keep-last pruning never removes the only good checkpoint.

use crate::cli::MICRO;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const STEPS: usize = 12;

fn dinoscope() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dinoscope"))
}

fn train(run: &Path) -> Command {
    let mut command = dinoscope();
    command
        .args(["train", "--device", "cpu", "--log-every", "0"])
        .args(["--steps", &STEPS.to_string()])
        .args(["--checkpoint-every", "1", "--keep-last", "2"])
        .args(["--set", "data.knn_every_epochs=1"])
        .arg("--out")
        .arg(run)
        .args(MICRO);
    command
}

/// A CSV with the wall-clock columns emptied.
fn stable(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let timing: Vec<usize> = ["images_per_sec", "step_secs", "data_wait_secs", "eval_secs"]
        .iter()
        .filter_map(|c| header.iter().position(|h| h == c))
        .collect();
    let mut out = header.join(",") + "\n";
    for line in lines {
        let cells: Vec<&str> = line
            .split(',')
            .enumerate()
            .map(|(i, c)| if timing.contains(&i) { "" } else { c })
            .collect();
        out += &(cells.join(",") + "\n");
    }
    out
}

fn leftovers(run: &Path) -> Vec<String> {
    std::fs::read_dir(run)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_run_killed_at_twenty_moments_resumes_to_the_uninterrupted_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    let started = Instant::now();
    let output = train(&reference).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let run_secs = started.elapsed().as_secs_f64();
    let want_metrics = stable(&reference.join("metrics.csv"));
    let want_knn = stable(&reference.join("knn.csv"));

    // Kill moments spread over the whole run (start-up included), so some land in a step,
    // some in a CSV append and some in a checkpoint write.
    const KILLS: usize = 20;
    let mut resumed_from_checkpoint = 0;
    let mut interrupted = 0;
    for kill in 0..KILLS {
        let run = dir.path().join(format!("run-{kill}"));
        let delay = Duration::from_secs_f64(run_secs * (kill as f64 + 0.5) / KILLS as f64);
        let mut child = train(&run)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        if matches!(child.try_wait(), Ok(None)) {
            interrupted += 1;
        }
        let _ = child.kill(); // SIGKILL; the run may already have finished
        let _ = child.wait();
        let has_checkpoint = !dinoscope::store::checkpoint::list_checkpoints(&run).is_empty();
        if has_checkpoint {
            resumed_from_checkpoint += 1;
            let output = dinoscope()
                .args(["train", "--resume"])
                .arg(&run)
                .args(["--log-every", "0"])
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "kill {kill} after {delay:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        } else {
            // Killed before the first checkpoint: nothing to resume, and resume says so.
            let output = dinoscope()
                .args(["train", "--resume"])
                .arg(&run)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(!output.status.success());
            assert!(
                stderr.contains("no complete checkpoint") || stderr.contains("cannot resume"),
                "kill {kill}: {stderr}"
            );
            continue;
        }
        assert_eq!(
            stable(&run.join("metrics.csv")),
            want_metrics,
            "kill {kill} after {delay:?}: metrics.csv"
        );
        assert_eq!(
            stable(&run.join("knn.csv")),
            want_knn,
            "kill {kill} after {delay:?}: knn.csv"
        );
        assert_eq!(leftovers(&run), Vec::<String>::new(), "kill {kill}");
        let kept = dinoscope::store::checkpoint::list_checkpoints(&run);
        assert_eq!(
            kept.iter().map(|(step, _)| *step).collect::<Vec<_>>(),
            [STEPS - 1, STEPS],
            "kill {kill}: keep-last 2"
        );
    }
    assert!(
        interrupted >= KILLS * 3 / 4,
        "only {interrupted} of {KILLS} kills hit a running process"
    );
    assert!(
        resumed_from_checkpoint >= KILLS / 2,
        "only {resumed_from_checkpoint} of {KILLS} kills happened after a checkpoint"
    );
}
