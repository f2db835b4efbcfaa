//! The non-finite guard and the fault-injection switch.
//!
//! A step is checked twice before anything is written: the loss (and the teacher's entropy)
//! when its statistics are read, and the global gradient norm after the backward pass, before
//! the optimizer, the EMA and the center update. A failed check returns
//! [`TrainError::NonFinite`](super::TrainError::NonFinite) with the weights, the optimizer
//! state, the center and the step counter exactly as after the last good step, so the run can
//! be paused, changed and continued, or checkpointed and resumed.
//!
//! `DINOSCOPE_FAULT=nan-loss@STEP | nan-grad@STEP | device-lost@STEP | write-error@STEP` makes
//! a run fail that
//! way at that step (RELIABILITY.md), so each path is exercised the same way in tests and by
//! hand: a large lr scale alone does not reach NaN here (with clipping the tiny run slides into
//! uniform collapse instead).

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;

/// The environment variable of the fault-injection switch.
pub const FAULT_ENV: &str = "DINOSCOPE_FAULT";

/// What went non-finite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonFiniteKind {
    /// The teacher's output (its entropy is not finite): NaN weights or logits.
    TeacherOutput,
    Loss,
    /// The global gradient norm, after a finite loss (an overflow in the backward pass).
    Gradients,
}

impl NonFiniteKind {
    pub fn describe(self) -> &'static str {
        match self {
            NonFiniteKind::TeacherOutput => "teacher output",
            NonFiniteKind::Loss => "loss",
            NonFiniteKind::Gradients => "gradients",
        }
    }
}

/// An injected failure (tests and demos).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    NanLoss {
        step: usize,
    },
    NanGrad {
        step: usize,
    },
    DeviceLost {
        step: usize,
    },
    /// Appending that step's row fails as on a full disk (the engine's storage path).
    WriteError {
        step: usize,
    },
}

impl Fault {
    /// Parses `KIND@STEP`; the message names the variable and the accepted forms.
    pub fn parse(text: &str) -> Result<Self, String> {
        let usage = || {
            format!(
                "{FAULT_ENV}={text:?}: use nan-loss@STEP, nan-grad@STEP, device-lost@STEP or write-error@STEP"
            )
        };
        let (kind, step) = text.trim().split_once('@').ok_or_else(usage)?;
        let step: usize = step.trim().parse().map_err(|_| usage())?;
        match kind.trim() {
            "nan-loss" => Ok(Fault::NanLoss { step }),
            "nan-grad" => Ok(Fault::NanGrad { step }),
            "device-lost" => Ok(Fault::DeviceLost { step }),
            "write-error" => Ok(Fault::WriteError { step }),
            _ => Err(usage()),
        }
    }

    /// The fault the environment asks for; `Ok(None)` when the variable is unset or empty.
    pub fn from_env() -> Result<Option<Self>, String> {
        match std::env::var(FAULT_ENV) {
            Ok(text) if !text.trim().is_empty() => Self::parse(&text).map(Some),
            _ => Ok(None),
        }
    }
}

/// Sums the squared gradients of every parameter of `module` that has one.
struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    total: Option<Tensor<1>>,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.get::<D>(param.id) {
            let squared = grad.powf_scalar(2.0).sum();
            self.total = Some(match self.total.take() {
                Some(total) => total.add(squared),
                None => squared,
            });
        }
    }
}

/// The global L2 norm of the gradients (one read-back); 0 without gradients. NaN or ∞ when
/// any gradient is.
pub fn gradient_norm<M: Module>(module: &M, grads: &GradientsParams) -> f64 {
    let mut visitor = SquaredNorm { grads, total: None };
    module.visit(&mut visitor);
    let Some(total) = visitor.total else {
        return 0.0;
    };
    let data = total.into_data_as::<f32>();
    data.as_slice::<f32>()
        .ok()
        .and_then(|values| values.first().copied())
        .map_or(f64::NAN, |squared| f64::from(squared).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_and_bad_ones_name_the_variable() {
        assert_eq!(Fault::parse("nan-loss@5"), Ok(Fault::NanLoss { step: 5 }));
        assert_eq!(
            Fault::parse(" nan-grad @ 12 "),
            Ok(Fault::NanGrad { step: 12 })
        );
        assert_eq!(
            Fault::parse("device-lost@0"),
            Ok(Fault::DeviceLost { step: 0 })
        );
        assert_eq!(
            Fault::parse("write-error@7"),
            Ok(Fault::WriteError { step: 7 })
        );
        for bad in ["nan-loss", "nan-loss@x", "boom@3", "@3"] {
            let err = Fault::parse(bad).unwrap_err();
            assert!(
                err.contains("DINOSCOPE_FAULT") && err.contains("nan-loss@STEP"),
                "{err}"
            );
        }
    }
}
