//! The stored change feed of a tenant: its entries, the head sequence, and
//! every saved segment's members as of a sequence.
//!
//! Three tables (see `keys`):
//! - `F` + tenant + sequence: one entry, who entered and who left one
//!   segment, as JSON. Dense ids are kept beside the merchant's ids so that
//!   the members can be rebuilt at start (a deleted customer has no
//!   merchant id any more in the index).
//! - `G` + tenant + segment id: the segment's members as of a sequence,
//!   then the sequence's entries of that segment replay onto them.
//! - `V` + tenant: the last sequence handed out and stored, so that numbers
//!   keep growing once old entries are pruned. A tenant without one has
//!   never shown a watcher anything.
//! - `Y` + tenant + dense id: a deleted customer's merchant id, written with
//!   the delete itself, so that a start that must tell the delete again
//!   (its entries lost in a crash) can still name the customer.
//! - `\0feed-clean`: the number of commits when a clean stop stored every
//!   feed's members; a start that finds it equal to the commits held has
//!   nothing to recover.
//!
//! Feed rows are applied without a flush of their own: the next flush makes
//! them durable, and only then are they shown to watchers.

use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};

use super::keys::{self, tenant_prefix};
use super::{Batch, Store, decode_json, encode_json};
use crate::error::{Error, Result};

/// Why a segment's members changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeCause {
    Write,
    SegmentEdit,
    Time,
    Recovery,
}

/// One stored change of one segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedEntry {
    pub segment_id: String,
    pub cause: ChangeCause,
    /// The evaluation instant, in seconds since the epoch.
    pub time: i64,
    /// (dense id, merchant's id) of the customers who entered.
    pub entered: Vec<(u32, String)>,
    /// (dense id, merchant's id) of the customers who left.
    pub left: Vec<(u32, String)>,
}

/// A segment's members as of a sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct MembersCheckpoint {
    pub segment_id: String,
    pub sequence: u64,
    pub members: RoaringBitmap,
}

fn entry_key(tenant: &str, sequence: u64) -> Vec<u8> {
    let mut key = tenant_prefix(keys::TAG_FEED_ENTRY, tenant);
    key.extend_from_slice(&sequence.to_be_bytes());
    key
}

fn members_key(tenant: &str, segment_id: &str) -> Vec<u8> {
    let mut key = tenant_prefix(keys::TAG_FEED_MEMBERS, tenant);
    key.extend_from_slice(segment_id.as_bytes());
    key
}

fn head_key(tenant: &str) -> Vec<u8> {
    tenant_prefix(keys::TAG_FEED_HEAD, tenant)
}

/// The row of a deleted customer's merchant id.
pub fn departed_key(tenant: &str, dense: u32) -> Vec<u8> {
    let mut key = tenant_prefix(keys::TAG_FEED_DEPARTED, tenant);
    key.extend_from_slice(&dense.to_be_bytes());
    key
}

/// The key of the clean-stop mark.
const CLEAN_KEY: &[u8] = b"\0feed-clean";

/// Adds the clean-stop mark to `batch`: `commits` commits are held.
pub fn put_clean_mark(batch: &mut Batch, commits: u64) {
    batch.insert(CLEAN_KEY.to_vec(), commits.to_be_bytes());
}

/// Adds the removal of the clean-stop mark to `batch`.
pub fn remove_clean_mark(batch: &mut Batch) {
    batch.remove(CLEAN_KEY.to_vec());
}

/// Adds an entry to `batch`.
pub fn put_entry(batch: &mut Batch, tenant: &str, sequence: u64, entry: &FeedEntry) -> Result<()> {
    batch.insert(entry_key(tenant, sequence), encode_entry(entry)?);
    Ok(())
}

/// An entry row's value.
pub fn encode_entry(entry: &FeedEntry) -> Result<Vec<u8>> {
    encode_json(entry)
}

/// Adds the head sequence to `batch`.
pub fn put_head(batch: &mut Batch, tenant: &str, head: u64) {
    batch.insert(head_key(tenant), head.to_be_bytes());
}

/// Adds a members checkpoint to `batch`.
pub fn put_members(batch: &mut Batch, tenant: &str, checkpoint: &MembersCheckpoint) -> Result<()> {
    let value = encode_members(checkpoint)?;
    batch.insert(members_key(tenant, &checkpoint.segment_id), value);
    Ok(())
}

/// A members checkpoint row's value: the sequence (u64), then the members.
pub fn encode_members(checkpoint: &MembersCheckpoint) -> Result<Vec<u8>> {
    let mut value = Vec::with_capacity(8 + checkpoint.members.serialized_size());
    value.extend_from_slice(&checkpoint.sequence.to_be_bytes());
    checkpoint
        .members
        .serialize_into(&mut value)
        .map_err(|error| Error::Internal(format!("cannot encode feed members: {error}")))?;
    Ok(value)
}

