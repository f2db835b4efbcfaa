//! `dinoscope plot`: paper-quality figures of saved runs.

use super::output::Printer;
use anyhow::{bail, Result};
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
    /// Size in pixels, WxH (default 1600x600 for collapse, else 1000x600).
    #[arg(long, value_name = "WxH")]
    size: Option<String>,
}

pub fn run(args: PlotArgs) -> Result<()> {
    use dinoscope::store::figure::{render_figure, FigureKind, PlotRun};
    let mut dirs = Vec::new();
    for path in &args.runs {
        if path.join("metrics.csv").is_file() {
            dirs.push(path.clone());
        } else if path.is_dir() {
            let found = dinoscope::store::run::list_run_dirs(path);
            if found.is_empty() {
                bail!(
                    "{} holds no run directories (none has a metrics.csv)",
                    path.display()
                );
            }
            dirs.extend(found);
        } else {
            bail!("{} is not a run directory", path.display());
        }
    }
    let runs = dirs
        .iter()
        .map(|dir| PlotRun::read(dir))
        .collect::<Result<Vec<_>, _>>()?;
    let size = match &args.size {
        Some(text) => match dinoscope::analysis::attention::ImageSize::parse(text)
            .map_err(|err| anyhow::anyhow!("--size: {err}"))?
        {
            dinoscope::analysis::attention::ImageSize::Exact { width, height } => (width, height),
            dinoscope::analysis::attention::ImageSize::ShortSide(_) => {
                bail!("--size: use WxH, e.g. 1600x600")
            }
        },
        None if args.figure == FigureKind::Collapse => (1600, 600),
        None => (1000, 600),
    };
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
