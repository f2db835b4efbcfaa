//! Issue 30 §1: SIGTERM, SIGINT and SIGHUP to the desktop app do what closing its window does
//! (the step in flight finishes, a checkpoint is written, the process exits 0), and the run
//! resumes from that checkpoint. The real binary, in a real window under Xvfb.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An Xvfb server on a display it picks itself (`-displayfd`), killed on drop.
struct Xvfb {
    child: Child,
    display: String,
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A started Xvfb, or why there is none. Where Xvfb is required (CI sets
/// `DINOSCOPE_REQUIRE_XVFB=1`, `.ci/run` installs it) its absence fails the test.
fn start_xvfb() -> Option<Xvfb> {
    let spawned = Command::new("Xvfb")
        .args([
            "-displayfd",
            "1",
            "-screen",
            "0",
            "1400x900x24",
            "-nolisten",
            "tcp",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(err) => {
            let reason =
                format!("Xvfb cannot be started ({err}); install it (apt-get install xvfb)");
            assert!(
                std::env::var_os("DINOSCOPE_REQUIRE_XVFB").is_none(),
                "DINOSCOPE_REQUIRE_XVFB is set: {reason}"
            );
            eprintln!("skipped: {reason}");
            return None;
        }
    };
    // Xvfb writes the display number once it accepts clients.
    let mut line = String::new();
    let stdout = child.stdout.take().expect("piped");
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let number = line.trim();
    assert!(!number.is_empty(), "Xvfb printed no display number");
    Some(Xvfb {
        child,
        display: format!(":{number}"),
    })
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

/// Waits for `child` to exit within `secs`; kills it and fails otherwise.
fn wait_exit(child: &mut Child, secs: u64, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not exit within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The rows of `metrics.csv` in `run` (0 while it does not exist).
fn rows(run: &Path) -> Vec<usize> {
    dinoscope::store::run::read_step_metrics(&run.join("metrics.csv"))
        .map(|rows| rows.iter().map(|r| r.step).collect())
        .unwrap_or_default()
}

/// The one run folder under `root`, once there is one.
fn run_dir(root: &Path) -> Option<PathBuf> {
    std::fs::read_dir(root)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.join("config.toml").is_file())
}

/// Steps of the run's complete checkpoints (`checkpoint-<step>/`).
fn checkpoints(run: &Path) -> Vec<usize> {
    let mut steps: Vec<usize> = std::fs::read_dir(run)
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().into_owned();
            name.strip_prefix("checkpoint-")?.parse().ok()
        })
        .collect();
    steps.sort();
    steps
}

/// Polls until `done` holds, failing with `what` after `secs`.
fn until(secs: u64, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn signals_to_the_app_save_a_checkpoint_that_resumes() {
    let Some(xvfb) = start_xvfb() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The micro model, long enough never to finish on its own.
    let mut config = dinoscope::config::Config::preset("tiny")
        .unwrap()
        .with_overrides(
            &crate::cli::MICRO
                .chunks(2)
                .map(|pair| pair[1].to_string())
                .collect::<Vec<_>>(),
        )
        .unwrap();
    config.optim.epochs = 10_000;
    config.optim.warmup_epochs = 1;
    config.data.knn_every_epochs = 0;
    let config_path = dir.path().join("micro.toml");
    std::fs::write(&config_path, config.to_toml()).unwrap();
    let runtime = dir.path().join("xdg");
    std::fs::create_dir(&runtime).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    for name in ["TERM", "INT", "HUP"] {
        let runs = dir.path().join(format!("runs-{name}"));
        let log = dir.path().join(format!("app-{name}.log"));
        let mut app = Command::new(env!("CARGO_BIN_EXE_dinoscope"))
            .arg("--config")
            .arg(&config_path)
            .args(["--autostart", "--device", "cpu", "--runs-dir"])
            .arg(&runs)
            .env("DISPLAY", &xvfb.display)
            .env_remove("WAYLAND_DISPLAY")
            .env("XDG_RUNTIME_DIR", &runtime)
            // eframe's remembered preferences stay in the test's folder.
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .env("HOME", dir.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut run = None;
        until(240, &format!("SIG{name}: the app's first rows"), || {
            if let Some(status) = app.try_wait().unwrap() {
                let stderr = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("the app exited early ({status}): {stderr}");
            }
            run = run_dir(&runs);
            run.as_deref().is_some_and(|r| rows(r).len() >= 5)
        });
        let run = run.unwrap();
        let before = checkpoints(&run);
        signal(app.id(), name);
        let status = wait_exit(&mut app, 120, &format!("the app after SIG{name}"));
        let stderr = std::fs::read_to_string(&log).unwrap();
        assert!(status.success(), "SIG{name}: {status}: {stderr}");
        assert!(
            stderr.contains("saving a checkpoint"),
            "SIG{name}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        // The step in flight finished: its row is there, and the checkpoint is of every row.
        let steps = rows(&run);
        let expected: Vec<usize> = (0..steps.len()).collect();
        assert_eq!(steps, expected, "SIG{name}: rows without gaps");
        let saved = checkpoints(&run);
        assert_eq!(
            saved.last(),
            Some(&steps.len()),
            "SIG{name}: a checkpoint of the last step (before the signal: {before:?})"
        );
        assert!(
            !before.contains(&steps.len()),
            "SIG{name}: written on the signal"
        );
        if name != "TERM" {
            continue;
        }
        // The run resumes from it (the CLI, stopped by SIGTERM in turn, as it documents).
        let resume_log = dir.path().join("resume.log");
        let mut resumed = Command::new(env!("CARGO_BIN_EXE_dinoscope"))
            .args(["train", "--device", "cpu", "--log-every", "1", "--resume"])
            .arg(&run)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&resume_log).unwrap())
            .spawn()
            .unwrap();
        let before = steps.len();
        until(120, "the resumed run's new rows", || {
            rows(&run).len() >= before + 3
        });
        signal(resumed.id(), "TERM");
        let status = wait_exit(&mut resumed, 120, "the resumed run after SIGTERM");
        let stderr = std::fs::read_to_string(&resume_log).unwrap();
        assert!(status.success(), "{status}: {stderr}");
        assert!(
            stderr.contains(&format!("at step {before} of")),
            "resumed from the app's checkpoint: {stderr}"
        );
        let after = rows(&run);
        assert_eq!(after, (0..after.len()).collect::<Vec<_>>(), "{stderr}");
        assert_eq!(checkpoints(&run).last(), Some(&after.len()));
    }
}
