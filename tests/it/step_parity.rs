//! The maths of a training step against the official PyTorch code: `DINOHead`, `DINOLoss` with
//! a non-zero center, and two full steps of `train_one_epoch` (multi-crop forward, loss, center
//! update, backward, per-tensor clipping, the frozen last layer, AdamW with the official
//! parameter groups and schedules, EMA teacher). Fixture: `scripts/make_step_fixture.py`
//! (tests/fixtures/official_step/README.md), float64 references stored as float32.
//!
//! The `Trainer` has no seam to take given crops and weights, so the step test composes the
//! pieces `Trainer::step_here` composes, in its order (src/train/trainer.rs, from
//! `forward_multi_crop` of the teacher to `ema_update`): teacher forward on the globals, student
//! forward on globals then locals, `dino_loss`, `update_center`, `GradientsParams::from_grads`,
//! dropping the last layer's grads while `epoch < freeze_last_layer` (and `weight_g`'s with
//! `norm_last_layer`), `SharedWeightDecay::set`, the optimiser of `build_optimizer`, and
//! `ema_update`. The schedule values come from a real `Trainer` (`schedules_at`) built from the
//! same settings.
//!
//! Tolerance: 1e-5 absolute on every value (weights, logits, center, loss); all are O(0.1–10),
//! so this is also ~1e-5 relative or tighter. One exception, not a dinoscope difference: the key
//! third of each qkv bias has an exactly-zero gradient (softmax is invariant to a per-row shift),
//! so AdamW's g/(|g| + eps) turns float32 rounding into a step of up to ~lr there; PyTorch in
//! float32 moves them by 4e-4 on this fixture. The forward never sees them, so nothing else
//! depends on them; they are only checked to have moved by less than the lr bound.

use crate::attention::max_abs_diff;
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::store::{ModuleSnapshot, PytorchStore};
use dinoscope::config::Config;
use dinoscope::data::SyntheticShapes;
use dinoscope::model::{DinoModel, VitArch, VitConfig};
use dinoscope::store::npy::read_npy;
use dinoscope::store::weights::{load_backbone, ArchOverrides, Network};
use dinoscope::train::ema::ema_update;
use dinoscope::train::loss::{dino_loss, update_center, LossOptions, LossStats, TeacherCentering};
use dinoscope::train::optim::{build_optimizer, SharedWeightDecay};
use dinoscope::train::Trainer;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const TOLERANCE: f32 = 1e-5;
const DIM: usize = 16;
const DEPTH: usize = 2;
const HEADS: usize = 2;
const PATCH: usize = 4;
const GLOBAL: usize = 16;
const LOCAL: usize = 8;
const HIDDEN: usize = 32;
const BOTTLENECK: usize = 16;
const K: usize = 64;
const BATCH: usize = 2;
const N_LOCAL: usize = 2;
/// The global iterations of the two steps (3 per epoch): epoch 1 with the last layer frozen,
/// then epoch 2 with it trained.
const ITERS: [usize; 2] = [5, 6];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/official_step")
        .join(name)
}

fn npy(name: &str) -> (Vec<usize>, Vec<f32>) {
    let array = read_npy(&fixture(name)).unwrap();
    let values = array.to_f32().unwrap();
    (array.shape, values)
}

fn tensor<const D: usize>(values: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

pub(crate) fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.without_autodiff()
        .into_data_as::<f32>()
        .as_slice::<f32>()
        .unwrap()
        .to_vec()
}

