//! Cutting a run's CSV back to a checkpoint on resume without losing its history: the rows the
//! caller keeps are rewritten in today's format (a column added since fills from the row type's
//! struct-level defaults), and a line today's row type cannot parse is kept too, its cells moved
//! under today's header by column name. Only a torn last line (fewer cells than the header) and
//! lines whose `step` is past the cut are dropped.

use crate::store::rows::header_of;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::Path;

/// The file's rows that parse and that `keep` accepts, in file order, and the file's new text
/// (today's header, then every kept line). `keep_step` decides for a line that does not parse
/// but whose `step` cell reads as a number. A missing file gives no rows and a header.
pub fn cut_back<R: Serialize + DeserializeOwned + Default>(
    path: &Path,
    keep: impl Fn(&R) -> bool,
    keep_step: impl Fn(usize) -> bool,
) -> Result<(Vec<R>, Vec<u8>), csv::Error> {
    let header = header_of(&R::default())?;
    let columns: Vec<&str> = header.split(',').collect();
    let mut out = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    out.write_record(&columns)?;
    let mut kept = Vec::new();
    if let Ok(file) = std::fs::File::open(path) {
        let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(file);
        let file_header = reader.byte_headers()?.clone();
        let records: Vec<csv::ByteRecord> = reader.byte_records().collect::<Result<_, _>>()?;
        let step_at = file_header.iter().position(|name| name == b"step");
        let last = records.len().saturating_sub(1);
        for (index, record) in records.iter().enumerate() {
            match record.deserialize::<R>(Some(&file_header)) {
                Ok(row) if keep(&row) => {
                    out.serialize(&row)?;
                    kept.push(row);
                }
                Ok(_) => {}
                Err(_) => {
                    let torn = index == last && record.len() < file_header.len();
                    let step = step_at
                        .and_then(|at| record.get(at))
                        .and_then(|cell| std::str::from_utf8(cell).ok()?.trim().parse().ok());
                    if torn || step.is_some_and(|step| !keep_step(step)) {
                        continue;
                    }
                    // Today's columns in today's order, each from the file's column of that
                    // name (empty where the file has none).
                    let cells = columns.iter().map(|column| {
                        file_header
                            .iter()
                            .position(|name| name == column.as_bytes())
                            .and_then(|at| record.get(at))
                            .unwrap_or_default()
                    });
                    out.write_record(cells)?;
                }
            }
        }
    }
    out.flush()?;
    let bytes = out
        .into_inner()
        .map_err(|err| csv::Error::from(std::io::Error::other(err.to_string())))?;
    Ok((kept, bytes))
}
