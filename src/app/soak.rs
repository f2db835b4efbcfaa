//! The soak log (`--soak-log FILE`): every [`SOAK_EVERY`] the app appends one CSV row of what
//! could grow in a long session — resident memory, frame time, the worker's event queue, the
//! attention history and its texture cache, the runs and their rows — so an hour under Xvfb
//! shows whether anything grows without bound (RELIABILITY.md, `dinoscope plot --soak`).

use super::DinoscopeApp;
use crate::store::rows::{append_row, header_of, SoakRow};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Time between rows.
pub const SOAK_EVERY: Duration = Duration::from_secs(10);

pub struct SoakLog {
    path: PathBuf,
    started: Instant,
    next: Instant,
}

impl SoakLog {
    /// Starts the file with its header; `None` (said in the status line by the caller) when it
    /// cannot be written.
    pub fn create(path: PathBuf) -> std::io::Result<Self> {
        let header = header_of(&SoakRow::default()).map_err(std::io::Error::other)?;
        std::fs::write(&path, format!("{header}\n"))?;
        let now = Instant::now();
        Ok(Self {
            path,
            started: now,
            next: now,
        })
    }
}

/// Resident memory of this process in MiB (Linux `/proc`; 0 elsewhere).
pub fn resident_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
            let kib: f64 = line.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kib / 1024.0)
        })
        .unwrap_or(0.0)
}

impl DinoscopeApp {
    /// Appends a row when one is due; a failed write stops the log with a warning.
    pub(super) fn sample_soak(&mut self) {
        let now = Instant::now();
        let Some(log) = self.soak.as_mut().filter(|log| now >= log.next) else {
            return;
        };
        log.next = now + SOAK_EVERY;
        let (started, path) = (log.started, log.path.clone());
        let (median, p95) = self.frame_time_ms().unwrap_or((0.0, 0.0));
        let rows: usize = self.state.runs.iter().map(|r| r.steps()).sum();
        let row = SoakRow {
            elapsed_secs: started.elapsed().as_secs_f64(),
            rss_mib: resident_mib(),
            frame_median_ms: Some(f64::from(median)),
            frame_p95_ms: Some(f64::from(p95)),
            pending_events: Some(self.worker.as_ref().map_or(0, |w| w.pending_events())),
            attention_snapshots: Some(self.state.attention_history.len()),
            distance_points: Some(self.state.distance_history.len()),
            textures: Some(self.attention.texture_count()),
            runs: Some(self.state.runs.len()),
            rows: Some(rows),
            steps: Some(self.state.current_run().map_or(0, |r| r.steps())),
        };
        let written = append_row(&path, &row);
        if let Err(err) = written {
            let message = format!("soak log {} stopped: {err}", path.display());
            self.soak = None;
            self.state.message(super::state::Level::Warning, message);
        }
    }
}
