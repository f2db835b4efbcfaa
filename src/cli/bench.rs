//! `dinoscope bench`: step and phase timings (BENCHMARKS.md).

use super::bench_matmul::median_secs;
use super::output::{usage, Printer};
use super::{load_config, ConfigArgs};
use anyhow::Result;
use clap::Args;
use dinoscope::device::select_device;
use dinoscope::train::Trainer;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    common: ConfigArgs,
    /// Timed steps.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Untimed warm-up steps.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// train: one training step of the config; attention: all maps of one image with a
    /// ViT-S/16 (random weights unless --weights or --model) at 480 px short side; matmul: the train
    /// steps' matrix products alone (GFLOP/s per shape, CPU backend).
    #[arg(long, value_enum, default_value = "train")]
    workload: Workload,
    /// Weights for the attention workload (default: a randomly initialised ViT-S/16).
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
    /// Image size for the attention workload: N (short side) or WxH.
    #[arg(long, value_name = "N | WxH", default_value = "480")]
    size: String,
    /// Attention workload: also the patch-feature PCA, as the app computes (one full pass).
    #[arg(long)]
    pca: bool,
    /// Attention workload: the CLS maps of every head of every block (`attention --layer all`),
    /// instead of the last block's maps.
    #[arg(long, conflicts_with = "pca")]
    all_layers: bool,
    /// With --all-layers: also each head's mean attention distance (`--distance`: every block
    /// then materialises its probabilities).
    #[arg(long, requires = "all_layers")]
    distance: bool,
    /// Attention workload without --weights: the randomly initialised backbone.
    #[arg(long, value_enum, default_value = "vits16")]
    model: BenchModel,
}

/// The random-weight backbones of the attention workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum BenchModel {
    /// DINO ViT-S/16 (224 px table).
    Vits16,
    /// DINOv2 ViT-S/14: LayerScale, LayerNorm ε 1e-6, the 37 × 37 table of 518 px.
    Dinov2Vits14,
    /// DINOv2 ViT-L/14 (width 1024, 24 blocks, 16 heads), as Dinov2Vits14.
    Dinov2Vitl14,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Workload {
    Train,
    Attention,
    Matmul,
}

fn bench_attention(args: BenchArgs) -> Result<()> {
    let mut out = Printer::default();
    use dinoscope::analysis::attention::{attention_maps, mass_mask, HeadFusion, ImageSize};
    let selected = select_device(args.common.device)?;
    let (backbone, label) = match &args.weights {
        Some(path) => {
            let loaded = dinoscope::store::weights::load_backbone(
                path,
                dinoscope::store::weights::Network::Teacher,
                &Default::default(),
                &selected.device,
            )?;
            let label = loaded.info.describe();
            (loaded.backbone, label)
        }
        None => {
            use dinoscope::model::{Family, Ffn, VitArch};
            let small = VitArch::from_name("vit_small")
                .ok_or_else(|| anyhow::anyhow!("vit_small is missing"))?;
            let (arch, patch_size, img_size, family, label) = match args.model {
                BenchModel::Vits16 => (small, 16, 224, Family::Dino, "ViT-S/16"),
                BenchModel::Dinov2Vits14 => (
                    small,
                    14,
                    518,
                    Family::DinoV2 { registers: 0 },
                    "DINOv2 ViT-S/14",
                ),
                BenchModel::Dinov2Vitl14 => (
                    VitArch {
                        embed_dim: 1024,
                        depth: 24,
                        num_heads: 16,
                    },
                    14,
                    518,
                    Family::DinoV2 { registers: 0 },
                    "DINOv2 ViT-L/14",
                ),
            };
            let vit = dinoscope::model::VitConfig {
                arch,
                patch_size,
                img_size,
                drop_path_rate: 0.0,
            };
            let backbone = dinoscope::model::VisionTransformer::new_family(
                &vit,
                family,
                Ffn::mlp_of_width(arch.embed_dim),
                &mut dinoscope::model::HostInit::new(0),
                &selected.device,
            );
            (backbone, format!("{label} (random weights)"))
        }
    };
    let (name, image) = dinoscope::data::sample_photos()
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("the bundled photos are missing"))?;
    let size = ImageSize::parse(&args.size).map_err(|err| usage(format!("--size: {err}")))?;
    let target = size.resolve(image.dimensions());
    out.line(&format!(
        "bench attention: {label} on {} · {name} at {}x{} px",
        selected.description, target.0, target.1
    ));
    let mut secs = Vec::with_capacity(args.steps);
    for i in 0..args.warmup + args.steps.max(1) {
        let started = Instant::now();
        if args.all_layers {
            let layers: Vec<usize> = (0..backbone.depth()).collect();
            let maps = dinoscope::analysis::layers::layer_maps(
                &backbone,
                &image,
                target,
                &selected.device,
                &layers,
                None,
                args.distance,
            )
            .ok_or_else(|| anyhow::anyhow!("image smaller than one patch"))?;
            for heads in &maps.cls {
                for head in heads {
                    std::hint::black_box(mass_mask(head, 0.6));
                }
            }
            if i >= args.warmup {
                secs.push(started.elapsed().as_secs_f64());
            }
            continue;
        }
        let maps = if args.pca {
            dinoscope::analysis::attention::attention_and_pca(
                &backbone,
                &image,
                target,
                &selected.device,
            )
        } else {
            attention_maps(&backbone, &image, target, &selected.device)
        }
        .ok_or_else(|| anyhow::anyhow!("image smaller than one patch"))?;
        // Masks of every head and of the mean are part of "all maps".
        for head in &maps.heads {
            std::hint::black_box(mass_mask(head, 0.6));
        }
        std::hint::black_box(mass_mask(&maps.fused(HeadFusion::Mean), 0.6));
        if i >= args.warmup {
            secs.push(started.elapsed().as_secs_f64());
        }
    }
    let count = secs.len();
    let min_secs = secs.iter().copied().fold(f64::INFINITY, f64::min);
    out.line(&format!(
        "attention maps: {:.1} ms (median of {count}), {:.1} ms (min)",
        median_secs(secs) * 1e3,
        min_secs * 1e3
    ));
    Ok(())
}

