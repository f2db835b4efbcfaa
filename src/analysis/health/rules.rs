//! The verdict's one truth table: [`classify`] reads the decomposition of the recent rows
//! ([`RecentLoss`]) and names the [`Regime`]. The first test is the mutual information between
//! the image and the teacher's prototype, I = h(mean Pt) − mean h(Pt): it is ≈ 0 in every
//! collapse (one prototype for all: both entropies 0; uniform: both ln K) and large when the
//! teacher's answer depends on the image.
//!
//! | h(Pt) / ln K | I                                 | rank (only where valid) | regime          |
//! |--------------|-----------------------------------|-------------------------|-----------------|
//! | ≥ 0.97       | any (≈ 0 by construction)         | any                     | uniform         |
//! | < 0.05       | < 0.1 · Imax                      | any                     | one-prototype   |
//! | < 0.05       | < 0.5 · Imax                      | any                     | one-hot (few)   |
//! | any          | < 0.1 · Imax, or < ½ best, falling | any                    | collapsing      |
//! | any          | otherwise                         | < ½ of the best valid   | dimensional     |
//! | < 0.05       | ≥ 0.5 · Imax                      | otherwise               | sharp-diverse   |
//! | otherwise    | otherwise                         | otherwise               | healthy         |
//!
//! Imax = ln min(K, B) is the most the teacher's output can say about which of B images it
//! saw. Before [`MIN_STEPS`] rows, with non-finite numbers, or while I has not yet risen above
//! 0.1 · Imax within the first [`LEARNING_GRACE_STEPS`] steps (the teacher has not learned
//! anything to lose), the verdict is warming-up: "not enough data to say" is never shown as
//! "healthy". A teacher whose I never rises after that is collapsing.

use super::Regime;
use crate::config::CenteringMode;

/// The decomposition the rules read: means over the window (one checkpoint for a watched
/// run) with the settings of its newest row, and the run's bests so far.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RecentLoss {
    pub teacher_entropy: f64,
    pub kl: f64,
    pub batch_mean_entropy: f64,
    pub loss: f64,
    /// I = h(mean Pt) − h(Pt) over the window, in nats.
    pub teacher_mi: f64,
    /// The highest windowed I of the run so far (this window included).
    pub best_mi: f64,
    /// The windowed I a lookback ago (two windows of steps, or the previous checkpoint);
    /// `None` this early.
    pub mi_before: Option<f64>,
    pub ln_k: f64,
    /// Images per batch (the probe's for a watched run); 0 = unknown (Imax is then ln K).
    pub batch_images: usize,
    /// Rows seen so far in the run (steps, or checkpoints for a watched run).
    pub steps: usize,
    /// Rows averaged into this window (5 steps, or 1 checkpoint).
    pub window: usize,
    /// Rows seen before any regime is named.
    pub min_steps: usize,
    /// Rows during which a teacher whose I has never risen is "warming up" rather than
    /// collapsed (a randomly initialised teacher may start near I = 0); 0 for checkpoints,
    /// each at least an epoch into training.
    pub learning_grace: usize,
    /// The latest effective rank of the teacher's backbone features (`None`: not measured),
    /// the rows it was read from (`None`: not recorded, older runs), and whether that is
    /// enough rows to trust it ([`rank_is_valid`]).
    pub effective_rank: Option<f64>,
    pub rank_rows: Option<usize>,
    pub rank_valid: bool,
    /// The highest valid effective rank of the run so far.
    pub best_rank: Option<f64>,
    /// The features' width d (the largest possible rank); 0 = unknown.
    pub embed_dim: usize,
    /// Settings of the newest row.
    pub teacher_temp: f64,
    pub student_temp: f64,
    pub teacher_momentum: f64,
    pub centering: bool,
    pub sharpening: bool,
    /// DINOv2's tools at the newest row: which centering, the KoLeo weight, the KoLeo value
    /// and the global-crop rows with a zero-distance neighbour (`None`: not measured).
    pub centering_mode: CenteringMode,
    pub koleo_weight: f64,
    pub koleo: Option<f64>,
    pub koleo_duplicates: Option<usize>,
}

/// Steps (rows) seen before a regime is named.
pub const MIN_STEPS: usize = 10;

