//! Issue 30: bad input to the features added since the first reliability suite (`watch`,
//! `ablate`, the attention layers, `plot --soak`): status 2 and a message naming the input and
//! the fix, never a panic, and nothing the user had is lost. The checkpoints are the official
//! run fixture's (tests/fixtures/official_run) and the ways real ones go wrong
//! (tests/fixtures/official_run_bad, scripts/make_bad_official_run_fixture.py).

use std::path::{Path, PathBuf};
use std::process::Output;

fn fixture(dir: &str, name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir)
        .join(name)
}

fn dinoscope(args: &[String], cwd: &Path) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_dinoscope"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

/// The fixture's settings and probe: each watch case is a second or two.
fn run_settings(run: &Path) -> Vec<String> {
    [
        "--heads",
        "2",
        "--global-crop",
        "16",
        "--local-crop",
        "8",
        "--local-crops",
        "2",
        "--probe",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([run.display().to_string()])
    .collect()
}

/// An official run folder `root/run` with `checkpoint` as its checkpoint0000.pth, the log
/// and the probe crops.
fn official_run(root: &Path, checkpoint: &Path) -> PathBuf {
    let run = root.join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::copy(checkpoint, run.join("checkpoint0000.pth")).unwrap();
    for name in ["log.txt", "probe_globals.npy", "probe_locals.npy"] {
        std::fs::copy(fixture("official_run", name), run.join(name)).unwrap();
    }
    run
}

fn good_checkpoint() -> PathBuf {
    fixture("official_run", "checkpoint0000.pth")
}

fn write_npy(path: &Path, shape: &[usize], value: f32) {
    let values = vec![value; shape.iter().product()];
    dinoscope::store::npy::write_npy_f32(path, shape, &values).unwrap();
}

fn s(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Prepares a case's fresh folder and returns the command line.
type Setup = Box<dyn Fn(&Path) -> Vec<String>>;

/// One case: what to set up in a fresh folder (returning the arguments) and what the message
/// must name.
struct Case {
    what: &'static str,
    setup: Setup,
    named: &'static [&'static str],
}

fn watch_case(
    what: &'static str,
    checkpoint: PathBuf,
    extra: &'static [&'static str],
    prepare: fn(&Path),
    named: &'static [&'static str],
) -> Case {
    Case {
        what,
        setup: Box::new(move |root| {
            let run = official_run(root, &checkpoint);
            prepare(&run);
            let mut args = s(&["watch"]);
            args.push(run.display().to_string());
            args.push("--once".into());
            // The fixture's settings, less those the case gives itself.
            let settings = run_settings(&run);
            for pair in settings.chunks(2) {
                if !extra.contains(&pair[0].as_str()) {
                    args.extend(pair.iter().cloned());
                }
            }
            args.extend(s(extra));
            args
        }),
        named,
    }
}

