//! New duplication fails the build: runs of at least [`MIN_LINES`] identical lines shared by two
//! places in `src/` (blank lines, comments, imports and lone punctuation passed over, white
//! space folded) must be listed in `tests/it/duplication_allow.txt` with a reason, or be made
//! one piece of code. Each entry is `FILE_A FILE_B HASH reason`: the two files and a hash of the
//! shared text, so line numbers may move and a pair survives a file's edits elsewhere.
//!
//! After a merge or a move that changes the pairs:
//! `DINOSCOPE_BLESS_DUPLICATES=1 cargo test --release --test it duplication` rewrites the list
//! from the tree, keeping the reason of every surviving entry (also of one whose files moved:
//! the same shared text); new entries get `TODO`, which
//! fails until a person writes why the pair is the same shape on purpose (or removes it).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Shared lines that make a pair (as the `duplicates` tool counts them).
const MIN_LINES: usize = 6;
const ALLOW_LIST: &str = "tests/it/duplication_allow.txt";
const BLESS_ENV: &str = "DINOSCOPE_BLESS_DUPLICATES";

/// The lines of a file that count, folded, with their 1-based line numbers.
fn significant_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut in_block_comment = false;
    for (index, line) in text.lines().enumerate() {
        let folded = line.split_whitespace().collect::<Vec<_>>().join(" ");
        if in_block_comment {
            in_block_comment = !folded.contains("*/");
            continue;
        }
        if folded.starts_with("/*") {
            in_block_comment = !folded.contains("*/");
            continue;
        }
        let skip = folded.is_empty()
            || folded.starts_with("//")
            || folded.starts_with("use ")
            || folded.starts_with("pub use ")
            || folded.starts_with("pub(crate) use ")
            || folded.starts_with("pub(super) use ")
            || folded
                .chars()
                .all(|c| matches!(c, '{' | '}' | '(' | ')' | '[' | ']' | ';' | ',' | ' '));
        if !skip {
            out.push((index + 1, folded));
        }
    }
    out
}

/// FNV-1a, 64 bits: stable across runs and platforms (std's hasher is not).
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// One shared run: where it stands in both files and its text.
#[derive(Debug)]
struct Pair {
    a: (String, usize, usize),
    b: (String, usize, usize),
    text: Vec<String>,
}

impl Pair {
    fn key(&self) -> (String, String, String) {
        (
            self.a.0.clone(),
            self.b.0.clone(),
            format!("{:016x}", fnv(&self.text.join("\n"))),
        )
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every maximal run of at least [`MIN_LINES`] identical significant lines shared by two
/// places (two files, or two places of one file that do not overlap).
fn shared_runs(root: &Path) -> Vec<Pair> {
    let mut paths = Vec::new();
    rust_files(&root.join("src"), &mut paths);
    paths.sort();
    let files: Vec<(String, Vec<(usize, String)>)> = paths
        .iter()
        .map(|path| {
            let name = path
                .strip_prefix(root)
                .unwrap_or(path)
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(path).unwrap_or_default();
            (name, significant_lines(&text))
        })
        .collect();
    // Each window of MIN_LINES lines, by its text.
    let mut windows: HashMap<u64, Vec<(usize, usize)>> = HashMap::new();
    for (f, (_, lines)) in files.iter().enumerate() {
        for start in 0..lines.len().saturating_sub(MIN_LINES - 1) {
            let text: Vec<&str> = lines[start..start + MIN_LINES]
                .iter()
                .map(|(_, l)| l.as_str())
                .collect();
            windows
                .entry(fnv(&text.join("\n")))
                .or_default()
                .push((f, start));
        }
    }
    let line = |f: usize, i: usize| files[f].1.get(i).map(|(_, l)| l.as_str());
    let same = |(fa, ia): (usize, usize), (fb, ib): (usize, usize)| {
        line(fa, ia).is_some() && line(fa, ia) == line(fb, ib)
    };
    let mut pairs = Vec::new();
    let mut places: Vec<&Vec<(usize, usize)>> = windows.values().filter(|p| p.len() > 1).collect();
    places.sort();
    for places in places {
        for (n, &a) in places.iter().enumerate() {
            for &b in &places[n + 1..] {
                // Not a hash collision, and the start of its run (not a window inside one).
                if !(0..MIN_LINES).all(|k| same((a.0, a.1 + k), (b.0, b.1 + k))) {
                    continue;
                }
                if a.1 > 0 && b.1 > 0 && same((a.0, a.1 - 1), (b.0, b.1 - 1)) {
                    continue;
                }
                let mut len = MIN_LINES;
                while same((a.0, a.1 + len), (b.0, b.1 + len)) {
                    len += 1;
                }
                // One file's run against itself shifted: a repeated line, not two places.
                if a.0 == b.0 && a.1 + len > b.1 {
                    continue;
                }
                let lines_of = |(f, i): (usize, usize)| {
                    (
                        files[f].0.clone(),
                        files[f].1[i].0,
                        files[f].1[i + len - 1].0,
                    )
                };
                pairs.push(Pair {
                    a: lines_of(a),
                    b: lines_of(b),
                    text: files[a.0].1[a.1..a.1 + len]
                        .iter()
                        .map(|(_, l)| l.clone())
                        .collect(),
                });
            }
        }
    }
    pairs.sort_by(|x, y| (&x.a, &x.b).cmp(&(&y.a, &y.b)));
    pairs
}

/// The allow-list: key → reason.
fn read_allow_list(path: &Path) -> Vec<((String, String, String), String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut words = l.splitn(4, char::is_whitespace);
            let mut next = || words.next().unwrap_or_default().trim().to_string();
            let key = (next(), next(), next());
            (key, next())
        })
        .collect()
}

