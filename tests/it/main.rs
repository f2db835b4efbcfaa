//! The one integration-test crate (each file directly in tests/ would link all of burn again).

mod app_signals;
mod attention;
mod bad_input;
mod bad_input_watch;
mod checkpoint;
mod cli;
mod dinov2_v3;
mod drop_gui;
mod faults;
mod fuzz;
mod golden;
mod gui;
mod gui_support;
mod layers;
mod layers_attention;
mod layers_gui;
mod readme;
mod step_parity;
mod study;
mod study_gui;
mod training;
mod verdict;
mod watch;
mod watch_gui;
mod worker;
