//! An output folder of the official training code (`main_dino.py --output_dir`), as another
//! process writes it: `log.txt` (one JSON object per epoch) and `checkpoint.pth` /
//! `checkpoint{epoch:04}.pth`. Nothing here writes to it; a file is read only once it is
//! complete and has stopped changing.

use crate::store::rows::OfficialLogRow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub const LOG_FILE: &str = "log.txt";

/// The complete lines of `log.txt` (the last one only once its newline is written).
pub fn read_official_log(path: &Path) -> Vec<OfficialLogRow> {
    read_official_log_lines(path).0
}

/// The same, and the (1-based) numbers of the lines that are not UTF-8: one bad byte drops
/// its own line, never the whole log.
pub fn read_official_log_lines(path: &Path) -> (Vec<OfficialLogRow>, Vec<usize>) {
    let Ok(bytes) = std::fs::read(path) else {
        return (Vec::new(), Vec::new());
    };
    let complete = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(end) => &bytes[..end],
        None => &[][..],
    };
    let mut rows = Vec::new();
    let mut not_text = Vec::new();
    for (index, line) in complete.split(|&b| b == b'\n').enumerate() {
        match std::str::from_utf8(line) {
            Ok(line) => rows.extend(OfficialLogRow::from_json_line(line)),
            Err(_) => not_text.push(index + 1),
        }
    }
    (rows, not_text)
}

/// `checkpoint.pth` or `checkpoint0012.pth` in the folder, with the epoch its name gives.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointFile {
    pub path: PathBuf,
    pub epoch_in_name: Option<usize>,
}

pub fn checkpoint_files(dir: &Path) -> Vec<CheckpointFile> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<CheckpointFile> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let stem = name.strip_prefix("checkpoint")?.strip_suffix(".pth")?;
            let epoch_in_name = if stem.is_empty() {
                None
            } else {
                Some(stem.parse().ok()?)
            };
            Some(CheckpointFile {
                path: entry.path(),
                epoch_in_name,
            })
        })
        .collect();
    files.sort_by_key(|f| (f.epoch_in_name.is_none(), f.epoch_in_name));
    files
}

/// Whether any checkpoint in the folder is complete (a run that has only just started has
/// none yet).
pub fn has_complete_checkpoint(dir: &Path) -> bool {
    checkpoint_files(dir)
        .iter()
        .any(|f| zip_is_complete(&f.path))
}

/// The `args` of the run: from the newest complete checkpoint that has them (the same
/// Namespace is saved in every one), with the file they came from.
pub fn run_args(dir: &Path) -> Option<(PathBuf, super::official_args::OfficialArgs)> {
    checkpoint_files(dir)
        .into_iter()
        .rev()
        .filter(|f| zip_is_complete(&f.path))
        .find_map(|f| {
            Some((
                f.path.clone(),
                super::official_args::read_official_args(&f.path)?,
            ))
        })
}

/// Whether the folder looks like an official run (a log or a checkpoint in it).
pub fn is_official_run(dir: &Path) -> bool {
    dir.join(LOG_FILE).is_file() || !checkpoint_files(dir).is_empty()
}

/// `torch.save` writes a zip: complete once its end-of-central-directory record is there (a
/// file still being written, or cut short, has none).
pub fn zip_is_complete(path: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    const EOCD: [u8; 4] = [0x50, 0x4b, 0x05, 0x06];
    let Ok(mut file) = std::fs::File::open(path) else {
        return false;
    };
    let Ok(len) = file.metadata().map(|m| m.len()) else {
        return false;
    };
    // The record is 22 bytes plus a comment of up to 64 KiB at the very end.
    let tail = len.min(22 + 65_535);
    let mut bytes = vec![0u8; tail as usize];
    if file.seek(SeekFrom::Start(len - tail)).is_err() || file.read_exact(&mut bytes).is_err() {
        return false;
    }
    bytes.windows(4).any(|w| w == EOCD)
}

/// The last epoch a checkpoint trained: its pickled `epoch` (the next one to run) minus one.
/// The value is read from the pickle's bytes (`torch.save`'s protocol 2: the key as BINUNICODE,
/// an optional memo put, then a BININT1/2/4), in the first entry, `data.pkl`, which holds no
/// tensor data. `None` when the file does not have it that way.
pub fn checkpoint_epoch(path: &Path) -> Option<usize> {
    use std::io::Read;
    const KEY: &[u8] = b"X\x05\x00\x00\x00epoch";
    let mut head = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(4 << 20)
        .read_to_end(&mut head)
        .ok()?;
    let at = head.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let mut rest = &head[at..];
    // BINPUT (q, 1 byte) or LONG_BINPUT (r, 4 bytes) memoises the key.
    match rest.first()? {
        b'q' => rest = rest.get(2..)?,
        b'r' => rest = rest.get(5..)?,
        _ => {}
    }
    let next_epoch = match (rest.first()?, rest.get(1..)?) {
        (b'K', bytes) => u64::from(*bytes.first()?),
        (b'M', bytes) => u64::from(u16::from_le_bytes(bytes.get(..2)?.try_into().ok()?)),
        (b'J', bytes) => {
            u64::try_from(i32::from_le_bytes(bytes.get(..4)?.try_into().ok()?)).ok()?
        }
        _ => return None,
    };
    usize::try_from(next_epoch).ok()?.checked_sub(1)
}

