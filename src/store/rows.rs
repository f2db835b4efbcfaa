//! The rows of every file we write or read, one serde type per file: [`MetricsRow`]
//! (`metrics.csv`, one per step), [`EvalRow`] (`knn.csv`, one per evaluation), [`StudyRow`]
//! (`study.csv`), [`OfficialLogRow`] (an official run's `log.txt`, one JSON object per epoch, and
//! a watch's `log.csv`) and [`SoakRow`] (the soak log). The header comes from the field names and
//! each column's number format from its `serialize_with`, so adding a column is one field. The
//! CSV rows read back default at the struct level (`#[serde(default)]`): a column added later is
//! empty or zero in an old run's rows, never a reason to drop them. Reading tolerates extra
//! columns (newer runs) and skips rows it cannot parse (a torn last line of a run being
//! written).

use crate::analysis::health::{HealthSample, Regime};
use crate::config::CenteringMode;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::io::{Read, Write};
use std::path::Path;

/// Everything one training step reports; a row of `metrics.csv`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MetricsRow {
    /// Global iteration index of this step (0-based).
    pub step: usize,
    pub epoch: usize,
    #[serde(serialize_with = "fixed6")]
    pub loss: f64,
    #[serde(serialize_with = "fixed6")]
    pub teacher_entropy: f64,
    #[serde(serialize_with = "fixed6")]
    pub kl: f64,
    #[serde(serialize_with = "fixed6")]
    pub batch_mean_entropy: f64,
    /// I = h(mean Pt) − h(Pt): what the teacher's output tells about the image, in nats;
    /// ≈ 0 in every collapse. Empty in runs written before it existed (derived on reading).
    #[serde(default, serialize_with = "optional6")]
    pub teacher_mi: Option<f64>,
    #[serde(serialize_with = "scientific6")]
    pub lr: f64,
    #[serde(serialize_with = "fixed6")]
    pub weight_decay: f64,
    #[serde(serialize_with = "fixed6")]
    pub teacher_momentum: f64,
    /// Temperature the teacher actually used this step.
    #[serde(serialize_with = "fixed5")]
    pub teacher_temp: f64,
    #[serde(serialize_with = "fixed2")]
    pub images_per_sec: f64,
    #[serde(serialize_with = "fixed5")]
    pub step_secs: f64,
    /// Time this step waited for the data loader (≈ 0 when prefetch keeps up).
    #[serde(serialize_with = "fixed5")]
    pub data_wait_secs: f64,
    pub local_crops: usize,
    #[serde(serialize_with = "flag", deserialize_with = "read_flag")]
    pub centering: bool,
    #[serde(serialize_with = "flag", deserialize_with = "read_flag")]
    pub sharpening: bool,
    /// ln K, the entropy of a uniform teacher: the top reference line of the plots.
    #[serde(serialize_with = "fixed6")]
    pub ln_k: f64,
    /// RankMe of the teacher's backbone (CLS) features over the last
    /// [`WINDOW_ROWS`](crate::analysis::geometry::WINDOW_ROWS) rows: 1 ..= embed_dim; empty on
    /// steps without a reading (and in runs written before it existed).
    #[serde(default, serialize_with = "optional4")]
    pub effective_rank: Option<f64>,
    /// The same for the head's ℓ2-normalised bottleneck: 1 ..= bottleneck_dim.
    #[serde(default, serialize_with = "optional4")]
    pub effective_rank_head: Option<f64>,
    /// Mean per-dimension std of the ℓ2-normalised backbone features: ≈ 1/√embed_dim when
    /// spread out, 0 when collapsed.
    #[serde(default, serialize_with = "optional6")]
    pub std_normalized: Option<f64>,
    /// Backbone directions whose singular value is under 1e-3 of the largest.
    #[serde(default)]
    pub near_zero_directions: Option<usize>,
    /// Rows behind the reading: its rank is at most min(rows, embed_dim), and the verdict uses
    /// it only from `RANK_ROWS_PER_DIM × embed_dim` rows on.
    #[serde(default)]
    pub rank_rows: Option<usize>,
    /// The diagnosis after this step, one word (`healthy`, `one-hot`, `uniform`, …).
    #[serde(default)]
    pub regime: Regime,
    /// `ema`, `sinkhorn` or `off` (DINOv2's tools, issue 32); empty in runs written before
    /// the modes, where `centering` says ema or off ([`MetricsRow::centering_mode`]).
    #[serde(default)]
    pub centering_mode: Option<CenteringMode>,
    /// KoLeo weight of this step (0 = off).
    #[serde(default, serialize_with = "fixed6")]
    pub koleo_weight: f64,
    /// KoLeo of the student's CLS features, mean over the global crops (each on its own), at
    /// every weight; what the weight multiplies.
    #[serde(default, serialize_with = "optional6")]
    pub koleo: Option<f64>,
    /// Rows of the global crops whose nearest neighbour is at zero distance: each adds about
    /// 16/B to `koleo` (dinov2 #143).
    #[serde(default)]
    pub koleo_duplicates: Option<usize>,
    /// Singular values of the backbone window, largest first, divided by the largest; on
    /// steps with a reading. For the live spectrum plot, not stored.
    #[serde(skip)]
    pub spectrum: Vec<f32>,
    /// Non-fatal data problems met while building this batch (e.g. a skipped corrupt image);
    /// reported, not stored.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

