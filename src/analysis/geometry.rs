//! Representation geometry of recent embeddings: the effective rank (RankMe, Garrido et al.
//! 2023), the singular-value spectrum with its near-zero directions (dimensional collapse,
//! Jing et al. 2022) and the std of ℓ2-normalised embeddings (SimSiam's collapse check).
//!
//! h(Pt) and KL see the two collapse modes of the DINO paper; these see the third, where the
//! outputs still look varied but the features span only a few directions. They are computed
//! on the host from a rolling window of the teacher's recent rows (one step's batch is far too
//! few rows for a stable rank). Each step adds its rows' Gram matrix `ZᵀZ` (kept per step, so
//! the oldest step leaves the window exactly); a reading sums them and takes the eigenvalues
//! of the `d × d` sum, whose square roots are the singular values of the window `Z`. Rows are
//! not centred, as in RankMe: a constant set has rank 1.

use std::collections::VecDeque;

/// Rows in the rolling window (the last steps' teacher embeddings): enough for a stable rank
/// of a 384-wide ViT-S, few enough that the window spans only the last tens of steps.
pub const WINDOW_ROWS: usize = 2048;

/// RankMe's ε, added to each normalised singular value before the entropy.
pub const RANKME_EPS: f64 = 1e-7;

/// A direction counts as collapsed when its singular value is below this fraction of the
/// largest (three orders of magnitude, the drop Jing et al. show for collapsed dimensions).
pub const NEAR_ZERO_FRACTION: f64 = 1e-3;

/// One reading of a window.
#[derive(Clone, Debug, PartialEq)]
pub struct Geometry {
    /// exp(entropy) of the normalised singular values: 1 (all rows on one line) ..= `dim`.
    pub effective_rank: f64,
    /// Singular values of the window, largest first.
    pub singular_values: Vec<f64>,
    /// Directions whose singular value is below [`NEAR_ZERO_FRACTION`] of the largest.
    pub near_zero: usize,
    /// Mean over dimensions of the std of the ℓ2-normalised rows: ≈ 1/√dim for isotropic
    /// embeddings, 0 when every row points the same way.
    pub std_normalized: f64,
    /// Rows the reading used.
    pub rows: usize,
    pub dim: usize,
}

/// A window's rows as a checkpoint stores them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WindowRows {
    pub dim: usize,
    pub rows_per_step: Vec<usize>,
    /// `[sum(rows_per_step), dim]`, row-major.
    pub values: Vec<f32>,
}

/// The sums one step contributes; kept so that step can leave the window exactly.
#[derive(Clone, Debug)]
struct Block {
    rows: usize,
    /// The rows themselves, kept so a checkpoint can hold the window (an exact resume).
    values: Vec<f32>,
    /// Upper triangle (row-major, `i <= j`) of `ZᵀZ` for this step's rows.
    gram: Vec<f64>,
    /// Per-dimension sums of the ℓ2-normalised rows and of their squares.
    sum: Vec<f64>,
    sum_sq: Vec<f64>,
}

/// The last [`WINDOW_ROWS`] (or `max_rows`) rows of `dim`-wide embeddings, as per-step sums.
#[derive(Clone, Debug)]
pub struct EmbeddingWindow {
    dim: usize,
    max_rows: usize,
    blocks: VecDeque<Block>,
}

