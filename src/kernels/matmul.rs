//! Matrix products over raw, strided operands through `gemm`: the one place the kernels hand
//! pointers to code that trusts them.

use rayon::prelude::*;

/// A matrix operand read or written in place: element (i, j) at `ptr + i·row + j·col`.
#[derive(Clone, Copy)]
pub(super) struct Strided<P> {
    pub ptr: P,
    pub row: isize,
    pub col: isize,
}

impl<P> Strided<P> {
    /// Rows `row` elements apart, columns adjacent.
    pub(super) fn rows(ptr: P, row: usize) -> Self {
        Self {
            ptr,
            row: row as isize,
            col: 1,
        }
    }

    /// The transpose of [`Strided::rows`]: element (i, j) at `ptr + j·row + i`.
    pub(super) fn transposed(ptr: P, row: usize) -> Self {
        Self {
            ptr,
            row: 1,
            col: row as isize,
        }
    }
}

/// `dst ← scale · lhs · rhs` (`m × k` times `k × n`), or `dst + scale · lhs · rhs` with
/// `accumulate`.
///
/// # Safety
/// Every element (i, j) within each operand's extent (dst `m × n`, lhs `m × k`, rhs `k × n`)
/// at its strides must lie inside the allocation its pointer came from, and `dst` must not
/// overlap `lhs` or `rhs`.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: Strided<*mut f32>,
    accumulate: bool,
    lhs: Strided<*const f32>,
    rhs: Strided<*const f32>,
    scale: f32,
    parallelism: gemm::Parallelism,
) {
    // SAFETY: the caller's contract is gemm's.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.ptr,
            dst.col,
            dst.row,
            accumulate,
            lhs.ptr,
            lhs.col,
            lhs.row,
            rhs.ptr,
            rhs.col,
            rhs.row,
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Below this many multiply-adds one product runs on one thread (burn's CPU backend uses the
/// same threshold): splitting a small product costs more than it saves.
const PARALLEL_MULTIPLY_ADDS: usize = 192 * 192 * 192;

/// Products with fewer rows than this split their columns over the threads themselves.
const SHORT_ROWS: usize = 256;

/// [`matmul`] on all threads when it is large enough. gemm splits a tall product over its
/// threads itself; a short, wide one (the head's 80 rows × 2048 or 65 536 columns) it left
/// mostly to one thread (measured: half of PyTorch's GFLOP/s), so there each thread takes one
/// block of columns.
///
/// # Safety
/// As [`matmul`].
pub(super) unsafe fn matmul_parallel(
    (m, n, k): (usize, usize, usize),
    dst: Strided<*mut f32>,
    accumulate: bool,
    lhs: Strided<*const f32>,
    rhs: Strided<*const f32>,
    scale: f32,
) {
    let threads = rayon::current_num_threads();
    let size = (m, n, k);
    if m.saturating_mul(n).saturating_mul(k) < PARALLEL_MULTIPLY_ADDS {
        // SAFETY: the caller's contract.
        return unsafe {
            matmul(
                size,
                dst,
                accumulate,
                lhs,
                rhs,
                scale,
                gemm::Parallelism::None,
            )
        };
    }
    if m >= SHORT_ROWS || threads < 2 {
        let parallelism = gemm::Parallelism::Rayon(0);
        // SAFETY: the caller's contract.
        return unsafe { matmul(size, dst, accumulate, lhs, rhs, scale, parallelism) };
    }
    // SAFETY: the caller's contract.
    unsafe { matmul_by_columns(size, dst, accumulate, lhs, rhs, scale, threads) }
}

/// [`matmul`] with the columns split over `threads` tasks, each single-threaded on its own
/// block of columns (a multiple of 16 wide, the last one narrower).
///
/// # Safety
/// As [`matmul`].
unsafe fn matmul_by_columns(
    (m, n, k): (usize, usize, usize),
    dst: Strided<*mut f32>,
    accumulate: bool,
    lhs: Strided<*const f32>,
    rhs: Strided<*const f32>,
    scale: f32,
    threads: usize,
) {
    /// The operands, shared by the column tasks: each writes its own columns of `dst` and
    /// only reads the others.
    struct Operands {
        dst: Strided<*mut f32>,
        lhs: Strided<*const f32>,
        rhs: Strided<*const f32>,
    }
    // SAFETY: the tasks write disjoint column blocks of `dst` and read `lhs`, `rhs`, which
    // the caller keeps alive and unaliased by `dst` for the whole call.
    unsafe impl Sync for Operands {}
    let operands = Operands { dst, lhs, rhs };
    let columns = n.div_ceil(threads.max(1)).next_multiple_of(16);
    (0..n.div_ceil(columns)).into_par_iter().for_each(|block| {
        let Operands { dst, lhs, rhs } = &operands;
        let first = block * columns;
        let width = columns.min(n - first);
        let dst = Strided {
            ptr: dst.ptr.wrapping_offset(first as isize * dst.col),
            ..*dst
        };
        let rhs = Strided {
            ptr: rhs.ptr.wrapping_offset(first as isize * rhs.col),
            ..*rhs
        };
        // SAFETY: columns `first .. first + width` of the caller's `dst` and `rhs` (inside
        // their extents), all rows of `lhs`.
        unsafe {
            matmul(
                (m, width, k),
                dst,
                accumulate,
                *lhs,
                rhs,
                scale,
                gemm::Parallelism::None,
            )
        };
    });
}

/// How `gemm` may use threads inside one task: the tasks themselves run in parallel, so the
/// products run single-threaded unless there are fewer tasks than threads.
pub(super) fn gemm_parallelism(tasks: usize) -> gemm::Parallelism {
    if tasks >= rayon::current_num_threads() {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::on_threads;

    /// `lhs · rhs` by the definition, for `m × k` and `k × n` row-major matrices.
    fn naive(lhs: &[f32], rhs: &[f32], (m, n, k): (usize, usize, usize)) -> Vec<f32> {
        let mut out = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| lhs[i * k + p] * rhs[p * n + j]).sum();
            }
        }
        out
    }

    /// Small integers: every product and sum is exact, so any order gives the same bits.
    fn matrix(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7 + seed) % 9) as f32 - 4.0)
            .collect()
    }

    #[test]
    fn strided_products_read_rows_columns_and_transposes_in_place() {
        let (m, n, k) = (5, 7, 3);
        let (lhs, rhs) = (matrix(m * k, 1), matrix(k * n, 2));
        let want = naive(&lhs, &rhs, (m, n, k));
        // Row-major operands into a row-major output, scaled by 2 and accumulated onto 1s.
        let mut out = vec![1.0f32; m * n];
        // SAFETY: lhs is m × k, rhs k × n and out m × n, each row-major in its own buffer.
        unsafe {
            matmul(
                (m, n, k),
                Strided::rows(out.as_mut_ptr(), n),
                true,
                Strided::rows(lhs.as_ptr(), k),
                Strided::rows(rhs.as_ptr(), n),
                2.0,
                gemm::Parallelism::None,
            )
        };
        let expected: Vec<f32> = want.iter().map(|v| 1.0 + 2.0 * v).collect();
        assert_eq!(out, expected);
        // The transpose of the product, written through transposed strides: outᵀ = rhsᵀ lhsᵀ
        // with both inputs read transposed in place.
        let mut transposed = vec![0.0f32; n * m];
        // SAFETY: rhsᵀ (n × k) reads rhs's k × n elements, lhsᵀ (k × m) lhs's m × k, and the
        // n × m output stays inside its buffer.
        unsafe {
            matmul(
                (n, m, k),
                Strided::rows(transposed.as_mut_ptr(), m),
                false,
                Strided::transposed(rhs.as_ptr(), n),
                Strided::transposed(lhs.as_ptr(), k),
                1.0,
                gemm::Parallelism::None,
            )
        };
        for i in 0..m {
            for j in 0..n {
                assert_eq!(transposed[j * m + i], want[i * n + j], "({i}, {j})");
            }
        }
    }

    /// The column split (each task its own block of columns, the last one narrower) gives
    /// the product, on strided operands: a transposed lhs and an output with a row gap.
    #[test]
    fn a_product_split_by_columns_matches_the_definition() {
        let (m, n, k) = (2, 40, 3);
        let (lhs, rhs) = (matrix(m * k, 3), matrix(k * n, 4));
        let want = naive(&lhs, &rhs, (m, n, k));
        let lhs_t: Vec<f32> = (0..k * m).map(|i| lhs[(i % m) * k + i / m]).collect();
        // Rows of 43: three columns of padding that no task may touch.
        let mut out = vec![-1.0f32; m * 43];
        // SAFETY: lhsᵀ holds k × m elements read as its transpose, rhs k × n, and out's m rows
        // of 43 hold the m × n extent; 40 columns over 3 tasks: blocks of 16, 16 and 8.
        on_threads(3, || unsafe {
            matmul_by_columns(
                (m, n, k),
                Strided::rows(out.as_mut_ptr(), 43),
                false,
                Strided::transposed(lhs_t.as_ptr(), m),
                Strided::rows(rhs.as_ptr(), n),
                1.0,
                3,
            )
        });
        for (i, row) in out.chunks_exact(43).enumerate() {
            assert_eq!(row[..n], want[i * n..(i + 1) * n], "row {i}");
            assert_eq!(row[n..], [-1.0; 3], "row {i}'s padding");
        }
    }

    /// A short, wide product above the threshold takes the column split on several threads
    /// and gemm's own call on one; both give the product.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "8 M multiply-adds; the split itself is checked small above"
    )]
    fn a_short_wide_product_on_any_thread_count_matches_the_definition() {
        // 3 × 2000 × 1300 multiply-adds: above the threshold, fewer rows than `SHORT_ROWS`.
        let (m, n, k) = (3, 2000, 1300);
        let (lhs, rhs) = (matrix(m * k, 3), matrix(k * n, 4));
        let want = naive(&lhs, &rhs, (m, n, k));
        let product = || {
            let mut out = vec![0.0f32; m * n];
            // SAFETY: lhs is m × k, rhs k × n and out m × n, each row-major in its own buffer.
            unsafe {
                matmul_parallel(
                    (m, n, k),
                    Strided::rows(out.as_mut_ptr(), n),
                    false,
                    Strided::rows(lhs.as_ptr(), k),
                    Strided::rows(rhs.as_ptr(), n),
                    1.0,
                )
            };
            out
        };
        assert_eq!(on_threads(3, product), want);
        assert_eq!(on_threads(1, product), want);
    }
}