fn nothing(_: &Path) {}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                files.push((path, bytes));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn bad_inputs_of_watch_ablate_and_plot_exit_2_naming_them() {
    let bad = |name: &str| fixture("official_run_bad", name);
    let cases = vec![
        watch_case(
            "teacher temperature 0",
            good_checkpoint(),
            &["--teacher-temp", "0"],
            nothing,
            &["--teacher-temp 0", "0.0001 ..= 1"],
        ),
        watch_case(
            "momentum NaN",
            good_checkpoint(),
            &["--momentum-teacher", "NaN"],
            nothing,
            &["--momentum-teacher NaN", "0 ..= 1"],
        ),
        watch_case(
            "warm-up temperature 2",
            good_checkpoint(),
            &["--warmup-teacher-temp", "2"],
            nothing,
            &["--warmup-teacher-temp 2"],
        ),
        watch_case(
            "local crops 5000",
            good_checkpoint(),
            &["--local-crops", "5000"],
            nothing,
            &["--local-crops 5000", "0 ..= 16"],
        ),
        watch_case(
            "settings file out of range",
            good_checkpoint(),
            &[],
            |run| {
                std::fs::write(
                    run.with_file_name("run.watch.toml"),
                    "momentum_teacher = 1.5\n",
                )
                .unwrap()
            },
            &["run.watch.toml: momentum_teacher = 1.5", "0 ..= 1"],
        ),
        watch_case(
            "NaN teacher_temp in the pickled args",
            bad("checkpoint_nan_args.pth"),
            &[],
            nothing,
            &["args", "teacher_temp = NaN", "--teacher-temp"],
        ),
        watch_case(
            "global crop 0",
            good_checkpoint(),
            &["--global-crop", "0"],
            nothing,
            &["--global-crop 0", "8 ..= 1024"],
        ),
        watch_case(
            "local crop smaller than a patch",
            good_checkpoint(),
            &["--local-crop", "2"],
            nothing,
            &["--local-crop 2", "4 ..= 1024"],
        ),
        watch_case(
            "crop not a multiple of the patch",
            good_checkpoint(),
            &["--global-crop", "18"],
            nothing,
            &["--global-crop 18", "patch size 4"],
        ),
        watch_case(
            "local crop larger than the global one",
            good_checkpoint(),
            &["--local-crop", "32"],
            nothing,
            &["--local-crop 32", "larger than the global crop"],
        ),
        watch_case(
            "absurd --poll-secs",
            good_checkpoint(),
            &["--poll-secs", "1e300"],
            nothing,
            &["--poll-secs 1e300", "0.1 ..= 86400"],
        ),
        watch_case(
            "tiny --poll-secs",
            good_checkpoint(),
            &["--poll-secs", "0"],
            nothing,
            &["--poll-secs 0"],
        ),
        watch_case(
            "probe of one channel",
            good_checkpoint(),
            &[],
            |run| write_npy(&run.join("probe_globals.npy"), &[6, 1, 16, 16], 0.1),
            &["probe_globals.npy", "1 channels"],
        ),
        watch_case(
            "probe with an odd number of global crops",
            good_checkpoint(),
            &[],
            |run| write_npy(&run.join("probe_globals.npy"), &[5, 3, 16, 16], 0.1),
            &["probe_globals.npy", "5 global crops"],
        ),
        watch_case(
            "probe of three dimensions",
            good_checkpoint(),
            &[],
            |run| write_npy(&run.join("probe_globals.npy"), &[6, 3, 16], 0.1),
            &["probe_globals.npy", "[N, 3, H, W]"],
        ),
        watch_case(
            "probe holding NaN",
            good_checkpoint(),
            &[],
            |run| write_npy(&run.join("probe_globals.npy"), &[6, 3, 16, 16], f32::NAN),
            &["probe_globals.npy", "not finite"],
        ),
        watch_case(
            "local probe crops not a whole number per image",
            good_checkpoint(),
            &[],
            |run| write_npy(&run.join("probe_locals.npy"), &[5, 3, 8, 8], 0.1),
            &["probe_locals.npy", "5 local crops for 3 images"],
        ),
        watch_case(
            "probe crops smaller than a patch",
            good_checkpoint(),
            &[],
            |run| {
                write_npy(&run.join("probe_globals.npy"), &[6, 3, 2, 2], 0.1);
                std::fs::remove_file(run.join("probe_locals.npy")).unwrap();
            },
            &["2 x 2 px", "patch size 4", "--global-crop"],
        ),
        watch_case(
            "NaN in the teacher's weights",
            bad("checkpoint_nan_teacher.pth"),
            &[],
            nothing,
            &[
                "teacher.backbone.pos_embed",
                "NaN or infinite",
                "no checkpoint",
            ],
        ),
        watch_case(
            "NaN in the center",
            bad("checkpoint_nan_center.pth"),
            &[],
            nothing,
            &["dino_loss.center", "NaN or infinite"],
        ),
        watch_case(
            "a checkpoint cut short",
            good_checkpoint(),
            &[],
            |run| {
                let path = run.join("checkpoint0000.pth");
                let bytes = std::fs::read(&path).unwrap();
                std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
            },
            &[
                "checkpoint0000.pth is not a complete checkpoint",
                "no checkpoint of",
            ],
        ),
        watch_case(
            "--out inside the watched folder",
            good_checkpoint(),
            &["--out", "run/results"],
            nothing,
            &["--out run/results is inside the watched folder"],
        ),
        watch_case(
            "--out a training run",
            good_checkpoint(),
            &["--out", "trained"],
            |run| {
                std::fs::create_dir_all(run.with_file_name("trained").join("checkpoint-00000004"))
                    .unwrap()
            },
            &["--out trained holds a dinoscope training run"],
        ),
        Case {
            what: "--probe folder without images",
            setup: Box::new(|root| {
                let run = official_run(root, &good_checkpoint());
                std::fs::create_dir(root.join("empty")).unwrap();
                let mut args = s(&["watch"]);
                args.push(run.display().to_string());
                args.extend(s(&["--once", "--heads", "2", "--probe", "empty"]));
                args
            }),
            named: &["--probe empty: no readable images"],
        },
        Case {
            what: "ablate into an earlier study",
            setup: Box::new(|root| {
                let study = root.join("study");
                std::fs::create_dir_all(study.join("full")).unwrap();
                std::fs::write(study.join("full/metrics.csv"), "step,epoch\n0,0\n").unwrap();
                std::fs::write(study.join("study.csv"), "variant\nfull\n").unwrap();
                s(&[
                    "ablate", "--steps", "1", "--device", "cpu", "--out", "study",
                ])
            }),
            named: &[
                "study already holds a study",
                "study.csv",
                "full",
                "--force",
            ],
        },
        Case {
            what: "ablate: a variant named like an output file",
            setup: Box::new(|_| {
                s(&[
                    "ablate",
                    "--steps",
                    "1",
                    "--only-given",
                    "--variant",
                    "study.md:dino.centering=false",
                    "--out",
                    "named",
                ])
            }),
            named: &["study.md", "rename the variant"],
        },
        Case {
            what: "rollout --discard 1.5",
            setup: Box::new(|_| {
                let mut args = s(&[
                    "attention",
                    "--heads",
                    "3",
                    "--rollout",
                    "--discard",
                    "1.5",
                    "--weights",
                ]);
                args.push(
                    fixture("official_vit", "backbone.pth")
                        .display()
                        .to_string(),
                );
                args.push("--image".into());
                args.push(fixture("official_vit", "image.png").display().to_string());
                args
            }),
            named: &["--discard 1.5", "0 ..= 0.99"],
        },
        Case {
            what: "--all-checkpoints with flags it does not use",
            setup: Box::new(|root| {
                let mut args = s(&[
                    "attention",
                    "--all-checkpoints",
                    "--rollout",
                    "--token-norms",
                    "--weights",
                ]);
                args.push(root.display().to_string());
                args.push("--image".into());
                args.push(fixture("official_vit", "image.png").display().to_string());
                args
            }),
            named: &["does not use --rollout, --token-norms"],
        },
        Case {
            what: "plot --soak into an .svg",
            setup: Box::new(|root| {
                std::fs::write(root.join("soak.csv"), "elapsed_secs,rss_mib\n0,1\n").unwrap();
                s(&["plot", "--soak", "soak.csv", "--out", "x.svg"])
            }),
            named: &["--soak draws a PNG only", "x.svg"],
        },
    ];
    let dir = tempfile::tempdir().unwrap();
    for (i, case) in cases.iter().enumerate() {
        let root = dir.path().join(format!("case{i}"));
        std::fs::create_dir_all(&root).unwrap();
        let args = (case.setup)(&root);
        let before = snapshot(&root);
        let output = dinoscope(&args, &root);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let what = case.what;
        assert_eq!(output.status.code(), Some(2), "{what}: {args:?}: {stderr}");
        for named in case.named {
            assert!(
                stderr.contains(named),
                "{what}: should name `{named}`: {stderr}"
            );
        }
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
        assert!(!stderr.contains("data.path"), "{what}: {stderr}");
        // Nothing the case had is changed or gone, and no row of NaN was written.
        let after = snapshot(&root);
        for (path, bytes) in &before {
            let kept = after.iter().find(|(p, _)| p == path);
            assert!(
                kept.is_some_and(|(_, b)| b == bytes),
                "{what}: {} changed",
                path.display()
            );
        }
        let rows = after
            .iter()
            .filter(|(p, _)| p.ends_with("metrics.csv") && !before.iter().any(|(q, _)| q == p));
        for (path, bytes) in rows {
            let text = String::from_utf8_lossy(bytes);
            assert!(
                !text.to_lowercase().contains("nan"),
                "{what}: {}: {text}",
                path.display()
            );
        }
    }
}

