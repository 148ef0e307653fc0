//! The time index of events, packed: one row per event kind, UTC day and
//! write batch, holding every event of that kind and day the batch applied.
//!
//! The day bitmaps answer whole local days; the partial days at the edges
//! of an hour or instant window, and re-bucketing after a time-zone change,
//! need each event's exact time. A row per event made the index the most
//! expensive part of a write; a batch of recent events now writes a handful
//! of rows. A read of a time range scans the rows of the UTC days it
//! overlaps and keeps the entries inside it. That is every event of the
//! kind on those days (a window's edge, a part of a local day, can touch
//! two UTC days), where a row per event let a read look at only the events
//! inside the range: cheaper writes for somewhat dearer edge reads.
//!
//! An entry is the time (i64, big-endian), the dense id (u32), the payload's
//! length (u16) and the payload (a click's broadcast id; empty otherwise).

use std::collections::BTreeMap;

use super::Batch;
use super::keys;
use crate::error::{Error, Result};
use crate::rule::EventKind;
use crate::time::Seconds;

/// The UTC day (days since 1970-01-01) that holds `t`.
pub fn utc_day(t: Seconds) -> i64 {
    t.div_euclid(86_400)
}

/// One batch's rows in preparation.
#[derive(Debug, Default)]
pub struct Packs {
    rows: BTreeMap<(EventKind, i64), Vec<u8>>,
}

impl Packs {
    /// Adds an event to its row.
    pub fn add(&mut self, kind: EventKind, t: Seconds, dense: u32, payload: &[u8]) -> Result<()> {
        let length = u16::try_from(payload.len())
            .map_err(|_| Error::Internal(format!("event payload of {} bytes", payload.len())))?;
        let row = self.rows.entry((kind, utc_day(t))).or_default();
        row.extend_from_slice(&t.to_be_bytes());
        row.extend_from_slice(&dense.to_be_bytes());
        row.extend_from_slice(&length.to_be_bytes());
        row.extend_from_slice(payload);
        Ok(())
    }

    /// Writes the rows into `batch`, keyed by the batch's write `sequence`.
    pub fn write(self, batch: &mut Batch, tenant: &str, sequence: u64) {
        for ((kind, day), row) in self.rows {
            batch.insert(keys::event_pack_key(tenant, kind, day, sequence), row);
        }
    }
}

/// Calls `visit` with each entry of a row: time, dense id, payload.
pub fn each_entry(row: &[u8], mut visit: impl FnMut(Seconds, u32, &[u8])) -> Result<()> {
    let corrupt = || Error::Corrupt(format!("time-index row of {} bytes is damaged", row.len()));
    let mut rest = row;
    while !rest.is_empty() {
        let (time, tail) = rest.split_first_chunk::<8>().ok_or_else(corrupt)?;
        let (dense, tail) = tail.split_first_chunk::<4>().ok_or_else(corrupt)?;
        let (length, tail) = tail.split_first_chunk::<2>().ok_or_else(corrupt)?;
        let (t, dense) = (Seconds::from_be_bytes(*time), u32::from_be_bytes(*dense));
        let length = u16::from_be_bytes(*length) as usize;
        let payload = tail.get(..length).ok_or_else(corrupt)?;
        visit(t, dense, payload);
        rest = &tail[length..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_back_by_day_in_the_order_added() {
        let mut packs = Packs::default();
        let events = [(-5, 1, &b""[..]), (0, 7, b"b1"), (86_399, u32::MAX, b"")];
        for (t, dense, payload) in events {
            packs.add(EventKind::Clicked, t, dense, payload).unwrap();
        }
        // -5 falls on 1969-12-31, the others on 1970-01-01.
        assert_eq!(packs.rows.len(), 2);
        let mut seen = Vec::new();
        for row in packs.rows.values() {
            each_entry(row, |t, dense, payload| {
                seen.push((t, dense, payload.to_vec()))
            })
            .unwrap();
        }
        let expected: Vec<_> = events
            .iter()
            .map(|&(t, dense, payload)| (t, dense, payload.to_vec()))
            .collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn damaged_rows_are_refused() {
        let mut packs = Packs::default();
        packs.add(EventKind::Ordered, 10, 3, b"abc").unwrap();
        let row = packs.rows.into_values().next().unwrap();
        for cut in 1..row.len() {
            assert!(
                each_entry(&row[..cut], |_, _, _| {}).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn utc_days_split_at_midnight() {
        assert_eq!(utc_day(-1), -1);
        assert_eq!(utc_day(0), 0);
        assert_eq!(utc_day(86_399), 0);
        assert_eq!(utc_day(86_400), 1);
    }
}
