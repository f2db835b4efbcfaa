//! Following a run another process trains (the official `main_dino.py` on a cluster): its
//! `log.txt` lines as they appear, and for each new complete checkpoint the decomposition the
//! trainer would report, on a fixed probe batch, with the checkpoint's own center. Results go to
//! a dinoscope run folder (`metrics.csv`, one row per evaluated epoch; `log.csv`), so `plot`,
//! `knn` and the app read it like any run.

use crate::analysis::attention::AttentionMaps;
use crate::analysis::geometry::EmbeddingWindow;
use crate::analysis::health::{Cadence, RegimeWindow, RunShape};
use crate::analysis::knn::EvalData;
use crate::analysis::layers::{maps_of_images, MapLayer};
use crate::config::Config;
use crate::store::official_run::{
    checkpoint_epoch, checkpoint_files, read_official_log_lines, FileState, StableFiles, LOG_FILE,
};
use crate::store::rows::{EvalRow, MetricsRow, OfficialLogRow};
use crate::store::run::{write_atomically, RunWriter, WATCH_LOG_FILE};
use crate::store::weights::training::{load_training_checkpoint, TrainingCheckpoint};
use crate::store::weights::ArchOverrides;
use crate::train::engine::RunStart;
use crate::train::loss::{LossOptions, LossStats, TeacherCentering};
use crate::train::probe::probe_decomposition;
use crate::train::rank_probe::RankProbe;
use crate::train::representation::Reading;
use burn::prelude::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

pub use super::probe::{default_probe_images, ProbeBatch, DEFAULT_PROBE_IMAGES};
use super::watch_checks as checks;
pub use super::watch_settings::{ResolvedSettings, WatchOverrides, WatchSettings};

/// Probe rows (2 global crops per image) below which no representation readings are made
/// from a probe of fixed crops (one without a [`RankProbe`]): the rank of a handful of rows
/// says little.
pub const MIN_PROBE_ROWS_FOR_RANK: usize = 16;

/// What one poll found.
#[derive(Clone, Debug)]
pub enum WatchEvent {
    /// Said once by the [`WatchEngine`](super::watch_engine::WatchEngine), before the first
    /// evaluated checkpoint: the run as the app lists it (one row per epoch).
    Started(RunStart),
    /// A new line of `log.txt`.
    Log(OfficialLogRow),
    /// A checkpoint evaluated on the probe batch.
    Evaluated {
        file: PathBuf,
        /// The row written for it: epoch, the decomposition, teacher temperature, regime.
        row: Box<MetricsRow>,
        /// The teacher's attention maps of the followed images (each head's distance too).
        maps: Vec<(String, AttentionMaps)>,
        /// k-NN of the teacher and the student, when labelled splits were given.
        eval: Option<EvalRow>,
        /// ln K, the probe's images, the backbone's width: what the rules read beyond the row.
        shape: RunShape,
        secs: f64,
    },
    /// Complete checkpoints passed over because a newer one arrived first.
    Skipped(Vec<PathBuf>),
    /// A checkpoint that could not be read (named in the message); the watch goes on.
    Warning(String),
}

pub struct Watcher {
    dir: PathBuf,
    out: PathBuf,
    settings: WatchSettings,
    probe: ProbeBatch,
    /// The rows of the representation readings (`None`: the probe's own global crops).
    rank_probe: Option<RankProbe>,
    device: Device,
    stable: StableFiles,
    /// (size, modification time) of each checkpoint when it was evaluated.
    evaluated: HashMap<PathBuf, (u64, SystemTime)>,
    log: Vec<OfficialLogRow>,
    rows: Vec<MetricsRow>,
    /// Each checkpoint is its own measurement: a window of one row, the bests kept.
    regime: RegimeWindow,
    writer: Option<RunWriter>,
    /// Images whose teacher attention is computed for every checkpoint (and written as
    /// `attention/epoch0002-NAME.png` in the run folder).
    images: Vec<(String, image::RgbImage)>,
    /// Labelled splits: every checkpoint's k-NN (appended to `knn.csv`).
    knn: Option<EvalData>,
    /// Epochs whose k-NN is in `knn.csv`.
    evaluated_epochs: Vec<usize>,
    /// Checkpoints and log lines that cannot be read, said once each.
    unreadable: super::watch_checks::UnreadableInputs,
    /// Rows, k-NN and attention also as TensorBoard events under `OUT/tb/`.
    tensorboard: bool,
}