fn metrics(dir: &Path) -> Vec<dinoscope::store::rows::MetricsRow> {
    dinoscope::store::run::read_step_metrics(&dir.join("metrics.csv")).unwrap()
}

fn watch_once(run: &Path, out: &Path) -> Output {
    let mut args = s(&["watch"]);
    args.push(run.display().to_string());
    args.push("--once".into());
    args.extend(run_settings(run));
    args.extend(s(&["--out", &out.display().to_string()]));
    dinoscope(&args, run.parent().unwrap())
}

/// A half-precision official checkpoint is converted as `attention` converts it: the row is
/// the f32 checkpoint's within f16's rounding.
#[test]
fn watch_converts_a_half_precision_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let run = official_run(dir.path(), &good_checkpoint());
    let output = watch_once(&run, &dir.path().join("f32"));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let half = official_run(
        &dir.path().join("half"),
        &fixture("official_run_bad", "checkpoint_f16.pth"),
    );
    let output = watch_once(&half, &dir.path().join("f16"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let (full, halved) = (
        metrics(&dir.path().join("f32")),
        metrics(&dir.path().join("f16")),
    );
    assert_eq!(halved.len(), 1);
    for (a, b) in [(full[0].loss, halved[0].loss), (full[0].kl, halved[0].kl)] {
        assert!(
            b.is_finite() && (a - b).abs() < 0.02 * a.abs().max(1.0),
            "{a} vs {b}"
        );
    }
}

/// main_dino.py rewrites checkpoint.pth every epoch and keeps only some numbered ones: a
/// restarted watch keeps the rows of checkpoints no longer there and appends the new ones.
#[test]
fn a_restarted_watch_keeps_the_rows_of_rotated_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let run = official_run(dir.path(), &good_checkpoint());
    let out = dir.path().join("watched");
    let output = watch_once(&run, &out);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let first = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert_eq!(
        metrics(&out).iter().map(|r| r.epoch).collect::<Vec<_>>(),
        [0]
    );
    // Rotation: epoch 0's file is gone, epoch 2's and checkpoint.pth (the same state) came.
    std::fs::remove_file(run.join("checkpoint0000.pth")).unwrap();
    for name in ["checkpoint0002.pth", "checkpoint.pth"] {
        std::fs::copy(fixture("official_run", name), run.join(name)).unwrap();
    }
    let output = watch_once(&run, &out);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("its rows are kept"), "{stderr}");
    let rows = metrics(&out);
    assert_eq!(
        rows.iter().map(|r| r.epoch).collect::<Vec<_>>(),
        [0, 2],
        "{stderr}"
    );
    let now = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert!(now.starts_with(&first), "the earlier row is kept as it was");
    // A third look at the same files adds nothing.
    let output = watch_once(&run, &out);
    assert!(output.status.success());
    assert_eq!(
        std::fs::read_to_string(out.join("metrics.csv")).unwrap(),
        now
    );
}

