//! Training: the `Engine` both front ends drive, the `Trainer` it owns (one DINO step), and the
//! pieces of a step: the loss and its decomposition, the schedules, AdamW, the EMA teacher,
//! and the representation readings taken from the teacher's outputs.

pub mod cross_entropy;
mod diagnosis;
pub mod ema;
pub mod engine;
pub mod guard;
pub mod koleo;
pub mod loss;
pub mod optim;
pub mod probe;
pub mod rank_probe;
pub mod representation;
mod resume;
pub mod schedule;
pub mod sinkhorn;
pub mod study;
pub mod trainer;
pub mod watch;
pub mod watch_checks;
pub mod watch_engine;
pub mod watch_settings;

pub use engine::{CheckpointPolicy, Engine, EngineEvent};
pub use trainer::*;
