//! The `dinoscope` binary end to end: `train` writes a flushed metrics.csv and the resolved
//! config; bad input exits non-zero with a message instead of a panic.

use std::process::Command;

fn dinoscope() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dinoscope"))
}

/// `--set` overrides for a model that trains in well under a second per step.
pub(crate) const MICRO: [&str; 16] = [
    "--set",
    "model.embed_dim=16",
    "--set",
    "model.depth=1",
    "--set",
    "model.num_heads=2",
    "--set",
    "dino.out_dim=32",
    "--set",
    "dino.hidden_dim=32",
    "--set",
    "dino.bottleneck_dim=16",
    "--set",
    "optim.batch_size_per_gpu=8",
    "--set",
    "data.num_images=64",
];

/// `train` of the micro model on the CPU for `steps` steps into `run`, without progress
/// output; callers add their own flags and environment.
pub(crate) fn train_micro(run: &std::path::Path, steps: usize) -> Command {
    let mut command = dinoscope();
    command
        .args(["train", "--device", "cpu", "--log-every", "0", "--steps"])
        .arg(steps.to_string())
        .arg("--out")
        .arg(run)
        .args(MICRO);
    command
}

#[test]
fn train_writes_metrics_csv_and_resolved_config() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let output = dinoscope()
        .args([
            "train",
            "--steps",
            "5",
            "--device",
            "cpu",
            "--log-every",
            "1",
            "--toggle-at",
            "2:centering=off",
            "--out",
        ])
        .arg(&out)
        .args(MICRO)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("device: CPU"), "{stderr}");
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let mut lines = csv.lines();
    let header = lines.next().unwrap();
    assert!(header.starts_with(
        "step,epoch,loss,teacher_entropy,kl,batch_mean_entropy,teacher_mi,lr,weight_decay,teacher_momentum,teacher_temp,images_per_sec"
    ), "{header}");
    let rows: Vec<_> = lines.collect();
    assert_eq!(rows.len(), 5);
    // The 18 numeric columns of the decomposition (the geometry and `regime` follow).
    let first: Vec<f64> = rows[0]
        .split(',')
        .take(18)
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(first[0], 0.0);
    assert!(
        (first[2] - (first[3] + first[4])).abs() < 1e-4,
        "loss = h + kl: {}",
        rows[0]
    );
    assert!(
        (first[6] - (first[5] - first[3])).abs() < 2e-6,
        "I = h(mean Pt) - h(Pt): {}",
        rows[0]
    );
    // The scripted toggle applies from step 2 on (column 15 = centering).
    let centering: Vec<&str> = rows.iter().map(|r| r.split(',').nth(15).unwrap()).collect();
    assert_eq!(centering, ["1", "1", "0", "0", "0"]);
    // Representation readings every 4 steps (and at the last), within 1 ..= d = 16; the
    // regime column names the diagnosis (too few steps yet).
    assert!(
        header.contains(
            ",ln_k,effective_rank,effective_rank_head,std_normalized,near_zero_directions,rank_rows,regime,"
        ),
        "{header}"
    );
    // DINOv2's tools, appended: the mode says what `centering` = 0/1 meant.
    assert!(
        header.ends_with(",regime,centering_mode,koleo_weight,koleo,koleo_duplicates"),
        "{header}"
    );
    let modes: Vec<&str> = rows.iter().map(|r| r.split(',').nth(24).unwrap()).collect();
    assert_eq!(modes, ["ema", "ema", "off", "off", "off"]);
    let rank_of = |row: &str| row.split(',').nth(18).unwrap().to_string();
    let ranks: Vec<String> = rows.iter().map(|r| rank_of(r)).collect();
    for (step, rank) in ranks.iter().enumerate() {
        if step % 4 == 0 {
            let value: f64 = rank.parse().unwrap();
            assert!((1.0..=16.0).contains(&value), "step {step}: {rank}");
        } else {
            assert_eq!(rank, "", "no reading at step {step}");
        }
    }
    assert!(
        rows.iter()
            .all(|r| r.split(',').nth(23) == Some("warming-up")),
        "{csv}"
    );
    let resolved = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(resolved.contains("embed_dim = 16"), "{resolved}");
    assert!(
        resolved.contains("centering = false"),
        "live toggles folded in: {resolved}"
    );
}

