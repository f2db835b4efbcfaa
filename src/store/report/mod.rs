//! `dinoscope report`: one self-contained HTML file of one or more runs, to mail or hand out:
//! the config, the loss decomposition with toggles and regime changes marked, the diagnosis in
//! words, the representation readings, the k-NN, the attention over training and a side-by-side
//! table. Curves are inline SVG, pictures embedded PNG (base64); nothing is fetched and the one
//! inline script only builds the table of contents and records which sections rendered.
//!
//! The curves read the rows' columns through their serde fields
//! ([`numeric_columns`](crate::store::tensorboard::numeric_columns)): every `loss/…` column of
//! `metrics.csv` is drawn in the decomposition, so a new column appears without an edit here.

use crate::analysis::health::Regime;
use crate::config::Toggle;
use crate::store::rows::{EvalRow, MetricsRow, StudyRow};
use crate::store::tensorboard::{numeric_columns, tag_of};
use std::fmt::Write as _;

mod chart;
use chart::{chart_svg, escape, short, Line, Marks};

/// One picture of a network's attention at a step.
pub struct AttentionShot {
    pub step: usize,
    pub caption: String,
    pub png: Vec<u8>,
}

/// One run as the report shows it.
pub struct ReportRun {
    pub name: String,
    pub config_toml: Option<String>,
    pub metrics: Vec<MetricsRow>,
    pub evals: Vec<EvalRow>,
    pub ln_k: Option<f64>,
    pub embed_dim: Option<usize>,
    pub attention: Vec<AttentionShot>,
}

/// The sections, in page order: `(id, heading)`.
pub const SECTIONS: [(&str, &str); 7] = [
    ("config", "Config"),
    ("decomposition", "Loss decomposition"),
    ("diagnosis", "Diagnosis"),
    ("representation", "Representation"),
    ("knn", "k-NN"),
    ("attention", "Attention over training"),
    ("comparison", "Side by side"),
];

/// Okabe–Ito, as the figures use.
const COLOURS: [&str; 7] = [
    "#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000",
];

/// The switches a run's rows show changing, at the first step with the new value.
pub fn toggles_in_rows(rows: &[MetricsRow]) -> Vec<(usize, Toggle)> {
    rows.windows(2)
        .flat_map(|pair| {
            let (before, after) = (&pair[0], &pair[1]);
            let mut found = Vec::new();
            if before.centering_mode() != after.centering_mode() {
                found.push((after.step, Toggle::Centering(after.centering_mode())));
            }
            if before.sharpening != after.sharpening {
                found.push((after.step, Toggle::Sharpening(after.sharpening)));
            }
            if before.local_crops != after.local_crops {
                found.push((after.step, Toggle::LocalCrops(after.local_crops)));
            }
            found
        })
        .collect()
}

/// `(first step, last step, regime)` of each stretch of equal regimes.
pub fn regime_spans(rows: &[MetricsRow]) -> Vec<(usize, usize, Regime)> {
    let mut spans: Vec<(usize, usize, Regime)> = Vec::new();
    for row in rows {
        match spans.last_mut() {
            Some(last) if last.2 == row.regime => last.1 = row.step,
            _ => spans.push((row.step, row.step, row.regime)),
        }
    }
    spans
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn regime_colour(regime: Regime) -> &'static str {
    match regime {
        Regime::WarmingUp => "#eeeeee",
        Regime::Healthy => "#e3f4e8",
        _ => "#fbe0dc",
    }
}

fn optional(value: Option<f64>) -> String {
    value.map_or("–".into(), short)
}

/// Every numeric column of the rows whose tag starts with `prefix`, as `(column, points)`.
fn columns_with_prefix(rows: &[MetricsRow], prefix: &str) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut columns: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for row in rows {
        for (name, value) in numeric_columns(row) {
            if !tag_of(&name).starts_with(prefix) || name == "ln_k" {
                continue;
            }
            match columns.iter_mut().find(|(n, _)| *n == name) {
                Some((_, points)) => points.push((row.step as f64, value)),
                None => columns.push((name, vec![(row.step as f64, value)])),
            }
        }
    }
    columns
}

