//! Issue 14 §6: seeded byte-level mutations of every kind of file a user feeds dinoscope —
//! configs, `metrics.csv`, images, `.safetensors` and `.pth` weights — must give a value or an
//! error, never a panic. 1 000 cases per kind, each a copy of a valid file with 1–8 bytes
//! flipped, inserted, deleted or the file cut short (the same seed every run, so a failure
//! reproduces; the case number and seed are in the message).

use burn::prelude::Device;
use dinoscope::store::weights::{load_backbone, ArchOverrides, Network};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

const CASES: usize = 1000;

/// A few random edits of `valid`.
fn mutate(valid: &[u8], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut bytes = valid.to_vec();
    for _ in 0..rng.random_range(1..=8) {
        if bytes.is_empty() {
            break;
        }
        let at = rng.random_range(0..bytes.len());
        match rng.random_range(0..5) {
            0 => bytes[at] = rng.random(),
            1 => bytes[at] ^= 1 << rng.random_range(0..8),
            2 => bytes.insert(at, rng.random()),
            3 => {
                bytes.remove(at);
            }
            _ => bytes.truncate(at),
        }
    }
    bytes
}

/// Runs `read` on `CASES` mutants of `valid`; panics name the case that panicked. `read`
/// says whether the mutant was accepted: both outcomes must occur, so the mutants reach the
/// parsers' depths and not only their first check.
fn never_panics(what: &str, seed: u64, valid: &[u8], mut read: impl FnMut(&[u8]) -> bool) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut accepted = 0;
    for case in 0..CASES {
        let mutant = mutate(valid, &mut rng);
        let outcome = catch_unwind(AssertUnwindSafe(|| read(&mutant)));
        match outcome {
            Ok(ok) => accepted += usize::from(ok),
            Err(_) => panic!(
                "{what}: case {case} (seed {seed}) panicked on a {}-byte mutant",
                mutant.len()
            ),
        }
    }
    assert!(
        accepted > 0 && accepted < CASES,
        "{what}: {accepted} of {CASES} mutants accepted"
    );
}

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

#[test]
fn mutated_configs_never_panic() {
    let valid = std::fs::read(fixture("configs/tiny.toml")).unwrap();
    never_panics("config", 1, &valid, |bytes| {
        let text = String::from_utf8_lossy(bytes);
        dinoscope::config::Config::from_toml_str(&text, "fuzz.toml").is_ok()
    });
}

#[test]
fn mutated_metrics_csv_never_panics() {
    use dinoscope::store::rows::{write_rows, MetricsRow};
    let rows: Vec<MetricsRow> = (0..12)
        .map(|step| MetricsRow {
            step,
            loss: 5.0 - step as f64 * 0.1,
            teacher_entropy: 4.0,
            kl: 1.0 - step as f64 * 0.05,
            effective_rank: (step % 4 == 0).then_some(10.0 + step as f64),
            ..MetricsRow::default()
        })
        .collect();
    let mut valid = Vec::new();
    write_rows(&mut valid, &rows, true).unwrap();
    never_panics("metrics.csv", 2, &valid, |bytes| {
        let rows: Vec<dinoscope::store::rows::MetricsRow> =
            dinoscope::store::rows::read_rows(bytes);
        let _ = dinoscope::store::run::BestRank::of(&rows, 0);
        !rows.is_empty()
    });
}

/// As JPEG: PNG's chunk checksums would stop every mutant at the first check, while a JPEG
/// decoder has to get through the corrupted entropy-coded data.
#[test]
fn mutated_images_never_panic() {
    let image = image::open(fixture("tests/fixtures/official_vit/image.png")).unwrap();
    let mut valid = std::io::Cursor::new(Vec::new());
    image
        .to_rgb8()
        .write_to(&mut valid, image::ImageFormat::Jpeg)
        .unwrap();
    let valid = valid.into_inner();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mutant.jpg");
    never_panics("image", 3, &valid, |bytes| {
        std::fs::write(&path, bytes).unwrap();
        dinoscope::data::load_rgb(&path).is_ok()
    });
}

/// Weights files: every mutant is loaded through the same entry point as `attention` and the
/// app's Open weights…..
fn mutated_weights_never_panic(name: &str, seed: u64) {
    let valid = std::fs::read(fixture(&format!("tests/fixtures/official_vit/{name}"))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    let heads = ArchOverrides {
        num_heads: Some(3),
        ..Default::default()
    };
    never_panics(name, seed, &valid, |bytes| {
        std::fs::write(&path, bytes).unwrap();
        load_backbone(&path, Network::Teacher, &heads, &Device::flex()).is_ok()
    });
}

#[test]
fn mutated_safetensors_never_panic() {
    mutated_weights_never_panic("backbone.safetensors", 4);
}

#[test]
fn mutated_pth_never_panics() {
    mutated_weights_never_panic("backbone.pth", 5);
}

/// Issue 14 §6: a pickle whose REDUCE calls `os.system` (the classic malicious `.pth`) is read
/// as data: no command runs, and loading fails with a message naming the file.
#[test]
fn a_malicious_pickle_runs_no_code() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    let path = dir.path().join("evil.pth");
    // Protocol 2: GLOBAL os.system, MARK, UNICODE "touch <marker>", TUPLE, REDUCE, STOP.
    let mut pickle = b"\x80\x02cos\nsystem\n(V".to_vec();
    pickle.extend_from_slice(format!("touch {}", marker.display()).as_bytes());
    pickle.extend_from_slice(b"\ntR.");
    std::fs::write(&path, &pickle).unwrap();
    let heads = ArchOverrides::default();
    let err = load_backbone(&path, Network::Teacher, &heads, &Device::flex())
        .err()
        .expect("not a weights file")
        .to_string();
    assert!(err.contains("evil.pth"), "{err}");
    assert!(!marker.exists(), "the pickle ran a command");
}
