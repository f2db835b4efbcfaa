//! Bad input gives clear errors naming the file/key and the fix, never a panic.

use crate::attention::max_abs_diff;
use burn::prelude::*;
use dinoscope::config::{Config, DataSource};
use dinoscope::train::trainer::{TrainError, Trainer};
use std::path::Path;

#[test]
fn missing_config_file_names_it() {
    let err = Config::from_file(Path::new("no/such/dino.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no/such/dino.toml") && err.contains("cannot read"),
        "{err}"
    );
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.toml");
    std::fs::write(&path, "seed = 1\n\n[optim]\nlr = 0.001\nwarmup_epoch = 3\n").unwrap();
    let err = Config::from_file(&path).unwrap_err().to_string();
    assert!(err.contains("typo.toml:5"), "{err}");
    assert!(err.contains("warmup_epoch"), "{err}");
}

#[test]
fn out_of_range_names_key_and_allowed_range() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("range.toml");
    std::fs::write(&path, "[dino]\nmomentum_teacher = 1.5\n").unwrap();
    let err = Config::from_file(&path).unwrap_err().to_string();
    assert!(err.contains("range.toml:2"), "{err}");
    assert!(
        err.contains("dino.momentum_teacher") && err.contains("0 ..= 1"),
        "{err}"
    );
}

fn folder_config(path: &Path) -> Config {
    let mut config = Config::preset("tiny").unwrap();
    config.data.source = DataSource::Folder;
    config.data.path = path.display().to_string();
    config.optim.batch_size_per_gpu = 2;
    config.dino.local_crops_number = 1;
    config.model.embed_dim = Some(16);
    config.model.depth = Some(1);
    config.model.num_heads = Some(2);
    config.dino.out_dim = 16;
    config.dino.hidden_dim = 16;
    config.dino.bottleneck_dim = 8;
    config
}

#[test]
fn empty_image_folder_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("cats")).unwrap();
    let err = Trainer::new(folder_config(dir.path()), Device::flex(), Some(1))
        .err()
        .expect("an empty folder must not train");
    assert!(matches!(err, TrainError::Data(_)), "{err}");
    assert!(
        err.to_string().to_lowercase().contains("empty") || err.to_string().contains("no image"),
        "{err}"
    );
}

#[test]
fn corrupt_image_is_skipped_with_a_warning_and_training_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    for class in ["a", "b"] {
        let class_dir = dir.path().join(class);
        std::fs::create_dir(&class_dir).unwrap();
        for i in 0..3u8 {
            let img = image::RgbImage::from_fn(40, 40, |x, y| {
                image::Rgb([x as u8 * 6, y as u8 * 6, i * 80])
            });
            img.save(class_dir.join(format!("{i}.png"))).unwrap();
        }
    }
    std::fs::write(
        dir.path().join("a").join("broken.jpg"),
        b"definitely not a jpeg",
    )
    .unwrap();
    let mut trainer = Trainer::new(folder_config(dir.path()), Device::flex(), Some(8)).unwrap();
    let mut warnings = Vec::new();
    for _ in 0..6 {
        let m = trainer
            .step()
            .expect("training goes on past a corrupt image");
        assert!(m.loss.is_finite());
        warnings.extend(m.warnings);
    }
    assert!(
        warnings.iter().any(|w| w.contains("broken.jpg")),
        "{warnings:?}"
    );
}

#[test]
fn missing_image_folder_names_it() {
    let err = Trainer::new(
        folder_config(Path::new("/no/such/folder")),
        Device::flex(),
        Some(1),
    )
    .err()
    .expect("must fail");
    assert!(err.to_string().contains("/no/such/folder"), "{err}");
}

fn official_vit(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/official_vit")
        .join(name)
}

fn three_heads() -> dinoscope::store::weights::ArchOverrides {
    dinoscope::store::weights::ArchOverrides {
        num_heads: Some(3),
        ..Default::default()
    }
}

/// The attention maps of `weights` on the fixture image at its own size, heads concatenated.
fn fixture_maps(weights: &Path) -> (Vec<f32>, dinoscope::store::weights::BackboneInfo) {
    use dinoscope::store::weights::{load_backbone, Network};
    let device = Device::flex();
    let loaded = load_backbone(weights, Network::Teacher, &three_heads(), &device)
        .unwrap_or_else(|err| panic!("{}: {err}", weights.display()));
    let image = dinoscope::data::load_rgb(&official_vit("image.png")).unwrap();
    let maps =
        dinoscope::analysis::attention::attention_maps(&loaded.backbone, &image, (56, 40), &device)
            .unwrap();
    (maps.heads.concat(), loaded.info)
}

