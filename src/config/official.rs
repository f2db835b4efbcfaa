//! The same run on the official engine: the `main_dino.py` arguments
//! (facebookresearch/dino `get_args_parser`) that reproduce a config's hyperparameters, the
//! settings no official flag expresses (each with what to do about it), and the launch lines
//! (`torchrun`, `python -m torch.distributed.run`) ending with the `dinoscope watch` that
//! follows the job. Pure text from a [`Config`]: the CLI's `official-command` and the app's
//! "Train this at scale…" print the same.

use super::{Config, DataSource, Toggle};

/// main_dino.py's fixed values that dinoscope makes configurable.
const OFFICIAL_GLOBAL_CROP_PX: u32 = 224;
const OFFICIAL_LOCAL_CROP_PX: u32 = 96;
const OFFICIAL_HIDDEN_DIM: usize = 2048;
const OFFICIAL_BOTTLENECK_DIM: usize = 256;
const OFFICIAL_STUDENT_TEMP: f64 = 0.1;
const OFFICIAL_CENTER_MOMENTUM: f64 = 0.9;
/// The ViT factories `--arch` accepts, with (width, depth, heads).
const OFFICIAL_VITS: [(&str, usize, usize, usize); 3] = [
    ("vit_tiny", 192, 12, 3),
    ("vit_small", 384, 12, 6),
    ("vit_base", 768, 12, 12),
];

/// How the job is launched.
#[derive(Clone, Debug, PartialEq)]
pub struct LaunchOptions {
    /// `--nproc_per_node`: GPUs on the node.
    pub gpus: usize,
    /// Split the run's batch over the GPUs (same global batch and peak lr) instead of the
    /// official habit of a fixed per-GPU batch (global batch and peak lr × GPUs).
    pub keep_global_batch: bool,
    /// `--output_dir`, followed by `dinoscope watch`.
    pub output_dir: String,
}

impl Default for LaunchOptions {
    fn default() -> Self {
        Self {
            gpus: 8,
            keep_global_batch: false,
            output_dir: "./dino_output".into(),
        }
    }
}

/// A setting main_dino.py has no flag for, and what to do about it.
#[derive(Clone, Debug, PartialEq)]
pub struct Unmatched {
    pub setting: String,
    pub advice: String,
}

