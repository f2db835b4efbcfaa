//! A `Trainer` to and from a checkpoint: [`Trainer::snapshot`] hands `store::checkpoint`
//! everything it writes, [`Trainer::resume`] rebuilds a trainer from what it reads, so the
//! checkpoint format lives in `store` alone and the step on the CPU backend continues exactly.

use super::trainer::{validate, TrainError, Trainer};
use crate::config::Config;
use crate::data::datasets::open_dataset;
use crate::store::checkpoint::{CheckpointError, Snapshot};
use crate::train::engine::CHECKPOINT_KEEP_LAST;
use crate::train::optim::build_optimizer;
use burn::prelude::*;
use std::path::Path;
use std::sync::atomic::Ordering;

impl Trainer {
    /// Continues a run from a checkpoint directory written by [`crate::store::checkpoint`]: models,
    /// optimiser state, center, step, live settings and random streams are restored and the
    /// loader starts at the next batch, so on the CPU backend the following steps equal those
    /// of an uninterrupted run.
    pub fn resume(checkpoint: &Path, device: Device) -> Result<Self, TrainError> {
        use crate::store::checkpoint::{read_checkpoint_state, restore, CheckpointFiles, Restored};
        let files = CheckpointFiles::in_dir(checkpoint);
        let state = read_checkpoint_state(checkpoint).map_err(TrainError::Checkpoint)?;
        let config =
            Config::from_file(&files.config).map_err(|err| TrainError::Checkpoint(err.into()))?;
        validate(&config)?;
        let now = config.architecture_line();
        if !state.architecture.is_empty() && state.architecture != now {
            return Err(TrainError::Checkpoint(
                crate::store::checkpoint::CheckpointError::Mismatch {
                    path: files.config.clone(),
                    what: format!(
                        "checkpoint is {}, config says {now}; restore the model and dino sections of this config.toml, or start a new run with the new architecture",
                        state.architecture
                    ),
                },
            ));
        }
        let dataset = open_dataset(&config)?;
        if dataset.describe() != state.dataset {
            return Err(TrainError::Checkpoint(
                crate::store::checkpoint::CheckpointError::Mismatch {
                    path: checkpoint.to_path_buf(),
                    what: format!(
                        "the data changed: the checkpoint was trained on \"{}\", the config now opens \"{}\"",
                        state.dataset,
                        dataset.describe()
                    ),
                },
            ));
        }
        let mut trainer =
            Self::build(config, device, Some(state.total_iters), dataset, state.step)?;
        let skeleton = Restored {
            student: trainer.student.clone(),
            teacher: trainer.teacher.clone(),
            optimizer: build_optimizer(
                trainer.weight_decay.clone(),
                trainer.config.optim.clip_grad,
            )
            .map_err(TrainError::Internal)?,
            center: vec![0.0; trainer.config.dino.out_dim],
            representation: Some(trainer.representation.export()),
        };
        let restored = restore(checkpoint, skeleton).map_err(TrainError::Checkpoint)?;
        trainer.student = restored.student;
        trainer.teacher = restored.teacher;
        trainer.optimizer = restored.optimizer;
        trainer.center = Tensor::from_data(
            TensorData::new(restored.center, [1, trainer.config.dino.out_dim]),
            &trainer.device,
        );
        trainer
            .local_crops_wanted
            .store(state.live.local_crops, Ordering::Relaxed);
        trainer.live = state.live;
        trainer.drop_path_rng = state.drop_path_rng.restore();
        trainer.step = state.step;
        if let Some(windows) = &restored.representation {
            trainer.representation.import(windows);
        }
        Ok(trainer)
    }

    /// Everything a checkpoint holds, for `store::checkpoint::write_checkpoint`.
    pub fn snapshot(&self) -> Result<Snapshot<'_>, CheckpointError> {
        use crate::store::checkpoint::{CheckpointState, RngState};
        let center: Vec<f32> = self
            .center
            .clone()
            .into_data_as::<f32>()
            .as_slice::<f32>()
            .map(<[f32]>::to_vec)
            .map_err(|err| CheckpointError::Write {
                path: "center.npy".into(),
                reason: format!("{err:?}"),
            })?;
        let representation = self.representation.export();
        Ok(Snapshot {
            student: &self.student,
            teacher: &self.teacher,
            optimizer: &self.optimizer,
            center,
            config: &self.config,
            state: CheckpointState {
                format: CheckpointState::FORMAT,
                step: self.step,
                epoch: self.epoch(),
                total_iters: self.total_iters,
                dataset: self.dataset_description.clone(),
                live: self.live.clone(),
                drop_path_rng: RngState::capture(&self.drop_path_rng),
                representation_rows_per_step: representation[0].rows_per_step.clone(),
                // Filled in by the engine, which owns the policy.
                checkpoint_every_steps: 0,
                keep_last: CHECKPOINT_KEEP_LAST,
                architecture: self.config.architecture_line(),
            },
            representation,
        })
    }
}

/// Which of the steps before `first_step` have no row (a torn or deleted row), said briefly.
pub(super) fn missing_steps(
    history: &[crate::store::rows::MetricsRow],
    first_step: usize,
) -> Option<String> {
    let mut have = vec![false; first_step];
    for row in history {
        if let Some(slot) = have.get_mut(row.step) {
            *slot = true;
        }
    }
    let missing: Vec<usize> = (0..first_step).filter(|&s| !have[s]).collect();
    match missing.as_slice() {
        [] => None,
        [one] => Some(format!("the row of step {one} is missing")),
        [first, .., last] => Some(format!(
            "{} rows between steps {first} and {last} are missing",
            missing.len()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::rows::MetricsRow;

    fn row(step: usize) -> MetricsRow {
        MetricsRow {
            step,
            ..MetricsRow::default()
        }
    }

    #[test]
    fn a_gap_in_the_history_is_named() {
        let full: Vec<MetricsRow> = (0..5).map(row).collect();
        assert_eq!(missing_steps(&full, 5), None);
        let torn: Vec<MetricsRow> = (0..4).map(row).collect();
        assert_eq!(
            missing_steps(&torn, 5).as_deref(),
            Some("the row of step 4 is missing")
        );
        let holes = vec![row(0), row(4)];
        assert_eq!(
            missing_steps(&holes, 5).as_deref(),
            Some("3 rows between steps 1 and 3 are missing")
        );
    }
}
