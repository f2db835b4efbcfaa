//! Paper-quality figures of saved runs with plotters, as PNG or SVG: the Fig. 7 pair (h(Pt) and
//! KL vs step, several runs, the ln K line), the loss decomposition, the k-NN curve and the
//! representation geometry (effective rank with its ceiling d, std of normalised features). Text
//! is drawn with a font embedded in the binary (egui's Ubuntu Light, Ubuntu Font Licence 1.0),
//! so no system font library is needed.

use crate::store::quantity::Quantity;
use crate::store::rows::{EvalRow, MetricsRow};
use crate::store::run::{read_eval_rows, read_step_metrics, EVAL_FILE};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum FigureError {
    #[error("{path}: unsupported figure format `{extension}`; use .png or .svg")]
    Format { path: PathBuf, extension: String },
    #[error(
        "{path} has no metrics.csv with complete rows; pass run directories written by dinoscope"
    )]
    NoMetrics { path: PathBuf },
    #[error("none of the runs has k-NN results (knn.csv); train with data.knn_every_epochs > 0")]
    NoKnn,
    #[error("none of the runs has effective-rank readings (the effective_rank column of metrics.csv); runs trained before dinoscope measured them have none, train them again")]
    NoGeometry,
    #[error("no runs given")]
    NoRuns,
    #[error("cannot draw {path}: {reason}")]
    Draw { path: PathBuf, reason: String },
}

/// Which figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FigureKind {
    /// h(Pt) and KL(Pt‖Ps) side by side, as the paper's Fig. 7.
    Collapse,
    /// Loss, h(Pt), KL and h(mean Pt).
    Loss,
    /// Teacher k-NN top-1 (solid), top-5 (dashed) and the student's top-1 (dotted).
    Knn,
    /// Effective rank of the teacher's features (backbone solid, head bottleneck dashed, d as
    /// the ceiling) and the std of its normalised features (1/√d line).
    Geometry,
}

/// A run read back for plotting.
pub struct PlotRun {
    pub name: String,
    pub metrics: Vec<MetricsRow>,
    pub ln_k: Option<f64>,
    /// Width of the backbone features (from config.toml), the effective rank's ceiling.
    pub embed_dim: Option<usize>,
    pub evals: Vec<EvalRow>,
}

impl PlotRun {
    pub fn read(dir: &Path) -> Result<Self, FigureError> {
        let no_metrics = || FigureError::NoMetrics {
            path: dir.to_path_buf(),
        };
        let metrics = read_step_metrics(&dir.join(crate::store::run::METRICS_FILE))
            .map_err(|_| no_metrics())?;
        if metrics.is_empty() {
            return Err(no_metrics());
        }
        let config =
            crate::config::Config::from_file(&dir.join(crate::store::run::CONFIG_FILE)).ok();
        let ln_k = config.as_ref().map(|c| (c.dino.out_dim as f64).ln());
        let embed_dim = config.as_ref().map(|c| c.vit_arch().embed_dim);
        Ok(Self {
            name: dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| dir.display().to_string()),
            metrics,
            ln_k,
            embed_dim,
            evals: read_eval_rows(&dir.join(EVAL_FILE)),
        })
    }
}

/// Distinct, colour-blind-friendly run colours (Okabe–Ito).
const RUN_COLOURS: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
];

pub(crate) const FONT: &str = "dinoscope-sans";

pub(crate) fn register_font() {
    // Registering twice is harmless; a font the parser rejects leaves plotters' fallback.
    let _ =
        plotters::style::register_font(FONT, FontStyle::Normal, epaint_default_fonts::UBUNTU_LIGHT);
}

