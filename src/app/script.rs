//! Scripted demos and screenshots: `--toggle-at` applied as if clicked, `--screenshot-to`
//! after N steps (the README's screenshots), and the frame-time read-out they report.

use super::DinoscopeApp;
use crate::worker::{Command, WorkerStatus};
use std::time::Duration;

impl DinoscopeApp {
    /// Median and 95th percentile of recent frame CPU times, in milliseconds.
    pub fn frame_time_ms(&self) -> Option<(f32, f32)> {
        if self.frame_secs.is_empty() {
            return None;
        }
        let mut sorted: Vec<f32> = self.frame_secs.values().collect();
        sorted.sort_by(f32::total_cmp);
        let at = |q: f32| sorted[((sorted.len() - 1) as f32 * q).round() as usize] * 1e3;
        Some((at(0.5), at(0.95)))
    }

    /// Applies scripted toggles whose step the current run has reached, as if clicked.
    pub(super) fn run_script(&mut self) {
        let steps = self.state.current_run().map(|run| run.steps()).unwrap_or(0);
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.options.scripted_toggles)
            .into_iter()
            .partition(|(step, _)| steps > 0 && *step <= steps);
        self.options.scripted_toggles = later;
        for (_, toggle) in due {
            self.set_control(&mut self.state.controls.clone(), toggle);
        }
    }

    pub(super) fn handle_screenshot(&mut self, ctx: &egui::Context) {
        let Some(request) = self.options.screenshot.clone() else {
            return;
        };
        // With weights to show, wait for their maps too (or for the error).
        let weights_ready = self.options.weights.is_none()
            || self
                .attention
                .loaded
                .as_ref()
                .is_some_and(|l| !l.maps.is_empty())
            || (!self.attention.loading && self.attention.loaded.is_none());
        // A study is shown once compared, whatever the step count.
        let study_done = match (&self.options.study, &self.state.study) {
            (None, _) => true,
            (Some(_), Some(study)) => study.outputs.is_some(),
            (Some(_), None) => false,
        };
        let trained = (self
            .state
            .current_run()
            .is_some_and(|run| run.steps() >= request.after_steps)
            && study_done)
            || request.after_steps == 0
            || (self.state.worker_status == WorkerStatus::Failed);
        let ready = trained && weights_ready;
        if ready && !self.screenshot_requested {
            self.screenshot_requested = true;
            self.send(Command::Pause);
            // The UI-under-load numbers BENCHMARKS.md reports, measured while training ran.
            if let Some((median, p95)) = self.frame_time_ms() {
                eprintln!(
                    "ui: frame CPU time median {median:.1} ms, p95 {p95:.1} ms over the last {} frames; first point {} after Start",
                    self.frame_secs.len(),
                    self.first_point_secs
                        .map(|s| format!("{s:.1} s"))
                        .unwrap_or_else(|| "-".into())
                );
            }
            let done = self.screenshot_done.clone();
            let path = request.path.clone();
            let repaint = ctx.clone();
            ctx.send_viewport_cmd(egui::ViewportCommand::Screenshot(
                egui::ScreenshotCallback::new(move |image| {
                    let [w, h] = image.size;
                    let bytes: Vec<u8> = image.pixels.iter().flat_map(|p| p.to_array()).collect();
                    let saved = image::RgbaImage::from_raw(w as u32, h as u32, bytes)
                        .ok_or_else(|| "screenshot has an unexpected size".to_string())
                        .and_then(|img| img.save(&path).map_err(|e| e.to_string()));
                    match &saved {
                        Ok(()) => eprintln!("screenshot written to {}", path.display()),
                        Err(err) => eprintln!("cannot write {}: {err}", path.display()),
                    }
                    if let Ok(mut slot) = done.lock() {
                        *slot = Some(saved);
                    }
                    repaint.request_repaint();
                }),
            ));
        }
        let finished = self
            .screenshot_done
            .lock()
            .map(|slot| slot.is_some())
            .unwrap_or(true);
        if finished {
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        }
        ctx.request_repaint_after(Duration::from_millis(50));
    }
}