impl MetricsRow {
    /// I = h(mean Pt) − h(Pt) of this row: the stored column, else derived from the two
    /// entropies (runs written before the column).
    pub fn teacher_mi(&self) -> f64 {
        self.teacher_mi
            .unwrap_or(self.batch_mean_entropy - self.teacher_entropy)
    }

    /// What the regime rules read from this row.
    pub fn health_sample(&self) -> HealthSample {
        HealthSample {
            teacher_entropy: self.teacher_entropy,
            kl: self.kl,
            batch_mean_entropy: self.batch_mean_entropy,
            loss: self.loss,
            effective_rank: self.effective_rank,
            rank_rows: self.rank_rows,
            teacher_temp: self.teacher_temp,
            teacher_momentum: self.teacher_momentum,
            centering: self.centering,
            sharpening: self.sharpening,
            centering_mode: self.centering_mode(),
            koleo_weight: self.koleo_weight,
            koleo: self.koleo,
            koleo_duplicates: self.koleo_duplicates,
        }
    }

    /// The centering of this step, also for rows written before the modes existed.
    pub fn centering_mode(&self) -> CenteringMode {
        self.centering_mode
            .unwrap_or_else(|| CenteringMode::from(self.centering))
    }
}

/// One evaluation of a network (k-NN and attention Jaccard, percent); a row of `knn.csv`.
/// Step 0 is the random-init baseline.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EvalRow {
    /// Steps completed when evaluated (0 = random init).
    pub step: usize,
    pub epoch: usize,
    #[serde(serialize_with = "optional4")]
    pub top1: Option<f64>,
    #[serde(serialize_with = "optional4")]
    pub top5: Option<f64>,
    #[serde(serialize_with = "optional4")]
    pub jaccard_best_head: Option<f64>,
    #[serde(serialize_with = "optional4")]
    pub jaccard_mean_map: Option<f64>,
    #[serde(serialize_with = "optional4")]
    pub eval_secs: Option<f64>,
    /// k-NN of the student's backbone on the same split (the paper's Fig. 6: the teacher
    /// leads); empty for the random-init row, where both are the same network.
    #[serde(default, serialize_with = "optional4")]
    pub student_top1: Option<f64>,
    #[serde(default, serialize_with = "optional4")]
    pub student_top5: Option<f64>,
}

