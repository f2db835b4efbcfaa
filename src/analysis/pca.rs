//! The patch-feature PCA pictures: the first three principal components as red, green and
//! blue over all patches, and DINOv2's foreground-masked recipe (dinov2 #45, the paper's
//! Fig. 1 and 9: the first component thresholded at 0 keeps the foreground, a second PCA of
//! 3 components is fitted on the foreground patches of all the images together, the
//! background is black). Components are eigenvectors of the covariance (nalgebra's
//! `SymmetricEigen`, in f64), each signed so that its largest coordinate is positive (as
//! scikit-learn's `svd_flip` on the components), so reruns give the same colours.

use nalgebra::{DMatrix, SymmetricEigen};

/// The mean of some feature rows and their leading principal directions, largest variance
/// first.
struct Pca {
    mean: Vec<f64>,
    components: Vec<Vec<f64>>,
}

impl Pca {
    /// Fits `k` components on `rows` (each of width `dim`); `None` without rows.
    fn fit<'a>(
        rows: impl Iterator<Item = &'a [f32]> + Clone,
        dim: usize,
        k: usize,
    ) -> Option<Self> {
        let n = rows.clone().count();
        if n == 0 || dim == 0 {
            return None;
        }
        let mut mean = vec![0f64; dim];
        for row in rows.clone() {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += *v as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let centred = DMatrix::from_iterator(
            dim,
            n,
            rows.flat_map(|row| row.iter().zip(&mean).map(|(v, m)| *v as f64 - m)),
        );
        // Xᵀ X (unnormalised: the eigenvectors are the covariance's).
        let covariance = &centred * centred.transpose();
        let eigen = SymmetricEigen::new(covariance);
        let mut order: Vec<usize> = (0..dim).collect();
        order.sort_by(|&a, &b| eigen.eigenvalues[b].total_cmp(&eigen.eigenvalues[a]));
        let components = order
            .into_iter()
            .take(k.min(dim))
            .map(|j| {
                let mut v: Vec<f64> = eigen.eigenvectors.column(j).iter().copied().collect();
                let largest =
                    v.iter()
                        .copied()
                        .fold(0.0f64, |acc, x| if x.abs() > acc.abs() { x } else { acc });
                if largest < 0.0 {
                    v.iter_mut().for_each(|x| *x = -*x);
                }
                v
            })
            .collect();
        Some(Self { mean, components })
    }

    /// The score of `row` on component `c`.
    fn score(&self, row: &[f32], c: usize) -> f64 {
        row.iter()
            .zip(&self.mean)
            .zip(&self.components[c])
            .map(|((v, m), w)| (*v as f64 - m) * w)
            .sum()
    }
}

/// Each component's scores min–max scaled to 0..=255 over all the rows given, as one RGB
/// pixel per row (channels past the fitted components 0).
fn coloured(pca: &Pca, rows: &[&[f32]]) -> Vec<[u8; 3]> {
    let scores: Vec<Vec<f64>> = (0..pca.components.len())
        .map(|c| rows.iter().map(|row| pca.score(row, c)).collect())
        .collect();
    let scaled: Vec<Vec<u8>> = scores
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
    (0..rows.len())
        .map(|i| [0, 1, 2].map(|c| scaled.get(c).map_or(0, |s| s[i])))
        .collect()
}

/// Projects `n` feature rows of width `dim` on their first three principal components and
/// scales each component to 0..=255 (min–max), as the DINO follow-up work's PCA pictures.
pub fn pca_rgb(features: &[f32], n: usize, dim: usize) -> Vec<u8> {
    pca_pictures(features, (n, 1), dim, false).0
}