/// What a poll saw of one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileState {
    /// Same size and modification time as at the previous poll, and complete.
    Stable(u64, SystemTime),
    /// New, growing, rewritten, or not a complete zip yet.
    Changing,
    Missing,
}

/// Size and modification time of each file at the previous poll.
#[derive(Debug, Default)]
pub struct StableFiles {
    seen: HashMap<PathBuf, (u64, SystemTime)>,
}

impl StableFiles {
    pub fn poll(&mut self, path: &Path) -> FileState {
        let Ok(meta) = std::fs::metadata(path) else {
            self.seen.remove(path);
            return FileState::Missing;
        };
        let now = (
            meta.len(),
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        );
        let before = self.seen.insert(path.to_path_buf(), now);
        if before == Some(now) && zip_is_complete(path) {
            FileState::Stable(now.0, now.1)
        } else {
            FileState::Changing
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_parse_and_torn_ones_are_skipped() {
        let parse = OfficialLogRow::from_json_line;
        let row = parse(r#"{"train_loss": 2.47, "train_lr": 0.002, "train_wd": 0.05, "epoch": 3}"#)
            .unwrap();
        assert_eq!(row.epoch, 3);
        assert_eq!(row.train_loss, Some(2.47));
        assert!(parse(r#"{"train_loss": 2.4"#).is_none());
        assert!(parse("hello").is_none());
        assert!(parse(r#"{"train_loss": 2.4}"#).is_none(), "no epoch");
        assert!(parse(r#"{"epoch": -1}"#).is_none());
        // A value another version logs as text (or a list) is empty, not a lost line.
        let other = parse(r#"{"epoch": 2.0, "train_loss": "nan?", "train_acc": [1, 2]}"#).unwrap();
        assert_eq!((other.epoch, other.train_loss), (2, None));
        // json.dumps writes a diverged loss as a bare NaN: the line and its NaN are kept.
        let diverged =
            parse(r#"{"train_loss": NaN, "train_lr": Infinity, "note": "NaN", "epoch": 4}"#)
                .unwrap();
        assert!(diverged.train_loss.is_some_and(f64::is_nan));
        assert_eq!(
            (diverged.epoch, diverged.train_lr),
            (4, Some(f64::INFINITY))
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        std::fs::write(
            &path,
            "{\"epoch\": 0, \"train_loss\": 1}\n{\"epoch\": 1, \"train_lo",
        )
        .unwrap();
        assert_eq!(
            read_official_log(&path).len(),
            1,
            "the unfinished line waits"
        );
    }

    #[test]
    fn checkpoints_are_found_with_their_epochs_and_completeness() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "checkpoint.pth",
            "checkpoint0002.pth",
            "checkpoint0000.pth",
            "other.pth",
        ] {
            std::fs::write(dir.path().join(name), b"PK\x03\x04 half").unwrap();
        }
        let files = checkpoint_files(dir.path());
        let epochs: Vec<_> = files.iter().map(|f| f.epoch_in_name).collect();
        assert_eq!(epochs, [Some(0), Some(2), None]);
        let path = dir.path().join("checkpoint.pth");
        assert!(!zip_is_complete(&path), "no end record yet");
        let mut stable = StableFiles::default();
        assert_eq!(stable.poll(&path), FileState::Changing);
        assert_eq!(
            stable.poll(&path),
            FileState::Changing,
            "complete only with its end record"
        );
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[0x50, 0x4b, 0x05, 0x06]);
        bytes.extend_from_slice(&[0; 18]);
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(stable.poll(&path), FileState::Changing, "it just changed");
        assert!(matches!(stable.poll(&path), FileState::Stable(..)));
        assert!(is_official_run(dir.path()));
        assert_eq!(checkpoint_epoch(&path), None, "no pickled epoch in it");
    }

    #[test]
    fn the_pickled_epoch_is_read() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/official_run");
        assert_eq!(checkpoint_epoch(&fixture.join("checkpoint.pth")), Some(2));
        assert_eq!(
            checkpoint_epoch(&fixture.join("checkpoint0000.pth")),
            Some(0)
        );
    }
}