fn decomposition_svg(run: &ReportRun) -> String {
    let lines: Vec<Line> = columns_with_prefix(&run.metrics, "loss/")
        .into_iter()
        .enumerate()
        .map(|(i, (name, points))| Line {
            label: name,
            colour: COLOURS[i % COLOURS.len()],
            dashed: false,
            points,
        })
        .collect();
    let mut marks = Marks::default();
    if let Some(ln_k) = run.ln_k {
        marks.levels.push((format!("ln K = {}", short(ln_k)), ln_k));
    }
    marks.events = toggles_in_rows(&run.metrics)
        .into_iter()
        .map(|(step, toggle)| (step as f64, toggle.label()))
        .collect();
    marks.bands = regime_spans(&run.metrics)
        .into_iter()
        .map(|(a, b, regime)| {
            (
                a as f64,
                b as f64 + 1.0,
                regime_colour(regime),
                regime.label().to_string(),
            )
        })
        .collect();
    chart_svg(
        &format!("{}: loss = h(Pt) + KL(Pt || Ps)", run.name),
        &lines,
        &marks,
    )
}

fn diagnosis_html(run: &ReportRun) -> String {
    let mut html = format!("<h3>{}</h3>", escape(&run.name));
    let Some(last) = run.metrics.last() else {
        html.push_str("<p>No training rows.</p>");
        return html;
    };
    let _ = write!(
        html,
        "<p><b>{}</b> after step {} (epoch {}): {}</p>",
        escape(last.regime.label()),
        last.step,
        last.epoch,
        escape(last.regime.explanation())
    );
    let _ = write!(
        html,
        "<p>Last step: loss {}, teacher entropy h(Pt) {}, KL {}, h(mean Pt) {}{}.</p><ul>",
        short(last.loss),
        short(last.teacher_entropy),
        short(last.kl),
        short(last.batch_mean_entropy),
        run.ln_k
            .map_or(String::new(), |l| format!(", against ln K = {}", short(l)))
    );
    for (a, b, regime) in regime_spans(&run.metrics) {
        let _ = write!(html, "<li>steps {a}–{b}: {}</li>", escape(regime.label()));
    }
    for (step, toggle) in toggles_in_rows(&run.metrics) {
        let _ = write!(
            html,
            "<li>step {step}: {} (toggle)</li>",
            escape(&toggle.label())
        );
    }
    html.push_str("</ul>");
    html
}

fn overlay_lines(
    runs: &[ReportRun],
    read: impl Fn(&ReportRun) -> Vec<(f64, f64)>,
    what: &str,
) -> Vec<Line> {
    runs.iter()
        .enumerate()
        .map(|(i, run)| Line {
            label: format!("{} {what}", run.name),
            colour: COLOURS[i % COLOURS.len()],
            dashed: false,
            points: read(run),
        })
        .collect()
}

fn knn_html(runs: &[ReportRun]) -> String {
    if runs
        .iter()
        .all(|r| r.evals.iter().all(|e| e.top1.is_none()))
    {
        return "<p>No k-NN evaluation in these runs (data.knn_every_epochs = 0, or data without labels).</p>".into();
    }
    let mut lines = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let series = |f: fn(&EvalRow) -> Option<f64>| -> Vec<(f64, f64)> {
            run.evals
                .iter()
                .filter_map(|e| Some((e.step as f64, f(e)?)))
                .collect()
        };
        let colour = COLOURS[i % COLOURS.len()];
        lines.push(Line {
            label: format!("{} teacher top-1", run.name),
            colour,
            dashed: false,
            points: series(|e| e.top1),
        });
        lines.push(Line {
            label: format!("{} student top-1", run.name),
            colour,
            dashed: true,
            points: series(|e| e.student_top1),
        });
    }
    let mut html = chart_svg(
        "k-NN top-1 (%) of the teacher (solid) and the student (dashed); step 0 = random init",
        &lines,
        &Marks::default(),
    );
    html.push_str("<table><tr><th>run</th><th>step</th><th>top-1</th><th>top-5</th><th>student top-1</th><th>Jaccard (best head)</th></tr>");
    for run in runs {
        for e in &run.evals {
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&run.name),
                e.step,
                optional(e.top1),
                optional(e.top5),
                optional(e.student_top1),
                optional(e.jaccard_best_head)
            );
        }
    }
    html.push_str("</table>");
    html
}

