//! The momentum teacher: θ_t ← λ·θ_t + (1 − λ)·θ_s over every parameter of backbone and head,
//! matched by module path so it never depends on parameter ids.

use crate::kernels;
use crate::model::fused::{flex, host, into_plain, unique_values_mut, values, Host};
use burn::backend::Flex;
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::container::TensorContainer;
use std::collections::HashSet;

/// Walks a model's float parameters, recording their module paths and, when `params` is
/// given, their values (without autodiff) under those paths.
struct Collect {
    params: Option<TensorContainer<String>>,
    paths: HashSet<String>,
    path: Vec<String>,
}

impl Collect {
    fn new(keep_values: bool) -> Self {
        Self {
            params: keep_values.then(TensorContainer::new),
            paths: HashSet::new(),
            path: Vec::new(),
        }
    }
}

impl ModuleVisitor for Collect {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let key = self.path.join(".");
        if let Some(params) = &mut self.params {
            params.register(key.clone(), param.val().without_autodiff());
        }
        self.paths.insert(key);
    }
}

/// Blends each teacher parameter with the student's at the same path.
struct Blend {
    student: TensorContainer<String>,
    path: Vec<String>,
    momentum: f64,
}

impl ModuleMapper for Blend {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let key = self.path.join(".");
        // `ema_update` checked the paths first; a parameter without a twin stays as it is.
        let Some(student) = self.student.remove::<Tensor<D>>(&key) else {
            return param;
        };
        let momentum = self.momentum;
        param.map(|teacher| {
            if momentum == 0.0 {
                // No momentum teacher: an exact copy of the student, not an approximation.
                student
            } else if momentum >= 1.0 {
                // The schedule ends at λ = 1: the teacher is frozen, exactly.
                teacher
            } else {
                blend(teacher, student, momentum)
            }
        })
    }
}

/// `(λ/(1−λ)·θt + θs)·(1−λ)`, into the teacher's own buffer when the teacher holds it alone,
/// where `λθt + (1−λ)θs` would allocate `(1−λ)θs`, a fresh 64 MiB for the paper head's last
/// layer each step. On the CPU backend it is one pass on all threads, rounding as the three
/// tensor ops do (each single-threaded there); elsewhere the three ops.
fn blend<const D: usize>(teacher: Tensor<D>, student: Tensor<D>, momentum: f64) -> Tensor<D> {
    let (scale, weight) = (momentum / (1.0 - momentum), 1.0 - momentum);
    let teacher = match blend_host(teacher, &student, scale as f32, weight as f32) {
        Ok(blended) => return blended,
        Err(teacher) => *teacher,
    };
    teacher.mul_scalar(scale).add(student).mul_scalar(weight)
}

/// [`blend`] over CPU buffers, or the teacher back where it does not apply.
fn blend_host<const D: usize>(
    teacher: Tensor<D>,
    student: &Tensor<D>,
    scale: f32,
    weight: f32,
) -> Result<Tensor<D>, Box<Tensor<D>>> {
    let (Some(Host::Plain(student)), true) = (host(student), student.dims() == teacher.dims())
    else {
        return Err(Box::new(teacher));
    };
    let mut teacher = into_plain(teacher)?;
    let student = values(&student);
    if let Some(in_place) = unique_values_mut(&mut teacher) {
        kernels::ema::blend(in_place, &student, scale, weight);
        return Ok(Tensor::from_primitive::<Flex>(teacher));
    }
    // Shared (a checkpoint's teacher still held elsewhere): a fresh buffer.
    let mut blended = values(&teacher).into_owned();
    kernels::ema::blend(&mut blended, &student, scale, weight);
    let shape = teacher.layout().shape().to_vec();
    Ok(Tensor::from_primitive::<Flex>(flex(blended, shape)))
}

/// The two models' parameters do not match; the teacher comes back untouched.
#[derive(Debug)]
pub struct EmaMismatch<M> {
    pub teacher: M,
    /// Teacher parameter paths the student lacks.
    pub missing: Vec<String>,
}

impl<M> std::fmt::Display for EmaMismatch<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "teacher parameters missing in the student: {}",
            self.missing.join(", ")
        )
    }
}

/// Returns the updated teacher. When a teacher parameter has no twin in the student, nothing
/// is updated and the error hands the teacher back, so a caller that moved it out loses nothing.
pub fn ema_update<M: Module>(teacher: M, student: &M, momentum: f64) -> Result<M, EmaMismatch<M>> {
    let mut from_student = Collect::new(true);
    student.visit(&mut from_student);
    let mut teacher_paths = Collect::new(false);
    teacher.visit(&mut teacher_paths);
    let mut missing: Vec<String> = teacher_paths
        .paths
        .difference(&from_student.paths)
        .cloned()
        .collect();
    if !missing.is_empty() {
        missing.sort();
        return Err(EmaMismatch { teacher, missing });
    }
    let mut blend = Blend {
        student: from_student.params.unwrap_or_default(),
        path: Vec::new(),
        momentum,
    };
    Ok(teacher.map(&mut blend))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fused::test_support::{bits, random};

    fn tensor(seed: u64, device: &Device) -> Tensor<2> {
        random(
            [(2 * kernels::ema::CHUNK_ELEMENTS + 24) / 8, 8],
            seed,
            1.0,
            device,
        )
    }

    /// The one-pass blend equals the three tensor ops bit for bit, in place (the teacher holds
    /// its buffer alone) and into a fresh buffer (the buffer is shared, and stays untouched).
    #[test]
    fn one_pass_blend_equals_the_tensor_ops_bit_for_bit() {
        let device = Device::flex();
        let momentum = 0.996;
        let (scale, weight) = (momentum / (1.0 - momentum), 1.0 - momentum);
        let student = tensor(2, &device);
        let want = bits(
            tensor(1, &device)
                .mul_scalar(scale)
                .add(student.clone())
                .mul_scalar(weight),
        );
        assert_eq!(
            bits(blend(tensor(1, &device), student.clone(), momentum)),
            want
        );
        let shared = tensor(1, &device);
        let keep = shared.clone();
        assert_eq!(bits(blend(shared, student, momentum)), want);
        assert_eq!(
            bits(keep),
            bits(tensor(1, &device)),
            "a shared teacher buffer is kept"
        );
        // The fused path applies to plain CPU tensors only.
        assert!(blend_host(tensor(1, &device), &tensor(2, &device), 1.0, 1.0).is_ok());
        let tracked = Device::flex().autodiff();
        let result = blend_host(tensor(1, &tracked), &tensor(2, &tracked), 1.0, 1.0);
        assert!(result.is_err());
    }
}