#[test]
fn bad_config_exits_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[dino]\nout_dimm = 5\n").unwrap();
    let output = dinoscope()
        .args(["train", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.toml:2") && stderr.contains("out_dimm"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    let output = dinoscope()
        .args(["train", "--set", "optim.lr=banana"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("optim.lr") || stderr.contains("banana"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn plot_draws_two_trained_runs_as_svg() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["run-alpha", "run-beta"] {
        let output = dinoscope()
            .args([
                "train",
                "--steps",
                "3",
                "--device",
                "cpu",
                "--log-every",
                "0",
                "--out",
            ])
            .arg(dir.path().join(name))
            .args(MICRO)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let fig = dir.path().join("fig7.svg");
    let output = dinoscope()
        .args(["plot", "--runs"])
        .arg(dir.path())
        .arg("--out")
        .arg(&fig)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("2 runs"), "{stdout}");
    let svg = std::fs::read_to_string(&fig).unwrap();
    for needle in ["run-alpha", "run-beta", "ln K = 3.47"] {
        assert!(svg.contains(needle), "{needle} missing from the SVG");
    }
    // The k-NN monitor ran too (the embedded data has labels); the 3-step run is shorter than
    // an epoch, so only the random-init row.
    let knn = std::fs::read_to_string(dir.path().join("run-alpha/knn.csv")).unwrap();
    assert_eq!(knn.lines().count(), 2, "{knn}");
    // Not a run directory.
    let output = dinoscope()
        .args(["plot", "--runs"])
        .arg(dir.path().join("run-alpha/checkpoint-00000003"))
        .arg("--out")
        .arg(dir.path().join("x.png"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(!String::from_utf8_lossy(&output.stderr).contains("panicked"));
}

#[test]
fn resume_continues_the_csv_and_knn_evaluates_saved_weights() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let train = |extra: &[&str]| {
        dinoscope()
            .args(["train", "--device", "cpu", "--log-every", "0"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run.to_str().unwrap();
    let mut args = vec!["--steps", "6", "--checkpoint-every", "3", "--out", out];
    args.extend(MICRO);
    let output = train(&args);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let full = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    // As if killed after step 3: only the first checkpoint survives.
    std::fs::remove_dir_all(run.join("checkpoint-00000006")).unwrap();
    let output = train(&["--resume", out]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("at step 3 of 6"), "{stderr}");
    let resumed = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    // Every column but the wall-clock ones (images_per_sec, step_secs, data_wait_secs).
    let stable = |csv: &str| -> Vec<String> {
        csv.lines()
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                [&f[..11], &f[14..]].concat().join(",")
            })
            .collect()
    };
    assert_eq!(stable(&resumed), stable(&full));
    // Options that would change the run are refused with --resume.
    let output = train(&["--resume", out, "--steps", "9"]);
    assert!(!output.status.success());

    // The student lives in the checkpoints: `attention --student` finds it there.
    let image = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/official_vit/image.png");
    let output = dinoscope()
        .args([
            "attention",
            "--student",
            "--size",
            "32",
            "--weights",
            out,
            "--image",
        ])
        .arg(&image)
        .arg("--out")
        .arg(dir.path().join("maps"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("student"), "{stdout}");

    let output = dinoscope()
        .args([
            "knn",
            "--device",
            "cpu",
            "--weights",
            out,
            "--max-train",
            "64",
            "--max-val",
            "32",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("weights: top-1") && stdout.contains("random init: top-1"),
        "{stdout}"
    );
    assert!(stdout.contains("attention Jaccard best head"), "{stdout}");
    // Weights inside a run: the step to keep without labels and what is on disk.
    assert!(
        stdout.contains("best without labels: step")
            && stdout.contains("checkpoints on disk: checkpoint-00000003, checkpoint-00000006"),
        "{stdout}"
    );
}

/// Issue 14 §1: a non-finite step (injected) stops `train` with exit status 3, names the step,
/// keeps a checkpoint of the last good state with only finite values and no NaN row, and
/// `--resume` continues from it.
#[test]
fn a_non_finite_step_exits_3_and_resume_continues_from_the_last_good_state() {
    for fault in ["nan-loss@5", "nan-grad@5"] {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let output = train_micro(&run, 9)
            .env("DINOSCOPE_FAULT", fault)
            .args(["--checkpoint-every", "2"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(3), "{fault}: {stderr}");
        let what = if fault.starts_with("nan-loss") {
            "loss"
        } else {
            "gradients"
        };
        assert!(
            stderr.contains(&format!("non-finite {what} (NaN) at step 5"))
                && stderr.contains("checkpoint-00000005")
                && stderr.contains("--toggle-at 5:lr_scale=0.5"),
            "{stderr}"
        );
        let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
        assert_eq!(csv.lines().count(), 1 + 5, "{csv}");
        assert!(!csv.to_lowercase().contains("nan"), "{csv}");
        // The saved state is finite: resuming it trains on with finite losses.
        let output = dinoscope()
            .args(["train", "--resume"])
            .arg(&run)
            .args(["--log-every", "0", "--toggle-at", "5:lr_scale=0.5"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
        assert_eq!(csv.lines().count(), 1 + 9, "{csv}");
        assert!(!csv.to_lowercase().contains("nan"), "{csv}");
    }
}

/// Issue 20 case 11: a headless command (no display session) probes for a GPU without
/// libwayland's "XDG_RUNTIME_DIR is invalid" lines.
#[test]
fn a_headless_gpu_probe_prints_no_display_noise() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let output = train_micro(&run, 2).output().unwrap();
    assert!(output.status.success());
    let output = dinoscope()
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("NODEVICE_SELECT")
        .args(["train", "--resume"])
        .arg(&run)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("XDG_RUNTIME_DIR"), "{stderr}");
}

/// Issue 14 §3: the run directory removed while `train` runs stops it with a non-zero exit
/// status naming the path, instead of training on into a file nobody can read.
#[test]
fn train_stops_naming_the_path_when_its_run_directory_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let child = train_micro(&run, 3000)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read_to_string(run.join("metrics.csv")).map_or(0, |csv| csv.lines().count()) < 4
    {
        assert!(std::time::Instant::now() < deadline, "no rows written");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::fs::remove_dir_all(&run).unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&run.join("metrics.csv").display().to_string())
            && stderr.contains("removed or moved")
            && stderr.contains("training stopped"),
        "{stderr}"
    );
}

/// Issue 14 §3, a full disk (injected with `DINOSCOPE_FAULT=write-error@3`): `train` stops
/// naming the file, with the rows written before intact.
#[test]
fn train_stops_on_a_full_disk_naming_the_file_and_keeping_the_rows() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let output = train_micro(&run, 8)
        .env("DINOSCOPE_FAULT", "write-error@3")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&run.join("metrics.csv").display().to_string())
            && stderr.contains("No space left on device")
            && stderr.contains("training stopped"),
        "{stderr}"
    );
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 3, "steps 0..=2 intact: {csv}");
}
