//! The momentum teacher's blend over host buffers, in place (the update around it:
//! `train::ema`).

use super::vectorized;
use rayon::prelude::*;

/// Elements per parallel task.
pub const CHUNK_ELEMENTS: usize = 1 << 15;

/// `teacher[i] ← (teacher[i]·scale + student[i])·weight`, on all threads, rounding as the
/// three tensor ops `mul_scalar`, `add`, `mul_scalar` do (with `scale` = λ/(1−λ) and
/// `weight` = 1−λ it is λθt + (1−λ)θs).
pub fn blend(teacher: &mut [f32], student: &[f32], scale: f32, weight: f32) {
    teacher
        .par_chunks_mut(CHUNK_ELEMENTS)
        .zip(student.par_chunks(CHUNK_ELEMENTS))
        .for_each(|(t, s)| {
            vectorized(
                #[inline(always)]
                || {
                    for (t, &s) in t.iter_mut().zip(s) {
                        *t = (*t * scale + s) * weight;
                    }
                },
            )
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blends_every_element_in_the_ops_order() {
        let mut teacher: Vec<f32> = (0..37).map(|i| i as f32 * 0.3 - 5.0).collect();
        let student: Vec<f32> = (0..37).map(|i| ((i * 7) % 11) as f32 * 0.1).collect();
        let want: Vec<f32> = teacher
            .iter()
            .zip(&student)
            .map(|(t, s)| (t * 249.0 + s) * 0.004)
            .collect();
        blend(&mut teacher, &student, 249.0, 0.004);
        assert_eq!(teacher, want);
    }
}
