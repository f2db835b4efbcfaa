//! The `Engine`'s running diagnosis: the last [`WINDOW_STEPS`] rows of its history and the
//! run's best effective rank, read by `analysis::health` into the `regime` of each row (and by
//! the CLI's log of regime changes).

use super::engine::Engine;
use crate::analysis::health::{classify, RecentLoss, Regime, WINDOW_STEPS};
use crate::store::rows::MetricsRow;

impl Engine {
    /// Adds this step's row to the history and returns the regime after it, from the last
    /// [`WINDOW_STEPS`] rows (see `analysis::health`); the stored row carries it too.
    pub(super) fn diagnose(&mut self, row: &MetricsRow) -> Regime {
        self.remember(row);
        let regime = classify(&self.recent_loss());
        if let Some(kept) = self.history.last_mut() {
            kept.regime = regime;
        }
        regime
    }

    /// Appends a row to the history (a step's, or a resumed run's earlier ones) and follows
    /// the effective rank.
    pub(super) fn remember(&mut self, row: &MetricsRow) {
        if let Some(rank) = row.effective_rank {
            self.latest_rank = Some(rank);
            self.best_rank = Some(self.best_rank.map_or(rank, |best| best.max(rank)));
        }
        self.history.push(MetricsRow {
            spectrum: Vec::new(),
            warnings: Vec::new(),
            ..row.clone()
        });
    }

    /// Means over the regime's window with the settings of the newest step: what the rules
    /// of `analysis::health` (the chip, the `regime` column, the CLI's log) read.
    pub fn recent_loss(&self) -> RecentLoss {
        let recent = &self.history[self.history.len().saturating_sub(WINDOW_STEPS)..];
        let n = recent.len().max(1) as f64;
        let mean = |f: fn(&MetricsRow) -> f64| recent.iter().map(f).sum::<f64>() / n;
        let latest = recent.last().cloned().unwrap_or_default();
        let config = self.trainer.config();
        RecentLoss {
            teacher_entropy: mean(|r| r.teacher_entropy),
            kl: mean(|r| r.kl),
            batch_mean_entropy: mean(|r| r.batch_mean_entropy),
            loss: mean(|r| r.loss),
            ln_k: self.trainer.ln_k(),
            steps: self.trainer.steps_done(),
            effective_rank: self.latest_rank,
            best_rank: self.best_rank,
            embed_dim: config.vit_arch().embed_dim,
            teacher_temp: latest.teacher_temp,
            student_temp: config.dino.student_temp,
            teacher_momentum: latest.teacher_momentum,
            centering: latest.centering,
            sharpening: latest.sharpening,
            centering_mode: latest.centering_mode(),
            koleo_weight: latest.koleo_weight,
            koleo: latest.koleo,
            koleo_duplicates: latest.koleo_duplicates,
        }
    }
}
