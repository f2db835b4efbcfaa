//! DINOv2's KoLeo regulariser (`KoLeoLoss` in dinov2's `loss/koleo_loss.py`, from Sablayrolles
//! et al. 2018, "Spreading vectors for similarity search"): −mean log of the distance from each
//! ℓ2-normalised row to its nearest neighbour in the batch. Pushing it down pushes the
//! student's features apart over the sphere, the standard answer to dimensional collapse.
//! DINOv2 applies it to the student's backbone CLS features of each global crop on its own
//! ("we don't apply koleo loss between cls tokens of a same image") and adds
//! `weight · (KoLeo(crop 1) + KoLeo(crop 2))` to the loss.
//!
//! Two rows at zero distance (a duplicate image in the batch, a batch of one, or features that
//! have collapsed together) give −log(eps·(1 + √D)) ≈ 16 each: the value that "shoots to inf"
//! in dinov2 #143 / #314 / #492. [`KoleoOutput::stats`] counts those rows.

use burn::prelude::*;

/// The official eps of `F.normalize`, `PairwiseDistance` and the log.
pub const EPS: f64 = 1e-8;

/// A neighbour closer than this (after ℓ2 normalisation) counts as a duplicate: each such row
/// adds at least −log(1e-6) ≈ 13.8 / B to the value.
pub const DUPLICATE_DISTANCE: f64 = 1e-6;

/// KoLeo of a batch's global crops.
pub struct KoleoOutput {
    /// KoLeo(crop 1) + … + KoLeo(crop n): what the weight multiplies (carries the gradient
    /// when the features do).
    pub loss: Tensor<1>,
    /// Detached `[mean KoLeo per crop, rows with a duplicate neighbour]`.
    pub stats: Tensor<1>,
}

/// KoLeo of `features` `[crops·B, D]` (crop-major), each crop's `B` rows on their own.
pub fn koleo(features: Tensor<2>, crops: usize) -> KoleoOutput {
    let [rows, _] = features.dims();
    let batch = rows / crops.max(1);
    let mut loss: Option<Tensor<1>> = None;
    let mut duplicates: Option<Tensor<1>> = None;
    for crop in 0..crops {
        let (value, close) = koleo_of_rows(features.clone().narrow(0, crop * batch, batch));
        loss = Some(match loss {
            Some(sum) => sum + value,
            None => value,
        });
        duplicates = Some(match duplicates {
            Some(sum) => sum + close,
            None => close,
        });
    }
    let device = features.device();
    let loss = loss.unwrap_or_else(|| Tensor::zeros([1], &device));
    let duplicates = duplicates.unwrap_or_else(|| Tensor::zeros([1], &device).without_autodiff());
    let stats = Tensor::cat(
        vec![
            loss.clone()
                .without_autodiff()
                .div_scalar(crops.max(1) as f64),
            duplicates,
        ],
        0,
    );
    KoleoOutput { loss, stats }
}

/// The official `KoLeoLoss.forward` on `x` `[B, D]`, and the number of rows whose nearest
/// neighbour is a duplicate.
fn koleo_of_rows(x: Tensor<2>) -> (Tensor<1>, Tensor<1>) {
    let [batch, _] = x.dims();
    let device = x.device();
    // F.normalize(x, eps): x / max(‖x‖, eps).
    let norm = x.clone().square().sum_dim(1).sqrt().clamp_min(EPS);
    let unit = x / norm;
    // The neighbour by the largest inner product, the diagonal at −1 (no gradient: an index).
    let fixed = unit.clone().without_autodiff();
    let dots = fixed.clone().matmul(fixed.transpose());
    let diagonal = Tensor::<2, Bool>::diag_mask([batch, batch], 0, &device).bool_not();
    let nearest = dots.mask_fill(diagonal, -1.0).argmax(1).reshape([batch]);
    let neighbour = unit.clone().select(0, nearest);
    let difference = unit - neighbour;
    let close = difference
        .clone()
        .without_autodiff()
        .square()
        .sum_dim(1)
        .lower_equal_elem(DUPLICATE_DISTANCE * DUPLICATE_DISTANCE)
        .float()
        .sum();
    // PairwiseDistance(p = 2, eps): ‖x − y + eps‖.
    let distance = difference.add_scalar(EPS).square().sum_dim(1).sqrt();
    let value = distance.add_scalar(EPS).log().mean().neg();
    (value, close)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(values: &[f32], shape: [usize; 2]) -> Tensor<2> {
        Tensor::from_data(TensorData::new(values.to_vec(), shape), &Device::flex())
    }

    fn host(t: Tensor<1>) -> Vec<f32> {
        t.into_data_as::<f32>().as_slice::<f32>().unwrap().to_vec()
    }

    #[test]
    fn spread_rows_score_lower_than_crowded_ones_and_duplicates_are_counted() {
        // Four orthogonal unit rows: every neighbour at √2.
        let spread = rows(
            &[
                1., 0., 0., 0., 0., 2., 0., 0., 0., 0., 3., 0., 0., 0., 0., 4.,
            ],
            [4, 4],
        );
        let out = koleo(spread, 1);
        let stats = host(out.stats);
        assert!(
            (stats[0] as f64 + 2f64.sqrt().ln()).abs() < 1e-5,
            "{stats:?}"
        );
        assert_eq!(stats[1], 0.0);
        // Rows 0 and 3 point the same way: zero distance, counted, and the value jumps.
        let crowded = rows(
            &[
                1., 0., 0., 0., 0., 2., 0., 0., 0., 0., 3., 0., 5., 0., 0., 0.,
            ],
            [4, 4],
        );
        let stats = host(koleo(crowded, 1).stats);
        assert_eq!(stats[1], 2.0, "{stats:?}");
        // Rows 0 and 3: −ln(‖eps·1‖ + eps) = −ln(3·eps); rows 1 and 2: −ln √2.
        let expected = (2.0 * -(3.0 * EPS).ln() - 2.0 * 2f64.sqrt().ln()) / 4.0;
        assert!(
            (stats[0] as f64 - expected).abs() < 1e-3,
            "{stats:?} vs {expected}"
        );
        // Each crop on its own: two crops of the spread rows give the same mean.
        let two = rows(
            &[
                1., 0., 0., 0., 0., 2., 0., 0., 0., 0., 3., 0., 0., 0., 0., 4., //
                0., 1., 0., 0., 2., 0., 0., 0., 0., 0., 0., 3., 0., 0., 4., 0.,
            ],
            [8, 4],
        );
        let out = koleo(two, 2);
        let stats = host(out.stats);
        assert!(
            (stats[0] as f64 + 2f64.sqrt().ln()).abs() < 1e-5,
            "{stats:?}"
        );
        assert!((host(out.loss)[0] as f64 + 2.0 * 2f64.sqrt().ln()).abs() < 1e-5);
    }

    #[test]
    fn a_batch_of_one_is_its_own_neighbour() {
        let stats = host(koleo(rows(&[3., 4.], [1, 2]), 1).stats);
        assert_eq!(stats[1], 1.0);
        assert!((stats[0] as f64 + (EPS * (1.0 + 2f64.sqrt())).ln()).abs() < 1e-3);
    }
}
