//! TensorBoard event files beside a run (`RUN/tb/events.out.tfevents.<secs>.<host>`), the
//! format TensorBoard, W&B (`wandb sync --sync-tensorboard`) and Aim (`aim convert
//! tensorboard`) all read. Each record is TFRecord-framed (length, masked CRC32C of the length,
//! the bytes, masked CRC32C of the bytes) around a hand-encoded `Event` protobuf: the handful of
//! fields used here (scalars, text, PNG images, a session start) do not justify a protobuf code
//! generator. Tested against TensorBoard's own event loader (`tests/it/tensorboard.rs`).
//!
//! Every `metrics.csv` / `knn.csv` column becomes a scalar under a stable tag ([`tag_of`]),
//! read through the row's serde fields, so a new column is picked up without an edit here.

use crate::analysis::health::Regime;
use crate::config::Toggle;
use crate::store::rows::{EvalRow, MetricsRow};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The folder of a run's event files.
pub const TB_DIR: &str = "tb";

/// The TensorBoard tag of a `metrics.csv` or `knn.csv` column; columns without an entry go
/// under `metrics/<column>`.
pub fn tag_of(column: &str) -> String {
    let tag = match column {
        "loss" => "loss/total",
        "teacher_entropy" => "loss/teacher_entropy",
        "kl" => "loss/kl",
        "batch_mean_entropy" => "loss/batch_mean_entropy",
        "teacher_mi" => "loss/teacher_mi",
        "ln_k" => "loss/ln_k",
        "lr" => "schedule/lr",
        "weight_decay" => "schedule/weight_decay",
        "teacher_momentum" => "schedule/teacher_momentum",
        "teacher_temp" => "schedule/teacher_temp",
        "epoch" => "schedule/epoch",
        "centering" => "toggles/centering",
        "sharpening" => "toggles/sharpening",
        "local_crops" => "toggles/local_crops",
        "images_per_sec" => "perf/images_per_sec",
        "step_secs" => "perf/step_secs",
        "data_wait_secs" => "perf/data_wait_secs",
        "eval_secs" => "perf/eval_secs",
        "effective_rank" => "health/effective_rank",
        "effective_rank_head" => "health/effective_rank_head",
        "std_normalized" => "health/std_normalized",
        "near_zero_directions" => "health/near_zero_directions",
        "top1" => "knn/top1",
        "top5" => "knn/top5",
        "student_top1" => "knn/student_top1",
        "student_top5" => "knn/student_top5",
        "jaccard_best_head" => "attention/jaccard_best_head",
        "jaccard_mean_map" => "attention/jaccard_mean_map",
        other => return format!("metrics/{other}"),
    };
    tag.to_string()
}

/// `(column, value)` of every numeric cell of a serde row as the CSV writer formats it (so
/// the scalars equal the file's numbers); `step` and empty or text cells are left out.
pub fn numeric_columns<R: serde::Serialize>(row: &R) -> Vec<(String, f64)> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    if writer.serialize(row).is_err() {
        return Vec::new();
    }
    let Ok(bytes) = writer.into_inner() else {
        return Vec::new();
    };
    let mut reader = csv::Reader::from_reader(bytes.as_slice());
    let Ok(header) = reader.headers().cloned() else {
        return Vec::new();
    };
    let Some(Ok(record)) = reader.records().next() else {
        return Vec::new();
    };
    header
        .iter()
        .zip(record.iter())
        .filter(|(name, _)| *name != "step")
        .filter_map(|(name, cell)| Some((name.to_string(), cell.parse::<f64>().ok()?)))
        .filter(|(_, value)| value.is_finite())
        .collect()
}

// ---- protobuf wire format (proto3): the few field kinds an Event needs ----

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn key(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire_type));
}

