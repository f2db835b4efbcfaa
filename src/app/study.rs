//! The UI's plain state of an ablation study: which runs are its arms, their finished rows and
//! masks, and the files written at the end. No widgets here (see `study_view`).

use super::state::{AppState, Level, RunRecord};
use crate::config::study::StudySpec;
use crate::store::rows::StudyRow;
use crate::worker::RunId;
use image::RgbImage;
use std::path::PathBuf;
use std::sync::Arc;

/// One arm as the comparison view shows it.
#[derive(Clone, Debug)]
pub struct StudyArmState {
    pub run_id: RunId,
    pub name: String,
    pub description: String,
    /// The overrides that make this arm (empty: the base).
    pub change: Vec<String>,
    /// Set when the arm has finished.
    pub row: Option<StudyRow>,
    pub overlay: Option<Arc<RgbImage>>,
}

/// The comparison files, once the study ended.
#[derive(Clone, Debug, PartialEq)]
pub struct StudyOutputs {
    pub written: Vec<PathBuf>,
    pub skipped: Vec<String>,
    /// Every arm trained to the end (not stopped).
    pub complete: bool,
}

#[derive(Clone, Debug)]
pub struct StudyState {
    pub name: String,
    pub dir: PathBuf,
    pub arms: Vec<StudyArmState>,
    pub outputs: Option<StudyOutputs>,
}

impl StudyState {
    pub fn finished_arms(&self) -> usize {
        self.arms.iter().filter(|arm| arm.row.is_some()).count()
    }
}

impl AppState {
    /// Registers one run per variant (named after it, its directory under `dir`) and makes
    /// the first the current run; returns their ids in the study's order.
    pub fn begin_study(&mut self, spec: &StudySpec, dir: PathBuf) -> Vec<RunId> {
        let mut arms = Vec::new();
        for (index, variant) in spec.variants.iter().enumerate() {
            let id = self.next_run_id;
            self.next_run_id += 1;
            let mut run = RunRecord::new(
                id,
                variant.name.clone(),
                Some(dir.join(&variant.name)),
                self.view,
            );
            // Each arm its own tint on the shared plots.
            run.colour_index = index;
            self.runs.push(run);
            arms.push(StudyArmState {
                run_id: id,
                name: variant.name.clone(),
                description: variant.description.clone(),
                change: variant.set.clone(),
                row: None,
                overlay: None,
            });
        }
        self.current = arms.first().map(|arm| arm.run_id);
        self.attention_history.clear();
        self.distance_history.clear();
        let ids = arms.iter().map(|arm| arm.run_id).collect();
        self.study = Some(StudyState {
            name: spec.name.clone(),
            dir,
            arms,
            outputs: None,
        });
        ids
    }

    pub(super) fn study_arm_done(
        &mut self,
        run_id: RunId,
        row: StudyRow,
        overlay: Option<Arc<RgbImage>>,
    ) {
        let Some(study) = &mut self.study else { return };
        if let Some(arm) = study.arms.iter_mut().find(|arm| arm.run_id == run_id) {
            arm.row = Some(row);
            arm.overlay = overlay;
        }
    }

    pub(super) fn study_finished(
        &mut self,
        dir: PathBuf,
        written: Vec<PathBuf>,
        skipped: Vec<String>,
        complete: bool,
    ) {
        let (level, text) = if written.is_empty() {
            (
                Level::Warning,
                format!("study ended without a comparison: {}", skipped.join("; ")),
            )
        } else if complete {
            (
                Level::Info,
                format!(
                    "study done: {} (study.md, study.csv, figures)",
                    dir.display()
                ),
            )
        } else {
            (
                Level::Warning,
                format!(
                    "study stopped; the finished variants are compared in {}",
                    dir.display()
                ),
            )
        };
        self.message(level, text);
        if let Some(study) = &mut self.study {
            study.outputs = Some(StudyOutputs {
                written,
                skipped,
                complete,
            });
        }
    }
}