/// The official job for one config.
#[derive(Clone, Debug, PartialEq)]
pub struct OfficialCommand {
    /// `(flag without --, values)` in main_dino.py's order.
    pub args: Vec<(&'static str, Vec<String>)>,
    pub unmatched: Vec<Unmatched>,
    /// Lines about the scale: global batch and peak lr against the dinoscope run's.
    pub scale: Vec<String>,
    pub options: LaunchOptions,
    /// Extra `dinoscope watch` flags (crop sizes main_dino.py's args do not record).
    pub watch_flags: Vec<String>,
}

fn number(value: f64) -> String {
    // Rust's shortest round-trip form: Python's float() reads back the same double.
    format!("{value}")
}

fn flag(on: bool) -> String {
    if on { "true" } else { "false" }.into()
}

/// The official ViT with this width (and depth and heads), else the nearest by width.
fn official_arch(config: &Config) -> (&'static str, bool) {
    let arch = config.vit_arch();
    let exact = OFFICIAL_VITS
        .iter()
        .find(|(_, w, d, h)| (*w, *d, *h) == (arch.embed_dim, arch.depth, arch.num_heads));
    if let Some((name, ..)) = exact {
        return (name, true);
    }
    let nearest = OFFICIAL_VITS
        .iter()
        .min_by_key(|(_, w, ..)| w.abs_diff(arch.embed_dim))
        .map_or("vit_small", |(name, ..)| name);
    (nearest, false)
}

impl OfficialCommand {
    /// The arguments for `config` (the values the run starts with) and the notes for what
    /// they cannot say, including `changes`: toggles the run applied at a step.
    pub fn from_config(
        config: &Config,
        changes: &[(usize, Toggle)],
        options: &LaunchOptions,
    ) -> Self {
        let (d, o) = (&config.dino, &config.optim);
        let gpus = options.gpus.max(1);
        let mut unmatched = Vec::new();
        let mut note =
            |setting: String, advice: String| unmatched.push(Unmatched { setting, advice });

        let (arch, exact) = official_arch(config);
        if !exact {
            let a = config.vit_arch();
            note(
                format!(
                    "architecture {} ({} wide, {} blocks, {} heads)",
                    config.model.arch, a.embed_dim, a.depth, a.num_heads
                ),
                format!(
                    "main_dino.py builds vit_tiny, vit_small and vit_base only; the command uses the nearest, {arch}. For this exact shape add a factory to vision_transformer.py (VisionTransformer(patch_size, embed_dim={}, depth={}, num_heads={}, mlp_ratio=4, qkv_bias=True)) and pass its name to --arch",
                    a.embed_dim, a.depth, a.num_heads
                ),
            );
        }
        let (warmup_temp, temp, warmup_temp_epochs) = if d.sharpening {
            (
                d.warmup_teacher_temp,
                d.teacher_temp,
                d.warmup_teacher_temp_epochs,
            )
        } else {
            note(
                "sharpening off".into(),
                format!(
                    "expressed with flags: the teacher's temperature is the student's ({}), so --teacher_temp and --warmup_teacher_temp are {} with no warm-up",
                    d.student_temp, d.student_temp
                ),
            );
            (d.student_temp, d.student_temp, 0)
        };
        match d.centering {
            crate::config::CenteringMode::Ema => {}
            crate::config::CenteringMode::Off => note(
                "centering off".into(),
                "no flag: in main_dino.py's DINOLoss.forward use `teacher_output / temp` instead of `(teacher_output - self.center) / temp`".into(),
            ),
            crate::config::CenteringMode::Sinkhorn => note(
                "Sinkhorn-Knopp centering (DINOv2)".into(),
                "no flag in main_dino.py: replace the softmax of `(teacher_output - self.center) / temp` in DINOLoss.forward with dinov2's `sinkhorn_knopp_teacher(teacher_output, temp, n_iterations=3)` (dinov2/loss/dino_clstoken_loss.py), or train with the dinov2 code".into(),
            ),
        }
        if d.koleo_weight > 0.0 {
            note(
                format!("KoLeo weight {}", d.koleo_weight),
                "no flag in main_dino.py (KoLeo is DINOv2's): add dinov2's KoLeoLoss (dinov2/loss/koleo_loss.py) on the student's CLS outputs of the two global crops, times the weight, to the loss in train_one_epoch, or train with the dinov2 code".into(),
            );
        }
        if d.momentum_teacher == 0.0 {
            note(
                "momentum teacher off (momentum 0)".into(),
                "main_dino.py's momentum schedule rises by cosine from --momentum_teacher to 1, so 0 is not a copy of the student: set momentum_schedule = np.zeros(args.epochs * len(data_loader)) after it is built".into(),
            );
        }
        if d.student_temp != OFFICIAL_STUDENT_TEMP || d.center_momentum != OFFICIAL_CENTER_MOMENTUM
        {
            note(
                format!(
                    "student temperature {}, center momentum {}",
                    d.student_temp, d.center_momentum
                ),
                format!(
                    "no flag (main_dino.py fixes {OFFICIAL_STUDENT_TEMP} and {OFFICIAL_CENTER_MOMENTUM}): pass student_temp={}, center_momentum={} to DINOLoss(...) in train_dino",
                    d.student_temp, d.center_momentum
                ),
            );
        }
        if d.hidden_dim != OFFICIAL_HIDDEN_DIM || d.bottleneck_dim != OFFICIAL_BOTTLENECK_DIM {
            note(
                format!(
                    "head hidden {} / bottleneck {}",
                    d.hidden_dim, d.bottleneck_dim
                ),
                format!(
                    "no flag (main_dino.py's DINOHead uses {OFFICIAL_HIDDEN_DIM} / {OFFICIAL_BOTTLENECK_DIM}): pass hidden_dim={}, bottleneck_dim={} to both DINOHead(...) calls",
                    d.hidden_dim, d.bottleneck_dim
                ),
            );
        }
        let data = &config.data;
        if data.global_crop_size != OFFICIAL_GLOBAL_CROP_PX
            || data.local_crop_size != OFFICIAL_LOCAL_CROP_PX
        {
            note(
                format!(
                    "crops of {} and {} px",
                    data.global_crop_size, data.local_crop_size
                ),
                format!(
                    "no flag (main_dino.py crops at {OFFICIAL_GLOBAL_CROP_PX} and {OFFICIAL_LOCAL_CROP_PX} px): change the RandomResizedCrop sizes in DataAugmentationDINO to {} and {}, or keep the official sizes at scale (then --patch_size sets the token grid)",
                    data.global_crop_size, data.local_crop_size
                ),
            );
        }
        let data_path = match data.source {
            DataSource::Folder => data.path.clone(),
            DataSource::Synthetic => {
                note(
                    "the synthetic shapes dataset".into(),
                    "generated inside dinoscope; main_dino.py reads an ImageFolder (labels ignored): pass your images as --data_path".into(),
                );
                "/path/to/imagenet/train".into()
            }
            other => {
                note(
                    format!("the {} binary dataset at {}", other.name(), data.path),
                    "main_dino.py reads an ImageFolder (one sub-folder per class): write the images out as PNG files in class folders and pass that folder as --data_path".into(),
                );
                "/path/to/imagefolder".into()
            }
        };
        if data.knn_every_epochs > 0 {
            note(
                "the k-NN monitor".into(),
                format!(
                    "main_dino.py has none: `dinoscope watch {} --knn-train TRAIN --knn-val VAL` evaluates every checkpoint, or run eval_knn.py afterwards",
                    options.output_dir
                ),
            );
        }
        let lr_scale = o.lr_scale;
        if lr_scale != 1.0 {
            note(
                format!("lr scale {lr_scale}"),
                "expressed with flags: folded into --lr and --min_lr (the whole schedule is scaled)".into(),
            );
        }
        for (step, toggle) in changes {
            note(
                format!("{} at step {step}", toggle.label()),
                "main_dino.py cannot change a setting mid-run: the command reproduces the run's start; to train with the changed value throughout, pass its flag (or the edit above) from the first epoch".into(),
            );
        }

        let batch = o.batch_size_per_gpu;
        let per_gpu = if options.keep_global_batch {
            batch.div_ceil(gpus).max(1)
        } else {
            batch
        };
        let global = per_gpu * gpus;
        let peak = |b: usize| o.lr * lr_scale * b as f64 / 256.0;
        let mut scale = vec![format!(
            "{gpus} GPU(s) x {per_gpu} images = global batch {global}; peak lr = lr x {global}/256 = {} (the dinoscope run: batch {batch}, peak lr {})",
            number(peak(global)),
            number(peak(batch))
        )];
        if options.keep_global_batch && global != batch {
            scale.push(format!(
                "{batch} does not split evenly over {gpus} GPUs: {per_gpu} each rounds the global batch up to {global}"
            ));
        }
        if !options.keep_global_batch && gpus > 1 {
            scale.push(
                "the per-GPU batch is kept as main_dino.py's habit is (linear lr scaling); --keep-global-batch splits the run's batch instead".into(),
            );
        }
        note(
            "full precision".into(),
            "dinoscope trains in f32, hence --use_fp16 false; main_dino.py's default (true) is faster on GPUs and is what the paper used".into(),
        );

        let pair = |p: [f64; 2]| vec![number(p[0]), number(p[1])];
        let args: Vec<(&'static str, Vec<String>)> = vec![
            ("arch", vec![arch.into()]),
            ("patch_size", vec![config.model.patch_size.to_string()]),
            ("out_dim", vec![d.out_dim.to_string()]),
            ("norm_last_layer", vec![flag(d.norm_last_layer)]),
            ("momentum_teacher", vec![number(d.momentum_teacher)]),
            ("warmup_teacher_temp", vec![number(warmup_temp)]),
            ("teacher_temp", vec![number(temp)]),
            (
                "warmup_teacher_temp_epochs",
                vec![warmup_temp_epochs.to_string()],
            ),
            ("use_fp16", vec![flag(false)]),
            ("weight_decay", vec![number(o.weight_decay)]),
            ("weight_decay_end", vec![number(o.weight_decay_end)]),
            ("clip_grad", vec![number(o.clip_grad)]),
            ("batch_size_per_gpu", vec![per_gpu.to_string()]),
            ("epochs", vec![o.epochs.to_string()]),
            ("freeze_last_layer", vec![o.freeze_last_layer.to_string()]),
            ("lr", vec![number(o.lr * lr_scale)]),
            ("warmup_epochs", vec![o.warmup_epochs.to_string()]),
            ("min_lr", vec![number(o.min_lr * lr_scale)]),
            ("drop_path_rate", vec![number(config.model.drop_path_rate)]),
            ("global_crops_scale", pair(d.global_crops_scale)),
            ("local_crops_number", vec![d.local_crops_number.to_string()]),
            ("local_crops_scale", pair(d.local_crops_scale)),
            ("data_path", vec![data_path]),
            ("output_dir", vec![options.output_dir.clone()]),
            ("seed", vec![config.seed.to_string()]),
        ];
        let mut watch_flags = Vec::new();
        if data.global_crop_size != OFFICIAL_GLOBAL_CROP_PX {
            watch_flags.push(format!("--global-crop {}", data.global_crop_size));
        }
        if data.local_crop_size != OFFICIAL_LOCAL_CROP_PX {
            watch_flags.push(format!("--local-crop {}", data.local_crop_size));
        }
        Self {
            args,
            unmatched,
            scale,
            options: LaunchOptions {
                gpus,
                ..options.clone()
            },
            watch_flags,
        }
    }