/// Draws `kind` for `runs` into `path` (.png or .svg), `size_px` = (width, height), atomically.
pub fn render_figure(
    runs: &[PlotRun],
    kind: FigureKind,
    path: &Path,
    size_px: (u32, u32),
) -> Result<(), FigureError> {
    if runs.is_empty() {
        return Err(FigureError::NoRuns);
    }
    if kind == FigureKind::Knn
        && runs
            .iter()
            .all(|r| r.evals.iter().all(|e| e.top1.is_none()))
    {
        return Err(FigureError::NoKnn);
    }
    if kind == FigureKind::Geometry
        && runs
            .iter()
            .all(|r| r.metrics.iter().all(|m| m.effective_rank.is_none()))
    {
        return Err(FigureError::NoGeometry);
    }
    register_font();
    let extension = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let draw_error = |reason: String| FigureError::Draw {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = match extension.as_str() {
        "svg" => {
            let mut svg = String::new();
            {
                let root = SVGBackend::with_string(&mut svg, size_px).into_drawing_area();
                draw(&root, runs, kind).map_err(draw_error)?;
                root.present().map_err(|e| draw_error(e.to_string()))?;
            }
            svg.into_bytes()
        }
        "png" => {
            let (w, h) = size_px;
            let mut rgb = vec![0u8; (w * h * 3) as usize];
            {
                let root = BitMapBackend::with_buffer(&mut rgb, size_px).into_drawing_area();
                draw(&root, runs, kind).map_err(draw_error)?;
                root.present().map_err(|e| draw_error(e.to_string()))?;
            }
            let image = image::RgbImage::from_raw(w, h, rgb)
                .ok_or_else(|| draw_error("bitmap size mismatch".into()))?;
            let mut png = std::io::Cursor::new(Vec::new());
            image
                .write_to(&mut png, image::ImageFormat::Png)
                .map_err(|e| draw_error(e.to_string()))?;
            png.into_inner()
        }
        other => {
            return Err(FigureError::Format {
                path: path.to_path_buf(),
                extension: other.to_string(),
            })
        }
    };
    crate::store::run::write_atomically(path, &bytes).map_err(|e| draw_error(e.to_string()))
}

type Series = Vec<(f64, f64)>;

/// One line of a panel: legend name, points, colour index and whether it is dashed.
struct Curve {
    name: String,
    points: Series,
    colour: usize,
    dashed: bool,
}

impl Curve {
    fn solid(name: String, points: Series, colour: usize) -> Self {
        Self {
            name,
            points,
            colour,
            dashed: false,
        }
    }
}

/// The quantity per step, as a centred running mean over about 1/64 of the run (per-step
/// values are noisy; a figure shows the trend, as the paper's per-epoch curves).
fn quantity_series(run: &PlotRun, quantity: Quantity) -> Series {
    // The loss decomposition is in every row; a missing reading would be a gap.
    let values: Vec<f64> = run
        .metrics
        .iter()
        .map(|m| quantity.of(m).unwrap_or(f64::NAN))
        .collect();
    let half = values.len() / 128;
    run.metrics
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let window = &values[i.saturating_sub(half)..(i + half + 1).min(values.len())];
            (
                m.step as f64,
                window.iter().sum::<f64>() / window.len() as f64,
            )
        })
        .collect()
}

/// Long: one arm per figure kind, each a few lines of series to hand to `panel`.
fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    runs: &[PlotRun],
    kind: FigureKind,
) -> Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    match kind {
        FigureKind::Collapse => {
            let (left, right) = root.split_horizontally(root.dim_in_pixel().0 / 2);
            let ln_k = runs.iter().find_map(|r| r.ln_k);
            let h: Vec<Curve> = runs
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    Curve::solid(
                        r.name.clone(),
                        quantity_series(r, Quantity::TeacherEntropy),
                        i,
                    )
                })
                .collect();
            let kl: Vec<Curve> = runs
                .iter()
                .enumerate()
                .map(|(i, r)| Curve::solid(r.name.clone(), quantity_series(r, Quantity::Kl), i))
                .collect();
            panel(
                &left,
                "Teacher entropy h(Pt)",
                "nats",
                &h,
                ln_k_line(ln_k),
                true,
            )?;
            panel(&right, "KL(Pt || Ps)", "nats", &kl, None, true)?;
        }
        FigureKind::Loss => {
            let mut curves = Vec::new();
            for (r, run) in runs.iter().enumerate() {
                for (q, quantity) in [
                    Quantity::Loss,
                    Quantity::TeacherEntropy,
                    Quantity::Kl,
                    Quantity::BatchMeanEntropy,
                ]
                .into_iter()
                .enumerate()
                {
                    let name = if runs.len() == 1 {
                        quantity.name().to_string()
                    } else {
                        format!("{} · {}", run.name, quantity.name())
                    };
                    curves.push(Curve {
                        name,
                        points: quantity_series(run, quantity),
                        colour: q,
                        // Later runs dashed: colours name the quantity.
                        dashed: r > 0,
                    });
                }
            }
            let ln_k = runs.iter().find_map(|r| r.ln_k);
            panel(
                root,
                "DINO loss = h(Pt) + KL(Pt || Ps)",
                "nats",
                &curves,
                ln_k_line(ln_k),
                true,
            )?;
        }
        FigureKind::Knn => {
            let mut curves = Vec::new();
            let x_max = runs
                .iter()
                .flat_map(|r| r.evals.iter().map(|e| e.step as f64))
                .fold(1.0f64, f64::max);
            for (r, run) in runs.iter().enumerate() {
                let series = |value: fn(&EvalRow) -> Option<f64>| -> Series {
                    run.evals
                        .iter()
                        .filter_map(|e| Some((e.step as f64, value(e)?)))
                        .collect()
                };
                let top1 = series(|e| e.top1);
                if top1.is_empty() {
                    continue;
                }
                curves.push(Curve::solid(format!("{} · top-1", run.name), top1, r));
                curves.push(Curve {
                    name: format!("{} · top-5", run.name),
                    points: series(|e| e.top5),
                    colour: r,
                    dashed: true,
                });
                let student = series(|e| e.student_top1);
                if !student.is_empty() {
                    curves.push(Curve {
                        name: format!("{} · student top-1", run.name),
                        points: student,
                        colour: (r + 1) % (RUN_COLOURS.len() - 1),
                        dashed: true,
                    });
                }
                if let Some(first) = run
                    .evals
                    .first()
                    .filter(|e| e.step == 0)
                    .and_then(|e| e.top1)
                {
                    curves.push(Curve {
                        name: format!("{} · top-1 at random init", run.name),
                        points: vec![(0.0, first), (x_max, first)],
                        colour: RUN_COLOURS.len() - 1,
                        dashed: true,
                    });
                }
            }
            panel(
                root,
                "k-NN accuracy (k = 20, T = 0.07)",
                "%",
                &curves,
                None,
                false,
            )?;
        }
        FigureKind::Geometry => draw_geometry(root, runs)?,
    }
    Ok(())
}

