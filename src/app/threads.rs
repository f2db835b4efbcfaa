//! The app's other threads, owned in one place: the training worker, the inference thread,
//! the watches (each a `worker::handle::ThreadHandle`) and the job runner; what they send is
//! drained here each frame within its budget.

use super::command::CommandSender;
use super::jobs::JobRunner;
use super::state::{AppState, Level};
use crate::worker::inference::{InferenceEvent, InferenceHandle};
use crate::worker::watch::WatchHandle;
use crate::worker::{Command, Event, Waker, WorkerHandle};
use std::time::Instant;

pub struct Threads {
    pub worker: Option<WorkerHandle>,
    /// Loads external weights and computes their maps off the UI thread.
    pub inference: Option<InferenceHandle>,
    /// Run folders followed on their own threads ("Watch run folder...").
    pub watches: Vec<WatchHandle>,
    pub jobs: JobRunner,
    /// Wakes the UI from the threads.
    pub waker: Waker,
    /// The device of loaded weights and of the watches' probes.
    pub inference_device: burn::prelude::Device,
    /// The loaded weights' maps were asked for while the inference queue was full.
    pub recompute_pending: bool,
}

impl Threads {
    /// The threads of a test or of a failed start: a CPU inference thread, no waking.
    pub fn new(worker: Option<WorkerHandle>, commands: &CommandSender) -> Self {
        let waker: Waker = std::sync::Arc::new(|| {});
        let device = burn::prelude::Device::flex();
        Self {
            worker,
            inference: InferenceHandle::spawn(device.clone(), waker.clone()).ok(),
            watches: Vec::new(),
            jobs: JobRunner::new(commands.clone(), waker.clone()),
            waker,
            inference_device: device,
            recompute_pending: false,
        }
    }

    /// The same inside eframe: threads that wake the UI, and the inference thread on `device`
    /// (eframe's GPU when it has one).
    pub fn with_waker(
        &mut self,
        waker: Waker,
        device: burn::prelude::Device,
        commands: &CommandSender,
    ) {
        self.jobs = JobRunner::new(commands.clone(), waker.clone());
        self.inference = InferenceHandle::spawn(device.clone(), waker.clone())
            .map_err(|err| tracing::warn!("no inference thread: {err}"))
            .ok();
        self.waker = waker;
        self.inference_device = device;
    }

    /// Sends to the training worker; a failure is said in the status line.
    pub fn send(&self, command: Command, state: &mut AppState) {
        let Some(worker) = &self.worker else {
            state.message(Level::Error, "the training thread is not running");
            return;
        };
        if let Err(err) = worker.send(command) {
            state.message(Level::Error, err);
        }
    }

    /// Applies the worker's pending events until `deadline`; `true` when one changed what the
    /// runs folder holds (a checkpoint, a run's end).
    pub fn drain_worker(&self, state: &mut AppState, deadline: Instant) -> bool {
        let Some(worker) = &self.worker else {
            return false;
        };
        let mut disk_changed = false;
        while Instant::now() < deadline {
            let Some(event) = worker.try_recv() else {
                break;
            };
            disk_changed |= matches!(event, Event::CheckpointSaved { .. } | Event::Status { .. });
            state.apply(event);
        }
        disk_changed
    }

    /// Applies the watches' pending events until `deadline`.
    pub fn drain_watches(&self, state: &mut AppState, deadline: Instant) {
        for watch in &self.watches {
            while Instant::now() < deadline {
                match watch.try_recv() {
                    Some(event) => state.apply(event),
                    None => break,
                }
            }
        }
    }

    /// What the inference thread sent since the last frame.
    pub fn inference_events(&self) -> Vec<InferenceEvent> {
        let Some(inference) = &self.inference else {
            return Vec::new();
        };
        std::iter::from_fn(|| inference.try_recv()).collect()
    }

    /// Joins every thread: the watches (at most one checkpoint evaluation), the worker (at most
    /// one step, then its final checkpoint) and the inference thread.
    pub fn shutdown(&mut self) {
        self.watches.clear();
        if let Some(mut worker) = self.worker.take() {
            worker.shutdown();
        }
        if let Some(mut inference) = self.inference.take() {
            inference.shutdown();
        }
    }
}
