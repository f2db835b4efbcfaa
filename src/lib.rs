//! dinoscope: DINO self-distillation (Caron et al. 2021) on burn, with the loss decomposed
//! into teacher entropy and KL so collapse can be watched live.
//!
//! Folders are layers; a folder may import the ones above it in this list, never below
//! (ARCHITECTURE.md, checked by a test):
//! `config`, `device`, `alloc` → `kernels` → `data` → `augment` → `model` → `analysis` →
//! `store` → `train` → `worker` → `app` (and the binary's `cli`). `unsafe` is denied
//! everywhere but in `kernels` (the hand-written host kernels) and `alloc` (Cargo.toml's
//! `[lints]`).

pub mod alloc;
pub mod analysis;
pub mod app;
pub mod augment;
pub mod config;
pub mod data;
pub mod device;
pub mod kernels;
pub mod model;
pub mod store;
pub mod train;
pub mod worker;
