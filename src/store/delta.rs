//! The bitmap delta log: what each write batch added to and removed from
//! every bitmap it touched, as one row per batch.
//!
//! Rewriting a 2^16-id chunk (up to 8 KiB) for every batch that flips one
//! of its bits made writes cost kilobytes per event. Instead a batch stores
//! only its changes, in a `D` row keyed by its write sequence, and the base
//! chunks (`B` rows) are brought up to date now and then by a checkpoint:
//! the batch that finds the log long enough rewrites every chunk the log
//! touched, from the index in memory, and removes the log's rows in the
//! same atomic commit. Loading reads the base chunks, then replays the log
//! in sequence order.
//!
//! A row's value is a format byte, the number of bitmaps (u32), then per
//! bitmap: the key's length (u16) and encoding (`BitmapKey::encode_into`),
//! then the added and the removed ids, each as a length (u32) and a roaring
//! bitmap in its portable format.

use std::collections::{BTreeSet, HashMap};

use roaring::RoaringBitmap;

use super::keys::BitmapKey;
use crate::error::{Error, Result};

/// The first byte of every delta row.
const FORMAT: u8 = 1;

/// The log may hold at least this many bytes before a checkpoint, unless
/// the store is opened with another figure.
pub const DEFAULT_CHECKPOINT_BYTES: u64 = 8 << 20;
/// ... and never more than this many.
const MAX_LOG_BYTES: u64 = 256 << 20;
/// At most this many rows, so a checkpoint's removals stay a modest batch.
const MAX_LOG_ROWS: usize = 4096;
/// A checkpoint rewrites at most this many bytes per dirty chunk.
const CHUNK_BYTES: u64 = 8 << 10;

/// One tenant's delta rows since its last checkpoint, as kept in memory.
#[derive(Debug, Default, Clone)]
pub struct DeltaLog {
    /// Write sequences of the rows, ascending.
    pub sequences: Vec<u64>,
    /// Their total size.
    pub bytes: u64,
    /// The chunks of each bitmap that rows changed: the base rows a
    /// checkpoint must rewrite.
    pub dirty: HashMap<BitmapKey, BTreeSet<u16>>,
    /// The number of (bitmap, chunk) pairs in `dirty`.
    pub dirty_chunks: u64,
}

impl DeltaLog {
    /// Whether a batch adding a row of `row_bytes` should checkpoint instead.
    ///
    /// The log may grow to half of what a checkpoint would rewrite, so a
    /// checkpoint costs at most about twice the log's own bytes (bounded
    /// write amplification), and at least to `min_bytes`; never past a
    /// fixed bound that keeps loading quick. Whatever its bytes, a log of
    /// `MAX_LOG_ROWS` rows checkpoints: that bound comes first for small
    /// batches, where a checkpoint may cost more than twice the log.
    pub fn wants_checkpoint(&self, row_bytes: usize, min_bytes: u64) -> bool {
        let limit = (self.dirty_chunks * CHUNK_BYTES / 2)
            .max(min_bytes)
            .min(MAX_LOG_BYTES);
        self.bytes + row_bytes as u64 > limit || self.sequences.len() >= MAX_LOG_ROWS
    }

    /// Records a row written by batch `sequence` that touched, in each
    /// bitmap, the chunks listed.
    pub fn append(&mut self, sequence: u64, row_bytes: usize, touched: &[(BitmapKey, Vec<u16>)]) {
        self.sequences.push(sequence);
        self.bytes += row_bytes as u64;
        let chunks = touched
            .iter()
            .flat_map(|(key, chunks)| chunks.iter().map(move |&chunk| (key, chunk)));
        for (key, chunk) in chunks {
            let inserted = match self.dirty.get_mut(key) {
                Some(set) => set.insert(chunk),
                None => {
                    self.dirty.insert(key.clone(), BTreeSet::from([chunk]));
                    true
                }
            };
            self.dirty_chunks += u64::from(inserted);
        }
    }
}