/// Long: the benchmark's phases in order (warm-up, timed steps, per-phase medians, the loader
/// alone).
pub fn run(args: BenchArgs) -> Result<()> {
    if args.workload == Workload::Attention {
        return bench_attention(args);
    }
    if args.workload == Workload::Matmul {
        if args.steps == 0 {
            return Err(usage("--steps must be at least 1"));
        }
        // On a compute-pool worker, as the train step runs.
        return dinoscope::device::on_compute_pool(|| {
            super::bench_matmul::run(args.steps, args.warmup, &mut Printer::default())
        });
    }
    let mut out = Printer::default();
    let (config, label) = load_config(&args.common)?;
    if args.steps == 0 {
        return Err(usage("--steps must be at least 1"));
    }
    let selected = select_device(args.common.device)?;
    out.line(&format!("bench {label} on {}", selected.description));
    // A number is only true for the machine it was measured on.
    out.line(&format!(
        "cpu: {}",
        dinoscope::device::host_cpu_description()
    ));
    out.line(&format!(
        "model {} /{} · batch {} · crops 2×{} px + {}×{} px · K {}",
        config.model.arch,
        config.model.patch_size,
        config.optim.batch_size_per_gpu,
        config.data.global_crop_size,
        config.dino.local_crops_number,
        config.data.local_crop_size,
        config.dino.out_dim
    ));

    // The data loader on its own: how fast crops are produced when nothing consumes compute.
    let dataset = dinoscope::data::datasets::open_dataset(&config)?;
    let loader = dinoscope::augment::CropLoader::spawn(
        dataset,
        dinoscope::train::trainer::loader_config(&config),
        Arc::new(std::sync::atomic::AtomicUsize::new(
            config.dino.local_crops_number,
        )),
    )?;
    let loader_batches = (args.steps + args.warmup).max(10);
    let started = Instant::now();
    for _ in 0..loader_batches {
        loader.next_batch()?;
    }
    let loader_images_per_sec =
        (loader_batches * config.optim.batch_size_per_gpu) as f64 / started.elapsed().as_secs_f64();
    drop(loader);

    let mut trainer = Trainer::new(
        config.clone(),
        selected.device,
        Some(args.steps + args.warmup),
    )?;
    for _ in 0..args.warmup {
        trainer.step()?;
    }
    let mut step_secs = Vec::with_capacity(args.steps);
    let mut phase_secs = Vec::with_capacity(args.steps);
    let mut wait_secs = 0.0;
    let started = Instant::now();
    for _ in 0..args.steps {
        let m = trainer.step()?;
        step_secs.push(m.step_secs);
        phase_secs.push(trainer.last_phase_secs().named());
        wait_secs += m.data_wait_secs;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let median_ms = median_secs(step_secs) * 1e3;
    let images = (args.steps * config.optim.batch_size_per_gpu) as f64;
    let train_images_per_sec = images / elapsed;
    out.line(&format!(
        "train step: {:.1} ms/step (mean), {:.1} ms (median), {:.1} img/s, data wait {:.1}% of step time",
        elapsed * 1e3 / args.steps as f64,
        median_ms,
        train_images_per_sec,
        100.0 * wait_secs / elapsed
    ));
    let phase_medians_ms: Vec<String> = dinoscope::train::trainer::PhaseSecs::default()
        .named()
        .iter()
        .enumerate()
        .map(|(i, (name, _))| {
            let column: Vec<f64> = phase_secs.iter().map(|phases| phases[i].1).collect();
            format!("{name} {:.1}", median_secs(column) * 1e3)
        })
        .collect();
    out.line(&format!(
        "phases (ms, median): {}",
        phase_medians_ms.join(" · ")
    ));
    // The representation readings run every few steps, so their cost is the mean, not the
    // median, of the geometry phase (issue 15's budget: ≤ 3 % of the step).
    let geometry_index = phase_secs
        .first()
        .and_then(|phases| phases.iter().position(|(name, _)| *name == "geometry"));
    if let Some(index) = geometry_index {
        let column: Vec<f64> = phase_secs.iter().map(|phases| phases[index].1).collect();
        let mean_secs = column.iter().sum::<f64>() / column.len().max(1) as f64;
        let worst_secs = column.iter().copied().fold(0.0, f64::max);
        out.line(&format!(
            "representation readings: {:.2} ms/step (mean, {:.1} % of the mean step), {:.1} ms on a reading step (every {})",
            mean_secs * 1e3,
            100.0 * mean_secs * args.steps as f64 / elapsed,
            worst_secs * 1e3,
            dinoscope::train::representation::READING_EVERY_STEPS
        ));
    }
    out.line(&format!(
        "data loader alone: {:.1} img/s ({:.1}× the train step's consumption)",
        loader_images_per_sec,
        loader_images_per_sec / train_images_per_sec
    ));
    Ok(())
}
