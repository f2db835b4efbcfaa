//! The one integration-test crate (each file directly in tests/ would link all of burn again).

mod attention;
mod bad_input;
mod checkpoint;
mod cli;
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
mod recipe_parity;
mod step_parity;
mod study;
mod study_gui;
mod training;
mod watch;
mod watch_gui;
mod worker;