impl Watcher {
    pub fn new(
        dir: &Path,
        out: &Path,
        settings: WatchSettings,
        probe: ProbeBatch,
        device: Device,
    ) -> Self {
        Self {
            dir: dir.to_path_buf(),
            out: out.to_path_buf(),
            settings,
            probe,
            rank_probe: None,
            device,
            stable: StableFiles::default(),
            evaluated: HashMap::new(),
            log: Vec::new(),
            rows: Vec::new(),
            regime: RegimeWindow::new(Cadence::CHECKPOINTS),
            writer: None,
            images: Vec::new(),
            knn: None,
            evaluated_epochs: Vec::new(),
            unreadable: Default::default(),
            tensorboard: true,
        }
    }

    /// Evaluates every checkpoint's teacher and student by k-NN on these splits.
    pub fn with_knn(mut self, data: EvalData) -> Self {
        self.knn = Some(data);
        self
    }

    /// Reads the representation from 2d rows of these images' global crops (topped up with
    /// embedded shapes), instead of the probe's own rows.
    pub fn with_rank_probe(mut self, images: Vec<image::RgbImage>) -> Self {
        self.rank_probe = Some(RankProbe::new(
            images,
            self.settings.augment.clone(),
            self.settings.seed,
        ));
        self
    }

    /// What the rules read beyond a row, for a checkpoint of this network.
    fn shape_of(&self, checkpoint: &TrainingCheckpoint) -> RunShape {
        RunShape {
            ln_k: (checkpoint.head_dims.2.max(1) as f64).ln(),
            batch_images: self.probe.globals.1[0] / 2,
            embed_dim: checkpoint.vit.arch.embed_dim,
            student_temp: self.settings.student_temp,
        }
    }

    /// Whether the run folder gets TensorBoard events too (default on).
    pub fn with_tensorboard(mut self, on: bool) -> Self {
        self.tensorboard = on;
        self
    }

    /// Follows these images' teacher attention at every checkpoint.
    pub fn with_attention_images(mut self, images: Vec<(String, image::RgbImage)>) -> Self {
        self.images = images;
        self
    }