/// Encodes one batch's changes: `(bitmap, added, removed)` for each bitmap.
pub fn encode<'a>(
    changes: impl Iterator<Item = (&'a BitmapKey, &'a RoaringBitmap, &'a RoaringBitmap)>,
) -> Result<Vec<u8>> {
    let mut out = vec![FORMAT, 0, 0, 0, 0];
    let mut key_bytes = Vec::new();
    let mut count: u32 = 0;
    for (key, add, remove) in changes {
        count = count
            .checked_add(1)
            .ok_or_else(|| Error::Internal("more than 2^32 bitmaps in a delta".into()))?;
        key_bytes.clear();
        key.encode_into(&mut key_bytes);
        let key_len = u16::try_from(key_bytes.len())
            .map_err(|_| Error::Internal(format!("bitmap key of {} bytes", key_bytes.len())))?;
        out.extend_from_slice(&key_len.to_be_bytes());
        out.extend_from_slice(&key_bytes);
        for ids in [add, remove] {
            // A bitmap of 2^32 ids serialises to well under 4 GiB.
            out.extend_from_slice(&(ids.serialized_size() as u32).to_be_bytes());
            ids.serialize_into(&mut out)
                .map_err(|error| Error::Internal(format!("serialising a delta: {error}")))?;
        }
    }
    out[1..5].copy_from_slice(&count.to_be_bytes());
    Ok(out)
}

/// Decodes a delta row, calling `visit` with each bitmap's added and removed ids.
pub fn decode(
    bytes: &[u8],
    mut visit: impl FnMut(BitmapKey, RoaringBitmap, RoaringBitmap),
) -> Result<()> {
    let corrupt = |what: &str| Error::Corrupt(format!("bitmap delta row: {what}"));
    let (&format, mut rest) = bytes.split_first().ok_or_else(|| corrupt("empty"))?;
    if format != FORMAT {
        return Err(corrupt(&format!("unknown format {format}")));
    }
    let (count, tail) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| corrupt("truncated count"))?;
    rest = tail;
    for _ in 0..u32::from_be_bytes(*count) {
        let (key_len, tail) = rest
            .split_first_chunk::<2>()
            .ok_or_else(|| corrupt("truncated key length"))?;
        let key_len = u16::from_be_bytes(*key_len) as usize;
        let key_bytes = tail
            .get(..key_len)
            .ok_or_else(|| corrupt("truncated key"))?;
        let (key, leftover) = BitmapKey::decode(key_bytes).ok_or_else(|| corrupt("bad key"))?;
        if !leftover.is_empty() {
            return Err(corrupt("bad key"));
        }
        rest = &tail[key_len..];
        let mut sets = [RoaringBitmap::new(), RoaringBitmap::new()];
        for set in &mut sets {
            let (len, tail) = rest
                .split_first_chunk::<4>()
                .ok_or_else(|| corrupt("truncated length"))?;
            let len = u32::from_be_bytes(*len) as usize;
            let body = tail.get(..len).ok_or_else(|| corrupt("truncated bitmap"))?;
            *set = RoaringBitmap::deserialize_from(body)
                .map_err(|error| corrupt(&format!("{key:?}: {error}")))?;
            rest = &tail[len..];
        }
        let [add, remove] = sets;
        visit(key, add, remove);
    }
    if !rest.is_empty() {
        return Err(corrupt("trailing bytes"));
    }
    Ok(())
}

