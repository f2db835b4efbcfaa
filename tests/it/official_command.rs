//! `dinoscope official-command`: the printed `torchrun … main_dino.py` arguments go through the
//! real main_dino.py argument parser (tests/fixtures/official/main_dino_args.py, copied from
//! facebookresearch/dino 7c446df) with python3, and every value comes back as the config has it.

use dinoscope::config::Config;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn official_command(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_dinoscope"))
        .arg("official-command")
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The shell words of the launch line that starts with `launcher`, continuation lines joined.
fn launch_words(text: &str, launcher: &str) -> Vec<String> {
    let start = text
        .find(&format!("\n{launcher} "))
        .unwrap_or_else(|| panic!("no `{launcher}` line in\n{text}"));
    let block: String = text[start + 1..]
        .split("\n\n")
        .next()
        .unwrap()
        .replace("\\\n", " ");
    // A small POSIX-like split: bare words and single-quoted ones (the writer's quoting).
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut started = false;
    for c in block.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                started = true;
            }
            c if c.is_whitespace() && !quoted => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            c => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(word);
    }
    words
}

/// main_dino.py's parser's Namespace for these arguments, as JSON.
fn parse_with_main_dino(argv: &[String]) -> serde_json::Map<String, Value> {
    let parser =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/official/main_dino_args.py");
    let output = Command::new("python3")
        .arg(&parser)
        .args(argv)
        .output()
        .expect("python3 runs main_dino.py's parser (CI has it; install python3 to run this test)");
    assert!(
        output.status.success(),
        "main_dino.py's parser refused {argv:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    match serde_json::from_slice(&output.stdout).unwrap() {
        Value::Object(map) => map,
        other => panic!("not a Namespace: {other}"),
    }
}

fn after_script(words: &[String]) -> Vec<String> {
    let at = words.iter().position(|w| w == "main_dino.py").unwrap();
    words[at + 1..].to_vec()
}

fn check_round_trip(config: &Config, args: &serde_json::Map<String, Value>) {
    let f = |key: &str| {
        args[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} = {}", args[key]))
    };
    let u = |key: &str| args[key].as_u64().unwrap() as usize;
    let b = |key: &str| args[key].as_bool().unwrap();
    let pair = |key: &str| -> [f64; 2] {
        let values: Vec<f64> = args[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        [values[0], values[1]]
    };
    let (d, o) = (&config.dino, &config.optim);
    let (warmup_temp, temp, warmup_epochs) = if d.sharpening {
        (
            d.warmup_teacher_temp,
            d.teacher_temp,
            d.warmup_teacher_temp_epochs,
        )
    } else {
        (d.student_temp, d.student_temp, 0)
    };
    let arch = match config.vit_arch().embed_dim {
        w if w <= 288 => "vit_tiny",
        w if w <= 576 => "vit_small",
        _ => "vit_base",
    };
    assert_eq!(args["arch"], arch);
    assert_eq!(u("patch_size"), config.model.patch_size);
    assert_eq!(u("out_dim"), d.out_dim);
    assert_eq!(b("norm_last_layer"), d.norm_last_layer);
    assert_eq!(f("momentum_teacher"), d.momentum_teacher);
    assert_eq!(f("warmup_teacher_temp"), warmup_temp);
    assert_eq!(f("teacher_temp"), temp);
    assert_eq!(u("warmup_teacher_temp_epochs"), warmup_epochs);
    assert!(!b("use_fp16"), "dinoscope trains in f32");
    assert_eq!(f("weight_decay"), o.weight_decay);
    assert_eq!(f("weight_decay_end"), o.weight_decay_end);
    assert_eq!(f("clip_grad"), o.clip_grad);
    assert_eq!(u("batch_size_per_gpu"), o.batch_size_per_gpu);
    assert_eq!(u("epochs"), o.epochs);
    assert_eq!(u("freeze_last_layer"), o.freeze_last_layer);
    assert_eq!(f("lr"), o.lr * o.lr_scale);
    assert_eq!(f("min_lr"), o.min_lr * o.lr_scale);
    assert_eq!(u("warmup_epochs"), o.warmup_epochs);
    assert_eq!(f("drop_path_rate"), config.model.drop_path_rate);
    assert_eq!(pair("global_crops_scale"), d.global_crops_scale);
    assert_eq!(u("local_crops_number"), d.local_crops_number);
    assert_eq!(pair("local_crops_scale"), d.local_crops_scale);
    assert_eq!(u("seed") as u64, config.seed);
    assert_eq!(args["optimizer"], "adamw");
}

#[test]
fn every_preset_round_trips_through_the_real_main_dino_parser() {
    for (name, _) in dinoscope::config::PRESETS {
        let text = official_command(&["--preset", name, "--gpus", "4"]);
        let torchrun = launch_words(&text, "torchrun");
        assert_eq!(torchrun[..2], ["torchrun", "--nproc_per_node=4"]);
        let module = launch_words(&text, "python -m torch.distributed.run");
        assert_eq!(after_script(&module), after_script(&torchrun), "{name}");
        let args = parse_with_main_dino(&after_script(&torchrun));
        check_round_trip(&Config::preset(name).unwrap(), &args);
        assert_eq!(args["output_dir"], "./dino_output", "{name}");
        assert!(
            text.trim_end().ends_with("dinoscope watch ./dino_output")
                || text
                    .lines()
                    .last()
                    .unwrap()
                    .starts_with("dinoscope watch ./dino_output "),
            "{text}"
        );
    }
}

#[test]
fn a_run_folder_gives_its_start_and_names_its_toggles() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let out = dir.path().join("my out");
    let mut args: Vec<&str> = vec!["train", "--out", run.to_str().unwrap(), "--steps", "3"];
    args.extend(crate::cli::MICRO);
    args.extend([
        "--set",
        "dino.sharpening=false",
        "--set",
        "optim.lr_scale=0.5",
    ]);
    args.extend([
        "--set",
        "data.knn_every_epochs=0",
        "--toggle-at",
        "1:local_crops=0",
    ]);
    let status = Command::new(env!("CARGO_BIN_EXE_dinoscope"))
        .args(&args)
        .arg("--log-every")
        .arg("0")
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let text = official_command(&[
        run.to_str().unwrap(),
        "--gpus",
        "2",
        "--output-dir",
        out.to_str().unwrap(),
    ]);
    assert!(text.contains("local crops = 0 at step 1"), "{text}");
    assert!(text.contains("sharpening off"), "{text}");
    let parsed = parse_with_main_dino(&after_script(&launch_words(&text, "torchrun")));
    let config = Config::from_file(&run.join("config.toml")).unwrap();
    // The command reproduces the start: the local crops before the toggle.
    let mut start = config.clone();
    start.dino.local_crops_number = Config::preset("tiny").unwrap().dino.local_crops_number;
    check_round_trip(&start, &parsed);
    assert_eq!(parsed["output_dir"], out.to_str().unwrap());
    assert!(
        text.contains(&format!("dinoscope watch '{}'", out.display())),
        "{text}"
    );
}

#[test]
fn a_folder_without_a_config_is_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_dinoscope"))
        .args(["official-command", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("config.toml"), "{stderr}");
}