    /// The arguments after `main_dino.py`, one token each (for a shell or a parser).
    pub fn argv(&self) -> Vec<String> {
        self.args
            .iter()
            .flat_map(|(name, values)| {
                std::iter::once(format!("--{name}")).chain(values.iter().cloned())
            })
            .collect()
    }

    /// The `dinoscope watch` line that follows the job.
    pub fn watch_line(&self) -> String {
        let mut line = format!("dinoscope watch {}", shell_word(&self.options.output_dir));
        for extra in &self.watch_flags {
            line.push(' ');
            line.push_str(extra);
        }
        line
    }

    fn launch(&self, launcher: &str) -> String {
        let mut text = format!(
            "{launcher} --nproc_per_node={} main_dino.py",
            self.options.gpus
        );
        for (name, values) in &self.args {
            text.push_str(" \\\n    --");
            text.push_str(name);
            for value in values {
                text.push(' ');
                text.push_str(&shell_word(value));
            }
        }
        text
    }

    /// The whole text: the two launch lines, the scale, the unmatched settings, the watch line.
    pub fn render(&self, label: &str) -> String {
        let mut out = format!(
            "# {label} on the official engine (facebookresearch/dino main_dino.py), from its repository root:\n"
        );
        for line in &self.scale {
            out.push_str(&format!("# {line}\n"));
        }
        out.push_str(&self.launch("torchrun"));
        out.push_str("\n\n# The same with the launcher module:\n");
        out.push_str(&self.launch("python -m torch.distributed.run"));
        out.push_str("\n\n# Settings main_dino.py has no flag for, and what to do:\n");
        for item in &self.unmatched {
            out.push_str(&format!("#  - {}: {}\n", item.setting, item.advice));
        }
        out.push_str("\n# Follow the job live (each checkpoint on the probe batch, in a dinoscope run folder):\n");
        out.push_str(&self.watch_line());
        out.push('\n');
        out
    }
}

/// A value as one shell word: bare when safe, else single-quoted.
fn shell_word(value: &str) -> String {
    let safe = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:+,@%".contains(c));
    if safe {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_paper_preset_needs_no_edits_but_precision_and_data() {
        let config = Config::preset("vit-s16-paper").unwrap();
        let command = OfficialCommand::from_config(&config, &[], &LaunchOptions::default());
        let argv = command.argv();
        let at = |flag: &str| argv.iter().position(|a| a == flag).unwrap();
        assert_eq!(argv[at("--arch") + 1], "vit_small");
        assert_eq!(argv[at("--global_crops_scale") + 1..][..2], ["0.4", "1"]);
        let text = command.render("vit-s16-paper");
        assert!(
            text.contains("torchrun --nproc_per_node=8 main_dino.py"),
            "{text}"
        );
        assert!(
            text.contains("python -m torch.distributed.run --nproc_per_node=8"),
            "{text}"
        );
        assert!(
            text.trim_end().ends_with("dinoscope watch ./dino_output"),
            "{text}"
        );
    }

    #[test]
    fn dinoscope_only_settings_are_named_with_their_fix() {
        let mut config = Config::preset("tiny").unwrap();
        config.dino.centering = crate::config::CenteringMode::Off;
        config.dino.sharpening = false;
        config.optim.lr_scale = 2.0;
        let changes = [(60, Toggle::LocalCrops(0))];
        let options = LaunchOptions {
            gpus: 4,
            keep_global_batch: true,
            output_dir: "/scratch/my run".into(),
        };
        let command = OfficialCommand::from_config(&config, &changes, &options);
        let settings: Vec<&str> = command
            .unmatched
            .iter()
            .map(|u| u.setting.as_str())
            .collect();
        for expected in [
            "architecture vit_micro (96 wide, 4 blocks, 3 heads)",
            "centering off",
            "sharpening off",
            "the synthetic shapes dataset",
            "crops of 32 and 16 px",
            "head hidden 512 / bottleneck 256",
            "lr scale 2",
            "local crops = 0 at step 60",
        ] {
            assert!(settings.contains(&expected), "{expected} in {settings:?}");
        }
        let argv = command.argv();
        let value = |flag: &str| argv[argv.iter().position(|a| a == flag).unwrap() + 1].clone();
        assert_eq!(value("--arch"), "vit_tiny");
        assert_eq!(value("--teacher_temp"), "0.1");
        assert_eq!(value("--batch_size_per_gpu"), "8");
        assert_eq!(value("--lr"), "0.004");
        assert_eq!(
            command.watch_line(),
            "dinoscope watch '/scratch/my run' --global-crop 32 --local-crop 16"
        );
        assert!(
            command.scale[0].contains("global batch 32"),
            "{:?}",
            command.scale
        );
    }
}
