//! The soak figure: what an hour of the app (its `--soak-log` CSV) or a long CLI run did to
//! memory, frame time and the queues and caches that could grow, over time (RELIABILITY.md).

use super::figure::{register_font, FigureError, FONT};
use crate::store::rows::SoakRow;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// Panels: resident memory; frame time (median, p95) when the log has it; the bounded
/// collections (event queue, attention history, textures). x = minutes.
pub fn render_soak(rows: &[SoakRow], title: &str, path: &Path) -> Result<(), FigureError> {
    let draw_error = |reason: String| FigureError::Draw {
        path: path.to_path_buf(),
        reason,
    };
    if rows.is_empty() {
        return Err(draw_error("the soak log has no rows".into()));
    }
    register_font();
    let app = rows.iter().any(|r| r.frame_p95_ms.is_some());
    let size = if app { (1500, 450) } else { (700, 450) };
    let (w, h) = size;
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_error(e.to_string()))?;
        let root = root
            .titled(title, (FONT, 22))
            .map_err(|e| draw_error(e.to_string()))?;
        let panels = if app {
            root.split_evenly((1, 3))
        } else {
            vec![root]
        };
        let minutes = |r: &SoakRow| r.elapsed_secs / 60.0;
        let series = |f: fn(&SoakRow) -> Option<f64>| -> Vec<(f64, f64)> {
            rows.iter()
                .filter_map(|r| Some((minutes(r), f(r)?)))
                .collect()
        };
        chart(
            &panels[0],
            "resident memory",
            "MiB",
            &[("RSS", series(|r| Some(r.rss_mib)))],
        )
        .map_err(draw_error)?;
        if app {
            chart(
                &panels[1],
                "UI frame CPU time (last 240 frames)",
                "ms",
                &[
                    ("median", series(|r| r.frame_median_ms)),
                    ("p95", series(|r| r.frame_p95_ms)),
                ],
            )
            .map_err(draw_error)?;
            chart(
                &panels[2],
                "what could grow",
                "count",
                &[
                    ("pending events", series(|r| count(r.pending_events))),
                    (
                        "attention snapshots",
                        series(|r| count(r.attention_snapshots)),
                    ),
                    ("textures", series(|r| count(r.textures))),
                ],
            )
            .map_err(draw_error)?;
        }
        panels[0].present().map_err(|e| draw_error(e.to_string()))?;
    }
    let image = image::RgbImage::from_raw(w, h, rgb)
        .ok_or_else(|| draw_error("bitmap size mismatch".into()))?;
    super::run::write_png(path, &image).map_err(|e| draw_error(e.to_string()))
}

const COLOURS: [RGBColor; 3] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
];

fn chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    y_label: &str,
    curves: &[(&str, Vec<(f64, f64)>)],
) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let points = curves.iter().flat_map(|(_, c)| c.iter());
    let x_max = points.clone().map(|p| p.0).fold(1.0f64, f64::max);
    let y_max = points
        .map(|p| p.1)
        .filter(|v| v.is_finite())
        .fold(1.0f64, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max * 1.1)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(215, 215, 215))
        .x_desc("minutes")
        .y_desc(y_label)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (name, points)) in curves.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                colour.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.8))
        .border_style(RGBColor(200, 200, 200))
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| err(&e))?;
    Ok(())
}

fn count(value: Option<usize>) -> Option<f64> {
    value.map(|v| v as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_app_soak_log_becomes_a_three_panel_png() {
        let dir = tempfile::tempdir().unwrap();
        let header = crate::store::rows::header_of(&SoakRow::default()).unwrap();
        assert_eq!(header, "elapsed_secs,rss_mib,frame_median_ms,frame_p95_ms,pending_events,attention_snapshots,distance_points,textures,runs,rows,steps");
        let csv = format!(
            "{header}\n0.0,120.0,4.0,9.0,0,1,1,12,1,10,10\n600.0,131.5,4.2,11.0,3,100,60,14,1,2400,2400\n"
        );
        let rows: Vec<SoakRow> = crate::store::rows::read_rows(csv.as_bytes());
        assert_eq!(rows.len(), 2);
        let cli: Vec<SoakRow> =
            crate::store::rows::read_rows("elapsed_secs,rss_mib\n1.5,20\n".as_bytes());
        assert_eq!(
            (cli[0].rss_mib, cli[0].textures),
            (20.0, None),
            "a CLI soak's two columns"
        );
        assert_eq!(rows[1].frame_p95_ms, Some(11.0));
        let path = dir.path().join("soak.png");
        render_soak(&rows, "soak", &path).unwrap();
        let image = image::open(&path).unwrap();
        assert_eq!((image.width(), image.height()), (1500, 450));
        assert!(render_soak(&[], "soak", &path).is_err());
    }
}
