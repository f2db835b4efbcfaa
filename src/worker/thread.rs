//! The worker thread: owns the current run's `Engine`, applies `Command`s between steps and
//! turns `EngineEvent`s into `Event`s. Plain data in and out; no egui.

use super::{AttentionSettings, Command, DeviceSource, Event, RunId, Waker, WorkerStatus};
use crate::config::{Config, Toggle};
use crate::device::{select_device, SelectedDevice};
use crate::train::engine::{CheckpointPolicy, Engine, EngineEvent, ResumedFrom};
use crate::train::TrainError;
use burn::module::Module;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::path::PathBuf;
use std::time::Duration;

mod study;

struct ActiveRun {
    id: RunId,
    engine: Engine,
    paused: bool,
}

pub(super) struct Worker {
    commands: Receiver<Command>,
    events: Sender<Event>,
    waker: Waker,
    device: DeviceSource,
    run: Option<ActiveRun>,
    attention: AttentionSettings,
    checkpoints: CheckpointPolicy,
    /// An ablation study in progress (instead of a single run).
    study: Option<study::ActiveStudy>,
}

enum Flow {
    Continue,
    Exit,
}

impl Worker {
    pub(super) fn new(
        commands: Receiver<Command>,
        events: Sender<Event>,
        waker: Waker,
        device: DeviceSource,
    ) -> Self {
        Self {
            commands,
            events,
            waker,
            device,
            run: None,
            attention: AttentionSettings::default(),
            checkpoints: CheckpointPolicy::default(),
            study: None,
        }
    }

    fn emit(&self, event: Event) -> bool {
        // Blocking send: if the UI falls far behind, training waits instead of dropping data.
        let ok = self.events.send(event).is_ok();
        (self.waker)();
        ok
    }

    fn status(&self, status: WorkerStatus) {
        let run_id = self.run.as_ref().map(|r| r.id);
        self.emit(Event::Status { run_id, status });
    }