/// One variant of an ablation study; a row of `study.csv`. The `final_*` values are means over
/// the variant's last [`STUDY_TAIL_STEPS`] steps (the chip's window), the evaluation columns
/// its last `knn.csv` row.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StudyRow {
    pub variant: String,
    #[serde(serialize_with = "fixed6")]
    pub final_loss: f64,
    #[serde(serialize_with = "fixed6")]
    pub final_teacher_entropy: f64,
    #[serde(serialize_with = "fixed6")]
    pub final_kl: f64,
    #[serde(serialize_with = "fixed6")]
    pub final_batch_mean_entropy: f64,
    #[serde(serialize_with = "fixed6")]
    pub ln_k: f64,
    /// Teacher k-NN top-1 (%) at the end, and of the same network at random init.
    #[serde(default, serialize_with = "optional4")]
    pub knn_top1: Option<f64>,
    #[serde(default, serialize_with = "optional4")]
    pub random_init_top1: Option<f64>,
    /// Best-head attention-mask Jaccard (%) against the true masks, at the end.
    #[serde(default, serialize_with = "optional4")]
    pub jaccard: Option<f64>,
    /// The last effective-rank reading of the teacher's features.
    #[serde(default, serialize_with = "optional4")]
    pub effective_rank: Option<f64>,
    #[serde(default)]
    pub regime: Regime,
    pub steps: usize,
    /// Wall time of the variant: its steps, evaluations and saves.
    #[serde(serialize_with = "fixed2")]
    pub secs: f64,
    /// The paper's k-NN top-1 for this variant (ViT-S/16, ImageNet, 300 epochs), where it
    /// reports one: a reference for the direction, not a target for a small run.
    #[serde(default, serialize_with = "optional4")]
    pub paper_knn_top1: Option<f64>,
}

/// Steps averaged into a study row's `final_*` values.
pub const STUDY_TAIL_STEPS: usize = 5;

/// One line of an official run's `log.txt` (`json.dumps(log_stats)`: the metric logger's epoch
/// averages, read with serde_json), and a row of a watch's `log.csv` (the same columns). The
/// epoch is required and whole (so this row has no struct-level default); Python's bare `NaN`
/// and `Infinity` (what `json.dumps` writes for a diverged loss) read as those numbers; a value
/// that is not a number (a string another version logs) reads as empty, never as a lost line;
/// other keys are ignored.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OfficialLogRow {
    #[serde(deserialize_with = "whole_number")]
    pub epoch: usize,
    #[serde(
        default,
        serialize_with = "optional_plain",
        deserialize_with = "number_or_none"
    )]
    pub train_loss: Option<f64>,
    #[serde(
        default,
        serialize_with = "optional_plain",
        deserialize_with = "number_or_none"
    )]
    pub train_lr: Option<f64>,
    #[serde(
        default,
        serialize_with = "optional_plain",
        deserialize_with = "number_or_none"
    )]
    pub train_wd: Option<f64>,
}

impl OfficialLogRow {
    /// A line of `log.txt`; `None` for a torn line or anything that is not such an object.
    pub fn from_json_line(line: &str) -> Option<Self> {
        serde_json::from_str(line.trim())
            .or_else(|_| serde_json::from_str(&quote_non_finite(line.trim())))
            .ok()
    }
}

