//! The DINO loss exactly as the official `DINOLoss` (reference §3), plus its decomposition
//! H(Pt, Ps) = h(Pt) + KL(Pt‖Ps) used by the collapse plots.

use crate::train::cross_entropy::student_cross_entropy;
use crate::train::sinkhorn::{log_probs, sinkhorn_knopp};
use burn::prelude::*;
use burn::tensor::activation::{log_softmax, softmax};

/// Options of one loss evaluation (the live ablation switches feed these).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossOptions {
    pub student_temp: f64,
    /// Temperature actually used for the teacher (equal to `student_temp` when sharpening is off).
    pub teacher_temp: f64,
    pub centering: TeacherCentering,
}

/// How the teacher's probabilities are made (the live `CenteringMode` with its parameter).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TeacherCentering {
    /// softmax((t − c)/τt) with the running center c (DINO).
    Ema,
    /// The Sinkhorn-Knopp equipartition of exp(t/τt) over the batch (DINOv2); no center.
    Sinkhorn { iterations: usize },
    /// softmax(t/τt).
    Off,
}

impl TeacherCentering {
    pub fn new(mode: crate::config::CenteringMode, sinkhorn_iterations: usize) -> Self {
        use crate::config::CenteringMode;
        match mode {
            CenteringMode::Ema => TeacherCentering::Ema,
            CenteringMode::Sinkhorn => TeacherCentering::Sinkhorn {
                iterations: sinkhorn_iterations,
            },
            CenteringMode::Off => TeacherCentering::Off,
        }
    }
}

/// Loss plus the quantities of paper Fig. 7, all as device scalars until read.
pub struct LossOutput {
    /// Mean over terms of the per-sample cross-entropy; carries the student's gradient.
    pub loss: Tensor<1>,
    /// Detached `[loss, teacher_entropy, batch_mean_entropy]`, read back in one transfer.
    pub stats: Tensor<1>,
}

/// Scalars of one loss evaluation on the host.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossStats {
    pub loss: f64,
    /// Mean h(Pt) over the 2B teacher rows (each row is used in the same number of terms, so
    /// this equals the term-average of h(Pt)).
    pub teacher_entropy: f64,
    /// Mean KL(Pt‖Ps) over the loss terms = loss − teacher_entropy.
    pub kl: f64,
    /// h of the batch-averaged teacher distribution: ≈ ln K for "all rows uniform" and for
    /// "rows one-hot on different prototypes", ≈ 0 only for "all rows the same one-hot".
    pub batch_mean_entropy: f64,
}

impl LossStats {
    /// I = h(mean Pt) − h(Pt): what the teacher's output tells about the image.
    pub fn teacher_mi(&self) -> f64 {
        self.batch_mean_entropy - self.teacher_entropy
    }

    /// The row of `metrics.csv` these stats begin: the decomposition and I at `step`, `epoch`
    /// (a training step's, or a watched checkpoint's); the caller fills the rest.
    pub fn row(&self, step: usize, epoch: usize) -> crate::store::rows::MetricsRow {
        crate::store::rows::MetricsRow {
            step,
            epoch,
            loss: self.loss,
            teacher_entropy: self.teacher_entropy,
            kl: self.kl,
            batch_mean_entropy: self.batch_mean_entropy,
            teacher_mi: Some(self.teacher_mi()),
            ..Default::default()
        }
    }

    pub fn from_values(values: &[f32]) -> Option<Self> {
        let [loss, teacher_entropy, batch_mean_entropy] = values.get(..3)?.try_into().ok()?;
        let (loss, teacher_entropy) = (loss as f64, teacher_entropy as f64);
        Some(Self {
            loss,
            teacher_entropy,
            kl: loss - teacher_entropy,
            batch_mean_entropy: batch_mean_entropy as f64,
        })
    }
}