/// One byte that is not UTF-8 in log.txt drops that line only, said once with its number;
/// the other epochs keep their lr and weight decay.
#[test]
fn a_non_utf8_log_line_drops_that_line_only() {
    let dir = tempfile::tempdir().unwrap();
    let run = official_run(dir.path(), &good_checkpoint());
    let log = std::fs::read(run.join("log.txt")).unwrap();
    let mut lines: Vec<Vec<u8>> = log.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    lines[1].insert(3, 0xff);
    std::fs::write(run.join("log.txt"), lines.join(&b'\n')).unwrap();
    let out = dir.path().join("watched");
    let output = watch_once(&run, &out);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("log.txt line 2 is not UTF-8"), "{stderr}");
    let csv = std::fs::read_to_string(out.join("log.csv")).unwrap();
    let epochs: Vec<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(epochs, ["0", "2"], "{csv}");
    let row = &metrics(&out)[0];
    assert!(row.lr > 0.0 && row.weight_decay > 0.0, "{row:?}");
}

/// A checkpoint that cannot be read at all (a symlink loop) is named; the others are
/// evaluated and the watch exits 0.
#[test]
fn an_unreadable_checkpoint_is_named_and_the_rest_evaluated() {
    let dir = tempfile::tempdir().unwrap();
    let run = official_run(dir.path(), &good_checkpoint());
    std::os::unix::fs::symlink("checkpoint0001.pth", run.join("checkpoint0001.pth")).unwrap();
    let out = dir.path().join("watched");
    let output = watch_once(&run, &out);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("cannot read") && stderr.contains("checkpoint0001.pth"),
        "{stderr}"
    );
    assert_eq!(metrics(&out).len(), 1);
}