/// `NaN`, `Infinity` and `-Infinity` outside strings (Python's JSON extension, not JSON) as
/// strings, which [`number_or_none`] reads back as those numbers.
fn quote_non_finite(line: &str) -> String {
    let mut out = String::with_capacity(line.len() + 8);
    let (mut in_string, mut escaped) = (false, false);
    let mut rest = line;
    while let Some(c) = rest.chars().next() {
        if !in_string {
            if let Some(word) = ["NaN", "-Infinity", "Infinity"]
                .into_iter()
                .find(|w| rest.starts_with(w))
            {
                out.push('"');
                out.push_str(word);
                out.push('"');
                rest = &rest[word.len()..];
                continue;
            }
        }
        match (in_string, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (_, false, '"') => in_string = !in_string,
            _ => {}
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// One sample of the soak log (`--soak-log`, `dinoscope plot --soak`): what could grow in a
/// long session. The app writes every column; a CLI soak only the first two, the rest empty.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SoakRow {
    #[serde(serialize_with = "fixed1")]
    pub elapsed_secs: f64,
    #[serde(serialize_with = "fixed2")]
    pub rss_mib: f64,
    #[serde(serialize_with = "optional2")]
    pub frame_median_ms: Option<f64>,
    #[serde(serialize_with = "optional2")]
    pub frame_p95_ms: Option<f64>,
    /// Events waiting for the UI in the worker's queue.
    pub pending_events: Option<usize>,
    pub attention_snapshots: Option<usize>,
    pub distance_points: Option<usize>,
    pub textures: Option<usize>,
    pub runs: Option<usize>,
    /// Rows of all runs, and steps of the current one.
    pub rows: Option<usize>,
    pub steps: Option<usize>,
}

/// The header line a row type writes (for files created empty, and for tests).
pub fn header_of<R: Serialize>(row: &R) -> Result<String, csv::Error> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.serialize(row)?;
    let bytes = writer
        .into_inner()
        .map_err(|err| csv::Error::from(std::io::Error::other(err.to_string())))?;
    let text = String::from_utf8_lossy(&bytes);
    Ok(text.lines().next().unwrap_or_default().to_string())
}

/// Serialises rows (with or without the header line) to `out`.
pub fn write_rows<R: Serialize>(
    out: impl Write,
    rows: &[R],
    with_header: bool,
) -> Result<(), csv::Error> {
    let mut writer = csv::WriterBuilder::new()
        .has_headers(with_header)
        .from_writer(out);
    for row in rows {
        writer.serialize(row)?;
    }
    writer.flush()?;
    Ok(())
}

/// Rows that parse, in file order; extra columns are ignored and unparsable rows (a torn last
/// line) skipped.
pub fn read_rows<R: for<'de> Deserialize<'de>>(input: impl Read) -> Vec<R> {
    csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(input)
        .into_deserialize()
        .filter_map(Result::ok)
        .collect()
}

/// Appends one row to a CSV file, with the header first when the file is new or empty.
pub fn append_row<R: Serialize>(path: &Path, row: &R) -> std::io::Result<()> {
    let new = std::fs::metadata(path).map_or(true, |m| m.len() == 0);
    let mut bytes = Vec::new();
    write_rows(&mut bytes, std::slice::from_ref(row), new).map_err(std::io::Error::other)?;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut file| file.write_all(&bytes))
}

/// Rows of a file; a missing or unreadable file gives none.
pub fn read_rows_from<R: for<'de> Deserialize<'de>>(path: &Path) -> std::io::Result<Vec<R>> {
    Ok(read_rows(std::fs::File::open(path)?))
}

/// A table of named series keyed by step (the app's "Export CSV…"): one row per x of the
/// densest series, every series read off its line there, empty outside its range. Names are
/// quoted by the csv writer.
pub fn write_series(out: impl Write, columns: &[(&str, &[(f64, f64)])]) -> Result<(), csv::Error> {
    // One shared x grid, the densest column's: every other column is read off its drawn line
    // there (linear between its points, empty outside its range), so readings taken every
    // few steps or decimated into other buckets never make ragged, mostly empty rows.
    let grid: Vec<f64> = columns
        .iter()
        .max_by_key(|(_, points)| points.len())
        .map(|(_, points)| points.iter().map(|p| p.0).collect())
        .unwrap_or_default();
    let mut writer = csv::Writer::from_writer(out);
    let header = std::iter::once("step").chain(columns.iter().map(|(name, _)| *name));
    writer.write_record(header)?;
    for x in grid {
        let mut record = vec![format!("{x}")];
        for (_, points) in columns {
            record.push(
                value_at(points, x)
                    .map(|v| format!("{v}"))
                    .unwrap_or_default(),
            );
        }
        writer.write_record(&record)?;
    }
    writer.flush()?;
    Ok(())
}

/// The line through `points` (sorted by x) at `x`; `None` outside their range.
fn value_at(points: &[(f64, f64)], x: f64) -> Option<f64> {
    let after = points.partition_point(|p| p.0 < x);
    let right = points.get(after)?;
    if right.0 == x {
        return Some(right.1);
    }
    let left = points.get(after.checked_sub(1)?)?;
    let t = (x - left.0) / (right.0 - left.0);
    Some(left.1 + t * (right.1 - left.1))
}

