//! The one window builder: every front end that names a regime (the engine for the `regime`
//! column and the CLI's log, the watcher for each checkpoint, the app's chip) pushes its rows
//! into a [`RegimeWindow`] and reads [`RecentLoss`] from it, so they cannot disagree.

use super::rules::{rank_is_valid, RecentLoss, LEARNING_GRACE_STEPS, MIN_STEPS, WINDOW_STEPS};
use super::{classify, Regime};
use crate::config::CenteringMode;
use std::collections::VecDeque;

/// What the rules read from one row of `metrics.csv` (`MetricsRow::health_sample`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct HealthSample {
    pub teacher_entropy: f64,
    pub kl: f64,
    pub batch_mean_entropy: f64,
    pub loss: f64,
    /// The step's effective-rank reading and the rows it was read from, when it took one.
    pub effective_rank: Option<f64>,
    pub rank_rows: Option<usize>,
    pub teacher_temp: f64,
    pub teacher_momentum: f64,
    pub centering: bool,
    pub sharpening: bool,
    pub centering_mode: CenteringMode,
    pub koleo_weight: f64,
    pub koleo: Option<f64>,
    pub koleo_duplicates: Option<usize>,
}

/// What the rules need to know of a run beyond its rows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunShape {
    pub ln_k: f64,
    /// Images per batch (a watched run: the probe's); 0 = unknown.
    pub batch_images: usize,
    /// Width of the backbone features; 0 = unknown.
    pub embed_dim: usize,
    pub student_temp: f64,
}

impl RunShape {
    /// The shape of a run trained from `config`.
    pub fn of_config(config: &crate::config::Config) -> Self {
        Self {
            ln_k: (config.dino.out_dim.max(1) as f64).ln(),
            batch_images: config.optim.batch_size_per_gpu,
            embed_dim: config.vit_arch().embed_dim,
            student_temp: config.dino.student_temp,
        }
    }
}

/// How rows are grouped into a verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cadence {
    /// Rows averaged: [`WINDOW_STEPS`] steps, or 1 checkpoint (each is its own measurement).
    pub window: usize,
    /// Rows seen before a regime is named.
    pub min_rows: usize,
    /// Rows back to which I's fall is measured ("falling fast"): two windows of steps, or
    /// the previous checkpoint.
    pub lookback: usize,
    /// Rows during which a teacher that has not yet learned anything is warming up.
    pub learning_grace: usize,
}

impl Cadence {
    /// A run trained here: one row per step, averaged over the last few.
    pub const STEPS: Cadence = Cadence {
        window: WINDOW_STEPS,
        min_rows: MIN_STEPS,
        lookback: 2 * WINDOW_STEPS,
        learning_grace: LEARNING_GRACE_STEPS,
    };
    /// A run trained elsewhere: one row per checkpoint, each at least an epoch in, never
    /// averaged with another.
    pub const CHECKPOINTS: Cadence = Cadence {
        window: 1,
        min_rows: 1,
        lookback: 1,
        learning_grace: 0,
    };
}

/// The last rows of a run and its bests so far.
#[derive(Clone, Debug)]
pub struct RegimeWindow {
    cadence: Cadence,
    recent: VecDeque<HealthSample>,
    rows_seen: usize,
    /// The highest windowed I so far.
    best_mi: Option<f64>,
    /// The windowed I after each of the last `lookback + 1` rows, oldest first.
    mi_history: VecDeque<f64>,
    /// Every rank reading (rank, rows): the best valid one depends on the width, which a
    /// front end may learn after its first rows (a few floats per reading).
    readings: Vec<(f64, Option<usize>)>,
}

impl RegimeWindow {
    pub fn new(cadence: Cadence) -> Self {
        Self {
            cadence,
            recent: VecDeque::new(),
            rows_seen: 0,
            best_mi: None,
            mi_history: VecDeque::new(),
            readings: Vec::new(),
        }
    }

    pub fn cadence(&self) -> Cadence {
        self.cadence
    }

    /// Rows pushed so far.
    pub fn rows_seen(&self) -> usize {
        self.rows_seen
    }

    /// Adds a row and returns the regime after it.
    pub fn push(&mut self, sample: HealthSample, shape: &RunShape) -> Regime {
        self.recent.push_back(sample);
        while self.recent.len() > self.cadence.window.max(1) {
            self.recent.pop_front();
        }
        self.rows_seen += 1;
        if let Some(rank) = sample.effective_rank.filter(|r| r.is_finite()) {
            self.readings.push((rank, sample.rank_rows));
        }
        let mi = self.mean(|s| s.batch_mean_entropy - s.teacher_entropy);
        if mi.is_finite() {
            self.best_mi = Some(self.best_mi.map_or(mi, |best| best.max(mi)));
        }
        self.mi_history.push_back(mi);
        while self.mi_history.len() > self.cadence.lookback + 1 {
            self.mi_history.pop_front();
        }
        classify(&self.recent(shape))
    }

    /// The current regime, without adding a row.
    pub fn regime(&self, shape: &RunShape) -> Regime {
        classify(&self.recent(shape))
    }

    fn mean(&self, f: impl Fn(&HealthSample) -> f64) -> f64 {
        let n = self.recent.len().max(1) as f64;
        self.recent.iter().map(f).sum::<f64>() / n
    }