fn ln_k_line(ln_k: Option<f64>) -> Option<(f64, String)> {
    ln_k.map(|v| (v, format!("ln K = {v:.2} (uniform)")))
}

/// Effective rank (left) and std of normalised features (right), from the rows that have a
/// reading; the reference lines come from the first run that knows its width.
fn draw_geometry<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    runs: &[PlotRun],
) -> Result<(), String> {
    let (left, right) = root.split_horizontally(root.dim_in_pixel().0 / 2);
    let readings = |run: &PlotRun, value: fn(&MetricsRow) -> Option<f64>| -> Series {
        run.metrics
            .iter()
            .filter_map(|m| Some((m.step as f64, value(m)?)))
            .collect()
    };
    let mut ranks = Vec::new();
    let mut spreads = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        ranks.push(Curve::solid(
            format!("{} · backbone", run.name),
            readings(run, |m| m.effective_rank),
            i,
        ));
        let head = readings(run, |m| m.effective_rank_head);
        if !head.is_empty() {
            ranks.push(Curve {
                name: format!("{} · head bottleneck", run.name),
                points: head,
                colour: i,
                dashed: true,
            });
        }
        spreads.push(Curve::solid(
            run.name.clone(),
            readings(run, |m| m.std_normalized),
            i,
        ));
    }
    let d = runs.iter().find_map(|r| r.embed_dim);
    let ceiling = d.map(|d| (d as f64, format!("d = {d} (every direction)")));
    let isotropic = d.map(|d| {
        let v = 1.0 / (d as f64).sqrt();
        (v, format!("1/√d = {v:.3} (isotropic)"))
    });
    panel(
        &left,
        "Effective rank (RankMe)",
        "rank",
        &ranks,
        ceiling,
        true,
    )?;
    panel(
        &right,
        "Std of ℓ2-normalised features",
        "std",
        &spreads,
        isotropic,
        true,
    )
}

/// One chart: the curves, the optional ln K line and the 0 line.
///
/// Long: plotters' chart, mesh, reference lines, curves and legend, in drawing order.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    y_label: &str,
    curves: &[Curve],
    reference: Option<(f64, String)>,
    zero_line: bool,
) -> Result<(), String> {
    let reference_y = reference.as_ref().map(|r| r.0);
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let x_max = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.0))
        .fold(1.0f64, f64::max);
    let y_values = curves.iter().flat_map(|c| c.points.iter().map(|p| p.1));
    let (y_min, y_max) = y_values
        .chain(reference_y)
        .filter(|v| v.is_finite())
        .fold((0.0f64, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let pad = ((y_max - y_min) * 0.06).max(1e-3);
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 22))
        .margin(14)
        .x_label_area_size(42)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..x_max, (y_min - pad)..(y_max + pad))
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(215, 215, 215))
        .x_desc("step")
        .y_desc(y_label)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 16))
        .draw()
        .map_err(|e| err(&e))?;
    if zero_line {
        chart
            .draw_series(LineSeries::new(
                [(0.0, 0.0), (x_max, 0.0)],
                BLACK.stroke_width(1),
            ))
            .map_err(|e| err(&e))?;
    }
    if let Some((y, label)) = reference {
        let grey = RGBColor(110, 110, 110);
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, y), (x_max, y)],
                6,
                4,
                grey.stroke_width(1),
            ))
            .map_err(|e| err(&e))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey));
    }
    for curve in curves {
        let colour = RUN_COLOURS[curve.colour % RUN_COLOURS.len()];
        let style = colour.stroke_width(2);
        let points = curve.points.iter().copied();
        let drawn = if curve.dashed {
            chart
                .draw_series(DashedLineSeries::new(points, 8, 5, style))
                .map_err(|e| err(&e))?
        } else {
            chart
                .draw_series(LineSeries::new(points, style))
                .map_err(|e| err(&e))?
        };
        drawn
            .label(curve.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .label_font((FONT, 15))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| err(&e))?;
    Ok(())
}

/// Writes one curve per column (step first) as CSV: what a plot shows, for other tools.
pub fn write_series_csv(
    path: &Path,
    columns: &[(&str, &[(f64, f64)])],
) -> Result<(), crate::store::run::RunError> {
    let mut bytes = Vec::new();
    crate::store::rows::write_series(&mut bytes, columns).map_err(|err| {
        crate::store::run::RunError::Write {
            path: path.to_path_buf(),
            source: std::io::Error::other(err.to_string()),
        }
    })?;
    crate::store::run::write_atomically(path, &bytes)
}

#[cfg(test)]
#[path = "figure_tests.rs"]
mod tests;
