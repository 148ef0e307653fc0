//! What the CSV formats share: columns found by name, whatever their order
//! and case, and the leading apostrophe that spreadsheet exports put before
//! ids, phones and zips to keep them text.

use std::collections::HashMap;

use crate::engine::contacts::{normalize_email, normalize_phone};
use crate::service::convert::MAX_ID_BYTES;

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

/// The id of a customer a file names without one: the e-mail (trimmed,
/// lower-case), else the phone's digits as matching compares them (the
/// phone as written when it has too few digits to be one).
pub fn fallback_id(email: Option<&str>, phone: Option<&str>) -> Option<String> {
    email
        .and_then(normalize_email)
        .or_else(|| phone.and_then(normalize_phone))
        .or_else(|| {
            phone
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
        })
}

/// Refuses a cell the server would refuse as an id, so that the row is
/// reported at its line rather than failing a whole batch.
pub fn check_id(value: &str, column: &str) -> Result<(), String> {
    if value.len() > MAX_ID_BYTES {
        return Err(format!("{column} is longer than {MAX_ID_BYTES} bytes"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{column} holds control characters"));
    }
    Ok(())
}

/// Refuses a file whose header names none of the columns a row could be
/// named by.
pub fn require_any(found: &[Option<usize>], columns: &str, format: &str) -> Result<(), String> {
    if found.iter().all(Option::is_none) {
        return Err(format!("no {columns} column: is this a {format}?"));
    }
    Ok(())
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