#[test]
fn no_new_duplication_in_src() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let started = std::time::Instant::now();
    let pairs = shared_runs(root);
    let elapsed = started.elapsed();
    let allow_path = root.join(ALLOW_LIST);
    let allowed = read_allow_list(&allow_path);
    let reason_of: HashMap<_, _> = allowed.iter().cloned().collect();
    if std::env::var_os(BLESS_ENV).is_some() {
        let mut text = String::from(
            "# Accepted pairs of places in src/ sharing 6+ identical lines (tests/it/duplication.rs).\n\
             # FILE_A FILE_B HASH-OF-THE-SHARED-TEXT reason (one line; `TODO` fails the test).\n",
        );
        for pair in &pairs {
            let key = pair.key();
            // A pair whose files moved keeps its reason: the same shared text, one entry.
            let moved = || {
                let mut same_text = allowed.iter().filter(|(k, _)| k.2 == key.2);
                match (same_text.next(), same_text.next()) {
                    (Some((_, reason)), None) => Some(reason.clone()),
                    _ => None,
                }
            };
            let reason = reason_of
                .get(&key)
                .cloned()
                .or_else(moved)
                .unwrap_or_else(|| "TODO".into());
            text.push_str(&format!("{} {} {} {reason}\n", key.0, key.1, key.2));
        }
        std::fs::write(&allow_path, text).unwrap();
        return;
    }
    let mut problems = Vec::new();
    for pair in &pairs {
        match reason_of.get(&pair.key()) {
            Some(reason) if !reason.is_empty() && !reason.starts_with("TODO") => {}
            found => problems.push(format!(
                "{}:{}-{} ~ {}:{}-{} share {} lines{}, starting `{}`",
                pair.a.0,
                pair.a.1,
                pair.a.2,
                pair.b.0,
                pair.b.1,
                pair.b.2,
                pair.text.len(),
                if found.is_some() {
                    " (listed without a reason)"
                } else {
                    ""
                },
                pair.text[0]
            )),
        }
    }
    let current: Vec<_> = pairs.iter().map(Pair::key).collect();
    for (key, _) in &allowed {
        if !current.contains(key) {
            problems.push(format!(
                "{} {} {}: listed in {ALLOW_LIST} but no longer shared; remove the entry",
                key.0, key.1, key.2
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "duplicated code in src/ (make it one piece of code, or list the pair in {ALLOW_LIST} with why; \
         {BLESS_ENV}=1 cargo test --release --test it duplication rewrites the list):\n{}",
        problems.join("\n")
    );
    assert!(
        elapsed.as_secs_f64() < 2.0,
        "the scan took {elapsed:?}; it must stay cheap"
    );
}

#[test]
fn the_scan_finds_a_shared_run_and_passes_over_comments_and_imports() {
    let text = "use a::b;\n// a comment\nfn f() {\n    let x = 1;\n\n    let y = 2;\n}\n";
    let lines = significant_lines(text);
    assert_eq!(
        lines,
        [
            (3, "fn f() {".to_string()),
            (4, "let x = 1;".into()),
            (6, "let y = 2;".into())
        ]
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    let body: String = (0..8)
        .map(|i| format!("    let v{i} = {i} * 2;\n"))
        .collect();
    std::fs::write(
        dir.path().join("src/a.rs"),
        format!("fn a() {{\n{body}}}\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("src/b.rs"),
        format!("// other\nfn b() {{\n{}}}\n", body.replace("    ", "\t")),
    )
    .unwrap();
    let pairs = shared_runs(dir.path());
    assert_eq!(pairs.len(), 1, "{pairs:?}");
    assert_eq!(pairs[0].a, ("src/a.rs".to_string(), 2, 9));
    assert_eq!(pairs[0].b, ("src/b.rs".to_string(), 3, 10));
    assert_eq!(pairs[0].text.len(), 8);
}
