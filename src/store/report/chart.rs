//! The report's curves: a line chart as inline SVG (step on x, a legend on the right) with
//! reference levels, event markers (toggles) and background bands (regimes).

use std::fmt::Write as _;

pub(super) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One line of a chart.
pub(super) struct Line {
    pub label: String,
    pub colour: &'static str,
    pub dashed: bool,
    pub points: Vec<(f64, f64)>,
}

/// What a chart marks besides its lines.
#[derive(Default)]
pub(super) struct Marks {
    /// Horizontal reference lines: `(label, y)`.
    pub levels: Vec<(String, f64)>,
    /// Vertical markers: `(x, label)` (toggles).
    pub events: Vec<(f64, String)>,
    /// Background stretches: `(x0, x1, colour, label)` (regimes).
    pub bands: Vec<(f64, f64, &'static str, String)>,
}

/// An inline SVG line chart (step on x) with a legend; empty lines are left out.
pub(super) fn chart_svg(title: &str, lines: &[Line], marks: &Marks) -> String {
    let (w, h) = (900.0, 300.0);
    let (left, right, top, bottom) = (60.0, 180.0, 28.0, 34.0);
    let points = lines.iter().flat_map(|l| l.points.iter());
    let xs: Vec<f64> = points.clone().map(|p| p.0).collect();
    let mut ys: Vec<f64> = points.map(|p| p.1).filter(|y| y.is_finite()).collect();
    ys.extend(marks.levels.iter().map(|l| l.1));
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="100%" role="img" aria-label="{t}"><text x="{left}" y="18" class="ct">{t}</text>"#,
        t = escape(title)
    );
    if xs.is_empty() || ys.is_empty() {
        svg.push_str(r#"<text x="60" y="150">no data</text></svg>"#);
        return svg;
    }
    let fold = |v: &[f64], f: fn(f64, f64) -> f64, init: f64| v.iter().copied().fold(init, f);
    let (x0, mut x1) = (fold(&xs, f64::min, f64::MAX), fold(&xs, f64::max, f64::MIN));
    let (mut y0, mut y1) = (fold(&ys, f64::min, f64::MAX), fold(&ys, f64::max, f64::MIN));
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-9);
    y0 -= pad;
    y1 += pad;
    let px = |x: f64| left + (x - x0) / (x1 - x0) * (w - left - right);
    let py = |y: f64| top + (y1 - y) / (y1 - y0) * (h - top - bottom);
    for (a, b, colour, label) in &marks.bands {
        let _ = write!(
            svg,
            r#"<rect x="{:.1}" y="{top}" width="{:.1}" height="{:.1}" fill="{colour}"><title>{}</title></rect>"#,
            px(*a),
            (px(*b) - px(*a)).max(1.0),
            h - top - bottom,
            escape(label)
        );
    }
    let _ = write!(
        svg,
        r##"<rect x="{left}" y="{top}" width="{:.1}" height="{:.1}" fill="none" stroke="#999"/>"##,
        w - left - right,
        h - top - bottom
    );
    for i in 0..=4 {
        let (x, y) = (
            x0 + (x1 - x0) * i as f64 / 4.0,
            y0 + (y1 - y0) * i as f64 / 4.0,
        );
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" class="tk" text-anchor="middle">{}</text><text x="{:.1}" y="{:.1}" class="tk" text-anchor="end">{}</text>"#,
            px(x),
            h - bottom + 16.0,
            x.round(),
            left - 4.0,
            py(y) + 4.0,
            short(y)
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" class="tk" text-anchor="middle">step</text>"#,
        (left + w - right) / 2.0,
        h - 4.0
    );
    for (label, y) in &marks.levels {
        let _ = write!(
            svg,
            r##"<line x1="{left}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#777" stroke-dasharray="2 3"/><text x="{:.1}" y="{:.1}" class="tk">{}</text>"##,
            w - right,
            py(*y),
            py(*y),
            w - right + 4.0,
            py(*y) + 4.0,
            escape(label)
        );
    }
    for (x, label) in &marks.events {
        let _ = write!(
            svg,
            r##"<line x1="{:.1}" x2="{:.1}" y1="{top}" y2="{:.1}" stroke="#b00" stroke-dasharray="5 3"/><text x="{:.1}" y="{:.1}" class="ev">{}</text>"##,
            px(*x),
            px(*x),
            h - bottom,
            px(*x) + 3.0,
            top + 12.0,
            escape(label)
        );
    }
    let mut legend_y = top + 30.0;
    for line in lines.iter().filter(|l| !l.points.is_empty()) {
        let path: Vec<String> = line
            .points
            .iter()
            .filter(|p| p.1.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let dash = if line.dashed {
            r#" stroke-dasharray="6 3""#
        } else {
            ""
        };
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.6"{dash} points="{}"/><line x1="{:.1}" x2="{:.1}" y1="{legend_y:.1}" y2="{legend_y:.1}" stroke="{}" stroke-width="2"{dash}/><text x="{:.1}" y="{:.1}" class="tk">{}</text>"#,
            line.colour,
            path.join(" "),
            w - right + 4.0,
            w - right + 22.0,
            line.colour,
            w - right + 26.0,
            legend_y + 4.0,
            escape(&line.label)
        );
        legend_y += 16.0;
    }
    svg.push_str("</svg>");
    svg
}

/// A number for a tick or a table: 4 significant digits, no trailing noise.
pub(super) fn short(value: f64) -> String {
    if value != 0.0 && (value.abs() < 1e-3 || value.abs() >= 1e5) {
        format!("{value:.2e}")
    } else {
        let text = format!("{value:.4}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}
