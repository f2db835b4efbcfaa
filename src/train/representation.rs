//! The representation readings of a run: each step hands over the teacher's outputs on the
//! global crops (backbone CLS features and the head's bottleneck) and every
//! [`READING_EVERY_STEPS`] steps the rolling windows give the effective ranks, the spectrum
//! and the std of normalised features that `metrics.csv` stores (see `analysis::geometry`).
//! The teacher is measured because it is the network whose outputs are the targets and whose
//! features are evaluated. Checkpoints hold the windows' rows, so a resumed run's readings
//! equal those of an uninterrupted one.

use crate::analysis::geometry::{EmbeddingWindow, Geometry, WindowRows, WINDOW_ROWS};
use crate::store::rows::MetricsRow;

/// Steps between readings. A reading costs one `d × d` eigen-decomposition per window (the
/// Gram sums are updated every step), so this keeps the added time under 3 % of a `tiny`
/// step while the curves still have 4 points per epoch of `tiny`.
pub const READING_EVERY_STEPS: usize = 4;

/// The two windows of the teacher's recent rows.
#[derive(Clone, Debug)]
pub struct RepresentationMonitor {
    backbone: EmbeddingWindow,
    head: EmbeddingWindow,
}

/// One reading, copied into the step's [`MetricsRow`].
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    pub backbone: Geometry,
    pub head: Option<Geometry>,
}

impl RepresentationMonitor {
    pub fn new(embed_dim: usize, bottleneck_dim: usize) -> Self {
        Self {
            backbone: EmbeddingWindow::new(embed_dim, WINDOW_ROWS),
            head: EmbeddingWindow::new(bottleneck_dim, WINDOW_ROWS),
        }
    }

    /// The rows of both windows (backbone, head), for a checkpoint.
    pub fn export(&self) -> [WindowRows; 2] {
        [self.backbone.export(), self.head.export()]
    }

    /// Refills both windows from a checkpoint; a window whose rows do not fit stays empty
    /// (the readings then start afresh; training is unaffected).
    pub fn import(&mut self, saved: &[WindowRows; 2]) {
        if !self.backbone.import(&saved[0]) || !self.head.import(&saved[1]) {
            self.backbone.clear();
            self.head.clear();
        }
    }

    /// Adds one step's rows (row-major `[rows, dim]` each); a reading on steps `step` with
    /// `step % READING_EVERY_STEPS == 0`, and on the last step of a run so it ends on one.
    pub fn observe(
        &mut self,
        step: usize,
        last_step: bool,
        features: &[f32],
        bottleneck: &[f32],
    ) -> Option<Reading> {
        self.backbone.push(features);
        self.head.push(bottleneck);
        if !step.is_multiple_of(READING_EVERY_STEPS) && !last_step {
            return None;
        }
        Some(Reading {
            backbone: self.backbone.geometry()?,
            head: self.head.geometry(),
        })
    }
}

impl Reading {
    /// Fills the row's geometry columns and its live spectrum.
    pub fn fill(&self, row: &mut MetricsRow) {
        row.effective_rank = Some(self.backbone.effective_rank);
        row.effective_rank_head = self.head.as_ref().map(|g| g.effective_rank);
        row.std_normalized = Some(self.backbone.std_normalized);
        row.near_zero_directions = Some(self.backbone.near_zero);
        row.rank_rows = Some(self.backbone.rows);
        let largest = self
            .backbone
            .singular_values
            .first()
            .copied()
            .unwrap_or(0.0);
        row.spectrum = if largest > 0.0 {
            self.backbone
                .singular_values
                .iter()
                .map(|s| (s / largest) as f32)
                .collect()
        } else {
            Vec::new()
        };
    }
}