fn fixed1<S: Serializer>(value: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{value:.1}"))
}

fn fixed2<S: Serializer>(value: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{value:.2}"))
}

fn fixed5<S: Serializer>(value: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{value:.5}"))
}

fn fixed6<S: Serializer>(value: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{value:.6}"))
}

fn scientific6<S: Serializer>(value: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{value:.6e}"))
}

fn optional4<S: Serializer>(value: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => s.collect_str(&format_args!("{v:.4}")),
        None => s.serialize_str(""),
    }
}

fn optional2<S: Serializer>(value: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => s.collect_str(&format_args!("{v:.2}")),
        None => s.serialize_str(""),
    }
}

/// Rust's shortest round-trip text (`0.002`, `1`), as Python would read it back.
fn optional_plain<S: Serializer>(value: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => s.collect_str(v),
        None => s.serialize_str(""),
    }
}

/// A number (also `"NaN"`, `"Infinity"`), or `None` for anything else (other text, a list,
/// null).
fn number_or_none<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Cell {
        Number(f64),
        Text(String),
        Other(serde::de::IgnoredAny),
    }
    Ok(match Cell::deserialize(d)? {
        Cell::Number(v) => Some(v),
        Cell::Text(text) => match text.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        Cell::Other(_) => None,
    })
}

/// A whole, non-negative number (`3` or `3.0`) as a count.
fn whole_number<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let value = f64::deserialize(d)?;
    if value >= 0.0 && value.fract() == 0.0 && value <= usize::MAX as f64 {
        Ok(value as usize)
    } else {
        Err(serde::de::Error::custom(format!(
            "{value} is not a whole, non-negative number"
        )))
    }
}

fn optional6<S: Serializer>(value: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => s.collect_str(&format_args!("{v:.6}")),
        None => s.serialize_str(""),
    }
}

/// Booleans as `1` / `0`, which spreadsheets and pandas read as numbers.
fn flag<S: Serializer>(value: &bool, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u8(u8::from(*value))
}