    pub(super) fn run(mut self) {
        self.status(WorkerStatus::Idle);
        loop {
            let stepping = self.run.as_ref().is_some_and(|r| !r.paused)
                || self.study.as_ref().is_some_and(|s| !s.paused);
            // Idle or paused: sleep on the command queue. Running: only take what is queued.
            let command = if stepping {
                self.commands.try_recv().ok()
            } else {
                match self.commands.recv_timeout(Duration::from_millis(200)) {
                    Ok(command) => Some(command),
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            };
            if let Some(command) = command {
                if let Flow::Exit = self.handle(command) {
                    return;
                }
                continue;
            }
            if self.commands.is_empty() && stepping {
                if self.study.is_some() {
                    self.step_study();
                } else {
                    self.step_once();
                }
            }
        }
    }

    /// Long: one arm per command.
    fn handle(&mut self, command: Command) -> Flow {
        match command {
            Command::Start {
                run_id,
                config,
                run_dir,
                total_steps,
                paused,
            } => self.start(run_id, *config, run_dir, total_steps, paused),
            Command::Pause => {
                if self.pause_study(true) {
                    // The study's arms pause together.
                    return Flow::Continue;
                }
                if let Some(run) = &mut self.run {
                    run.paused = true;
                    self.status(WorkerStatus::Paused);
                }
            }
            Command::Resume => {
                if self.pause_study(false) {
                    // The study's arms pause together.
                    return Flow::Continue;
                }
                if let Some(run) = &mut self.run {
                    run.paused = false;
                    self.status(WorkerStatus::Running);
                }
            }
            Command::Step => {
                if let Some(run) = &mut self.run {
                    run.paused = true;
                    self.step_once();
                    if self.run.is_some() {
                        self.status(WorkerStatus::Paused);
                    }
                }
            }
            Command::Stop => {
                self.stop_study();
                if self.run.is_some() {
                    self.finish_run(WorkerStatus::Finished);
                }
            }
            Command::ResumeFrom {
                run_id,
                path,
                paused,
            } => self.resume(run_id, &path, paused),
            Command::SaveRunTo(dir) => {
                if let Some(run) = &mut self.run {
                    let run_id = run.id;
                    match run.engine.save_to(&dir) {
                        Ok(checkpoint) => {
                            self.emit(Event::CheckpointSaved {
                                path: checkpoint,
                                elapsed_secs: 0.0,
                            });
                            self.emit(Event::Warning(format!(
                                "the run is saved in {} again (config, every row, a checkpoint); Resume continues",
                                dir.display()
                            )));
                        }
                        Err(message) => self.fail_save(run_id, message),
                    }
                }
            }
            Command::InjectFault(fault) => {
                if let Some(run) = &mut self.run {
                    run.engine.inject_fault(fault);
                }
            }
            Command::SaveCheckpoint => {
                if let Some(run) = &self.run {
                    let event = run.engine.checkpoint_event();
                    self.forward(run.id, vec![event]);
                }
            }
            Command::SetCheckpointing {
                every_steps,
                keep_last,
            } => {
                self.checkpoints = CheckpointPolicy {
                    every_steps,
                    keep_last: keep_last.max(1),
                };
                if let Some(run) = &mut self.run {
                    run.engine.set_checkpoint_policy(self.checkpoints);
                }
            }
            Command::Set(toggle) => self.set(toggle),
            Command::SetAttention(settings) => {
                self.attention = AttentionSettings {
                    every_steps: settings.every_steps.max(1),
                    ..settings
                };
                // Show the new images at once, not only at the next multiple of the period.
                if let Some(step) = self.run.as_ref().map(|r| r.engine.trainer().steps_done()) {
                    self.emit_attention(step.saturating_sub(1));
                }
            }
            Command::StartStudy { spec, dir, run_ids } => self.start_study(*spec, dir, run_ids),
            Command::Similarity { image, at } => self.similarity(image, at),
            Command::Shutdown => {
                self.stop_study();
                if self.run.is_some() {
                    self.finish_run(WorkerStatus::Finished);
                }
                return Flow::Exit;
            }
        }
        Flow::Continue
    }

    /// Ends the current run and announces the new one as starting; the device it will use.
    fn begin(&mut self, run_id: RunId) -> Option<SelectedDevice> {
        self.stop_study();
        if self.run.is_some() {
            self.finish_run(WorkerStatus::Finished);
        }
        self.emit(Event::Status {
            run_id: Some(run_id),
            status: WorkerStatus::Starting,
        });
        match self.selected_device() {
            Ok(selected) => Some(selected),
            Err(err) => {
                self.fail(run_id, err);
                None
            }
        }
    }

    fn start(
        &mut self,
        run_id: RunId,
        config: Config,
        run_dir: Option<PathBuf>,
        total_steps: Option<usize>,
        paused: bool,
    ) {
        let Some(selected) = self.begin(run_id) else {
            return;
        };
        match Engine::start(config, selected.device, total_steps, run_dir.as_deref()) {
            Ok((engine, events)) => {
                self.activate(run_id, engine, selected.description, None, events, paused)
            }
            Err(err) => self.fail(run_id, format!("cannot start training: {err}")),
        }
    }

    fn resume(&mut self, run_id: RunId, path: &std::path::Path, paused: bool) {
        let Some(selected) = self.begin(run_id) else {
            return;
        };
        match Engine::resume(path, selected.device) {
            Ok((engine, resumed, events)) => self.activate(
                run_id,
                engine,
                selected.description,
                Some(resumed),
                events,
                paused,
            ),
            Err(err) => self.fail(
                run_id,
                format!("cannot resume from {}: {err}", path.display()),
            ),
        }
    }

    /// Announces a started (or resumed) engine and makes it the current run.
    fn activate(
        &mut self,
        run_id: RunId,
        mut engine: Engine,
        device: String,
        resumed: Option<ResumedFrom>,
        events: Vec<EngineEvent>,
        paused: bool,
    ) {
        engine.set_checkpoint_policy(self.checkpoints);
        match crate::train::guard::Fault::from_env() {
            Ok(fault) => engine.inject_fault(fault),
            Err(message) => {
                self.emit(Event::Warning(message));
            }
        }
        self.emit(Event::started(run_id, engine.run_start(device)));
        if let Some(resumed) = resumed {
            self.emit(Event::Resumed {
                run_id,
                checkpoint: resumed.checkpoint,
                first_step: resumed.first_step,
                history: resumed.history,
            });
            self.emit(Event::EvalHistory {
                run_id,
                rows: resumed.evals,
            });
        }
        // No folder to write to from the start: held, as when one is lost mid-run.
        let paused = paused
            || events
                .iter()
                .any(|e| matches!(e, EngineEvent::StorageLost(_)));
        self.forward(run_id, events);
        self.run = Some(ActiveRun {
            id: run_id,
            engine,
            paused,
        });
        self.status(if paused {
            WorkerStatus::Paused
        } else {
            WorkerStatus::Running
        });
    }

    /// Engine events as UI events.
    fn forward(&self, run_id: RunId, events: Vec<EngineEvent>) {
        for event in events {
            self.emit(match event {
                EngineEvent::Marker { step, toggle } => Event::Marker {
                    run_id,
                    step,
                    label: toggle.label(),
                    toggle,
                },
                EngineEvent::Metrics(metrics) => Event::Metrics { run_id, metrics },
                EngineEvent::Eval(evaluation) => Event::Eval { run_id, evaluation },
                EngineEvent::CheckpointSaved { path, elapsed_secs } => {
                    Event::CheckpointSaved { path, elapsed_secs }
                }
                EngineEvent::Warning(message) => Event::Warning(message),
                EngineEvent::StorageLost(message) => Event::StorageLost { run_id, message },
            });
        }
    }

    fn selected_device(&self) -> Result<SelectedDevice, String> {
        match &self.device {
            DeviceSource::Ready(selected) => Ok(selected.clone()),
            DeviceSource::Choice(choice) => select_device(*choice).map_err(|e| e.to_string()),
        }
    }

    /// Saving elsewhere failed: the run stays paused in memory, and the user can pick again.
    fn fail_save(&self, run_id: RunId, message: String) {
        self.emit(Event::StorageLost {
            run_id,
            message: format!("cannot save the run there either: {message}"),
        });
    }

    fn fail(&mut self, run_id: RunId, message: String) {
        self.emit(Event::Error(message));
        self.emit(Event::Status {
            run_id: Some(run_id),
            status: WorkerStatus::Failed,
        });
    }

    fn set(&mut self, toggle: Toggle) {
        let Some(run) = &mut self.run else {
            // Nothing is running: the UI keeps the value for the next Start.
            return;
        };
        if let Err(err) = run.engine.apply(toggle) {
            self.emit(Event::Error(err.to_string()));
        }
    }

    fn step_once(&mut self) {
        let Some(run) = &mut self.run else { return };
        if run.engine.is_done() {
            self.finish_run(WorkerStatus::Finished);
            return;
        }
        let run_id = run.id;
        match run.engine.step() {
            Ok(events) => {
                let step = events.iter().find_map(|event| match event {
                    EngineEvent::Metrics(metrics) => Some(metrics.step),
                    _ => None,
                });
                let storage_lost = events
                    .iter()
                    .any(|e| matches!(e, EngineEvent::StorageLost(_)));
                self.forward(run_id, events);
                if storage_lost {
                    // Nothing more can be saved there: hold the run until it has a new home.
                    if let Some(run) = &mut self.run {
                        run.paused = true;
                    }
                    self.status(WorkerStatus::Paused);
                    return;
                }
                if let Some(step) = step {
                    if step % self.attention.every_steps == 0 {
                        self.emit_attention(step);
                    }
                }
            }
            Err(TrainError::NonFinite { step, what, value }) => {
                // Nothing the run keeps was touched: pause instead of ending it.
                let settings = run.engine.trainer().live().describe();
                if let Some(run) = &mut self.run {
                    run.paused = true;
                }
                self.emit(Event::Halted {
                    run_id,
                    step,
                    message: format!(
                        "Paused: non-finite {} ({value}) at step {step}; the step was discarded and the run is at its last good state. Settings then: {settings}. Lower the lr scale (or the teacher temperature) and press Resume, or Save checkpoint / Resume run... an earlier one.",
                        what.describe()
                    ),
                });
                self.status(WorkerStatus::Paused);
            }
            Err(err) => {
                // A lost device (or a failed kernel) cannot go on here; the run's newest
                // checkpoint is untouched, and Resume run… continues it on any device.
                let resume = run.engine.run_dir().and_then(|dir| {
                    let (step, _) = crate::store::checkpoint::list_checkpoints(dir).pop()?;
                    Some(format!(
                        ". The checkpoint of step {step} is intact: Resume run… with {} continues from it (on the CPU if the GPU is gone)",
                        dir.display()
                    ))
                });
                self.emit(Event::Error(format!("{err}{}", resume.unwrap_or_default())));
                self.finish_run(WorkerStatus::Failed);
            }
        }
    }

    /// Computes the chosen network's attention for the followed images (one forward each).
    fn emit_attention(&mut self, step: usize) {
        let Some(run) = &self.run else { return };
        if self.attention.images.is_empty() {
            return;
        }
        let trainer = run.engine.trainer();
        let (backbone, size) = followed_network(trainer, &self.attention);
        let backbone = &backbone;
        let device = trainer.device();
        let network = self.attention.network;
        // All images in one call: the foreground PCA is fitted across them.
        let found = crate::analysis::layers::maps_of_images(
            backbone,
            self.attention
                .images
                .iter()
                .map(|img| (&*img.image, size.resolve(img.image.dimensions()))),
            device,
            self.attention.layer,
            true,
        );
        let maps: Vec<(String, crate::analysis::attention::AttentionMaps)> = self
            .attention
            .images
            .iter()
            .zip(found)
            .filter_map(|(img, maps)| maps.map(|maps| (img.name.clone(), maps)))
            .collect();
        for (name, map) in &maps {
            if let Some(img) = self.attention.images.iter().find(|i| &i.name == name) {
                let picture = crate::store::tensorboard::attention_picture(&img.image, map);
                run.engine
                    .log_image(step, &format!("attention/{name}"), &picture);
            }
        }
        let run_id = run.id;
        self.emit(Event::Attention {
            run_id,
            step,
            network,
            maps,
        });
    }

    /// The patch inspector on the current run's chosen network.
    fn similarity(&mut self, image: usize, at: (u32, u32)) {
        let Some(run) = &self.run else {
            self.emit(Event::Warning(
                "the patch inspector needs a training run: press Start".into(),
            ));
            return;
        };
        let trainer = run.engine.trainer();
        let (backbone, size) = followed_network(trainer, &self.attention);
        let backbone = &backbone;
        let images: Vec<(String, &image::RgbImage)> = self
            .attention
            .images
            .iter()
            .map(|i| (i.name.clone(), i.image.as_ref()))
            .collect();
        let result = crate::analysis::tokens::similarity_across(
            backbone,
            &images,
            |img| size.resolve(img.dimensions()),
            image,
            at,
            trainer.device(),
        );
        match result {
            Some(similarity) => self.emit(Event::Similarity(Box::new(similarity))),
            None => self.emit(Event::Warning(
                "no patch there: click inside the image".into(),
            )),
        };
    }

    fn finish_run(&mut self, status: WorkerStatus) {
        if let Some(run) = self.run.take() {
            let (_, events) = run.engine.finish(status == WorkerStatus::Finished);
            self.forward(run.id, events);
            self.emit(Event::Status {
                run_id: Some(run.id),
                status,
            });
        }
    }
}

/// The network the attention view follows (the student as its inner module: it lives on the
/// autodiff device and needs no graph here; the teacher a cheap handle copy) and the size its
/// maps are computed at (default: the training crop as the short side).
fn followed_network(
    trainer: &crate::train::trainer::Trainer,
    settings: &AttentionSettings,
) -> (
    crate::model::VisionTransformer,
    crate::analysis::attention::ImageSize,
) {
    let crop = trainer.config().data.global_crop_size;
    let size = settings
        .size
        .unwrap_or(crate::analysis::attention::ImageSize::ShortSide(crop));
    let backbone = match settings.network {
        crate::store::weights::Network::Teacher => trainer.teacher().backbone.clone(),
        crate::store::weights::Network::Student => trainer.student().backbone.valid(),
    };
    (backbone, size)
}