/// Steps in which a teacher whose I has not yet risen is still "warming up" (tiny's I is
/// about 1 nat from its first step, so this only matters for slow starts).
pub const LEARNING_GRACE_STEPS: usize = 100;

/// Steps averaged for a training run's verdict: short, so a collapse is named within a few
/// steps of it starting (the curves themselves show the longer trend).
pub const WINDOW_STEPS: usize = 5;

/// h(Pt) above this fraction of ln K: the teacher says "all prototypes equally likely".
pub const UNIFORM_FRACTION: f64 = 0.97;

/// h(Pt) below this fraction of ln K: each image's target is (nearly) one-hot.
pub const ONE_HOT_FRACTION: f64 = 0.05;

/// I below this fraction of Imax: the teacher's output barely depends on the image (with
/// B = 32 images, 0.35 nats: fewer than 1.4 prototypes' worth of information).
pub const NO_INFORMATION_FRACTION: f64 = 0.1;

/// I at or above this fraction of Imax: the batch spreads over at least √B prototypes.
pub const DIVERSE_FRACTION: f64 = 0.5;

/// I below this fraction of the run's best windowed I, and falling: the information is
/// draining away. A low I that holds is not a collapse in progress: in `collapse-dimensional`
/// I settles at 40 % of its early best for 180 steps while the rank tells the story.
pub const MI_DROP: f64 = 0.5;

/// A fall of I by more than this fraction of its best within the lookback is "falling fast"
/// (`tiny`'s windowed I wanders by 0.2 of its best, measured).
pub const MI_FALL: f64 = 0.25;

/// Effective rank below this fraction of the run's best valid reading, with the loss side
/// healthy, is dimensional collapse. Relative to the run's own best because what a healthy
/// rank is depends on the data and the model: on `tiny` (6 shape classes, d = 96) a healthy
/// run peaks at 13.7 and settles at 9.3 (68 %), while `collapse-dimensional` falls from 13.9
/// to 6.1 (44 %) with h(Pt) at 63 % of ln K (measured, README).
pub const DIMENSIONAL_DROP: f64 = 0.5;

/// Rows per feature dimension a rank reading needs before the rules use it. A reading over
/// n rows of d-wide features has rank at most min(n, d), so below n = d it is capped by
/// construction. Random Gaussian rows of d = 384 (NumPy, 3 seeds) read an effective rank of
/// 8 % of d from 32 rows, 80 % from d rows, 92.5 % from 2d and 96.6 % from 4d: from 2d rows on
/// the reading is within a few percent of its limit, so a fall below half of the best is the
/// network's doing, not the sample's.
pub const RANK_ROWS_PER_DIM: usize = 2;

/// Whether a rank read from `rows` rows of `embed_dim`-wide features can be compared with
/// the run's best: `rows` unknown (runs written before the column) counts as enough, as does
/// an unknown width.
pub fn rank_is_valid(rows: Option<usize>, embed_dim: usize) -> bool {
    match rows {
        None => true,
        Some(n) => embed_dim == 0 || n >= RANK_ROWS_PER_DIM * embed_dim,
    }
}

impl RecentLoss {
    /// ln min(K, B): the most a teacher output can say about which of B images it saw.
    pub fn max_mi(&self) -> f64 {
        if self.batch_images >= 2 {
            self.ln_k.min((self.batch_images as f64).ln())
        } else {
            self.ln_k
        }
    }

    fn finite(&self) -> bool {
        [
            self.teacher_entropy,
            self.kl,
            self.batch_mean_entropy,
            self.loss,
            self.teacher_mi,
            self.ln_k,
        ]
        .iter()
        .all(|v| v.is_finite())
    }
}

