//! `N` rows: the tenant's customer ids by dense id, 1,024 dense ids a row.
//!
//! Loading ten million customers from one `X` row each (customer id to
//! dense id) took most of a start. A chunk row holds the names of up to
//! 1,024 consecutive dense ids, so a start reads about 10,000 rows instead.
//! A write that creates customers rewrites the chunks they fall in (the
//! newest, as dense ids only grow) from the names in memory. A delete does
//! not rewrite its chunk: a name whose dense id is not live is skipped at
//! load, and the next rewrite of that chunk drops it.
//!
//! A row is a sequence of entries: the dense id's low 10 bits (u16, little
//! endian), the name's length (u16, little endian) and the name's bytes.

use crate::error::{Error, Result};

/// Dense ids per row, as a power of two.
pub const CHUNK_BITS: u32 = 10;

/// The chunk a dense id falls in.
pub fn chunk_of(dense: u32) -> u32 {
    dense >> CHUNK_BITS
}

/// The dense ids of a chunk.
pub fn dense_ids(chunk: u32) -> std::ops::Range<u32> {
    let first = chunk << CHUNK_BITS;
    first..first.saturating_add(1 << CHUNK_BITS)
}

/// Encodes (dense id, name) entries of one chunk, in any order.
pub fn encode<'a>(entries: impl Iterator<Item = (u32, &'a str)>) -> Result<Vec<u8>> {
    let mut row = Vec::new();
    for (dense, name) in entries {
        let len = u16::try_from(name.len()).map_err(|_| Error::InvalidArgument {
            field: "customer_id".to_owned(),
            message: format!("{} bytes is longer than a customer id may be", name.len()),
        })?;
        row.extend_from_slice(&((dense & ((1 << CHUNK_BITS) - 1)) as u16).to_le_bytes());
        row.extend_from_slice(&len.to_le_bytes());
        row.extend_from_slice(name.as_bytes());
    }
    Ok(row)
}

/// Calls `f` with each (dense id, name) of a row of chunk `chunk`.
pub fn decode(chunk: u32, row: &[u8], mut f: impl FnMut(u32, &str) -> Result<()>) -> Result<()> {
    let corrupt = || Error::Corrupt(format!("customer id chunk {chunk} is damaged"));
    let mut rest = row;
    while !rest.is_empty() {
        let (head, tail) = rest.split_at_checked(4).ok_or_else(corrupt)?;
        let low = u16::from_le_bytes([head[0], head[1]]) as u32;
        let len = u16::from_le_bytes([head[2], head[3]]) as usize;
        if low >= 1 << CHUNK_BITS {
            return Err(corrupt());
        }
        let (name, tail) = tail.split_at_checked(len).ok_or_else(corrupt)?;
        let name = std::str::from_utf8(name).map_err(|_| corrupt())?;
        f(chunk << CHUNK_BITS | low, name)?;
        rest = tail;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_refuse_damage() {
        let entries = [(2048 + 5, "c5"), (2048, ""), (2048 + 1023, "ünï")];
        let row = encode(entries.iter().copied()).unwrap();
        let mut back = Vec::new();
        decode(2, &row, |dense, name| {
            back.push((dense, name.to_owned()));
            Ok(())
        })
        .unwrap();
        let expected: Vec<(u32, String)> =
            entries.iter().map(|&(d, n)| (d, n.to_owned())).collect();
        assert_eq!(back, expected);
        for cut in 1..row.len() {
            let damaged = decode(2, &row[..cut], |_, _| Ok(()));
            // Cutting at an entry boundary leaves a shorter valid row.
            let boundaries = [0, 6, 10, 10 + 4 + "ünï".len()];
            assert_eq!(damaged.is_ok(), boundaries.contains(&cut), "cut at {cut}");
        }
        assert!(encode([(0, "x".repeat(70_000).as_str())].into_iter()).is_err());
    }
}
