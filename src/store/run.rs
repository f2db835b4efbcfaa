//! A run on disk: its directory, the resolved config and `metrics.csv` (one flushed row per
//! step), shared by the CLI and the app so both write the same format.

use crate::config::Config;
use crate::store::cut_back::cut_back;
use crate::store::rows::{read_rows_from, write_rows, EvalRow, MetricsRow};
use crate::store::tensorboard::{EventWriter, RunEvents};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot create run directory {path}: {source}. Pick another directory (--out; in the app, Save run to…)")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Evaluations of a run (k-NN, Jaccard), one row per evaluation.
pub const EVAL_FILE: &str = "knn.csv";
/// A run folder's config, with the live settings folded in at its end.
pub const CONFIG_FILE: &str = "config.toml";
/// One row per training step (per evaluated checkpoint in a watched run).
pub const METRICS_FILE: &str = "metrics.csv";
/// A watched official run's `log.txt` as CSV ([`OfficialLogRow`](crate::store::rows::OfficialLogRow)).
pub const WATCH_LOG_FILE: &str = "log.csv";

/// Writes `config.toml`, `metrics.csv` and `knn.csv` of one run directory, and the same rows
/// as TensorBoard events under `tb/` (on unless [`RunWriter::set_tensorboard`] turns it off).
pub struct RunWriter {
    dir: PathBuf,
    metrics_path: PathBuf,
    metrics: csv::Writer<File>,
    /// Behind a lock so `append_eval(&self)` can write events too.
    events: std::sync::Mutex<Option<RunEvents>>,
}

impl RunWriter {
    /// Creates `dir` (and parents) and writes the resolved config atomically.
    pub fn create(dir: &Path, config: &Config) -> Result<Self, RunError> {
        std::fs::create_dir_all(dir).map_err(|source| RunError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        write_atomically(&dir.join(CONFIG_FILE), config.to_toml().as_bytes())?;
        let metrics_path = dir.join(METRICS_FILE);
        let file = File::create(&metrics_path).map_err(|source| RunError::Write {
            path: metrics_path.clone(),
            source,
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            // The header is written with the first row, from the row type.
            metrics: csv::WriterBuilder::new()
                .has_headers(true)
                .from_writer(file),
            metrics_path,
            events: std::sync::Mutex::new(Some(RunEvents::new(
                EventWriter::new(dir),
                Some(config.to_toml()),
            ))),
        })
    }

    /// Reopens a run to continue it from a checkpoint at `first_step`: rows of steps at or
    /// after it (and a torn last line) are dropped, so the file ends up as if never stopped.
    /// The rows before it are all kept, those today's [`MetricsRow`] cannot parse too
    /// ([`cut_back`]). Returns the rows that parse (the curve so far).
    pub fn resume(dir: &Path, first_step: usize) -> Result<(Self, Vec<MetricsRow>), RunError> {
        let metrics_path = dir.join(METRICS_FILE);
        let write_error = |source: std::io::Error| RunError::Write {
            path: metrics_path.clone(),
            source,
        };
        let (kept, text) = cut_back(
            &metrics_path,
            |row: &MetricsRow| row.step < first_step,
            |step| step < first_step,
        )
        .map_err(|err| write_error(csv_io(err)))?;
        write_atomically(&metrics_path, &text)?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&metrics_path)
            .map_err(write_error)?;
        let writer = Self {
            dir: dir.to_path_buf(),
            metrics_path,
            metrics: csv::WriterBuilder::new()
                .has_headers(false)
                .from_writer(file),
            events: std::sync::Mutex::new(Some(RunEvents::new(
                EventWriter::resumed(dir, first_step),
                None,
            ))),
        };
        Ok((writer, kept))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether rows also go to `tb/` as TensorBoard events (default on; set before the first
    /// row, as `--no-tensorboard` does, and no `tb/` folder is made).
    pub fn set_tensorboard(&mut self, on: bool) {
        let events = self.events.get_mut().unwrap_or_else(|e| e.into_inner());
        match (on, events.is_some()) {
            (false, _) => *events = None,
            (true, false) => *events = Some(RunEvents::new(EventWriter::new(&self.dir), None)),
            (true, true) => {}
        }
    }

    /// Runs `f` on the run's TensorBoard events, when they are on.
    pub fn with_events(&self, f: impl FnOnce(&mut RunEvents)) {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(events) = events.as_mut() {
            f(events);
        }
    }

    /// The `metrics.csv` this writer appends to.
    pub fn metrics_path(&self) -> &Path {
        &self.metrics_path
    }

    /// Appends one evaluation to `knn.csv` (created with its header on first use), synced.
    pub fn append_eval(&self, row: &EvalRow) -> Result<(), RunError> {
        let path = self.dir.join(EVAL_FILE);
        let write_error = |source: std::io::Error| RunError::Write {
            path: path.clone(),
            source,
        };
        let new = !path.exists();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(write_error)?;
        let mut bytes = Vec::new();
        write_rows(&mut bytes, std::slice::from_ref(row), new)
            .map_err(|err| write_error(csv_io(err)))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_data())
            .map_err(write_error)?;
        self.with_events(|events| events.eval(row));
        Ok(())
    }

    /// Drops evaluations after `last_step` from `knn.csv` (a resumed run redoes them; the
    /// earlier ones are all kept, as in [`RunWriter::resume`]) and returns those that parse.
    pub fn truncate_evals(&self, last_step: usize) -> Result<Vec<EvalRow>, RunError> {
        let path = self.dir.join(EVAL_FILE);
        if !path.exists() {
            return Ok(Vec::new());
        }
        let (kept, bytes) = cut_back(
            &path,
            |row: &EvalRow| row.step <= last_step,
            |step| step <= last_step,
        )
        .map_err(|err| RunError::Write {
            path: path.clone(),
            source: csv_io(err),
        })?;
        write_atomically(&path, &bytes)?;
        Ok(kept)
    }

    /// Appends one row and flushes it, so a crash or Ctrl-C leaves a complete CSV. A file
    /// removed or moved away since it was opened is an error: appending to the open handle
    /// would succeed and write nowhere anyone can read.
    pub fn append(&mut self, row: &MetricsRow) -> Result<(), RunError> {
        if !self.metrics_path.is_file() {
            return Err(RunError::Write {
                path: self.metrics_path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the file (or its run directory) was removed or moved while training",
                ),
            });
        }
        self.metrics
            .serialize(row)
            .and_then(|()| self.metrics.flush().map_err(csv::Error::from))
            .map_err(|err| RunError::Write {
                path: self.metrics_path.clone(),
                source: csv_io(err),
            })?;
        self.with_events(|events| events.row(row));
        Ok(())
    }