fn read_flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let text = String::deserialize(d)?;
    match text.trim() {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        other => Err(serde::de::Error::custom(format!("`{other}` is not 0 or 1"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(step: usize) -> MetricsRow {
        MetricsRow {
            step,
            epoch: 0,
            loss: 1.25,
            teacher_entropy: 1.0,
            kl: 0.25,
            batch_mean_entropy: 2.0,
            teacher_mi: Some(1.0),
            lr: 0.0005,
            weight_decay: 0.04,
            teacher_momentum: 0.996,
            teacher_temp: 0.04,
            images_per_sec: 100.0,
            step_secs: 0.3,
            data_wait_secs: 0.0,
            local_crops: 6,
            centering: true,
            sharpening: false,
            ln_k: 6.931472,
            effective_rank: Some(41.25),
            effective_rank_head: None,
            std_normalized: Some(0.0625),
            near_zero_directions: Some(3),
            rank_rows: Some(2048),
            regime: Regime::OneHotTargets,
            centering_mode: Some(CenteringMode::Sinkhorn),
            koleo_weight: 0.1,
            koleo: Some(-1.5),
            koleo_duplicates: Some(2),
            spectrum: vec![1.0, 0.5],
            warnings: vec!["not stored".into()],
        }
    }

    #[test]
    fn metrics_rows_keep_the_column_formats_and_read_back() {
        let mut bytes = Vec::new();
        write_rows(&mut bytes, &[row(0), row(1)], true).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert_eq!(
            text.lines().next().unwrap(),
            "step,epoch,loss,teacher_entropy,kl,batch_mean_entropy,teacher_mi,lr,weight_decay,teacher_momentum,teacher_temp,images_per_sec,step_secs,data_wait_secs,local_crops,centering,sharpening,ln_k,effective_rank,effective_rank_head,std_normalized,near_zero_directions,rank_rows,regime,centering_mode,koleo_weight,koleo,koleo_duplicates"
        );
        assert_eq!(
            text.lines().nth(1).unwrap(),
            "0,0,1.250000,1.000000,0.250000,2.000000,1.000000,5.000000e-4,0.040000,0.996000,0.04000,100.00,0.30000,0.00000,6,1,0,6.931472,41.2500,,0.062500,3,2048,one-hot,sinkhorn,0.100000,-1.500000,2"
        );
        let back: Vec<MetricsRow> = read_rows(bytes.as_slice());
        let mut want = row(1);
        want.warnings.clear();
        want.spectrum.clear();
        assert_eq!(back.len(), 2);
        assert_eq!(back[1], want);
    }

    #[test]
    fn reading_skips_torn_rows_and_ignores_extra_columns() {
        let text = "step,epoch,top1,top5,jaccard_best_head,jaccard_mean_map,eval_secs,future\n\
                    0,0,44.1000,80.0000,,,1.5000,x\n\
                    8,1,50.0000,90.0000,20.0000,18.0000,1.2000,y\n\
                    16,2,55.0";
        let rows: Vec<EvalRow> = read_rows(text.as_bytes());
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].jaccard_best_head, None);
        assert_eq!(rows[1].jaccard_mean_map, Some(18.0));
    }

    #[test]
    fn runs_written_before_the_geometry_columns_still_read() {
        let text = "step,epoch,loss,teacher_entropy,kl,batch_mean_entropy,lr,weight_decay,teacher_momentum,teacher_temp,images_per_sec,step_secs,data_wait_secs,local_crops,centering,sharpening,ln_k\n\
                    0,0,1.250000,1.000000,0.250000,2.000000,5.000000e-4,0.040000,0.996000,0.04000,100.00,0.30000,0.00000,6,1,0,6.931472\n";
        let rows: Vec<MetricsRow> = read_rows(text.as_bytes());
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].effective_rank, None);
        assert_eq!(rows[0].near_zero_directions, None);
        assert_eq!(rows[0].regime, Regime::WarmingUp);
        // Before DINOv2's tools: the mode from the old switch, KoLeo off and unmeasured.
        assert_eq!(rows[0].centering_mode, None);
        assert_eq!(rows[0].centering_mode(), CenteringMode::Ema);
        assert_eq!((rows[0].koleo_weight, rows[0].koleo), (0.0, None));
        let evals: Vec<EvalRow> =
            read_rows("step,epoch,top1,top5,jaccard_best_head,jaccard_mean_map,eval_secs\n4,1,50.0,90.0,,,1.0\n".as_bytes());
        assert_eq!(evals[0].top1, Some(50.0));
        assert_eq!(evals[0].student_top1, None);
    }

    #[test]
    fn series_names_with_commas_are_quoted_not_rewritten() {
        let a = [(0.0, 1.0), (2.0, 3.0)];
        let b = [(2.0, 5.5)];
        let mut bytes = Vec::new();
        write_series(&mut bytes, &[("h(Pt), run 1", &a), ("KL", &b)]).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(text, "step,\"h(Pt), run 1\",KL\n0,1,\n2,3,5.5\n");
    }

    #[test]
    fn series_share_the_densest_grid_with_values_read_off_the_line() {
        // A curve every step beside readings every 4 steps: one full row per step inside the
        // readings' range, never a ragged row of one value.
        let loss: Vec<(f64, f64)> = (0..9).map(|s| (s as f64, 10.0 - s as f64)).collect();
        let rank = [(0.0, 2.0), (4.0, 6.0), (8.0, 4.0)];
        let late = [(6.0, 1.0), (8.0, 3.0)];
        let mut bytes = Vec::new();
        write_series(
            &mut bytes,
            &[("rank", &rank), ("loss", &loss), ("late", &late)],
        )
        .unwrap();
        let text = String::from_utf8(bytes).unwrap();
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(rows.len(), 10);
        assert_eq!(rows[0], "step,rank,loss,late");
        assert_eq!(rows[1], "0,2,10,");
        assert_eq!(rows[3], "2,4,8,");
        assert_eq!(rows[7], "6,5,4,1");
        assert_eq!(rows[8], "7,4.5,3,2");
        assert_eq!(rows[9], "8,4,2,3");
    }
}
