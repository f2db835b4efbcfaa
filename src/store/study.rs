//! An ablation study on disk: one run directory per variant under the study folder, and the
//! comparison made from them: `study.csv` (one [`StudyRow`] per variant), `study.md` (the table
//! in the style of the paper's Table 7), the Fig. 7 pair and the k-NN curves of every variant
//! on shared axes (`collapse.png`/`.svg`, `knn.png`, drawn by `figure`), and the attention
//! masks of every variant on one image side by side (`attention.png`).

use crate::analysis::health::Regime;
use crate::config::study::{paper_reference, StudySpec};
use crate::store::figure::{register_font, render_figure, FigureKind, PlotRun, FONT};
use crate::store::rows::{write_rows, EvalRow, MetricsRow, StudyRow, STUDY_TAIL_STEPS};
use crate::store::run::{write_atomically, RunError};
use image::RgbImage;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

pub const STUDY_CSV: &str = "study.csv";
pub const STUDY_MD: &str = "study.md";
pub const STUDY_TOML: &str = "study.toml";
pub const ATTENTION_GRID: &str = "attention.png";

impl StudyRow {
    /// The row of one finished variant from its steps and evaluations.
    pub fn summarise(variant: &str, metrics: &[MetricsRow], evals: &[EvalRow], secs: f64) -> Self {
        let tail = &metrics[metrics.len().saturating_sub(STUDY_TAIL_STEPS)..];
        let mean = |value: fn(&MetricsRow) -> f64| {
            tail.iter().map(value).sum::<f64>() / tail.len().max(1) as f64
        };
        let last = metrics.last();
        let final_eval = evals.iter().rev().find(|e| e.step > 0);
        Self {
            variant: variant.to_string(),
            final_loss: mean(|m| m.loss),
            final_teacher_entropy: mean(|m| m.teacher_entropy),
            final_kl: mean(|m| m.kl),
            final_batch_mean_entropy: mean(|m| m.batch_mean_entropy),
            ln_k: last.map(|m| m.ln_k).unwrap_or_default(),
            knn_top1: final_eval.and_then(|e| e.top1),
            random_init_top1: evals.iter().find(|e| e.step == 0).and_then(|e| e.top1),
            jaccard: final_eval.and_then(|e| e.jaccard_best_head),
            effective_rank: metrics.iter().rev().find_map(|m| m.effective_rank),
            regime: last.map(|m| m.regime).unwrap_or(Regime::WarmingUp),
            steps: metrics.len(),
            secs,
            paper_knn_top1: paper_reference(variant).and_then(|p| p.knn_top1),
        }
    }
}

/// `study.csv`, written whole or not at all.
pub fn write_study_csv(path: &Path, rows: &[StudyRow]) -> Result<(), RunError> {
    let mut bytes = Vec::new();
    write_rows(&mut bytes, rows, true).map_err(|err| RunError::Write {
        path: path.to_path_buf(),
        source: std::io::Error::other(err.to_string()),
    })?;
    write_atomically(path, &bytes)
}

