//! Training-loop behaviour on micro models: EMA, teacher/student separation, toggles,
//! determinism, and the two collapse modes of paper Fig. 7.

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use dinoscope::config::Config;
use dinoscope::config::{CenteringMode, Toggle};
use dinoscope::model::{DinoModel, VitArch, VitConfig};
use dinoscope::store::rows::MetricsRow;
use dinoscope::train::ema::ema_update;
use dinoscope::train::trainer::Trainer;

/// A model small enough that 150 steps take seconds on two cores.
fn micro_config(seed: u64) -> Config {
    let mut config = Config::preset("tiny").unwrap();
    config.seed = seed;
    config.model.embed_dim = Some(32);
    config.model.depth = Some(2);
    config.model.num_heads = Some(2);
    config.model.patch_size = 4;
    config.dino.out_dim = 64;
    config.dino.hidden_dim = 64;
    config.dino.bottleneck_dim = 32;
    config.dino.local_crops_number = 2;
    config.data.image_size = 32;
    config.data.global_crop_size = 16;
    config.data.local_crop_size = 8;
    config.data.num_images = 256;
    config.optim.batch_size_per_gpu = 32;
    config.optim.epochs = 20;
    config.optim.warmup_epochs = 1;
    // A sharper teacher and a higher lr than `tiny` so the three regimes separate clearly
    // within 150 steps (checked on seeds 0, 1, 2).
    config.optim.lr = 0.008;
    config.dino.teacher_temp = 0.02;
    config.dino.warmup_teacher_temp = 0.02;
    config
}

fn run(config: Config, steps: usize) -> (Trainer, Vec<MetricsRow>) {
    let mut trainer = Trainer::new(config, Device::flex(), Some(steps)).unwrap();
    let metrics = (0..steps).map(|_| trainer.step().unwrap()).collect();
    (trainer, metrics)
}

/// Mean of a metric over the last `n` steps (single steps are noisy).
fn tail_mean(metrics: &[MetricsRow], n: usize, f: impl Fn(&MetricsRow) -> f64) -> f64 {
    let tail = &metrics[metrics.len() - n..];
    tail.iter().map(f).sum::<f64>() / n as f64
}

#[derive(Default)]
struct Values {
    path: Vec<String>,
    values: Vec<(String, Vec<f32>)>,
}

impl ModuleVisitor for Values {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let data = param.val().without_autodiff().into_data_as::<f32>();
        self.values.push((
            self.path.join("."),
            data.as_slice::<f32>().unwrap().to_vec(),
        ));
    }
}

fn values<M: Module>(module: &M) -> Vec<(String, Vec<f32>)> {
    let mut v = Values::default();
    module.visit(&mut v);
    v.values
}

fn tiny_vit() -> VitConfig {
    VitConfig {
        arch: VitArch {
            embed_dim: 8,
            depth: 1,
            num_heads: 2,
        },
        patch_size: 4,
        img_size: 8,
        drop_path_rate: 0.0,
    }
}

#[test]
fn ema_update_follows_the_rule_on_every_parameter() {
    let device = Device::flex();
    let teacher = DinoModel::new(&tiny_vit(), 8, 4, 6, 1, &device);
    let student = DinoModel::new(&tiny_vit(), 8, 4, 6, 2, &device);
    let (t0, s0) = (values(&teacher), values(&student));
    let updated = ema_update(teacher, &student, 0.9).unwrap();
    let t1 = values(&updated);
    assert_eq!(t1.len(), t0.len());
    assert!(t1.iter().any(|(p, _)| p.contains("last_layer.weight_g")));
    for ((path, new), ((_, old), (_, s))) in t1.iter().zip(t0.iter().zip(&s0)) {
        for ((n, o), s) in new.iter().zip(old).zip(s) {
            assert!((n - (0.9 * o + 0.1 * s)).abs() < 1e-6, "{path}");
        }
    }
    // Momentum 0 = no momentum teacher: an exact copy.
    let copied = ema_update(updated, &student, 0.0).unwrap();
    assert_eq!(values(&copied), s0);
}

