//! `y = x·W + b` over host buffers, forward and backward (the op around it:
//! `model::fused::linear`), for either weight layout.
//!
//! burn runs it as a matmul into a zero-filled buffer that its CPU backend then copies to an
//! aligned one, plus a separate bias add; its backward does the same for each product and
//! sums the bias gradient as another op. Here the output starts as the bias rows (one write)
//! and `gemm` accumulates `x·W` onto it; the backward computes `dx = dy·Wᵀ` and
//! `dW = xᵀ·dy` straight into fresh buffers, with `W` and `x` read transposed through their
//! strides, and `db` as column sums by fixed row blocks added in block order.

use super::matmul::{matmul_parallel, Strided};
use super::{out_ptr, vectorized, written};
use rayon::prelude::*;

/// Rows per partial sum of `db`.
const ROWS_PER_BLOCK: usize = 256;

/// How the weight is stored.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WeightLayout {
    /// `[d_in, d_out]`: burn's `Linear`.
    InOut,
    /// `[d_out, d_in]`: PyTorch's.
    OutIn,
}

/// The sizes of one call: `x` is `[rows, d_in]`, `W` holds `d_in × d_out` as `layout` says.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    pub rows: usize,
    pub d_in: usize,
    pub d_out: usize,
    pub layout: WeightLayout,
}

impl Sizes {
    /// Strides of `W`'s (input, output) indices: W(i, o) is at `i·si + o·so`.
    fn weight_strides(&self) -> (isize, isize) {
        match self.layout {
            WeightLayout::InOut => (self.d_out as isize, 1),
            WeightLayout::OutIn => (1, self.d_in as isize),
        }
    }

    pub fn weight_shape(&self) -> Vec<usize> {
        match self.layout {
            WeightLayout::InOut => vec![self.d_in, self.d_out],
            WeightLayout::OutIn => vec![self.d_out, self.d_in],
        }
    }

    /// Panics unless `x` (when given) is `[rows, d_in]`, `w` holds `d_in × d_out` and `dy`
    /// (when given) is `[rows, d_out]`: what the strided products below read.
    fn check(&self, x: Option<&[f32]>, w: Option<&[f32]>, dy: Option<&[f32]>) {
        let fits = |values: Option<&[f32]>, len: usize| values.is_none_or(|v| v.len() == len);
        assert!(
            fits(x, self.rows * self.d_in),
            "linear: x is not [rows, d_in]"
        );
        assert!(
            fits(w, self.d_in * self.d_out),
            "linear: W is not d_in × d_out"
        );
        assert!(
            fits(dy, self.rows * self.d_out),
            "linear: dy is not [rows, d_out]"
        );
    }
}

/// `y = x·W (+ b)`, `[rows, d_out]`.
pub fn forward(x: &[f32], w: &[f32], b: Option<&[f32]>, sizes: Sizes) -> Vec<f32> {
    let Sizes {
        rows, d_in, d_out, ..
    } = sizes;
    sizes.check(Some(x), Some(w), None);
    assert!(
        b.is_none_or(|b| b.len() == d_out),
        "linear: b is not [d_out]"
    );
    let (si, so) = sizes.weight_strides();
    let w = Strided {
        ptr: w.as_ptr(),
        row: si,
        col: so,
    };
    // SAFETY: (`written`) with a bias every row is first written with it; gemm then writes
    // (or, onto the bias, accumulates into) every element of the `rows × d_out` output.
    // (`matmul_parallel`) `x` is `[rows, d_in]` and `y` `[rows, d_out]`, row-major, and `w`
    // holds d_in × d_out at the strides `(si, so)` (checked above); `y` is a fresh buffer.
    unsafe {
        written(rows * d_out, |y| {
            if let Some(b) = b {
                // The bias rows, on all threads; gemm adds the product onto them.
                y.par_chunks_mut(ROWS_PER_BLOCK * d_out).for_each(|block| {
                    for row in block.chunks_exact_mut(d_out) {
                        for (out, &bias) in row.iter_mut().zip(b) {
                            out.write(bias);
                        }
                    }
                });
            }
            matmul_parallel(
                (rows, d_out, d_in),
                Strided::rows(out_ptr(y), d_out),
                b.is_some(),
                Strided::rows(x.as_ptr(), d_in),
                w,
                1.0,
            );
        })
    }
}

/// `dx = dy·Wᵀ` (`[rows, d_in]`).
pub fn grad_input(dy: &[f32], w: &[f32], sizes: Sizes) -> Vec<f32> {
    let Sizes {
        rows, d_in, d_out, ..
    } = sizes;
    sizes.check(None, Some(w), Some(dy));
    let (si, so) = sizes.weight_strides();
    let w_t = Strided {
        ptr: w.as_ptr(),
        row: so,
        col: si,
    };
    // SAFETY: gemm writes every element of the fresh `[rows, d_in]` output; `dy` is
    // `[rows, d_out]`; Wᵀ's (o, i) is `w[i·si + o·so]`, inside `w`.
    unsafe {
        written(rows * d_in, |dx| {
            matmul_parallel(
                (rows, d_in, d_out),
                Strided::rows(out_ptr(dx), d_in),
                false,
                Strided::rows(dy.as_ptr(), d_out),
                w_t,
                1.0,
            )
        })
    }
}