/// `study.md`: the table, what each column means and where the paper's numbers come from.
pub fn study_markdown(spec: &StudySpec, rows: &[StudyRow], machine: &str) -> String {
    let percent = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.1} %"));
    let base = match (&spec.config, &spec.preset) {
        (Some(path), _) => format!("config `{}`", path.display()),
        (None, Some(preset)) => format!("preset `{preset}`"),
        (None, None) => "preset `tiny`".into(),
    };
    let mut md = format!("# Ablation study `{}`\n\n", spec.name);
    md.push_str(&format!("Base: {base}"));
    if !spec.set.is_empty() {
        md.push_str(&format!(" with `{}`", spec.set.join("`, `")));
    }
    let steps = rows.first().map_or(0, |r| r.steps);
    md.push_str(&format!(
        "; every variant trains {steps} steps with the same seed and data order. Machine: {machine}.\n\n"
    ));
    md.push_str("| variant | what changes | h(Pt) | KL(Pt‖Ps) | loss | k-NN top-1 (init) | Jaccard | eff. rank | regime | time | paper k-NN |\n");
    md.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
    for row in rows {
        let change = spec
            .variants
            .iter()
            .find(|v| v.name == row.variant)
            .map(|v| {
                if v.set.is_empty() {
                    "—".to_string()
                } else {
                    format!("`{}`", v.set.join("`, `"))
                }
            })
            .unwrap_or_default();
        let paper = paper_reference(&row.variant).map_or("–".to_string(), |p| match p.knn_top1 {
            Some(top1) => format!("{top1:.1} ({})", p.source),
            None => p.source.to_string(),
        });
        md.push_str(&format!(
            "| {} | {change} | {:.3} of {:.2} | {:.3} | {:.3} | {} ({}) | {} | {} | {} | {:.0} s | {paper} |\n",
            row.variant,
            row.final_teacher_entropy,
            row.ln_k,
            row.final_kl,
            row.final_loss,
            percent(row.knn_top1),
            percent(row.random_init_top1),
            percent(row.jaccard),
            row.effective_rank.map_or("–".into(), |r| format!("{r:.1}")),
            row.regime.word(),
            row.secs,
        ));
    }
    md.push_str(&format!(
        "\nh(Pt), KL and loss: means over the last {STUDY_TAIL_STEPS} steps (nats; ln K is the uniform \
         line). k-NN: the teacher's weighted k-NN top-1 at the end, the same network at random init in \
         brackets. Jaccard: the best head's attention mask against the true object masks. Regime: \
         dinoscope's diagnosis of the last steps.\n\n\
         The paper column is the DINO paper's, for ViT-S/16 trained 300 epochs on ImageNet \
         (Table 7; Fig. 7 for the collapse variants): the direction to expect, not a number a \
         small run can reach.\n\n\
         Figures: `collapse.png` (h(Pt) and KL of every variant, the paper's Fig. 7 pair), \
         `knn.png`, `attention.png` (each variant's masks on the same image).\n"
    ));
    md
}

/// One image per variant, side by side, with the variant's name under each (PNG pixels).
pub fn attention_grid(panels: &[(String, RgbImage)], panel_px: u32) -> Result<RgbImage, String> {
    const GAP_PX: u32 = 8;
    const CAPTION_PX: u32 = 26;
    let n = panels.len() as u32;
    if n == 0 {
        return Err("no attention maps to draw".into());
    }
    let width = n * panel_px + (n + 1) * GAP_PX;
    let height = panel_px + CAPTION_PX + 2 * GAP_PX;
    let mut buffer = vec![255u8; (width * height * 3) as usize];
    for (i, (_, panel)) in panels.iter().enumerate() {
        let scaled = image::imageops::resize(
            panel,
            panel_px,
            panel_px,
            image::imageops::FilterType::Nearest,
        );
        let x0 = GAP_PX + i as u32 * (panel_px + GAP_PX);
        for (x, y, pixel) in scaled.enumerate_pixels() {
            let at = (((GAP_PX + y) * width + x0 + x) * 3) as usize;
            buffer[at..at + 3].copy_from_slice(&pixel.0);
        }
    }
    register_font();
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (width, height)).into_drawing_area();
        let style = TextStyle::from((FONT, 18)).color(&BLACK);
        for (i, (label, _)) in panels.iter().enumerate() {
            let x = GAP_PX + i as u32 * (panel_px + GAP_PX);
            root.draw_text(label, &style, (x as i32, (GAP_PX + panel_px + 4) as i32))
                .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    RgbImage::from_raw(width, height, buffer).ok_or_else(|| "bitmap size mismatch".into())
}

/// The files of a finished study.
#[derive(Clone, Debug, Default)]
pub struct StudyFiles {
    pub written: Vec<PathBuf>,
    /// Outputs that could not be made (e.g. no k-NN without labels), with why.
    pub skipped: Vec<String>,
}

