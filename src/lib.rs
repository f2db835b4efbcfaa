//! dinoscope: DINO self-distillation (Caron et al. 2021) on burn, with the loss decomposed
//! into teacher entropy and KL so collapse can be watched live.
//!
//! The training library is [`trainer::Trainer`]; see ARCHITECTURE.md for the module map and
//! the path of one step.

pub mod activation;
pub mod app;
pub mod attention;
pub mod augment;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod datasets;
pub mod device;
pub mod dino;
pub mod ema;
pub mod eval;
pub mod export;
pub mod figure;
pub mod inference;
pub mod model;
pub mod optim;
pub mod run;
pub mod schedule;
pub mod trainer;
pub mod weights;
pub mod worker;
