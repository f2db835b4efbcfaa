//! The `Engine`'s running diagnosis: every row goes through the run's
//! [`RegimeWindow`](crate::analysis::health::RegimeWindow) (the last
//! [`WINDOW_STEPS`](crate::analysis::health::WINDOW_STEPS) rows, the best I and the best valid
//! rank), whose verdict is the row's `regime` and the CLI's log of regime changes.

use super::engine::Engine;
use crate::analysis::health::{RecentLoss, Regime, RunShape};
use crate::store::rows::MetricsRow;

impl Engine {
    /// Adds this step's row to the history and returns the regime after it; the stored row
    /// carries it too.
    pub(super) fn diagnose(&mut self, row: &MetricsRow) -> Regime {
        let regime = self.remember(row);
        if let Some(kept) = self.history.last_mut() {
            kept.regime = regime;
        }
        regime
    }

    /// Appends a row to the history (a step's, or a resumed run's earlier ones) and to the
    /// regime's window; returns the regime after it.
    pub(super) fn remember(&mut self, row: &MetricsRow) -> Regime {
        let shape = self.run_shape();
        let regime = self.regime.push(row.health_sample(), &shape);
        self.history.push(MetricsRow {
            spectrum: Vec::new(),
            warnings: Vec::new(),
            ..row.clone()
        });
        regime
    }

    /// What the rules need to know of this run beyond its rows.
    pub fn run_shape(&self) -> RunShape {
        RunShape::of_config(self.trainer.config())
    }

    /// The window's means with the settings of the newest step: what the rules of
    /// `analysis::health` (the chip, the `regime` column, the CLI's log) read.
    pub fn recent_loss(&self) -> RecentLoss {
        self.regime.recent(&self.run_shape())
    }
}
