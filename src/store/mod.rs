//! Everything on disk: run directories and their CSV rows, checkpoints, imported weights,
//! `.npy` arrays and figures.

pub mod checkpoint;
pub mod cut_back;
pub mod figure;
pub mod npy;
pub mod official_args;
pub mod official_run;
pub mod quantity;
pub mod report;
pub mod rows;
pub mod run;
pub mod soak_figure;
pub mod study;
pub mod tail;
pub mod tensorboard;
pub mod timelapse;
pub mod weights;
