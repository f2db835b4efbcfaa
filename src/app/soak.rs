//! The soak log (`--soak-log FILE`): every [`SOAK_EVERY`] the app appends one CSV row of what
//! could grow in a long session — resident memory, frame time, the worker's event queue, the
//! attention history and its texture cache, the runs and their rows — so an hour under Xvfb
//! shows whether anything grows without bound (RELIABILITY.md, `dinoscope plot --soak`).

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

/// What one soak row reads, gathered by the app from its parts.
pub struct SoakReading {
    pub frame_ms: (f32, f32),
    pub worker_events: usize,
    pub attention_snapshots: usize,
    pub distance_points: usize,
    pub textures: usize,
    pub runs: usize,
    pub rows: usize,
    pub current_rows: usize,
}

impl SoakLog {
    /// Whether a row is due now (every [`SOAK_EVERY`]).
    pub fn due(&self, now: Instant) -> bool {
        now >= self.next
    }

    /// Appends one row; the error names the file (the app then stops the log with a warning).
    pub fn append(&mut self, reading: &SoakReading) -> Result<(), String> {
        self.next = Instant::now() + SOAK_EVERY;
        let (median, p95) = reading.frame_ms;
        let row = SoakRow {
            elapsed_secs: self.started.elapsed().as_secs_f64(),
            rss_mib: resident_mib(),
            frame_median_ms: Some(f64::from(median)),
            frame_p95_ms: Some(f64::from(p95)),
            pending_events: Some(reading.worker_events),
            attention_snapshots: Some(reading.attention_snapshots),
            distance_points: Some(reading.distance_points),
            textures: Some(reading.textures),
            runs: Some(reading.runs),
            rows: Some(reading.rows),
            steps: Some(reading.current_rows),
        };
        append_row(&self.path, &row)
            .map_err(|err| format!("soak log {} stopped: {err}", self.path.display()))
    }
}