    /// Reads new log lines and evaluates complete checkpoints that are new or rewritten. With
    /// `all` every such checkpoint is evaluated (`--once`); otherwise only the newest, the
    /// others reported as skipped, so a slow probe never falls behind a fast run.
    pub fn poll(&mut self, all: bool) -> Vec<WatchEvent> {
        let mut events = Vec::new();
        let (log, not_text) = read_official_log_lines(&self.dir.join(LOG_FILE));
        let files: Vec<PathBuf> = checkpoint_files(&self.dir)
            .into_iter()
            .map(|f| f.path)
            .collect();
        for warning in self
            .unreadable
            .look(&files, &self.dir.join(LOG_FILE), &not_text)
        {
            events.push(WatchEvent::Warning(warning));
        }
        for row in log.iter().skip(self.log.len()) {
            events.push(WatchEvent::Log(row.clone()));
        }
        if log.len() > self.log.len() {
            self.log = log;
            self.write_log_csv(&mut events);
        }
        let mut ready: Vec<(PathBuf, Option<usize>, (u64, SystemTime))> = Vec::new();
        for file in checkpoint_files(&self.dir) {
            if let FileState::Stable(len, modified) = self.stable.poll(&file.path) {
                if self.evaluated.get(&file.path) != Some(&(len, modified)) {
                    ready.push((file.path, file.epoch_in_name, (len, modified)));
                }
            }
        }
        if !all && ready.len() > 1 {
            ready.sort_by_key(|(_, _, (_, modified))| *modified);
            let newest = ready.split_off(ready.len() - 1);
            for (path, _, stamp) in &ready {
                self.evaluated.insert(path.clone(), *stamp);
            }
            events.push(WatchEvent::Skipped(
                ready.into_iter().map(|(p, ..)| p).collect(),
            ));
            ready = newest;
        }
        for (path, epoch_in_name, stamp) in ready {
            self.evaluated.insert(path.clone(), stamp);
            // A panic inside burn on a file or probe no check foresaw is that checkpoint's
            // error, not the watch's end.
            let evaluated = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.evaluate(&path, epoch_in_name, stamp.1)
            }))
            .unwrap_or_else(|_| {
                Err(format!(
                    "{}: evaluating it failed inside the network (a panic); it is skipped",
                    path.display()
                ))
            });
            match evaluated {
                Ok(event) => events.push(event),
                Err(message) => events.push(WatchEvent::Warning(message)),
            }
        }
        events
    }

    /// The epoch a checkpoint holds: its pickled `epoch`, else its name, else the log's last
    /// epoch (the official loop writes `checkpoint.pth` just before that epoch's log line, hence
    /// + 1 when the file is newer than the log).
    fn epoch_of(&self, path: &Path, epoch_in_name: Option<usize>, modified: SystemTime) -> usize {
        if let Some(epoch) = checkpoint_epoch(path).or(epoch_in_name) {
            return epoch;
        }
        let log_modified = std::fs::metadata(self.dir.join(LOG_FILE))
            .and_then(|m| m.modified())
            .ok();
        match (self.log.last(), log_modified) {
            (Some(row), Some(log_time)) if modified > log_time => row.epoch + 1,
            (Some(row), _) => row.epoch,
            (None, _) => 0,
        }
    }

    fn evaluate(
        &mut self,
        path: &Path,
        epoch_in_name: Option<usize>,
        modified: SystemTime,
    ) -> Result<WatchEvent, String> {
        let started = Instant::now();
        let overrides = ArchOverrides {
            num_heads: self.settings.heads,
            ..Default::default()
        };
        let checkpoint =
            load_training_checkpoint(path, &overrides, &self.device).map_err(|e| e.to_string())?;
        // What would panic or grow past memory inside the probe is refused first.
        checks::check_probe_fits(&self.probe, checkpoint.vit.patch_size, path)?;
        checks::check_probe_memory(
            &checks::probe_config(self.config_of(&checkpoint), &self.probe),
            path,
            crate::device::uses_host_memory(&self.device),
        )?;
        let epoch = self.epoch_of(path, epoch_in_name, modified);
        let teacher_temp = self.settings.teacher_temp_at(epoch);
        let (globals, locals) = self.probe.tensors(&self.device);
        let options = LossOptions {
            student_temp: self.settings.student_temp,
            teacher_temp,
            centering: TeacherCentering::Ema,
        };
        let stats = crate::device::on_compute_pool(|| {
            probe_decomposition(
                &checkpoint.student,
                &checkpoint.teacher,
                globals,
                locals,
                &checkpoint.center,
                options,
            )
        })
        .ok_or_else(|| {
            format!(
                "{}: the probe batch does not fit this network",
                path.display()
            )
        })?;
        checks::check_stats(&stats, path)?;
        let reading = self.reading(&checkpoint);
        let row = self.record(&checkpoint, epoch, teacher_temp, &stats, reading.as_ref())?;
        let maps = self.attention(&checkpoint, epoch);
        let eval = self.knn(&checkpoint, epoch)?;
        Ok(WatchEvent::Evaluated {
            file: path.to_path_buf(),
            row: Box::new(row),
            maps,
            eval,
            shape: self.shape_of(&checkpoint),
            secs: started.elapsed().as_secs_f64(),
        })
    }

    /// The representation readings of the teacher (effective rank, std of normalised
    /// features, near-zero directions), as the trainer reports them over its window: over the
    /// rank probe's 2d rows, else over the probe's global crops (`None` for a handful).
    fn reading(&self, checkpoint: &TrainingCheckpoint) -> Option<Reading> {
        if let Some(rank_probe) = &self.rank_probe {
            return rank_probe.reading(
                &checkpoint.teacher,
                checkpoint.vit.arch.embed_dim,
                checkpoint.head_dims.1,
                &self.device,
            );
        }
        let rows = self.probe.globals.1[0];
        if rows < MIN_PROBE_ROWS_FOR_RANK {
            return None;
        }
        let (globals, _) = self.probe.tensors(&self.device);
        let (features, bottleneck) = crate::device::on_compute_pool(|| {
            crate::train::probe::probe_features(&checkpoint.teacher, globals)
        })?;
        let mut backbone = EmbeddingWindow::new(checkpoint.vit.arch.embed_dim, rows);
        backbone.push(&features);
        let mut head = EmbeddingWindow::new(checkpoint.head_dims.1, rows);
        head.push(&bottleneck);
        Some(Reading {
            backbone: backbone.geometry()?,
            head: head.geometry(),
        })
    }

    /// The teacher's maps of the followed images at the probe's global crop size, each
    /// written as the mean-of-heads overlay (a failed write is logged: the maps still go to
    /// the caller).
    fn attention(
        &self,
        checkpoint: &TrainingCheckpoint,
        epoch: usize,
    ) -> Vec<(String, AttentionMaps)> {
        use crate::analysis::attention::ImageSize;
        let short_side = ImageSize::ShortSide(self.settings.augment.global_crop_size_px);
        let mut out = Vec::new();
        // Every followed image in one call: the foreground PCA is fitted across them.
        let all = crate::device::on_compute_pool(|| {
            maps_of_images(
                &checkpoint.teacher.backbone,
                self.images
                    .iter()
                    .map(|(_, image)| (image, short_side.resolve(image.dimensions()))),
                &self.device,
                MapLayer::Last,
                true,
            )
        });
        for ((name, image), maps) in self.images.iter().zip(all) {
            let Some(maps) = maps else {
                continue;
            };
            let picture = crate::store::tensorboard::attention_picture(image, &maps);
            let path = self
                .out
                .join("attention")
                .join(format!("epoch{epoch:04}-{}.png", file_stem(name)));
            if let Err(err) = write_png(&path, &picture) {
                tracing::warn!("{}: {err}", path.display());
            }
            if let Some(writer) = &self.writer {
                let tag = format!("attention/{}", file_stem(name));
                writer.with_events(|events| events.image(epoch, &tag, &picture));
            }
            out.push((name.clone(), maps));
        }
        out
    }

    /// k-NN top-1/top-5 of the teacher and the student (the paper's Fig. 6 pair), appended to
    /// `knn.csv` once per epoch; `None` without labelled splits.
    fn knn(
        &mut self,
        checkpoint: &TrainingCheckpoint,
        epoch: usize,
    ) -> Result<Option<EvalRow>, String> {
        let Some(data) = &self.knn else {
            return Ok(None);
        };
        let started = Instant::now();
        let device = &self.device;
        let (teacher, student) = crate::device::on_compute_pool(|| {
            Ok::<_, String>((
                data.knn(&checkpoint.teacher.backbone, device)
                    .map_err(|e| e.to_string())?,
                data.knn(&checkpoint.student.backbone, device)
                    .map_err(|e| e.to_string())?,
            ))
        })?;
        let row = EvalRow {
            step: epoch,
            epoch,
            top1: Some(teacher.top1),
            top5: Some(teacher.top5),
            student_top1: Some(student.top1),
            student_top5: Some(student.top5),
            eval_secs: Some(started.elapsed().as_secs_f64()),
            ..EvalRow::default()
        };
        if !self.evaluated_epochs.contains(&epoch) {
            self.evaluated_epochs.push(epoch);
            if let Some(writer) = &self.writer {
                writer.append_eval(&row).map_err(|e| e.to_string())?;
            }
        }
        Ok(Some(row))
    }

    /// Appends the epoch's row (once per epoch: `checkpoint.pth` and `checkpoint0002.pth` of
    /// the same epoch are the same state) and returns it.
    fn record(
        &mut self,
        checkpoint: &TrainingCheckpoint,
        epoch: usize,
        teacher_temp: f64,
        stats: &LossStats,
        reading: Option<&Reading>,
    ) -> Result<MetricsRow, String> {
        if self.writer.is_none() {
            self.open_writer(checkpoint)?;
        }
        let shape = self.shape_of(checkpoint);
        let log = self.log.iter().find(|r| r.epoch == epoch);
        let mut row = MetricsRow {
            lr: log.and_then(|r| r.train_lr).unwrap_or_default(),
            weight_decay: log.and_then(|r| r.train_wd).unwrap_or_default(),
            teacher_momentum: self.settings.momentum_at(epoch),
            teacher_temp,
            local_crops: self.settings.augment.local_crops_number,
            centering: true,
            sharpening: true,
            ln_k: shape.ln_k,
            ..stats.row(epoch, epoch)
        };
        if let Some(reading) = reading {
            reading.fill(&mut row);
        }
        // The same checkpoint evaluated again (rewritten `checkpoint.pth` of an epoch already
        // seen) is not a new measurement.
        if let Some(seen) = self.rows.iter().find(|r| r.epoch == epoch) {
            row.regime = seen.regime;
            return Ok(row);
        }
        row.regime = self.regime.push(row.health_sample(), &shape);
        if let Some(writer) = &mut self.writer {
            writer.append(&row).map_err(|e| e.to_string())?;
        }
        self.rows.push(row.clone());
        Ok(row)
    }

    /// The run folder's writer. A folder an earlier watch wrote is continued, never cut: its
    /// rows (of checkpoints the run has since rotated away, too) and k-NN rows are kept.
    fn open_writer(&mut self, checkpoint: &TrainingCheckpoint) -> Result<(), String> {
        let metrics = self.out.join(crate::store::run::METRICS_FILE);
        let mut writer = if metrics.is_file() {
            let (writer, kept) =
                RunWriter::resume(&self.out, usize::MAX).map_err(|e| e.to_string())?;
            // The kept checkpoints are the run's history: their best I and best rank count.
            let shape = self.shape_of(checkpoint);
            self.regime = RegimeWindow::new(Cadence::CHECKPOINTS);
            for row in &kept {
                self.regime.push(row.health_sample(), &shape);
            }
            self.rows = kept;
            self.evaluated_epochs =
                crate::store::run::read_eval_rows(&self.out.join(crate::store::run::EVAL_FILE))
                    .iter()
                    .map(|r| r.epoch)
                    .collect();
            writer
        } else {
            RunWriter::create(&self.out, &self.config_of(checkpoint)).map_err(|e| e.to_string())?
        };
        writer.set_tensorboard(self.tensorboard);
        self.writer = Some(writer);
        Ok(())
    }

    /// The run folder's config.toml: the watched network's sizes and the run's settings.
    fn config_of(&self, checkpoint: &TrainingCheckpoint) -> Config {
        let mut config = self.settings.config();
        let (hidden, bottleneck, k) = checkpoint.head_dims;
        // A named base for the file; the sizes below are the watched network's.
        config.model.arch = "vit_small".into();
        config.model.embed_dim = Some(checkpoint.vit.arch.embed_dim);
        config.model.depth = Some(checkpoint.vit.arch.depth);
        config.model.num_heads = Some(checkpoint.vit.arch.num_heads);
        config.model.patch_size = checkpoint.vit.patch_size;
        config.dino.out_dim = k;
        config.dino.hidden_dim = hidden;
        config.dino.bottleneck_dim = bottleneck;
        config.data.knn_every_epochs = 0;
        config
    }

    /// `log.csv`: the log's rows ([`OfficialLogRow`]: epoch, train_loss, train_lr, train_wd).
    fn write_log_csv(&self, events: &mut Vec<WatchEvent>) {
        let mut csv = Vec::new();
        if let Err(err) = crate::store::rows::write_rows(&mut csv, &self.log, true) {
            events.push(WatchEvent::Warning(err.to_string()));
            return;
        }
        if std::fs::create_dir_all(&self.out).is_ok() {
            if let Err(err) = write_atomically(&self.out.join(WATCH_LOG_FILE), &csv) {
                events.push(WatchEvent::Warning(err.to_string()));
            }
        }
    }
}

/// A name fit for a file: letters, digits, `-` and `_`; the rest as `_`.
fn file_stem(name: &str) -> String {
    let stem = name.rsplit_once('.').map_or(name, |(stem, _)| stem);
    stem.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The PNG, in a folder made for it.
fn write_png(path: &Path, picture: &image::RgbImage) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::store::run::write_png(path, picture).map_err(std::io::Error::other)
}