/// `backbone_f16.pth` is backbone.pth after `.half()` (scripts/make_half_fixture.py): it
/// used to load as f16 parameters and panic in the first f32 matmul.
#[test]
fn half_precision_pth_is_converted_to_f32_on_load() {
    let (reference, info) = fixture_maps(&official_vit("backbone.pth"));
    assert_eq!(info.converted_from, None);
    assert!(
        !info.describe().contains("converted"),
        "{}",
        info.describe()
    );
    let (half, info) = fixture_maps(&official_vit("backbone_f16.pth"));
    assert_eq!(info.converted_from.as_deref(), Some("f16"));
    assert!(
        info.describe().contains("converted f16 → f32"),
        "{}",
        info.describe()
    );
    let diff = max_abs_diff(&half, &reference);
    assert!(diff < 1e-3, "f16 maps differ from f32 by {diff}");
}

/// f16 and bf16 safetensors in the official layout, written from the f32 fixture by burn's
/// own store (BurnToPyTorchAdapter, then a cast), load and give the f32 maps.
#[test]
fn half_precision_safetensors_are_converted_to_f32_on_load() {
    use burn::store::{
        BurnToPyTorchAdapter, FloatCastAdapter, ModuleAdapter, ModuleSnapshot, ModuleStore,
        SafetensorsStore,
    };
    use burn::tensor::DType;
    use dinoscope::store::weights::{load_backbone, Network};
    let (reference, _) = fixture_maps(&official_vit("backbone.safetensors"));
    let f32_backbone = load_backbone(
        &official_vit("backbone.safetensors"),
        Network::Teacher,
        &three_heads(),
        &Device::flex(),
    )
    .unwrap()
    .backbone;
    let dir = tempfile::tempdir().unwrap();
    // bf16 keeps 8 bits of mantissa against f16's 11.
    for (dtype, label, tolerance) in [(DType::F16, "f16", 1e-3), (DType::BF16, "bf16", 1e-2)] {
        let path = dir.path().join(format!("backbone_{label}.safetensors"));
        let mut store = SafetensorsStore::from_file(&path)
            .with_to_adapter(BurnToPyTorchAdapter.chain(FloatCastAdapter::to(dtype)));
        f32_backbone.save_into(&mut store).unwrap();
        let mut written = SafetensorsStore::from_file(&path);
        let tensors = written.get_all_tensors().unwrap();
        assert!(
            tensors.values().all(|t| t.dtype == dtype),
            "{label}: the file must really hold {dtype:?}"
        );
        let (maps, info) = fixture_maps(&path);
        assert_eq!(info.converted_from.as_deref(), Some(label));
        let diff = max_abs_diff(&maps, &reference);
        assert!(diff < tolerance, "{label} maps differ from f32 by {diff}");
    }
}

fn dinoscope_bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_dinoscope"))
}

/// `dinoscope attention` of an `official_vit` fixture's weights on its image into `out`.
fn attention_cli(weights: &str, heads: &str, size_px: &str, out: &Path) -> std::process::Command {
    let mut command = dinoscope_bin();
    command
        .args([
            "attention",
            "--heads",
            heads,
            "--size",
            size_px,
            "--weights",
        ])
        .arg(official_vit(weights))
        .arg("--image")
        .arg(official_vit("image.png"))
        .arg("--out")
        .arg(out);
    command
}

#[test]
fn attention_cli_loads_half_precision_weights_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let output = attention_cli("backbone_f16.pth", "3", "32", &dir.path().join("maps"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.contains("converted f16 → f32"), "{stdout}");
    assert!(dir.path().join("maps/attention.npy").is_file());
}

/// A head count that does not divide the width names the flag and the counts that fit
/// (RELIABILITY.md's campaign found it naming only the width).
#[test]
fn a_head_count_that_does_not_divide_the_width_names_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let output = attention_cli("backbone.pth", "5", "32", &dir.path().join("maps"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "--heads 5 does not divide the width 48: give one of 1, 2, 3, 4, 6, 8, 12, 16, 24, 48"
        ),
        "{stderr}"
    );
    assert!(!dir.path().join("maps").exists());
}