/// The regime of the window: the table at the top of this file, row by row.
pub fn classify(recent: &RecentLoss) -> Regime {
    if recent.steps < recent.min_steps.max(1) || recent.ln_k <= 0.0 || !recent.finite() {
        return Regime::WarmingUp;
    }
    let h = recent.teacher_entropy / recent.ln_k;
    let max_mi = recent.max_mi();
    let mi = recent.teacher_mi.max(0.0);
    if h >= UNIFORM_FRACTION {
        return Regime::Uniform;
    }
    if h < ONE_HOT_FRACTION && mi < NO_INFORMATION_FRACTION * max_mi {
        return Regime::OnePrototype;
    }
    if h < ONE_HOT_FRACTION && mi < DIVERSE_FRACTION * max_mi {
        return Regime::OneHotTargets;
    }
    let learned = recent.best_mi >= NO_INFORMATION_FRACTION * max_mi;
    if !learned && recent.steps < recent.learning_grace {
        // I has not risen yet: nothing to lose yet, and nothing to call healthy either.
        return Regime::WarmingUp;
    }
    let falling = recent
        .mi_before
        .is_some_and(|before| before - mi > MI_FALL * recent.best_mi);
    if mi < NO_INFORMATION_FRACTION * max_mi || (mi < MI_DROP * recent.best_mi && falling) {
        return Regime::Collapsing;
    }
    if is_dimensional(recent) {
        return Regime::Dimensional;
    }
    if h < ONE_HOT_FRACTION {
        return Regime::SharpDiverse;
    }
    Regime::Healthy
}

fn is_dimensional(recent: &RecentLoss) -> bool {
    match (recent.effective_rank, recent.best_rank, recent.rank_valid) {
        (Some(rank), Some(best), true) => rank < DIMENSIONAL_DROP * best,
        _ => false,
    }
}