#[test]
fn ema_update_with_mismatched_models_hands_the_teacher_back_untouched() {
    let device = Device::flex();
    let mut deeper = tiny_vit();
    deeper.arch.depth = 2;
    let teacher = DinoModel::new(&deeper, 8, 4, 6, 1, &device);
    let student = DinoModel::new(&tiny_vit(), 8, 4, 6, 2, &device);
    let before = values(&teacher);
    let Err(mismatch) = ema_update(teacher, &student, 0.9) else {
        panic!("a teacher with an extra block must not be blended");
    };
    assert!(!mismatch.missing.is_empty());
    assert!(mismatch
        .missing
        .iter()
        .all(|path| path.contains("blocks.1")));
    assert!(mismatch.to_string().contains("blocks.1"));
    assert_eq!(values(&mismatch.teacher), before);
}

#[test]
fn teacher_starts_as_copy_and_stays_distinct_from_student() {
    let mut trainer = Trainer::new(micro_config(3), Device::flex(), Some(4)).unwrap();
    let paths_student: Vec<_> = values(trainer.student())
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    let paths_teacher: Vec<_> = values(trainer.teacher())
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert_eq!(paths_student, paths_teacher);
    assert_eq!(
        values(trainer.student()),
        values(trainer.teacher()),
        "exact copy at start"
    );
    let before = values(trainer.teacher());
    trainer.step().unwrap();
    let (student, teacher) = (values(trainer.student()), values(trainer.teacher()));
    assert_ne!(
        student, teacher,
        "an optimiser step must not move the teacher to the student"
    );
    assert_ne!(before, teacher, "the EMA moved the teacher");
    // The teacher moved by (1 - λ) of the student's move: it is strictly between.
    let m = trainer.schedules_at(0).2;
    for (((path, t1), (_, t0)), (_, s1)) in teacher.iter().zip(&before).zip(&student) {
        for ((a, b), c) in t1.iter().zip(t0).zip(s1) {
            assert!(
                (a - (m as f32 * b + (1.0 - m as f32) * c)).abs() < 1e-5,
                "{path}"
            );
        }
    }
}

#[test]
fn last_layer_frozen_in_first_epoch_and_weight_g_stays_one() {
    let mut config = micro_config(4);
    config.optim.freeze_last_layer = 1;
    let mut trainer = Trainer::new(config, Device::flex(), Some(40)).unwrap();
    let last = |t: &Trainer| {
        values(t.student())
            .into_iter()
            .filter(|(p, _)| p.contains("last_layer"))
            .collect::<Vec<_>>()
    };
    let start = last(&trainer);
    trainer.step().unwrap();
    trainer.step().unwrap();
    assert_eq!(last(&trainer), start, "frozen during epoch 0");
    while trainer.epoch() < 1 {
        trainer.step().unwrap();
    }
    trainer.step().unwrap();
    let after = last(&trainer);
    let (g, v) = (&after[0], &after[1]);
    assert!(
        g.0.ends_with("weight_g") && g.1.iter().all(|x| *x == 1.0),
        "norm_last_layer keeps g = 1"
    );
    assert_ne!(v.1, start[1].1, "weight_v trains after epoch 0");
}

#[test]
fn same_seed_same_metrics_and_loss_decomposes() {
    let (_, a) = run(micro_config(5), 3);
    let (_, b) = run(micro_config(5), 3);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.loss, y.loss);
        assert_eq!(x.teacher_entropy, y.teacher_entropy);
        assert!((x.loss - (x.teacher_entropy + x.kl)).abs() < 1e-9);
        assert!(x.kl > -1e-4);
    }
}

#[test]
fn toggles_apply_at_next_step() {
    let mut trainer = Trainer::new(micro_config(6), Device::flex(), Some(10)).unwrap();
    let first = trainer.step().unwrap();
    assert!(first.centering && first.sharpening);
    assert_eq!(first.teacher_temp, 0.02);
    trainer.apply(&Toggle::Sharpening(false)).unwrap();
    trainer
        .apply(&Toggle::Centering(CenteringMode::Off))
        .unwrap();
    trainer.apply(&Toggle::LrScale(0.5)).unwrap();
    trainer.apply(&Toggle::MomentumTeacher(0.0)).unwrap();
    let second = trainer.step().unwrap();
    assert!(!second.centering && !second.sharpening);
    assert_eq!(
        second.teacher_temp, 0.1,
        "no sharpening = student temperature"
    );
    assert_eq!(second.teacher_momentum, 0.0);
    // With momentum 0 the teacher is the student after the step.
    assert_eq!(values(trainer.student()), values(trainer.teacher()));
    trainer.apply(&Toggle::Sharpening(true)).unwrap();
    trainer.apply(&Toggle::TeacherTemp(0.06)).unwrap();
    assert_eq!(trainer.step().unwrap().teacher_temp, 0.06);
    assert!(trainer.apply(&Toggle::TeacherTemp(5.0)).is_err());
    assert!(trainer.apply(&Toggle::LocalCrops(99)).is_err());
    trainer.apply(&Toggle::LocalCrops(0)).unwrap();
    // Prefetched batches may still carry locals; the trainer uses at most the wanted count.
    assert_eq!(trainer.step().unwrap().local_crops, 0);
}

