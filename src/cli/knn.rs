//! `dinoscope knn`: k-NN accuracy of saved weights next to the same network at random init.

use super::output::Printer;
use super::{load_config, ConfigArgs};
use anyhow::{bail, Result};
use clap::Args;
use dinoscope::config::Config;
use dinoscope::device::select_device;
use std::path::PathBuf;

#[derive(Args)]
pub struct KnnArgs {
    /// Weights: a run directory of `train` (its config is used for the data unless
    /// --config/--preset is given), a checkpoint-<step>/ directory, or any file `attention` takes.
    #[arg(long, value_name = "FILE | DIR")]
    weights: PathBuf,
    #[command(flatten)]
    common: ConfigArgs,
    /// Neighbours (the reference: 20).
    #[arg(long, default_value_t = 20)]
    k: usize,
    /// Vote temperature (the reference: 0.07).
    #[arg(long, default_value_t = 0.07)]
    temperature: f64,
    /// Images of the train split used as memory (evenly spread).
    #[arg(long, default_value_t = 5000)]
    max_train: usize,
    /// Images of the val split used as queries.
    #[arg(long, default_value_t = 1000)]
    max_val: usize,
    /// Heads, for widths without an official head count.
    #[arg(long)]
    heads: Option<usize>,
}

/// Long: the subcommand's pipeline in order: weights, data, both networks, the report.
pub fn run(args: KnnArgs) -> Result<()> {
    use dinoscope::analysis::knn::{EvalData, KnnSettings};
    use dinoscope::store::weights::{load_backbone, ArchOverrides, Network};
    let selected = select_device(args.common.device)?;
    // A checkpoint directory: its teacher and config.
    let checkpoint_config = dinoscope::store::checkpoint::CheckpointFiles::in_dir(&args.weights);
    let (weights, run_config) = if checkpoint_config.state.is_file() {
        (checkpoint_config.teacher, checkpoint_config.config)
    } else {
        let (_, config) = dinoscope::store::checkpoint::run_files(&args.weights);
        (args.weights.clone(), config)
    };
    // Our runs carry their config: evaluate on the data they were trained on by default.
    let (config, label) =
        if args.common.config.is_none() && args.common.preset.is_none() && run_config.is_file() {
            let config = Config::from_file(&run_config)?.with_overrides(&args.common.overrides)?;
            (config, run_config.display().to_string())
        } else {
            load_config(&args.common)?
        };
    let Some(mut data) = EvalData::for_config(&config)? else {
        bail!(
            "{label}: data.source = {:?} has no labelled splits for k-NN; use a labelled dataset",
            config.data.source
        );
    };
    data.max_train = args.max_train.max(1);
    data.max_val = args.max_val.max(1);
    data.settings = KnnSettings {
        k: args.k.max(1),
        temperature: args.temperature,
        ..data.settings
    };
    let overrides = ArchOverrides {
        num_heads: args.heads,
        ..Default::default()
    };
    let loaded = if weights.extension().is_some_and(|e| e == "bpk") && weights.is_file() {
        // A checkpoint's teacher: the full model next to its config.
        let (model, _) =
            dinoscope::store::checkpoint::load_run_teacher(&weights, &selected.device)?;
        let info = load_backbone(
            weights.parent().unwrap_or(&weights),
            Network::Teacher,
            &overrides,
            &selected.device,
        )
        .map(|l| l.info)
        .ok();
        (model.backbone, info)
    } else {
        let l = load_backbone(&weights, Network::Teacher, &overrides, &selected.device)?;
        (l.backbone, Some(l.info))
    };
    let (backbone, info) = loaded;
    let description = info
        .as_ref()
        .map(|i| i.describe())
        .unwrap_or_else(|| weights.display().to_string());
    let mut out = Printer::default();
    out.line(&format!(
        "k-NN (k = {}, T = {}) of {description} on {} · {} · {} px crops",
        data.settings.k,
        data.settings.temperature,
        data.train.describe(),
        selected.description,
        data.settings.crop_px
    ));
    let random = dinoscope::model::VisionTransformer::new(
        &dinoscope::model::VitConfig {
            arch: info.as_ref().map_or(config.vit_arch(), |i| i.arch),
            patch_size: backbone.patch_size(),
            img_size: info
                .as_ref()
                .map_or(config.data.global_crop_size as usize, |i| i.img_size),
            drop_path_rate: 0.0,
        },
        &mut dinoscope::model::HostInit::new(config.seed),
        &selected.device,
    );
    let same_arch = random.embed_dim() == backbone.embed_dim();
    let mut rows = vec![("weights", &backbone)];
    if same_arch {
        rows.push(("random init", &random));
    }
    for (name, net) in rows {
        let result = data.knn(net, &selected.device)?;
        let jaccard = data
            .jaccard(net, &selected.device)
            .map(|j| {
                format!(
                    "  · attention Jaccard best head {:.1} % (head {}), mean map {:.1} % over {} images",
                    j.best, j.best_head, j.mean_map, j.images
                )
            })
            .unwrap_or_default();
        out.line(&format!(
            "{name:>12}: top-1 {:5.1} %  top-5 {:5.1} %  ({} train / {} val images, {:.1} s){jaccard}",
            result.top1, result.top5, result.train_images, result.val_images, result.elapsed_secs
        ));
    }
    if let Some(line) = best_without_labels(&weights) {
        out.line(&line);
    }
    Ok(())
}

/// For weights inside one of our runs: the step the run's effective rank peaked at, the
/// checkpoint to keep when there are no labels, and the checkpoints still on disk.
fn best_without_labels(weights: &std::path::Path) -> Option<String> {
    use dinoscope::store::checkpoint::list_checkpoints;
    use dinoscope::store::run::{BestRank, METRICS_FILE};
    let run_dir = weights
        .ancestors()
        .find(|dir| dir.join(METRICS_FILE).is_file())?;
    let best = BestRank::of_run(run_dir)?;
    let kept: Vec<String> = list_checkpoints(run_dir)
        .iter()
        .filter_map(|(_, c)| c.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    Some(format!(
        "best without labels: step {} (highest effective rank, {:.1}); checkpoints on disk: {}",
        best.step,
        best.effective_rank,
        if kept.is_empty() {
            "none".to_string()
        } else {
            kept.join(", ")
        }
    ))
}
