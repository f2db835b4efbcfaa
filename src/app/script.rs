//! Scripted demos and screenshots: `--toggle-at` (`Session::due_toggles`) applied as if
//! clicked, `--screenshot-to` after N steps (the README's screenshots), and the frame-time
//! read-out they report.

use super::attention_view::AttentionView;
use super::session::Session;
use super::state::AppState;
use crate::worker::WorkerStatus;
use std::time::Duration;

impl Session {
    /// `--screenshot-to` is due: the steps trained (or the run failed), the weights loaded and
    /// the study finished.
    pub fn screenshot_ready(&self, view: &AttentionView, state: &AppState) -> bool {
        let Some(request) = &self.options.screenshot else {
            return false;
        };
        let weights_ready = self.options.weights.is_none()
            || view.loaded.as_ref().is_some_and(|l| !l.maps.is_empty())
            || (!view.loading && view.loaded.is_none());
        let study_done = match (&self.options.study, &state.study) {
            (None, _) => true,
            (Some(_), Some(study)) => study.outputs.is_some(),
            (Some(_), None) => false,
        };
        let trained = (state
            .current_run()
            .is_some_and(|run| run.steps() >= request.after_steps)
            && study_done)
            || request.after_steps == 0
            || state.worker_status == WorkerStatus::Failed;
        trained && weights_ready
    }

    /// Takes the `--screenshot-to` picture once `ready` (the steps trained, the weights and
    /// the study done) and closes the window when it is written; `true` on the frame it is
    /// asked for, when the app pauses the worker so the picture holds still.
    pub fn screenshot(&mut self, ctx: &egui::Context, ready: bool) -> bool {
        let Some(request) = self.options.screenshot.clone() else {
            return false;
        };
        let mut paused_now = false;
        if ready && !self.screenshot_requested {
            self.screenshot_requested = true;
            paused_now = true;
            // The UI-under-load numbers BENCHMARKS.md reports, measured while training ran.
            if let Some((median, p95)) = self.frame_time_ms() {
                eprintln!(
                    "ui: frame CPU time median {median:.1} ms, p95 {p95:.1} ms over the last {} frames; first point {} after Start",
                    self.frames(),
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
        paused_now
    }
}