/// Runs `command` with stdout a pipe whose reader goes away: at once (`… | head -0`: every
/// line is written to a closed pipe, so the test does not race the output), or after the
/// first line (`… | head -1`). Returns the exit status and stderr.
fn with_closed_stdout(
    command: &mut std::process::Command,
    after_first_line: bool,
) -> (std::process::ExitStatus, String) {
    use std::io::BufRead;
    use std::process::Stdio;
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    if after_first_line {
        let mut first = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut first)
            .unwrap();
        assert!(!first.is_empty(), "no first line");
    } else {
        drop(stdout);
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn attention_knn_and_bench_end_quietly_on_a_closed_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let maps = dir.path().join("maps");
    let (status, stderr) = with_closed_stdout(
        dinoscope_bin()
            .args(["attention", "--heads", "3", "--size", "32", "--weights"])
            .arg(official_vit("backbone.pth"))
            .arg("--image")
            .arg(official_vit("image.png"))
            .arg("--out")
            .arg(&maps),
        false,
    );
    assert!(status.success(), "attention: {status}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        maps.join("masks.npy").is_file(),
        "the files are written all the same"
    );

    let (status, stderr) = with_closed_stdout(
        dinoscope_bin()
            .args([
                "knn",
                "--device",
                "cpu",
                "--heads",
                "3",
                "--max-train",
                "16",
                "--max-val",
                "8",
                "--weights",
            ])
            .arg(official_vit("backbone.pth")),
        false,
    );
    assert!(status.success(), "knn: {status}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let (status, stderr) = with_closed_stdout(
        dinoscope_bin().args([
            "bench",
            "--workload",
            "attention",
            "--device",
            "cpu",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--size",
            "64",
        ]),
        false,
    );
    assert!(status.success(), "bench: {status}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// The same micro model as the CLI tests.
use super::cli::{train_micro, MICRO};

/// `train … | head -1`: training goes on after the reader left and saves everything; then
/// `plot` of the run into a closed pipe ends quietly too.
#[test]
fn train_and_plot_survive_a_closed_pipe_and_save_everything() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let (status, stderr) = with_closed_stdout(
        dinoscope_bin()
            .args([
                "train",
                "--steps",
                "6",
                "--device",
                "cpu",
                "--log-every",
                "1",
            ])
            .arg("--out")
            .arg(&run)
            .args(MICRO),
        true,
    );
    assert!(status.success(), "train: {status}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(run.join("teacher.bpk").is_file(), "{stderr}");
    assert!(run.join("checkpoint-00000006").is_dir(), "{stderr}");
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert_eq!(metrics.lines().count(), 1 + 6, "{metrics}");

    let figure = dir.path().join("fig.svg");
    let (status, stderr) = with_closed_stdout(
        dinoscope_bin()
            .args(["plot", "--runs"])
            .arg(&run)
            .arg("--out")
            .arg(&figure),
        false,
    );
    assert!(status.success(), "plot: {status}: {stderr}");
    assert!(figure.is_file());
}

#[test]
fn a_local_crop_larger_than_the_global_crop_is_refused() {
    let err = Config::preset("tiny")
        .unwrap()
        .with_overrides(&["data.local_crop_size=48".into()])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--set data.local_crop_size=48")
            && err
                .contains("`data.local_crop_size` = 48 is larger than data.global_crop_size = 32")
            && err.contains("lower data.local_crop_size or raise data.global_crop_size"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crops.toml");
    std::fs::write(
        &path,
        "[data]\nglobal_crop_size = 32\nlocal_crop_size = 48\n",
    )
    .unwrap();
    let err = Config::from_file(&path).unwrap_err().to_string();
    assert!(
        err.contains("crops.toml:3") && err.contains("data.local_crop_size"),
        "{err}"
    );
    // Equal sizes stay allowed.
    Config::preset("tiny")
        .unwrap()
        .with_overrides(&["data.local_crop_size=32".into()])
        .unwrap();
}

fn attention_into(out: &Path) -> std::process::Command {
    attention_cli("backbone.pth", "3", "64", out)
}

/// Every file left in `dir` is complete: no zero-byte or truncated output, no temporary.
fn assert_only_complete_files(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!name.ends_with(".partial"), "temporary left: {name}");
        if path.is_dir() {
            continue;
        }
        assert!(std::fs::metadata(&path).unwrap().len() > 0, "empty: {name}");
        if name.ends_with(".png") {
            image::open(&path).unwrap_or_else(|err| panic!("{name} is truncated: {err}"));
        } else if name.ends_with(".npy") {
            dinoscope::store::npy::read_npy(&path)
                .unwrap_or_else(|err| panic!("{name} is truncated: {err}"));
        }
    }
}

#[test]
fn attention_output_failures_name_the_file_and_leave_no_partial_outputs() {
    let dir = tempfile::tempdir().unwrap();
    // An --out below a regular file.
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let output = attention_into(&file.join("maps")).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!("cannot create {}", file.join("maps").display()))
            && stderr.matches("os error").count() == 1,
        "{stderr}"
    );

    // One output cannot be written (a directory holds its name): the error names that file,
    // every other output is complete.
    let out = dir.path().join("blocked");
    std::fs::create_dir_all(out.join("attention.npy").join("x")).unwrap();
    let output = attention_into(&out).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!(
            "cannot write {}",
            out.join("attention.npy").display()
        )) && stderr.matches("os error").count() == 1
            && !stderr.contains("panicked"),
        "{stderr}"
    );
    assert!(out.join("overlay_th0.6_mean.png").is_file());
    assert_only_complete_files(&out);
}

