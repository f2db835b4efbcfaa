//! A run on disk: its directory, the resolved config and `metrics.csv` (one flushed row per
//! step), shared by the CLI and the app so both write the same format.

use crate::config::Config;
use crate::trainer::StepMetrics;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot create run directory {path}: {source}. Pick another --out directory")]
    CreateDir {
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

/// Writes `config.toml` and `metrics.csv` into one run directory.
pub struct RunWriter {
    dir: PathBuf,
    metrics_path: PathBuf,
    metrics: csv::Writer<File>,
    ln_k: f64,
}

impl RunWriter {
    /// Creates `dir` (and parents) and writes the resolved config atomically.
    pub fn create(dir: &Path, config: &Config) -> Result<Self, RunError> {
        std::fs::create_dir_all(dir).map_err(|source| RunError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        write_atomically(&dir.join("config.toml"), config.to_toml().as_bytes())?;
        let metrics_path = dir.join("metrics.csv");
        let file = File::create(&metrics_path).map_err(|source| RunError::Write {
            path: metrics_path.clone(),
            source,
        })?;
        let mut metrics = csv::Writer::from_writer(file);
        metrics
            .write_record(StepMetrics::CSV_HEADER)
            .and_then(|()| metrics.flush().map_err(csv::Error::from))
            .map_err(|err| RunError::Write {
                path: metrics_path.clone(),
                source: std::io::Error::other(err.to_string()),
            })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            metrics_path,
            metrics,
            ln_k: (config.dino.out_dim as f64).ln(),
        })
    }

    /// Reopens a run to continue it from a checkpoint at `first_step`: rows of steps at or
    /// after it (and a torn last line) are dropped, so the file ends up as if never stopped.
    pub fn resume(dir: &Path, first_step: usize, ln_k: f64) -> Result<Self, RunError> {
        let metrics_path = dir.join("metrics.csv");
        let write_error = |source: std::io::Error| RunError::Write {
            path: metrics_path.clone(),
            source,
        };
        let text = std::fs::read_to_string(&metrics_path).unwrap_or_default();
        let mut kept = String::new();
        kept.push_str(&StepMetrics::CSV_HEADER.join(","));
        kept.push('\n');
        for line in text.lines().skip(1) {
            let fields = line.split(',').count();
            let step = line.split(',').next().and_then(|s| s.parse::<usize>().ok());
            if fields == StepMetrics::CSV_HEADER.len() && step.is_some_and(|s| s < first_step) {
                kept.push_str(line);
                kept.push('\n');
            }
        }
        write_atomically(&metrics_path, kept.as_bytes())?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&metrics_path)
            .map_err(write_error)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            metrics_path,
            metrics: csv::Writer::from_writer(file),
            ln_k,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one evaluation to `knn.csv` (created with its header on first use), flushed.
    pub fn append_eval(&self, point: &crate::eval::EvalPoint) -> Result<(), RunError> {
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
        let mut text = String::new();
        if new {
            text.push_str(&crate::eval::EvalPoint::CSV_HEADER.join(","));
            text.push('\n');
        }
        text.push_str(&point.csv_record().join(","));
        text.push('\n');
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(write_error)
    }

    /// Drops evaluations after `last_step` from `knn.csv` (a resumed run redoes them) and
    /// returns the kept rows as (step, epoch, top1, top5, jaccard best head).
    pub fn truncate_evals(&self, last_step: usize) -> Result<Vec<EvalRow>, RunError> {
        let path = self.dir.join(EVAL_FILE);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(Vec::new());
        };
        let mut kept = String::new();
        let mut rows = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if i == 0 {
                kept.push_str(line);
                kept.push('\n');
                continue;
            }
            let fields: Vec<&str> = line.split(',').collect();
            let number = |j: usize| fields.get(j).and_then(|v| v.parse::<f64>().ok());
            if let (Some(step), Some(epoch)) = (number(0), number(1)) {
                if step as usize <= last_step
                    && fields.len() == crate::eval::EvalPoint::CSV_HEADER.len()
                {
                    kept.push_str(line);
                    kept.push('\n');
                    rows.push(EvalRow {
                        step: step as usize,
                        epoch: epoch as usize,
                        top1: number(2),
                        top5: number(3),
                        jaccard: number(4),
                    });
                }
            }
        }
        write_atomically(&path, kept.as_bytes())?;
        Ok(rows)
    }

    /// Appends one row and flushes it, so a crash or Ctrl-C leaves a complete CSV.
    pub fn append(&mut self, metrics: &StepMetrics) -> Result<(), RunError> {
        self.metrics
            .write_record(metrics.csv_record(self.ln_k))
            .and_then(|()| self.metrics.flush().map_err(csv::Error::from))
            .map_err(|err| RunError::Write {
                path: self.metrics_path.clone(),
                source: std::io::Error::other(err.to_string()),
            })
    }

    /// Rewrites `config.toml` (e.g. with live toggles folded in at the end of a run).
    pub fn write_config(&self, config: &Config) -> Result<(), RunError> {
        write_atomically(&self.dir.join("config.toml"), config.to_toml().as_bytes())
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
        .filter(|p| p.join("metrics.csv").is_file())
        .map(|p| {
            let modified = std::fs::metadata(p.join("metrics.csv"))
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (modified, p)
        })
        .collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.0));
    dirs.into_iter().map(|(_, p)| p).collect()
}

/// The rows of a `knn.csv`; a missing or unreadable file gives none.
pub fn read_eval_rows(path: &Path) -> Vec<EvalRow> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            let number = |j: usize| fields.get(j).and_then(|v| v.parse::<f64>().ok());
            Some(EvalRow {
                step: number(0)? as usize,
                epoch: number(1)? as usize,
                top1: number(2),
                top5: number(3),
                jaccard: number(4),
            })
        })
        .collect()
}

/// One row of `knn.csv` read back.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalRow {
    pub step: usize,
    pub epoch: usize,
    pub top1: Option<f64>,
    pub top5: Option<f64>,
    pub jaccard: Option<f64>,
}

/// The rows of a `metrics.csv` back as `StepMetrics` (for continuing a resumed run's curves);
/// a torn last line or rows with missing columns are skipped.
pub fn read_step_metrics(path: &Path) -> Result<Vec<StepMetrics>, RunError> {
    let text = std::fs::read_to_string(path).map_err(|source| RunError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let column = |name: &str| header.iter().position(|h| *h == name);
    let columns: Vec<Option<usize>> = StepMetrics::CSV_HEADER.iter().map(|h| column(h)).collect();
    Ok(lines
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            let get = |i: usize| -> Option<f64> { fields.get(columns[i]?)?.parse().ok() };
            Some(StepMetrics {
                step: get(0)? as usize,
                epoch: get(1)? as usize,
                loss: get(2)?,
                teacher_entropy: get(3)?,
                kl: get(4)?,
                batch_mean_entropy: get(5)?,
                lr: get(6)?,
                weight_decay: get(7)?,
                teacher_momentum: get(8)?,
                teacher_temp: get(9)?,
                images_per_sec: get(10)?,
                step_secs: get(11)?,
                data_wait_secs: get(12)?,
                local_crops: get(13)? as usize,
                centering: get(14)? != 0.0,
                sharpening: get(15)? != 0.0,
                warnings: Vec::new(),
            })
        })
        .collect())
}

/// Write to a temporary sibling, then rename: readers never see a half-written file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), RunError> {
    let err = |source| RunError::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
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