fn bytes_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    key(out, field, 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn varint_field(out: &mut Vec<u8>, field: u32, value: u64) {
    key(out, field, 0);
    varint(out, value);
}

/// One `Summary.Value`.
enum Value<'a> {
    Scalar(f32),
    Text(&'a str),
    /// An encoded PNG and its size.
    Png {
        png: &'a [u8],
        width: u32,
        height: u32,
    },
}

/// `Summary { value: [Value { tag, … }] }`.
fn summary(tag: &str, value: &Value) -> Vec<u8> {
    let mut v = Vec::new();
    bytes_field(&mut v, 1, tag.as_bytes());
    match value {
        Value::Scalar(x) => {
            key(&mut v, 2, 5); // simple_value: float
            v.extend_from_slice(&x.to_le_bytes());
        }
        Value::Text(text) => {
            // metadata { plugin_data { plugin_name: "text" } }
            let mut plugin = Vec::new();
            bytes_field(&mut plugin, 1, b"text");
            let mut metadata = Vec::new();
            bytes_field(&mut metadata, 1, &plugin);
            bytes_field(&mut v, 9, &metadata);
            // tensor { dtype: DT_STRING, tensor_shape {}, string_val: [text] }
            let mut tensor = Vec::new();
            varint_field(&mut tensor, 1, 7);
            bytes_field(&mut tensor, 2, &[]);
            bytes_field(&mut tensor, 8, text.as_bytes());
            bytes_field(&mut v, 8, &tensor);
        }
        Value::Png { png, width, height } => {
            // image { height, width, colorspace: 3 (RGB), encoded_image_string }
            let mut image = Vec::new();
            varint_field(&mut image, 1, u64::from(*height));
            varint_field(&mut image, 2, u64::from(*width));
            varint_field(&mut image, 3, 3);
            bytes_field(&mut image, 4, png);
            bytes_field(&mut v, 4, &image);
        }
    }
    let mut s = Vec::new();
    bytes_field(&mut s, 1, &v);
    s
}

/// `Event { wall_time, step, <what> }`; `what` is the field number and its encoded message.
fn event(wall_time_secs: f64, step: i64, what: Option<(u32, &[u8])>) -> Vec<u8> {
    let mut e = Vec::new();
    key(&mut e, 1, 1); // wall_time: double
    e.extend_from_slice(&wall_time_secs.to_le_bytes());
    if step != 0 {
        varint_field(&mut e, 2, step as u64);
    }
    if let Some((field, message)) = what {
        bytes_field(&mut e, field, message);
    }
    e
}

// ---- TFRecord framing ----

const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// CRC-32C (Castagnoli), the checksum TFRecord uses.
pub fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc = CRC32C_TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

/// TFRecord's masked CRC: rotated and offset so a CRC of CRCs is not trivially zero.
fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c(bytes);
    (crc.rotate_right(15)).wrapping_add(0xA282_EAD8)
}

/// One record: length, masked CRC of the length, data, masked CRC of the data.
pub fn frame(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// One event file, opened on the first event; every call flushes it, so a killed run's file
/// is readable up to its last event.
pub struct EventWriter {
    dir: PathBuf,
    file: Option<File>,
    path: Option<PathBuf>,
    /// Written first: a resumed run's session start, which makes TensorBoard drop the events
    /// of steps at or after it from the earlier files (the cut-back rows).
    start_step: Option<usize>,
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl EventWriter {
    /// A writer for `run_dir/tb`; nothing is created until the first event.
    pub fn new(run_dir: &Path) -> Self {
        Self {
            dir: run_dir.join(TB_DIR),
            file: None,
            path: None,
            start_step: None,
        }
    }

    /// The same for a run resumed at `first_step`.
    pub fn resumed(run_dir: &Path, first_step: usize) -> Self {
        Self {
            start_step: Some(first_step),
            ..Self::new(run_dir)
        }
    }

    /// The event file, once one was opened.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn open(&mut self) -> std::io::Result<&mut File> {
        if self.file.is_none() {
            std::fs::create_dir_all(&self.dir)?;
            let secs = now_secs();
            let host = std::env::var("HOSTNAME")
                .ok()
                .filter(|h| {
                    !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                })
                .unwrap_or_else(|| "dinoscope".into());
            // A distinct name per writer (TensorBoard reads the files of a folder in name
            // order): seconds, then the process and a counter for writers of the same second.
            let path = self.dir.join(format!(
                "events.out.tfevents.{}.{host}.{}.{}",
                secs as u64,
                std::process::id(),
                NEXT_FILE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ));
            let mut file = std::fs::OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)?;
            let mut version = Vec::new();
            bytes_field(&mut version, 3, b"brain.Event:2");
            let mut first = event(secs, 0, None);
            first.extend_from_slice(&version);
            file.write_all(&frame(&first))?;
            if let Some(step) = self.start_step {
                // session_log { status: START }
                let mut log = Vec::new();
                varint_field(&mut log, 1, 1);
                file.write_all(&frame(&event(secs, step as i64, Some((7, &log)))))?;
            }
            file.flush()?;
            self.path = Some(path);
            self.file = Some(file);
        }
        self.file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("event file not open"))
    }

    fn write(&mut self, step: usize, tag: &str, value: &Value) -> std::io::Result<()> {
        self.write_many(step, &[(tag, value)])
    }

    fn write_many(&mut self, step: usize, values: &[(&str, &Value)]) -> std::io::Result<()> {
        let wall = now_secs();
        let mut records = Vec::new();
        for (tag, value) in values {
            let s = summary(tag, value);
            records.extend_from_slice(&frame(&event(wall, step as i64, Some((5, &s)))));
        }
        let file = self.open()?;
        file.write_all(&records)?;
        file.flush()
    }

    /// Every numeric column of a row but `skip` as a scalar at `step`.
    pub fn scalars<R: serde::Serialize>(
        &mut self,
        step: usize,
        row: &R,
        skip: &[&str],
    ) -> std::io::Result<()> {
        let mut columns = numeric_columns(row);
        columns.retain(|(name, _)| !skip.contains(&name.as_str()));
        let tags: Vec<String> = columns.iter().map(|(c, _)| tag_of(c)).collect();
        let values: Vec<Value> = columns
            .iter()
            .map(|(_, v)| Value::Scalar(*v as f32))
            .collect();
        let pairs: Vec<(&str, &Value)> =
            tags.iter().map(String::as_str).zip(values.iter()).collect();
        self.write_many(step, &pairs)
    }

    /// A text event (TensorBoard's Text tab; markdown).
    pub fn text(&mut self, step: usize, tag: &str, text: &str) -> std::io::Result<()> {
        self.write(step, tag, &Value::Text(text))
    }

    /// An RGB image (TensorBoard's Images tab), PNG-encoded.
    pub fn image(
        &mut self,
        step: usize,
        tag: &str,
        picture: &image::RgbImage,
    ) -> std::io::Result<()> {
        let mut png = Vec::new();
        picture
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .map_err(std::io::Error::other)?;
        let (width, height) = picture.dimensions();
        self.write(
            step,
            tag,
            &Value::Png {
                png: &png,
                width,
                height,
            },
        )
    }
}