fn representation_html(runs: &[ReportRun]) -> String {
    let rank = |r: &ReportRun| -> Vec<(f64, f64)> {
        r.metrics
            .iter()
            .filter_map(|m| Some((m.step as f64, m.effective_rank?)))
            .collect()
    };
    if runs.iter().all(|r| rank(r).is_empty()) {
        return "<p>No representation readings in these runs (too few steps).</p>".into();
    }
    let mut marks = Marks::default();
    if let Some(d) = runs.iter().find_map(|r| r.embed_dim) {
        marks.levels.push((format!("d = {d}"), d as f64));
    }
    let mut html = chart_svg(
        "Effective rank of the teacher's features (RankMe)",
        &overlay_lines(runs, rank, "rank"),
        &marks,
    );
    let std = |r: &ReportRun| -> Vec<(f64, f64)> {
        r.metrics
            .iter()
            .filter_map(|m| Some((m.step as f64, m.std_normalized?)))
            .collect()
    };
    html.push_str(&chart_svg(
        "Std of the l2-normalised features (0 = collapsed)",
        &overlay_lines(runs, std, "std"),
        &Marks::default(),
    ));
    for run in runs {
        if let Some(m) = run
            .metrics
            .iter()
            .rev()
            .find(|m| m.effective_rank.is_some())
        {
            let _ = write!(
                html,
                "<p>{}: at step {} the effective rank is {}{} (head bottleneck {}), {} near-zero directions.</p>",
                escape(&run.name),
                m.step,
                optional(m.effective_rank),
                run.embed_dim.map_or(String::new(), |d| format!(" of {d}")),
                optional(m.effective_rank_head),
                m.near_zero_directions.map_or("–".into(), |n| n.to_string())
            );
        }
    }
    html
}

