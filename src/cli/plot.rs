//! `dinoscope plot`: paper-quality figures of saved runs.

use super::output::{usage, Printer};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct PlotArgs {
    /// Run directories, or folders of run directories (e.g. runs/).
    #[arg(long, value_name = "DIR", num_args = 1.., required_unless_present = "soak")]
    runs: Vec<PathBuf>,
    /// A soak log instead (the app's --soak-log CSV): memory, frame time and the queues and
    /// caches over time, as PNG.
    #[arg(long, value_name = "CSV", conflicts_with = "runs")]
    soak: Option<PathBuf>,
    /// Output file; .png or .svg.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    #[arg(long, value_enum, default_value = "collapse")]
    figure: dinoscope::store::figure::FigureKind,
    /// Size in pixels, WxH (default 1600x600 for collapse and geometry, else 1000x600).
    #[arg(long, value_name = "WxH")]
    size: Option<String>,
}

pub fn run(args: PlotArgs) -> Result<()> {
    use dinoscope::store::figure::{render_figure, FigureKind, PlotRun};
    if let Some(log) = &args.soak {
        // The soak figure is drawn as a bitmap only: any other name would hold a PNG.
        let png = args
            .out
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("png"));
        if !png {
            return Err(usage(format!(
                "--soak draws a PNG only; name the output .png (--out {})",
                args.out.display()
            )));
        }
        return soak(log, &args.out);
    }
    // Before reading any run: a typo in --size is the cheaper thing to report.
    let size = match &args.size {
        Some(text) => figure_size(text)?,
        None if matches!(args.figure, FigureKind::Collapse | FigureKind::Geometry) => (1600, 600),
        None => (1000, 600),
    };
    let mut dirs = Vec::new();
    for path in &args.runs {
        if path.join(dinoscope::store::run::METRICS_FILE).is_file() {
            dirs.push(path.clone());
        } else if path.is_dir() {
            let found = dinoscope::store::run::list_run_dirs(path);
            if found.is_empty() {
                return Err(usage(format!(
                    "{} holds no run directories (none has a metrics.csv)",
                    path.display()
                )));
            }
            dirs.extend(found);
        } else {
            return Err(usage(format!("{} is not a run directory", path.display())));
        }
    }
    let runs = dirs
        .iter()
        .map(|dir| PlotRun::read(dir))
        .collect::<Result<Vec<_>, _>>()?;
    render_figure(&runs, args.figure, &args.out, size)?;
    let mut out = Printer::default();
    out.line(&format!(
        "wrote {} ({} runs: {})",
        args.out.display(),
        runs.len(),
        runs.iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(())
}

/// `--soak FILE`: the soak log as a figure.
fn soak(log: &std::path::Path, out: &std::path::Path) -> Result<()> {
    use dinoscope::store::{rows::SoakRow, soak_figure::render_soak};
    let text = std::fs::read_to_string(log)
        .map_err(|err| usage(format!("--soak {}: {err}", log.display())))?;
    let rows: Vec<SoakRow> = dinoscope::store::rows::read_rows(text.as_bytes());
    if rows.is_empty() {
        return Err(usage(format!(
            "--soak {}: no rows (expected the CSV `dinoscope --soak-log` writes)",
            log.display()
        )));
    }
    let minutes = rows.last().map_or(0.0, |r| r.elapsed_secs / 60.0);
    let name = log.file_name().unwrap_or_default().to_string_lossy();
    render_soak(&rows, &format!("{name}: {minutes:.1} minutes"), out)?;
    Printer::default().line(&format!(
        "wrote {} ({} samples over {minutes:.1} minutes)",
        out.display(),
        rows.len()
    ));
    Ok(())
}

/// Figure sides outside this range are refused: below it no axis fits, above it the bitmap
/// alone takes hundreds of MiB.
const FIGURE_SIDE_RANGE_PX: std::ops::RangeInclusive<u32> = 100..=10_000;

/// `WxH` in pixels (a figure has no "short side" form, unlike `attention --size`).
fn figure_size(text: &str) -> Result<(u32, u32)> {
    let hint = "use WxH in pixels, e.g. 1600x600";
    let Some((width, height)) = text.split_once(['x', 'X']) else {
        return Err(usage(format!("--size {text}: {hint}")));
    };
    let side = |name: &str, value: &str| -> Result<u32> {
        let px: u32 = value.trim().parse().map_err(|_| {
            usage(format!(
                "--size {text}: the {name} `{value}` is not a whole number; {hint}"
            ))
        })?;
        if !FIGURE_SIDE_RANGE_PX.contains(&px) {
            return Err(usage(format!(
                "--size {text}: the {name} {px} is out of range; allowed {} ..= {} px",
                FIGURE_SIDE_RANGE_PX.start(),
                FIGURE_SIDE_RANGE_PX.end()
            )));
        }
        Ok(px)
    };
    Ok((side("width", width)?, side("height", height)?))
}
