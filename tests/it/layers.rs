//! The folder rules of ARCHITECTURE.md, checked on the source text: a folder imports only the
//! layers below it, the app never touches tensors and the worker never touches egui, and
//! `unsafe` lives in the kernel folder and the allocator module only.

use std::path::{Path, PathBuf};

/// Layers from the bottom; a module may import its own layer and those before it.
const LAYERS: [&[&str]; 10] = [
    &["config", "device", "alloc"],
    &["kernels"],
    &["data"],
    &["augment"],
    &["model"],
    &["analysis"],
    &["store"],
    &["train"],
    &["worker"],
    &["app"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`src/train/engine.rs` → `train`).
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative.components().next().unwrap().as_os_str();
    first.to_string_lossy().trim_end_matches(".rs").to_string()
}

/// Code lines (comments dropped, so a doc comment may name any module).
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.split("//").next().unwrap_or_default()))
}

/// Every `crate::NAME` a line mentions.
fn crate_paths(line: &str) -> Vec<&str> {
    line.match_indices("crate::")
        .map(|(at, _)| {
            let rest = &line[at + "crate::".len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect()
}

fn sources() -> (PathBuf, Vec<PathBuf>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    (src, files)
}

#[test]
fn no_folder_imports_a_layer_above_it() {
    let (src, files) = sources();
    let mut violations = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        // lib.rs declares every module; main.rs and cli/ are the binary, above everything.
        let Some(own) = layer_of(&module) else {
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (number, line) in code_lines(&text) {
            for target in crate_paths(line) {
                if let Some(other) = layer_of(target) {
                    if other > own {
                        violations.push(format!(
                            "{}:{number}: `{module}` imports `{target}`, a layer above it",
                            file.strip_prefix(&src).unwrap().display()
                        ));
                    }
                }
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
    // The rule has teeth: the app and the worker do use the layers below them.
    assert!(files.iter().any(|f| module_of(&src, f) == "app"));
}

#[test]
fn the_app_never_touches_tensors_and_the_worker_never_touches_egui() {
    let (src, files) = sources();
    let mut violations = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        let text = std::fs::read_to_string(file).unwrap();
        let forbidden: &[&str] = match module.as_str() {
            // A `Device` handle is plain data; tensors are the worker's.
            "app" => &["Tensor<", "Tensor::", "TensorData", "burn::prelude::*"],
            "worker" | "train" | "analysis" | "store" | "model" => &["egui", "eframe"],
            _ => &[],
        };
        for (number, line) in code_lines(&text) {
            for word in forbidden {
                if line.contains(word) {
                    violations.push(format!(
                        "{}:{number}: `{module}` uses `{word}`",
                        file.strip_prefix(&src).unwrap().display()
                    ));
                }
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn crate_paths_are_found_in_code() {
    assert_eq!(
        crate_paths("use crate::train::engine::{Engine}; let x = crate::app::y;"),
        ["train", "app"]
    );
    assert_eq!(layer_of("worker"), Some(8));
    assert!(layer_of("app") > layer_of("train"));
}

/// Files of `src/app` that carry commands out; every other file is a panel (or data it
/// draws) and acts only by sending a `UiCommand` through its `AppContext`.
const APP_EFFECT_FILES: [&str; 8] = [
    "mod.rs",
    "threads.rs",
    "feed.rs",
    "watching.rs",
    "jobs.rs",
    "window.rs",
    "session.rs",
    "script.rs",
];

#[test]
fn panels_act_only_through_ui_commands() {
    let (src, files) = sources();
    let app = src.join("app");
    let mut violations = Vec::new();
    let mut panels = 0;
    for file in files.iter().filter(|f| f.starts_with(&app)) {
        let relative = file
            .strip_prefix(&app)
            .unwrap()
            .to_string_lossy()
            .to_string();
        let text = std::fs::read_to_string(file).unwrap();
        if relative != "mod.rs" && text.contains("impl DinoscopeApp") {
            violations.push(format!(
                "app/{relative}: `impl DinoscopeApp` outside app/mod.rs"
            ));
        }
        if APP_EFFECT_FILES.contains(&relative.as_str()) {
            continue;
        }
        panels += 1;
        for (number, line) in code_lines(&text) {
            // A worker command (`Command::`, not `UiCommand::` or `OfficialCommand::`), an
            // inference command, a thread handle or the app itself.
            let other_command = line
                .match_indices("Command::")
                .any(|(at, _)| !line[..at].ends_with(|c: char| c.is_ascii_alphanumeric()));
            let forbidden = [
                "InferenceCommand",
                "WorkerHandle",
                "InferenceHandle",
                "WatchHandle",
                "DinoscopeApp",
            ];
            if other_command || forbidden.iter().any(|word| line.contains(word)) {
                violations.push(format!(
                    "app/{relative}:{number}: a panel acts outside the command sender: {}",
                    line.trim()
                ));
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
    assert!(panels > 10, "the rule covers the panels ({panels} files)");
}

/// Where `unsafe` may be written: the host kernels' folder and the allocator module, each
/// opting out of Cargo.toml's crate-wide `unsafe_code = "deny"` at its top.
const UNSAFE_ALLOWED: [&str; 2] = ["kernels/mod.rs", "alloc.rs"];

fn allows_unsafe(relative: &Path) -> bool {
    relative.starts_with("kernels") || relative == Path::new("alloc.rs")
}

#[test]
fn unsafe_lives_only_in_the_kernel_folder_and_the_allocator() {
    let (src, files) = sources();
    let mut violations = Vec::new();
    let mut unsafe_lines = 0;
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let text = std::fs::read_to_string(file).unwrap();
        for (number, line) in code_lines(&text) {
            let words = line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
            let has_unsafe = words.clone().any(|word| word == "unsafe");
            let opts_out =
                words.clone().any(|word| word == "unsafe_code") && line.contains("allow");
            if (has_unsafe || opts_out) && !allows_unsafe(relative) {
                violations.push(format!(
                    "{}:{number}: `unsafe` outside src/kernels/ and src/alloc.rs",
                    relative.display()
                ));
            }
            unsafe_lines += usize::from(has_unsafe);
            // The kernels name nothing else of the crate: `tests/miri/` builds them alone.
            if relative.starts_with("kernels") {
                for target in crate_paths(line) {
                    if target != "kernels" {
                        violations.push(format!(
                            "{}:{number}: the kernel folder imports `{target}`",
                            relative.display()
                        ));
                    }
                }
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
    // The rule has teeth: the allowed places do hold unsafe code and opt out at their top,
    // and the crate denies it everywhere else.
    assert!(unsafe_lines > 10, "{unsafe_lines} unsafe lines");
    for allowed in UNSAFE_ALLOWED {
        let text = std::fs::read_to_string(src.join(allowed)).unwrap();
        assert!(
            text.contains("#![allow(unsafe_code)]"),
            "{allowed} opts out at its top"
        );
    }
    let manifest = std::fs::read_to_string(src.with_file_name("Cargo.toml")).unwrap();
    for lint in [
        "unsafe_code = \"deny\"",
        "unsafe_op_in_unsafe_fn = \"deny\"",
        "undocumented_unsafe_blocks = \"deny\"",
    ] {
        assert!(manifest.contains(lint), "Cargo.toml's [lints] keeps {lint}");
    }
}
