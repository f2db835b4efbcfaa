//! Checks shared by the official binary releases (CIFAR, STL-10): every required file present,
//! whole records only, the class-name list, and read errors that name the file.

use crate::data::DataError;
use std::path::Path;

pub(super) fn read_error(path: &Path, source: std::io::Error) -> DataError {
    DataError::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// Every missing file is named at once, so one look at the message fixes the folder.
pub(super) fn require_files(
    dataset: &'static str,
    dir: &Path,
    wanted: &[&str],
    expected: String,
    archive: &'static str,
) -> Result<(), DataError> {
    if !dir.is_dir() {
        return Err(DataError::DatasetDirMissing {
            dataset,
            path: dir.to_path_buf(),
            expected,
            archive,
        });
    }
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|name| !dir.join(name).is_file())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(DataError::DatasetFilesMissing {
            dataset,
            path: dir.to_path_buf(),
            missing: missing.join(", "),
            expected,
            archive,
        })
    }
}

/// The number of whole records in a file of `size_bytes`; empty or ragged files are errors.
pub(super) fn check_record_size(
    dataset: &'static str,
    path: &Path,
    size_bytes: u64,
    record_bytes: usize,
    archive: &'static str,
) -> Result<usize, DataError> {
    if size_bytes == 0 {
        return Err(DataError::EmptyDataFile {
            path: path.to_path_buf(),
            archive,
        });
    }
    if !size_bytes.is_multiple_of(record_bytes as u64) {
        return Err(DataError::RecordSize {
            dataset,
            path: path.to_path_buf(),
            size_bytes,
            record_bytes,
            archive,
        });
    }
    Ok((size_bytes / record_bytes as u64) as usize)
}

/// One name per line; blank lines (the official files end with some) are skipped.
pub(super) fn read_class_names(
    path: &Path,
    expected: usize,
    archive: &'static str,
) -> Result<Vec<String>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|source| read_error(path, source))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(String::from)
        .collect();
    if names.len() != expected {
        return Err(DataError::ClassNames {
            path: path.to_path_buf(),
            found: names.len(),
            expected,
            archive,
        });
    }
    Ok(names)
}

#[cfg(test)]
pub(super) mod tests {
    use std::path::Path;

    pub(crate) fn write_lines(path: &Path, names: &[String]) {
        // Trailing blank lines as in the official batches.meta.txt.
        std::fs::write(path, format!("{}\n\n", names.join("\n"))).unwrap();
    }

    pub(crate) fn numbered(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    }
}