impl EmbeddingWindow {
    pub fn new(dim: usize, max_rows: usize) -> Self {
        Self {
            dim,
            max_rows: max_rows.max(1),
            blocks: VecDeque::new(),
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Rows in the window now.
    pub fn rows(&self) -> usize {
        self.blocks.iter().map(|b| b.rows).sum()
    }

    /// Adds one step's rows (`values.len()` a multiple of `dim`, row-major); the oldest steps
    /// leave while the window holds more than `max_rows` (the newest step always stays).
    pub fn push(&mut self, values: &[f32]) {
        let d = self.dim;
        if d == 0 || values.len() < d {
            return;
        }
        let rows = values.len() / d;
        let mut block = Block {
            rows,
            values: values[..rows * d].to_vec(),
            gram: vec![0.0; d * (d + 1) / 2],
            sum: vec![0.0; d],
            sum_sq: vec![0.0; d],
        };
        let mut row64 = vec![0.0f64; d];
        for row in values.chunks_exact(d) {
            for (dst, &src) in row64.iter_mut().zip(row) {
                *dst = f64::from(src);
            }
            let mut offset = 0;
            for i in 0..d {
                let xi = row64[i];
                let tail = &row64[i..];
                for (g, &xj) in block.gram[offset..offset + tail.len()].iter_mut().zip(tail) {
                    *g += xi * xj;
                }
                offset += d - i;
            }
            // F.normalize's ε: a zero row stays zero.
            let norm = row64.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
            for ((s, sq), &x) in block.sum.iter_mut().zip(&mut block.sum_sq).zip(&row64) {
                let unit = x / norm;
                *s += unit;
                *sq += unit * unit;
            }
        }
        self.blocks.push_back(block);
        while self.blocks.len() > 1 && self.rows() > self.max_rows {
            self.blocks.pop_front();
        }
    }

    /// The window's rows (row-major) and how many each step added, oldest first.
    pub fn export(&self) -> WindowRows {
        WindowRows {
            dim: self.dim,
            rows_per_step: self.blocks.iter().map(|b| b.rows).collect(),
            values: self
                .blocks
                .iter()
                .flat_map(|b| b.values.iter().copied())
                .collect(),
        }
    }

    pub fn clear(&mut self) {
        self.blocks.clear();
    }

    /// Refills an empty window from [`EmbeddingWindow::export`]; `false` (and the window left
    /// empty) when the rows do not fit this window's width.
    pub fn import(&mut self, saved: &WindowRows) -> bool {
        self.blocks.clear();
        let total: usize = saved.rows_per_step.iter().sum();
        if saved.dim != self.dim || total * self.dim != saved.values.len() {
            return false;
        }
        let mut start = 0;
        for rows in &saved.rows_per_step {
            let end = start + rows * self.dim;
            self.push(&saved.values[start..end]);
            start = end;
        }
        true
    }

    /// The geometry of the rows in the window; `None` while it holds fewer than 2 rows.
    pub fn geometry(&self) -> Option<Geometry> {
        let d = self.dim;
        let rows = self.rows();
        if rows < 2 {
            return None;
        }
        let mut upper = vec![0.0; d * (d + 1) / 2];
        let mut sum = vec![0.0; d];
        let mut sum_sq = vec![0.0; d];
        for block in &self.blocks {
            add_into(&mut upper, &block.gram);
            add_into(&mut sum, &block.sum);
            add_into(&mut sum_sq, &block.sum_sq);
        }
        let singular_values = singular_values_from_gram(&symmetric_from_upper(&upper, d), d);
        let n = rows as f64;
        let std_normalized = sum
            .iter()
            .zip(&sum_sq)
            .map(|(s, sq)| {
                let mean = s / n;
                (sq / n - mean * mean).max(0.0).sqrt()
            })
            .sum::<f64>()
            / d as f64;
        Some(Geometry {
            effective_rank: effective_rank(&singular_values),
            near_zero: near_zero(&singular_values, rows),
            singular_values,
            std_normalized,
            rows,
            dim: d,
        })
    }
}

fn add_into(total: &mut [f64], part: &[f64]) {
    for (t, p) in total.iter_mut().zip(part) {
        *t += p;
    }
}

fn symmetric_from_upper(upper: &[f64], d: usize) -> Vec<f64> {
    let mut full = vec![0.0; d * d];
    let mut offset = 0;
    for i in 0..d {
        for j in i..d {
            let v = upper[offset + j - i];
            full[i * d + j] = v;
            full[j * d + i] = v;
        }
        offset += d - i;
    }
    full
}

/// Singular values of `Z` (largest first) from the `d × d` row-major `ZᵀZ`: square roots of
/// its eigenvalues (tiny negative ones from rounding count as 0).
pub fn singular_values_from_gram(gram: &[f64], d: usize) -> Vec<f64> {
    if d == 0 || gram.len() != d * d {
        return Vec::new();
    }
    let matrix = nalgebra::DMatrix::from_row_slice(d, d, gram);
    let mut values: Vec<f64> = matrix
        .symmetric_eigenvalues()
        .iter()
        .map(|&l| l.max(0.0).sqrt())
        .collect();
    values.sort_by(|a, b| b.total_cmp(a));
    values
}

/// RankMe: exp of the entropy of the singular values normalised to sum 1 (each plus ε).
/// 1 for a rank-one set, `n` for `n` equal singular values.
pub fn effective_rank(singular_values: &[f64]) -> f64 {
    let total: f64 = singular_values.iter().sum();
    if total <= 0.0 || !total.is_finite() {
        return 1.0;
    }
    let entropy: f64 = singular_values
        .iter()
        .map(|s| {
            let p = s / total + RANKME_EPS;
            -p * p.ln()
        })
        .sum();
    entropy.exp()
}

/// Directions below [`NEAR_ZERO_FRACTION`] of the largest singular value, among the first
/// min(rows, d): n rows span at most n directions, so the other d − n are zero by
/// construction and say nothing about the network.
pub fn near_zero(singular_values: &[f64], rows: usize) -> usize {
    let largest = singular_values.iter().copied().fold(0.0, f64::max);
    singular_values
        .iter()
        .take(rows)
        .filter(|&&s| s < NEAR_ZERO_FRACTION * largest)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn window_of(rows: &[Vec<f32>], dim: usize) -> Geometry {
        let mut window = EmbeddingWindow::new(dim, WINDOW_ROWS);
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        window.push(&flat);
        window.geometry().unwrap()
    }

    fn gaussian(rng: &mut ChaCha8Rng) -> f32 {
        // Box-Muller: two uniforms to one standard normal.
        let u: f64 = rng.random_range(1e-12..1.0);
        let v: f64 = rng.random_range(0.0..1.0);
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }

    #[test]
    fn identity_like_rows_have_full_rank() {
        let d = 16;
        let rows: Vec<Vec<f32>> = (0..d)
            .map(|i| (0..d).map(|j| if i == j { 1.0 } else { 0.0 }).collect())
            .collect();
        let g = window_of(&rows, d);
        assert!((g.effective_rank - d as f64).abs() < 1e-3, "{g:?}");
        assert_eq!(g.near_zero, 0);
        assert!(g.singular_values.iter().all(|s| (s - 1.0).abs() < 1e-9));
    }

    #[test]
    fn rank_r_data_has_rank_about_r() {
        let (d, r, n) = (32, 4, 512);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        // n rows in the span of r random orthogonal-ish directions with equal variance.
        let basis: Vec<Vec<f32>> = (0..r)
            .map(|k| (0..d).map(|j| if j % r == k { 1.0 } else { 0.0 }).collect())
            .collect();
        let rows: Vec<Vec<f32>> = (0..n)
            .map(|_| {
                let coef: Vec<f32> = (0..r).map(|_| gaussian(&mut rng)).collect();
                (0..d)
                    .map(|j| (0..r).map(|k| coef[k] * basis[k][j]).sum())
                    .collect()
            })
            .collect();
        let g = window_of(&rows, d);
        assert!((g.effective_rank - r as f64).abs() < 0.3, "{g:?}");
        assert_eq!(g.near_zero, d - r);
    }

    #[test]
    fn a_constant_set_has_rank_one_and_zero_spread() {
        let d = 8;
        let rows = vec![vec![0.5f32, -1.0, 2.0, 0.0, 1.0, 3.0, -2.0, 0.25]; 100];
        let g = window_of(&rows, d);
        assert!((g.effective_rank - 1.0).abs() < 1e-3, "{g:?}");
        assert_eq!(g.near_zero, d - 1);
        assert!(g.std_normalized < 1e-6, "{g:?}");
    }

    #[test]
    fn isotropic_gaussian_has_std_near_one_over_sqrt_d_and_rank_near_d() {
        let (d, n) = (64, 2048);
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let rows: Vec<Vec<f32>> = (0..n)
            .map(|_| (0..d).map(|_| gaussian(&mut rng)).collect())
            .collect();
        let g = window_of(&rows, d);
        let expected = 1.0 / (d as f64).sqrt();
        assert!(
            (g.std_normalized - expected).abs() < 0.05 * expected,
            "{g:?}"
        );
        // Finite-sample singular values spread (Marchenko-Pastur), so a little under d.
        assert!(g.effective_rank > 0.9 * d as f64, "{}", g.effective_rank);
    }

    /// The watcher's old probe: 32 rows of a ViT-S's 384-wide features. Random rows span 32
    /// directions; the other 352 are zero by construction and must not count as collapsed.
    /// With 2d rows, random features read close to d: the baseline behind
    /// `health::RANK_ROWS_PER_DIM`.
    #[test]
    fn fewer_rows_than_dimensions_cap_the_rank_without_near_zero_directions() {
        let d = 384;
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut rows_of = |n: usize| -> Vec<Vec<f32>> {
            (0..n)
                .map(|_| (0..d).map(|_| gaussian(&mut rng)).collect())
                .collect()
        };
        let few = window_of(&rows_of(32), d);
        assert_eq!(few.near_zero, 0, "{:?}", few.singular_values);
        assert!(few.effective_rank <= 32.0, "{}", few.effective_rank);
        let (one_d, two_d) = (window_of(&rows_of(d), d), window_of(&rows_of(2 * d), d));
        // NumPy, 3 seeds: 0.80 d with d rows, 0.925 d with 2d rows, 0.966 d with 4d rows.
        assert!(
            two_d.effective_rank > 0.9 * d as f64,
            "{}",
            two_d.effective_rank
        );
        assert!(
            one_d.effective_rank < two_d.effective_rank,
            "{} {}",
            one_d.effective_rank,
            two_d.effective_rank
        );
    }

    #[test]
    fn the_window_keeps_the_newest_rows_only() {
        let d = 2;
        let mut window = EmbeddingWindow::new(d, 4);
        // Two steps along x, then two steps along y: only y is left in a 4-row window.
        window.push(&[1.0, 0.0, 1.0, 0.0]);
        window.push(&[2.0, 0.0, 2.0, 0.0]);
        window.push(&[0.0, 1.0, 0.0, 1.0]);
        window.push(&[0.0, 3.0, 0.0, 3.0]);
        let g = window.geometry().unwrap();
        assert_eq!(g.rows, 4);
        assert!((g.effective_rank - 1.0).abs() < 1e-3, "{g:?}");
        // A block bigger than the window is kept whole (the newest step always counts).
        window.push(&[1.0; 20]);
        assert_eq!(window.rows(), 10);
        assert!(EmbeddingWindow::new(3, 10).geometry().is_none());
    }

    #[test]
    fn an_exported_window_imports_to_the_same_readings() {
        let mut window = EmbeddingWindow::new(3, 8);
        for step in 0..6 {
            let x = step as f32;
            window.push(&[x, 1.0, -x, 0.5 * x, x * x, 1.0]);
        }
        let saved = window.export();
        assert_eq!(saved.rows_per_step, vec![2, 2, 2, 2]);
        let mut restored = EmbeddingWindow::new(3, 8);
        assert!(restored.import(&saved));
        assert_eq!(restored.geometry(), window.geometry());
        // Rows of another width are refused, not misread.
        assert!(!EmbeddingWindow::new(4, 8).import(&saved));
    }
}