fn attention_html(runs: &[ReportRun]) -> String {
    let mut html = String::new();
    for run in runs {
        let _ = write!(html, "<h3>{}</h3>", escape(&run.name));
        if run.attention.is_empty() {
            html.push_str("<p>No attention pictures: the run kept no checkpoint and no attention/ folder.</p>");
            continue;
        }
        html.push_str(r#"<div class="grid">"#);
        for shot in &run.attention {
            let _ = write!(
                html,
                r#"<figure><img alt="{c}" src="data:image/png;base64,{}"><figcaption>{c}</figcaption></figure>"#,
                base64(&shot.png),
                c = escape(&shot.caption)
            );
        }
        html.push_str("</div>");
    }
    html
}

fn comparison_html(runs: &[ReportRun], study: &[StudyRow]) -> String {
    let mut html = String::from("<table><tr><th>run</th><th>steps</th><th>loss</th><th>h(Pt)</th><th>KL</th><th>h(mean Pt)</th><th>ln K</th><th>effective rank</th><th>k-NN top-1</th><th>regime</th></tr>");
    for run in runs {
        let Some(last) = run.metrics.last() else {
            continue;
        };
        let rank = run.metrics.iter().rev().find_map(|m| m.effective_rank);
        let top1 = run.evals.iter().rev().find_map(|e| e.top1);
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&run.name),
            last.step + 1,
            short(last.loss),
            short(last.teacher_entropy),
            short(last.kl),
            short(last.batch_mean_entropy),
            optional(run.ln_k),
            optional(rank),
            optional(top1),
            escape(last.regime.label())
        );
    }
    html.push_str("</table>");
    if !study.is_empty() {
        html.push_str("<h3>The study (study.csv)</h3><table><tr><th>variant</th><th>final loss</th><th>h(Pt)</th><th>KL</th><th>k-NN top-1</th><th>random init</th><th>paper top-1</th><th>regime</th></tr>");
        for row in study {
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&row.variant),
                short(row.final_loss),
                short(row.final_teacher_entropy),
                short(row.final_kl),
                optional(row.knn_top1),
                optional(row.random_init_top1),
                optional(row.paper_knn_top1),
                escape(row.regime.label())
            );
        }
        html.push_str("</table>");
    }
    html
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:1000px;margin:1em auto;padding:0 1em;color:#222}\
section{border-top:1px solid #ccc;margin-top:1.5em}pre{background:#f6f6f6;padding:.6em;overflow:auto;font-size:12px}\
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}\
td:first-child,th:first-child{text-align:left}.grid{display:flex;flex-wrap:wrap;gap:8px}\
figure{margin:0}figure img{width:160px;image-rendering:pixelated}figcaption{font-size:12px}\
svg .ct{font-size:14px;font-weight:600}svg .tk{font-size:11px}svg .ev{font-size:11px;fill:#b00}";

/// The inline script: the table of contents, and `data-rendered` on the body listing the
/// sections that laid out with a height (what a headless check reads back).
const SCRIPT: &str = "addEventListener('load',()=>{const nav=document.getElementById('toc');const shown=[];\
for(const s of document.querySelectorAll('section')){const a=document.createElement('a');a.href='#'+s.id;\
a.textContent=s.querySelector('h2').textContent;nav.appendChild(a);nav.appendChild(document.createTextNode(' · '));\
if(s.offsetHeight>0)shown.push(s.id);}document.body.dataset.rendered=shown.join(' ');});";

/// The whole page.
pub fn render_report(title: &str, runs: &[ReportRun], study: &[StudyRow]) -> String {
    let mut html = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title><style>{STYLE}</style></head><body><h1>{t}</h1><p>dinoscope report of {} run(s): {}. Self-contained: no network, open it anywhere.</p><nav id=\"toc\"></nav>",
        runs.len(),
        escape(&runs.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(", ")),
        t = escape(title)
    );
    for (id, heading) in SECTIONS {
        let body = match id {
            "config" => runs
                .iter()
                .map(|r| {
                    format!(
                        "<details><summary>{} (config.toml)</summary><pre>{}</pre></details>",
                        escape(&r.name),
                        escape(r.config_toml.as_deref().unwrap_or("(no config.toml)"))
                    )
                })
                .collect(),
            "decomposition" => {
                let mut body: String = runs.iter().map(decomposition_svg).collect();
                if runs.len() > 1 {
                    let h = |r: &ReportRun| {
                        r.metrics
                            .iter()
                            .map(|m| (m.step as f64, m.teacher_entropy))
                            .collect()
                    };
                    let kl =
                        |r: &ReportRun| r.metrics.iter().map(|m| (m.step as f64, m.kl)).collect();
                    body.push_str(&chart_svg(
                        "All runs: h(Pt) (the paper's Fig. 7, left)",
                        &overlay_lines(runs, h, "h(Pt)"),
                        &Marks::default(),
                    ));
                    body.push_str(&chart_svg(
                        "All runs: KL(Pt || Ps) (Fig. 7, right)",
                        &overlay_lines(runs, kl, "KL"),
                        &Marks::default(),
                    ));
                }
                body.push_str("<p>Shaded: the diagnosis at each step (green healthy, red a collapse, grey warming up; hover for its name). Dashed red lines: toggles.</p>");
                body
            }
            "diagnosis" => runs.iter().map(diagnosis_html).collect(),
            "representation" => representation_html(runs),
            "knn" => knn_html(runs),
            "attention" => attention_html(runs),
            _ => comparison_html(runs, study),
        };
        let _ = write!(
            html,
            "<section id=\"{id}\"><h2>{heading}</h2>{body}</section>"
        );
    }
    let _ = writeln!(html, "<script>{SCRIPT}</script></body></html>");
    html
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CenteringMode;

    #[test]
    fn row_changes_become_toggles_at_their_first_step() {
        let row = |step, centering, local_crops| MetricsRow {
            step,
            centering,
            sharpening: true,
            local_crops,
            ..MetricsRow::default()
        };
        let rows = [
            row(0, true, 6),
            row(1, true, 6),
            row(2, false, 6),
            row(3, false, 0),
        ];
        assert_eq!(
            toggles_in_rows(&rows),
            vec![
                (2, Toggle::Centering(CenteringMode::Off)),
                (3, Toggle::LocalCrops(0))
            ]
        );
    }

    #[test]
    fn base64_matches_the_rfc_vectors() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), coded);
        }
    }

    #[test]
    fn the_page_has_every_section_and_marks_toggles_and_regimes() {
        let row = |step, centering, regime| MetricsRow {
            step,
            loss: 1.0 + step as f64,
            teacher_entropy: 0.5,
            centering,
            sharpening: true,
            regime,
            ..MetricsRow::default()
        };
        let run = ReportRun {
            name: "a<b".into(),
            config_toml: Some("[dino]\nout_dim = 64".into()),
            metrics: vec![
                row(0, true, Regime::WarmingUp),
                row(1, true, Regime::Healthy),
                row(2, false, Regime::OneHotTargets),
            ],
            evals: Vec::new(),
            ln_k: Some(4.0),
            embed_dim: Some(32),
            attention: vec![AttentionShot {
                step: 2,
                caption: "step 2".into(),
                png: vec![1, 2, 3],
            }],
        };
        let html = render_report("r", &[run], &[]);
        for (id, _) in SECTIONS {
            assert!(html.contains(&format!("<section id=\"{id}\">")), "{id}");
        }
        assert!(html.contains("a&lt;b"));
        assert!(html.contains("centering off"), "the toggle is marked");
        assert!(html.contains(Regime::OneHotTargets.label()));
        assert!(html.contains("data:image/png;base64,AQID"));
        assert!(
            !html.contains("http://")
                || html.matches("http://").count()
                    == html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count(),
            "no link out"
        );
    }
}