/// Writes the comparison of a finished study into `dir`: `study.csv`, `study.md`,
/// `study.toml`, the figures from the variants' run directories and the attention grid.
pub fn write_study(
    dir: &Path,
    spec: &StudySpec,
    rows: &[StudyRow],
    attention: &[(String, RgbImage)],
    machine: &str,
) -> Result<StudyFiles, RunError> {
    let mut files = StudyFiles::default();
    let path = dir.join(STUDY_CSV);
    write_study_csv(&path, rows)?;
    files.written.push(path);
    for (name, bytes) in [
        (STUDY_MD, study_markdown(spec, rows, machine)),
        (STUDY_TOML, spec.to_toml()),
    ] {
        let path = dir.join(name);
        write_atomically(&path, bytes.as_bytes())?;
        files.written.push(path);
    }
    let runs: Vec<PlotRun> = rows
        .iter()
        .filter_map(|row| PlotRun::read(&dir.join(&row.variant)).ok())
        .collect();
    for (kind, name, size) in [
        (FigureKind::Collapse, "collapse.png", (1400, 520)),
        (FigureKind::Collapse, "collapse.svg", (1400, 520)),
        (FigureKind::Knn, "knn.png", (900, 520)),
        (FigureKind::Geometry, "geometry.png", (1400, 520)),
    ] {
        let path = dir.join(name);
        match render_figure(&runs, kind, &path, size) {
            Ok(()) => files.written.push(path),
            Err(err) => files.skipped.push(format!("{name}: {err}")),
        }
    }
    match attention_grid(attention, 192) {
        Ok(grid) => {
            let path = dir.join(ATTENTION_GRID);
            super::run::write_png(&path, &grid)?;
            files.written.push(path);
        }
        Err(err) => files.skipped.push(format!("{ATTENTION_GRID}: {err}")),
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(step: usize, h: f64) -> MetricsRow {
        MetricsRow {
            step,
            loss: h + 1.0,
            teacher_entropy: h,
            kl: 1.0,
            ln_k: 6.93,
            regime: Regime::Healthy,
            effective_rank: step.is_multiple_of(4).then_some(step as f64),
            ..MetricsRow::default()
        }
    }

    #[test]
    fn a_row_summarises_the_tail_and_the_last_evaluation() {
        let metrics: Vec<MetricsRow> = (0..20).map(|s| row(s, s as f64)).collect();
        let eval = |step, top1| EvalRow {
            step,
            top1: Some(top1),
            jaccard_best_head: Some(top1 / 2.0),
            ..EvalRow::default()
        };
        let evals = [eval(0, 30.0), eval(10, 50.0), eval(20, 60.0)];
        let row = StudyRow::summarise("full", &metrics, &evals, 12.5);
        assert_eq!(row.final_teacher_entropy, 17.0, "mean of steps 15..=19");
        assert_eq!(row.knn_top1, Some(60.0));
        assert_eq!(row.random_init_top1, Some(30.0));
        assert_eq!(row.jaccard, Some(30.0));
        assert_eq!(row.effective_rank, Some(16.0));
        assert_eq!(row.steps, 20);
        assert_eq!(row.paper_knn_top1, Some(72.8));
        let mut csv = Vec::new();
        write_rows(&mut csv, std::slice::from_ref(&row), true).unwrap();
        let text = String::from_utf8(csv).unwrap();
        assert!(text.starts_with(
            "variant,final_loss,final_teacher_entropy,final_kl,final_batch_mean_entropy,ln_k,knn_top1"
        ));
        let back: Vec<StudyRow> = crate::store::rows::read_rows(text.as_bytes());
        assert_eq!(back[0].variant, "full");
        assert_eq!(back[0].knn_top1, Some(60.0));
        let md = study_markdown(&StudySpec::paper("tiny"), &[row], "test box");
        assert!(md.contains("| full | — | 17.000 of 6.93"), "{md}");
        assert!(md.contains("72.8 (Table 7 row 1)"), "{md}");
    }

    #[test]
    fn grid_places_each_panel_with_its_caption() {
        let red = RgbImage::from_pixel(4, 4, image::Rgb([255, 0, 0]));
        let blue = RgbImage::from_pixel(4, 4, image::Rgb([0, 0, 255]));
        let grid = attention_grid(&[("a".into(), red), ("b".into(), blue)], 32).unwrap();
        assert_eq!(grid.dimensions(), (2 * 32 + 3 * 8, 32 + 26 + 16));
        assert_eq!(grid.get_pixel(8 + 16, 8 + 16).0, [255, 0, 0]);
        assert_eq!(grid.get_pixel(8 + 32 + 8 + 16, 8 + 16).0, [0, 0, 255]);
        let caption_ink = (8 + 32 + 2..8 + 32 + 24)
            .flat_map(|y| (0..grid.width()).map(move |x| (x, y)))
            .any(|(x, y)| grid.get_pixel(x, y).0 != [255, 255, 255]);
        assert!(caption_ink, "captions are drawn");
        assert!(attention_grid(&[], 32).is_err());
    }
}