/// The loss of `n_crops` student crops against the teacher's two global crops.
///
/// `student_logits`: `[n_crops·B, K]`, crop-major, globals first (autodiff).
/// `teacher_logits`: `[2·B, K]` raw teacher head output (no gradient).
/// `center`: `[1, K]`.
pub fn dino_loss(
    student_logits: Tensor<2>,
    teacher_logits: Tensor<2>,
    center: Tensor<2>,
    n_crops: usize,
    options: LossOptions,
) -> LossOutput {
    let [rows, _] = student_logits.dims();
    let batch = rows / n_crops;

    // The teacher side never needs a graph; keeping it off autodiff also skips its bookkeeping.
    let teacher_logits = teacher_logits.without_autodiff();
    // The decomposition below is of these probabilities, whichever way they were made.
    let (teacher_probs, teacher_log_probs) = match options.centering {
        TeacherCentering::Sinkhorn { iterations } => {
            let probs = sinkhorn_knopp(teacher_logits, options.teacher_temp, iterations);
            (probs.clone(), log_probs(probs))
        }
        mode => {
            let shifted = if mode == TeacherCentering::Ema {
                teacher_logits - center.without_autodiff()
            } else {
                teacher_logits
            };
            let scaled = shifted.div_scalar(options.teacher_temp);
            (softmax(scaled.clone(), 1), log_softmax(scaled, 1))
        }
    };

    // One CPU op where it applies (`train::cross_entropy`); burn's ops elsewhere.
    let loss = student_cross_entropy(
        &student_logits,
        &teacher_probs,
        n_crops,
        options.student_temp,
    )
    .unwrap_or_else(|| {
        composed_cross_entropy(
            student_logits,
            teacher_probs.clone(),
            n_crops,
            batch,
            options,
        )
    });

    let teacher_entropy = teacher_probs
        .clone()
        .mul(teacher_log_probs)
        .sum_dim(1)
        .neg()
        .mean();
    let mean_probs = teacher_probs.mean_dim(0);
    let batch_mean_entropy = mean_probs
        .clone()
        .mul(mean_probs.clamp_min(1e-30).log())
        .sum()
        .neg();
    let stats = Tensor::cat(
        vec![
            loss.clone().without_autodiff(),
            teacher_entropy,
            batch_mean_entropy,
        ],
        0,
    );
    LossOutput { loss, stats }
}

/// The cross-entropy term of [`dino_loss`] from burn's ops, as the reference writes it: per
/// (teacher global crop `iq`, student crop `v ≠ iq`) the batch mean of −Σ q·log p, averaged
/// over the terms. Devices other than the CPU backend run this.
pub(crate) fn composed_cross_entropy(
    student_logits: Tensor<2>,
    teacher_probs: Tensor<2>,
    n_crops: usize,
    batch: usize,
    options: LossOptions,
) -> Tensor<1> {
    let student_log_probs = log_softmax(student_logits.div_scalar(options.student_temp), 1);
    let mut total: Option<Tensor<1>> = None;
    let mut n_terms = 0usize;
    for iq in 0..2 {
        let q = teacher_probs
            .clone()
            .slice(s![iq * batch..(iq + 1) * batch, ..]);
        for v in 0..n_crops {
            if v == iq {
                // Same view for teacher and student: skipped, as in the reference.
                continue;
            }
            let log_p = student_log_probs
                .clone()
                .slice(s![v * batch..(v + 1) * batch, ..]);
            let term = q.clone().mul(log_p).sum_dim(1).neg().mean();
            total = Some(match total {
                Some(sum) => sum + term,
                None => term,
            });
            n_terms += 1;
        }
    }
    match total {
        Some(sum) => sum.div_scalar(n_terms.max(1) as f64),
        None => Tensor::zeros([1], &student_log_probs.device()),
    }
}

