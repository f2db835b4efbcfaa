//! The patch-feature PCA picture: the first three principal components as red, green and blue.

/// Projects `n` feature rows of width `dim` on their first three principal components and
/// scales each component to 0..=255 (min–max), as the DINO follow-up work's PCA pictures.
/// Components come from power iteration with deflation on the covariance (deterministic).
///
/// Long: centring, the 3-component power iteration with deflation and the colour mapping,
/// kept together in the order they run.
pub fn pca_rgb(features: &[f32], n: usize, dim: usize) -> Vec<u8> {
    if n == 0 || dim == 0 || features.len() != n * dim {
        return Vec::new();
    }
    let mut mean = vec![0f64; dim];
    for row in features.chunks(dim) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += *v as f64 / n as f64;
        }
    }
    let centred: Vec<f64> = features
        .chunks(dim)
        .flat_map(|row| row.iter().zip(&mean).map(|(v, m)| *v as f64 - m))
        .collect();
    let mut covariance = vec![0f64; dim * dim];
    for row in centred.chunks(dim) {
        for i in 0..dim {
            let ri = row[i];
            if ri == 0.0 {
                continue;
            }
            for (c, rj) in covariance[i * dim..(i + 1) * dim].iter_mut().zip(row) {
                *c += ri * rj;
            }
        }
    }
    let mut components: Vec<Vec<f64>> = Vec::with_capacity(3);
    for k in 0..3.min(dim) {
        // A fixed, non-degenerate start vector keeps the result reproducible.
        let mut v: Vec<f64> = (0..dim)
            .map(|i| 1.0 + ((i * 7 + k * 13) % 11) as f64 / 11.0)
            .collect();
        for _ in 0..200 {
            let mut next = vec![0f64; dim];
            for i in 0..dim {
                next[i] = covariance[i * dim..(i + 1) * dim]
                    .iter()
                    .zip(&v)
                    .map(|(c, x)| c * x)
                    .sum();
            }
            for previous in &components {
                let dot: f64 = next.iter().zip(previous).map(|(a, b)| a * b).sum();
                for (x, p) in next.iter_mut().zip(previous) {
                    *x -= dot * p;
                }
            }
            let norm = next.iter().map(|x| x * x).sum::<f64>().sqrt();
            if norm < 1e-20 {
                break;
            }
            v = next.into_iter().map(|x| x / norm).collect();
        }
        // Sign convention: the largest coordinate positive, so reruns give the same colours.
        let largest = v
            .iter()
            .copied()
            .fold(0.0f64, |acc, x| if x.abs() > acc.abs() { x } else { acc });
        if largest < 0.0 {
            v.iter_mut().for_each(|x| *x = -*x);
        }
        components.push(v);
    }
    let projections: Vec<Vec<f64>> = components
        .iter()
        .map(|c| {
            centred
                .chunks(dim)
                .map(|row| row.iter().zip(c).map(|(a, b)| a * b).sum())
                .collect()
        })
        .collect();
    let scaled: Vec<Vec<u8>> = projections
        .iter()
        .map(|p| {
            let (lo, hi) = p
                .iter()
                .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
            let span = hi - lo;
            p.iter()
                .map(|v| {
                    if span > 0.0 {
                        (255.0 * (v - lo) / span).round() as u8
                    } else {
                        0
                    }
                })
                .collect()
        })
        .collect();
    (0..n)
        .flat_map(|i| [0, 1, 2].map(|c| scaled.get(c).map_or(0, |s| s[i])))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pca_finds_the_dominant_direction() {
        // Points spread along (1, 1, 0, 0) with small noise on the other axes: the first
        // component orders them along that line, the red channel goes from 0 to 255.
        let n = 20;
        let features: Vec<f32> = (0..n)
            .flat_map(|i| {
                let t = i as f32 / (n - 1) as f32;
                [
                    t,
                    t,
                    0.01 * ((i * 3) % 5) as f32,
                    0.01 * ((i * 7) % 3) as f32,
                ]
            })
            .collect();
        let rgb = pca_rgb(&features, n, 4);
        let red: Vec<u8> = rgb.chunks(3).map(|p| p[0]).collect();
        assert!(
            red.windows(2).all(|w| w[0] <= w[1]) || red.windows(2).all(|w| w[0] >= w[1]),
            "{red:?}"
        );
        assert_eq!(red.iter().copied().max(), Some(255));
        assert_eq!(red.iter().copied().min(), Some(0));
    }
}