/// A full disk, simulated with a 1 KiB file-size limit (EFBIG instead of ENOSPC; SIGXFSZ
/// ignored so the write fails instead of killing the process).
#[cfg(target_os = "linux")]
#[test]
fn attention_on_a_full_disk_leaves_no_truncated_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("maps");
    let attention = attention_into(&out);
    let mut script = format!(
        "trap '' XFSZ; ulimit -f 2; exec '{}'",
        env!("CARGO_BIN_EXE_dinoscope")
    );
    for arg in attention.get_args() {
        script.push_str(&format!(" '{}'", arg.to_string_lossy()));
    }
    let output = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot write {}", out.display()))
            && stderr.contains("File too large")
            && !stderr.contains(".partial")
            && stderr.matches("os error").count() == 1,
        "{stderr}"
    );
    assert_only_complete_files(&out);
}

#[test]
fn an_os_error_is_printed_once() {
    for args in [
        vec!["train", "--config", "/no/such/dino.toml"],
        vec![
            "attention",
            "--heads",
            "3",
            "--weights",
            "tests/fixtures/official_vit/backbone.pth",
            "--image",
            "/no/such/image.png",
        ],
    ] {
        let output = dinoscope_bin()
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success());
        assert_eq!(
            stderr.matches("os error 2").count(),
            1,
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn stl10_messages_name_the_archive_once() {
    use dinoscope::data::datasets::{Stl10, StlSplit};
    let dir = tempfile::tempdir().unwrap();
    let message = |path: &Path| {
        Stl10::open(path, StlSplit::Unlabeled)
            .err()
            .expect("must fail")
            .to_string()
    };
    let missing = message(&dir.path().join("stl10_binary"));
    assert!(
        missing.contains("download stl10_binary.tar.gz (the binary version"),
        "{missing}"
    );
    let empty = message(dir.path());
    std::fs::write(dir.path().join("unlabeled_X.bin"), [0u8; 5]).unwrap();
    let cut = message(dir.path());
    for err in [&missing, &empty, &cut] {
        assert!(!err.contains("re-extract re-extract"), "{err}");
        assert!(!err.contains("download re-extract"), "{err}");
    }
    assert!(
        empty.contains("lacks unlabeled_X.bin")
            && empty.contains("; re-extract stl10_binary.tar.gz"),
        "{empty}"
    );
    assert!(
        cut.contains("is 5 bytes") && cut.contains("; re-extract stl10_binary.tar.gz"),
        "{cut}"
    );
}

#[test]
fn size_messages_say_which_side_and_which_forms_are_valid() {
    use dinoscope::analysis::attention::ImageSize;
    let err = ImageSize::parse("10x").unwrap_err();
    assert!(
        err.contains("the height `` is not a whole number; use N or WxH"),
        "{err}"
    );
    // plot takes only WxH, and says so before reading any run.
    for (size, expected) in [
        (
            "1600x",
            "--size 1600x: the height `` is not a whole number; use WxH in pixels",
        ),
        ("480", "--size 480: use WxH in pixels, e.g. 1600x600"),
        (
            "50x600",
            "--size 50x600: the width 50 is out of range; allowed 100 ..= 10000 px",
        ),
    ] {
        let output = dinoscope_bin()
            .args([
                "plot",
                "--runs",
                "/no/such/runs",
                "--out",
                "/no/such/fig.png",
                "--size",
                size,
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success());
        assert!(
            stderr.contains(expected) && !stderr.contains("N or WxH"),
            "{stderr}"
        );
    }
}

/// A config whose step needs terabytes: refused before any model is built, with the estimate
/// and the keys of its largest part.
#[cfg(target_os = "linux")]
#[test]
fn a_config_that_cannot_fit_in_memory_is_refused_before_building() {
    let sets = [
        "model.embed_dim=8192",
        "model.depth=64",
        "model.num_heads=64",
        "optim.batch_size_per_gpu=4096",
        "data.num_images=4096",
        "dino.out_dim=262144",
    ];
    let config = Config::preset("tiny")
        .unwrap()
        .with_overrides(&sets.map(String::from))
        .unwrap();
    let started = std::time::Instant::now();
    let err = Trainer::new(config, Device::flex(), Some(1))
        .err()
        .expect("must be refused");
    assert!(started.elapsed().as_secs() < 5, "refused before building");
    assert!(matches!(err, TrainError::OutOfMemory { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("not enough memory")
            && text.contains("GiB")
            && text.contains("are available")
            && text.contains("lower "),
        "{text}"
    );

    let dir = tempfile::tempdir().unwrap();
    let mut command = dinoscope_bin();
    command
        .args(["train", "--steps", "1", "--device", "cpu", "--out"])
        .arg(dir.path().join("run"));
    for set in sets {
        command.args(["--set", set]);
    }
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("not enough memory")
            && stderr.contains("lower optim.batch_size_per_gpu (4096)"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("run").exists(),
        "no empty run directory left"
    );
}

/// Issue 20 case 6: a checkpoint whose config.toml now describes another architecture is
/// refused in one line naming both, not with a dump of tensor shapes.
#[test]
fn resuming_under_a_changed_architecture_names_both_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let output = train_micro(&run, 3).output().unwrap();
    assert!(output.status.success());
    let config = run.join("checkpoint-00000003/config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("depth = 1"), "{text}");
    std::fs::write(&config, text.replace("depth = 1", "depth = 2")).unwrap();
    let output = dinoscope_bin()
        .args(["train", "--device", "cpu", "--resume"])
        .arg(&run)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("checkpoint is vit_micro (16 wide, 1 blocks, 2 heads")
            && stderr.contains("config says vit_micro (16 wide, 2 blocks, 2 heads")
            && stderr.contains("config.toml"),
        "{stderr}"
    );
    assert!(stderr.len() < 800, "one line, not a dump: {stderr}");
}

/// Issue 20 case 8: every `--toggle-at` is checked before the first step, its value and its
/// step, and the message names `--toggle-at`.
#[test]
fn toggle_at_values_and_steps_are_checked_before_the_first_step() {
    for (toggle, expect) in [
        (
            "2:teacher_temp=5",
            "teacher temperature = 5 is out of range",
        ),
        ("9:centering=off", "after the last step"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let output = train_micro(&run, 4)
            .args(["--toggle-at", toggle])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{toggle}");
        assert!(
            stderr.contains("--toggle-at") && stderr.contains(expect),
            "{toggle}: {stderr}"
        );
        let rows = std::fs::read_to_string(run.join("metrics.csv"))
            .map(|csv| csv.lines().count().saturating_sub(1))
            .unwrap_or(0);
        assert_eq!(rows, 0, "{toggle}: no step ran");
    }
}

/// Issue 20 case 11: a corrupt image met in every epoch is reported once per run, as one
/// plain `warning:` line (no log-format duplicate, no colour codes into a file).
#[test]
fn a_corrupt_image_is_reported_once_without_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let class_dir = dir.path().join("shapes");
    std::fs::create_dir(&class_dir).unwrap();
    for i in 0..15u8 {
        let img = image::RgbImage::from_fn(40, 40, |x, y| {
            image::Rgb([x as u8 * 6, y as u8 * 6, i * 16])
        });
        img.save(class_dir.join(format!("{i}.png"))).unwrap();
    }
    std::fs::write(class_dir.join("broken.png"), b"not a png").unwrap();
    let output = train_micro(&dir.path().join("run"), 6)
        .args(["--set", "data.source=\"folder\"", "--set"])
        .arg(format!("data.path={:?}", dir.path().display().to_string()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(
        stderr.matches("broken.png").count(),
        1,
        "3 epochs, one report: {stderr}"
    );
    assert!(
        stderr.contains("warning: skipped corrupt image"),
        "{stderr}"
    );
    assert!(!stderr.contains('\u{1b}'), "no colour codes: {stderr:?}");
}

/// Issue 20 case 6: when the newest checkpoint is damaged, the message names the file and the
/// older checkpoint to resume instead (and resuming that one works).
#[test]
fn a_damaged_newest_checkpoint_points_to_the_older_one() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let output = train_micro(&run, 4)
        .args(["--checkpoint-every", "2"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let student = run.join("checkpoint-00000004/student.bpk");
    let bytes = std::fs::read(&student).unwrap();
    std::fs::write(&student, &bytes[..bytes.len() / 2]).unwrap();
    let output = dinoscope_bin()
        .args(["train", "--device", "cpu", "--resume"])
        .arg(&run)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("checkpoint-00000004/student.bpk")
            && stderr.contains("damaged or incomplete")
            && stderr.contains("try `dinoscope train --resume")
            && stderr.contains("checkpoint-00000002`"),
        "{stderr}"
    );
    // Not the generic hint, which names what was passed (issue 20 case 6).
    assert!(!stderr.contains("Pass a run directory"), "{stderr}");
    assert!(!stderr.contains("Io("), "no debug dump: {stderr}");
    let output = dinoscope_bin()
        .args(["train", "--device", "cpu", "--log-every", "0", "--resume"])
        .arg(run.join("checkpoint-00000002"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Issue 20 case 2: `plot --out fig.png` never touches a `fig.tmp` the user owns and leaves no
/// temporary file behind.
#[test]
fn plot_keeps_the_users_fig_tmp() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let output = train_micro(&run, 2).output().unwrap();
    assert!(output.status.success());
    let figures = dir.path().join("figures");
    std::fs::create_dir(&figures).unwrap();
    for name in ["fig.tmp", "fig.svg.tmp", "fig.png.tmp"] {
        std::fs::write(figures.join(name), "the user's notes").unwrap();
    }
    for out in ["fig.png", "fig.svg"] {
        let output = dinoscope_bin()
            .args(["plot", "--runs"])
            .arg(&run)
            .arg("--out")
            .arg(figures.join(out))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut names: Vec<String> = std::fs::read_dir(&figures)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "fig.png",
            "fig.png.tmp",
            "fig.svg",
            "fig.svg.tmp",
            "fig.tmp"
        ]
    );
    for name in ["fig.tmp", "fig.svg.tmp", "fig.png.tmp"] {
        assert_eq!(
            std::fs::read_to_string(figures.join(name)).unwrap(),
            "the user's notes"
        );
    }
}

/// Issue 14 §5: bad input across the subcommands exits with status 2 (as clap's own usage
/// errors), with a message naming the input, and never a panic. One row per case.
#[test]
fn bad_inputs_exit_2_with_a_message_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).display().to_string();
    let fixture = |name: &str| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/official_vit")
            .join(name)
            .display()
            .to_string()
    };
    std::fs::write(d("zero.png"), b"").unwrap();
    std::fs::write(d("text.jpg"), b"this is not a jpeg").unwrap();
    std::fs::write(d("unknown.toml"), "[model]\nwidth = 3\n").unwrap();
    std::fs::create_dir(d("empty")).unwrap();
    std::fs::create_dir(d("run")).unwrap();
    std::fs::write(d("run/metrics.csv"), "step,epoch\n").unwrap();
    let image = fixture("image.png");
    let weights = fixture("backbone.pth");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["train".into(), "--config".into(), d("missing.toml")],
            "missing.toml",
        ),
        (
            vec!["train".into(), "--config".into(), d("unknown.toml")],
            "width",
        ),
        (
            vec!["train".into(), "--preset".into(), "nope".into()],
            "nope",
        ),
        (
            vec!["train".into(), "--steps".into(), "0".into()],
            "--steps must be at least 1",
        ),
        (
            vec!["train".into(), "--epochs".into(), "0".into()],
            "--epochs must be at least 1",
        ),
        (
            vec!["train".into(), "--set".into(), "model.depth=-1".into()],
            "model.depth",
        ),
        (
            vec!["train".into(), "--set".into(), "dino.out_dim=1".into()],
            "dino.out_dim",
        ),
        (
            vec![
                "train".into(),
                "--set".into(),
                "data.global_crop_size=30".into(),
            ],
            "global_crop_size",
        ),
        (
            vec![
                "train".into(),
                "--set".into(),
                "data.local_crop_size=48".into(),
            ],
            "local_crop_size",
        ),
        (
            vec![
                "train".into(),
                "--set".into(),
                "model.arch=\"vit_huge\"".into(),
            ],
            "vit_huge",
        ),
        (
            vec![
                "train".into(),
                "--set".into(),
                "dino.global_crops_scale=[0.4,".into(),
            ],
            "not valid TOML",
        ),
        (
            vec![
                "train".into(),
                "--toggle-at".into(),
                "x:centering=off".into(),
            ],
            "--toggle-at x:centering=off",
        ),
        (
            vec!["train".into(), "--toggle-at".into(), "3:warp=9".into()],
            "--toggle-at 3:warp=9",
        ),
        (
            vec![
                "train".into(),
                "--set".into(),
                "data.source=\"folder\"".into(),
                "--set".into(),
                format!("data.path={:?}", d("empty")),
            ],
            "empty",
        ),
        (
            vec!["train".into(), "--resume".into(), d("empty")],
            "no complete checkpoint",
        ),
        (
            vec![
                "attention".into(),
                "--weights".into(),
                d("missing.pth"),
                "--image".into(),
                image.clone(),
            ],
            "missing.pth",
        ),
        (
            vec![
                "attention".into(),
                "--heads".into(),
                "3".into(),
                "--weights".into(),
                weights.clone(),
                "--image".into(),
                d("zero.png"),
            ],
            "zero.png",
        ),
        (
            vec![
                "attention".into(),
                "--heads".into(),
                "3".into(),
                "--weights".into(),
                weights.clone(),
                "--image".into(),
                d("text.jpg"),
            ],
            "text.jpg",
        ),
        (
            vec![
                "attention".into(),
                "--weights".into(),
                image.clone(),
                "--image".into(),
                image.clone(),
            ],
            "image.png",
        ),
        (
            vec![
                "attention".into(),
                "--heads".into(),
                "3".into(),
                "--weights".into(),
                weights.clone(),
                "--image".into(),
                image.clone(),
                "--size".into(),
                "0x0".into(),
            ],
            "--size",
        ),
        (
            vec![
                "attention".into(),
                "--heads".into(),
                "3".into(),
                "--weights".into(),
                weights.clone(),
                "--image".into(),
                image.clone(),
                "--threshold".into(),
                "2".into(),
            ],
            "--threshold 2",
        ),
        (
            vec![
                "plot".into(),
                "--runs".into(),
                d("missing"),
                "--out".into(),
                d("f.svg"),
            ],
            "missing",
        ),
        (
            vec![
                "plot".into(),
                "--runs".into(),
                d("empty"),
                "--out".into(),
                d("f.svg"),
            ],
            "empty",
        ),
        (
            vec![
                "plot".into(),
                "--runs".into(),
                d("run"),
                "--out".into(),
                d("f.svg"),
                "--size".into(),
                "10x".into(),
            ],
            "--size 10x",
        ),
        (
            vec!["knn".into(), "--weights".into(), d("missing.pth")],
            "missing.pth",
        ),
    ];
    for (args, named) in &cases {
        let output = dinoscope_bin()
            .args(args)
            .args(
                ["--device", "cpu"]
                    .iter()
                    .filter(|_| matches!(args[0].as_str(), "train" | "attention" | "knn")),
            )
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(named),
            "{args:?} should name {named}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// Issue 14 §4: `--device gpu` without a hardware adapter (llvmpipe does not count) is a usage
/// error naming the way out, before any run directory exists. Skipped where a GPU exists.
#[test]
fn device_gpu_without_a_hardware_adapter_exits_2_and_says_what_to_use() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dinoscope"))
        .args(["train", "--device", "gpu", "--steps", "1", "--out"])
        .arg(&run)
        .args(crate::cli::MICRO)
        .output()
        .unwrap();
    if output.status.success() {
        eprintln!("skipped: this machine has a hardware GPU");
        return;
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no hardware GPU adapter") && stderr.contains("--device cpu"),
        "{stderr}"
    );
    assert!(!run.exists(), "nothing written");
}