/// The settings `make_step_fixture.py` runs `main_dino.py` with.
fn official_config() -> Config {
    let mut config = Config::preset("tiny").unwrap();
    config.model.embed_dim = Some(DIM);
    config.model.depth = Some(DEPTH);
    config.model.num_heads = Some(HEADS);
    config.model.patch_size = PATCH;
    // The reference's stochastic depth draws from torch's RNG; off on both sides.
    config.model.drop_path_rate = 0.0;
    config.dino.out_dim = K;
    config.dino.hidden_dim = HIDDEN;
    config.dino.bottleneck_dim = BOTTLENECK;
    config.dino.norm_last_layer = true;
    config.dino.momentum_teacher = 0.9;
    config.dino.warmup_teacher_temp = 0.04;
    config.dino.teacher_temp = 0.07;
    config.dino.warmup_teacher_temp_epochs = 3;
    config.dino.student_temp = 0.1;
    config.dino.center_momentum = 0.9;
    config.dino.centering = dinoscope::config::CenteringMode::Ema;
    config.dino.sharpening = true;
    config.dino.local_crops_number = N_LOCAL;
    config.optim.epochs = 4;
    config.optim.batch_size_per_gpu = BATCH;
    config.optim.lr = 0.256;
    config.optim.lr_scale = 1.0;
    config.optim.min_lr = 1e-6;
    config.optim.warmup_epochs = 1;
    config.optim.weight_decay = 0.04;
    config.optim.weight_decay_end = 0.4;
    config.optim.clip_grad = 3.0;
    config.optim.freeze_last_layer = 2;
    config.data.global_crop_size = GLOBAL as u32;
    config.data.local_crop_size = LOCAL as u32;
    config.data.image_size = 32;
    // 3 iterations per epoch, as the fixture's `NITER_PER_EP`.
    config.data.num_images = 3 * BATCH;
    config.data.num_workers = 1;
    config.data.prefetch_batches = 1;
    config
}

/// A state dict in the official `MultiCropWrapper` layout (`backbone.*`, `head.*`) as a
/// `DinoModel`. The store renumbers `head.mlp.{0,2,4}` (GELUs in between) to our 0, 1, 2 and
/// transposes the Linear weights; our patch embedding is the Conv2d's parameters without `proj`.
fn load_model(name: &str, device: &Device) -> DinoModel {
    let vit = VitConfig {
        arch: VitArch {
            embed_dim: DIM,
            depth: DEPTH,
            num_heads: HEADS,
        },
        patch_size: PATCH,
        img_size: GLOBAL,
        drop_path_rate: 0.0,
    };
    let mut model = DinoModel::new(&vit, HIDDEN, BOTTLENECK, K, 0, device);
    let mut store = PytorchStore::from_file(fixture(name))
        .with_key_remapping(r"^backbone\.patch_embed\.proj\.", "backbone.patch_embed.");
    let result = model.load_from(&mut store).unwrap();
    assert!(
        result.missing.is_empty() && result.unused.is_empty() && result.errors.is_empty(),
        "{name}: missing {:?}, unused {:?}, errors {:?}",
        result.missing,
        result.unused,
        result.errors
    );
    model
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
        self.values.push((self.path.join("."), host(param.val())));
    }
}

fn values<M: Module>(module: &M) -> Vec<(String, Vec<f32>)> {
    let mut v = Values::default();
    module.visit(&mut v);
    v.values
}

/// Max |ours − expected| over every parameter, with the worst path, and separately over the key
/// third of the qkv biases (see the module doc), which is only checked against `key_bias_bound`.
fn compare_params(
    ours: &DinoModel,
    expected: &DinoModel,
    what: &str,
    key_bias_bound: f32,
) -> (f32, String, f32) {
    let (ours, expected) = (values(ours), values(expected));
    assert_eq!(ours.len(), expected.len(), "{what}: parameter count");
    let mut worst = (0.0f32, String::new());
    let mut key_bias = 0.0f32;
    for ((path, a), (expected_path, b)) in ours.iter().zip(&expected) {
        assert_eq!(path, expected_path, "{what}");
        assert_eq!(a.len(), b.len(), "{what}: {path}");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            let diff = (x - y).abs();
            if path.ends_with("attn.qkv.bias") && (DIM..2 * DIM).contains(&i) {
                assert!(
                    diff <= key_bias_bound,
                    "{what}: key bias {path}[{i}] moved {diff} > {key_bias_bound}"
                );
                key_bias = key_bias.max(diff);
            } else if diff > worst.0 || !diff.is_finite() {
                worst = (diff, format!("{path}[{i}]"));
            }
        }
    }
    (worst.0, worst.1, key_bias)
}