/// The chunks (high 16 bits of the ids) that a bitmap has ids in.
pub fn chunks_of(bitmap: &RoaringBitmap) -> Vec<u16> {
    let mut chunks = Vec::new();
    let mut next = bitmap.min();
    while let Some(id) = next {
        let chunk = (id >> 16) as u16;
        chunks.push(chunk);
        next = match chunk.checked_add(1) {
            Some(following) => bitmap.range(u32::from(following) << 16..).next(),
            None => None,
        };
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::EventKind;

    #[test]
    fn deltas_decode_to_what_was_encoded() {
        let day = BitmapKey::EventDay(EventKind::Ordered, 20_000);
        let tag = BitmapKey::Tag("vip".into());
        let add: RoaringBitmap = [1, 70_000, u32::MAX].into_iter().collect();
        let remove: RoaringBitmap = (100..5_000).collect();
        let empty = RoaringBitmap::new();
        let row = encode([(&day, &add, &empty), (&tag, &empty, &remove)].into_iter()).unwrap();

        let mut seen = Vec::new();
        decode(&row, |key, add, remove| seen.push((key, add, remove))).unwrap();
        assert_eq!(seen, vec![(day, add, empty.clone()), (tag, empty, remove)]);
    }

    #[test]
    fn damaged_deltas_are_refused() {
        let key = BitmapKey::OptedIn;
        let add: RoaringBitmap = (0..1_000).collect();
        let row = encode([(&key, &add, &RoaringBitmap::new())].into_iter()).unwrap();
        for cut in 1..row.len() {
            assert!(decode(&row[..cut], |_, _, _| {}).is_err(), "cut at {cut}");
        }
        let mut wrong_format = row.clone();
        wrong_format[0] = 9;
        assert!(decode(&wrong_format, |_, _, _| {}).is_err());
        let mut longer = row.clone();
        longer.push(0);
        assert!(decode(&longer, |_, _, _| {}).is_err());
    }

    #[test]
    fn chunks_of_lists_each_high_half_once() {
        let ids: RoaringBitmap = [0, 5, 65_535, 65_536, 3 << 16, u32::MAX]
            .into_iter()
            .collect();
        assert_eq!(chunks_of(&ids), vec![0, 1, 3, u16::MAX]);
    }

    #[test]
    fn the_log_checkpoints_at_its_bounds() {
        const MIN: u64 = DEFAULT_CHECKPOINT_BYTES;
        let mut log = DeltaLog::default();
        assert!(!log.wants_checkpoint(1 << 20, MIN));
        assert!(log.wants_checkpoint((MIN + 1) as usize, MIN));
        assert!(log.wants_checkpoint(2, 1));
        let key = BitmapKey::OptedIn;
        // Many dirty chunks raise the limit above the minimum.
        log.append(1, 0, &[(key.clone(), (0..=u16::MAX).collect())]);
        assert_eq!(log.dirty_chunks, 1 << 16);
        assert!(!log.wants_checkpoint((MIN + 1) as usize, MIN));
        // Appending the same chunk again does not count it twice.
        log.append(2, 10, &[(key.clone(), vec![7])]);
        assert_eq!(log.dirty_chunks, 1 << 16);
        assert_eq!((log.sequences.clone(), log.bytes), (vec![1, 2], 10));
    }

    #[test]
    fn the_row_and_byte_caps_come_before_the_limit() {
        let key = BitmapKey::OptedIn;
        // Dirty chunks enough for a limit far above the caps.
        let mut many = DeltaLog::default();
        many.append(0, 0, &[(key.clone(), (0..=u16::MAX).collect())]);
        let huge = u64::MAX / 2;
        assert!(!many.wants_checkpoint(1, huge));
        assert!(many.wants_checkpoint((MAX_LOG_BYTES + 1) as usize, huge));
        // Rows: the cap holds at MAX_LOG_ROWS, whatever the bytes.
        let mut rows = DeltaLog::default();
        for sequence in 0..MAX_LOG_ROWS as u64 - 1 {
            rows.append(sequence, 1, &[(key.clone(), vec![0])]);
        }
        assert!(!rows.wants_checkpoint(1, huge));
        rows.append(MAX_LOG_ROWS as u64, 1, &[(key.clone(), vec![0])]);
        assert!(rows.wants_checkpoint(1, huge));
    }
}