/// The picture logged for an attention snapshot: the mean of the heads over the crop the
/// network saw, with its 60 % mass mask (as `dinoscope watch` writes its PNGs).
pub fn attention_picture(
    image: &image::RgbImage,
    maps: &crate::analysis::attention::AttentionMaps,
) -> image::RgbImage {
    use crate::analysis::attention::{mask_picture, OverlayStyle};
    mask_picture(image, maps, 0.6, &OverlayStyle::default())
}

static NEXT_FILE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A run's events as its writer produces rows: the scalars of every row, the regime when it
/// changes, toggles and the config as text, attention images. A failed write is a warning,
/// said once; the run goes on without events.
pub struct RunEvents {
    writer: EventWriter,
    /// The config as text, written with the first event.
    pending_config: Option<String>,
    last_regime: Option<Regime>,
    images: std::collections::HashSet<(String, usize)>,
    failed: bool,
}

impl RunEvents {
    pub fn new(writer: EventWriter, config_toml: Option<String>) -> Self {
        Self {
            writer,
            pending_config: config_toml,
            last_regime: None,
            images: std::collections::HashSet::new(),
            failed: false,
        }
    }

    /// Runs one write; the first failure is logged and ends the run's events.
    fn guarded(&mut self, write: impl FnOnce(&mut EventWriter) -> std::io::Result<()>) {
        if self.failed {
            return;
        }
        let mut result = Ok(());
        if let Some(config) = self.pending_config.take() {
            result = self
                .writer
                .text(0, "run/config", &format!("```toml\n{config}\n```"));
        }
        if let Err(err) = result.and_then(|()| write(&mut self.writer)) {
            self.failed = true;
            tracing::warn!(
                "TensorBoard events of {} stopped: {err} (metrics.csv is unaffected)",
                self.writer.dir.display()
            );
        }
    }

    /// A `metrics.csv` row: its scalars, and its regime as text when it changed.
    pub fn row(&mut self, row: &MetricsRow) {
        let changed = self.last_regime != Some(row.regime);
        self.last_regime = Some(row.regime);
        self.guarded(|w| {
            w.scalars(row.step, row, &[])?;
            if changed {
                w.text(row.step, "health/regime", row.regime.word())?;
            }
            Ok(())
        });
    }

    /// A `knn.csv` row (its epoch is the metrics rows' already).
    pub fn eval(&mut self, row: &EvalRow) {
        self.guarded(|w| w.scalars(row.step, row, &["epoch"]));
    }

    /// A toggle applied before `step`.
    pub fn toggle(&mut self, step: usize, toggle: &Toggle) {
        self.guarded(|w| w.text(step, "toggles/applied", &toggle.label()));
    }

    /// An attention picture (or any image) at `step`; once per tag and step (a watched run's
    /// `checkpoint.pth` and `checkpoint0002.pth` are the same epoch).
    pub fn image(&mut self, step: usize, tag: &str, picture: &image::RgbImage) {
        if self.images.insert((tag.to_string(), step)) {
            self.guarded(|w| w.image(step, tag, picture));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_and_its_mask_match_the_published_values() {
        // The check values of RFC 3720 ("123456789"; 32 zero bytes) and the record layout.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        let record = frame(b"abc");
        assert_eq!(record.len(), 8 + 4 + 3 + 4);
        assert_eq!(&record[..8], &3u64.to_le_bytes());
        assert_eq!(&record[12..15], b"abc");
    }

    #[test]
    fn columns_are_read_from_the_row_type_and_tagged() {
        let row = crate::store::rows::MetricsRow {
            step: 7,
            loss: 1.25,
            centering: true,
            effective_rank: None,
            ..Default::default()
        };
        let columns = numeric_columns(&row);
        assert!(columns.contains(&("loss".to_string(), 1.25)));
        assert!(columns.contains(&("centering".to_string(), 1.0)));
        assert!(!columns
            .iter()
            .any(|(c, _)| c == "step" || c == "effective_rank" || c == "regime"));
        assert_eq!(tag_of("loss"), "loss/total");
        assert_eq!(tag_of("a_new_column"), "metrics/a_new_column");
    }

    #[test]
    fn varints_are_little_endian_base_128() {
        let mut out = Vec::new();
        varint(&mut out, 300);
        assert_eq!(out, [0xAC, 0x02]);
    }
}