#[test]
fn dino_head_matches_official_head() {
    let device = Device::flex();
    let model = load_model("student.pth", &device);
    let (shape, input) = npy("head_input.npy");
    assert_eq!(shape, vec![5, DIM]);
    let ours = host(model.head.forward(tensor(input, [5, DIM], &device)));
    let (shape, expected) = npy("head_output.npy");
    assert_eq!(shape, vec![5, K]);
    let diff = max_abs_diff(&ours, &expected);
    println!("head output: max abs diff {diff:.2e}");
    assert!(diff < TOLERANCE, "DINOHead output differs by {diff}");
}

#[test]
fn dino_loss_with_center_matches_official_loss() {
    let device = Device::flex();
    let (batch, n_crops) = (3, 6);
    let (_, student) = npy("loss_student_logits.npy");
    let (_, teacher) = npy("loss_teacher_logits.npy");
    let (_, center) = npy("loss_center.npy");
    let teacher = tensor(teacher, [2 * batch, K], &device);
    let center = tensor(center, [1, K], &device);
    let out = dino_loss(
        tensor(student, [n_crops * batch, K], &device),
        teacher.clone(),
        center.clone(),
        n_crops,
        LossOptions {
            student_temp: 0.1,
            teacher_temp: 0.04,
            centering: TeacherCentering::Ema,
        },
    );
    let (_, expected) = npy("loss_value.npy");
    let loss = host(out.loss)[0];
    let stats = LossStats::from_values(&host(out.stats)).unwrap();
    let diff = (loss - expected[0]).abs();
    println!("loss {loss} vs {}: abs diff {diff:.2e}", expected[0]);
    assert!(diff < TOLERANCE, "DINOLoss differs by {diff}");
    assert!((stats.loss - expected[0] as f64).abs() < TOLERANCE as f64);

    let ours = host(update_center(center, teacher, 0.9));
    let (_, expected) = npy("loss_center_after.npy");
    let diff = max_abs_diff(&ours, &expected);
    println!("center update: max abs diff {diff:.2e}");
    assert!(diff < TOLERANCE, "center update differs by {diff}");
}

