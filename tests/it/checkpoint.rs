//! Checkpoints: a resumed run continues exactly like an uninterrupted one on the CPU backend,
//! an interrupted write never hides the previous checkpoint, and foreign or damaged
//! checkpoints are refused with a message naming the file.

use crate::worker::micro_config;
use burn::prelude::Device;
use dinoscope::config::{CenteringMode, Toggle};
use dinoscope::store::checkpoint::{list_checkpoints, resolve_checkpoint, write_checkpoint};
use dinoscope::store::rows::MetricsRow;
use dinoscope::train::trainer::Trainer;

/// Everything but the wall-clock columns.
fn comparable(m: &MetricsRow) -> Vec<f64> {
    vec![
        m.step as f64,
        m.epoch as f64,
        m.loss,
        m.teacher_entropy,
        m.kl,
        m.batch_mean_entropy,
        m.lr,
        m.weight_decay,
        m.teacher_momentum,
        m.teacher_temp,
        m.local_crops as f64,
        m.centering as u8 as f64,
    ]
}

fn config() -> dinoscope::config::Config {
    let mut config = micro_config();
    // Depth 2 with drop path on the student: the resumed random stream matters.
    config.model.depth = Some(2);
    config.model.drop_path_rate = 0.2;
    config.dino.local_crops_number = 2;
    // 8 batches per epoch: the 20 steps cross two epoch boundaries (teacher temperature
    // warm-up, last-layer freezing).
    config.optim.warmup_epochs = 1;
    config
}

const TOTAL: usize = 20;

fn run(trainer: &mut Trainer, steps: usize) -> Vec<Vec<f64>> {
    (0..steps)
        .map(|_| {
            if trainer.steps_done() == 4 {
                trainer
                    .apply(&Toggle::Centering(CenteringMode::Off))
                    .unwrap();
                trainer.apply(&Toggle::LrScale(2.0)).unwrap();
            }
            comparable(&trainer.step().unwrap())
        })
        .collect()
}

#[test]
fn resumed_run_equals_the_uninterrupted_run() {
    let device = Device::flex();
    let mut straight = Trainer::new(config(), device.clone(), Some(TOTAL)).unwrap();
    let expected = run(&mut straight, TOTAL);

    let dir = tempfile::tempdir().unwrap();
    let mut first = Trainer::new(config(), device.clone(), Some(TOTAL)).unwrap();
    let mut got = run(&mut first, 11);
    let written = write_checkpoint(&first.snapshot().unwrap(), dir.path(), 2).unwrap();
    assert!(written.ends_with("checkpoint-00000011"));
    drop(first);

    let mut resumed = Trainer::resume(&resolve_checkpoint(dir.path()).unwrap(), device).unwrap();
    assert_eq!(resumed.steps_done(), 11);
    assert!(
        resumed.live().centering == CenteringMode::Off,
        "live toggles are part of the checkpoint"
    );
    got.extend(run(&mut resumed, TOTAL - 11));
    assert_eq!(got, expected);
}

#[test]
fn interrupted_writes_and_damaged_checkpoints_are_handled() {
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = Trainer::new(config(), device.clone(), Some(TOTAL)).unwrap();
    trainer.step().unwrap();
    write_checkpoint(&trainer.snapshot().unwrap(), dir.path(), 2).unwrap();
    trainer.step().unwrap();
    write_checkpoint(&trainer.snapshot().unwrap(), dir.path(), 2).unwrap();
    trainer.step().unwrap();
    write_checkpoint(&trainer.snapshot().unwrap(), dir.path(), 2).unwrap();
    let steps: Vec<usize> = list_checkpoints(dir.path())
        .iter()
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(steps, vec![2, 3], "keep the newest two");

    // A kill during a write leaves a temporary directory, or (if it happened between rename
    // and state) nothing newer: the newest complete checkpoint is still the one used.
    std::fs::create_dir(dir.path().join(".checkpoint-00000004.tmp")).unwrap();
    std::fs::create_dir(dir.path().join("checkpoint-00000005")).unwrap();
    let newest = resolve_checkpoint(dir.path()).unwrap();
    assert!(newest.ends_with("checkpoint-00000003"));
    assert_eq!(
        Trainer::resume(&newest, device.clone())
            .unwrap()
            .steps_done(),
        3
    );

    // Damaged state: the message names the file.
    let state = newest.join("state.toml");
    std::fs::write(&state, "format = 1\nstep = \"three\"\n").unwrap();
    let err = Trainer::resume(&newest, device.clone())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("state.toml"), "{err}");

    // Another architecture in the same run: refused, not a panic.
    let other = dir.path().join("checkpoint-00000002");
    let config_path = other.join("config.toml");
    let text = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(
        &config_path,
        text.replace("embed_dim = 16", "embed_dim = 32"),
    )
    .unwrap();
    let err = Trainer::resume(&other, device.clone())
        .err()
        .unwrap()
        .to_string();
    // Named in one line from the architecture state.toml records (issue 20 case 6)...
    assert!(
        err.contains("config.toml")
            && err.contains("checkpoint is vit_micro (16 wide")
            && err.contains("config says vit_micro (32 wide"),
        "{err}"
    );
    // ...and, in a checkpoint written before state.toml recorded it, by the weights file.
    let other_state = other.join("state.toml");
    let state_text = std::fs::read_to_string(&other_state).unwrap();
    let older: String = state_text
        .lines()
        .filter(|line| !line.starts_with("architecture"))
        .map(|line| format!("{line}\n"))
        .collect();
    std::fs::write(&other_state, older).unwrap();
    let err = Trainer::resume(&other, device.clone())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("student.bpk") || err.contains("teacher.bpk"),
        "{err}"
    );

    // A truncated optimiser file.
    let mut trainer = Trainer::new(config(), device.clone(), Some(TOTAL)).unwrap();
    trainer.step().unwrap();
    let fresh = write_checkpoint(&trainer.snapshot().unwrap(), &dir.path().join("b"), 1).unwrap();
    let optimizer = fresh.join("optimizer.bpk");
    let bytes = std::fs::read(&optimizer).unwrap();
    std::fs::write(&optimizer, &bytes[..bytes.len() / 3]).unwrap();
    let err = Trainer::resume(&fresh, device).err().unwrap().to_string();
    assert!(err.contains("optimizer.bpk"), "{err}");

    let empty = tempfile::tempdir().unwrap();
    let err = resolve_checkpoint(empty.path()).unwrap_err().to_string();
    assert!(err.contains("no complete checkpoint"), "{err}");
}
