//! The momentum teacher: θ_t ← λ·θ_t + (1 − λ)·θ_s over every parameter of backbone and head,
//! matched by module path so it never depends on parameter ids.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::container::TensorContainer;

/// Collects the student's parameters (without autodiff) keyed by their module path.
struct Collect {
    params: TensorContainer<String>,
    path: Vec<String>,
}

impl ModuleVisitor for Collect {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.params
            .register(self.path.join("."), param.val().without_autodiff());
    }
}

/// Blends each teacher parameter with the student's at the same path.
struct Blend {
    student: TensorContainer<String>,
    path: Vec<String>,
    momentum: f64,
    missing: Vec<String>,
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
        let Some(student) = self.student.remove::<Tensor<D>>(&key) else {
            self.missing.push(key);
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

/// Returns the updated teacher. Errors list parameters present in one model only.
pub fn ema_update<M: Module>(teacher: M, student: &M, momentum: f64) -> Result<M, String> {
    let mut collect = Collect {
        params: TensorContainer::new(),
        path: Vec::new(),
    };
    student.visit(&mut collect);
    let mut blend = Blend {
        student: collect.params,
        path: Vec::new(),
        momentum,
        missing: Vec::new(),
    };
    let teacher = teacher.map(&mut blend);
    if blend.missing.is_empty() {
        Ok(teacher)
    } else {
        Err(format!(
            "teacher parameters missing in the student: {}",
            blend.missing.join(", ")
        ))
    }
}