    /// Rewrites `config.toml` (e.g. with live toggles folded in at the end of a run).
    pub fn write_config(&self, config: &Config) -> Result<(), RunError> {
        write_atomically(&self.dir.join(CONFIG_FILE), config.to_toml().as_bytes())
    }
}

fn csv_io(err: csv::Error) -> std::io::Error {
    match err.into_kind() {
        csv::ErrorKind::Io(err) => err,
        other => std::io::Error::other(format!("{other:?}")),
    }
}

/// Run directories under `root` (those holding a metrics.csv), newest first.
pub fn list_run_dirs(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut dirs: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join(METRICS_FILE).is_file())
        .map(|p| {
            let modified = std::fs::metadata(p.join(METRICS_FILE))
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (modified, p)
        })
        .collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.0));
    dirs.into_iter().map(|(_, p)| p).collect()
}

/// The step with the highest effective rank of a run and that rank: the checkpoint to keep
/// when there are no labels (RankMe's use); the earliest on a tie.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BestRank {
    pub step: usize,
    pub effective_rank: f64,
}

impl BestRank {
    /// `best` after one more reading: a higher rank replaces it, a tie keeps the earlier
    /// step, a non-finite one is ignored. The app follows a live run with this too.
    pub fn with(best: Option<Self>, step: usize, rank: f64) -> Option<Self> {
        match best {
            _ if !rank.is_finite() => best,
            Some(b) if b.effective_rank >= rank => Some(b),
            _ => Some(Self {
                step,
                effective_rank: rank,
            }),
        }
    }

    /// The best of the readings over enough rows to be compared (`health::rank_is_valid`)
    /// for features `embed_dim` wide (0 = unknown: every reading counts).
    pub fn of(rows: &[MetricsRow], embed_dim: usize) -> Option<Self> {
        rows.iter()
            .filter(|row| crate::analysis::health::rank_is_valid(row.rank_rows, embed_dim))
            .filter_map(|row| Some((row.step, row.effective_rank?)))
            .fold(None, |best, (step, rank)| Self::with(best, step, rank))
    }

