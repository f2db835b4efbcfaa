//! `WatchEngine`: one followed official run with every policy around its checkpoints, as
//! [`Engine`](super::engine::Engine) is one trained run around its steps. `dinoscope watch`
//! prints its events and the app's watch thread forwards them, so each policy exists once:
//!
//! - the output folder: `DIR.dinoscope` beside the watched folder unless given, never inside it
//!   ([`WatchEngine::out_dir`]);
//! - the wait for the first complete checkpoint, whose pickled `args` say how the run trains
//!   ([`WatchEngine::wait_for_first_checkpoint`]);
//! - the settings: the user's (flags, the app's fields), then `DIR.watch.toml`, then those
//!   `args`, then main_dino.py's defaults, each source said in the same words, every value
//!   through `train`'s config ranges ([`WatchPlan::resolve`]);
//! - the stable-file rule: a checkpoint counts once its size and time held between two looks;
//!   what is there when watching starts is all evaluated, afterwards the newest wins so a slow
//!   probe never falls behind ([`WatchEngine::poll`]);
//! - each evaluated checkpoint as the [`Watcher`] reports it, after one
//!   [`WatchEvent::Started`] with the run's shape (the training engine's [`RunStart`]).
//!
//! A checkpoint from file to printed line: `WatchEngine::poll` → `Watcher::poll` (stable, new)
//! → `Watcher::evaluate` (probe, row, maps, k-NN, written) → `WatchEvent::Evaluated` → the CLI's
//! `print_event` or the worker's `Event::Metrics`.

use super::engine::RunStart;
use super::watch::{WatchEvent, Watcher};
use super::watch_checks::{check_out_dir, check_settings, default_out_dir, SettingSources};
use super::watch_settings::{WatchOverrides, WatchSettings};
use crate::store::official_run::{has_complete_checkpoint, run_args};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The settings a watch uses and where they came from, in the words both front ends say.
#[derive(Clone, Debug)]
pub struct WatchPlan {
    pub settings: WatchSettings,
    /// `DIR.watch.toml`, when it gave values.
    pub file: Option<PathBuf>,
    /// The checkpoint whose `args` gave values, and `name value` of each.
    pub from_args: Option<(PathBuf, Vec<String>)>,
    /// `flag value` taken from main_dino.py because no source said.
    pub assumed: Vec<String>,
}

impl WatchPlan {
    /// The user's values (`flags`, then `file`: `DIR.watch.toml` as read by
    /// [`WatchOverrides::read_file`]), else the newest complete checkpoint's `args`, else
    /// main_dino.py's defaults; every value through `train`'s ranges, the error naming its
    /// source.
    pub fn resolve(
        dir: &Path,
        flags: &WatchOverrides,
        file: Option<&WatchOverrides>,
    ) -> Result<Self, String> {
        let given = flags.clone().or(file.cloned().unwrap_or_default());
        let args = run_args(dir);
        let resolved = WatchSettings::resolve(&given, args.as_ref().map(|(_, a)| a));
        let file_path = WatchOverrides::file_for(dir);
        let sources = SettingSources {
            flags,
            file: file.map(|f| (file_path.as_path(), f)),
            args: args.as_ref().map(|(path, a)| (path.as_path(), a)),
        };
        let patch_px = args
            .as_ref()
            .and_then(|(_, a)| a.get("patch_size"))
            .and_then(|v| v.as_usize());
        check_settings(&resolved.settings, &sources, patch_px)?;
        Ok(Self {
            settings: resolved.settings,
            file: file.map(|_| file_path),
            from_args: args
                .filter(|_| !resolved.from_args.is_empty())
                .map(|(path, _)| (path, resolved.from_args)),
            assumed: resolved.assumed,
        })
    }

    /// Where each setting came from, one sentence per source (none for the user's flags).
    pub fn sources_said(&self) -> Vec<String> {
        let mut said = Vec::new();
        if let Some(file) = &self.file {
            said.push(format!(
                "settings from {} (flags win over it)",
                file.display()
            ));
        }
        if let Some((file, values)) = &self.from_args {
            said.push(format!(
                "from the run's args ({}): {}",
                file.file_name().unwrap_or_default().to_string_lossy(),
                values.join(", ")
            ));
        }
        if !self.assumed.is_empty() {
            said.push(format!(
                "assumed (main_dino.py's defaults; give the run's own if they differ): {}",
                self.assumed.join(", ")
            ));
        }
        said
    }

    /// "0.04", or "0.04 to 0.07 over 30 epochs" with a warm-up.
    pub fn teacher_temp_said(&self) -> String {
        let s = &self.settings;
        if s.warmup_teacher_temp_epochs > 0 && s.warmup_teacher_temp != s.teacher_temp {
            format!(
                "{} to {} over {} epochs",
                s.warmup_teacher_temp, s.teacher_temp, s.warmup_teacher_temp_epochs
            )
        } else {
            format!("{}", s.teacher_temp)
        }
    }
}

/// One followed run: the [`Watcher`] and the policies around its looks.
pub struct WatchEngine {
    watcher: Watcher,
    dir: PathBuf,
    /// Looks so far: the first two evaluate everything there (a file counts at its second).
    looks: usize,
    /// `--once`: evaluate every complete checkpoint there, then stop.
    once: bool,
    /// Whether [`WatchEvent::Started`] was said.
    started: bool,
}