/// `--probe` takes a flat folder of images, as its help says; `watch .` writes beside the
/// folder, never into it.
#[test]
fn a_flat_probe_folder_is_taken_and_watch_dot_writes_beside_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let run = official_run(dir.path(), &good_checkpoint());
    let flat = dir.path().join("flat");
    std::fs::create_dir(&flat).unwrap();
    for (i, (_, image)) in dinoscope::data::sample_photos().iter().enumerate() {
        image.save(flat.join(format!("{i}.png"))).unwrap();
    }
    let before = snapshot(&run);
    let output = dinoscope(
        &s(&[
            "watch",
            ".",
            "--once",
            "--heads",
            "2",
            "--global-crop",
            "16",
            "--local-crop",
            "8",
            "--probe",
            "../flat",
        ]),
        &run,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(
        snapshot(&run),
        before,
        "nothing written into the watched folder"
    );
    assert_eq!(
        metrics(&dir.path().join("run.dinoscope")).len(),
        1,
        "{stderr}"
    );
}

fn ablate_micro(out: &Path, steps: usize) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_dinoscope"));
    command
        .args(["ablate", "--device", "cpu", "--only-given", "--steps"])
        .arg(steps.to_string())
        .args([
            "--variant",
            "a:dino.teacher_temp=0.04",
            "--variant",
            "b:dino.teacher_temp=0.07",
        ])
        .args(["--set", "data.knn_every_epochs=0", "--out"])
        .arg(out)
        .args(crate::cli::MICRO);
    command
}

/// `--force` replaces an earlier study's arms and comparison; a variant whose run folder
/// cannot be created stops the study (never an arm trained in memory and saved nowhere).
#[test]
fn ablate_force_replaces_and_an_uncreatable_arm_folder_stops_the_study() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("study");
    let output = ablate_micro(&out, 2).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = ablate_micro(&out, 3).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "an earlier study is refused");
    assert_eq!(metrics(&out.join("a")).len(), 2, "and kept");
    let output = ablate_micro(&out, 3).arg("--force").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("--force: removed"), "{stderr}");
    assert_eq!(metrics(&out.join("a")).len(), 3);
    let checkpoints = std::fs::read_dir(out.join("a"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("checkpoint-")
        })
        .count();
    assert_eq!(
        checkpoints, 1,
        "no checkpoint of the earlier study beside the new one"
    );

    // /sys/fs exists (create_dir_all of it succeeds) but nothing can be created in it.
    let sys = Path::new("/sys/fs");
    if sys.is_dir() && std::fs::create_dir(sys.join("dinoscope-probe")).is_err() {
        let output = ablate_micro(sys, 2).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        assert!(
            stderr.contains("cannot create run directory /sys/fs/a"),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    } else {
        eprintln!("skipped the uncreatable folder: /sys/fs is writable here");
    }
}

/// A study whose later arm cannot fit in memory is refused before the first step.
#[test]
fn a_study_is_checked_whole_before_its_first_step() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("study");
    let big = "big:dino.out_dim=262144,optim.batch_size_per_gpu=4096,data.num_images=4096";
    let estimate = dinoscope::config::Config::preset("tiny")
        .unwrap()
        .with_overrides(&s(&[
            "dino.out_dim=262144",
            "optim.batch_size_per_gpu=4096",
            "data.num_images=4096",
        ]))
        .unwrap()
        .memory_estimate()
        .total_bytes();
    if dinoscope::device::available_host_memory_bytes().is_none_or(|free| free >= estimate) {
        eprintln!("skipped: this host could hold the big arm");
        return;
    }
    let output = ablate_micro(&out, 2)
        .args(["--variant", big])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("variant `big`") && stderr.contains("not enough memory"),
        "{stderr}"
    );
    assert!(!out.join("a").exists(), "no arm trained");
}

/// Ctrl-C in `ablate` ends the arm in flight as `train` does: its checkpoint is written and
/// the message says how to finish it.
#[test]
fn ctrl_c_in_ablate_leaves_a_checkpoint_for_the_interrupted_arm() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("study");
    let mut child = ablate_micro(&out, 100_000)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while dinoscope::store::run::read_step_metrics(&out.join("a/metrics.csv"))
        .map_or(0, |r| r.len())
        < 3
    {
        assert!(std::time::Instant::now() < deadline, "no rows");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    child.wait().unwrap();
    let stderr = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    assert!(stderr.contains("train --resume"), "{stderr}");
    let rows = metrics(&out.join("a")).len();
    let checkpoint = out.join("a").join(format!("checkpoint-{rows:08}"));
    assert!(
        checkpoint.is_dir(),
        "{} missing: {stderr}",
        checkpoint.display()
    );
    assert!(!out.join("b").exists(), "the next arm never started");
}