#[test]
fn two_training_steps_match_official_train_one_epoch() {
    let device = Device::flex();
    let autodiff = device.clone().autodiff();
    let config = official_config();
    // Only for its schedules: the Trainer's own lr / wd / momentum / teacher-temperature wiring.
    let dataset = Arc::new(SyntheticShapes::new(0, 32, config.data.num_images));
    let trainer = Trainer::with_dataset(config.clone(), device.clone(), None, dataset).unwrap();
    assert_eq!((trainer.iters_per_epoch(), trainer.total_steps()), (3, 12));

    let mut student = load_model("student.pth", &autodiff);
    let mut teacher = load_model("teacher.pth", &device);
    // dinoscope's own loader reads the same file's backbone identically.
    let heads = ArchOverrides {
        num_heads: Some(HEADS),
        ..Default::default()
    };
    let backbone = load_backbone(&fixture("student.pth"), Network::Student, &heads, &device)
        .unwrap()
        .backbone;
    assert_eq!(values(&backbone), values(&student.valid().backbone));

    let (_, center) = npy("center.npy");
    let mut center = tensor(center, [1, K], &device);
    let weight_decay = SharedWeightDecay::default();
    let mut optimizer = build_optimizer(weight_decay.clone(), config.optim.clip_grad).unwrap();
    // The Trainer passes its drop-path stream; at rate 0 nothing is drawn from it.
    let mut drop_path_rng = ChaCha8Rng::seed_from_u64(0);

    let (shape, globals) = npy("globals.npy");
    assert_eq!(shape, vec![2, 2 * BATCH, 3, GLOBAL, GLOBAL]);
    let (shape, locals) = npy("locals.npy");
    assert_eq!(shape, vec![2, N_LOCAL * BATCH, 3, LOCAL, LOCAL]);
    let (_, schedules) = npy("schedule_steps.npy");
    let (_, losses) = npy("loss_steps.npy");
    let (_, centers) = npy("center_steps.npy");
    let mut lr_sum = 0.0f32;

    for (step, &it) in ITERS.iter().enumerate() {
        let n = step + 1;
        let epoch = it / trainer.iters_per_epoch();
        let (lr, wd, momentum, teacher_temp) = trainer.schedules_at(it);
        let expected = &schedules[4 * step..4 * step + 4];
        for (name, ours, official) in [
            ("lr", lr, expected[0]),
            ("weight decay", wd, expected[1]),
            ("momentum", momentum, expected[2]),
            ("teacher temp", teacher_temp, expected[3]),
        ] {
            let rel = (ours - official as f64).abs() / (official as f64).abs();
            assert!(rel < 1e-6, "step {n}: {name} {ours} vs official {official}");
        }
        lr_sum += lr as f32;

        let g = 2 * BATCH * 3 * GLOBAL * GLOBAL;
        let l = N_LOCAL * BATCH * 3 * LOCAL * LOCAL;
        let global_images = tensor(
            globals[step * g..(step + 1) * g].to_vec(),
            [2 * BATCH, 3, GLOBAL, GLOBAL],
            &device,
        );
        let local_images = tensor(
            locals[step * l..(step + 1) * l].to_vec(),
            [N_LOCAL * BATCH, 3, LOCAL, LOCAL],
            &device,
        );

        // Trainer::step_here from the teacher forward on.
        let teacher_out = teacher.forward_multi_crop(vec![global_images.clone()], None);
        let groups = vec![global_images.autodiff(), local_images.autodiff()];
        let student_out = student.forward_multi_crop(groups, Some(&mut drop_path_rng));
        if step == 0 {
            for (name, ours, file) in [
                ("student", &student_out.logits, "student_logits_step1.npy"),
                ("teacher", &teacher_out.logits, "teacher_logits_step1.npy"),
            ] {
                let diff = max_abs_diff(&host(ours.clone()), &npy(file).1);
                println!("step 1 {name} logits: max abs diff {diff:.2e}");
                assert!(diff < TOLERANCE, "step 1 {name} logits differ by {diff}");
            }
        }
        let options = LossOptions {
            student_temp: config.dino.student_temp,
            teacher_temp,
            centering: TeacherCentering::Ema,
        };
        let loss = dino_loss(
            student_out.logits,
            teacher_out.logits.clone(),
            center.clone(),
            2 + N_LOCAL,
            options,
        );
        let stats = LossStats::from_values(&host(loss.stats)).unwrap();
        center = update_center(center, teacher_out.logits, config.dino.center_momentum);
        let mut grads = GradientsParams::from_grads(loss.loss.backward(), &student);
        let last_layer = &student.head.last_layer;
        if epoch < config.optim.freeze_last_layer {
            grads.remove::<2>(last_layer.weight_v.id);
            grads.remove::<2>(last_layer.weight_g.id);
        }
        if config.dino.norm_last_layer {
            grads.remove::<2>(last_layer.weight_g.id);
        }
        weight_decay.set(wd);
        student = optimizer.step(lr, student, grads);
        teacher = ema_update(teacher, &student, momentum).unwrap();

        let diff = (stats.loss as f32 - losses[step]).abs();
        println!(
            "step {n} (it {it}, epoch {epoch}): loss {} vs {}, abs diff {diff:.2e}",
            stats.loss, losses[step]
        );
        assert!(diff < TOLERANCE, "step {n}: loss differs by {diff}");
        let diff = max_abs_diff(&host(center.clone()), &centers[step * K..(step + 1) * K]);
        println!("step {n} center: max abs diff {diff:.2e}");
        assert!(diff < TOLERANCE, "step {n}: center differs by {diff}");
        // AdamW moves an element by at most ~lr per step (|m̂|/√v̂ ≤ ~1).
        let key_bias_bound = 1.5 * lr_sum;
        for (name, ours, file) in [
            ("student", student.valid(), format!("student_step{n}.pth")),
            ("teacher", teacher.clone(), format!("teacher_step{n}.pth")),
        ] {
            let expected = load_model(&file, &device);
            let (diff, at, key_bias) = compare_params(&ours, &expected, &file, key_bias_bound);
            println!(
                "step {n} {name}: max abs diff {diff:.2e} at {at} (key biases: {key_bias:.2e})"
            );
            assert!(
                diff < TOLERANCE,
                "step {n}: {name} differs by {diff} at {at}"
            );
        }
    }
}
