//! What the GUI tests share: the app's options on the micro model, harnesses on wgpu, and
//! stepping frames until something holds.

use crate::worker::micro_config;
use dinoscope::app::{AppOptions, DinoscopeApp};
use dinoscope::device::DeviceChoice;
use egui_kittest::Harness;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub(crate) const WINDOW_SIZE: [f32; 2] = [1360.0, 860.0];

pub(crate) fn options(runs_root: Option<PathBuf>) -> AppOptions {
    AppOptions {
        config: micro_config(),
        preset: "tiny".into(),
        autostart: false,
        device: DeviceChoice::Cpu,
        runs_root,
        screenshot: None,
        scripted_toggles: Vec::new(),
        weights: None,
        images: Vec::new(),
        open_attention: false,
        attention_short_side_px: None,
        study: None,
        watch: None,
        soak_log: None,
        close_request: Default::default(),
    }
}

/// The real app (with its worker) writing runs under `runs_root`.
pub(crate) fn harness_with(runs_root: Option<PathBuf>) -> Harness<'static, DinoscopeApp> {
    Harness::builder()
        .with_size(WINDOW_SIZE)
        .wgpu()
        .build_eframe(move |cc| DinoscopeApp::new(cc, options(runs_root)))
}

/// The real app, its state prepared by `prepare` before the first frame.
pub(crate) fn harness_built(
    prepare: impl FnOnce(&mut DinoscopeApp) + 'static,
) -> Harness<'static, DinoscopeApp> {
    Harness::builder()
        .with_size(WINDOW_SIZE)
        .wgpu()
        .build_eframe(move |cc| {
            let mut app = DinoscopeApp::new(cc, options(None));
            prepare(&mut app);
            app
        })
}

/// Steps frames (the app repaints continuously while training) until `done` holds.
pub(crate) fn frames_until(
    harness: &mut Harness<'static, DinoscopeApp>,
    what: &str,
    timeout_secs: u64,
    done: impl Fn(&DinoscopeApp) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    while !done(harness.state()) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        harness.run_steps(1);
        std::thread::sleep(Duration::from_millis(10));
    }
}
