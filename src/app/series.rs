//! Plot data kept cheap over 100k steps: every series is smoothed incrementally (de-biased EMA)
//! and decimated into at most `MAX_BUCKETS` bucket means, so drawing borrows a short slice.

use egui_plot::PlotPoint;

/// Buckets drawn per series; the stride doubles when a series outgrows it.
pub const MAX_BUCKETS: usize = 2048;

/// Incremental bucket means with a power-of-two stride.
#[derive(Clone, Debug, Default)]
pub struct Decimated {
    stride: usize,
    /// Complete buckets, then (if any) the running mean of the partial last bucket.
    points: Vec<PlotPoint>,
    partial_sum: (f64, f64),
    partial_count: usize,
}

impl Decimated {
    pub fn new() -> Self {
        Self {
            stride: 1,
            ..Default::default()
        }
    }

    pub fn push(&mut self, x: f64, y: f64) {
        if self.stride == 0 {
            self.stride = 1;
        }
        if self.partial_count > 0 {
            // The last point is the partial bucket's running mean: replace it.
            self.points.pop();
        }
        self.partial_sum.0 += x;
        self.partial_sum.1 += y;
        self.partial_count += 1;
        let n = self.partial_count as f64;
        self.points.push(PlotPoint::new(
            self.partial_sum.0 / n,
            self.partial_sum.1 / n,
        ));
        if self.partial_count == self.stride {
            self.partial_sum = (0.0, 0.0);
            self.partial_count = 0;
            if self.points.len() > MAX_BUCKETS {
                self.halve();
            }
        }
    }

    /// Merges pairs of complete buckets (only called when there is no partial bucket).
    fn halve(&mut self) {
        let merged: Vec<PlotPoint> = self
            .points
            .chunks(2)
            .map(|pair| {
                let n = pair.len() as f64;
                PlotPoint::new(
                    pair.iter().map(|p| p.x).sum::<f64>() / n,
                    pair.iter().map(|p| p.y).sum::<f64>() / n,
                )
            })
            .collect();
        if self.points.len() % 2 == 1 {
            // The odd last bucket becomes a partial bucket of the doubled stride.
            if let Some(last) = self.points.last() {
                self.partial_sum = (last.x * self.stride as f64, last.y * self.stride as f64);
                self.partial_count = self.stride;
            }
        }
        self.points = merged;
        self.stride *= 2;
    }

    pub fn points(&self) -> &[PlotPoint] {
        &self.points
    }

    pub fn stride(&self) -> usize {
        self.stride
    }
}

/// How values are shown: EMA weight (0 = raw) and log10 of the value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ViewSettings {
    pub smoothing: f64,
    pub log_y: bool,
}

impl ViewSettings {
    pub fn transform(&self, y: f64) -> f64 {
        if self.log_y {
            y.max(1e-8).log10()
        } else {
            y
        }
    }
}

/// One quantity of one run: raw values, and their drawable raw and smoothed views.
#[derive(Clone, Debug)]
pub struct Series {
    raw_values: Vec<(f64, f64)>,
    raw: Decimated,
    smoothed: Decimated,
    ema: f64,
    ema_weight: f64,
    view: ViewSettings,
}

impl Series {
    pub fn new(view: ViewSettings) -> Self {
        Self {
            raw_values: Vec::new(),
            raw: Decimated::new(),
            smoothed: Decimated::new(),
            ema: 0.0,
            ema_weight: 0.0,
            view,
        }
    }

    pub fn push(&mut self, x: f64, y: f64) {
        self.raw_values.push((x, y));
        self.push_view(x, y);
    }

    fn push_view(&mut self, x: f64, y: f64) {
        if !y.is_finite() {
            return;
        }
        let shown = self.view.transform(y);
        self.raw.push(x, shown);
        // TensorBoard's de-biased EMA: the first points are not pulled toward 0.
        let beta = self.view.smoothing.clamp(0.0, 0.999);
        self.ema = beta * self.ema + (1.0 - beta) * shown;
        self.ema_weight = beta * self.ema_weight + (1.0 - beta);
        let debiased = if self.ema_weight > 0.0 {
            self.ema / self.ema_weight
        } else {
            shown
        };
        self.smoothed.push(x, debiased);
    }

    /// Re-derives the views after the smoothing or the log-y setting changed.
    pub fn set_view(&mut self, view: ViewSettings) {
        if view == self.view {
            return;
        }
        self.view = view;
        self.raw = Decimated::new();
        self.smoothed = Decimated::new();
        self.ema = 0.0;
        self.ema_weight = 0.0;
        let values = std::mem::take(&mut self.raw_values);
        for (x, y) in &values {
            self.push_view(*x, *y);
        }
        self.raw_values = values;
    }

    pub fn raw(&self) -> &[PlotPoint] {
        self.raw.points()
    }

    pub fn smoothed(&self) -> &[PlotPoint] {
        self.smoothed.points()
    }

    pub fn len(&self) -> usize {
        self.raw_values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.raw_values.is_empty()
    }

    /// Last raw value (untransformed).
    pub fn last(&self) -> Option<f64> {
        self.raw_values.last().map(|(_, y)| *y)
    }

    /// Mean of the last `n` raw values (untransformed).
    pub fn recent_mean(&self, n: usize) -> Option<f64> {
        let tail = &self.raw_values[self.raw_values.len().saturating_sub(n)..];
        (!tail.is_empty()).then(|| tail.iter().map(|(_, y)| y).sum::<f64>() / tail.len() as f64)
    }

    /// Raw value at or just before step `x` (for hover read-outs).
    pub fn value_at(&self, x: f64) -> Option<f64> {
        let index = self.raw_values.partition_point(|(px, _)| *px <= x);
        index
            .checked_sub(1)
            .and_then(|i| self.raw_values.get(i))
            .map(|(_, y)| *y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimation_bounds_points_and_keeps_means() {
        let mut d = Decimated::new();
        for i in 0..100_000 {
            d.push(i as f64, 1.0);
        }
        assert!(d.points().len() <= MAX_BUCKETS + 1);
        assert!(d.points().iter().all(|p| (p.y - 1.0).abs() < 1e-9));
        let last = d.points().last().unwrap();
        assert!(last.x > 99_000.0);
        let mut ramp = Decimated::new();
        for i in 0..10_000 {
            ramp.push(i as f64, i as f64);
        }
        // Bucket means of a ramp lie on the ramp.
        assert!(ramp.points().iter().all(|p| (p.x - p.y).abs() < 1e-6));
    }

    #[test]
    fn debiased_ema_starts_at_the_first_value_and_log_view_rebuilds() {
        let mut s = Series::new(ViewSettings {
            smoothing: 0.9,
            log_y: false,
        });
        s.push(0.0, 5.0);
        assert_eq!(s.smoothed()[0].y, 5.0);
        s.push(1.0, 15.0);
        // (0.9·0.1·5 + 0.1·15) / (1 − 0.81) = (0.45 + 1.5) / 0.19
        assert!((s.smoothed()[1].y - 1.95 / 0.19).abs() < 1e-9);
        s.set_view(ViewSettings {
            smoothing: 0.0,
            log_y: true,
        });
        assert!((s.raw()[1].y - 15f64.log10()).abs() < 1e-12);
        assert_eq!(s.smoothed()[1].y, s.raw()[1].y);
        assert_eq!(s.value_at(0.5), Some(5.0));
        assert_eq!(s.recent_mean(2), Some(10.0));
    }
}