/// One image's two pictures from one fit of all its patches (`grid` = (rows, cols), `rows ·
/// cols` feature rows): [`pca_rgb`]'s, and with `foreground` [`foreground_pca_rgb`]'s of the
/// image alone (its first component is the same fit's; empty without). Both empty for a
/// malformed input.
pub fn pca_pictures(
    features: &[f32],
    grid: (usize, usize),
    dim: usize,
    foreground: bool,
) -> (Vec<u8>, Vec<u8>) {
    let n = grid.0 * grid.1;
    if n == 0 || dim == 0 || features.len() != n * dim {
        return (Vec::new(), Vec::new());
    }
    let Some(pca) = Pca::fit(features.chunks(dim), dim, 3) else {
        return (Vec::new(), Vec::new());
    };
    let rows: Vec<&[f32]> = features.chunks(dim).collect();
    let plain = coloured(&pca, &rows).concat();
    let foreground = if foreground {
        foreground_of(&[(features, grid)], dim, &pca)
            .pop()
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    (plain, foreground)
}

/// DINOv2's foreground-masked PCA of several images' patch features, fitted across all of
/// them so that a part has the same colour in every image: the first component of all the
/// patches, oriented so that the patches on the images' borders score below zero on average
/// (the sign of a component is arbitrary, dinov2 #420; object-centred photographs have their
/// background at the border), keeps the patches that score above 0 (the paper: "removing
/// patches with a negative score of the first PCA component"); a second PCA of 3
/// components on those patches, min–max scaled over them all, gives their colours; the
/// background is black. `images`: each image's `rows · cols` feature rows (row-major) of
/// width `dim` with its grid. One RGB picture per image; all black when no patch is
/// foreground, empty for a malformed input.
pub fn foreground_pca_rgb(images: &[(&[f32], (usize, usize))], dim: usize) -> Vec<Vec<u8>> {
    if dim == 0
        || images
            .iter()
            .any(|(features, (rows, cols))| features.len() != rows * cols * dim)
    {
        return vec![Vec::new(); images.len()];
    }
    let all = images.iter().flat_map(|(features, _)| features.chunks(dim));
    match Pca::fit(all, dim, 1) {
        Some(first) => foreground_of(images, dim, &first),
        None => black(images),
    }
}

fn black(images: &[(&[f32], (usize, usize))]) -> Vec<Vec<u8>> {
    images
        .iter()
        .map(|(_, (rows, cols))| vec![0; rows * cols * 3])
        .collect()
}

/// [`foreground_pca_rgb`] with the first component of all the patches given (`first`).
fn foreground_of(images: &[(&[f32], (usize, usize))], dim: usize, first: &Pca) -> Vec<Vec<u8>> {
    let mut scores: Vec<Vec<f64>> = images
        .iter()
        .map(|(features, _)| features.chunks(dim).map(|r| first.score(r, 0)).collect())
        .collect();
    let border: Vec<f64> = images
        .iter()
        .zip(&scores)
        .flat_map(|((_, (rows, cols)), s)| {
            s.iter().enumerate().filter_map(move |(i, v)| {
                let (r, c) = (i / cols, i % cols);
                (r == 0 || c == 0 || r + 1 == *rows || c + 1 == *cols).then_some(*v)
            })
        })
        .collect();
    if border.iter().sum::<f64>() > 0.0 {
        scores.iter_mut().flatten().for_each(|v| *v = -*v);
    }
    let foreground: Vec<&[f32]> = images
        .iter()
        .zip(&scores)
        .flat_map(|((features, _), s)| {
            features
                .chunks(dim)
                .zip(s)
                .filter(|(_, v)| **v > 0.0)
                .map(|(row, _)| row)
        })
        .collect();
    let Some(second) = Pca::fit(foreground.iter().copied(), dim, 3) else {
        return black(images);
    };
    let mut colours = coloured(&second, &foreground).into_iter();
    scores
        .iter()
        .map(|s| {
            s.iter()
                .flat_map(|v| {
                    if *v > 0.0 {
                        colours.next().unwrap_or([0; 3])
                    } else {
                        [0; 3]
                    }
                })
                .collect()
        })
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