/// Decodes a members checkpoint row's value.
pub fn decode_members(segment_id: &str, value: &[u8]) -> Result<MembersCheckpoint> {
    let corrupt =
        |what: String| Error::Corrupt(format!("feed members of segment `{segment_id}`: {what}"));
    let (sequence, bitmap) = value
        .split_first_chunk::<8>()
        .ok_or_else(|| corrupt("row too short".to_owned()))?;
    let members =
        RoaringBitmap::deserialize_from(bitmap).map_err(|error| corrupt(error.to_string()))?;
    Ok(MembersCheckpoint {
        segment_id: segment_id.to_owned(),
        sequence: u64::from_be_bytes(*sequence),
        members,
    })
}

/// Decodes an entry row's value.
pub fn decode_entry(value: &[u8]) -> Result<FeedEntry> {
    decode_json(value, "feed entry")
}

impl Store {
    /// Applies a batch atomically without waiting for the disk: it becomes
    /// durable with the next flush ([`Store::sync`] or any commit).
    pub fn apply_unflushed(&self, batch: Batch) -> Result<()> {
        let Batch(batch) = batch;
        self.db.apply_batch(batch)?;
        Ok(())
    }

    /// Waits until everything applied so far is on disk.
    pub fn sync(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    /// The last sequence stored for a tenant's feed; `None` if it has never
    /// stored one.
    pub fn feed_head(&self, tenant: &str) -> Result<Option<u64>> {
        self.db
            .get(head_key(tenant))?
            .map(|value| u64_of(&value, || format!("tenant `{tenant}`: feed head row")))
            .transpose()
    }

    /// The commits held when a clean stop stored every feed, if it did.
    pub fn feed_clean_mark(&self) -> Result<Option<u64>> {
        self.db
            .get(CLEAN_KEY)?
            .map(|value| u64_of(&value, || "the feed's clean-stop mark".to_owned()))
            .transpose()
    }

    /// Deleted customers' merchant ids by dense id, as their deletes stored
    /// them.
    pub fn feed_departed(&self, tenant: &str) -> Result<Vec<(u32, String)>> {
        let prefix = tenant_prefix(keys::TAG_FEED_DEPARTED, tenant);
        let mut found = Vec::new();
        for row in self.db.scan_prefix(&prefix) {
            let (key, value) = row?;
            let corrupt = || Error::Corrupt(format!("tenant `{tenant}`: a departed-customer row"));
            let dense: [u8; 4] = key[prefix.len()..].try_into().map_err(|_| corrupt())?;
            let id = String::from_utf8(value.to_vec()).map_err(|_| corrupt())?;
            found.push((u32::from_be_bytes(dense), id));
        }
        Ok(found)
    }

    /// Every members checkpoint of a tenant.
    pub fn feed_members(&self, tenant: &str) -> Result<Vec<MembersCheckpoint>> {
        let prefix = tenant_prefix(keys::TAG_FEED_MEMBERS, tenant);
        let mut found = Vec::new();
        for row in self.db.scan_prefix(&prefix) {
            let (key, value) = row?;
            let segment_id = std::str::from_utf8(&key[prefix.len()..]).map_err(|_| {
                Error::Corrupt(format!("tenant `{tenant}`: feed members key is not UTF-8"))
            })?;
            found.push(decode_members(segment_id, &value)?);
        }
        Ok(found)
    }

    /// Up to `limit` entries of a tenant's feed with a sequence above
    /// `after`, in order.
    pub fn feed_entries(
        &self,
        tenant: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, FeedEntry)>> {
        let Some(start) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        let end = tenant_prefix(keys::TAG_FEED_ENTRY, tenant);
        let mut found = Vec::new();
        for row in self.db.range(entry_key(tenant, start)..) {
            let (key, value) = row?;
            if !key.starts_with(&end) || found.len() == limit {
                break;
            }
            let sequence = sequence_of(tenant, &key[end.len()..])?;
            found.push((sequence, decode_entry(&value)?));
        }
        Ok(found)
    }

    /// The first sequence a tenant's feed still holds, if any.
    pub fn feed_oldest(&self, tenant: &str) -> Result<Option<u64>> {
        let prefix = tenant_prefix(keys::TAG_FEED_ENTRY, tenant);
        match self.db.scan_prefix(&prefix).next() {
            None => Ok(None),
            Some(row) => {
                let (key, _) = row?;
                sequence_of(tenant, &key[prefix.len()..]).map(Some)
            }
        }
    }

    /// The last sequence of the oldest entries, up to `through`, whose time
    /// is before `before`: what a prune would remove. `None` if none is.
    pub fn feed_prune_point(&self, tenant: &str, through: u64, before: i64) -> Result<Option<u64>> {
        let prefix = tenant_prefix(keys::TAG_FEED_ENTRY, tenant);
        let mut cut = None;
        for row in self.db.scan_prefix(&prefix) {
            let (key, value) = row?;
            let sequence = sequence_of(tenant, &key[prefix.len()..])?;
            if sequence > through || decode_entry(&value)?.time >= before {
                break;
            }
            cut = Some(sequence);
        }
        Ok(cut)
    }

    /// Removes, durably, the entries of a tenant's feed up to `through`;
    /// returns how many went.
    pub fn feed_remove_through(&self, tenant: &str, through: u64) -> Result<usize> {
        let prefix = tenant_prefix(keys::TAG_FEED_ENTRY, tenant);
        let mut batch = Batch::default();
        let mut removed = 0;
        for row in self.db.scan_prefix(&prefix) {
            let (key, _) = row?;
            if sequence_of(tenant, &key[prefix.len()..])? > through {
                break;
            }
            batch.remove(key.to_vec());
            removed += 1;
        }
        if removed > 0 {
            self.apply_unflushed(batch)?;
            self.sync()?;
        }
        Ok(removed)
    }
}

fn u64_of(value: &[u8], what: impl FnOnce() -> String) -> Result<u64> {
    let bytes: [u8; 8] = value
        .try_into()
        .map_err(|_| Error::Corrupt(format!("{} is not 8 bytes", what())))?;
    Ok(u64::from_be_bytes(bytes))
}

fn sequence_of(tenant: &str, rest: &[u8]) -> Result<u64> {
    u64_of(rest, || {
        format!("tenant `{tenant}`: a feed entry key's sequence")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_rows_round_trip_and_short_rows_are_refused() {
        let members: RoaringBitmap = [1, 5, 70_000].into_iter().collect();
        let checkpoint = MembersCheckpoint {
            segment_id: "s".to_owned(),
            sequence: 42,
            members: members.clone(),
        };
        let mut value = 42u64.to_be_bytes().to_vec();
        members.serialize_into(&mut value).unwrap();
        assert_eq!(encode_members(&checkpoint).unwrap(), value);
        assert_eq!(decode_members("s", &value).unwrap(), checkpoint);
        assert!(decode_members("s", &value[..5]).is_err());
        assert!(decode_members("s", &value[..value.len() - 1]).is_err());
    }

    #[test]
    fn entries_come_back_in_sequence_order_after_a_point_and_prune_by_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut batch = Batch::default();
        for sequence in [3u64, 1, 2, 300] {
            let entry = FeedEntry {
                segment_id: format!("s{sequence}"),
                cause: ChangeCause::Write,
                time: sequence as i64 * 10,
                entered: vec![(sequence as u32, format!("c{sequence}"))],
                left: vec![],
            };
            put_entry(&mut batch, "t", sequence, &entry).unwrap();
        }
        // Another tenant's rows sort after: never read as this one's.
        put_entry(
            &mut batch,
            "u",
            1,
            &FeedEntry {
                segment_id: "x".to_owned(),
                cause: ChangeCause::Time,
                time: 0,
                entered: vec![],
                left: vec![],
            },
        )
        .unwrap();
        put_head(&mut batch, "t", 300);
        store.apply_unflushed(batch).unwrap();
        store.sync().unwrap();

        let after = |n| -> Vec<u64> {
            store
                .feed_entries("t", n, 10)
                .unwrap()
                .into_iter()
                .map(|(s, _)| s)
                .collect()
        };
        assert_eq!(after(0), vec![1, 2, 3, 300]);
        assert_eq!(after(2), vec![3, 300]);
        assert_eq!(after(300), Vec::<u64>::new());
        assert_eq!(after(u64::MAX), Vec::<u64>::new());
        assert_eq!(store.feed_head("t").unwrap(), Some(300));
        assert_eq!(store.feed_head("u").unwrap(), None);

        // Times are 10, 20, 30, 3000: before 25 and through 300 takes two.
        assert_eq!(store.feed_prune_point("t", 300, 25).unwrap(), Some(2));
        assert_eq!(store.feed_prune_point("t", 300, 5).unwrap(), None);
        assert_eq!(store.feed_remove_through("t", 2).unwrap(), 2);
        assert_eq!(store.feed_oldest("t").unwrap(), Some(3));
        // Through 3 only, whatever the time.
        assert_eq!(store.feed_prune_point("t", 3, i64::MAX).unwrap(), Some(3));
        assert_eq!(store.feed_remove_through("t", 3).unwrap(), 1);
        assert_eq!(after(0), vec![300]);
        assert_eq!(store.feed_entries("u", 0, 10).unwrap().len(), 1);
    }
}
