//! `dinoscope report`: a self-contained HTML file, opened for real in headless Chromium
//! (Debian's `chromium`, installed by `.ci/run`): no console message, every section laid out
//! (the page's own script lists them in `data-rendered`), and a screenshot that is not blank.
//! Without Chromium these tests say so and stop, except under CI, where they fail.

use std::path::{Path, PathBuf};
use std::process::Command;

const SECTIONS: [&str; 7] = [
    "config",
    "decomposition",
    "diagnosis",
    "representation",
    "knn",
    "attention",
    "comparison",
];

fn chromium() -> Option<PathBuf> {
    let candidates = std::env::var_os("DINOSCOPE_CHROMIUM")
        .map(PathBuf::from)
        .into_iter()
        .chain(["chromium", "chromium-browser"].map(PathBuf::from));
    for candidate in candidates {
        if Command::new(&candidate)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Some(candidate);
        }
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must provide Debian's chromium (.ci/run installs it)"
    );
    eprintln!("SKIPPED: no chromium (apt-get install chromium, or run .ci/run)");
    None
}

/// Headless Chromium on `page` with a fresh profile and nothing reaching out; returns
/// (stdout, stderr).
fn headless(browser: &Path, page: &Path, extra: &[String]) -> (String, String) {
    let profile = tempfile::tempdir().unwrap();
    let output = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn train(run: &Path, extra: &[&str]) {
    let output = crate::cli::train_micro(run, 8)
        .args(["--set", "data.num_images=32", "--checkpoint-every", "4"])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_report_of_two_runs_opens_in_chromium_with_every_section() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("healthy"), dir.path().join("no-centering"));
    train(&a, &[]);
    train(&b, &["--toggle-at", "3:centering=off"]);
    let page = dir.path().join("report.html");
    let output = Command::new(env!("CARGO_BIN_EXE_dinoscope"))
        .arg("report")
        .args([&a, &b])
        .arg("--out")
        .arg(&page)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let html = std::fs::read_to_string(&page).unwrap();
    // Self-contained: nothing to fetch.
    for outside in ["src=\"http", "href=\"http", "<link", "<script src", "url("] {
        assert!(!html.contains(outside), "{outside}");
    }
    assert!(html.contains("centering off"), "the toggle is marked");
    // Random init and the checkpoints at steps 4 and 8, for each run.
    assert_eq!(html.matches("<img ").count(), 6, "attention pictures");
    let Some(browser) = chromium() else { return };
    let (dom, log) = headless(&browser, &page, &["--dump-dom".into()]);
    assert!(!log.contains(":CONSOLE"), "the page logged: {log}");
    let rendered = dom
        .split("data-rendered=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("the page's script did not run: {dom:.400}"));
    let rendered: Vec<&str> = rendered.split(' ').collect();
    assert_eq!(rendered, SECTIONS, "sections laid out");
    let shot = dir.path().join("shot.png");
    let (_, log) = headless(
        &browser,
        &page,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1000,1400".into(),
            "--hide-scrollbars".into(),
        ],
    );
    assert!(!log.contains(":CONSOLE"), "the page logged: {log}");
    let picture = image::open(&shot).unwrap().to_rgb8();
    assert_eq!(picture.dimensions(), (1000, 1400));
    let mut colours: Vec<[u8; 3]> = picture.pixels().map(|p| p.0).collect();
    colours.sort_unstable();
    colours.dedup();
    assert!(
        colours.len() > 50,
        "a blank page: {} colours",
        colours.len()
    );
    if let Some(keep) = std::env::var_os("DINOSCOPE_REPORT_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
}

#[test]
fn a_folder_without_metrics_is_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_dinoscope"))
        .arg("report")
        .arg(dir.path())
        .arg("--out")
        .arg(dir.path().join("r.html"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("metrics.csv"), "{stderr}");
}
