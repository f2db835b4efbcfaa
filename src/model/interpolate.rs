//! The bicubic resize of the position table to another patch grid, as the reference's
//! `interpolate_pos_encoding` (PyTorch `interpolate(mode="bicubic")`), as one matrix.

/// Kronecker product of two 1-D bicubic resize matrices, `[rows·cols, side·side]` row-major.
///
/// It reproduces PyTorch's `interpolate(scale_factor=((rows+0.1)/side, (cols+0.1)/side),
/// mode="bicubic", align_corners=False)` exactly: the source coordinate uses the passed scale
/// (with the +0.1), cubic convolution A = −0.75, indices clamped at the border.
pub fn bicubic_resize_matrix(side: usize, rows: usize, cols: usize) -> Vec<f32> {
    let wy = bicubic_weights_1d(side, rows, (rows as f64 + 0.1) / side as f64);
    let wx = bicubic_weights_1d(side, cols, (cols as f64 + 0.1) / side as f64);
    kronecker(&wy, &wx, side, rows, cols)
}

/// The same for `interpolate(size=(rows, cols), mode="bicubic", antialias=True)` (the DINOv2
/// register models): PyTorch's `_upsample_bicubic2d_aa`, the PIL-style filter with A = −0.5
/// widened by the scale when shrinking, taps cut at the border and renormalised. It differs
/// from the plain bicubic when enlarging too (another A, no clamped taps).
pub fn bicubic_antialias_resize_matrix(side: usize, rows: usize, cols: usize) -> Vec<f32> {
    kronecker(
        &antialias_weights_1d(side, rows),
        &antialias_weights_1d(side, cols),
        side,
        rows,
        cols,
    )
}

fn kronecker(wy: &[f64], wx: &[f64], side: usize, rows: usize, cols: usize) -> Vec<f32> {
    let n_in = side * side;
    let mut matrix = vec![0f32; rows * cols * n_in];
    for r in 0..rows {
        for c in 0..cols {
            let row = &mut matrix[(r * cols + c) * n_in..(r * cols + c + 1) * n_in];
            for i in 0..side {
                let y = wy[r * side + i];
                if y == 0.0 {
                    continue;
                }
                for j in 0..side {
                    row[i * side + j] = (y * wx[c * side + j]) as f32;
                }
            }
        }
    }
    matrix
}

/// `[n_out, n_in]` weights of `_compute_index_ranges_weights` with antialias (align_corners
/// false, scale = n_in / n_out).
fn antialias_weights_1d(n_in: usize, n_out: usize) -> Vec<f64> {
    const A: f64 = -0.5;
    let filter = |x: f64| {
        let x = x.abs();
        if x < 1.0 {
            ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
        } else if x < 2.0 {
            (((x - 5.0) * x + 8.0) * x - 4.0) * A
        } else {
            0.0
        }
    };
    let scale = n_in as f64 / n_out as f64;
    let support = if scale >= 1.0 { 2.0 * scale } else { 2.0 };
    let inverse = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    let mut weights = vec![0f64; n_out * n_in];
    for out in 0..n_out {
        let center = scale * (out as f64 + 0.5);
        // C++ casts toward zero; both bounds are clamped to the input.
        let low = ((center - support + 0.5) as i64).max(0) as usize;
        let high = ((center + support + 0.5) as i64).min(n_in as i64).max(0) as usize;
        let row = &mut weights[out * n_in..(out + 1) * n_in];
        let mut total = 0.0;
        for (j, w) in row.iter_mut().enumerate().take(high).skip(low) {
            *w = filter((j as f64 - center + 0.5) * inverse);
            total += *w;
        }
        if total != 0.0 {
            row.iter_mut().for_each(|w| *w /= total);
        }
    }
    weights
}

/// `[n_out, n_in]` weights of a 1-D bicubic resize with PyTorch's scale-factor mapping.
fn bicubic_weights_1d(n_in: usize, n_out: usize, scale: f64) -> Vec<f64> {
    const A: f64 = -0.75;
    let cubic_near = |t: f64| ((A + 2.0) * t - (A + 3.0)) * t * t + 1.0;
    let cubic_far = |t: f64| ((A * t - 5.0 * A) * t + 8.0 * A) * t - 4.0 * A;
    let mut weights = vec![0f64; n_out * n_in];
    for out in 0..n_out {
        let src = (out as f64 + 0.5) / scale - 0.5;
        let base = src.floor();
        let t = src - base;
        let taps = [
            cubic_far(t + 1.0),
            cubic_near(t),
            cubic_near(1.0 - t),
            cubic_far(2.0 - t),
        ];
        for (k, w) in taps.iter().enumerate() {
            let index = (base as i64 - 1 + k as i64).clamp(0, n_in as i64 - 1) as usize;
            weights[out * n_in + index] += w;
        }
    }
    weights
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bicubic_matrix_identity_at_same_size_rows_sum_to_one() {
        // Resizing 14 → 6 (a 96-px local crop with /16): each output row is a convex-ish
        // combination whose weights sum to 1.
        let m = bicubic_resize_matrix(14, 6, 6);
        for row in m.chunks(14 * 14) {
            let sum: f32 = row.iter().sum();
            assert!((sum - 1.0).abs() < 1e-5);
        }
        // PyTorch reference, interpolate(arange(4.).view(1,1,1,4), scale_factor=(1, 6.1/4),
        // mode="bicubic", align_corners=False) along one axis: first output 0, 1.5 scale.
        let w = bicubic_weights_1d(4, 6, 6.1 / 4.0);
        let ramp = [0.0, 1.0, 2.0, 3.0];
        let out0: f64 = (0..4).map(|i| w[i] * ramp[i]).sum();
        // src = 0.5/1.525 - 0.5 = -0.1721; cubic on a clamped ramp.
        assert!(out0 < 0.0 && out0 > -0.2, "{out0}");
    }

    #[test]
    fn antialiased_weights_match_pytorch_shrinking_and_enlarging() {
        // torch.nn.functional.interpolate(eye(n_in) as [n_in, 1, 1, n_in], size=(1, n_out),
        // mode="bicubic", antialias=True) in float64 (torch 2.15), rows = outputs.
        let shrink: [[f64; 5]; 3] = [
            [
                0.584_615_384_615_384_5,
                0.446_153_846_153_846_1,
                0.0,
                -0.030_769_230_769_230_68,
                0.0,
            ],
            [
                -0.037_209_302_325_581_49,
                0.246_511_627_906_976_8,
                0.581_395_348_837_209_3,
                0.246_511_627_906_976_8,
                -0.037_209_302_325_581_49,
            ],
            [
                0.0,
                -0.030_769_230_769_230_875,
                0.0,
                0.446_153_846_153_846_07,
                0.584_615_384_615_384_9,
            ],
        ];
        let enlarge_row1 = [
            0.440_443_213_296_399,
            0.626_038_781_163_434_9,
            -0.066_481_994_459_833_92,
            0.0,
            0.0,
        ];
        let w = antialias_weights_1d(5, 3);
        for (out, row) in shrink.iter().enumerate() {
            for (j, expected) in row.iter().enumerate() {
                assert!((w[out * 5 + j] - expected).abs() < 1e-12, "{out} {j}");
            }
        }
        let w = antialias_weights_1d(5, 7);
        for (j, expected) in enlarge_row1.iter().enumerate() {
            assert!((w[5 + j] - expected).abs() < 1e-12, "{j}");
        }
        // Enlarging 5 → 7: the middle output sits on input 2 exactly.
        assert!((w[3 * 5 + 2] - 1.0).abs() < 1e-12);
    }
}
