//! The chip's view of the run's regime. The rules (thresholds, wording, causes and fixes) live
//! in `analysis::health`, shared with the CLI's log and the `regime` column of `metrics.csv`;
//! this adds what only the UI needs.

pub use crate::analysis::health::{
    classify, findings, RecentLoss, Regime, MIN_STEPS, WINDOW_STEPS,
};

/// The chip's name for a regime (kept for callers that name the chip's state).
pub type CollapseState = Regime;

/// Chip colour as RGB: grey while warming up, green when healthy, teal for sharp but diverse
/// (not a collapse, but not the usual picture), red for a collapse of the targets (one
/// prototype, one-hot, collapsing, uniform), amber for dimensional collapse (slower, and
/// invisible in the loss).
pub fn rgb(regime: Regime) -> [u8; 3] {
    match regime {
        Regime::WarmingUp => [140, 140, 140],
        Regime::Healthy => [60, 170, 90],
        Regime::SharpDiverse => [60, 160, 170],
        Regime::OnePrototype | Regime::OneHotTargets | Regime::Collapsing | Regime::Uniform => {
            [220, 80, 60]
        }
        Regime::Dimensional => [225, 160, 40],
    }
}
