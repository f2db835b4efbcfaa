//! The momentum teacher: θ_t ← λ·θ_t + (1 − λ)·θ_s over every parameter of backbone and head,
//! matched by module path so it never depends on parameter ids.

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
                // (λ/(1−λ)·θt + θs)·(1−λ): every op writes into the teacher's own buffer when
                // the teacher holds it alone, where λθt + (1−λ)θs would allocate (1−λ)θs, a
                // fresh 64 MiB for the paper head's last layer each step.
                teacher
                    .mul_scalar(momentum / (1.0 - momentum))
                    .add(student)
                    .mul_scalar(1.0 - momentum)
            }
        })
    }
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