    /// The best valid rank so far and the step's latest reading.
    fn ranks(&self, embed_dim: usize) -> (Option<(f64, Option<usize>)>, Option<f64>) {
        let best = self
            .readings
            .iter()
            .filter(|(_, rows)| rank_is_valid(*rows, embed_dim))
            .map(|(rank, _)| *rank)
            .fold(None, |best: Option<f64>, r| {
                Some(best.map_or(r, |b| b.max(r)))
            });
        (self.readings.last().copied(), best)
    }

    /// The window's means with the newest row's settings: what the rules, the explanation
    /// and the findings read.
    pub fn recent(&self, shape: &RunShape) -> RecentLoss {
        let latest = self.recent.back().copied().unwrap_or_default();
        let (reading, best_rank) = self.ranks(shape.embed_dim);
        let teacher_mi = self.mean(|s| s.batch_mean_entropy - s.teacher_entropy);
        RecentLoss {
            teacher_entropy: self.mean(|s| s.teacher_entropy),
            kl: self.mean(|s| s.kl),
            batch_mean_entropy: self.mean(|s| s.batch_mean_entropy),
            loss: self.mean(|s| s.loss),
            teacher_mi,
            best_mi: self.best_mi.unwrap_or(teacher_mi),
            mi_before: (self.mi_history.len() > self.cadence.lookback)
                .then(|| self.mi_history.front().copied())
                .flatten(),
            ln_k: shape.ln_k,
            batch_images: shape.batch_images,
            steps: self.rows_seen,
            window: self.recent.len(),
            min_steps: self.cadence.min_rows,
            learning_grace: self.cadence.learning_grace,
            effective_rank: reading.map(|(rank, _)| rank),
            rank_rows: reading.and_then(|(_, rows)| rows),
            rank_valid: reading.is_some_and(|(_, rows)| rank_is_valid(rows, shape.embed_dim)),
            best_rank,
            embed_dim: shape.embed_dim,
            teacher_temp: latest.teacher_temp,
            student_temp: shape.student_temp,
            teacher_momentum: latest.teacher_momentum,
            centering: latest.centering,
            sharpening: latest.sharpening,
            centering_mode: latest.centering_mode,
            koleo_weight: latest.koleo_weight,
            koleo: latest.koleo,
            koleo_duplicates: latest.koleo_duplicates,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(h: f64, mean_h: f64, kl: f64) -> HealthSample {
        HealthSample {
            teacher_entropy: h,
            kl,
            batch_mean_entropy: mean_h,
            loss: h + kl,
            teacher_temp: 0.04,
            teacher_momentum: 0.996,
            centering: true,
            sharpening: true,
            ..HealthSample::default()
        }
    }

    const SHAPE: RunShape = RunShape {
        ln_k: 4.158883083359672, // ln 64
        batch_images: 16,
        embed_dim: 16,
        student_temp: 0.1,
    };

    /// The audit's case: an official run whose epoch-1 teacher is exactly uniform and whose
    /// epoch-2 teacher sends every image to one prototype. Averaged over checkpoints both read
    /// healthy; one checkpoint at a time each is named.
    #[test]
    fn checkpoints_are_never_averaged() {
        let ln_k = SHAPE.ln_k;
        let mut watched = RegimeWindow::new(Cadence::CHECKPOINTS);
        assert_eq!(
            watched.push(sample(ln_k, ln_k, 0.7), &SHAPE),
            Regime::Uniform
        );
        assert_eq!(
            watched.push(sample(0.0, 0.0, 8.2), &SHAPE),
            Regime::OnePrototype
        );
        let recent = watched.recent(&SHAPE);
        assert_eq!((recent.window, recent.steps), (1, 2));
        assert_eq!(recent.kl, 8.2);
    }

    #[test]
    fn steps_are_averaged_over_the_window_and_bests_kept() {
        let mut run = RegimeWindow::new(Cadence::STEPS);
        for step in 0..12 {
            let regime = run.push(sample(2.0, 3.0 + 0.01 * step as f64, 0.5), &SHAPE);
            if step + 1 < MIN_STEPS {
                assert_eq!(regime, Regime::WarmingUp);
            }
        }
        let recent = run.recent(&SHAPE);
        assert_eq!(recent.window, WINDOW_STEPS);
        assert!((recent.teacher_mi - 1.09).abs() < 1e-9, "{recent:?}");
        assert!((recent.best_mi - 1.09).abs() < 1e-9);
        // I falls to 0.2: a third of its best, collapsing.
        for _ in 0..WINDOW_STEPS {
            run.push(sample(2.0, 2.2, 0.5), &SHAPE);
        }
        assert_eq!(run.regime(&SHAPE), Regime::Collapsing);
    }

    #[test]
    fn only_readings_over_enough_rows_set_the_best_rank() {
        let mut run = RegimeWindow::new(Cadence::CHECKPOINTS);
        let with_rank = |rank: f64, rows: usize| HealthSample {
            effective_rank: Some(rank),
            rank_rows: Some(rows),
            ..sample(2.0, 3.5, 0.5)
        };
        // 8 rows of 16-wide features: capped, shown but never the best.
        run.push(with_rank(7.5, 8), &SHAPE);
        let recent = run.recent(&SHAPE);
        assert_eq!(recent.best_rank, None);
        assert!(!recent.rank_valid);
        run.push(with_rank(12.0, 32), &SHAPE);
        assert_eq!(run.push(with_rank(5.0, 32), &SHAPE), Regime::Dimensional);
        assert_eq!(run.recent(&SHAPE).best_rank, Some(12.0));
    }
}
