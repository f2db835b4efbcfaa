//! `dinoscope plot`: paper-quality figures of saved runs.

use super::output::{usage, Printer};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct PlotArgs {
    /// Run directories, or folders of run directories (e.g. runs/).
    #[arg(long, value_name = "DIR", num_args = 1.., required = true)]
    runs: Vec<PathBuf>,
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
    // Before reading any run: a typo in --size is the cheaper thing to report.
    let size = match &args.size {
        Some(text) => figure_size(text)?,
        None if matches!(args.figure, FigureKind::Collapse | FigureKind::Geometry) => (1600, 600),
        None => (1000, 600),
    };
    let mut dirs = Vec::new();
    for path in &args.runs {
        if path.join("metrics.csv").is_file() {
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