const COLLAPSE_STEPS: usize = 150;

/// Paper Fig. 7, left: without centering the teacher collapses to one dimension (h → 0), and
/// the student follows it (KL → 0). Thresholds: ln K = 4.16 here; the healthy run below ends
/// at h ≈ 3.2–3.6 with KL ≈ 0.9–1.1 (seeds 0–2), collapsed runs at h < 0.001, KL < 0.003.
/// "Near 0" = below 0.1 nats (2.4 % of ln K); KL below 0.05, a twentieth of the healthy KL.
#[test]
fn no_centering_collapses_to_one_hot() {
    let mut config = micro_config(0);
    config.dino.centering = CenteringMode::Off;
    let (_, m) = run(config, COLLAPSE_STEPS);
    let h = tail_mean(&m, 10, |x| x.teacher_entropy);
    let kl = tail_mean(&m, 10, |x| x.kl);
    let batch_h = tail_mean(&m, 10, |x| x.batch_mean_entropy);
    assert!(h < 0.15, "teacher entropy {h}");
    assert!(kl < 0.15, "kl {kl}");
    assert!(
        batch_h < 0.3,
        "every sample the same one-hot: batch-mean entropy {batch_h}"
    );
}

/// Paper Fig. 7, right: without sharpening the teacher is uniform (h → ln K) and KL → 0.
/// Measured: h within 0.004 of ln K and KL ≈ 0.002 after 150 steps (seeds 0–2).
#[test]
fn no_sharpening_collapses_to_uniform() {
    let mut config = micro_config(0);
    config.dino.sharpening = false;
    let (_, m) = run(config, COLLAPSE_STEPS);
    let ln_k = (64f64).ln();
    let h = tail_mean(&m, 10, |x| x.teacher_entropy);
    let kl = tail_mean(&m, 10, |x| x.kl);
    assert!(ln_k - h < 0.05, "teacher entropy {h} vs ln K {ln_k}");
    assert!(kl < 0.02, "kl {kl}");
}

/// With both on, the entropy stays strictly between and KL stays positive.
#[test]
fn healthy_run_stays_between() {
    let (_, m) = run(micro_config(0), COLLAPSE_STEPS);
    let ln_k = (64f64).ln();
    let h = tail_mean(&m, 10, |x| x.teacher_entropy);
    let kl = tail_mean(&m, 10, |x| x.kl);
    assert!(h > 0.5 && h < ln_k - 0.3, "teacher entropy {h}");
    assert!(kl > 0.3, "kl {kl}");
}

/// The GPU code path (burn's wgpu backend, its own GELU and softmax kernels): from the same
/// seed, the first steps give the CPU backend's losses. Run it where there is a GPU:
/// `cargo test --release -- --ignored wgpu_path`. It passes on Mesa's llvmpipe too (134 s on
/// 2 cores), but llvmpipe then aborts the test process at exit ("LLVM ERROR: Scalarization of
/// scalable vectors is not supported"), which would fail the whole CI test binary.
#[test]
#[ignore = "needs a GPU adapter; see the doc comment"]
fn wgpu_path_matches_the_cpu_backend() {
    let steps = 2;
    let mut config = micro_config(3);
    config.model.drop_path_rate = 0.0;
    let (_, cpu) = run(config.clone(), steps);
    let mut trainer = Trainer::new(
        config,
        Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        Some(steps),
    )
    .unwrap();
    for (i, expected) in cpu.iter().enumerate() {
        let got = trainer.step().unwrap();
        for (name, a, b) in [
            ("loss", got.loss, expected.loss),
            (
                "teacher entropy",
                got.teacher_entropy,
                expected.teacher_entropy,
            ),
            ("kl", got.kl, expected.kl),
        ] {
            assert!(
                (a - b).abs() <= 2e-3 * b.abs().max(1.0),
                "step {i} {name}: wgpu {a} vs cpu {b}"
            );
        }
    }
}