/// The health tests' window: `tiny`'s shape (K = 1024, B = 32, d = 96) well past warm-up,
/// with I the run's best so far.
#[cfg(test)]
pub(super) fn tiny_window(h: f64, mean_h: f64, kl: f64) -> RecentLoss {
    RecentLoss {
        teacher_entropy: h,
        kl,
        batch_mean_entropy: mean_h,
        loss: h + kl,
        teacher_mi: mean_h - h,
        best_mi: mean_h - h,
        ln_k: 1024f64.ln(),
        batch_images: 32,
        steps: 50,
        window: WINDOW_STEPS,
        min_steps: MIN_STEPS,
        learning_grace: LEARNING_GRACE_STEPS,
        embed_dim: 96,
        rank_valid: true,
        teacher_temp: 0.04,
        student_temp: 0.1,
        teacher_momentum: 0.996,
        centering: true,
        sharpening: true,
        ..RecentLoss::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imax_is_the_smaller_of_ln_k_and_ln_b() {
        let w = tiny_window(1.0, 2.0, 0.5);
        assert!((w.max_mi() - 32f64.ln()).abs() < 1e-12);
        let unknown = RecentLoss {
            batch_images: 0,
            ..w
        };
        assert!((unknown.max_mi() - 1024f64.ln()).abs() < 1e-12);
        let small_k = RecentLoss {
            ln_k: 8f64.ln(),
            ..w
        };
        assert!((small_k.max_mi() - 8f64.ln()).abs() < 1e-12);
    }

    /// Each row of the table, crafted as a decomposition, through the one function.
    #[test]
    fn every_cell_of_the_table() {
        let ln_k = 1024f64.ln();
        // (h, h(mean), KL, (best I, I a lookback ago) or None = this I both, rank (valid) /
        // best, expected)
        type Case = (
            f64,
            f64,
            f64,
            Option<(f64, f64)>,
            Option<(f64, f64)>,
            Regime,
        );
        let cases: [Case; 15] = [
            // Uniform teacher, student caught up and student still far (KL 1.38: no-momentum).
            (ln_k, ln_k, 0.01, Some((2.0, 2.0)), None, Regime::Uniform),
            (
                0.9995 * ln_k,
                ln_k,
                1.38,
                Some((2.0, 1.0)),
                None,
                Regime::Uniform,
            ),
            // One prototype for every image, the student caught up or not.
            (0.0, 0.0, 0.0, Some((3.0, 0.0)), None, Regime::OnePrototype),
            (
                0.001,
                0.2,
                8.2,
                Some((3.0, 3.0)),
                None,
                Regime::OnePrototype,
            ),
            // One-hot targets over ~2 prototypes (centering off on tiny, 13 steps after).
            (
                0.09,
                0.78,
                0.9,
                Some((3.0, 2.0)),
                None,
                Regime::OneHotTargets,
            ),
            // Sharp but diverse: one-hot per image, the batch over 25 prototypes.
            (0.05, 3.27, 0.9, None, None, Regime::SharpDiverse),
            // ...with every image on its own prototype (I = ln 32).
            (0.0, 32f64.ln(), 2.0, None, None, Regime::SharpDiverse),
            // Collapsing: I at a third of its best and falling, h between the extremes.
            (4.0, 4.6, 0.5, Some((1.8, 1.2)), None, Regime::Collapsing),
            // The same low I holding steady is not a collapse in progress.
            (4.0, 4.6, 0.5, Some((1.8, 0.65)), None, Regime::Healthy),
            // Collapsing: the same output for every image at mid entropy (I ≈ 0).
            (3.5, 3.52, 0.8, Some((1.0, 0.02)), None, Regime::Collapsing),
            // Dimensional: I holds, the valid rank halves.
            (4.69, 6.4, 0.8, None, Some((6.1, 13.9)), Regime::Dimensional),
            // Healthy, with and without a rank reading.
            (4.26, 6.2, 0.95, None, None, Regime::Healthy),
            (4.69, 6.4, 0.8, None, Some((9.3, 13.7)), Regime::Healthy),
            // A dip to 60 % of the best I is not yet a collapse.
            (4.0, 5.2, 0.5, Some((2.0, 2.0)), None, Regime::Healthy),
            // Never learned anything (I has stayed near 0): too early to say.
            (6.0, 6.05, 0.5, None, None, Regime::WarmingUp),
        ];
        for (h, mean_h, kl, history, rank, expected) in cases {
            let mut w = tiny_window(h, mean_h, kl);
            if let Some((best, before)) = history {
                w.best_mi = best.max(w.teacher_mi);
                w.mi_before = Some(before);
            }
            if let Some((latest, best)) = rank {
                w.effective_rank = Some(latest);
                w.best_rank = Some(best);
            }
            assert_eq!(
                classify(&w),
                expected,
                "h {h}, h(mean) {mean_h}, KL {kl}, I history {history:?}, rank {rank:?}"
            );
        }
    }

    #[test]
    fn a_rank_over_too_few_rows_is_never_dimensional() {
        let mut w = tiny_window(4.69, 6.4, 0.8);
        w.effective_rank = Some(20.0);
        w.best_rank = Some(60.0);
        w.embed_dim = 384;
        w.rank_rows = Some(32);
        w.rank_valid = rank_is_valid(w.rank_rows, w.embed_dim);
        assert!(!w.rank_valid);
        assert_eq!(classify(&w), Regime::Healthy);
        w.rank_rows = Some(768);
        w.rank_valid = rank_is_valid(w.rank_rows, w.embed_dim);
        assert_eq!(classify(&w), Regime::Dimensional);
        assert!(rank_is_valid(None, 384) && rank_is_valid(Some(3), 0));
    }

    #[test]
    fn too_early_or_unreadable_is_warming_up() {
        let mut early = tiny_window(0.0, 0.0, 0.0);
        early.steps = 3;
        assert_eq!(classify(&early), Regime::WarmingUp);
        let mut nan = tiny_window(4.0, 6.0, 0.5);
        nan.kl = f64::NAN;
        assert_eq!(classify(&nan), Regime::WarmingUp);
        let mut no_k = tiny_window(4.0, 6.0, 0.5);
        no_k.ln_k = 0.0;
        assert_eq!(classify(&no_k), Regime::WarmingUp);
        // A watched run names its first checkpoint: one row is enough there.
        let mut first = tiny_window(0.0, 0.0, 8.2);
        first.steps = 1;
        first.min_steps = 1;
        first.learning_grace = 0;
        first.window = 1;
        assert_eq!(classify(&first), Regime::OnePrototype);
        // ...and a teacher that never learned to tell the images apart is not warming up.
        let mut blind = first;
        blind.teacher_entropy = 3.5;
        blind.batch_mean_entropy = 3.52;
        blind.teacher_mi = 0.02;
        blind.best_mi = 0.02;
        assert_eq!(classify(&blind), Regime::Collapsing);
        // Past the grace period, the same holds for a run trained here.
        let mut stuck = tiny_window(3.5, 3.52, 0.8);
        assert_eq!(classify(&stuck), Regime::WarmingUp);
        stuck.steps = LEARNING_GRACE_STEPS;
        assert_eq!(classify(&stuck), Regime::Collapsing);
    }
}