/// `dW = xᵀ·dy`, in the weight's layout.
pub fn grad_weight(x: &[f32], dy: &[f32], sizes: Sizes) -> Vec<f32> {
    let Sizes {
        rows, d_in, d_out, ..
    } = sizes;
    sizes.check(Some(x), None, Some(dy));
    let (si, so) = sizes.weight_strides();
    // SAFETY: gemm writes every element of the fresh output (zeros when `rows` is 0), in
    // the weight's own layout, inside its d_in × d_out elements; xᵀ's (i, r) is
    // `x[r·d_in + i]`, inside `x`; `dy` is `[rows, d_out]`.
    unsafe {
        written(d_in * d_out, |dw| {
            let dw = Strided {
                ptr: out_ptr(dw),
                row: si,
                col: so,
            };
            matmul_parallel(
                (d_in, d_out, rows),
                dw,
                false,
                Strided::transposed(x.as_ptr(), d_in),
                Strided::rows(dy.as_ptr(), d_out),
                1.0,
            )
        })
    }
}

/// `db = Σ_rows dy` (`[d_out]`), by fixed blocks of rows added in block order.
pub fn grad_bias(dy: &[f32], d_out: usize) -> Vec<f32> {
    let block = ROWS_PER_BLOCK * d_out;
    let partials: Vec<Vec<f32>> = dy
        .par_chunks(block)
        .map(|rows| {
            vectorized(
                #[inline(always)]
                || {
                    let mut sum = vec![0.0f32; d_out];
                    for row in rows.chunks_exact(d_out) {
                        for (s, v) in sum.iter_mut().zip(row) {
                            *s += v;
                        }
                    }
                    sum
                },
            )
        })
        .collect();
    let mut total = vec![0.0f32; d_out];
    for partial in &partials {
        for (t, v) in total.iter_mut().zip(partial) {
            *t += v;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::on_threads;

    /// Small integers: every product and sum is exact, so the kernels must match bit for bit.
    fn matrix(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 5 + seed) % 7) as f32 - 3.0)
            .collect()
    }

    /// Small enough for Miri: both weight layouts, with and without bias, every product read
    /// through its strides, against the definition.
    #[test]
    fn forward_and_gradients_match_the_definition_in_both_layouts() {
        let (rows, d_in, d_out) = (4, 3, 5);
        let (x, dy) = (matrix(rows * d_in, 1), matrix(rows * d_out, 2));
        let (w_in_out, b) = (matrix(d_in * d_out, 3), matrix(d_out, 4));
        // The same weight stored [d_out, d_in].
        let w_out_in: Vec<f32> = (0..d_out * d_in)
            .map(|j| w_in_out[(j % d_in) * d_out + j / d_in])
            .collect();
        let weight = |i: usize, o: usize| w_in_out[i * d_out + o];
        for (layout, w) in [
            (WeightLayout::InOut, &w_in_out),
            (WeightLayout::OutIn, &w_out_in),
        ] {
            let sizes = Sizes {
                rows,
                d_in,
                d_out,
                layout,
            };
            for bias in [Some(&b[..]), None] {
                let y = forward(&x, w, bias, sizes);
                for r in 0..rows {
                    for o in 0..d_out {
                        let dot: f32 = (0..d_in).map(|i| x[r * d_in + i] * weight(i, o)).sum();
                        let want = dot + bias.map_or(0.0, |b| b[o]);
                        assert_eq!(y[r * d_out + o], want, "{layout:?} y[{r}, {o}]");
                    }
                }
            }
            let dx = grad_input(&dy, w, sizes);
            let dw = grad_weight(&x, &dy, sizes);
            for r in 0..rows {
                for i in 0..d_in {
                    let want: f32 = (0..d_out).map(|o| dy[r * d_out + o] * weight(i, o)).sum();
                    assert_eq!(dx[r * d_in + i], want, "{layout:?} dx[{r}, {i}]");
                }
            }
            for i in 0..d_in {
                for o in 0..d_out {
                    let want: f32 = (0..rows).map(|r| x[r * d_in + i] * dy[r * d_out + o]).sum();
                    let at = match layout {
                        WeightLayout::InOut => i * d_out + o,
                        WeightLayout::OutIn => o * d_in + i,
                    };
                    assert_eq!(dw[at], want, "{layout:?} dW[{i}, {o}]");
                }
            }
        }
        // No rows: gemm's k = 0 still writes every element of the fresh dW (zeros).
        let empty = Sizes {
            rows: 0,
            d_in,
            d_out,
            layout: WeightLayout::OutIn,
        };
        assert_eq!(grad_weight(&[], &[], empty), vec![0.0; d_in * d_out]);
        let db = grad_bias(&dy, d_out);
        for (o, total) in db.iter().enumerate() {
            assert_eq!(*total, (0..rows).map(|r| dy[r * d_out + o]).sum::<f32>());
        }
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "7 000 rows; the small case above covers the code under Miri"
    )]
    fn bias_gradient_does_not_depend_on_the_thread_count() {
        let dy: Vec<f32> = (0..1000 * 7)
            .map(|i| ((i * 13) % 17) as f32 * 0.37)
            .collect();
        let run = |threads: usize| on_threads(threads, || grad_bias(&dy, 7));
        assert_eq!(run(1), run(4));
    }
}
