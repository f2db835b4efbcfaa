//! The soak log (`--soak-log FILE`): every [`SOAK_EVERY`] the app appends one CSV row of what
//! could grow in a long session — resident memory, frame time, the worker's event queue, the
//! attention history and its texture cache, the runs and their rows — so an hour under Xvfb
//! shows whether anything grows without bound (RELIABILITY.md, `dinoscope plot --soak`).

use super::DinoscopeApp;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Time between rows.
pub const SOAK_EVERY: Duration = Duration::from_secs(10);

use crate::store::soak_figure::SOAK_HEADER;

pub struct SoakLog {
    path: PathBuf,
    started: Instant,
    next: Instant,
}

impl SoakLog {
    /// Starts the file with its header; `None` (said in the status line by the caller) when it
    /// cannot be written.
    pub fn create(path: PathBuf) -> std::io::Result<Self> {
        std::fs::write(&path, format!("{SOAK_HEADER}\n"))?;
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
        let row = format!(
            "{:.1},{:.2},{median:.2},{p95:.2},{},{},{},{},{},{rows},{}\n",
            started.elapsed().as_secs_f64(),
            resident_mib(),
            self.worker.as_ref().map_or(0, |w| w.pending_events()),
            self.state.attention_history.len(),
            self.state.distance_history.len(),
            self.attention.texture_count(),
            self.state.runs.len(),
            self.state.current_run().map_or(0, |r| r.steps()),
        );
        let written = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut file| file.write_all(row.as_bytes()));
        if let Err(err) = written {
            let message = format!("soak log {} stopped: {err}", path.display());
            self.soak = None;
            self.state.message(super::state::Level::Warning, message);
        }
    }
}