    /// Of a run directory's `metrics.csv` (the width from its config); `None` without
    /// readings.
    pub fn of_run(dir: &Path) -> Option<Self> {
        let embed_dim = crate::config::Config::from_file(&dir.join(CONFIG_FILE))
            .map(|config| config.vit_arch().embed_dim)
            .unwrap_or(0);
        Self::of(&read_step_metrics(&dir.join(METRICS_FILE)).ok()?, embed_dim)
    }
}

/// The rows of a `knn.csv`; a missing or unreadable file gives none.
pub fn read_eval_rows(path: &Path) -> Vec<EvalRow> {
    read_rows_from(path).unwrap_or_default()
}

/// The rows of a `metrics.csv` (for continuing a resumed run's curves, figures, overlays); a
/// torn last line or rows with missing columns are skipped.
pub fn read_step_metrics(path: &Path) -> Result<Vec<MetricsRow>, RunError> {
    read_rows_from(path).map_err(|source| RunError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes to a uniquely named hidden temporary file in the same directory, syncs it, then
/// renames it over `path`: readers never see a half-written file, a failed write leaves no
/// debris, and no name the user owns (such as `fig.tmp`) is ever touched.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), RunError> {
    let err = |source| RunError::Write {
        path: path.to_path_buf(),
        source: without_temporary_path(source),
    };
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".dinoscope-").suffix(".partial");
    // The mode `File::create` gives (0666 less the umask), not a temporary file's 0600: a
    // figure or CSV the user shares must stay readable once renamed.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let mut file = builder.tempfile_in(dir).map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.as_file().sync_all().map_err(err)?;
    file.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

/// `picture` as a PNG, written with [`write_atomically`]: the file whole or not at all.
pub fn write_png(path: &Path, picture: &image::RgbImage) -> Result<(), RunError> {
    let mut png = std::io::Cursor::new(Vec::new());
    picture
        .write_to(&mut png, image::ImageFormat::Png)
        .map_err(|err| RunError::Write {
            path: path.to_path_buf(),
            source: std::io::Error::other(err.to_string()),
        })?;
    write_atomically(path, png.get_ref())
}

/// tempfile words its I/O errors "<OS error> at path \"<dir>/.dinoscope-XXXX.partial\"" (and
/// hides the OS error from `source()`); the user knows only the file they asked for, which
/// the caller names, so keep the OS error alone.
fn without_temporary_path(err: std::io::Error) -> std::io::Error {
    let text = err.to_string();
    match text.split_once(" at path \"") {
        Some((os_error, _)) => std::io::Error::new(err.kind(), os_error.to_string()),
        None => err,
    }
}

/// A fresh `runs/<stamp>-<preset>` style directory name under `root`.
pub fn new_run_dir(root: &Path, label: &str) -> PathBuf {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut dir = root.join(format!("{stamp}-{label}"));
    let mut n = 1;
    while dir.exists() {
        n += 1;
        dir = root.join(format!("{stamp}-{label}-{n}"));
    }
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn atomically_written_files_get_the_mode_file_create_gives() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let atomic = dir.path().join("fig.png");
        write_atomically(&atomic, b"png").unwrap();
        let plain = dir.path().join("plain.png");
        std::fs::File::create(&plain).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&atomic), mode(&plain));
        assert_eq!(std::fs::read(&atomic).unwrap(), b"png");
    }

    #[test]
    fn the_best_step_is_the_highest_effective_rank_earliest_on_a_tie() {
        let row = |step: usize, rank: Option<f64>| MetricsRow {
            step,
            effective_rank: rank,
            ..MetricsRow::default()
        };
        let rows = [
            row(0, Some(10.0)),
            row(1, None),
            row(4, Some(30.5)),
            row(8, Some(30.5)),
            row(12, Some(f64::NAN)),
            row(16, Some(2.0)),
        ];
        assert_eq!(
            BestRank::of(&rows, 0),
            Some(BestRank {
                step: 4,
                effective_rank: 30.5
            })
        );
        assert_eq!(BestRank::of(&[row(0, None)], 0), None);
        // A reading over fewer than 2d rows is capped by its rows: never the best.
        let capped = [
            MetricsRow {
                rank_rows: Some(32),
                ..row(0, Some(31.0))
            },
            MetricsRow {
                rank_rows: Some(768),
                ..row(1, Some(25.0))
            },
        ];
        assert_eq!(BestRank::of(&capped, 384).map(|b| b.step), Some(1));
    }
}