impl WatchEngine {
    /// The output folder for watching `dir`: `out`, else `DIR.dinoscope` beside it; refused
    /// inside the watched folder or over a dinoscope training run.
    pub fn out_dir(dir: &Path, out: Option<&Path>) -> Result<PathBuf, String> {
        let out = out.map_or_else(|| default_out_dir(dir), Path::to_path_buf);
        check_out_dir(dir, &out)?;
        Ok(out)
    }

    /// Whether the run has a complete checkpoint yet (one that has only just started has
    /// none; its first holds the `args` that say how it trains).
    pub fn has_first_checkpoint(dir: &Path) -> bool {
        has_complete_checkpoint(dir)
    }

    /// Waits for the run's first complete checkpoint, looking every `nap`; `false` when
    /// `stop` came first.
    pub fn wait_for_first_checkpoint(dir: &Path, nap: Duration, stop: &AtomicBool) -> bool {
        while !has_complete_checkpoint(dir) {
            if !sleep_unless_stopped(nap, stop) {
                return false;
            }
        }
        true
    }

    /// Follows `dir` with this watcher (its settings, probe and output folder set).
    pub fn new(dir: &Path, watcher: Watcher) -> Self {
        Self {
            watcher,
            dir: dir.to_path_buf(),
            looks: 0,
            once: false,
            started: false,
        }
    }

    /// Evaluates every complete checkpoint there and ends ([`Self::is_done`] after two looks).
    pub fn once(mut self, once: bool) -> Self {
        self.once = once;
        self
    }

    /// One look: new log lines and complete checkpoints (all of them during the first two
    /// looks and with `once`, else the newest), `Started` before the first evaluated one.
    pub fn poll(&mut self) -> Vec<WatchEvent> {
        let all = self.once || self.looks < 2;
        self.looks += 1;
        let watcher = &mut self.watcher;
        let events = crate::device::on_compute_pool(|| watcher.poll(all));
        let mut out = Vec::with_capacity(events.len() + 1);
        for event in events {
            if let (WatchEvent::Evaluated { shape, .. }, false) = (&event, self.started) {
                self.started = true;
                out.push(WatchEvent::Started(RunStart {
                    device: "watching".into(),
                    dataset: format!("official run {}", self.dir.display()),
                    total_steps: 0,
                    iters_per_epoch: 1,
                    shape: *shape,
                }));
            }
            out.push(event);
        }
        out
    }

    /// Whether a `once` watch has had its two looks.
    pub fn is_done(&self) -> bool {
        self.once && self.looks >= 2
    }

    /// Looks every `pause` until done or `stop`, handing each event to `on_event`.
    pub fn follow(
        &mut self,
        pause: Duration,
        stop: &AtomicBool,
        mut on_event: impl FnMut(WatchEvent),
    ) {
        loop {
            for event in self.poll() {
                on_event(event);
            }
            if self.is_done() || stop.load(Ordering::SeqCst) {
                break;
            }
            sleep_unless_stopped(pause, stop);
        }
    }
}

/// Sleeps `duration` in short naps, waking early when `stop` is set (so a stop is quick);
/// `false` when stopped.
pub fn sleep_unless_stopped(duration: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + duration;
    while Instant::now() < until {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep(
            Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())),
        );
    }
    !stop.load(Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_says_each_source_in_one_wording_and_the_out_folder_stays_outside() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        std::fs::write(WatchOverrides::file_for(&run), "teacher_temp = 0.07\n").unwrap();
        let flags = WatchOverrides {
            warmup_teacher_temp_epochs: Some(5),
            ..WatchOverrides::default()
        };
        let file = WatchOverrides::read_file(&run).unwrap();
        let plan = WatchPlan::resolve(&run, &flags, file.as_ref()).unwrap();
        let said = plan.sources_said();
        assert!(
            said[0].contains("run.watch.toml") && said[0].contains("flags win"),
            "{said:?}"
        );
        assert!(plan.from_args.is_none(), "no checkpoint, no args");
        assert!(
            said[1].starts_with("assumed (main_dino.py's defaults")
                && said[1].contains("--local-crop 96")
                && !said[1].contains("--teacher-temp"),
            "{said:?}"
        );
        assert_eq!(plan.teacher_temp_said(), "0.04 to 0.07 over 5 epochs");
        // A bad value is refused with its source named.
        let bad = WatchOverrides {
            teacher_temp: Some(0.0),
            ..WatchOverrides::default()
        };
        let err = WatchPlan::resolve(&run, &bad, None).unwrap_err();
        assert!(err.contains("--teacher-temp 0"), "{err}");
        // The output folder: beside by default, never inside.
        let beside = WatchEngine::out_dir(&run, None).unwrap();
        assert_eq!(beside.file_name().unwrap(), "run.dinoscope");
        assert_eq!(beside.parent(), run.canonicalize().unwrap().parent());
        let err = WatchEngine::out_dir(&run, Some(&run.join("out"))).unwrap_err();
        assert!(err.contains("inside the watched folder"), "{err}");
    }

    #[test]
    fn a_wait_ends_when_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let stop = AtomicBool::new(true);
        assert!(!WatchEngine::has_first_checkpoint(dir.path()));
        assert!(!WatchEngine::wait_for_first_checkpoint(
            dir.path(),
            Duration::from_millis(10),
            &stop
        ));
        assert!(!sleep_unless_stopped(Duration::from_secs(60), &stop));
    }
}
