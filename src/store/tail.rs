//! Following a CSV another process appends to (`metrics.csv` and `knn.csv` of a `dinoscope
//! train` running in a terminal or over ssh): each look returns the rows added since the last
//! one. Only complete lines count: a line still being written (no newline yet) waits for the
//! next look, so a torn row is never read. A file that shrank was rewritten: it is read again
//! from the start.

use super::rows::read_rows;
use serde::de::DeserializeOwned;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

pub struct CsvTail {
    path: PathBuf,
    /// Bytes consumed: the header and every complete line after it.
    offset: u64,
    header: Option<String>,
}

impl CsvTail {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            offset: 0,
            header: None,
        }
    }

    /// The rows completed since the last look (none while the file is missing); rows that do
    /// not parse are skipped as [`read_rows`] skips them.
    pub fn poll<R: DeserializeOwned>(&mut self) -> Vec<R> {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        let len = file.metadata().map_or(0, |m| m.len());
        if len < self.offset {
            self.offset = 0;
            self.header = None;
        }
        let mut bytes = Vec::new();
        if file.seek(SeekFrom::Start(self.offset)).is_err() || file.read_to_end(&mut bytes).is_err()
        {
            return Vec::new();
        }
        let Some(end) = bytes.iter().rposition(|b| *b == b'\n') else {
            return Vec::new();
        };
        let complete = &bytes[..=end];
        self.offset += complete.len() as u64;
        let mut text = String::from_utf8_lossy(complete).into_owned();
        if self.header.is_none() {
            let (header, rest) = text.split_once('\n').unwrap_or((&text, ""));
            self.header = Some(header.to_string());
            text = rest.to_string();
        }
        if text.is_empty() {
            return Vec::new();
        }
        let header = self.header.as_deref().unwrap_or_default();
        read_rows(format!("{header}\n{text}").as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Row {
        step: usize,
        loss: f64,
    }

    #[test]
    fn only_complete_lines_are_read_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(crate::store::run::METRICS_FILE);
        let mut tail = CsvTail::new(&path);
        assert!(tail.poll::<Row>().is_empty(), "no file yet");
        let mut file = std::fs::File::create(&path).unwrap();
        write!(file, "step,loss\n0,1.5\n1,1.").unwrap();
        file.flush().unwrap();
        assert_eq!(tail.poll::<Row>(), vec![Row { step: 0, loss: 1.5 }]);
        // The torn line is finished: read now, once.
        writeln!(file, "25").unwrap();
        file.flush().unwrap();
        assert_eq!(
            tail.poll::<Row>(),
            vec![Row {
                step: 1,
                loss: 1.25
            }]
        );
        assert!(tail.poll::<Row>().is_empty());
        // Rewritten shorter (a new run in the same folder): read again from the start.
        std::fs::write(&path, "step,loss\n0,9\n").unwrap();
        assert_eq!(tail.poll::<Row>(), vec![Row { step: 0, loss: 9.0 }]);
    }
}
