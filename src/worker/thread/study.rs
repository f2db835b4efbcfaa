//! The worker's ablation study: every arm's `Engine` steps in turn (the arm with the fewest
//! steps next), so all the curves grow together on screen; each arm is a run of its own id.

use super::{Event, RunId, Worker, WorkerStatus};
use crate::config::study::StudySpec;
use crate::device::host_cpu_description;
use crate::train::engine::EngineEvent;
use crate::train::study::Study;
use crate::train::TrainError;
use std::path::PathBuf;
use std::sync::Arc;

pub(super) struct ActiveStudy {
    pub(super) study: Study,
    pub(super) run_ids: Vec<RunId>,
    pub(super) paused: bool,
    device: String,
}

impl Worker {
    /// Ends the current run, builds every arm (so each is announced with its step count)
    /// and starts stepping.
    pub(super) fn start_study(&mut self, spec: StudySpec, dir: PathBuf, run_ids: Vec<RunId>) {
        if self.run.is_some() {
            self.finish_run(WorkerStatus::Finished);
        }
        self.stop_study();
        let selected = match self.selected_device() {
            Ok(selected) => selected,
            Err(err) => return self.fail_study(&run_ids, err),
        };
        if run_ids.len() != spec.variants.len() {
            return self.fail_study(&run_ids, "internal: one run id per variant".into());
        }
        let mut study = match Study::new(spec, &dir, selected.device) {
            Ok(study) => study,
            Err(err) => return self.fail_study(&run_ids, format!("cannot start the study: {err}")),
        };
        for (index, &run_id) in run_ids.iter().enumerate() {
            self.emit(Event::Status {
                run_id: Some(run_id),
                status: WorkerStatus::Starting,
            });
            match study.start_arm(index) {
                Ok(events) => {
                    if let Some(engine) = study.engine(index) {
                        let start = engine.run_start(selected.description.clone());
                        self.emit(Event::started(run_id, start));
                    }
                    self.forward(run_id, events);
                    self.emit(Event::Status {
                        run_id: Some(run_id),
                        status: WorkerStatus::Running,
                    });
                }
                Err(err) => {
                    study.stop();
                    let name = &study.arms()[index].variant.name;
                    return self
                        .fail_study(&run_ids, format!("cannot start variant {name}: {err}"));
                }
            }
        }
        self.study = Some(ActiveStudy {
            study,
            run_ids,
            paused: false,
            device: selected.description,
        });
        self.emit(Event::Status {
            run_id: None,
            status: WorkerStatus::Running,
        });
    }

    /// One step of the arm that is furthest behind; a finished arm is announced with its row.
    pub(super) fn step_study(&mut self) {
        let Some(active) = &mut self.study else {
            return;
        };
        let Some(index) = active.study.next_interleaved() else {
            return self.end_study(true);
        };
        let run_id = active.run_ids[index];
        match active.study.step(index) {
            Ok(events) => {
                let lost = events
                    .iter()
                    .any(|e| matches!(e, EngineEvent::StorageLost(_)));
                let outcome = active.study.arms()[index].outcome.clone();
                self.forward(run_id, events);
                if let Some(outcome) = outcome {
                    self.emit(Event::StudyArmDone {
                        run_id,
                        row: Box::new(outcome.row),
                        overlay: outcome.overlay.map(Arc::new),
                    });
                    self.emit(Event::Status {
                        run_id: Some(run_id),
                        status: WorkerStatus::Finished,
                    });
                }
                if lost {
                    // The study folder is gone or full: the comparison cannot be written.
                    self.end_study(false);
                }
            }
            Err(err) => {
                let name = active.study.arms()[index].variant.name.clone();
                let message = match err {
                    TrainError::NonFinite { .. } => {
                        format!(
                            "variant {name}: {err} The study stopped; the other arms are saved."
                        )
                    }
                    _ => format!("variant {name} failed: {err}; the study stopped"),
                };
                self.emit(Event::Error(message));
                self.emit(Event::Status {
                    run_id: Some(run_id),
                    status: WorkerStatus::Failed,
                });
                self.end_study(false);
            }
        }
    }

    /// Pause (`true`) or continue the study; false when there is none.
    pub(super) fn pause_study(&mut self, paused: bool) -> bool {
        let Some(active) = &mut self.study else {
            return false;
        };
        active.paused = paused;
        self.status(if paused {
            WorkerStatus::Paused
        } else {
            WorkerStatus::Running
        });
        true
    }

    /// Stop: the arms still training keep a checkpoint; the finished ones are compared.
    pub(super) fn stop_study(&mut self) {
        if self.study.is_some() {
            self.end_study(false);
        }
    }

    /// Saves the arms still training, writes the comparison of the finished ones and tells the
    /// UI where it is.
    fn end_study(&mut self, complete: bool) {
        let Some(mut active) = self.study.take() else {
            return;
        };
        for (index, events) in active.study.stop() {
            let run_id = active.run_ids[index];
            self.forward(run_id, events);
            self.emit(Event::Status {
                run_id: Some(run_id),
                status: WorkerStatus::Finished,
            });
        }
        let dir = active.study.dir.clone();
        let (written, skipped) = if active.study.rows().is_empty() {
            (
                Vec::new(),
                vec!["no variant finished: nothing to compare".to_string()],
            )
        } else {
            let machine = format!("{} · {}", active.device, host_cpu_description());
            match active.study.write_outputs(&machine) {
                Ok(files) => (files.written, files.skipped),
                Err(err) => (Vec::new(), vec![err.to_string()]),
            }
        };
        self.emit(Event::StudyFinished {
            dir,
            written,
            skipped,
            complete,
        });
        self.emit(Event::Status {
            run_id: None,
            status: WorkerStatus::Finished,
        });
    }

    fn fail_study(&mut self, run_ids: &[RunId], message: String) {
        self.emit(Event::Error(message));
        for &run_id in run_ids {
            self.emit(Event::Status {
                run_id: Some(run_id),
                status: WorkerStatus::Failed,
            });
        }
    }
}