/// `c ← m·c + (1 − m)·mean(raw teacher logits of both global crops)`; runs after the loss.
pub fn update_center(center: Tensor<2>, teacher_logits: Tensor<2>, momentum: f64) -> Tensor<2> {
    let batch_center = teacher_logits.without_autodiff().mean_dim(0);
    center.without_autodiff().mul_scalar(momentum) + batch_center.mul_scalar(1.0 - momentum)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(values: &[f32], shape: [usize; 2], device: &Device) -> Tensor<2> {
        Tensor::from_data(TensorData::new(values.to_vec(), shape), device)
    }

    fn read(t: Tensor<1>) -> Vec<f32> {
        t.into_data_as::<f32>().as_slice::<f32>().unwrap().to_vec()
    }

    fn softmax_host(row: &[f64], temp: f64) -> Vec<f64> {
        let max = row.iter().cloned().fold(f64::MIN, f64::max);
        let exp: Vec<f64> = row.iter().map(|v| ((v - max) / temp).exp()).collect();
        let sum: f64 = exp.iter().sum();
        exp.iter().map(|e| e / sum).collect()
    }

    #[test]
    fn loss_matches_hand_computation() {
        // B = 1, K = 3, three crops (2 global + 1 local) → 4 terms.
        let device = Device::flex();
        let student = [[1.0, 0.0, -1.0], [0.5, 0.5, 0.0], [0.0, 2.0, 0.0]];
        let teacher = [[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]];
        let center = [0.1, -0.2, 0.3];
        let opts = LossOptions {
            student_temp: 0.1,
            teacher_temp: 0.04,
            centering: TeacherCentering::Ema,
        };
        let flat_s: Vec<f32> = student.iter().flatten().map(|v| *v as f32).collect();
        let flat_t: Vec<f32> = teacher.iter().flatten().map(|v| *v as f32).collect();
        let flat_c: Vec<f32> = center.iter().map(|v| *v as f32).collect();
        let out = dino_loss(
            tensor(&flat_s, [3, 3], &device),
            tensor(&flat_t, [2, 3], &device),
            tensor(&flat_c, [1, 3], &device),
            3,
            opts,
        );

        let mut expected = 0.0;
        let mut terms = 0;
        let mut entropy = 0.0;
        for (iq, t) in teacher.iter().enumerate() {
            let shifted: Vec<f64> = t.iter().zip(center).map(|(a, c)| a - c).collect();
            let q = softmax_host(&shifted, 0.04);
            entropy -= q
                .iter()
                .map(|p| if *p > 0.0 { p * p.ln() } else { 0.0 })
                .sum::<f64>();
            for (v, s) in student.iter().enumerate() {
                if v == iq {
                    continue;
                }
                let p = softmax_host(s, 0.1);
                expected -= q.iter().zip(&p).map(|(a, b)| a * b.ln()).sum::<f64>();
                terms += 1;
            }
        }
        expected /= terms as f64;
        entropy /= 2.0;
        let stats = read(out.stats);
        assert_eq!(terms, 4);
        assert!(
            (stats[0] as f64 - expected).abs() < 1e-4,
            "{} vs {expected}",
            stats[0]
        );
        assert!(
            (stats[1] as f64 - entropy).abs() < 1e-4,
            "{} vs {entropy}",
            stats[1]
        );
        assert!((read(out.loss)[0] as f64 - expected).abs() < 1e-4);
    }

    #[test]
    fn loss_equals_entropy_plus_kl_and_kl_is_nonnegative() {
        let device = Device::flex();
        let (batch, k, crops) = (4, 16, 4);
        let student = Tensor::<2>::random(
            [crops * batch, k],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let teacher = Tensor::<2>::random(
            [2 * batch, k],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let center = Tensor::<2>::zeros([1, k], &device);
        for (centering, teacher_temp) in [
            (TeacherCentering::Ema, 0.04),
            (TeacherCentering::Off, 0.1),
            (TeacherCentering::Sinkhorn { iterations: 3 }, 0.04),
        ] {
            let out = dino_loss(
                student.clone(),
                teacher.clone(),
                center.clone(),
                crops,
                LossOptions {
                    student_temp: 0.1,
                    teacher_temp,
                    centering,
                },
            );
            let stats = LossStats::from_values(&read(out.stats)).unwrap();
            // KL is computed term-by-term on the host as a cross-check of the identity, on the
            // probabilities the loss used.
            let (q, log_q) = match centering {
                TeacherCentering::Sinkhorn { iterations } => {
                    let q = sinkhorn_knopp(teacher.clone(), teacher_temp, iterations);
                    (q.clone(), log_probs(q))
                }
                _ => {
                    let scaled = (teacher.clone() - center.clone()).div_scalar(teacher_temp);
                    (softmax(scaled.clone(), 1), log_softmax(scaled, 1))
                }
            };
            let log_p = log_softmax(student.clone().div_scalar(0.1), 1);
            let mut kl = 0.0;
            let mut terms = 0;
            for iq in 0..2 {
                for v in 0..crops {
                    if v == iq {
                        continue;
                    }
                    let qi = q.clone().slice(s![iq * batch..(iq + 1) * batch, ..]);
                    let lqi = log_q.clone().slice(s![iq * batch..(iq + 1) * batch, ..]);
                    let lpv = log_p.clone().slice(s![v * batch..(v + 1) * batch, ..]);
                    kl += qi.mul(lqi - lpv).sum_dim(1).mean().into_scalar::<f32>() as f64;
                    terms += 1;
                }
            }
            kl /= terms as f64;
            assert!((stats.kl - kl).abs() < 1e-3, "{} vs {kl}", stats.kl);
            assert!(stats.kl >= -1e-4);
            assert!((stats.loss - (stats.teacher_entropy + stats.kl)).abs() < 1e-9);
            assert!(stats.batch_mean_entropy <= (k as f64).ln() + 1e-4);
            assert!(stats.batch_mean_entropy >= stats.teacher_entropy - 1e-4);
        }
    }

    #[test]
    fn batch_mean_entropy_separates_uniform_from_one_hot() {
        let device = Device::flex();
        let k = 8;
        let center = Tensor::<2>::zeros([1, k], &device);
        let opts = LossOptions {
            student_temp: 0.1,
            teacher_temp: 0.01,
            centering: TeacherCentering::Off,
        };
        // Every teacher row the same one-hot: both entropies ≈ 0.
        let mut same = vec![0f32; 2 * 4 * k];
        for row in 0..8 {
            same[row * k] = 10.0;
        }
        let student = Tensor::<2>::zeros([8, k], &device);
        let out = dino_loss(
            student.clone(),
            tensor(&same, [8, k], &device),
            center.clone(),
            2,
            opts,
        );
        let stats = LossStats::from_values(&read(out.stats)).unwrap();
        assert!(stats.teacher_entropy < 1e-3 && stats.batch_mean_entropy < 1e-3);
        // Rows one-hot on different prototypes: h ≈ 0 but the batch mean is spread.
        let mut spread = vec![0f32; 8 * k];
        for row in 0..8 {
            spread[row * k + row] = 10.0;
        }
        let out = dino_loss(student, tensor(&spread, [8, k], &device), center, 2, opts);
        let stats = LossStats::from_values(&read(out.stats)).unwrap();
        assert!(stats.teacher_entropy < 1e-3);
        assert!((stats.batch_mean_entropy - (k as f64).ln()).abs() < 1e-3);
    }

    #[test]
    fn center_update_is_ema_of_batch_mean() {
        let device = Device::flex();
        let center = tensor(&[1.0, 2.0], [1, 2], &device);
        let logits = tensor(&[0.0, 4.0, 2.0, 0.0], [2, 2], &device);
        let updated = update_center(center, logits, 0.9).into_data_as::<f32>();
        let values = updated.as_slice::<f32>().unwrap();
        assert!((values[0] - (0.9 * 1.0 + 0.1 * 1.0)).abs() < 1e-6);
        assert!((values[1] - (0.9 * 2.0 + 0.1 * 2.0)).abs() < 1e-6);
    }
}
