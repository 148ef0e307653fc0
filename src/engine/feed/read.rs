//! Reading the feed for watches: following a tenant's published head, the
//! members at the start of a watch, and the stored entries after a sequence.

use std::sync::{Arc, PoisonError};

use roaring::RoaringBitmap;
use tokio::sync::watch;

use super::READ_BATCH;
use crate::engine::{Engine, Tenant, read, tenant_name};
use crate::error::{Error, Result};
use crate::store::Batch;
use crate::store::feed::{self as stored, FeedEntry};
use crate::time::Seconds;

/// One watch's view of a tenant's feed.
pub struct FeedWatch {
    /// The last durable sequence, as it grows.
    pub published: watch::Receiver<u64>,
}

/// Entries read for a watch.
pub struct FeedRead {
    /// The entries after the sequence asked for, in order.
    pub entries: Vec<(u64, FeedEntry)>,
    /// The last sequence looked at: entries up to it were all read.
    pub through: u64,
}

/// The members of watched segments at one sequence, by merchant id.
pub struct FeedInitial {
    /// The head the members are at: changes after it follow.
    pub sequence: u64,
    /// When the members were taken.
    pub time: Seconds,
    /// Each segment asked for, in the order asked, with its members.
    pub segments: Vec<(String, Vec<String>)>,
}

impl Engine {
    /// Starts following segments of a tenant; every one must exist.
    pub fn feed_watch(&self, tenant: &str, segment_ids: &[String]) -> Result<FeedWatch> {
        let tenant = self.tenant(tenant)?;
        check_segments(&read(&tenant.index).segments, segment_ids)?;
        self.feed_store_head(&tenant)?;
        Ok(FeedWatch {
            published: tenant.feed.published.subscribe(),
        })
    }

    /// Stores the head, durably, if it never was: from then on a start
    /// knows that a watcher may have seen the feed, and recovers what it
    /// missed rather than taking the members silently.
    fn feed_store_head(&self, tenant: &Tenant) -> Result<()> {
        let _writer = tenant.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut state = tenant.feed.lock();
        if state.head_stored {
            return Ok(());
        }
        let mut batch = Batch::default();
        stored::put_head(&mut batch, &tenant_name(tenant), state.head);
        self.store.apply_unflushed(batch)?;
        self.store.sync()?;
        state.head_stored = true;
        Ok(())
    }

    /// The current members of segments and the sequence they are at, made
    /// durable before they are returned.
    pub fn feed_initial(
        &self,
        tenant: &str,
        segment_ids: &[String],
        now: Seconds,
    ) -> Result<FeedInitial> {
        let tenant = self.tenant(tenant)?;
        let initial = {
            let _writer = tenant.writer.lock().unwrap_or_else(PoisonError::into_inner);
            let index = read(&tenant.index);
            check_segments(&index.segments, segment_ids)?;
            let state = tenant.feed.lock();
            let empty = RoaringBitmap::new();
            let segments = segment_ids
                .iter()
                .map(|segment_id| {
                    let members = state.members.get(segment_id).unwrap_or(&empty);
                    let ids = members
                        .iter()
                        .filter_map(|dense| index.customer_id(dense).map(str::to_owned))
                        .collect();
                    (segment_id.clone(), ids)
                })
                .collect();
            FeedInitial {
                sequence: state.head,
                time: now,
                segments,
            }
        };
        self.feed_flush_and_publish(&tenant, initial.sequence)?;
        Ok(initial)
    }

    /// Entries after `after`, up to the durable head; `OUT_OF_RANGE` when
    /// entries after `after` are pruned, or `after` is ahead of the feed.
    pub fn feed_read(&self, tenant: &str, after: u64) -> Result<FeedRead> {
        let tenant = self.tenant(tenant)?;
        let published = tenant.feed.published();
        if after > published {
            return Err(Error::OutOfRange(format!(
                "after_sequence `{after}` is ahead of the feed's head `{published}`"
            )));
        }
        let pruned = || {
            let floor = tenant.feed.floor();
            Error::OutOfRange(format!(
                "after_sequence `{after}` is pruned (the feed starts after `{floor}`): \
                 watch again without after_sequence"
            ))
        };
        if after < tenant.feed.floor() {
            return Err(pruned());
        }
        let mut entries = self
            .store
            .feed_entries(&tenant_name(&tenant), after, READ_BATCH)?;
        entries.retain(|(sequence, _)| *sequence <= published);
        // Sequences have no gaps: one missing was pruned during the scan
        // (the floor rises before entries go, so a second look sees it).
        let consecutive = entries
            .iter()
            .enumerate()
            .all(|(n, (sequence, _))| *sequence == after + 1 + n as u64);
        let first = entries.first().map(|(sequence, _)| *sequence);
        let gap = !consecutive || (after < published && first != Some(after + 1));
        if gap || after < tenant.feed.floor() {
            return Err(pruned());
        }
        let through = if entries.len() == READ_BATCH {
            entries.last().map_or(after, |(sequence, _)| *sequence)
        } else {
            published
        };
        Ok(FeedRead { entries, through })
    }

    /// The tenants with something stored.
    pub(crate) fn stored_tenants(&self) -> Vec<Arc<Tenant>> {
        read(&self.tenants)
            .values()
            .filter(|tenant| tenant.stored.load(std::sync::atomic::Ordering::Acquire))
            .cloned()
            .collect()
    }
}

fn check_segments(
    segments: &std::collections::BTreeMap<String, crate::index::SavedSegment>,
    segment_ids: &[String],
) -> Result<()> {
    match segment_ids.iter().find(|id| !segments.contains_key(*id)) {
        Some(missing) => Err(Error::NotFound(format!("segment `{missing}` not found"))),
        None => Ok(()),
    }
}
