//! The official per-iteration schedules (`utils.cosine_scheduler` in facebookresearch/dino),
//! evaluated on demand instead of stored as arrays so the app can change a base value live.

/// `cosine_scheduler(base, final, epochs, iters_per_epoch, warmup_epochs, start_warmup_value)`:
/// linear warm-up from `warmup_start` to `base` over `warmup_iters` (endpoints inclusive, as
/// `np.linspace`), then `final + ½(base − final)(1 + cos(π i / n))` for the remaining `n` iterations.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CosineSchedule {
    pub base: f64,
    pub final_value: f64,
    pub total_iters: usize,
    pub warmup_iters: usize,
    pub warmup_start: f64,
}

impl CosineSchedule {
    pub fn new(base: f64, final_value: f64, total_iters: usize) -> Self {
        Self {
            base,
            final_value,
            total_iters,
            warmup_iters: 0,
            warmup_start: 0.0,
        }
    }

    pub fn with_warmup(mut self, warmup_iters: usize, warmup_start: f64) -> Self {
        self.warmup_iters = warmup_iters.min(self.total_iters);
        self.warmup_start = warmup_start;
        self
    }

    /// Value at iteration `it`; past the end it holds the last value, as a run extended
    /// beyond its planned length would.
    pub fn at(&self, it: usize) -> f64 {
        let it = it.min(self.total_iters.saturating_sub(1));
        if it < self.warmup_iters {
            if self.warmup_iters == 1 {
                return self.warmup_start;
            }
            let t = it as f64 / (self.warmup_iters - 1) as f64;
            return self.warmup_start + t * (self.base - self.warmup_start);
        }
        let n = self.total_iters - self.warmup_iters;
        let i = (it - self.warmup_iters) as f64;
        self.final_value
            + 0.5
                * (self.base - self.final_value)
                * (1.0 + (std::f64::consts::PI * i / n as f64).cos())
    }
}

/// Teacher temperature, per epoch: `np.linspace(warmup, final, warmup_epochs)` then constant.
pub fn teacher_temp_at_epoch(
    warmup_teacher_temp: f64,
    teacher_temp: f64,
    warmup_epochs: usize,
    epoch: usize,
) -> f64 {
    if epoch >= warmup_epochs {
        return teacher_temp;
    }
    if warmup_epochs == 1 {
        return warmup_teacher_temp;
    }
    let t = epoch as f64 / (warmup_epochs - 1) as f64;
    warmup_teacher_temp + t * (teacher_temp - warmup_teacher_temp)
}

/// Teacher EMA momentum: cosine from `base` to 1, except that a base of 0 means "no momentum
/// teacher" for the whole run (the teacher is a copy of the student, paper Fig. 6).
pub fn teacher_momentum_at(base: f64, total_iters: usize, it: usize) -> f64 {
    if base == 0.0 {
        return 0.0;
    }
    CosineSchedule::new(base, 1.0, total_iters).at(it)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn lr_warmup_then_cosine_matches_formula() {
        let (peak, min, total, warmup) = (0.002, 1e-6, 100, 10);
        let s = CosineSchedule::new(peak, min, total).with_warmup(warmup, 0.0);
        assert!(close(s.at(0), 0.0));
        assert!(close(s.at(5), peak * 5.0 / 9.0));
        assert!(close(s.at(9), peak));
        assert!(close(s.at(10), peak)); // cosine starts at base
        let n = (total - warmup) as f64;
        let mid = 45.0;
        let expected = min + 0.5 * (peak - min) * (1.0 + (std::f64::consts::PI * mid / n).cos());
        assert!(close(s.at(55), expected));
        let last = min + 0.5 * (peak - min) * (1.0 + (std::f64::consts::PI * (n - 1.0) / n).cos());
        assert!(close(s.at(99), last));
        assert!(s.at(99) > min, "never exactly reaches the final value");
        assert!(close(s.at(500), last), "holds past the end");
    }

    #[test]
    fn weight_decay_cosine_rises() {
        let s = CosineSchedule::new(0.04, 0.4, 1000);
        assert!(close(s.at(0), 0.04));
        // Halfway: final + ½(base − final)(1 + cos(π/2)) = 0.4 − 0.18.
        assert!(close(s.at(500), 0.22));
        assert!((s.at(999) - 0.4).abs() < 1e-5);
    }

    #[test]
    fn momentum_cosine_and_no_momentum_teacher() {
        assert!(close(teacher_momentum_at(0.996, 100, 0), 0.996));
        assert!(close(teacher_momentum_at(0.996, 100, 50), 0.998));
        assert!(teacher_momentum_at(0.996, 100, 99) > 0.99999);
        assert_eq!(teacher_momentum_at(0.0, 100, 50), 0.0);
    }

    #[test]
    fn teacher_temp_warmup_per_epoch() {
        assert!(close(teacher_temp_at_epoch(0.04, 0.07, 30, 0), 0.04));
        assert!(close(teacher_temp_at_epoch(0.04, 0.07, 30, 29), 0.07));
        assert!(close(teacher_temp_at_epoch(0.04, 0.07, 4, 1), 0.05));
        assert!(close(teacher_temp_at_epoch(0.04, 0.07, 30, 100), 0.07));
        assert!(close(teacher_temp_at_epoch(0.04, 0.04, 0, 0), 0.04));
    }
}
