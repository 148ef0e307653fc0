//! What the CSV formats share: columns found by name, whatever their order
//! and case, and the leading apostrophe that spreadsheet exports put before
//! ids, phones and zips to keep them text.

use std::collections::HashMap;

/// The columns of a CSV file by lower-case, trimmed header name.
pub struct Columns {
    by_name: HashMap<String, usize>,
}

impl Columns {
    pub fn new(headers: &csv::StringRecord) -> Self {
        let by_name = headers
            .iter()
            .enumerate()
            .map(|(position, name)| {
                // A byte-order mark is stuck to the first header.
                let name = name.trim_start_matches('\u{feff}').trim().to_lowercase();
                (name, position)
            })
            .collect();
        Columns { by_name }
    }

    /// The position of the first of `names` that the file has.
    pub fn find(&self, names: &[&str]) -> Option<usize> {
        names
            .iter()
            .find_map(|name| self.by_name.get(*name).copied())
    }
}

/// A cell, trimmed and without a leading apostrophe; `None` when empty or
/// when the column is absent.
pub fn cell(record: &csv::StringRecord, column: Option<usize>) -> Option<String> {
    let text = record.get(column?)?.trim();
    let text = text.strip_prefix('\'').unwrap_or(text).trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// A CSV error as the reason for a bad line.
pub fn reason(error: &csv::Error) -> String {
    match error.kind() {
        csv::ErrorKind::Utf8 { err, .. } => format!("not UTF-8 text (field {})", err.field() + 1),
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("{len} fields where the header has {expected_len}"),
        _ => error.to_string(),
    }
}

/// The line a CSV error is at, if it knows.
pub fn error_line(error: &csv::Error) -> Option<u64> {
    error.position().map(csv::Position::line)
}
